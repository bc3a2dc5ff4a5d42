"""Confidence intervals (upo.stats) on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import t as student_t

from upo.stats import (
    BOOTSTRAP,
    WILSON,
    bootstrap_interval,
    bootstrap_means,
    mean_interval,
    paired_difference_draws,
    resample_counts,
    seed_degrees_of_freedom,
    seed_t_scale,
    seed_t_scale_of_terms,
    seed_terms,
    seed_variance,
    wilson_interval,
)


def test_wilson_interval_hand_worked():
    """3/10 at 95%: z = 1.959964, z^2 = 3.841459; denominator 1 + 0.3841459 = 1.3841459;
    center (0.3 + 0.1920729) / 1.3841459 = 0.355505; half 1.959964 sqrt(0.021 + 0.0096036) / 1.3841459
    = 0.247717 -> [0.1078, 0.6032]."""
    lo, hi = wilson_interval(3, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.1078, 0.6032)
    assert wilson_interval(3, 10, confidence=0.99)[0] < lo  # wider at 99%


def test_wilson_interval_edges():
    """0/n is not the empty interval [0, 0]: 0/10 -> [0, z^2 / (n + z^2)] = [0, 0.2775]; n/n mirrors it;
    n = 0 knows nothing."""
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and round(hi, 4) == 0.2775
    assert wilson_interval(10, 10) == pytest.approx((1 - hi, 1.0), abs=1e-12)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


def test_bootstrap_interval_hand_worked():
    """Values (0, 0, 0, 1): a resample's mean is k/4 with k ~ Binomial(4, 1/4). P(k = 0) = 0.316 > 0.025,
    so the lower end is 0; P(k >= 3) = 0.0508 > 0.025 but P(k = 4) = 0.0039 < 0.025, so the upper
    end is 3/4."""
    assert bootstrap_interval([0.0, 0.0, 0.0, 1.0]) == (0.0, 0.75)
    assert bootstrap_interval([0.0, 0.0, 0.0, 1.0]) == bootstrap_interval([0.0, 0.0, 0.0, 1.0])  # fixed seed


def test_bootstrap_degenerate_cases():
    assert bootstrap_interval([2.5, 2.5, 2.5]) == (2.5, 2.5)  # all equal: every resample's mean is 2.5
    assert bootstrap_interval([7.0]) == (7.0, 7.0)
    with pytest.raises(ValueError, match="no values"):
        bootstrap_interval([])
    assert resample_counts(0, 5, np.random.default_rng(0)).shape == (5, 0)


def test_resample_counts_draw_n_units_each():
    counts = resample_counts(4, 100, np.random.default_rng(0))
    assert counts.shape == (100, 4) and (counts.sum(axis=1) == 4).all()


def test_bootstrap_means_resample_seeds_too():
    """Two seeds that evaluate to 0 and 1 on every prompt: resampling only the prompts leaves the
    mean at 1/2; resampling the seeds too draws both seeds once, or one of them twice (the mean 0 or
    1, probability 1/4 each), whose departure from 1/2 is scaled by sqrt(2): 1/2 -+ sqrt(2)/2."""
    values = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # [seeds, prompts]
    rng = np.random.default_rng(0)
    units, seeds = resample_counts(3, 2000, rng), resample_counts(2, 2000, rng)
    assert np.allclose(bootstrap_means(values, units), 0.5)
    draws = bootstrap_means(values, units, seeds)
    assert set(np.round(draws, 6)) == set(np.round([0.5 - np.sqrt(2) / 2, 0.5, 0.5 + np.sqrt(2) / 2], 6))
    assert abs((np.round(draws, 6) == 0.5).mean() - 0.5) < 0.05


@pytest.mark.parametrize("k", [2, 3, 5])
def test_the_seed_part_of_the_draws_variance_is_unbiased(k):
    """k seeds scoring 0, 1, ..., k-1 on every prompt: the mean of k seeds has variance s^2 / k (s^2 the
    seeds' sample variance, k (k + 1) / 12); the draws spread by that much, not (k - 1) / k of it."""
    values = np.repeat(np.arange(k, dtype=np.float64)[:, None], 4, axis=1)
    rng = np.random.default_rng(1)
    draws = bootstrap_means(values, resample_counts(4, 40000, rng), resample_counts(k, 40000, rng))
    assert draws.mean() == pytest.approx((k - 1) / 2, abs=0.02)
    assert draws.var() == pytest.approx(k * (k + 1) / 12 / k, rel=0.03)
    # one seed: the mean of the resampled prompts
    assert bootstrap_means([1.0, 2.0], np.array([[2.0, 0.0], [1.0, 1.0]])).tolist() == [1.0, 1.5]


def test_mean_interval_picks_wilson_for_0_1_rates_only():
    rate = [1.0, 0.0, 0.0] + [0.0] * 7  # 1/10
    assert mean_interval(rate, rate=True) == (wilson_interval(1, 10), WILSON)
    assert mean_interval(rate, rate=False)[1] == BOOTSTRAP  # a mean: bootstrap
    # several generations per prompt: per-prompt shares are not 0/1 outcomes, so the prompts are resampled
    assert mean_interval([0.5, 1.0, 0.0], rate=True)[1] == BOOTSTRAP


def test_seed_variance_hand_worked():
    """(net, gross, k - 1). three: seed means 0, 1, 2 (s^2 = 1), no noise within a seed (every unit of a
    seed alike): net = gross = 1/3. noisy: seed means 1 and 3 (s^2 = 2), residuals -+1 on 4 units:
    MS_e = 8 / (1 * 3), a seed mean's noise 8/3 / 4 = 2/3, net (2 - 2/3) / 2 = 2/3, gross 1. tied:
    both seeds' means 1, all residual: net 0."""
    three = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])  # [3 seeds, 2 units]
    assert seed_variance(three) == pytest.approx((1 / 3, 1 / 3, 2))
    noisy = np.array([[0.0, 2.0, 0.0, 2.0], [4.0, 2.0, 4.0, 2.0]])
    assert seed_variance(noisy) == pytest.approx((2 / 3, 1.0, 1))
    assert seed_variance(np.array([[0.0, 2.0], [2.0, 0.0]])) == (0.0, 0.0, 1)
    assert seed_variance(np.vstack([three, np.full((1, 2), np.nan)])) == pytest.approx((1 / 3, 1 / 3, 2))  # a seed without values: left out
    assert seed_variance(np.zeros((1, 4))) is None  # one seed: no seed part
    # seed 1 without a value on the 5th unit: means 1 (5 units) and 3 (4); MS_e 8/3 from the 4 complete
    # units; each mean's noise MS_e / n_i, on average 8/3 (1/5 + 1/4) / 2 = 0.6: net (2 - 0.6) / 2 = 0.7
    partial = np.array([[0.0, 2.0, 0.0, 2.0, 1.0], [4.0, 2.0, 4.0, 2.0, np.nan]])
    assert seed_variance(partial) == pytest.approx((0.7, 1.0, 1))


