"""How far UPO's points lie beyond the preference-only front, for each set of axes.

Axes are the preference metric and one auxiliary metric (one entry each), and, with several
auxiliary metrics, all of them at once. For one set of axes, over the points that have every metric:

- reference point: the worst value seen on each axis (over all those points, base model included;
  `reference_from` names the point that sets it on each axis); each axis is scaled so that the
  worst value is 0 and the best is 1 (`pareto.normalize`);
- hv_preference, hv_upo, hv_union: hypervolume of the preference-only points, of the UPO points and
  of both together, w.r.t. that reference, in the scaled space (a share of the box between the
  worst and best values seen: 0 to 1);
- hv_gain = hv_union - hv_preference: the volume only UPO's points reach (>= 0; None without
  preference-only points);
- upo_nondominated_share: the share of UPO points that no preference-only point dominates;
- with steered points (one steered UPO run evaluated at each of its conditions, group "steered"):
  hv_steered, their hypervolume on the same scale, and hv_ratio_steered = hv_steered / hv_upo, how
  much of the grid-trained UPO front's hypervolume the one steered run covers (None without either);
  hv_ratio_steered_own, the same ratio with the reference and best values taken over the UPO and
  steered points alone (reference_steered, best_steered): the worst of those points then adds
  nothing, and neither the base model nor another far-off point sets the scale. It is a second
  view, not a bound on the first: a higher reference can lower or raise the ratio.
"""

from __future__ import annotations

import math

import numpy as np

from upo.evaluation.metrics import direction, natural
from upo.frontier.pareto import hypervolume, nondominated_share, normalize, oriented, pareto_front


def default_aux_metrics(scorers: list[str]) -> list[str]:
    """The auxiliary axes of an evaluation's scorers: safety -> violation rate, readability -> reading
    grade, others -> their natural metric; metrics without a better direction (length) are left out."""
    out: list[str] = []
    for scorer in scorers:
        metric = "safety/violation_rate" if scorer == "safety" else natural(scorer)[0]
        if direction(metric) is not None and metric not in out:
            out.append(metric)
    return out


def preference_metric(rows: list[dict], configured: str = "auto") -> str:
    """The configured metric, or the judge's win rate when the points have one, else the implicit-reward accuracy."""
    if configured != "auto":
        return configured
    return "judge/win_rate" if any("judge/win_rate" in r["metrics"] for r in rows) else "rewards/accuracies"


def _has(row: dict, metric: str) -> bool:
    value = row["metrics"].get(metric)
    return value is not None and math.isfinite(value)


def summarize_axes(rows: list[dict], axes: list[str]) -> dict:
    """The summary of one set of axes (see the module docstring) over rows {"name", "group", "metrics"}."""
    directions = [direction(m) for m in axes]
    if None in directions:
        raise ValueError(f"metric {axes[directions.index(None)]!r} has no better direction; it cannot be a frontier axis")
    usable = [r for r in rows if all(_has(r, m) for m in axes)]
    entry: dict = {"axes": axes, "directions": directions, "points": len(usable), "reference": None,
                   "reference_from": [], "best": None, "hv_preference": None, "hv_upo": None, "hv_union": None,
                   "hv_gain": None,
                   "upo_nondominated_share": None, "preference_front": [], "upo_front": [], "hv_steered": None,
                   "hv_ratio_steered": None, "steered_front": [], "hv_ratio_steered_own": None,
                   "reference_steered": None, "best_steered": None}
    if not usable:
        return entry
    values = np.asarray([[r["metrics"][m] for m in axes] for r in usable])  # [n, d]
    signs = oriented(np.ones(len(axes)), directions)[0]  # +1 max, -1 min
    worst = oriented(values, directions).min(axis=0) * signs  # back in the metrics' own units
    best = oriented(values, directions).max(axis=0) * signs
    scaled = normalize(values, directions, worst, best)  # [n, d], 0 = worst seen, 1 = best
    pref = [i for i, r in enumerate(usable) if r["group"] == "preference"]
    upo = [i for i, r in enumerate(usable) if r["group"] == "upo"]
    steered = [i for i, r in enumerate(usable) if r["group"] == "steered"]

    def hv(idx: list[int]) -> float:
        return hypervolume(scaled[idx], np.zeros(len(axes))) if idx else 0.0

    def front(idx: list[int]) -> list[str]:
        return [usable[idx[k]]["name"] for k in pareto_front(values[idx], directions)] if idx else []

    worst_at = oriented(values, directions).argmin(axis=0)  # the point that sets each axis's reference
    entry.update(
        reference=worst.tolist(),
        reference_from=[usable[int(i)]["name"] for i in worst_at],
        best=best.tolist(),
        hv_preference=hv(pref),
        hv_upo=hv(upo),
        hv_union=hv(pref + upo),
        hv_gain=hv(pref + upo) - hv(pref) if pref else None,  # no preference-only point: no front to lie beyond
        upo_nondominated_share=nondominated_share(values[upo], values[pref], directions) if upo and pref else None,
        preference_front=front(pref),
        upo_front=front(upo),
    )
    if steered:
        entry.update(hv_steered=hv(steered), steered_front=front(steered),
                     hv_ratio_steered=hv(steered) / hv(upo) if upo and hv(upo) > 0 else None)
    if steered and upo:  # the same ratio on the scale of the UPO and steered points alone
        own = oriented(values[upo + steered], directions)
        low, high = own.min(axis=0) * signs, own.max(axis=0) * signs
        rescaled = normalize(values, directions, low, high)
        grid_hv = hypervolume(rescaled[upo], np.zeros(len(axes)))
        entry.update(reference_steered=low.tolist(), best_steered=high.tolist(),
                     hv_ratio_steered_own=hypervolume(rescaled[steered], np.zeros(len(axes))) / grid_hv
                     if grid_hv > 0 else None)
    return entry


def summarize(rows: list[dict], pref_metric: str, aux_metrics: list[str]) -> list[dict]:
    """One entry per auxiliary metric (axes: preference, that metric), then one over all axes."""
    axes_sets = [[pref_metric, m] for m in aux_metrics]
    if len(aux_metrics) > 1:
        axes_sets.append([pref_metric, *aux_metrics])
    return [summarize_axes(rows, axes) for axes in axes_sets]
