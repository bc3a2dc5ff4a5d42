"""The training compute of a sweep's runs, read back from their metrics.jsonl.

A run's compute: its optimizer steps, the policy tokens those steps processed (`train/step_tokens`,
real tokens, no padding; per process) and the steps' wall time (`train/step_seconds`: set-up,
reference log-probs and held-out evaluation excluded) at their median pace: steps x the median
seconds of a step, so that a stretch in which the process was paused or starved (a stopped worker,
a test run beside it) does not count. A metrics row averages the steps since the previous row, so
each row counts (its step - the previous row's step) times.

A group's compute is the sum over its training runs, per seed: a steered run, evaluated at each of
its conditions, counts once.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from upo.metrics import read_metrics

COMPUTE_KEYS = ("steps", "tokens", "seconds")


def run_compute(run_dir: Path) -> dict[str, float] | None:
    """{"steps", "tokens", "seconds"} of the run in `run_dir`, or None when it has no training metrics.
    tokens is None for a run written before upo logged train/step_tokens."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    steps, tokens, paces, windows = 0, 0.0, [], []
    for row in read_metrics(path):
        if "train/step_seconds" not in row:  # an evaluation-only row
            continue
        window = row["step"] - steps
        steps = row["step"]
        tokens += row.get("train/step_tokens", math.nan) * window
        paces.append(row["train/step_seconds"])
        windows.append(window)
    if steps == 0:
        return None
    pace = float(np.median(np.repeat(paces, windows)))  # the median step's seconds
    return {"steps": steps, "tokens": None if math.isnan(tokens) else tokens, "seconds": steps * pace}


def mean_compute(computes: list[dict | None]) -> dict[str, float] | None:
    """The mean over a point's seeds of their runs' compute (None when one of them has none)."""
    if not computes or any(c is None for c in computes):
        return None
    return {k: None if any(c[k] is None for c in computes) else sum(c[k] for c in computes) / len(computes)
            for k in COMPUTE_KEYS}


def group_compute(rows: list[dict]) -> dict[str, dict]:
    """{group: {"runs", "steps", "tokens", "seconds"}} summed over the group's training runs (rows with
    a "compute"; the rows of one steered run, which share its "trained" name, count once)."""
    out: dict[str, dict] = {}
    seen: set[str] = set()
    for row in rows:
        run = row.get("trained") or row["name"]
        if row.get("compute") is None or run in seen:
            continue
        seen.add(run)
        total = out.setdefault(row["group"], {"runs": 0, **dict.fromkeys(COMPUTE_KEYS, 0.0)})
        total["runs"] += 1
        for k in COMPUTE_KEYS:
            total[k] = None if total[k] is None or row["compute"][k] is None else total[k] + row["compute"][k]
    return out
