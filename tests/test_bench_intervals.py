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
    upo = [1.0, 2.0, 3.0, 4.0, 1.5, 2.5, 3.5, 9.0]  # batch 4's second pass slower: only batch 4 moves the ratio
    median, totals = batch_bootstrap(kto, upo, batches=4, resamples=500)
    assert median[0] == pytest.approx(1.0) and totals[0] == pytest.approx(1.0)  # draws without batch 4
    assert totals[1] > 1.2  # draws with batch 4 several times
