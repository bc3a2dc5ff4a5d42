"""How sure a frontier is: bootstrap draws of every point's metrics, and what they say.

Each draw resamples the evaluation prompts (and the held-out pairs) once for all points, since
every point was evaluated on the same ones (so differences between points are paired), and each
point's training seeds on its own (separate runs; `upo.stats.bootstrap_means`), the seed part set by
`upo.stats.seed_t_scale` (the seed variance net of the generation noise the prompts' resampling
already counts, and an interval t(nu) standard deviations wide on each side, nu Satterthwaite's):
for a point's own interval and the hypervolumes, from its own values; for a comparison of two points
(paired differences, the front test), from both (`pair_draws`), each test at the tail it reads (the
front test's one-sided 1 - 0.05/d and 1 - 0.05/P: t's tails grow faster than few seeds' draws). A
difference's interval is kept within what the per-unit values allow (`clip_difference`). From the
draws:

- each point's 95% interval on each metric (percentiles of its draws, kept within the range of its
  per-unit values, which its mean cannot leave: a rate's never goes below 0; a rate's widened to
  hold the Wilson interval of its outcomes pooled, `point_interval`);
- the hypervolume gain of UPO over the preference-only front in each draw, on the scale that the
  point estimates fix (`summary.py`), and its 95% interval;
- per UPO point, the share of draws in which it lies *beyond* the preference-only points (none of
  them is at least as good on every axis: it adds hypervolume) and the share in which one of them
  dominates it (both descriptive), and a verdict from tests of level 5% (`front_verdict`): "beyond"
  when against *every* preference-only point there is an axis on which the UPO point is better in
  at least 1 - 0.05/d of the draws (d axes: Bonferroni over the axes it may be better on; an
  intersection-union test over the points), "behind" when *some* preference-only point is better on
  each axis in at least 1 - 0.05/P of the draws (P points), otherwise "not distinguishable". (The
  share beyond alone is no test: for a UPO point equal to one preference-only point, "no point as
  good on every axis in 95% of draws" comes out in ~20% of evaluations on 2 axes and ~42% on 3.)
  The HV gain's interval is no test either: the gain is a maximum over points and never negative,
  so noise alone can lift its lower end above 0 (`front_verdict` is the test);
- paired differences of every UPO point with every preference-only point, metric by metric;
- with a steered UPO run (group "steered"), the 95% interval of HV(steered) / HV(UPO). The points of
  one steered run (its conditions) share their seeds' resampling: each seed is one run for all.

`equal_length_comparisons` gives the same pairs' differences at equal response length
(`upo.evaluation.length_matched`, a bootstrap of its own over the same prompts and seeds).
"""

from __future__ import annotations

import math

import numpy as np

from upo.evaluation.compare import LENGTH, equal_length_row, verdict
from upo.evaluation.intervals import UNIT_KINDS, units_of
from upo.evaluation.metrics import RATES
from upo.frontier.pareto import hypervolume, normalize, oriented
from upo.stats import (
    CONFIDENCE,
    RESAMPLES,
    SEED,
    bootstrap_mean_parts,
    is_binary,
    percentile_interval,
    resample_counts,
    seed_t_scale,
    wilson_interval,
)

Units = dict[str, tuple[list[str], dict[str, np.ndarray]]]  # kind -> (ids, {metric: [seeds, n]})


def common_ids(id_lists: list[list[str]]) -> list[str]:
    """The ids every list holds, in the first list's order (the first list itself when all are equal)."""
    if all(ids == id_lists[0] for ids in id_lists):
        return list(id_lists[0])
    shared = set.intersection(*(set(ids) for ids in id_lists))
    return list(dict.fromkeys(u for u in id_lists[0] if u in shared))


def positions(ids: list[str], wanted: list[str]) -> list[int]:
    if ids == wanted:
        return list(range(len(ids)))
    first = {u: i for i, u in reversed(list(enumerate(ids)))}
    return [first[u] for u in wanted]


def stack_units(results: list[dict]) -> Units:
    """A point's per-unit values from its evaluations (one per seed): {kind: (ids, {metric: [seeds, n]})}
    over the units and metrics every seed has; empty when an evaluation kept no per-unit values."""
    per_seed = [units_of(r) for r in results]
    out: Units = {}
    for kind in UNIT_KINDS:
        if not all(kind in u for u in per_seed):
            continue
        ids = common_ids([u[kind][0] for u in per_seed])
        metrics = set.intersection(*(set(u[kind][1]) for u in per_seed))
        out[kind] = (ids, {m: np.stack([u[kind][1][m][positions(u[kind][0], ids)] for u in per_seed])
                           for m in sorted(metrics)})
    return out


