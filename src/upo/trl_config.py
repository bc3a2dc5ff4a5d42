"""`upo from-trl`: a TRL config file as an upo config, key by key.

The input is the YAML a TRL user runs (`trl dpo --config FILE`, or the values of a script's
`DPOConfig(...)`): TRL 1.16's trainer config (DPOConfig, KTOConfig, CPOConfig, ORPOConfig, with
transformers' TrainingArguments) plus the CLI's `ModelConfig` and `ScriptArguments` keys, and two
keys of earlier TRL versions (`rpo_alpha`, `max_prompt_length`). The output trains the same
objective on the same data with the same optimizer settings, except where a note says otherwise:

- Keys with an upo equivalent are translated (`RENAMED` and the handlers below), each output line
  saying which TRL key (and line) it came from; values are checked as upo's typed config checks them.
- TRL's defaults are written out where upo's differ and the run's updates depend on them (TRL's
  learning rate 1e-6, linear schedule, 3 epochs, batch 8, max_length 1024, random batches, ...): a
  TRL file that leaves them out trained with them.
- Keys that change nothing about the updates in upo (logging folders, Hub pushes, data-loader
  workers, kernels) are listed as not translated; differences upo cannot remove (ORPO's NLL over
  the prompt, data order, weight decay on norms) are listed as notes.
- A key whose TRL meaning upo cannot reproduce (an 8-bit base, a fractional epoch count, ...) is
  an error naming the file, the line and why; so is a key neither knows, and a value of the wrong
  type. Nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from upo.config import UPOConfig
from upo.config_values import ConfigError, coerce_value, load_yaml
from upo.trl_keys import BOOLEANS, LORA_DEFAULTS, NO_EFFECT, RENAMED, TRAINERS, TRL_DEFAULTS, as_number
from upo.trl_objective import f_divergence, method, sync_reference


@dataclass
class Translation:
    """The upo config values, each with where it came from, and what was left out."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # upo key -> "TRL's learning_rate (line 3)" / "TRL's default"
    not_translated: list[str] = field(default_factory=list)  # "logging_dir (FILE:7)"
    notes: list[str] = field(default_factory=list)  # differences a user should know
    errors: list[str] = field(default_factory=list)

    def set(self, key: str, value: Any, origin: str) -> None:
        self.values[key] = value
        self.origins[key] = origin


@dataclass
class Context:
    """What the key handlers read: the file's keys, TRL's effective values, where each key is."""

    given: dict[str, Any]
    effective: dict[str, Any]
    trainer: str
    source: str
    lines: dict[str, int]
    out: Translation

    def where(self, key: str) -> str:
        return f"{self.source}:{self.lines[key]}" if key in self.lines else self.source

    def origin(self, key: str) -> str:
        if key not in self.given:
            return f"TRL's default {key}: {self.effective[key]!r}"
        return f"TRL's {key}" + (f" (line {self.lines[key]})" if key in self.lines else "")

    def refuse(self, key: str, why: str) -> None:
        self.out.errors.append(f"{self.where(key)}: {key}: {why}")

    def number(self, key: str, kind: type = float) -> int | float | None:
        """TRL's value of `key` as a number, or None after refusing it when it is not one (or not a
        whole number where `kind` is int)."""
        number = as_number(self.effective.get(key), kind)
        if number is None:
            self.refuse(key, f"{self.effective.get(key)!r} is not {'a whole number' if kind is int else 'a number'}")
        return number

    def words(self, key: str) -> list[str] | None:
        """TRL's value of `key` as a list of strings (a string is a list of one), or None after refusing it."""
        value = self.effective.get(key)
        words = [value] if isinstance(value, str) else value if value is not None else []
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            self.refuse(key, f"{value!r} is not a name or a list of names")
            return None
        return words


