"""Checkpoints: written atomically, verified, found again for `--resume`.

A checkpoint is `checkpoints/step-N/`: Accelerate's state (the trained module, value head included,
optimizer, scheduler, RNG states; tensors in safetensors) plus `trainer_state.json` and the resolved
config. With frozen parameters (LoRA) the module's file holds the trained ones only (`"weights":
"trainable"` in trainer_state.json): the frozen ones are the base model's, which a resume has loaded
already. Every process writes its part under a temporary name, which is renamed when complete
(`upo.atomic.commit_folder`), so a process killed at any moment leaves the previous checkpoint
intact and never a half-written one under a final name. `trainer_state.json` lists every file with
its size, so a file truncated or deleted later is found (and named) before anything is loaded, and
the previous intact checkpoint is taken instead.

A resume continues one run: it is refused when the config differs from the checkpoint's in a key
that changes what is trained (only RESUMABLE_CHANGES may differ), when the checkpoint was written by
a different number of processes, or when the training data differ from the checkpoint's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_model

from upo.atomic import commit_folder
from upo.config import ConfigError, UPOConfig
from upo.methods import unread_method_keys

# How long a run goes on, what it writes and how it computes, never what it trains: a resume may change these.
# (With lr_scheduler linear or cosine, max_steps / num_epochs also stretch the decay from the resume on.)
RESUMABLE_CHANGES = (
    "max_steps", "num_epochs", "save_steps", "save_total_limit", "logging_steps", "heldout_eval", "eval_steps", "progress",
    "resume", "output_dir", "cache_dir", "precompute_ref_logps", "cache_reference_logps", "report_to",
    "plot_curves", "gradient_checkpointing",
)  # fmt: skip

_STEP_DIR = re.compile(r"^step-(\d+)$")
TRAINABLE = "trainable"  # trainer_state.json's "weights": the checkpoint holds the trained parameters only
REFERENCE_FILE = "reference.safetensors"  # a TR-DPO run's reference, which training changes


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


def save_checkpoint(accelerator, output_dir: str | Path, step: int, state: dict, cfg, keep: int,
                    reference=None) -> Path:
    """Save to checkpoints/.tmp-step-N, then rename to checkpoints/step-N; prune to `keep` newest.
    `reference`: a reference model that training changes (TR-DPO), saved as reference.safetensors."""
    root = Path(output_dir) / "checkpoints"
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    filtered = []
    hook = accelerator.register_save_state_pre_hook(lambda models, weights, _: filtered.extend(
        _keep_trainable(model, w) for model, w in zip(models, weights, strict=False)))
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
    finally:
        hook.remove()
    accelerator.wait_for_everyone()  # every process's RNG state is written before the files are listed
    if accelerator.is_main_process:
        if reference is not None:
            save_model(reference, str(tmp / REFERENCE_FILE))  # tied weights once
        files = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
        cfg.save(tmp / "config.yaml")
        weights = {"weights": TRAINABLE} if any(filtered) else {}
        (tmp / "trainer_state.json").write_text(json.dumps({**state, **weights, "files": files}, indent=2))
        commit_folder(tmp, final, durable=True)
        for old in checkpoint_dirs(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _keep_trainable(model, weights: dict) -> bool:
    """Leave in `weights` (the state dict Accelerate is about to save for `model`) only the trained
    parameters and the buffers, when some parameters are frozen (LoRA: the base model's weights, which
    a resume loads from the model itself); True when anything was left out. Sharded engines (FSDP,
    DeepSpeed) save their own way and pass no state dict here: their checkpoints stay whole."""
    trained = _trained_names(model)
    if len(trained) == sum(1 for _ in model.parameters()):
        return False
    keep = trained | {_bare(name) for name, _ in model.named_buffers()}
    frozen = [key for key in weights if _bare(key) not in keep]
    for key in frozen:
        del weights[key]
    return bool(frozen)


def _bare(name: str) -> str:
    """A parameter's name without the "module." a DDP wrapper puts before it (state dicts differ in it)."""
    return name.removeprefix("module.")


def _trained_names(model) -> set[str]:
    return {_bare(name) for name, p in model.named_parameters() if p.requires_grad}


def resume_hint(output_dir: str | Path) -> str:
    """After Ctrl-C in `upo train`: what was kept and how to go on."""
    latest = latest_checkpoint(output_dir)
    if latest is None:
        return " before the first checkpoint (set --save_steps to keep progress); nothing else was written"
    return f"; nothing is lost up to {latest}: run the same command with --resume true to continue from it"


