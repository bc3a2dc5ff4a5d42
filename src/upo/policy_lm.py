"""The trained causal LM as the trainer sets it up: loaded with its frozen base in `base_dtype`
(QLoRA: quantized to 4 bits), its own dropout off, activation checkpointing on request, the rows
of new control tokens, LoRA, and steered UPO's second adapter; and, for inference, the 4-bit base
a saved QLoRA run trained on."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

from upo.config import UPOConfig
from upo.modeling import (
    AUTOCAST_DTYPES,
    add_lora,
    disable_dropout,
    enable_gradient_checkpointing,
    init_token_embeddings,
    load_causal_lm,
    resolve_model_path,
)
from upo.steer_adapter import AdapterSteering, add_steer_adapter


def base_dtype(cfg) -> torch.dtype:
    """The dtype of the weights as loaded: bf16 for LoRA's frozen base with `lora_base_dtype: bf16`,
    else fp32 (trained weights and optimizer state are fp32 under any `precision`)."""
    return torch.bfloat16 if cfg.lora and cfg.lora_base_dtype == "bf16" else torch.float32


def quantization(cfg):
    """QLoRA's BitsAndBytesConfig (`load_in_4bit`), computing in the run's precision; None without it."""
    if not (cfg.lora and cfg.load_in_4bit):
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ImportError("load_in_4bit: true needs bitsandbytes: pip install 'upo[qlora]' (or pip install "
                          "bitsandbytes)") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
                              bnb_4bit_use_double_quant=cfg.use_bnb_nested_quant,
                              bnb_4bit_compute_dtype=AUTOCAST_DTYPES.get(cfg.precision, torch.float32))


def _saved_config(folder: str) -> dict:
    """The upo_config.yaml a run saved in `folder` (its final/), as written; {} without one."""
    config = Path(folder) / "upo_config.yaml"
    return (yaml.safe_load(config.read_text()) or {}) if config.is_file() else {}


def qlora_base(folder: str) -> dict:
    """`load_causal_lm`'s keywords for the 4-bit base that the run saved in `folder` (its
    upo_config.yaml) trained on with `load_in_4bit`: its BitsAndBytesConfig and the dtype of what
    stays unquantized (`lora_base_dtype`); {} for a run without it, or a folder upo did not write."""
    saved = _saved_config(folder)
    if not (saved.get("lora") and saved.get("load_in_4bit")):
        return {}
    keys = ("lora", "load_in_4bit", "bnb_4bit_quant_type", "use_bnb_nested_quant", "precision", "lora_base_dtype")
    cfg = SimpleNamespace(**{k: saved.get(k, getattr(UPOConfig, k)) for k in keys})
    return {"quantization": quantization(cfg), "dtype": base_dtype(cfg)}


def qlora_reference(folder: str, ref_path: str, cache_dir: str | None = None) -> dict:
    """`qlora_base(folder)` when `ref_path` is the reference that run trained against: its own 4-bit base
    (no `ref_model` of its own, and `ref_path` its `model`); {} otherwise."""
    base, saved = qlora_base(folder), _saved_config(folder)
    if not base or saved.get("ref_model"):
        return {}
    return base if resolve_model_path(saved.get("model", ""), cache_dir, progress=False) == ref_path else {}


def build_policy_lm(cfg, model_path: str, tokenizer, token_texts: dict[int, str], device: torch.device | None = None):
    """(the LM to train, the AdapterSteering of a run steered by adapter or None). `token_texts`:
    {id: the text it stands for} of the control tokens added to `tokenizer` (CSFT's, steering's);
    their new embedding rows start from that text (`control_token_init: text`) and train, with LoRA too.
    With `load_in_4bit` the base is quantized as it loads onto `device` (QLoRA)."""
    lm = load_causal_lm(model_path, dtype=base_dtype(cfg), attn_implementation=cfg.attn_implementation,
                        quantization=quantization(cfg), device=device)
    disable_dropout(lm)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(lm)
    if token_texts and len(tokenizer) > (known := lm.get_input_embeddings().num_embeddings):
        lm.resize_token_embeddings(len(tokenizer))  # new rows: sampled around the mean embedding (transformers)
        if cfg.control_token_init == "text":  # each from the text it stands for: apart from the start
            init_token_embeddings(lm, tokenizer, {i: t for i, t in token_texts.items() if i >= known})
    if cfg.lora:
        # The control tokens' embeddings (CSFT's, steering's) must learn too: peft trains just those rows.
        lm = add_lora(lm, cfg, trainable_token_ids=sorted(token_texts) or None)
    steering = None
    if cfg.steer_aux_coefs and cfg.steer_by == "adapter":  # a second adapter, scaled by each step's aux_coef
        add_steer_adapter(lm)
        steering = AdapterSteering(lm, cfg.steer_aux_coefs, cfg.seed, cfg.steer_aux_weights)
    return lm, steering
