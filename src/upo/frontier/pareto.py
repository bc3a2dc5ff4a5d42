"""Pareto fronts, dominance and hypervolume of evaluated models: pure functions on arrays.

A point is a row of `values` [n, d], one column per metric; `directions[j]` is "max" when higher is
better on metric j and "min" when lower is. Everything is computed after `oriented`, which negates
the "min" columns, so that larger is better on every axis.

- a dominates b: a is at least as good as b on every axis and strictly better on one.
- Pareto front of a set: its points that no point of the set dominates (ties are all kept).
- hypervolume of a set w.r.t. a reference point r (in the oriented space): the volume of the union
  of the boxes [r, p] over the points p of the set (a point no better than r on some axis adds
  nothing). Only the front contributes, so it measures the front.
"""

from __future__ import annotations

import numpy as np

SIGNS = {"max": 1.0, "min": -1.0}


def oriented(values, directions: list[str]) -> np.ndarray:
    """values [n, d] with the "min" columns negated: larger is better on every axis."""
    values = np.asarray(values, dtype=np.float64).reshape(-1, len(directions))
    unknown = [d for d in directions if d not in SIGNS]
    if unknown:
        raise ValueError(f"directions must be 'max' or 'min', got {unknown}")
    return values * np.asarray([SIGNS[d] for d in directions])


def dominates(a, b, directions: list[str]) -> bool:
    """Whether point a [d] dominates point b [d]."""
    oa, ob = oriented(a, directions)[0], oriented(b, directions)[0]
    return bool(np.all(oa >= ob) and np.any(oa > ob))


def dominated_mask(candidates, others, directions: list[str]) -> np.ndarray:
    """[n_candidates] bool: True where some point of `others` [m, d] dominates the candidate."""
    c, o = oriented(candidates, directions), oriented(others, directions)
    if len(o) == 0:
        return np.zeros(len(c), dtype=bool)
    at_least = (o[None, :, :] >= c[:, None, :]).all(axis=2)  # [n, m]
    better = (o[None, :, :] > c[:, None, :]).any(axis=2)  # [n, m]
    return (at_least & better).any(axis=1)


def pareto_front(values, directions: list[str]) -> list[int]:
    """Indices (ascending) of the rows of values [n, d] that no other row dominates."""
    return np.flatnonzero(~dominated_mask(values, values, directions)).tolist()


def nondominated_share(candidates, others, directions: list[str]) -> float | None:
    """Share of `candidates` that no point of `others` dominates (None when there are no candidates)."""
    mask = dominated_mask(candidates, others, directions)
    return None if len(mask) == 0 else float((~mask).mean())


def normalize(values, directions: list[str], worst, best) -> np.ndarray:
    """Oriented values [n, d] scaled per axis so that `worst` [d] -> 0 and `best` [d] -> 1 (both given
    in the metrics' own units). An axis with worst == best does not separate the points: all get 1."""
    o = oriented(values, directions)
    lo, hi = oriented(worst, directions)[0], oriented(best, directions)[0]
    span = hi - lo
    flat = span == 0
    return np.where(flat, 1.0, (o - lo) / np.where(flat, 1.0, span))


def hypervolume(points, reference) -> float:
    """Volume dominated by points [n, d] (already oriented: larger is better) and bounded below by
    `reference` [d]: the volume of the union of the boxes [reference, p].

    Exact, by slicing along the last axis and recursing (O(n^d): meant for the few dozen points of
    a sweep). Coordinates below the reference count as the reference (the box is empty).
    """
    reference = np.asarray(reference, dtype=np.float64).reshape(-1)
    pts = np.maximum(np.asarray(points, dtype=np.float64).reshape(-1, len(reference)), reference)
    return _slice_volume(sorted(map(tuple, pts), key=lambda p: p[-1], reverse=True), tuple(reference))


def _slice_volume(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    """`points` sorted by their last coordinate, largest first."""
    if not points:
        return 0.0
    if len(reference) == 1:
        return points[0][0] - reference[0]
    volume = 0.0
    for i, p in enumerate(points):
        # slab between this point's last coordinate and the next one's (or the reference): the
        # points above it, projected onto the other axes, dominate its cross-section
        below = points[i + 1][-1] if i + 1 < len(points) else reference[-1]
        if p[-1] > below:
            section = sorted((q[:-1] for q in points[: i + 1]), key=lambda q: q[-1], reverse=True)
            volume += (p[-1] - below) * _slice_volume(section, reference[:-1])
    return volume
