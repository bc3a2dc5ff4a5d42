"""`upo from-trl`: a TRL config file as an upo config, key by key.

The input is the YAML a TRL user runs (`trl dpo --config FILE`, or the values of a script's
`DPOConfig(...)`): TRL 1.16's trainer config (DPOConfig, KTOConfig, CPOConfig, ORPOConfig, with
transformers' TrainingArguments) plus the CLI's `ModelConfig` and `ScriptArguments` keys. The output
trains the same objective on the same data with the same optimizer settings:

- Keys with an upo equivalent are translated (`RENAMED` and the handlers below), each output line
  saying which TRL key (and line) it came from.
- TRL's defaults are written out where upo's differ and the run's updates depend on them (TRL's
  learning rate 1e-6, linear schedule, 3 epochs, batch 8, max_length 1024, ...): a TRL file that
  leaves them out trained with them.
- Keys that change nothing about the updates in upo (logging folders, Hub pushes, data-loader
  workers, kernels) are listed as not translated.
- A key whose TRL meaning upo cannot reproduce (TRL's per-token IPO, AlphaPO, QLoRA, WPO weighting,
  a fractional epoch count, ...) is an error naming the file, the line and why; so is a key
  neither knows. Nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from upo.config import UPOConfig
from upo.config_values import ConfigError, load_yaml

TRAINERS = {"dpo": "DPOTrainer", "kto": "KTOTrainer", "cpo": "CPOTrainer", "orpo": "ORPOTrainer"}

# TRL 1.16's defaults that differ from upo's and change the updates (the same for the four trainers,
# except the loss keys below): written out when the file leaves them unset.
TRL_DEFAULTS = {"learning_rate": 1e-6, "lr_scheduler_type": "linear", "num_train_epochs": 3.0,
                "per_device_train_batch_size": 8, "max_length": 1024, "gradient_checkpointing": True,
                "logging_steps": 10, "eval_strategy": "no", "save_strategy": "steps", "save_steps": 500}
LORA_DEFAULTS = {"lora_dropout": 0.05}  # ModelConfig's, where upo's (0.0) differs; with use_peft only

# TRL key -> upo key: the same meaning and units.
RENAMED = {
    "model_name_or_path": "model", "attn_implementation": "attn_implementation", "output_dir": "output_dir",
    "dataset_name": "dataset", "dataset_train_split": "dataset_split",
    "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "gradient_accumulation_steps",
    "learning_rate": "learning_rate", "weight_decay": "weight_decay", "max_grad_norm": "max_grad_norm",
    "seed": "seed", "max_length": "max_length", "max_prompt_length": "max_prompt_length",
    "gradient_checkpointing": "gradient_checkpointing", "padding_free": "padding_free",
    "precompute_ref_log_probs": "precompute_ref_logps", "logging_steps": "logging_steps",
    "save_total_limit": "save_total_limit", "beta": "beta", "label_smoothing": "label_smoothing",
    "desirable_weight": "desirable_weight", "undesirable_weight": "undesirable_weight", "rpo_alpha": "rpo_alpha",
    "cpo_alpha": "cpo_alpha", "simpo_gamma": "simpo_gamma", "use_peft": "lora", "lora_r": "lora_r",
    "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout", "lora_target_modules": "lora_target_modules",
}

# Keys that change nothing about the updates in upo: logging and Hub logistics, evaluation batch
# sizes, data-loading workers, kernels and compilers (upo picks its own), TRL's own switches for what
# upo always does (padding to the batch, its chat-template handling). Listed as not translated.
NO_EFFECT = frozenset({
    "logging_dir", "logging_first_step", "logging_strategy", "logging_nan_inf_filter", "log_level",
    "log_level_replica", "log_on_each_node", "disable_tqdm", "run_name", "project", "trackio_space_id",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push",
    "hub_revision", "model_revision", "per_device_eval_batch_size", "eval_accumulation_steps",
    "eval_on_start", "prediction_loss_only", "bf16_full_eval", "fp16_full_eval", "tf32", "torch_compile",
    "torch_compile_backend", "torch_compile_mode", "use_liger_kernel", "dataloader_num_workers",
    "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor", "dataset_num_proc",
    "remove_unused_columns", "overwrite_output_dir", "do_train", "do_eval", "do_predict", "save_only_model",
    "save_safetensors", "load_best_model_at_end", "metric_for_best_model", "greater_is_better",
    "ddp_find_unused_parameters", "ddp_timeout", "ddp_backend", "ddp_bucket_cap_mb", "generate_during_eval",
    "precompute_ref_batch_size", "use_logits_to_keep", "include_num_input_tokens_seen",
    "average_tokens_across_devices", "torch_empty_cache_steps", "lora_task_type", "pad_token", "padding_value",
    "label_pad_token_id", "dataset_text_field", "skip_memory_metrics", "ignore_bias_buffers",
    "activation_offloading", "save_on_each_node", "pad_to_multiple_of", "use_cache", "use_cpu", "local_rank",
    "debug", "batch_eval_metrics", "eval_delay", "eval_do_concat_batches", "eval_use_gather_object",
    "include_for_metrics", "label_names", "length_column_name", "liger_kernel_config", "trackio_bucket_id",
    "trackio_static_space_id", "dataloader_multiprocessing_context", "ddp_broadcast_buffers", "ddp_static_graph",
    "restore_callback_states_from_checkpoint", "ignore_data_skip", "accelerator_config", "dataloader_in_order",
    # read only with a setting refused elsewhere (a loss_type, sync_ref_model, load_in_4bit)
    "discopop_tau", "f_alpha_divergence_coef", "ref_model_mixup_alpha", "ref_model_sync_steps",
    "bnb_4bit_quant_type", "bnb_4bit_quant_storage", "use_bnb_nested_quant",
})


@dataclass
class Translation:
    """The upo config values, each with where it came from, and what was left out."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # upo key -> "TRL's learning_rate (line 3)" / "TRL's default"
    not_translated: list[str] = field(default_factory=list)  # "logging_dir (line 7)"
    notes: list[str] = field(default_factory=list)  # differences a user should know
    errors: list[str] = field(default_factory=list)

    def set(self, key: str, value: Any, origin: str) -> None:
        self.values[key] = value
        self.origins[key] = origin


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
    """TRL keys -> upo values; `lines` (key -> line in `source`) places each key in messages."""
    out = Translation()
    given = dict(trl)
    effective = {**TRL_DEFAULTS, **(LORA_DEFAULTS if given.get("use_peft") else {}), **given}
    lines = lines or {}

    def where(key: str) -> str:
        return f"{source}:{lines[key]}" if key in lines else source

    def origin(key: str) -> str:
        if key not in given:
            return f"TRL's default {key}: {effective[key]!r}"
        return f"TRL's {key}" + (f" (line {lines[key]})" if key in lines else "")

    def refuse(key: str, why: str) -> None:
        out.errors.append(f"{where(key)}: {key}: {why}")

    _method(effective, given, trainer, out, refuse, origin)
    for key, value in effective.items():
        if key in _HANDLED:
            continue
        if key in RENAMED:
            if value is not None:
                out.set(RENAMED[key], value, origin(key))
        elif key in NO_EFFECT:
            out.not_translated.append(f"{key} ({where(key)})")
        elif key in _HANDLERS:
            _HANDLERS[key](key, value, effective, out, refuse, origin)
        else:
            refuse(key, "not a key of TRL 1.16's " + TRAINERS[trainer] + " config that upo knows; remove it, or "
                   "set its upo equivalent by hand (`upo train --help` lists upo's keys)")
    _schedule(effective, out, refuse, origin)
    _evaluation_and_saving(effective, given, out, refuse, origin)
    _precision(effective, given, out, origin)
    _lora(effective, out, refuse, where)
    if effective.get("max_length") is not None and "max_prompt_length" not in given:
        max_length = int(effective["max_length"])
        if UPOConfig.max_prompt_length >= max_length:
            out.set("max_prompt_length", max_length // 2, "upo: half of max_length (TRL 1.16 has no max_prompt_length)")
        out.notes.append("truncation: TRL 1.16 cuts a sequence longer than max_length at its end (truncation_mode "
                         "keep_start); upo keeps a prompt's last max_prompt_length tokens and cuts the response to "
                         "fit max_length. Runs whose sequences fit max_length are unaffected (`upo validate --model` "
                         "counts what would be cut).")
    return out


def _method(effective, given, trainer, out, refuse, origin) -> None:
    """The method from the trainer and its loss_type (loss_weights: RPO)."""
    loss_type = effective.get("loss_type")
    types_ = [loss_type] if isinstance(loss_type, str) else list(loss_type or [])
    weights = effective.get("loss_weights")
    where = origin("loss_type") if "loss_type" in given else f"TRL's {TRAINERS[trainer]}"
    if trainer == "dpo":
        if types_ in ([], ["sigmoid"]) and weights in (None, [1], [1.0]):
            out.set("method", "dpo", where)
        elif types_ == ["sigmoid", "sft"] and weights is not None and len(weights) == 2 and weights[0] == 1:
            out.set("method", "dpo", where)
            out.set("rpo_alpha", float(weights[1]), origin("loss_weights") + " (RPO: the sft loss's weight)")
        elif types_ == ["ipo"]:
            refuse("loss_type", "TRL 1.16's ipo divides each log-ratio by its completion length; upo's ipo is the "
                   "paper's, on summed log-ratios, so the same beta would train something else. Write an upo config "
                   "with method: ipo and a beta chosen for summed log-ratios")
        else:
            refuse("loss_type", f"{loss_type!r} with loss_weights {weights!r}: upo translates sigmoid (DPO) and "
                   "[sigmoid, sft] with loss_weights [1, alpha] (RPO)")
    elif trainer == "kto":
        if types_ in ([], ["kto"]):
            out.set("method", "kto", where)
        else:
            refuse("loss_type", f"{loss_type!r}: upo translates KTOTrainer's kto loss only")
    elif trainer == "cpo":
        if effective.get("alpha", 0.0) != 0.0:
            refuse("alpha", "AlphaPO's reward transform is not in upo; alpha must be 0")
        if types_ in ([], ["sigmoid"]):
            out.set("method", "cpo", where)
        elif types_ == ["simpo"] and float(effective.get("cpo_alpha", 1.0)) == 0.0:
            out.set("method", "simpo", where)
        elif types_ == ["simpo"]:
            refuse("loss_type", "TRL's simpo adds cpo_alpha (default 1) times the chosen NLL (CPO-SimPO); upo's "
                   "simpo is the paper's, without it: set cpo_alpha: 0 for SimPO")
        else:
            refuse("loss_type", f"{loss_type!r}: upo translates CPOTrainer's sigmoid (CPO) and simpo")
    else:
        out.set("method", "orpo", f"TRL's {TRAINERS[trainer]}")
    if out.values.get("method") == "simpo":
        effective.pop("cpo_alpha")  # 0, checked above: upo's simpo has no NLL term to weigh


def _epochs_and_steps(key, value, effective, out, refuse, origin) -> None:
    if key == "num_train_epochs":
        if float(value) != int(float(value)) or value <= 0:
            refuse(key, f"{value}: upo trains whole epochs; use max_steps for a part of one")
        elif int(effective.get("max_steps", -1)) <= 0:
            out.set("num_epochs", int(float(value)), origin(key))
    elif int(value) > 0:  # max_steps; -1 = by epochs
        out.set("max_steps", int(value), origin(key))


def _optimizer(key, value, effective, out, refuse, origin) -> None:
    if key == "optim":
        if value in ("adamw_torch", "adamw_torch_fused", "adamw_hf"):
            out.set("optimizer", "adamw", origin(key))
        elif value == "rmsprop":
            out.set("optimizer", "rmsprop", origin(key))
        else:
            refuse(key, f"{value!r}: upo has adamw (torch's AdamW) and rmsprop")
    elif value != {"adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8}[key]:
        refuse(key, f"{value}: upo's AdamW uses torch's defaults (betas 0.9, 0.999; eps 1e-8)")


def _report_to(key, value, effective, out, refuse, origin) -> None:
    trackers = [value] if isinstance(value, str) else list(value or [])
    trackers = [t for t in trackers if t != "none"]
    if "all" in trackers:
        refuse(key, "'all': name the trackers (upo: tensorboard, trackio, wandb, mlflow)")
    elif trackers:
        out.set("report_to", trackers, origin(key))


def _must_be(default, why: str = ""):
    """A TRL setting upo has no key for, because upo always behaves as TRL's `default` does."""

    def check(key, value, effective, out, refuse, origin) -> None:
        if value != default and not (default is None and value in ("", [], {})):
            refuse(key, f"{value!r}: " + (why or f"upo has no such setting; it always behaves as {key}: {default!r} does"))

    return check


def _sampling(key, value, effective, out, refuse, origin) -> None:
    """Data order is never the same across libraries; say so where the file asked for one."""
    if value != "random" and not origin(key).startswith("TRL's default"):
        out.notes.append(f"train_sampling_strategy {value!r} not translated: upo shuffles the training data with "
                         "its seed (group_by_length: batches of similar length)")


_HANDLERS = {
    "num_train_epochs": _epochs_and_steps, "max_steps": _epochs_and_steps,
    "optim": _optimizer, "adam_beta1": _optimizer, "adam_beta2": _optimizer, "adam_epsilon": _optimizer,
    "report_to": _report_to,
    "disable_dropout": _must_be(True), "use_weighting": _must_be(False), "sync_ref_model": _must_be(False),
    "f_divergence_type": _must_be("reverse_kl"), "ld_alpha": _must_be(None), "dataset_streaming": _must_be(False),
    "dataset_config": _must_be(None),
    "use_dora": _must_be(False), "use_rslora": _must_be(False), "lora_modules_to_save": _must_be(None),
    "lora_target_parameters": _must_be(None), "trust_remote_code": _must_be(False),
    "max_completion_length": _must_be(None), "truncation_mode": _must_be("keep_start"),
    "warmup_ratio": _must_be(0.0), "gradient_checkpointing_kwargs": _must_be(None),
    "model_init_kwargs": _must_be(None), "ref_model_init_kwargs": _must_be(None),
    "auto_find_batch_size": _must_be(False), "data_seed": _must_be(None), "full_determinism": _must_be(False),
    "label_smoothing_factor": _must_be(0.0), "neftune_noise_alpha": _must_be(None), "optim_args": _must_be(None),
    "optim_target_modules": _must_be(None), "train_sampling_strategy": _sampling,
    "router_aux_loss_coef": _must_be(None), "is_encoder_decoder": _must_be(None),
    "activation_checkpointing": _must_be(None), "activation_checkpointing_kwargs": _must_be(None),
    "enable_jit_checkpoint": _must_be(False), "resume_from_checkpoint": _must_be(None),
    "dataloader_drop_last": _must_be(False), "lr_scheduler_kwargs": _must_be(None),
    # multi-GPU engines: upo takes them from `accelerate launch --config_file` (README, "Multi-GPU")
    **dict.fromkeys(("deepspeed", "fsdp", "fsdp_config", "parallelism_config"), _must_be(
        None, "upo takes DeepSpeed and FSDP from `accelerate launch --config_file` (README, Multi-GPU): remove it "
        "and launch `upo train` with that engine's Accelerate config")),
    **dict.fromkeys(("load_in_4bit", "load_in_8bit"), _must_be(
        False, "quantized bases (QLoRA, bitsandbytes) are not supported by upo yet; LoRA with "
        "lora_base_dtype: bf16 halves the base's memory")),
}
# Read by the functions that translate several keys together.
_HANDLED = frozenset({"loss_type", "loss_weights", "alpha", "lr_scheduler_type", "warmup_steps", "eval_strategy",
                      "eval_steps", "dataset_test_split", "save_strategy", "save_steps", "bf16", "fp16", "dtype",
                      "torch_dtype"})


def _schedule(effective, out, refuse, origin) -> None:
    """lr_scheduler_type and warmup_steps: transformers' "constant" ignores warmup, its
    "constant_with_warmup" is upo's constant."""
    scheduler, warmup = effective["lr_scheduler_type"], effective.get("warmup_steps", 0)
    if isinstance(warmup, float) and 0 < warmup < 1:
        refuse("warmup_steps", f"{warmup} is a ratio of the total steps in transformers; upo's warmup_steps counts "
               "steps: set it to the ratio times the run's optimizer steps")
        return
    names = {"linear": "linear", "cosine": "cosine", "constant": "constant", "constant_with_warmup": "constant"}
    if scheduler not in names:
        refuse("lr_scheduler_type", f"{scheduler!r}: upo has linear, cosine and constant(_with_warmup)")
        return
    out.set("lr_scheduler", names[scheduler], origin("lr_scheduler_type"))
    if warmup and scheduler == "constant":
        out.notes.append(f"warmup_steps {warmup} not translated: transformers' constant schedule ignores warmup")
    elif warmup:
        out.set("warmup_steps", int(warmup), origin("warmup_steps"))


def _evaluation_and_saving(effective, given, out, refuse, origin) -> None:
    """TRL evaluates on dataset_test_split only with eval_strategy steps (or epoch); without it,
    it trains on the whole training split, so upo holds out nothing (eval_fraction 0)."""
    strategy = effective["eval_strategy"]
    if strategy == "no":
        out.set("eval_fraction", 0.0, origin("eval_strategy") + ": TRL holds out nothing")
    elif strategy == "steps" and effective.get("dataset_name"):
        out.set("eval_dataset", effective["dataset_name"], origin("dataset_name"))
        out.set("eval_split", effective.get("dataset_test_split", "test"), origin("dataset_test_split")
                if "dataset_test_split" in given else "TRL's default dataset_test_split: 'test'")
        out.set("eval_fraction", 0.0, "upo: held-out pairs come from eval_split")
        if effective.get("eval_steps") is not None:
            out.set("eval_steps", int(effective["eval_steps"]), origin("eval_steps"))
    else:
        refuse("eval_strategy", f"{strategy!r}" + (" without a dataset_name" if strategy == "steps" else "")
               + ": upo evaluates every eval_steps steps and at the end, on a dataset's eval_split")
    if effective["save_strategy"] == "steps":
        out.set("save_steps", int(effective["save_steps"]), origin("save_steps"))
        if "save_total_limit" not in given:
            out.notes.append(f"save_total_limit: TRL keeps every checkpoint; upo keeps the newest "
                             f"{UPOConfig.save_total_limit} (set save_total_limit to keep more)")
    elif effective["save_strategy"] != "no":
        refuse("save_strategy", f"{effective['save_strategy']!r}: upo saves every save_steps steps (or never)")


def _precision(effective, given, out, origin) -> None:
    """bf16 / fp16: upo keeps fp32 weights under autocast in that dtype (TRL's mixed precision)."""
    if effective.get("fp16"):
        out.set("precision", "fp16", origin("fp16"))
    elif "bf16" in given and effective["bf16"] is False:
        out.set("precision", "fp32", origin("bf16"))
    else:
        out.set("precision", "bf16", origin("bf16") if "bf16" in given else "TRL's default bf16 (on where supported)")
    dtype = effective.get("dtype", effective.get("torch_dtype"))
    if dtype in ("bfloat16", "float16", "half") and not effective.get("use_peft"):
        out.notes.append(f"dtype {dtype} not translated: TRL then trains {dtype} weights; upo keeps fp32 weights "
                         "and optimizer state under bf16 autocast (more memory, no rounding of small updates)")
    elif dtype == "bfloat16" and out.values.get("precision", UPOConfig.precision) == "bf16":
        out.set("lora_base_dtype", "bf16", origin("dtype" if "dtype" in given else "torch_dtype"))


def _lora(effective, out, refuse, where) -> None:
    """TRL leaves lora_target_modules to peft's default for the architecture (q_proj and v_proj for
    Llama and Qwen2); upo's default is all-linear, so the conversion writes peft's list out. Without
    use_peft, TRL ignores the lora_* keys, and so does the translation."""
    if not effective.get("use_peft"):
        for key in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"):
            if out.values.pop(RENAMED[key], None) is not None:
                out.origins.pop(RENAMED[key])
                out.not_translated.append(f"{key} ({where(key)}: use_peft is false)")
        return
    out.set("merge_lora", False, "TRL saves the adapters, not a merged model")
    if effective.get("lora_target_modules") is None:
        modules = peft_default_targets(effective.get("model_name_or_path"))
        if modules is None:
            refuse("use_peft", "TRL leaves lora_target_modules to peft's default for the model's architecture, which "
                   "this conversion could not read (the model is not a local folder with a config.json): set "
                   "lora_target_modules")
        else:
            out.set("lora_target_modules", modules, "peft's default for this architecture (TRL's lora_target_modules: None)")


def peft_default_targets(model: str | None) -> list[str] | None:
    """peft's default LoRA target modules for a local model folder's architecture; None if unknown."""
    if not model or not (Path(model) / "config.json").is_file():
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