Parts = dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]  # point -> metric -> (every, departure, values)


def bootstrap_parts(units: dict[str, Units], resamples: int = RESAMPLES, seed: int = SEED,
                    runs: dict[str, str] | None = None) -> Parts:
    """{point: {metric: (every [B], departure [B], values [k, n])}}: each draw's mean over every seed
    of the resampled prompts, the seed resampling's departure from it (`bootstrap_means`' seed part,
    scaled by sqrt(k / (k - 1)); 0 with one seed), and the point's per-unit values on the shared units
    (for `seed_t_scale`).
    A draw is every + scale * departure (see the module docstring). `runs` names each point's training
    run: points of one run (a steered run's conditions) resample their seeds alike."""
    rng = np.random.default_rng(seed)
    shared = {kind: common_ids([u[kind][0] for u in units.values() if kind in u])
              for kind in UNIT_KINDS if any(kind in u for u in units.values())}
    counts = {kind: resample_counts(len(ids), resamples, rng) for kind, ids in shared.items()}
    out: Parts = {}
    run_seed_counts: dict[str, np.ndarray] = {}  # drawn at a run's first point, in the points' order
    for name, point in units.items():
        n_seeds = next((len(v) for _, values in point.values() for v in values.values()), 1)
        run = (runs or {}).get(name, name)
        if n_seeds > 1 and run not in run_seed_counts:
            run_seed_counts[run] = resample_counts(n_seeds, resamples, rng)
        seed_counts = run_seed_counts[run] if n_seeds > 1 else None
        out[name] = {}
        for kind, (ids, values) in point.items():
            if not shared[kind]:
                continue
            pos = positions(ids, shared[kind])
            for metric, v in values.items():
                out[name][metric] = (*bootstrap_mean_parts(v[:, pos], counts[kind], seed_counts), v[:, pos])
    return out


def scaled_draws(part: tuple[np.ndarray, np.ndarray, np.ndarray], scale: float) -> np.ndarray:
    every, departure, _ = part
    return every + scale * departure


def own_draws(parts: Parts) -> dict[str, dict]:
    """{point: {metric: [resamples] draws of its mean}}: each point's seed part scaled by its own
    `seed_t_scale`."""
    return {name: {m: scaled_draws(part, seed_t_scale(*part)) for m, part in metrics.items()}
            for name, metrics in parts.items()}


def bootstrap_draws(units: dict[str, Units], resamples: int = RESAMPLES, seed: int = SEED,
                    runs: dict[str, str] | None = None) -> dict[str, dict]:
    """{point: {metric: [resamples] draws of its mean}} (see the module docstring, `own_draws`)."""
    return own_draws(bootstrap_parts(units, resamples, seed, runs))


