"""benchmarks/bench_upo_overhead.py's intervals: batches resampled with all their passes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_upo_overhead import batch_bootstrap  # noqa: E402


def test_batch_bootstrap_intervals():
    kto = [1.0, 2.0, 3.0, 4.0, 1.5, 2.5, 3.5, 4.5]  # 2 passes x 4 batches, pass-major
    median, totals = batch_bootstrap(kto, [1.1 * t for t in kto], batches=4, resamples=200)
    assert median == pytest.approx([1.1, 1.1]) and totals == pytest.approx([1.1, 1.1])  # a constant ratio is exact
    # 3 passes x 2 batches, pass-major: UPO takes twice as long on batch 0 in every pass, as long on batch 1.
    # Resampling batches (each with its 3 passes) gives draws of batch 0 alone (ratio 2) and of batch 1
    # alone (ratio 1), each in a quarter of the draws; resampling other groups of 3 steps would not.
    median, totals = batch_bootstrap([1.0] * 6, [2.0, 1.0, 2.0, 1.0, 2.0, 1.0], batches=2, resamples=500)
    assert totals == pytest.approx([1.0, 2.0]) and median == pytest.approx([1.0, 2.0])
