"""Length-matched differences (upo.evaluation.length_matched): hand-worked values, and intervals that
tell a length effect from a difference at equal length."""

from __future__ import annotations

import numpy as np
import pytest

from upo.evaluation.length_matched import EMPTY, _seed_terms, length_bins, length_matched_difference
from upo.stats import resample_counts, seed_variance


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
    assert result["slope"] == 0.0 and result["length_gap"] == 0.0  # one length per bin and side: nothing to adjust


def test_bins_one_side_lacks_are_left_out_and_counted_in_the_overlap():
    # A's 40-word answer (bin 10) has no B counterpart; B's 1-word answer (bin 0) no A counterpart.
    # Shared: the 3-word bin only, B - A = 2 - 1 = 1; overlap: A 2 of 3, B 1 of 2.
    result = length_matched_difference([1, 1, 9], [3, 3, 40], [2, 7, np.nan], [3, 1, 5], resamples=200)
    assert result["difference"] == pytest.approx(1.0)
    assert result["overlap_a"] == pytest.approx(2 / 3) and result["overlap_b"] == pytest.approx(1 / 2)
    # B's one generation at a shared length (prompt 0) is in 1 - (2/3)^3 = 70% of the draws of 3 prompts
    # with replacement; the others hold no shared bin, and the interval comes from the 70%
    assert 0.6 * 200 < result["draws"] < 0.85 * 200


def test_no_shared_length_gives_no_difference():
    result = length_matched_difference([1, 2], [3, 3], [4, 5], [40, 40], resamples=50)
    assert result["difference"] is None and result["low"] is None and result["overlap_b"] == 0.0
    assert result["slope"] is None and result["length_gap"] is None


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


def test_lengths_within_a_bin_are_adjusted_for():
    """One bin (8-11 words), grade = 2 log2(words) exactly: A answers in 10 and 11 words, B in 8 and 9 (50 prompts each).
    The bin's difference of means is log2(72/110) = -0.61 (B sits at the bin's low end), a pure length effect; the
    within-bin slope on log2 words is 2 on both sides, and the adjusted difference is 0."""
    a_words, b_words = np.tile([10, 11], 50), np.tile([8, 9], 50)
    a, b = 2 * np.log2(a_words), 2 * np.log2(b_words)
    assert b.mean() - a.mean() == pytest.approx(np.log2(72 / 110))  # -0.61
    result = length_matched_difference(a, a_words, b, b_words, resamples=200)
    assert result["difference"] == pytest.approx(0.0, abs=1e-9)
    assert result["slope"] == pytest.approx(2.0)
    assert result["length_gap"] == pytest.approx(np.log2(72 / 110) / 2)
    assert result["low"] == pytest.approx(0.0, abs=1e-9) and result["high"] == pytest.approx(0.0, abs=1e-9)
    # B better by 1 at every length: found whole, through the adjustment
    shifted = length_matched_difference(a, a_words, b - 1, b_words, resamples=200)
    assert shifted["difference"] == pytest.approx(-1.0) and shifted["high"] == pytest.approx(-1.0)


def test_a_shorter_side_at_the_low_end_of_every_bin_is_no_difference():
    """Grade = 2 log2(words) + noise; in each shared bin B's answers sit at its low end and A's at its
    high end (8-9 vs 10-11 words, 12-13 vs 14-15, 16-18 vs 20-22). Without the adjustment the
    difference would be about -0.55 and sure; adjusted, the interval holds 0, and a shift of -0.5 at
    every length is found."""
    rng = np.random.default_rng(1)
    n = 600
    a_words = rng.choice([10, 11, 14, 15, 20, 21, 22], n)
    b_words = rng.choice([8, 9, 12, 13, 16, 17, 18], n)
    a = 2 * np.log2(a_words) + rng.normal(0, 0.5, n)
    b = 2 * np.log2(b_words) + rng.normal(0, 0.5, n)
    same = length_matched_difference(a, a_words, b, b_words)
    assert same["length_gap"] < -0.2
    assert same["low"] < 0 < same["high"] and abs(same["difference"]) < 0.2
    shifted = length_matched_difference(a, a_words, b - 0.5, b_words)
    assert shifted["high"] < 0 and shifted["difference"] == pytest.approx(-0.5, abs=0.2)


def test_prompts_are_paired_and_seeds_resampled():
    """B = A + 0.3 on every prompt, at the same lengths: every draw resamples the same prompts on both
    sides, so the interval is exactly [0.3, 0.3]. Two seeds of B that differ widen it, by sqrt(k / (k - 1))
    times their resampling's spread."""
    rng = np.random.default_rng(2)
    words = rng.integers(5, 40, 200)
    a = rng.normal(0, 1, 200)
    paired = length_matched_difference(a, words, a + 0.3, words, resamples=300)
    assert paired["difference"] == pytest.approx(0.3)
    assert paired["low"] == pytest.approx(0.3) and paired["high"] == pytest.approx(0.3)
    two_seeds = length_matched_difference(a, words, np.stack([a + 0.1, a + 0.5]), np.stack([words, words]),
                                          resamples=300)
    assert two_seeds["difference"] == pytest.approx(0.3)
    # each seed's own matched difference, 0.1 and 0.5: a seed variance of 0.08 / 2 (sd 0.2), no noise
    # (every prompt shifted alike), 1 degree of freedom and no prompts' part: the interval is -+ t(1) 0.2
    spread = 0.2 * 12.706205
    assert two_seeds["low"] == pytest.approx(0.3 - spread, rel=0.03) and two_seeds["high"] == pytest.approx(0.3 + spread, rel=0.03)


def test_each_sides_seed_variance_at_equal_length():
    """`_seed_terms`: one bin (every response 10 words), so each seed's matched difference is b's mean
    minus that seed's: seeds shifted by 0 and 1 without noise give estimates 0 and -1, s^2 = 1/2,
    (net, gross, df) = (1/4, 1/4, 1). Four seeds shifted by 0, 1, 2, 3 with noise of sd 1: the estimates
    are b's mean minus the raw seed means (gross as `upo.stats.seed_variance`'s), and the noise read off
    the drawn prompts, k (gross - net), is the raw means' MS_e / n within the bootstrap's error."""
    rng = np.random.default_rng(4)
    n, k = 300, 4
    b = rng.normal(0, 1, (1, n))
    units = resample_counts(n, 2000, np.random.default_rng(0))

    def terms(a):
        words = np.full(a.shape, 10)
        sides = (a, np.log2(words), length_bins(words), b, np.log2(words[:1]), length_bins(words[:1]), np.array([6]))
        return _seed_terms(sides, units, len(a), 1, 0), _seed_terms(sides, units, len(a), 1, 1)

    shifted = np.stack([np.zeros(n), np.ones(n)])
    assert terms(shifted)[0] == pytest.approx((0.25, 0.25, 1)) and terms(shifted)[1] is None
    noisy = np.arange(k)[:, None] + rng.normal(0, 1, (k, n))
    (net, gross, df), _ = terms(noisy)
    raw_net, raw_gross, _ = seed_variance(noisy)
    assert df == k - 1 and gross == pytest.approx(raw_gross)
    assert k * (gross - net) == pytest.approx(k * (raw_gross - raw_net), rel=0.1)  # the noise subtracted
    # a seed without any generation in the shared bin: left out, the noise from the other three
    missing = noisy.copy()
    missing[1] = np.nan
    (net3, gross3, df3), _ = terms(missing)
    assert df3 == 2 and 3 * (gross3 - net3) == pytest.approx(k * (raw_gross - raw_net), rel=0.15)
