"""Confidence intervals: pure functions on per-unit values (a unit is a prompt, a pair or a seed).

- Wilson score interval for a rate k/n of independent 0/1 outcomes (one generation per prompt).
- Percentile bootstrap for a mean: resample the units with replacement, take the mean of each
  resample, and read the interval off the quantiles of those means. With several generations per
  prompt the units are the prompts (their per-prompt means), never the generations, which are not
  independent. With several training seeds, `bootstrap_means` resamples the seeds as well, and
  `seed_t_scale` sets the seed part so that the interval reaches t(nu) standard deviations on each
  side: the seed variance net of the generation noise that the units' resampling already counts,
  nu its Satterthwaite degrees of freedom (few seeds estimate a seed variance poorly).
- Paired comparison of two evaluations on the same units: the bootstrap of the difference of
  their means, with the same resampled units for both (`paired_difference_draws`).

Resamples are drawn as multinomial counts [resamples, n] (how often each unit is drawn), so the
resampled means are one matrix product; a fixed seed makes every interval reproducible.
"""

from __future__ import annotations

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


def seed_terms(estimates, noise: float) -> tuple[float, float, int] | None:
    """(net, gross, k - 1) of the seed variance of a mean over k seeds, from the k per-seed estimates
    (NaN: a seed without an estimate, left out) and `noise`, the variance each estimate carries from
    its own generations alone: gross = s^2 / k, s^2 their variance (ddof 1), and net =
    max(0, s^2 - noise) / k, the seed variance beyond that noise (the random-effects ANOVA estimate).
    None with fewer than 2 estimates."""
    estimates = np.asarray(estimates, dtype=np.float64)
    estimates = estimates[np.isfinite(estimates)]
    k = len(estimates)
    if k < 2:
        return None
    spread = float(np.var(estimates, ddof=1))
    return max(0.0, spread - noise) / k, spread / k, k - 1


def seed_variance(values) -> tuple[float, float, int] | None:
    """`seed_terms` of one point's mean, from its per-unit values [k seeds, n units] (a seed without
    any value left out; None with fewer than 2 seeds that have one).

    The estimates are the per-seed means. Each carries its own generation noise, MS_e / n_i, MS_e the
    seeds x units residual mean square (the two-way layout's interaction, over the units every seed
    has a value for) and n_i the units seed i has a value for: noise = MS_e mean(1 / n_i). Resampling
    the units already counts that noise, and the seed part should not count it again."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    values = values[~np.isnan(values).all(axis=1)]
    k = values.shape[0]
    if k < 2:
        return None
    present = (~np.isnan(values)).sum(axis=1)
    complete = values[:, ~np.isnan(values).any(axis=0)]
    n = complete.shape[1]
    noise = 0.0  # fewer than 2 units that every seed has: no estimate of the noise, none subtracted
    if n >= 2:
        residual = complete - complete.mean(axis=1, keepdims=True) - complete.mean(axis=0) + complete.mean()
        noise = float((residual ** 2).sum() / ((k - 1) * (n - 1)) * np.mean(1.0 / present))
    return seed_terms(np.nanmean(values, axis=1), noise)


def seed_degrees_of_freedom(units_variance: float, *sides) -> float | None:
    """Satterthwaite's degrees of freedom of the variance of a mean (one side) or of a difference of
    independent points' means (two sides), each side's per-unit values [k, n]:
    V = units_variance (the part the units' resampling measures) + the sides' net seed variances
    (`seed_variance`), nu = V^2 / sum(gross^2 / (k - 1)) over the sides with 2 seeds or more (a side
    with one seed adds no seed variance: none can be estimated from it). The units' part and the
    generation noise subtracted rest on hundreds of units and count as known; each seed variance is
    estimated from k - 1 degrees of freedom. nu nears the seeds' own (k - 1; Welch-Satterthwaite's
    for two sides) when their spread dwarfs the rest, and grows with the units' part and as the
    seeds' spread shrinks to their noise; a difference whose units' part cancels (the same prompts
    scored alike) keeps it near the seeds' own even then. inf when every side's seed estimates
    agree; None when no side has 2 seeds."""
    variance_and_nu = _variance_and_degrees_of_freedom(units_variance, [seed_variance(s) for s in sides])
    return None if variance_and_nu is None else variance_and_nu[1]


def _variance_and_degrees_of_freedom(units_variance: float, terms: list) -> tuple[float, float] | None:
    """(V, nu) of `seed_degrees_of_freedom` from each side's `seed_terms` (None: a side without 2 seeds);
    None when no side has them."""
    terms = [term for term in terms if term is not None]
    if not terms:
        return None
    total = units_variance + sum(net for net, _, _ in terms)
    spread = sum(gross ** 2 / df for _, gross, df in terms)
    return total, (total ** 2 / spread if spread > 0 else float("inf"))


def seed_t_scale(every, departure, *sides, confidence: float = CONFIDENCE) -> float:
    """`seed_t_scale_of_terms` with each side's `seed_variance` from its per-unit values [k, n]."""
    return seed_t_scale_of_terms(every, departure, [seed_variance(s) for s in sides], confidence)


