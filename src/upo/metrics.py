"""Structured metrics at the source: one JSON object per logged step in `metrics.jsonl`."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import torch


class MetricsAverager:
    """Averages the metrics of the micro-batches since the last log, weighted by `weight`
    (e.g. the number of pairs in a batch, so a short last batch counts for what it holds)."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, float] = defaultdict(float)

    def add(self, metrics: dict[str, torch.Tensor | float], weight: float = 1.0) -> None:
        for key, value in metrics.items():
            self._sums[key] += float(value) * weight
            self._counts[key] += weight

    def pop(self) -> dict[str, float]:
        out = {k: self._sums[k] / self._counts[k] for k in self._sums}
        self._sums.clear()
        self._counts.clear()
        return out


def reduce_metrics(accelerator, metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """Each metric averaged over processes (one collective for all of them), keys prefixed."""
    if not metrics:
        return {}
    keys = sorted(metrics)
    values = accelerator.reduce(torch.tensor([metrics[k] for k in keys], device=accelerator.device), reduction="mean")
    return {prefix + k: float(v) for k, v in zip(keys, values.tolist(), strict=True)}


class MetricsWriter:
    """Appends lines to metrics.jsonl; on resume, drops lines after the resumed step so the file
    reads exactly as an uninterrupted run's."""

    def __init__(self, path: str | Path, resume_step: int | None = None, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [line for line in _complete_lines(self.path) if json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def _complete_lines(path: Path) -> list[str]:
    """The file's non-empty lines, without a last line cut short by a killed process."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if lines:
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines.pop()
    return lines


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl (a last line cut short by a killed run is left out)."""
    return [json.loads(line) for line in _complete_lines(Path(path))]