def key_lines(text: str) -> dict[str, int]:
    """The 1-based line of each top-level key of a YAML mapping."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def translate_file(path: str | Path, trainer: str) -> Translation:
    """Read TRL config FILE as `trainer`'s (dpo, kto, cpo, orpo); a ConfigError lists every key
    that cannot be translated, as FILE:LINE: key: why."""
    if trainer not in TRAINERS:
        raise ConfigError(f"--trainer must be one of {', '.join(TRAINERS)}, got {trainer!r}")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"TRL config not found: {path}")
    text = path.read_text()
    try:
        trl = load_yaml(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(trl, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of key: value")
    out = translate(trl, trainer, str(path), key_lines(text))
    if out.errors:
        raise ConfigError(f"{path}: cannot translate it for {TRAINERS[trainer]} into upo:\n  " + "\n  ".join(out.errors))
    return out


def translate(trl: dict[str, Any], trainer: str, source: str = "TRL config",
              lines: dict[str, int] | None = None) -> Translation:
    """TRL keys -> upo values, typed as upo's config types them; `lines` (key -> line in `source`)
    places each key in messages. Problems are collected in the result's `errors`."""
    given = {str(k): v for k, v in trl.items()}
    if given.get("max_prompt_length", 0) is None:  # earlier TRL versions: no prompt limit, as TRL 1.16
        del given["max_prompt_length"]
    booleans = {key: _boolean(value) for key, value in given.items() if key in BOOLEANS and value is not None}
    given.update({key: value for key, value in booleans.items() if value is not None})
    effective = {**TRL_DEFAULTS, **(LORA_DEFAULTS if given.get("use_peft") else {}),
                 "train_sampling_strategy": "sequential" if trainer == "kto" else "random", **given}
    ctx = Context(given, effective, trainer, source, lines or {}, Translation())
    for key in (key for key, value in booleans.items() if value is None):
        ctx.refuse(key, f"{given[key]!r} is not true or false")
    method(ctx)
    for key, value in effective.items():
        if key in _HANDLED:
            continue
        if key in RENAMED:
            if value is not None:
                ctx.out.set(RENAMED[key], value, ctx.origin(key))
        elif key in NO_EFFECT:
            ctx.out.not_translated.append(f"{key} ({ctx.where(key)})")
        elif key in _HANDLERS:
            _HANDLERS[key](ctx, key, value)
        else:
            ctx.refuse(key, f"not a key of TRL 1.16's {TRAINERS[trainer]} config that upo knows; remove it, or set its "
                       "upo equivalent by hand (`upo train --help` lists upo's keys)")
    for translate_part in (_lengths, _clipping_and_checkpointing, _epochs_and_steps, _schedule,
                           _evaluation_and_saving, _precision, _lora, _quantization, f_divergence, sync_reference,
                           _differences):
        translate_part(ctx)
    _typed(ctx)
    return ctx.out


def _boolean(value) -> bool | None:
    """A YAML boolean or its text as TRL's parser reads it (true/false, yes/no, on/off, 1/0); None if neither."""
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    return True if text in ("true", "yes", "on", "1") else False if text in ("false", "no", "off", "0") else None


def _lengths(ctx: Context) -> None:
    """max_length (TRL's null: no truncation, which upo cannot do) and the prompt's share of it.
    TRL 1.16 never truncates a prompt alone: max_prompt_length becomes max_length - 1 unless given."""
    if ctx.effective.get("max_length") is None:
        ctx.refuse("max_length", "null (no truncation): upo needs a max_length; set the longest prompt + response")
        return
    max_length = ctx.number("max_length", int)
    if max_length is None:
        return
    ctx.out.set("max_length", max_length, ctx.origin("max_length"))
    if "max_prompt_length" not in ctx.given and max_length > 1:
        ctx.out.set("max_prompt_length", max_length - 1, "TRL 1.16 truncates no prompt alone: max_length - 1")
    ctx.out.notes.append("truncation: TRL 1.16 cuts a sequence longer than max_length at its end; upo keeps the "
                         "prompt's last max_prompt_length tokens and cuts the response to fit max_length. Sequences "
                         "that fit max_length are the same (`upo validate --model` counts what would be cut)")


def _clipping_and_checkpointing(ctx: Context) -> None:
    """max_grad_norm <= 0 is no clipping in transformers (upo: null); activation_checkpointing is
    transformers 5's name for gradient_checkpointing, which it takes over when set."""
    if "max_grad_norm" in ctx.given:
        grad_norm = ctx.number("max_grad_norm")
        if grad_norm is not None:
            ctx.out.set("max_grad_norm", grad_norm if grad_norm > 0 else None,
                        ctx.origin("max_grad_norm") + (" (<= 0: no clipping)" if grad_norm <= 0 else ""))
    if ctx.effective.get("activation_checkpointing") is not None:
        ctx.out.set("gradient_checkpointing", ctx.effective["activation_checkpointing"],
                    ctx.origin("activation_checkpointing"))


