"""Checkpoints: written atomically, found again for `--resume`.

A checkpoint is `checkpoints/step-N/`: Accelerate's state (the trained module, value head
included, optimizer, scheduler, RNG states; tensors in safetensors) plus `trainer_state.json` and
the resolved config. It is written under a temporary name and renamed when complete, so a process
killed at any moment leaves the previous checkpoint intact and never a half-written one under a
final name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from safetensors.torch import load_file

_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / "trainer_state.json").exists():
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(output_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(accelerator, output_dir: str | Path, step: int, state: dict, cfg, keep: int) -> Path:
    """Save to checkpoints/.tmp-step-N, then rename to checkpoints/step-N; prune to `keep` newest."""
    root = Path(output_dir) / "checkpoints"
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        cfg.save(tmp / "config.yaml")
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in checkpoint_dirs(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path, model) -> dict:
    """Restore the state saved in `path` into the prepared `model` (the trained `CompletionLogps`),
    optimizer and scheduler; returns trainer_state.json.

    Checkpoints written before the value head moved into the trained module hold it apart, in
    model_1.safetensors (Accelerate's second model); their optimizer state has the same groups.
    """
    legacy_head = path / "model_1.safetensors"
    if legacy_head.exists():
        accelerator.load_state(str(path), strict=False)  # strict would ask model.safetensors for value_head.*
        accelerator.unwrap_model(model).value_head.load_state_dict(load_file(str(legacy_head)))
    else:
        accelerator.load_state(str(path))
    return json.loads((path / "trainer_state.json").read_text())


def _fsync_dir(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