def pair_draws(parts: Parts, a: str, b: str, metric: str,
               confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """The draws of points a and b on `metric` for comparing them: both seed parts scaled by the t
    correction of their difference (`seed_t_scale` of both sides), at the central `confidence` the
    comparison reads (1 - 2 alpha for a one-sided test at level alpha)."""
    (every_a, departure_a, values_a), (every_b, departure_b, values_b) = parts[a][metric], parts[b][metric]
    scale = seed_t_scale(every_b - every_a, departure_b - departure_a, values_a, values_b, confidence=confidence)
    return scaled_draws(parts[a][metric], scale), scaled_draws(parts[b][metric], scale)


def point_interval(metric: str, draws: np.ndarray, values: np.ndarray | None) -> list[float]:
    """A point's 95% interval on one metric: the percentiles of its draws, kept within the range of its
    per-unit `values` [seeds, n] (its mean cannot leave it: a rate's never goes below 0). For a rate
    (`RATES`, 0/1 values) it is widened to hold the Wilson interval of all its outcomes pooled:
    percentiles of draws say nothing of a rate with few events (none: [0, 0]), and Wilson's ignores the
    seeds."""
    low, high = percentile_interval(draws)
    if values is None or not np.isfinite(values).any():
        return [low, high]
    low, high = np.clip([low, high], *value_range(values)).tolist()
    outcomes = values[np.isfinite(values)]
    if metric in RATES and is_binary(outcomes):
        w_low, w_high = wilson_interval(int(outcomes.sum()), outcomes.size)
        low, high = min(low, w_low), max(high, w_high)
    return [low, high]


def front_uncertainty(entry: dict, rows: list[dict], draws: dict[str, dict], parts: Parts | None = None) -> dict:
    """hv_gain_interval and upo_verdicts for one summary entry (its axes, reference and best). With
    `parts`, each UPO point is tested against each preference-only point on that pair's draws
    (`pair_draws`); else on `draws`."""
    axes, directions = entry["axes"], entry["directions"]
    empty = {"hv_gain_interval": None, "upo_verdicts": []}
    usable = [r for r in rows if r["group"] in ("preference", "upo") and all(m in r["metrics"] for m in axes)]
    if entry["reference"] is None or not usable or not all(m in draws.get(r["name"], {}) for r in usable for m in axes):
        return empty
    if not any(r["group"] == "preference" for r in usable):  # no front to lie beyond: every verdict would be vacuous
        return empty
    values = np.stack([np.stack([draws[r["name"]][m] for m in axes], axis=-1) for r in usable])  # [points, B, d]
    pref = [i for i, r in enumerate(usable) if r["group"] == "preference"]
    upo = [i for i, r in enumerate(usable) if r["group"] == "upo"]
    zero = np.zeros(len(axes))
    gains = []
    for b in range(values.shape[1]):
        scaled = normalize(values[:, b], directions, entry["reference"], entry["best"])  # [points, d]
        gain = hypervolume(scaled[pref + upo], zero) - (hypervolume(scaled[pref], zero) if pref else 0.0)
        gains.append(max(0.0, gain))  # never negative: below 0 only by rounding
    def orient(v: np.ndarray) -> np.ndarray:  # larger is better
        return oriented(v.reshape(-1, len(axes)), directions).reshape(v.shape)

    def stacked(name: str, confidence: float) -> tuple[np.ndarray, np.ndarray]:
        """[P, B, d] each, oriented: the draws of UPO point `name` and of each p for their comparison."""
        pairs = [[pair_draws(parts, name, usable[k]["name"], m, confidence) for m in axes] for k in pref]
        return (orient(np.stack([np.stack([d[0] for d in p], axis=-1) for p in pairs])),
                orient(np.stack([np.stack([d[1] for d in p], axis=-1) for p in pairs])))

    o = orient(values)
    alpha = 1 - CONFIDENCE
    verdicts = []
    for i in upo:
        u, against, behind = o[i], o[pref], None
        if parts is not None and pref:  # each test reads its own tail: one-sided at alpha / d, and at alpha / P
            u, against = stacked(usable[i]["name"], 1 - 2 * alpha / len(axes))
            behind = (u, against) if len(pref) == len(axes) else stacked(usable[i]["name"], 1 - 2 * alpha / len(pref))
        verdicts.append(front_verdict(u, against, [usable[k]["name"] for k in pref], axes, behind=behind)
                        | {"name": usable[i]["name"]})
    return {"hv_gain_interval": list(percentile_interval(gains)), "upo_verdicts": verdicts}


def front_verdict(upo: np.ndarray, pref: np.ndarray, pref_names: list[str], axes: list[str],
                  confidence: float = CONFIDENCE, behind: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Where one UPO point lies against the preference-only points, from draws oriented so that larger
    is better: upo [B, d] (or [P, B, d]: its draws for the comparison with each p, each pair at its own
    t correction, so that share_beyond and share_behind, which look at all p in one draw, mix scales:
    they stay descriptive), pref [P, B, d] (see the module docstring). Returns share_beyond and
    share_behind (descriptive: the share of draws in which no preference point is as good on every
    axis / one dominates it), the verdict at `confidence`, and per preference point the axis on which
    the UPO point is most often better (`against`: [{"preference", "axis", "share"}]). `behind`: the
    (upo, pref) draws for the behind test, when its tail (1 - alpha / P) calls for draws set apart from
    the beyond test's (1 - alpha / d; `pair_draws`' confidence)."""
    alpha, d = 1 - confidence, upo.shape[-1]
    at_least = (pref >= upo).all(axis=-1)  # [P, B]: a preference point as good on every axis
    better = (pref > upo).any(axis=-1)
    share_beyond = float((~at_least.any(axis=0)).mean()) if len(pref) else 1.0
    share_behind = float((at_least & better).any(axis=0).mean()) if len(pref) else 0.0
    upo_better = (upo > pref).mean(axis=1)  # [P, d]: the share of draws with the UPO point strictly better
    upo_b, pref_b = behind if behind is not None else (upo, pref)
    pref_better = (pref_b > upo_b).mean(axis=1)
    beyond = bool((upo_better.max(axis=1) >= 1 - alpha / d).all())  # each p beaten on some axis, Bonferroni over axes
    is_behind = bool(len(pref) and (pref_better.min(axis=1) >= 1 - alpha / len(pref)).any())  # Bonferroni over p
    against = [{"preference": name, "axis": axes[int(np.argmax(b))], "share": float(b.max())}
               for name, b in zip(pref_names, upo_better, strict=True)]
    return {"share_beyond": share_beyond, "share_behind": share_behind, "against": against,
            "verdict": "beyond" if beyond else "behind" if is_behind else "not distinguishable"}


def steered_ratio_interval(entry: dict, rows: list[dict], draws: dict[str, dict], own: bool = False) -> list[float] | None:
    """The 95% interval of HV(steered) / HV(UPO) for one summary entry, recomputed in every draw on the
    scale of the point estimates (`own`: the scale of the UPO and steered points alone). A draw where
    the grid's HV is 0 and the steered points' is not counts as an infinite ratio (so the upper end can
    be inf); a draw where both are 0 has no ratio and is left out. Quantiles are of the draws
    themselves (no interpolation, which an infinite draw would turn into NaN). None without both
    groups or without draws for all of their points."""
    axes, directions = entry["axes"], entry["directions"]
    usable = [r for r in rows if r["group"] in ("upo", "steered") and all(m in r["metrics"] for m in axes)]
    grid = [i for i, r in enumerate(usable) if r["group"] == "upo"]
    steered = [i for i, r in enumerate(usable) if r["group"] == "steered"]
    if entry["reference"] is None or not grid or not steered or not all(
            m in draws.get(r["name"], {}) for r in usable for m in axes):
        return None
    values = np.stack([np.stack([draws[r["name"]][m] for m in axes], axis=-1) for r in usable])  # [points, B, d]
    zero = np.zeros(len(axes))
    ratios = []
    for b in range(values.shape[1]):
        scaled = normalize(values[:, b], directions, *((entry["reference_steered"], entry["best_steered"]) if own
                                                       else (entry["reference"], entry["best"])))  # [points, d]
        grid_hv, steered_hv = hypervolume(scaled[grid], zero), hypervolume(scaled[steered], zero)
        if grid_hv > 0:
            ratios.append(steered_hv / grid_hv)
        elif steered_hv > 0:
            ratios.append(math.inf)
    if not ratios:
        return None
    tails = [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2]
    return [float(q) for q in np.quantile(np.asarray(ratios), tails, method="inverted_cdf")]


def value_range(values: np.ndarray) -> tuple[float, float]:
    """The smallest and largest of a point's per-unit values (NaN left out; (-inf, inf) when none)."""
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (-np.inf, np.inf)


def clip_difference(low: float, high: float, a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """An interval of mean(B) - mean(A) kept within what the values allow: [min B - max A, max B - min A]."""
    return float(np.clip(low, b[0] - a[1], b[1] - a[0])), float(np.clip(high, b[0] - a[1], b[1] - a[0]))


def paired_comparisons(rows: list[dict], draws: dict[str, dict], metrics: list[str], parts: Parts | None = None,
                       ranges: dict[str, dict] | None = None) -> list[dict]:
    """Every UPO point (B) against every preference-only point (A) on each metric both have draws of:
    the difference B - A, its interval, and the point the interval favours (or "neither"). With
    `parts`, each pair's draws are `pair_draws`' (the t correction of their difference); with `ranges`
    ({point: {metric: (min, max)}} of per-unit values), the interval stays within what they allow."""
    out = []
    pref = [r for r in rows if r["group"] == "preference"]
    for u in (r for r in rows if r["group"] == "upo"):
        for p in pref:
            for metric in metrics:
                if not all(metric in draws.get(r["name"], {}) and metric in r["metrics"] for r in (u, p)):
                    continue  # a metric one point lacks (or has no value of: an llm judge without verdicts)
                a, b = (pair_draws(parts, p["name"], u["name"], metric) if parts is not None
                        else (draws[p["name"]][metric], draws[u["name"]][metric]))
                low, high = percentile_interval(b - a)
                if ranges is not None and metric in ranges.get(u["name"], {}) and metric in ranges.get(p["name"], {}):
                    low, high = clip_difference(low, high, ranges[p["name"]][metric], ranges[u["name"]][metric])
                side = verdict(metric, low, high)
                out.append({"upo": u["name"], "preference": p["name"], "metric": metric,
                            "difference": u["metrics"][metric] - p["metrics"][metric], "low": low, "high": high,
                            "better": {"A": p["name"], "B": u["name"]}.get(side, side.replace("in B", f"for {u['name']}"))})
    return out


def equal_length_comparisons(rows: list[dict], units: dict[str, Units], metrics: list[str]) -> list[dict]:
    """Every UPO point (B) against every preference-only point (A) on each per-prompt metric of
    `metrics` (lengths aside) at equal length: the difference B - A within length bins, its interval,
    the point it favours, and the shares of each point's generations at lengths both have."""
    out = []
    pref = [r for r in rows if r["group"] == "preference"]
    for u in (r for r in rows if r["group"] == "upo"):
        for p in pref:
            if "per_prompt" not in units.get(u["name"], {}) or "per_prompt" not in units.get(p["name"], {}):
                continue
            (ids_u, values_u), (ids_p, values_p) = units[u["name"]]["per_prompt"], units[p["name"]]["per_prompt"]
            shared = common_ids([ids_p, ids_u])
            pos_u, pos_p = positions(ids_u, shared), positions(ids_p, shared)
            for metric in metrics:
                if metric.startswith("length/") or not {metric, LENGTH} <= values_u.keys() & values_p.keys():
                    continue
                row = equal_length_row(metric, values_p[metric][:, pos_p], values_p[LENGTH][:, pos_p],
                                       values_u[metric][:, pos_u], values_u[LENGTH][:, pos_u])
                if row["low"] is not None:
                    bounds = value_range(values_p[metric]), value_range(values_u[metric])
                    row["low"], row["high"] = clip_difference(row["low"], row["high"], *bounds)
                    row["difference"] = clip_difference(row["difference"], row["difference"], *bounds)[0]
                    row["better"] = verdict(metric, row["low"], row["high"])
                out.append({"upo": u["name"], "preference": p["name"], "metric": metric,
                            "difference": row["difference"], "low": row["low"], "high": row["high"],
                            "better": {"A": p["name"], "B": u["name"]}.get(row["better"], row["better"]),
                            "overlap_upo": row["overlap_b"], "overlap_preference": row["overlap_a"],
                            "effective_n": row["effective_n"], "n_upo": row["n_b"], "n_preference": row["n_a"],
                            "length_gap": row["length_gap"], "slope": row["slope"], "draws": row["draws"]})
    return out


def add_uncertainty(rows: list[dict], units: dict[str, Units], summary: list[dict], compared: list[str]) -> list[dict]:
    """Give each row its "intervals" ({metric: [low, high]}) and each summary entry its
    hv_gain_interval and upo_verdicts (and with steered points its hv_ratio_steered_interval), from one
    set of draws; return the paired comparisons of the `compared` metrics."""
    parts = bootstrap_parts(units, runs={r["name"]: r.get("trained") or r["name"] for r in rows})
    draws = own_draws(parts)
    ranges = {}
    for row in rows:
        values = {m: v for _, point in units.get(row["name"], {}).values() for m, v in point.items()}
        row["intervals"] = {m: point_interval(m, d, values.get(m)) for m, d in draws.get(row["name"], {}).items()}
        ranges[row["name"]] = {m: value_range(v) for m, v in values.items()}
    for entry in summary:
        entry.update(front_uncertainty(entry, rows, draws, parts))
        if entry.get("hv_steered") is not None:  # no interval where the estimate has no ratio (grid HV 0)
            entry["hv_ratio_steered_interval"] = (steered_ratio_interval(entry, rows, draws)
                                                  if entry.get("hv_ratio_steered") is not None else None)
            if entry.get("hv_ratio_steered_own") is not None:
                entry["hv_ratio_steered_own_interval"] = steered_ratio_interval(entry, rows, draws, own=True)
    return paired_comparisons(rows, draws, compared, parts, ranges)
