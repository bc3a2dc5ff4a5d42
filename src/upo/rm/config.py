"""RMConfig: what `upo rm train` trains and how.

Like UPOConfig: a typed dataclass validated in `__post_init__`; the comment after each field is its
--help text; values from YAML or the command line are coerced to the field's type, with errors that
name the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml

from upo.config import EMBEDDED_MODEL, ConfigError, load_dataclass
from upo.domains import Interval, NonNegative, Positive, Seed, check_domains

RM_PRECISIONS = ("bf16", "fp32")


@dataclass
class RMConfig:
    # ---- model and data ----------------------------------------------------------------------
    model: str = EMBEDDED_MODEL  # causal LM to start from (folder, Hub name or the embedded SmolLM2); gets a 1-output score head
    dataset: str = ""  # paired preference data: .jsonl / .jsonl.gz / .json file, or a datasets.load_dataset name or folder
    dataset_split: str = "train"  # split to read from a datasets source
    eval_fraction: Annotated[float, Interval("[0, 1)")] = 0.05  # share of pairs held out for accuracy (the split `upo train` makes when its split_seed, else its seed, equals this seed)
    max_examples: Positive[int] | None = None  # keep only the first N training pairs (after shuffling with seed)
    max_length: Positive[int] = 512  # tokens of a rendered prompt + response; pairs with a longer side are skipped (counted)
    group_by_length: bool = True  # batches of similar length, padded to their own longest

    # ---- optimization ------------------------------------------------------------------------
    batch_size: Positive[int] = 8  # pairs per optimizer step (2 x batch_size sequences per forward pass)
    learning_rate: Positive[float] = 1e-5  # AdamW learning rate (full fine-tuning ~1e-5; LoRA ~1e-4)
    weight_decay: NonNegative[float] = 0.0  # decoupled weight decay
    num_epochs: Positive[int] = 1  # passes over the training pairs (unless max_steps is set)
    max_steps: Positive[int] | None = None  # optimizer steps; overrides num_epochs when set
    max_grad_norm: Positive[float] | None = 1.0  # clip the gradient norm to this; null = no clipping
    precision: str = "bf16"  # autocast dtype of training: bf16 | fp32 (weights and optimizer state stay fp32)
    lora: bool = False  # train LoRA adapters (peft) and the score head instead of all weights; merged before saving
    lora_r: Positive[int] = 16  # LoRA rank
    lora_alpha: Positive[int] = 32  # LoRA scaling numerator (scale = alpha / r)
    gradient_checkpointing: bool = False  # recompute each decoder layer's activations in backward (transformers' activation checkpointing): less memory, about a third more compute, the same updates
    seed: Seed = 42  # seeds the split, data order and the score head's initialization

    # ---- output ------------------------------------------------------------------------------
    output_dir: str = "runs/rm"  # run folder: rm_config.yaml, metrics.jsonl, metrics.json, final/ (load as rm:OUTPUT_DIR/final)
    logging_steps: Positive[int] = 10  # write train metrics every N optimizer steps
    cache_dir: str | None = None  # where the embedded model is converted; default: $UPO_CACHE or ~/.cache/upo
    progress: bool = True  # show progress bars

    def __post_init__(self) -> None:
        check_domains(self, ConfigError)
        if self.precision not in RM_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(RM_PRECISIONS)}; got {self.precision!r}")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(dataclasses.asdict(self), sort_keys=False))


def load_rm_config(path: str | None = None, overrides: dict[str, Any] | None = None) -> RMConfig:
    """defaults < YAML file of RMConfig keys at `path` < `overrides` (e.g. command-line flags)."""
    return load_dataclass(RMConfig, path, overrides)
