"""scripts/interval_calibration.py: its simulation separates the two bootstraps where they must differ."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from interval_calibration import calibration, continuous, main  # noqa: E402


def test_a_seed_effect_fools_the_prompts_only_bootstrap_and_not_the_frontiers():
    """Each seed shifts its point's mean (sd 0.5, against per-prompt noise sd 1 over 50 prompts): the
    prompts-only intervals exclude 0 most of the time, upo's (seeds resampled too, t-corrected) seldom."""
    out = calibration(continuous, reps=40, k=3, n=50, resamples=200, seed_sd=0.5)
    assert out["prompts only"][0] > 0.5
    assert out["upo"][0] < 0.1
    assert out["upo"][1] > out["without the t correction"][1] > out["prompts only"][1]  # wider, then wider still


def test_without_a_seed_effect_upo_is_far_narrower_than_before_and_calibrated():
    """Seeds that differ only by generation noise: upo's intervals (seed part net of that noise, t of
    the whole variance's degrees of freedom) are far narrower than those of the t correction on the seed
    part's whole spread (upo until 2026-11-30 14:00 UTC), and still seldom exclude 0."""
    out = calibration(continuous, reps=30, k=2, n=100, resamples=200, seed_sd=0.0)
    assert out["upo"][1] < 0.6 * out["t on the whole seed spread"][1]
    assert out["upo"][0] <= 0.1


def test_prints_a_table(capsys):
    assert main(["--reps", "3", "--prompts", "20", "--resamples", "50"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n| ") == 5 and "| rare rate (~1%), no seed effect |" in out


def test_the_equal_length_table(capsys):
    assert main(["--equal_length", "--reps", "2", "--prompts", "30", "--resamples", "40", "--seed_sd", "0.2"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n| ") == 5 and "| continuous, seed effect sd 0.2, B longer (little overlap) |" in out