def _epochs_and_steps(ctx: Context) -> None:
    """max_steps > 0 overrides num_train_epochs, as in transformers; upo trains whole epochs."""
    max_steps = ctx.number("max_steps", int) if ctx.effective.get("max_steps") is not None else -1
    if max_steps is not None and max_steps > 0:
        ctx.out.set("max_steps", max_steps, ctx.origin("max_steps"))
    elif max_steps is not None:
        epochs = ctx.number("num_train_epochs")
        if epochs is not None and (epochs != int(epochs) or epochs <= 0):
            ctx.refuse("num_train_epochs", f"{epochs}: upo trains whole epochs; use max_steps for a part of one")
        elif epochs is not None:
            ctx.out.set("num_epochs", int(epochs), ctx.origin("num_train_epochs"))


def _optimizer(ctx: Context, key: str, value) -> None:
    if key == "optim":
        if value in ("adamw_torch", "adamw_torch_fused", "adamw_hf"):
            ctx.out.set("optimizer", "adamw", ctx.origin(key))
        elif value == "rmsprop":
            ctx.out.set("optimizer", "rmsprop", ctx.origin(key))
        else:
            ctx.refuse(key, f"{value!r}: upo has adamw (torch's AdamW) and rmsprop")
    else:
        number = ctx.number(key)
        if number is not None and number != {"adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8}[key]:
            ctx.refuse(key, f"{value}: upo's AdamW uses torch's defaults (betas 0.9, 0.999; eps 1e-8)")


def _report_to(ctx: Context, key: str, value) -> None:
    trackers = [t for t in ctx.words(key) or [] if t != "none"]
    if "all" in trackers:
        ctx.refuse(key, "'all': name the trackers (upo: tensorboard, trackio, wandb, mlflow)")
    elif trackers:
        ctx.out.set("report_to", trackers, ctx.origin(key))


def _sampling(ctx: Context, key: str, value) -> None:
    """TRL's DPO, CPO and ORPO draw batches at random; upo groups them by length unless told not to.
    KTOTrainer reads its (unpaired) rows in order, without shuffling; upo shuffles them."""
    if value == "random" and ctx.trainer == "kto" and ctx.out.values.get("method") == "kto":
        ctx.refuse(key, "'random': TRL 1.16's KTOTrainer refuses it with the kto loss (its KL completions pair each "
                   "example with the next one); only apo_zero_unpaired may draw at random")
    elif value == "random":
        ctx.out.set("group_by_length", False, ctx.origin(key) + ": batches drawn at random")
    elif value == "sequential" and ctx.trainer == "kto":
        ctx.out.set("group_by_length", False, ctx.origin(key))
        ctx.out.notes.append("data order: TRL's KTOTrainer reads the unpaired rows in order (no shuffling); upo "
                             "shuffles them with its seed")
    else:
        ctx.refuse(key, f"{value!r}: upo draws batches at random (group_by_length: false) or of similar length")


def _must_be(default, why: str = ""):
    """A TRL setting upo has no key for, because upo always behaves as TRL's `default` does."""

    def check(ctx: Context, key: str, value) -> None:
        if value != default and not (default is None and value in ("", [], {})):
            ctx.refuse(key, f"{value!r}: " + (why or f"upo has no such setting; it always behaves as {key}: "
                                                     f"{default!r} does"))

    return check


_HANDLERS = {
    "optim": _optimizer, "adam_beta1": _optimizer, "adam_beta2": _optimizer, "adam_epsilon": _optimizer,
    "report_to": _report_to,
    "train_sampling_strategy": _sampling,
    "disable_dropout": _must_be(True), "dataset_config": _must_be(None),

    "lora_target_parameters": _must_be(None), "trust_remote_code": _must_be(False),
    "max_completion_length": _must_be(None), "truncation_mode": _must_be("keep_start"),
    "warmup_ratio": _must_be(0.0), "gradient_checkpointing_kwargs": _must_be(None),
    "activation_checkpointing_kwargs": _must_be(None),
    "model_init_kwargs": _must_be(None), "ref_model_init_kwargs": _must_be(None),
    "auto_find_batch_size": _must_be(False), "data_seed": _must_be(None), "full_determinism": _must_be(False),
    "label_smoothing_factor": _must_be(0.0), "neftune_noise_alpha": _must_be(None), "optim_args": _must_be(None),
    "optim_target_modules": _must_be(None), "router_aux_loss_coef": _must_be(None),
    "is_encoder_decoder": _must_be(None), "enable_jit_checkpoint": _must_be(False),
    "resume_from_checkpoint": _must_be(None, "upo resumes a run from its output_dir's newest checkpoint: use "
                                             "upo train --resume true"),
    "dataloader_drop_last": _must_be(False), "lr_scheduler_kwargs": _must_be(None),
    "load_best_model_at_end": _must_be(False, "upo's final/ is the model of the last step"),
    "model_revision": _must_be("main", "upo loads a model's main revision: download that revision to a folder "
                                       "and give its path"),
    "dataset_streaming": _must_be(False), "streaming": _must_be(False),
    "datasets": _must_be(None, "dataset mixtures are not supported: give one dataset_name"),
    "test_split_size": _must_be(None, "set upo's eval_fraction instead"),
    **dict.fromkeys(("deepspeed", "fsdp", "fsdp_config", "parallelism_config"), _must_be(
        None, "upo takes DeepSpeed and FSDP from `accelerate launch --config_file` (README, Multi-GPU): remove it "
        "and launch `upo train` with that engine's Accelerate config")),
    "load_in_8bit": _must_be(False, "an 8-bit base is not supported by upo; load_in_4bit (QLoRA) is"),
}
# Read by the functions that translate several keys together.
_HANDLED = frozenset({"loss_type", "loss_weights", "alpha", "lr_scheduler_type", "warmup_steps", "eval_strategy",
                      "eval_steps", "save_strategy", "save_steps", "bf16", "fp16", "dtype", "torch_dtype",
                      "max_length", "max_grad_norm", "max_steps", "num_train_epochs", "activation_checkpointing",
                      "dataset_test_split", "load_in_4bit", "bnb_4bit_quant_type", "use_bnb_nested_quant",
                      "bnb_4bit_quant_storage", "f_divergence_type", "f_alpha_divergence_coef", "sync_ref_model",
                      "ref_model_mixup_alpha", "ref_model_sync_steps"})


def _schedule(ctx: Context) -> None:
    """lr_scheduler_type and warmup_steps: transformers' "constant" ignores warmup, its
    "constant_with_warmup" is upo's constant; a warmup below 1 is a ratio of the steps there."""
    scheduler = ctx.effective["lr_scheduler_type"]
    warmup = ctx.number("warmup_steps") if "warmup_steps" in ctx.effective else 0
    if warmup is not None and 0 < warmup < 1:
        ctx.refuse("warmup_steps", f"{warmup} is a ratio of the total steps in transformers; upo's warmup_steps "
                   "counts steps: set it to the ratio times the run's optimizer steps")
        return
    names = {"linear": "linear", "cosine": "cosine", "constant": "constant", "constant_with_warmup": "constant"}
    if not isinstance(scheduler, str) or scheduler not in names:
        ctx.refuse("lr_scheduler_type", f"{scheduler!r}: upo has linear, cosine and constant(_with_warmup)")
        return
    ctx.out.set("lr_scheduler", names[scheduler], ctx.origin("lr_scheduler_type"))
    if warmup and scheduler == "constant":
        ctx.out.notes.append(f"warmup_steps {warmup} not translated: transformers' constant schedule ignores warmup")
    elif warmup:
        ctx.out.set("warmup_steps", int(warmup), ctx.origin("warmup_steps"))


def _evaluation_and_saving(ctx: Context) -> None:
    """TRL evaluates on dataset_test_split only with eval_strategy steps; without it, it trains on
    the whole training split, so upo holds out nothing (eval_fraction 0)."""
    effective, out = ctx.effective, ctx.out
    strategy = effective["eval_strategy"]
    if strategy == "no":
        out.set("eval_fraction", 0.0, ctx.origin("eval_strategy") + ": TRL holds out nothing")
        if "dataset_test_split" in ctx.given:  # read only when TRL evaluates
            out.not_translated.append(f"dataset_test_split ({ctx.where('dataset_test_split')}: eval_strategy is no)")
    elif strategy == "steps" and effective.get("dataset_name"):
        out.set("eval_dataset", effective["dataset_name"], ctx.origin("dataset_name"))
        split = effective.get("dataset_test_split", "test")
        if not isinstance(split, str) or not split:
            ctx.refuse("dataset_test_split", f"{split!r}: name the split evaluated on (TRL's default: test)")
        out.set("eval_split", split, ctx.origin("dataset_test_split") if "dataset_test_split" in ctx.given
                else "TRL's default dataset_test_split: 'test'")
        out.set("eval_fraction", 0.0, "upo: held-out pairs come from eval_split")
        # transformers evaluates every logging_steps when eval_steps is unset (or 0)
        step_key = "eval_steps" if effective.get("eval_steps") not in (None, 0) else "logging_steps"
        every = ctx.number(step_key, int)
        if every is not None:
            out.set("eval_steps", every, ctx.origin(step_key))
    else:
        ctx.refuse("eval_strategy", f"{strategy!r}" + (" without a dataset_name" if strategy == "steps" else "")
                   + ": upo evaluates every eval_steps steps and at the end, on a dataset's eval_split")
    if effective["save_strategy"] == "steps":
        every = ctx.number("save_steps", int)
        if every is not None:
            out.set("save_steps", every, ctx.origin("save_steps"))
        if "save_total_limit" not in ctx.given:
            out.notes.append(f"save_total_limit: TRL keeps every checkpoint; upo keeps the newest "
                             f"{UPOConfig.save_total_limit} (set save_total_limit to keep more)")
    elif effective["save_strategy"] != "no":
        ctx.refuse("save_strategy", f"{effective['save_strategy']!r}: upo saves every save_steps steps (or never)")


def _precision(ctx: Context) -> None:
    """bf16 / fp16: upo keeps fp32 weights under autocast in that dtype (TRL's mixed precision).
    dtype (the weights' own): bfloat16 with LoRA is upo's lora_base_dtype bf16; else a note."""
    effective, out = ctx.effective, ctx.out
    if effective.get("fp16") and effective.get("bf16"):
        ctx.refuse("fp16", "fp16 and bf16 are both true (transformers refuses that too)")
    elif effective.get("fp16"):
        out.set("precision", "fp16", ctx.origin("fp16"))
    elif "bf16" in ctx.given and effective["bf16"] is False:
        out.set("precision", "fp32", ctx.origin("bf16"))
    else:
        out.set("precision", "bf16", ctx.origin("bf16") if "bf16" in ctx.given else
                "TRL's default bf16 (on where supported)")
    dtype_key = "dtype" if "dtype" in effective else "torch_dtype"
    dtype = effective.get(dtype_key)
    if dtype in (None, "float32"):
        return
    if dtype == "bfloat16" and effective.get("use_peft") and out.values["precision"] == "bf16":
        out.set("lora_base_dtype", "bf16", ctx.origin(dtype_key))
    else:
        out.notes.append(f"{dtype_key} {dtype!r} not translated: TRL then loads the weights in that dtype; upo keeps "
                         "fp32 weights and optimizer state under autocast (with LoRA and bf16, lora_base_dtype: "
                         "bf16 keeps the frozen base in bf16)")


def _lora(ctx: Context) -> None:
    """TRL leaves lora_target_modules to peft's default for the architecture (q_proj and v_proj for
    Llama and Qwen2); upo's default is all-linear, so the conversion writes peft's list out. Without
    use_peft, TRL ignores the lora_* keys, and so does the translation."""
    out = ctx.out
    if not ctx.effective.get("use_peft"):
        for key in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "use_dora", "use_rslora",
                    "lora_modules_to_save"):
            if out.values.pop(RENAMED[key], None) is not None:
                out.origins.pop(RENAMED[key])
                out.not_translated.append(f"{key} ({ctx.where(key)}: use_peft is false)")
        return
    out.set("merge_lora", False, "TRL saves the adapters, not a merged model")
    if ctx.effective.get("lora_target_modules") is None:
        modules = peft_default_targets(ctx.effective.get("model_name_or_path"))
        if modules is None:
            ctx.refuse("use_peft", "TRL leaves lora_target_modules to peft's default for the model's architecture, "
                       "which this conversion could not read (the model is not a local folder with a config.json): "
                       "set lora_target_modules")
        else:
            out.set("lora_target_modules", modules, "peft's default for this architecture (TRL's lora_target_modules: "
                    "None)")


