"""Pieces the benchmark scripts share: the data, the upo run config, and what machine ran it.

The scripts run as `python benchmarks/<script>.py`, so this folder is on sys.path and they
import this module as `_common`.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from pathlib import Path

import torch

from upo.config import EMBEDDED_MODEL, UPOConfig
from upo.methods import METHODS

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-dev.jsonl.gz"
# The auxiliary rewards of UPO runs: both cheap to score (the scores are cached on disk anyway).
LORA = {"r": 16, "alpha": 32}  # --lora: r and alpha, on all linear layers, both libraries
UPO_REWARDS = {"profanity": 0.95, "readability": 0.05}


def learning_rate(lora: bool) -> float:
    """The same lr for every method and library: LoRA needs ~1e-4, full fine-tuning ~1e-6."""
    return 1e-4 if lora else 1e-6


def _default_rewards(method: str) -> dict[str, float]:
    """UPO_REWARDS for the methods that use auxiliary rewards; none for the others (an error there)."""
    m = METHODS[method]
    return UPO_REWARDS if m.uses_rewards or m.accepts_rewards else {}


def upo_config(method: str, pref_loss: str, *, data: Path, output_dir: Path, batch_size: int, steps: int,
               max_length: int, precision: str, lora: bool, model: str = EMBEDDED_MODEL,
               rewards: dict[str, float] | None = None) -> UPOConfig:
    """A benchmark run: `steps` optimizer steps over the first `batch_size * steps` examples of `data`
    (after upo's seeded shuffle), no evaluation, no checkpoints, no progress bars, reference
    log-probs precomputed (upo's default). Prompts keep at most max_length // 2 tokens."""
    return UPOConfig(
        model=model,
        dataset=str(data),
        eval_fraction=0.0,
        max_examples=batch_size * steps,
        method=method,
        pref_loss=pref_loss if METHODS[method].data == "pref" else "kto",  # read by UPO only (an error elsewhere)
        rewards=dict(_default_rewards(method) if rewards is None else rewards),
        lora=lora,
        batch_size=batch_size,
        max_steps=steps,
        max_length=max_length,
        max_prompt_length=max_length // 2,
        learning_rate=learning_rate(lora),
        precision=precision,
        output_dir=str(output_dir),
        progress=False,
    )


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(*packages: str) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine_info() -> dict:
    return {"cpu": cpu_model(), "machine": platform.machine(), "threads": torch.get_num_threads(),
            "python": platform.python_version()}


def write_record(path: Path, record: dict) -> None:
    """Write a benchmark's results as indented JSON (creating its folder) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {path}")
