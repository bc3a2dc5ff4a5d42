"""Where a sweep's runs and their evaluations live, and how the log names a run.

    points_dir/NAME[/seed-S]/                      a point's run folder (a steered run's: its name)
    points_dir/NAME[/seed-S]/aux-C/                a steered condition's evaluation
    .../<eval_subdir>/                              with the sweep's eval_subdir, each evaluation
"""

from __future__ import annotations

from pathlib import Path

import yaml

from upo.config import _DEFAULTS, BEFORE_ADDED, ConfigError, UPOConfig
from upo.frontier.sweep import Point, Sweep, condition_folder

# may differ between a run and its rerun: none changes what is trained
RUN_ONLY_KEYS = ("resume", "progress", "cache_reference_logps", "heldout_eval", "gradient_checkpointing")


def run_folder(sweep: Sweep, point: Point, seed: int | None = None) -> Path:
    """points_dir/<name>/ (by default output_dir/points/<name>/), or its seed-<S>/ for one seed of a
    sweep with seeds; a steered point's is its training run's, which all its conditions share."""
    out = sweep.points_dir / (point.trained or point.name)
    return out if seed is None else out / f"seed-{seed}"


def eval_folder(sweep: Sweep, point: Point, seed: int | None = None) -> Path:
    """Where a run's evaluation goes: its run folder, or for a steered point its condition's folder
    in it (aux-<C>/, mix-<MIX>/ or aux-<C>-mix-<MIX>/: `condition_folder`); with the sweep's
    `eval_subdir`, that folder in it."""
    out = run_folder(sweep, point, seed)
    out = out / condition_folder(point.aux_coef, point.variant) if point.trained else out
    return out / sweep.eval_subdir if sweep.eval_subdir else out


def error_file(sweep: Sweep, point: Point, seed: int | None = None) -> Path:
    """Where a failed run's traceback goes: error.txt in its evaluation folder (`eval_folder`), so
    each seed of a point, and each condition of a steered run, keeps its own."""
    return eval_folder(sweep, point, seed) / "error.txt"


def run_label(point: Point, seed: int | None = None) -> str:
    """How the log names one run of a point: NAME, or NAME seed S."""
    return point.name if seed is None else f"{point.name} seed {seed}"


def check_same_run(cfg: UPOConfig, out: Path) -> None:
    """Refuse to reuse a folder that holds a run of a different config. A key added since the run was
    written counts as what runs did before it (`BEFORE_ADDED`, else its default); a key this run does
    not read (`UPOConfig.unread_keys`), not at all."""
    saved = out / "config.yaml"
    if not saved.exists():
        return
    old = {**_DEFAULTS, **BEFORE_ADDED, **(yaml.safe_load(saved.read_text()) or {})}
    new = cfg.to_dict()
    skip = set(RUN_ONLY_KEYS) | set(cfg.unread_keys())
    differ = sorted(k for k in set(old) | set(new) if k not in skip and old.get(k) != new.get(k))
    if differ:
        raise ConfigError(f"{out} holds a run with a different config ({', '.join(differ)}); delete the folder "
                          "or rename the point")
