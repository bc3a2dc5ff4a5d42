"""Confidence intervals: pure functions on per-unit values (a unit is a prompt, a pair or a seed).

- Wilson score interval for a rate k/n of independent 0/1 outcomes (one generation per prompt).
- Percentile bootstrap for a mean: resample the units with replacement, take the mean of each
  resample, and read the interval off the quantiles of those means. With several generations per
  prompt the units are the prompts (their per-prompt means), never the generations, which are not
  independent. With several training seeds, `bootstrap_means` resamples the seeds as well, and
  `seed_t_scale` widens the seed part to t(nu) standard deviations, since few seeds estimate its
  variance poorly.
- Paired comparison of two evaluations on the same units: the bootstrap of the difference of
  their means, with the same resampled units for both (`paired_difference_draws`).

Resamples are drawn as multinomial counts [resamples, n] (how often each unit is drawn), so the
resampled means are one matrix product; a fixed seed makes every interval reproducible.
"""

from __future__ import annotations

import warnings
from statistics import NormalDist

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0

WILSON = "wilson"  # names of the methods, as eval.json and the reports give them
BOOTSTRAP = "bootstrap"


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of the rate successes / n (Wilson 1927).

    With p = k/n and z the normal quantile of (1 + confidence) / 2:
        center = (p + z^2 / 2n) / (1 + z^2 / n)
        half   = z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n)
    It stays inside [0, 1] and is not empty at k = 0 or k = n. With n = 0 nothing is known: (0, 1).
    """
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: need 0 <= successes <= n, got {successes}, {n}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, float(center - half)), min(1.0, float(center + half))


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, n] float counts: how often each of n units is drawn in each bootstrap resample."""
    if n == 0:
        return np.zeros((resamples, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def seed_degrees_of_freedom(*sides) -> float | None:
    """The degrees of freedom of the seed variance of a mean (one side) or of a difference of
    independent points' means (two sides), each side's per-unit values [k, n]. A side's seed variance
    of its mean is v = s^2 / k, s^2 the variance (ddof 1) of its k per-seed means (a seed without any
    value left out); nu is Welch-Satterthwaite's 1 / sum((v / sum v)^2 / (k - 1)) over the sides with
    k >= 2 (k - 1 for one side), the fewest of their k - 1 when every side's seed means agree. None
    when no side has 2 seeds."""
    parts = []
    for values in sides:
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        if values.shape[0] >= 2:
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a seed without any value: NaN, skipped
                means = np.nanmean(values, axis=1)
            means = means[np.isfinite(means)]
            if len(means) >= 2:
                parts.append((float(np.var(means, ddof=1)) / len(means), len(means) - 1))
    if not parts:
        return None
    total = sum(v for v, _ in parts)
    if total <= 0:
        return float(min(df for _, df in parts))
    return 1.0 / sum((v / total) ** 2 / df for v, df in parts)


def seed_t_scale(departure, *sides, confidence: float = CONFIDENCE) -> float:
    """The factor for the seed part of bootstrap draws, `departure` [B] (each draw's departure from its
    draw with every seed once; `bootstrap_means`), that makes its central `confidence` range
    t(nu) times its standard deviation, nu = `seed_degrees_of_freedom(*sides)`: the tails a variance
    estimated from few seeds calls for, which the few distinct resamples of 2 or 3 seeds cannot give
    (at 2 seeds the seed part takes 3 values, and its 95% range is 1.41 standard deviations, not
    t(1) = 12.7). 1 without 2 seeds on some side, or without departures."""
    from scipy.stats import t as student_t

    nu = seed_degrees_of_freedom(*sides)
    departure = np.asarray(departure, dtype=np.float64)
    departure = departure[np.isfinite(departure)]
    if nu is None or departure.size == 0:
        return 1.0
    reach = float(np.quantile(np.abs(departure), confidence))
    if reach <= 0:
        return 1.0
    return float(student_t.ppf((1 + confidence) / 2, nu) * departure.std() / reach)


def bootstrap_mean_parts(values, unit_counts: np.ndarray,
                         seed_counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(every [B], departure [B]): the two parts of `bootstrap_means`' draws, each draw's mean over
    every seed of the resampled units, and its seed resampling's departure from it (zeros without
    seed_counts or with one seed), so that a caller can widen the seed part (`seed_t_scale`)."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))  # [k, n]
    k = values.shape[0]
    present = ~np.isnan(values)  # NaN: a unit without a value (an item the llm judge gave no verdict)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of valueless units only: NaN
        # [B, k]: each seed's mean over the resampled units that have a value (all n of them: sum / n)
        per_seed = unit_counts @ np.where(present, values, 0.0).T / (unit_counts @ present.T)
    every = per_seed.mean(axis=1)
    if seed_counts is None or k < 2:
        return every, np.zeros_like(every)
    return every, np.sqrt(k / (k - 1)) * ((per_seed * seed_counts).sum(axis=1) / k - every)


def bootstrap_means(values, unit_counts: np.ndarray, seed_counts: np.ndarray | None = None) -> np.ndarray:
    """[B] bootstrap means of values [k seeds, n units] (or [n] for one seed).

    unit_counts [B, n] resamples the units (the same units for every seed: the seeds were evaluated
    on the same prompts); seed_counts [B, k] resamples the seeds (None: every seed once each). A NaN
    value is a unit without a value: each resample's mean is over the drawn units that have one.

    Resampling k seeds with replacement spreads their mean by only (k - 1)/k of its variance (1/2 at
    2 seeds, 2/3 at 3), so each draw's departure from the mean of all k seeds (over the same drawn
    units) is scaled by sqrt(k / (k - 1)), which makes the seed part of the variance unbiased (as
    residuals are inflated in a regression bootstrap). The draws' shape stays that of k seeds'
    resamples: few distinct values when k is small, whose range is neither a normal's nor the t
    distribution's that k - 1 degrees of freedom call for: callers that need intervals widen the seed
    part (`bootstrap_mean_parts`, `seed_t_scale`).
    """
    every, departure = bootstrap_mean_parts(values, unit_counts, seed_counts)
    return every + departure


def percentile_interval(draws, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of bootstrap draws [B]."""
    lo, hi = np.quantile(np.asarray(draws, dtype=np.float64), [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def bootstrap_interval(values, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                       seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of values [n] (one value per unit)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) == 0:
        raise ValueError("bootstrap_interval: no values")
    counts = resample_counts(len(values), resamples, np.random.default_rng(seed))
    return percentile_interval(bootstrap_means(values, counts), confidence)


def paired_difference_draws(a, b, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """[resamples] bootstrap draws of mean(b) - mean(a), for values a [k_a seeds, n] and b [k_b seeds, n]
    (or [n]) on the same n units: each draw resamples the units once for both (paired), and each
    side's seeds on their own (separate training runs). With one seed each, this is the bootstrap of
    the per-unit differences b - a. The seed part is scaled by `seed_t_scale` (degrees of freedom
    from both sides)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"paired_difference_draws: need the same units on both sides, got {a.shape[1]} and {b.shape[1]}")
    rng = np.random.default_rng(seed)
    units = resample_counts(a.shape[1], resamples, rng)
    seeds_a, seeds_b = (resample_counts(len(x), resamples, rng) if len(x) > 1 else None for x in (a, b))
    (every_a, departure_a), (every_b, departure_b) = (bootstrap_mean_parts(x, units, c)
                                                      for x, c in ((a, seeds_a), (b, seeds_b)))
    departure = departure_b - departure_a
    return every_b - every_a + seed_t_scale(departure, a, b) * departure  # the seed part's t correction


def is_binary(values) -> bool:
    """Whether every value is 0 or 1 (outcomes a Wilson interval applies to)."""
    return bool(np.isin(np.asarray(values, dtype=np.float64), (0.0, 1.0)).all())


def mean_interval(values, rate: bool, confidence: float = CONFIDENCE) -> tuple[tuple[float, float], str]:
    """((lo, hi), method) for the mean of per-unit values [n]: Wilson when `rate` and the values are
    0/1 outcomes, otherwise the percentile bootstrap over the units."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if rate and is_binary(values):
        return wilson_interval(int(values.sum()), len(values), confidence), WILSON
    return bootstrap_interval(values, confidence), BOOTSTRAP
