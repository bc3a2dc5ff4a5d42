"""Where a sweep's runs and their evaluations live, and how the log names a run.

    points_dir/NAME[/seed-S]/                      a point's run folder (a steered run's: its name)
    points_dir/NAME[/seed-S]/aux-C/                a steered condition's evaluation
    .../<eval_subdir>/                              with the sweep's eval_subdir, each evaluation
"""

from __future__ import annotations

from pathlib import Path

from upo.frontier.sweep import Point, Sweep, condition_folder


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
