"""Loading models and tokenizers, LoRA, and the value head."""

from __future__ import annotations

import contextlib
from copy import deepcopy
from pathlib import Path

import torch
from torch import nn

from upo.config import EMBEDDED_MODEL, UPOConfig
from upo.hub_names import looks_local
from upo.packing import checkpoint_packed_layers


def resolve_model_path(name: str, cache_dir: str | None = None, progress: bool = True) -> str:
    """The embedded default becomes its cached HF folder; other names pass through unchanged."""
    if name == EMBEDDED_MODEL:
        from upo.embedded import embedded_model_dir

        return str(embedded_model_dir(cache_dir, progress=progress))
    path = Path(name).expanduser()
    if looks_local(name) and not path.exists():
        raise FileNotFoundError(f"model path does not exist: {name}")
    if path.is_dir() and not holds_model(path):
        if holds_model(path / "final"):
            raise FileNotFoundError(f"{name} is a run folder: its trained model is {path / 'final'}")
        raise FileNotFoundError(f"{name}: no model in this folder (no config.json, as save_pretrained writes)")
    return name


def holds_model(folder: Path) -> bool:
    """Whether a folder holds what from_pretrained loads: a model's or a peft adapter's config, or a
    tokenizer alone (all `upo validate --model` needs)."""
    return any((folder / f).is_file() for f in ("config.json", "adapter_config.json", "tokenizer_config.json"))


def check_gradient_checkpointing(model_path: str, head: str = "causal-lm") -> None:
    """gradient_checkpointing: true for a model whose transformers class cannot do it is refused from
    the model's config alone, before any data is read (`enable_gradient_checkpointing` checks the
    loaded model the same way). `head`: "causal-lm" (upo train) or "sequence-classification" (upo rm train)."""
    from transformers import AutoConfig
    from transformers.models.auto import modeling_auto

    mapping = {"causal-lm": modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING,
               "sequence-classification": modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING}[head]
    try:
        config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError):  # e.g. a folder of LoRA adapters alone: checked once loaded
        return
    if type(config) in mapping and not getattr(mapping[type(config)], "supports_gradient_checkpointing", False):
        raise ValueError(f"gradient_checkpointing: true, but {mapping[type(config)].__name__} does not support it in "
                         "transformers")


def enable_gradient_checkpointing(lm) -> None:
    """transformers' activation checkpointing of every decoder layer, non-reentrant (it keeps the RNG
    state, so a rerun layer draws LoRA's dropout masks again as it drew them). transformers checkpoints
    a layer only while the layer is in train mode: each layer's own flag is set, and every module inside
    it stays in the mode it was loaded in (eval), so nothing else that train mode switches on (an MoE
    router's sampling, say) changes what a step computes. `upo.modeling.eval_mode` restores the flags
    after held-out evaluation."""
    if not getattr(lm, "supports_gradient_checkpointing", False):
        raise ValueError(f"gradient_checkpointing: true, but {type(lm).__name__} does not support it in transformers")
    if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.x's name; the old one warns
        lm.activation_checkpointing_enable()
    else:
        lm.gradient_checkpointing_enable()
    # each layer's checkpoint function replaced by upo's (non-reentrant; packed attention rerun as it ran)
    layers = checkpoint_packed_layers(lm)
    for layer in layers:
        layer.training = True  # the layer's own flag only: not layer.train(), which would recurse


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        # Padding positions are masked everywhere; any id works, eos is the convention.
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer of {path} has no eos token; set one before training")
    return tokenizer


def default_attention() -> str | None:
    """The attention kernel when none is configured: "eager" without CUDA, else transformers' default.

    On this project's 2-core CPU a full fine-tuning step of SmolLM2-135M (8 sequences of ~150-220
    tokens) takes 1.50 s with eager attention and 1.84 s with sdpa, whose CPU flash-attention
    backward alone takes 0.37 s; at these lengths the T x T scores are small.
    """
    return None if torch.cuda.is_available() else "eager"


def load_causal_lm(path: str, dtype: torch.dtype = torch.float32, attn_implementation: str | None = None,
                   quantization=None, device: torch.device | None = None):
    """`quantization`: a transformers quantization config (QLoRA's BitsAndBytesConfig), applied as
    the weights load onto `device`; `dtype` is then the dtype of what stays unquantized (embeddings,
    norms, the LM head)."""
    from transformers import AutoModelForCausalLM

    attention = attn_implementation or default_attention()
    kwargs = {"attn_implementation": attention} if attention else {}
    if quantization is not None:
        kwargs.update(quantization_config=quantization, device_map={"": str(device or "cpu")})
    try:
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    except OSError as e:
        raise FileNotFoundError(f"could not load a causal LM from {path!r}: {e}") from None
    if quantization is not None:
        keep_4bit_layout(lm)
    return lm