def read_state(path: Path) -> dict:
    """trainer_state.json of checkpoint `path` (ConfigError naming it when unreadable)."""
    file = path / "trainer_state.json"
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{file} is unreadable ({e})") from None


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with the files of checkpoint `path` ("file X is missing", "... truncated"), or None."""
    try:
        files = read_state(path).get("files", {})  # checkpoints of older versions list none
    except ConfigError as e:
        return str(e)
    for name, size in files.items():
        file = path / name
        if not file.is_file():
            return f"file {file} is missing"
        if file.stat().st_size != size:
            return f"file {file} is truncated or changed ({file.stat().st_size} bytes, written with {size})"
    return None


def intact_checkpoint(output_dir: str | Path, log: Callable[[str], Any]) -> Path | None:
    """The newest checkpoint whose files are all there; each broken newer one is named in `log`.
    None when there is no checkpoint; ConfigError when every one is broken."""
    dirs = checkpoint_dirs(output_dir)
    problems = []
    for path in reversed(dirs):
        problem = checkpoint_problem(path)
        if problem is None:
            if problems:
                log(f"upo: warning: resuming from the previous intact checkpoint {path.name}; {problems[-1]}")
            return path
        problems.append(problem)
    if problems:
        raise ConfigError("--resume true: no intact checkpoint to resume from: " + "; ".join(problems))
    return None


def check_resume(path: Path, cfg: UPOConfig, num_processes: int) -> dict[str, tuple[Any, Any]]:
    """Refuse (ConfigError) to continue checkpoint `path` with a config that trains something else or
    with another number of processes; return the allowed changes, key -> (checkpoint's, now)."""
    written_by = read_state(path).get("num_processes", num_processes)
    if written_by != num_processes:
        raise ConfigError(
            f"--resume true: {path} was written by {written_by} process(es), this run has {num_processes}; each step's "
            f"batches and the saved RNG states belong to {written_by}. Launch it as {written_by} process(es) again."
        )
    try:
        saved = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"--resume true: {path / 'config.yaml'} is unreadable ({e})") from None
    before = {**dataclasses.asdict(UPOConfig()), **saved}  # keys added since the checkpoint: their defaults
    unread = unread_method_keys(cfg.method, cfg.pref_loss, cfg.loss_mix)  # e.g. a base aux_coef a DPO run never read
    changes = {k: (before.get(k), v) for k, v in cfg.to_dict().items() if before.get(k) != v and k not in unread}
    refused = {k: change for k, change in changes.items() if k not in RESUMABLE_CHANGES}
    if refused:
        listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ConfigError(
            f"--resume true: the config differs from the checkpoint's ({path / 'config.yaml'}) in keys that change what "
            f"is trained: {listed}. Resume with the checkpoint's values, or start a new run in another --output_dir. "
            f"A resume may change only: {', '.join(RESUMABLE_CHANGES)}."
        )
    return changes


def data_fingerprint(items: list[dict]) -> str:
    """A hash of the tokenized training items (ids, labels, rewards): equal iff a run trains on the same data."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_same_data(path: Path, fingerprint: str) -> None:
    """Refuse (ConfigError) to continue checkpoint `path` on training data other than its own."""
    if read_state(path).get("data_fingerprint", fingerprint) != fingerprint:
        raise ConfigError(
            f"--resume true: the training data differ from those {path} was trained on (the dataset changed since, "
            "or its reading did); start a new run in another --output_dir"
        )


def load_reference(path: Path, reference) -> None:
    """The reference weights a TR-DPO run had reached at checkpoint `path`."""
    if not (path / REFERENCE_FILE).is_file():
        raise ConfigError(f"--resume true with sync_ref_model: {path} holds no {REFERENCE_FILE} (it was saved without "
                          "sync_ref_model); start a new run in another --output_dir")
    load_model(reference, str(path / REFERENCE_FILE))


def load_checkpoint(accelerator, path: Path, model) -> dict:
    """Restore checkpoint `path` into the prepared `model` (the trained `CompletionLogps`), optimizer
    and scheduler; returns its trainer state.

    Checkpoints written before the value head moved into the trained module hold it apart, in
    model_1.safetensors (Accelerate's second model); their optimizer state has the same groups.
    """
    state = read_state(path)
    legacy_head = path / "model_1.safetensors"
    try:
        if legacy_head.exists():
            accelerator.load_state(str(path), strict=False)  # strict would ask model.safetensors for value_head.*
            accelerator.unwrap_model(model).value_head.load_state_dict(load_file(str(legacy_head)))
        elif state.get("weights") == TRAINABLE:  # the frozen weights are the model's own, as loaded
            with safe_open(str(path / "model.safetensors"), framework="pt") as saved:
                missing = _trained_names(model) - {_bare(key) for key in saved.keys()}
            if missing:
                raise ValueError(f"model.safetensors lacks trained parameters: {', '.join(sorted(missing)[:5])}")
            accelerator.load_state(str(path), strict=False)
        else:
            accelerator.load_state(str(path))
    except Exception as e:  # a file that kept its size but not its content; the state is half-loaded: stop
        raise ConfigError(
            f"--resume true: {path} cannot be loaded ({type(e).__name__}: {e}); move it aside to resume from the "
            "previous checkpoint"
        ) from e
    return state


def remove_stale_copies(output_dir: Path) -> None:
    """Delete what a process killed mid-write left under a temporary name: a hidden final/ copy
    (`.final-*`) and partial checkpoints (`checkpoints/.tmp-step-*`). Never read: nothing is lost."""
    for stale in [*output_dir.glob(".final-*"), *output_dir.glob("checkpoints/.tmp-step-*")]:
        shutil.rmtree(stale, ignore_errors=True)

