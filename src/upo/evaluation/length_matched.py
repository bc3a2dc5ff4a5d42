"""Differences at equal length: a metric of two evaluations compared within bins of response length.

A policy that answers in 7 words reads at a lower Flesch-Kincaid grade than one that answers in 40
(the grade rises with words per sentence), and a reward-model judge may prefer one length to
another: "B's grade is lower than A's" can say no more than "B is shorter". The length-matched
difference compares like with like (stratification on coarsened length):

- each generation falls in a bin of its word count, bins a factor sqrt(2) wide (`length_bins`:
  1, 2, 3, 4-5, 6-7, 8-11, 12-15, 16-22, 23-31, 32-45, ...; an empty response is a bin of its own);
- on each side, the metric's mean within each bin (over prompts and seeds);
- the difference B - A: the per-bin differences averaged over the bins where both sides have
  generations, bin k weighted n_A,k n_B,k / (n_A,k + n_B,k), the inverse of its difference's variance
  when the metric spreads alike in every bin (the overlap weights of Li, Morgan and Zaslavsky 2018):
  the difference at the lengths both sides produce, not extrapolated from a bin one side rarely
  reaches;
- `overlap_b` (`overlap_a`): the share of B's (A's) generations in those bins, and `effective_n`:
  2 sum_k n_A,k n_B,k / (n_A,k + n_B,k), the size of two equal groups that a comparison of the same
  variance would take (n when both sides hold n generations of the same lengths; `n_a`, `n_b`: the
  generations each side has). A small effective_n says the difference rests on few generations of
  lengths both sides produce: the two are hardly comparable at equal length.

Intervals as the paired comparisons': each bootstrap draw resamples the prompts once for both sides
and each side's training seeds on its own; bins, weights and means are recomputed in each draw (a
bin empty on one side in a draw drops out of that draw). A value NaN (an item the llm judge gave no
verdict) is a generation without a value. With several samples per prompt, a prompt's length is its
samples' mean word count.
"""

from __future__ import annotations

import numpy as np

from upo.stats import CONFIDENCE, RESAMPLES, SEED, percentile_interval, resample_counts

EMPTY = -1  # the bin of responses without words


def length_bins(words) -> np.ndarray:
    """The bin of each word count: floor(2 log2(words)) (bins a factor sqrt(2) wide), EMPTY below 1 word."""
    words = np.asarray(words, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(words >= 1, np.floor(2 * np.log2(np.maximum(words, 1)) + 1e-9), EMPTY).astype(np.int64)


def _bin_sums(values: np.ndarray, bins: np.ndarray, labels: np.ndarray, unit_counts: np.ndarray,
              seed_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sums, counts), each [B, bins]: the drawn generations' sum of values and number in each bin,
    from values and bins [k seeds, n units], unit_counts [B, n] and seed_counts [B, k]."""
    present = ~np.isnan(values)
    member = (bins[None] == labels[:, None, None]) & present[None]  # [J, k, n]
    J, k, n = member.shape

    def total(x: np.ndarray) -> np.ndarray:  # [J, k, n] -> [B, J]: over drawn units, then drawn seeds
        per_seed = (unit_counts @ x.reshape(J * k, n).T).reshape(-1, J, k)
        return (per_seed * seed_counts[:, None, :]).sum(axis=2)

    return total(np.where(member, values[None], 0.0)), total(member.astype(np.float64))


def _matched(a, a_bins, b, b_bins, labels, unit_counts, seeds_a, seeds_b) -> tuple[np.ndarray, np.ndarray]:
    """([B] length-matched differences B - A, [B] sums of the bins' weights), one per draw (the
    difference NaN where no bin is shared in a draw)."""
    sums_a, counts_a = _bin_sums(a, a_bins, labels, unit_counts, seeds_a)
    sums_b, counts_b = _bin_sums(b, b_bins, labels, unit_counts, seeds_b)
    shared = (counts_a > 0) & (counts_b > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        gaps = np.where(shared, sums_b / counts_b - sums_a / counts_a, 0.0)
        weights = np.where(shared, counts_a * counts_b / (counts_a + counts_b), 0.0)
        return (weights * gaps).sum(axis=1) / weights.sum(axis=1), weights.sum(axis=1)


def length_matched_difference(a, a_words, b, b_words, resamples: int = RESAMPLES, seed: int = SEED,
                              confidence: float = CONFIDENCE) -> dict:
    """The length-matched difference B - A of a metric (see the module docstring) from per-unit values
    and word counts a, a_words [k_a seeds, n] and b, b_words [k_b seeds, n] (or [n]) on the same n
    prompts: {"difference", "low", "high", "overlap_a", "overlap_b", "effective_n", "n_a", "n_b"}; the
    difference and its interval are None when no length bin holds generations of both sides."""
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
        return {"difference": None, "low": None, "high": None, **overlap, "effective_n": 0.0, **sizes}
    ones = np.ones((1, n))
    estimate, weight = _matched(a, a_bins, b, b_bins, shared, ones, np.ones((1, len(a))), np.ones((1, len(b))))
    rng = np.random.default_rng(seed)
    units = resample_counts(n, resamples, rng)
    seeds_a, seeds_b = (resample_counts(len(x), resamples, rng) if len(x) > 1 else np.ones((resamples, 1))
                        for x in (a, b))
    draws, _ = _matched(a, a_bins, b, b_bins, shared, units, seeds_a, seeds_b)
    low, high = percentile_interval(draws[~np.isnan(draws)], confidence)
    return {"difference": float(estimate[0]), "low": low, "high": high, **overlap, "effective_n": float(2 * weight[0]),
            **sizes}