def _quantization(ctx: Context) -> None:
    """QLoRA: TRL's load_in_4bit with use_peft is upo's, with its quant type and nested quantization;
    the 4-bit weights stored in uint8 (TRL's None: bitsandbytes' default; other storage dtypes serve
    FSDP, which upo does not run with a 4-bit base)."""
    keys = ("bnb_4bit_quant_type", "use_bnb_nested_quant", "bnb_4bit_quant_storage")
    if not ctx.effective.get("load_in_4bit"):
        ctx.out.not_translated += [f"{key} ({ctx.where(key)}: load_in_4bit is false)" for key in keys if key in ctx.given]
        return
    if not ctx.effective.get("use_peft"):
        ctx.refuse("load_in_4bit", "a 4-bit base can train adapters only: set use_peft: true (QLoRA)")
        return
    ctx.out.set("load_in_4bit", True, ctx.origin("load_in_4bit"))
    for key in keys[:2]:
        if key in ctx.given:
            ctx.out.set(key, ctx.effective[key], ctx.origin(key))
    if ctx.effective.get("bnb_4bit_quant_storage") not in (None, "uint8"):
        ctx.refuse("bnb_4bit_quant_storage", f"{ctx.effective['bnb_4bit_quant_storage']!r}: upo stores 4-bit weights "
                   "in uint8 (a float storage dtype serves FSDP, which upo does not run with a 4-bit base)")
    ctx.out.notes.append("QLoRA: TRL computes the 4-bit layers in the model's dtype (its `dtype`), upo in the run's "
                         "precision. final/ holds the adapters, as TRL saves them (merge_lora: false); merge_lora: true "
                         "saves the 4-bit base dequantized with the adapters merged: the model as trained (README, QLoRA)")