def test_seed_terms_hand_worked():
    """Estimates 1, 2, 3 (s^2 = 1): (max(0, 1 - noise) / 3, 1/3, 2); a NaN estimate is left out."""
    assert seed_terms([1.0, 2.0, 3.0], 0.25) == pytest.approx((0.25, 1 / 3, 2))
    assert seed_terms([1.0, 2.0, 3.0], 4.0) == pytest.approx((0.0, 1 / 3, 2))
    assert seed_terms([1.0, np.nan, 3.0], 0.0) == pytest.approx((1.0, 1.0, 1))
    assert seed_terms([1.0, np.nan], 0.0) is None


def test_seed_degrees_of_freedom_hand_worked():
    """Satterthwaite: V^2 / sum(gross^2 / (k - 1)). three alone: (1/3)^2 / ((1/3)^2 / 2) = 2; two such
    sides, 4; with a units' part of 1/3, (2/3)^2 / ((1/3)^2 / 2) = 8; three and 2 x three (v = 1/3 and
    4/3): (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = 50/17; noisy: (2/3)^2 / 1^2 = 4/9 (the noise is in the
    seed means' spread, not in V); seed means that agree: inf; one seed adds nothing."""
    three = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    assert seed_degrees_of_freedom(0.0, three) == pytest.approx(2.0)
    assert seed_degrees_of_freedom(0.0, three, three + 5.0) == pytest.approx(4.0)
    assert seed_degrees_of_freedom(1 / 3, three) == pytest.approx(8.0)
    assert seed_degrees_of_freedom(0.0, three, np.zeros((1, 2))) == pytest.approx(2.0)
    assert seed_degrees_of_freedom(0.0, three, 2 * three) == pytest.approx(50 / 17)
    assert seed_degrees_of_freedom(0.0, np.array([[0.0, 2.0, 0.0, 2.0], [4.0, 2.0, 4.0, 2.0]])) == pytest.approx(4 / 9)
    assert seed_degrees_of_freedom(0.0, np.array([[0.0, 2.0], [2.0, 0.0]])) == float("inf")
    assert seed_degrees_of_freedom(0.1, np.zeros((1, 4))) is None


