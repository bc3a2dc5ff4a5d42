"""Length-matched differences (upo.evaluation.length_matched): hand-worked values, and intervals that
tell a length effect from a difference at equal length."""

from __future__ import annotations

import numpy as np
import pytest

from upo.evaluation.length_matched import EMPTY, length_bins, length_matched_difference


def test_bins_are_a_factor_sqrt2_wide():
    words = [0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 22, 23, 31, 32, 45, 46]
    assert length_bins(words).tolist() == [EMPTY, 0, 2, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11]


def test_hand_worked_difference_weights_the_bins_by_their_inverse_variance():
    # A: two 3-word answers at grade 1, two 10-word answers at grade 5 (mean 3)
    # B: three 3-word answers at grade 0, one 10-word answer at grade 5 (mean 1.25)
    # raw B - A = -1.75; per bin: 3 words -1, weight 2*3/(2+3) = 6/5; 10 words 0, weight 2*1/(2+1) = 2/3:
    # (6/5 * -1) / (6/5 + 2/3) = -9/14 (with B's counts as weights it would be -0.75, with A's -0.5)
    result = length_matched_difference([1, 1, 5, 5], [3, 3, 10, 10], [0, 0, 0, 5], [3, 3, 3, 10], resamples=200)
    assert result["difference"] == pytest.approx(-9 / 14)
    assert result["overlap_a"] == result["overlap_b"] == 1.0
    assert result["effective_n"] == pytest.approx(2 * 28 / 15) and (result["n_a"], result["n_b"]) == (4, 4)
    assert result["low"] <= -9 / 14 <= result["high"]


def test_bins_one_side_lacks_are_left_out_and_counted_in_the_overlap():
    # A's 40-word answer (bin 10) has no B counterpart; B's 1-word answer (bin 0) no A counterpart.
    # Shared: the 3-word bin only, B - A = 2 - 1 = 1; overlap: A 2 of 3, B 1 of 2.
    result = length_matched_difference([1, 1, 9], [3, 3, 40], [2, 7, np.nan], [3, 1, 5], resamples=200)
    assert result["difference"] == pytest.approx(1.0)
    assert result["overlap_a"] == pytest.approx(2 / 3) and result["overlap_b"] == pytest.approx(1 / 2)


def test_no_shared_length_gives_no_difference():
    result = length_matched_difference([1, 2], [3, 3], [4, 5], [40, 40], resamples=50)
    assert result["difference"] is None and result["low"] is None and result["overlap_b"] == 0.0


def test_seeds_are_pooled_per_bin():
    # two seeds of A: bin 3 holds grades 1 (seed 1) and 3 (seed 2): mean 2; B (one seed) has 4 there.
    a = [[1, 1], [3, 3]]
    words = [[3, 3], [3, 3]]
    result = length_matched_difference(a, words, [4, 4], [3, 3], resamples=200)
    assert result["difference"] == pytest.approx(2.0)
    assert result["effective_n"] == pytest.approx(2 * 4 * 2 / 6)  # 4 generations of A, 2 of B, one bin
    same = length_matched_difference([1, 2, 3], [5, 5, 5], [2, 3, 4], [5, 5, 5], resamples=50)
    assert same["effective_n"] == pytest.approx(3)  # n a side at the same lengths: n


def test_a_pure_length_effect_is_not_a_difference_at_equal_length():
    """Grade = 2 log2(words) + noise on both sides; B answers shorter. The raw difference is large and
    sure; at equal length the interval holds 0. Shift B's grades by -1 at every length: the matched
    difference finds it."""
    rng = np.random.default_rng(0)
    n = 600
    a_words = rng.integers(8, 64, n)
    b_words = rng.integers(4, 24, n)
    a = 2 * np.log2(a_words) + rng.normal(0, 1, n)
    b = 2 * np.log2(b_words) + rng.normal(0, 1, n)
    assert b.mean() - a.mean() < -2
    same = length_matched_difference(a, a_words, b, b_words)
    assert 100 < same["effective_n"] < n  # the lengths overlap in 8-23 words only
    assert same["low"] < 0 < same["high"] and abs(same["difference"]) < 0.35
    shifted = length_matched_difference(a, a_words, b - 1, b_words)
    assert shifted["high"] < 0 and shifted["difference"] == pytest.approx(-1, abs=0.35)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="same prompts"):
        length_matched_difference([1, 2, 3], [3, 3, 3], [1, 2], [3, 3])