def keep_4bit_layout(model: nn.Module) -> None:
    """Turn off bitsandbytes' CPU inference path for 4-bit layers (0.50: with AVX-512 bf16, a layer in
    eval mode under no_grad repacks its weight in place for a faster kernel, with bf16 scales). Its
    inverse, run by every state_dict(), does not restore the weights of a base without nested
    quantization: a model so packed and saved computed logits up to 0.65 away from before (a 2-layer
    model, width 256). Unpacked, every forward (training, reference, held-out) uses the same weights."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


# float module attributes that transformers models pass to F.dropout(..., training=self.training) (OPT's
# dropout and layerdrop, Starcoder2's residual_dropout, DBRX's resid_pdrop, ...). Not "jitter_noise":
# PhiMoE's router reads its router_jitter_noise as a masking threshold in eval mode too.
DROPOUT_NAMES = ("dropout", "pdrop", "layerdrop")


def disable_dropout(model: nn.Module) -> None:
    """Preference losses compare policy and reference log-probs; dropout would add noise to both.
    Zeroes every nn.Dropout and every float attribute of a module named like a dropout rate
    (`DROPOUT_NAMES`). LoRA's dropout, added after, keeps `lora_dropout`."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if type(value) is float and value > 0 and any(part in name for part in DROPOUT_NAMES):
                setattr(module, name, 0.0)


@torch.no_grad()
def init_token_embeddings(model, tokenizer, texts: dict[int, str]) -> None:
    """Set the input embedding of each new token id to the mean embedding of the tokens of its text
    ({id: text}, e.g. an aux_coef token's "0.3"), so that new control tokens start apart, each where
    the text it stands for lies. transformers' resize gives every new row (nearly) the vocabulary's
    mean: four steering tokens trained from there stayed at cosine 0.996 from one another after 800
    steps, and the policy could barely tell its conditions apart (README, Steered UPO). With tied
    input and output embeddings the output rows follow."""
    embeddings = model.get_input_embeddings().weight
    for token_id, text in texts.items():
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids or any(i in texts for i in ids):
            raise ValueError(f"control token {token_id}: its text {text!r} has no tokens of the vocabulary")
        embeddings[token_id] = embeddings[ids].mean(dim=0)


def add_lora(model, cfg: UPOConfig, trainable_token_ids: list[int] | None = None):
    """Wrap `model` with LoRA adapters; `trainable_token_ids` are embedding rows trained in full
    (new tokens such as CSFT's control tokens, which LoRA alone could not give a meaning)."""
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_target_modules
    lora_config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
        trainable_token_indices=trainable_token_ids or None,
        modules_to_save=cfg.lora_modules_to_save or None,
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
    )
    model = get_peft_model(model, lora_config)
    # What trains stays fp32 whatever the base's dtype (lora_base_dtype: bf16): peft makes the adapters fp32,
    # but copies saved modules (modules_to_save) and trainable token rows in the base's dtype.
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def full_copy(lm, state: dict[str, torch.Tensor], merge: bool = False):
    """`lm` (a transformers causal LM, in peft or not) rebuilt around `state`, its full weights; with
    `merge`, peft's adapters merged into the weights.

    The trained module may hold only this process's shard of each weight (FSDP, DeepSpeed ZeRO-3),
    which save_pretrained or merge_and_unload cannot use; `state` is what
    `accelerator.get_state_dict` gathered. The copy is built on the meta device and then takes
    `state`'s tensors as its own, so no weight is allocated twice.
    """
    from peft import PeftModel, get_peft_model

    peft = isinstance(lm, PeftModel)
    base = lm.get_base_model() if peft else lm
    # A gathered state holds tied weights (LM head = input embeddings) as two equal tensors: one again,
    # so that the copy ties them too (peft's merge unties embeddings whose storage differs).
    prefix = "base_model.model." if peft else ""
    for target, source in getattr(base, "all_tied_weights_keys", {}).items():
        if prefix + target in state and prefix + source in state:
            state = {**state, prefix + target: state[prefix + source]}
    config = base.config
    if getattr(config, "quantization_config", None) is not None:  # the copy's weights are plain (QLoRA's
        config = deepcopy(config)                                    # dequantized: `dequantized_state`)
        del config.quantization_config
    with torch.device("meta"):
        copy = type(base)(config)
    copy.generation_config = base.generation_config
    if peft:  # every adapter of `lm` (a run steered by adapter has two: upo.steer_adapter), the same ones active
        names = list(lm.peft_config)
        copy = get_peft_model(copy, deepcopy(lm.peft_config[names[0]]), adapter_name=names[0])
        for name in names[1:]:
            copy.add_adapter(name, deepcopy(lm.peft_config[name]))
        if len(names) > 1:
            copy.base_model.set_adapter(list(lm.base_model.active_adapters))
    copy.load_state_dict(state, assign=True)
    return merged(copy) if peft and merge else copy