def _differences(ctx: Context) -> None:
    """What upo does differently whatever the file says."""
    decay = ctx.out.values.get("weight_decay")
    if not ctx.effective.get("use_peft") and isinstance(decay, (int, float)) and decay > 0:
        ctx.out.notes.append("weight_decay: transformers exempts biases and norm weights from it; upo decays every "
                             "trained parameter")


def _typed(ctx: Context) -> None:
    """Each value as upo's typed config reads it from YAML (5e-7 written as text becomes a float); a
    value of the wrong type is an error naming the TRL key it came from."""
    hints = typing.get_type_hints(UPOConfig)
    for key, value in list(ctx.out.values.items()):
        try:
            ctx.out.values[key] = coerce_value(key, hints[key], value, f"{ctx.source}: {ctx.out.origins[key]}")
        except ConfigError as e:
            ctx.out.errors.append(str(e))


def peft_default_targets(model: str | None) -> list[str] | None:
    """peft's default LoRA target modules for a local model folder's architecture; None if unknown."""
    if not isinstance(model, str) or not (Path(model) / "config.json").is_file():
        return None
    import json

    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as targets

    modules = targets.get(json.loads((Path(model) / "config.json").read_text()).get("model_type"))
    return list(modules) if modules else None


def to_yaml(out: Translation, source: str, trainer: str) -> str:
    """The upo config as YAML, each key's origin in a comment; what was not translated at the end."""
    lines = [f"# upo config translated from {source} ({TRAINERS[trainer]}) by `upo from-trl`.",
             "# Each key's comment says where its value came from. Train with: upo train --config THIS_FILE"]
    order = {f.name: n for n, f in enumerate(dataclasses.fields(UPOConfig))}  # upo's own order (`upo train --help`)
    for key, value in sorted(out.values.items(), key=lambda item: order[item[0]]):
        dumped = yaml.safe_dump({key: value}, default_flow_style=True, width=math.inf).strip()[1:-1]
        lines.append(f"{dumped}  # {out.origins[key]}")
    if out.notes:
        lines += ["", "# Differences to know:"] + [f"#  - {note}" for note in out.notes]
    if out.not_translated:
        lines += ["", "# Not translated (they change nothing about the updates in upo):",
                  "#   " + ", ".join(out.not_translated)]
    return "\n".join(lines) + "\n"


def run_from_trl(trl_config: str, trainer: str, output: str | None) -> None:
    """`upo from-trl`: translate, check the result is a valid upo config, print or write it."""
    out = translate_file(trl_config, trainer)
    try:
        UPOConfig(**out.values)
    except ConfigError as e:
        raise ConfigError(f"{trl_config}: the translated config is not a valid upo config: {e}") from None
    text = to_yaml(out, trl_config, trainer)
    if output is None:
        print(text, end="")
        return
    path = Path(output)
    if path.exists():
        raise FileExistsError(f"{path} exists; upo from-trl does not overwrite a file: choose another --output")
    path.write_text(text)
    print(f"upo: wrote {path} ({len(out.values)} keys; {len(out.notes)} differences to know, listed at its end); "
          f"train with: upo train --config {path}")
