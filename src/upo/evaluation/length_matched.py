"""Differences at equal length: a metric of two evaluations compared within bins of response length.

A policy that answers in 7 words reads at a lower Flesch-Kincaid grade than one that answers in 40
(the grade rises with words per sentence), and a reward-model judge may prefer one length to
another: "B's grade is lower than A's" can say no more than "B is shorter". The length-matched
difference compares like with like (stratification on coarsened length):

- each generation falls in a bin of its word count, bins a factor sqrt(2) wide (`length_bins`:
  1, 2, 3, 4-5, 6-7, 8-11, 12-15, 16-22, 23-31, 32-45, ...; an empty response is a bin of its own);
- on each side, the metric's mean within each bin (over prompts and seeds);
- within a bin, lengths still differ by up to a factor sqrt(2), and a shorter side sits at the low end
  of each bin it shares with a longer one: each bin's difference of means is adjusted for its gap in
  mean log2 word count, times the slope of the metric on log2 words within the bins (pooled over
  both sides and the shared bins, each side's bin centred on its own means: stratified analysis of
  covariance, so a side's own shift at equal length does not enter the slope);
  `length_gap` (B - A, log2 words, the bins' weighted mean before adjusting) and `slope` say how much
  was adjusted;
- the difference B - A: the adjusted per-bin differences averaged over the bins where both sides
  have generations, bin k weighted n_A,k n_B,k / (n_A,k + n_B,k), the inverse of its difference's
  variance when the metric spreads alike in every bin (the overlap weights of Li, Morgan and
  Zaslavsky 2018): the difference at the lengths both sides produce, not extrapolated from a bin
  one side rarely reaches;
- `overlap_b` (`overlap_a`): the share of B's (A's) generations in those bins, and `effective_n`:
  2 sum_k n_A,k n_B,k / (n_A,k + n_B,k), the size of two equal groups that a comparison of the same
  variance would take (n when both sides hold n generations of the same lengths; `n_a`, `n_b`: the
  generations each side has). A small effective_n says the difference rests on few generations of
  lengths both sides produce: the two are hardly comparable at equal length.

Intervals as the paired comparisons': each bootstrap draw resamples the prompts once for both sides
and each side's training seeds on its own; bins, weights and means are recomputed in each draw (a
bin empty on one side in a draw drops out of that draw; the slope is estimated in each draw; each
side's seed resampling is scaled up by sqrt(k / (k - 1)) as in `upo.stats.bootstrap_means`, and
then set by `upo.stats.seed_t_scale_of_terms`: each side's seed variance at equal length, net of
generation noise, and t(nu) for few seeds; `_seed_terms`). A value
NaN (an item the llm judge gave no verdict) is a generation without a value. With several samples
per prompt, a prompt's length is its samples' mean word count.
"""

from __future__ import annotations

import numpy as np

from upo.stats import (
    CONFIDENCE,
    RESAMPLES,
    SEED,
    percentile_interval,
    resample_counts,
    seed_t_scale_of_terms,
    seed_terms,
)

EMPTY = -1  # the bin of responses without words