def dequantized_state(lm, state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """`state` (`lm`'s state dict) with each 4-bit weight of bitsandbytes (QLoRA's frozen base) in
    full precision, and the quantization constants' entries dropped: the weights the trained model
    computed with, which `full_copy` can hold and merge LoRA into (the original unquantized weights
    would be another model: the adapters were trained on these)."""
    import bitsandbytes as bnb

    quantized = {name: module for name, module in lm.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    plain = {key: tensor for key, tensor in state.items()
             if not any(key.startswith(f"{name}.weight") for name in quantized)}
    for name, module in quantized.items():
        plain[f"{name}.weight"] = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).to(dtype)
    return plain


def merged(lm):
    """A peft model's active adapters merged into its weights, in fp32: into a bf16 base
    (`lora_base_dtype: bf16`) the adapters' small deltas would largely round away."""
    return lm.to(torch.float32).merge_and_unload()


class ValueHead(nn.Module):
    """V_psi(x): a small MLP on the (detached) hidden state at the last prompt token.

    The input LayerNorm makes the head indifferent to the scale of the LM's hidden states; the last
    layer starts at zero so V starts at 0, the mean of standardized rewards.
    """

    def __init__(self, hidden_size: int, width: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(hidden_size),
            nn.Linear(hidden_size, width),
            nn.GELU(),
            nn.Linear(width, width),
            nn.GELU(),
            nn.Linear(width, 1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, prompt_hidden: torch.Tensor) -> torch.Tensor:
        """prompt_hidden [N, H] -> values [N] (fp32)."""
        # fp32 even under bf16 autocast: the head is tiny and regresses small reward differences.
        with torch.autocast(device_type=prompt_hidden.device.type, enabled=False):
            return self.net(prompt_hidden.float()).squeeze(-1)


@contextlib.contextmanager
def eval_mode(*modules):
    """Put the given modules (None ones skipped) in eval mode for the block, then give every submodule
    back its own mode: a model can mix them (peft's LoRA layers are in train mode around a base that
    from_pretrained left in eval mode), which a recursive `train(mode)` would not restore."""
    modes = [(m, m.training) for module in modules if module is not None for m in module.modules()]
    for module in modules:
        if module is not None:
            module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def low_precision_linears(model: nn.Module, dtype: torch.dtype | None):
    """For an inference block under autocast to `dtype` (bf16, fp16; None: a no-op): hold each
    nn.Linear's weight and bias in `dtype` for the block, then restore the originals. No weight may
    be updated inside the block (the copies take no gradient).

    Autocast casts a linear layer's fp32 weight to `dtype` at every call (its cast cache does not
    serve inference), so generation, one call per new token, spent much of its time casting: 1.7x
    slower on SmolLM2-135M on one CPU core. Autocast's cast is `.to(dtype)`, so the layer's inputs,
    and its outputs, are bitwise those of autocast alone. Left alone: weights shared with an
    embedding (a tied LM head: the embedding must stay fp32 for the residual stream), weights already
    in `dtype`, and sharded ones (DTensor, DeepSpeed's), whose module attributes must not be swapped.
    """
    if dtype is None:
        yield
        return
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    saved = []
    try:  # restores what was swapped even if a copy fails part-way (out of memory)
        for module in model.modules():
            if not isinstance(module, nn.Linear) or id(module.weight) in embeddings:
                continue
            for name in ("weight", "bias"):
                param = getattr(module, name)
                if (param is None or param.dtype == dtype or not param.is_floating_point()
                        or type(param) is not nn.Parameter or hasattr(param, "ds_id")):
                    continue
                setattr(module, name, nn.Parameter(param.detach().to(dtype), requires_grad=False))
                saved.append((module, name, param))
        yield
    finally:
        for module, name, param in saved:
            setattr(module, name, param)


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def inference_autocast(model: nn.Module, precision: str):
    """For inference with `model`: autocast on its device in `precision` (bf16 | fp16), with its
    linear weights held in that dtype meanwhile (`low_precision_linears`: the same numbers,
    without a cast per call); a no-op context for fp32."""
    dtype = AUTOCAST_DTYPES.get(precision)
    device = model.device.type if hasattr(model, "device") else next(model.parameters()).device.type
    with (torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None),
          low_precision_linears(model, dtype)):
        yield