def seed_t_scale_of_terms(every, departure, terms: list, confidence: float = CONFIDENCE) -> float:
    """The factor f for the seed part of bootstrap draws `every + f * departure` (`bootstrap_mean_parts`:
    `every` [B] each draw's value with every seed once on the resampled units, `departure` [B] its seed
    resampling's departure from it) that makes their central `confidence` range 2 t(nu) sqrt(V):
    V = var(every) + the sides' net seed variances (`terms`: each side's `seed_terms`, None for a
    side without 2 seeds), nu their Satterthwaite degrees of freedom (`seed_degrees_of_freedom`).

    Two things are corrected at once. Resampling seeds counts the generation noise a second time (it
    is in each seed's mean, and the units' resampling already has it): V holds the seed variance
    beyond that noise only. And few seeds estimate that variance poorly, which the few distinct
    resamples of 2 or 3 seeds cannot show (at 2 seeds the seed part takes 3 values, and its 95%
    range is 1.41 standard deviations, not t(1) = 12.7): the range is t(nu) standard deviations. The
    seed part carries both (it can shrink or grow): f is found by bisection on the draws themselves.
    A test that reads a tail beyond 95% takes the matching `confidence` (t's tails grow faster than
    the draws'). 1 without 2 seeds on any side, without departures, or with departures in too few
    draws to move the central range; 0 when `every` alone is already that wide, or nothing varies."""
    from scipy.stats import t as student_t

    every, departure = np.asarray(every, dtype=np.float64), np.asarray(departure, dtype=np.float64)
    finite = np.isfinite(every) & np.isfinite(departure)
    every, departure = every[finite], departure[finite]
    variance_and_nu = _variance_and_degrees_of_freedom(float(every.var()) if every.size else 0.0, terms)
    if variance_and_nu is None or not departure.any():
        return 1.0
    variance, nu = variance_and_nu
    if variance <= 0:
        return 0.0
    quantile = (1 + confidence) / 2
    target = 2 * float(student_t.ppf(quantile, nu) if np.isfinite(nu) else NormalDist().inv_cdf(quantile)) * np.sqrt(variance)

    def width(f: float) -> float:
        low, high = np.quantile(every + f * departure, [1 - quantile, quantile])
        return float(high - low)

    if width(0.0) >= target:
        return 0.0
    low, high = 0.0, 1.0
    while width(high) < target:
        if high > 1e12:  # departures in too few draws to move the central range: they cannot widen it
            return 1.0
        low, high = high, 2 * high
    for _ in range(50):  # the width grows with f
        middle = (low + high) / 2
        low, high = (middle, high) if width(middle) < target else (low, middle)
    return high


def bootstrap_mean_parts(values, unit_counts: np.ndarray,
                         seed_counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(every [B], departure [B]): the two parts of `bootstrap_means`' draws, each draw's mean over
    every seed of the resampled units, and its seed resampling's departure from it (zeros without
    seed_counts or with one seed), so that a caller can set the seed part (`seed_t_scale`)."""
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
    distribution's that k - 1 degrees of freedom call for, and the generation noise in each seed's
    mean is counted a second time: callers that need intervals set the seed part
    (`bootstrap_mean_parts`, `seed_t_scale`).
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
    the per-unit differences b - a. The seed part is scaled by `seed_t_scale` (both sides' seed
    variances and degrees of freedom)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"paired_difference_draws: need the same units on both sides, got {a.shape[1]} and {b.shape[1]}")
    rng = np.random.default_rng(seed)
    units = resample_counts(a.shape[1], resamples, rng)
    seeds_a, seeds_b = (resample_counts(len(x), resamples, rng) if len(x) > 1 else None for x in (a, b))
    (every_a, departure_a), (every_b, departure_b) = (bootstrap_mean_parts(x, units, c)
                                                      for x, c in ((a, seeds_a), (b, seeds_b)))
    departure = departure_b - departure_a
    every = every_b - every_a
    return every + seed_t_scale(every, departure, a, b) * departure  # the seed part: net of noise, t(nu)


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