def length_bins(words) -> np.ndarray:
    """The bin of each word count: floor(2 log2(words)) (bins a factor sqrt(2) wide), EMPTY below 1 word."""
    words = np.asarray(words, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(words >= 1, np.floor(2 * np.log2(np.maximum(words, 1)) + 1e-9), EMPTY).astype(np.int64)


def _bin_totals(values: np.ndarray, log_words: np.ndarray, bins: np.ndarray, labels: np.ndarray,
                unit_counts: np.ndarray, seed_counts: np.ndarray) -> dict[str, np.ndarray]:
    """The drawn generations' totals in each bin, each [B, bins]: "n" (how many), "y", "x", "xx", "xy"
    (sums of the value y, of x = log2 words, x^2 and x y), from values, log_words and bins [k seeds,
    n units], unit_counts [B, n] and seed_counts [B, k]."""
    present = ~np.isnan(values)
    member = (bins[None] == labels[:, None, None]) & present[None]  # [J, k, n]
    J, k, n = member.shape

    def total(x: np.ndarray) -> np.ndarray:  # [k, n] -> [B, J]: over the bin's drawn units, then drawn seeds
        x = np.where(member, x[None], 0.0)
        per_seed = (unit_counts @ x.reshape(J * k, n).T).reshape(-1, J, k)
        return (per_seed * seed_counts[:, None, :]).sum(axis=2)

    y = np.where(present, values, 0.0)
    return {"n": total(np.ones_like(y)), "y": total(y), "x": total(log_words), "xx": total(log_words ** 2),
            "xy": total(log_words * y)}


def _matched(a, a_x, a_bins, b, b_x, b_bins, labels, unit_counts, seeds_a, seeds_b) -> dict[str, np.ndarray]:
    """Per draw ([B] each): "difference" (B - A at equal length, NaN where no bin is shared in a draw),
    "weight" (the sum of the bins' weights), "slope" (the pooled within-bin slope on log2 words) and
    "length_gap" (the bins' weighted mean gap in log2 words, B - A, before adjusting)."""
    ta = _bin_totals(a, a_x, a_bins, labels, unit_counts, seeds_a)
    tb = _bin_totals(b, b_x, b_bins, labels, unit_counts, seeds_b)
    shared = (ta["n"] > 0) & (tb["n"] > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        def mean(t: dict, key: str) -> np.ndarray:
            return np.where(shared, t[key] / t["n"], 0.0)

        def within(t: dict, u: str, v: str) -> np.ndarray:  # sum over a side's bin of (u - mean u)(v - mean v)
            return np.where(shared, t[u + v] - t[u] * t[v] / t["n"], 0.0).sum(axis=1)

        xx = within(ta, "x", "x") + within(tb, "x", "x")
        spread = xx > 1e-9 * np.where(shared, ta["xx"] + tb["xx"], 0.0).sum(axis=1)  # not rounding: lengths vary in a bin
        slope = np.where(spread, (within(ta, "x", "y") + within(tb, "x", "y")) / np.where(spread, xx, 1.0), 0.0)
        x_gaps = mean(tb, "x") - mean(ta, "x")
        gaps = mean(tb, "y") - mean(ta, "y") - slope[:, None] * x_gaps
        weights = np.where(shared, ta["n"] * tb["n"] / (ta["n"] + tb["n"]), 0.0)
        total = weights.sum(axis=1)
        return {"difference": (weights * gaps).sum(axis=1) / total, "weight": total, "slope": slope,
                "length_gap": (weights * x_gaps).sum(axis=1) / total}


def _seed_inflated(sides: tuple, units: np.ndarray, seeds_a: np.ndarray, seeds_b: np.ndarray) -> np.ndarray:
    """[B] draws of the difference in which each side's seed resampling departs from its draw with
    every seed once (the same drawn prompts) by sqrt(k / (k - 1)) times as much: resampling k seeds
    spreads their mean by only (k - 1)/k of its variance (`upo.stats.bootstrap_means`, where it is
    exact; here, where bins and slopes are recomputed, to first order); the sum of the departures is
    then set by `upo.stats.seed_t_scale_of_terms` (the seed variance net of generation noise, t(nu)
    for few seeds), from each side's seed variance at equal length (`_seed_terms`)."""
    once_a, once_b = np.ones_like(seeds_a), np.ones_like(seeds_b)
    if seeds_a.shape[1] < 2 and seeds_b.shape[1] < 2:
        return _matched(*sides, units, seeds_a, seeds_b)["difference"]
    base = _matched(*sides, units, once_a, once_b)["difference"]
    departure = np.zeros_like(base)
    for counts, k, which in ((seeds_a, seeds_a.shape[1], 0), (seeds_b, seeds_b.shape[1], 1)):
        if k > 1:
            resampled = _matched(*sides, units, *((counts, once_b) if which == 0 else (once_a, counts)))["difference"]
            departure += np.sqrt(k / (k - 1)) * (resampled - base)
    terms = [_seed_terms(sides, units, seeds_a.shape[1], seeds_b.shape[1], which) for which in (0, 1)]
    return base + seed_t_scale_of_terms(base, departure, terms) * departure


def _seed_terms(sides: tuple, units: np.ndarray, k_a: int, k_b: int, which: int) -> tuple | None:
    """`upo.stats.seed_terms` of side `which` (0: a, 1: b) at equal length: each of its seeds' own
    length-matched difference (that seed alone against every seed of the other side) is an estimate
    (each on its own shared bins and weights, so their spread also holds differences in those); the
    noise each carries is read off the drawn prompts: the variance of its departure from the seeds'
    mean in each draw (the prompts' common part cancels there), times k / (k - 1), over the seeds
    with an estimate and the draws in which each of them has one. None with fewer than 2 seeds."""
    k = (k_a, k_b)[which]
    if k < 2:
        return None
    n = units.shape[1]
    estimates, drawn = [], []
    for i in range(k):
        alone = np.eye(k)[i][None]
        for rows, out in ((np.ones((1, n)), estimates), (units, drawn)):
            own, other = np.repeat(alone, len(rows), axis=0), np.ones((len(rows), (k_b, k_a)[which]))
            out.append(_matched(*sides, rows, *((own, other) if which == 0 else (other, own)))["difference"])
    estimates, drawn = np.concatenate(estimates), np.stack(drawn)  # [k], [k, B]
    kept = np.isfinite(estimates)  # a seed without a shared bin has no estimate
    drawn = drawn[kept][:, np.isfinite(drawn[kept]).all(axis=0)]  # the draws in which every kept seed has one
    k = int(kept.sum())
    noise = 0.0
    if k >= 2 and drawn.shape[1] >= 2:
        noise = float((drawn - drawn.mean(axis=0)).var(axis=1).mean()) * k / (k - 1)
    return seed_terms(estimates, noise)


def length_matched_difference(a, a_words, b, b_words, resamples: int = RESAMPLES, seed: int = SEED,
                              confidence: float = CONFIDENCE) -> dict:
    """The length-matched difference B - A of a metric (see the module docstring) from per-unit values
    and word counts a, a_words [k_a seeds, n] and b, b_words [k_b seeds, n] (or [n]) on the same n
    prompts: {"difference", "low", "high", "overlap_a", "overlap_b", "effective_n", "n_a", "n_b"}; the
    difference and its interval are None when no length bin holds generations of both sides; "draws":
    the bootstrap draws the interval is read from (those that hold a shared bin: fewer than
    `resamples` when few generations share lengths, and the interval then describes those draws)."""
    a, b = (np.atleast_2d(np.asarray(x, dtype=np.float64)) for x in (a, b))
    a_bins, b_bins = (length_bins(np.atleast_2d(w)) for w in (a_words, b_words))
    if not a.shape[1] == b.shape[1] == a_bins.shape[1] == b_bins.shape[1] or a.shape != a_bins.shape \
            or b.shape != b_bins.shape:
        raise ValueError(f"length_matched_difference: need values and word counts on the same prompts, got "
                         f"{a.shape}, {a_bins.shape}, {b.shape}, {b_bins.shape}")
    n = a.shape[1]
    shared = np.intersect1d(a_bins[~np.isnan(a)], b_bins[~np.isnan(b)])
    overlap = {f"overlap_{side}": float(np.isin(bins[~np.isnan(v)], shared).mean()) if (~np.isnan(v)).any() else 0.0
               for side, v, bins in (("a", a, a_bins), ("b", b, b_bins))}
    sizes = {"n_a": int((~np.isnan(a)).sum()), "n_b": int((~np.isnan(b)).sum())}
    if len(shared) == 0:
        return {"difference": None, "low": None, "high": None, "draws": 0, **overlap, "effective_n": 0.0, **sizes,
                "slope": None, "length_gap": None}
    a_x, b_x = (np.log2(np.maximum(np.atleast_2d(np.asarray(w, dtype=np.float64)), 1.0)) for w in (a_words, b_words))
    sides = (a, a_x, a_bins, b, b_x, b_bins, shared)
    estimate = _matched(*sides, np.ones((1, n)), np.ones((1, len(a))), np.ones((1, len(b))))
    rng = np.random.default_rng(seed)
    units = resample_counts(n, resamples, rng)
    seeds_a, seeds_b = (resample_counts(len(x), resamples, rng) if len(x) > 1 else np.ones((resamples, 1))
                        for x in (a, b))
    draws = _seed_inflated(sides, units, seeds_a, seeds_b)
    kept = draws[~np.isnan(draws)]  # a draw that holds no shared bin has no difference
    low, high = percentile_interval(kept, confidence)
    return {"difference": float(estimate["difference"][0]), "low": low, "high": high, "draws": len(kept), **overlap,
            "effective_n": float(2 * estimate["weight"][0]), **sizes, "slope": float(estimate["slope"][0]),
            "length_gap": float(estimate["length_gap"][0])}