def test_seed_t_scale_sets_the_interval_to_t_standard_deviations_of_the_net_seed_variance():
    """Units that all score alike (every part 0) and a seed part of -1, 0, 1 (1/4, 1/2, 1/4; central 95%
    width 2): three seeds (net 1/3, nu 2) call for a width of 2 t(2) sqrt(1/3), so f = t(2) sqrt(1/3).
    Seeds that differ no more than their noise: no seed part (f = 0). With a units' part the width is
    2 t(nu) sqrt(var(every) + 1/3), nu from both."""
    three = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    departure = np.array([-1.0] * 250 + [0.0] * 500 + [1.0] * 250)
    assert seed_t_scale(np.zeros(1000), departure, three) == pytest.approx(student_t.ppf(0.975, 2) * np.sqrt(1 / 3), rel=1e-9)
    assert seed_t_scale(np.zeros(1000), departure, np.array([[0.0, 2.0], [2.0, 0.0]])) == 0.0
    every = np.random.default_rng(0).normal(0, 0.5, size=1000)
    variance = every.var() + 1 / 3
    nu = variance ** 2 / ((1 / 3) ** 2 / 2)
    f = seed_t_scale(every, departure, three)
    assert np.subtract(*np.quantile(every + f * departure, [0.975, 0.025])) == pytest.approx(
        2 * student_t.ppf(0.975, nu) * np.sqrt(variance), rel=1e-6)
    assert seed_t_scale(np.zeros(1000), departure, np.zeros((1, 2))) == 1.0  # one seed: nothing to correct
    # a test reading a farther tail: the 99% range, 2 t_0.995(2) sqrt(1/3), on a seed part whose 99% range is 2
    assert seed_t_scale(np.zeros(1000), departure, three, confidence=0.99) == pytest.approx(
        student_t.ppf(0.995, 2) * np.sqrt(1 / 3), rel=1e-9)
    assert seed_t_scale_of_terms(np.zeros(1000), departure, [(0.0, 0.5, 1)]) == 0.0  # nothing varies
    assert seed_t_scale(np.zeros(10), np.zeros(10), three) == 1.0  # no departure
    assert seed_t_scale(np.zeros(1000), np.r_[np.ones(10), np.zeros(990)], three) == 1.0  # in 1% of draws: no effect


def test_paired_difference_draws_set_the_seed_part_to_t_standard_deviations():
    """Two points of 2 seeds each whose seeds differ (seed means 0 and 1: net seed variance 1/4 each),
    on prompts that all score alike: the draws are the seed part alone, and their central 95% width is
    2 t(2) sqrt(1/2) (nu = (1/2)^2 / (2 (1/4)^2) = 2)."""
    a = np.array([[0.0] * 5, [1.0] * 5])
    draws = paired_difference_draws(a, a.copy(), resamples=4000, seed=3)
    assert np.subtract(*np.quantile(draws, [0.975, 0.025])) == pytest.approx(2 * 4.302653 * np.sqrt(0.5), rel=1e-6)
