"""frontier.csv (one row per point) and report.md (points, plots, summary, definitions)."""

from __future__ import annotations

import csv
from pathlib import Path

from upo.evaluation.compare import equal_length_cells
from upo.evaluation.metrics import direction
from upo.evaluation.report import ARROWS, format_value
from upo.frontier.claims import claims

ID_COLUMNS = ("name", "group", "method", "aux_coef", "variant", "relabel", "trained")

DEFINITIONS = """\
Each point is scored on the preference metric and the auxiliary metrics (`better` says which way
is better for each). *Preference-only* points are methods trained on the labels alone (DPO, KTO,
CSFT, ...); *UPO* points are `upo` at each `aux_coef`; *baselines given r_a* (MODPO, aoPPO,
relabelled DPO/KTO, ...) and the base model are drawn but belong to neither front. A point
*dominates* another when it is at least as good on every axis and better on one; a *front* is the
set of points of a group that no point of the same group dominates.

- **reference point**: the worst value seen on each axis over every point that has all the axes'
  metrics; each axis is scaled so that this worst value is 0 and the best value seen is 1 (an axis
  on which all points tie counts 1 for all).
- **HV(S)**: the hypervolume of a set S of points, the share of the scaled box [0, 1]^d that S
  dominates: the volume of the union over p in S of the boxes between the reference point and p.
- **HV gain** = HV(preference-only ∪ UPO) - HV(preference-only): the part of the box only UPO
  reaches; 0 when UPO's points lie on or behind the preference-only front.
- **UPO not dominated**: the share of UPO points that no preference-only point dominates.
- **UPO steered**: one UPO run trained conditioned on aux_coef (`steer_aux_coefs`), evaluated at
  each of its conditions; **HV steered / grid** = HV(UPO steered) / HV(UPO), the share of the
  grid-trained UPO points' hypervolume that the one run reaches; its 95% interval is recomputed in
  every draw, where the conditions of one steered run resample their seeds alike (each seed is one
  run for all of them). **On their own scale**: the same ratio with the reference and best values
  taken over the UPO and steered points alone, so that neither the base model nor any other point
  sets the scale (the worst of them then adds nothing). A second view, not a bound: moving the
  reference can lower or raise the ratio. An interval's upper end is inf when, in enough draws, the
  grid's points have no hypervolume while the steered ones have some.
  **Training compute**: per seed, the
  sum over a group's training runs (a steered run once) of optimizer steps, policy tokens processed
  (non-padding, per process) and the steps' wall time at their median pace (steps x the median
  step's seconds, so that a paused stretch does not count; set-up, reference log-probs and
  evaluation excluded).

**Intervals** ({confidence:.0%}): percentile bootstrap, {resamples} draws (seed {seed}). Each draw
resamples the evaluation prompts (and held-out pairs) once for every point, since all were evaluated
on the same ones, and each point's training seeds on its own; a point's value in a draw is the mean
over its resampled seeds of the mean over the resampled prompts; a point's interval is kept within the
range of its per-prompt values, and a rate's is widened to hold the Wilson interval of all its outcomes
pooled (the draws of a rate with no events are all 0). The HV gain is recomputed in every draw on the scale of the point estimates; its interval is no test (the gain is never negative, so
noise alone can lift its lower end above 0). The test is each UPO point's verdict, at level
{alpha:.0%}: **beyond** the preference-only front when against every preference-only point there is
an axis on which the UPO point is better in at least 1 - {alpha:.2g}/d of the draws (d axes; the
table names that axis and share per point), **behind** it when some preference-only point is better
on each axis in at least 1 - {alpha:.2g}/P of the draws (P preference-only points), and **not
distinguishable** otherwise. The shares of draws in which no preference-only point is as good on
every axis ("draws beyond the front") or one dominates it are descriptive, not the test: for a UPO
point equal to a preference-only one, the first reaches {confidence:.0%} in ~20% of evaluations on
2 axes and ~42% on 3. **Paired differences** are UPO minus preference-only, per draw; `better`
names the point the interval favours, `neither` when it holds 0. Resampling k seeds puts only
(k - 1) / k of their variance into the draws, so each draw's departure from the mean of all k seeds
is scaled by sqrt(k / (k - 1)) (the seed part of the variance unbiased). Then the seed part is set
so that the interval reaches t(nu) standard deviations on each side (`upo.stats.seed_t_scale`): the
variance it adds is the seed variance net of the generation noise each seed's mean carries
(resampling the prompts already counts that noise), and nu is the Satterthwaite degrees of freedom
of the whole variance, each seed variance estimated from k - 1 (near k - 1 when the seeds differ
much more than their noise: t = 12.7 at 2 seeds, 4.3 at 3; larger when they do not, unless the
prompts' part cancels in a difference). The front test sets each pair's draws at the tail it reads.
A difference's interval is kept within what the per-unit values allow.
3 seeds still allow only 10 distinct resamples, so the intervals' shape is coarse.
"""


EQUAL_LENGTH = """\
A shorter answer reads at a lower grade, and a judge may prefer one length to another: here each
metric is compared within bins of response length (word counts a factor √2 apart; seeds pooled),
each bin's difference adjusted for the two points' gap in mean log length within it (the metric's
within-bin slope on log2 words, pooled, times the gap), the per-bin differences averaged over the
bins both points have generations in, each weighted by the inverse variance of its difference,
n_pref n_UPO / (n_pref + n_UPO) (`upo.evaluation.length_matched`; bootstrap over the same prompts
and seeds). Two columns say how much of each point those bins hold; the next, the size of two
equal groups a comparison of the same variance would take, 2 sum_k n_pref n_UPO / (n_pref + n_UPO)
over the shared bins (seeds pooled), of the most the two sizes allow (every generation at shared
lengths); the last, UPO's words over the preference point's within the shared bins (geometric
means; the gap adjusted for). Where the overlap is small, the difference rests on few generations of lengths both
produce, and the two are hardly comparable at equal length, whatever the interval
says; with seeds, the interval also moves with each seed's lengths."""


CLAIMS = """\
Each UPO point is asked whether it is better than each preference-only point on each auxiliary
metric (its own preference term first: UPO with a KTO term against KTO, ...), whether it is not
worse than its term on the preference metric, and whether it is beyond the preference-only front
(the level-5% test of the table "Each UPO point against the preference-only front"). **yes**: the
95% interval of the paired difference lies on the asked side of 0; **no**: on the other side; **not
shown**: it holds 0. "Not worse" cannot be shown without a margin: **no loss shown** means the
interval holds 0, and its end on the worse side, given beside it, is the largest loss the data do
not rule out (the honest answer to "not worse" is then: not shown either way). Each
comparison is answered raw and at equal length (see "At equal length" below): where the two answers
differ, the raw one may come from a difference in length. **no interval**: no draw had a value;
"not computed": the comparison or the front test could not be made (a metric without draws, or
without per-prompt values); "no shared length": the two points have no response length in common;
"not compared": the evaluations kept no lengths (or no per-prompt values); "not among the points":
the UPO point's preference term is not in the sweep or not finished, so its term's questions are not
asked. For the front, yes / no / not shown mean beyond / behind / not distinguishable. Each answer is its own test at 5%, with no correction for their number: where
nothing differs, about one question in twenty may still answer yes or no by chance, so a lone yes
among many not shown is weak evidence."""


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format_value(value)
    return str(value)


def write_csv(rows: list[dict], path: Path) -> None:
    metrics = sorted({m for r in rows for m in r["metrics"]})
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*ID_COLUMNS, *metrics])
        for r in rows:
            writer.writerow([*("" if r.get(c) is None else r[c] for c in ID_COLUMNS),
                             *(r["metrics"].get(m, "") for m in metrics)])


def _interval(interval) -> str:
    return "" if not interval else f"[{format_value(interval[0])}, {format_value(interval[1])}]"


def _axes(entry: dict) -> str:
    return " × ".join(f"{m} {ARROWS[d].split()[0]}" for m, d in zip(entry["axes"], entry["directions"], strict=True))


def _summary_table(summary: list[dict]) -> list[str]:
    lines = ["| axes | points | preference-only front | UPO front | HV pref-only | HV UPO | HV pref-only ∪ UPO "
             "| HV gain | HV gain 95% | UPO not dominated |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        share = "" if e["upo_nondominated_share"] is None else f"{e['upo_nondominated_share']:.2f}"
        lines.append(f"| {_axes(e)} | {e['points']} | {', '.join(e['preference_front'])} | {', '.join(e['upo_front'])} "
                     f"| {_cell(e['hv_preference'])} | {_cell(e['hv_upo'])} | {_cell(e['hv_union'])} "
                     f"| {_cell(e['hv_gain'])} | {_interval(e.get('hv_gain_interval'))} | {share} |")
    return lines


def _reference_lines(summary: list[dict]) -> list[str]:
    """Which point sets each axis's reference (its worst value seen): it fixes every hypervolume's scale,
    so a far-off point (often the base model) moves HV ratios towards 1."""
    axes = {m: (value, name) for e in summary if e["reference"] is not None
            for m, value, name in zip(e["axes"], e["reference"], e.get("reference_from", []), strict=False)}
    if not axes:
        return []
    return ["Reference point (the worst value seen on each axis over the points that have every axis, which fixes "
            "every hypervolume's scale): "
            + "; ".join(f"`{m}` {format_value(v)} ({name})" for m, (v, name) in axes.items()) + ".", ""]


def _steered_table(summary: list[dict]) -> list[str]:
    lines = ["| axes | UPO front (grid) | UPO steered front | HV UPO (grid) | HV UPO steered | HV steered / grid "
             "| 95% | on their own scale | 95% |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {_axes(e)} | {', '.join(e['upo_front'])} | {', '.join(e['steered_front'])} | {_cell(e['hv_upo'])} "
              f"| {_cell(e['hv_steered'])} | {_cell(e['hv_ratio_steered'])} "
              f"| {_interval(e.get('hv_ratio_steered_interval'))} | {_cell(e.get('hv_ratio_steered_own'))} "
              f"| {_interval(e.get('hv_ratio_steered_own_interval'))} |" for e in summary]
    return lines


def _compute_table(compute: dict[str, dict]) -> list[str]:
    """UPO (grid) and UPO steered: training runs, steps, tokens, wall time, and steered / grid."""
    def cells(c: dict) -> str:
        tokens = "" if c["tokens"] is None else f"{c['tokens']:,.0f}"
        return f"{c['runs']} | {c['steps']:,.0f} | {tokens} | {c['seconds'] / 60:.1f} min"

    lines = ["| group | training runs | optimizer steps | tokens | wall time of the steps |", "|---|---|---|---|---|"]
    lines += [f"| {label} | {cells(compute[g])} |" for g, label in (("upo", "UPO (grid)"), ("steered", "UPO steered"))
              if g in compute]
    if "upo" in compute and "steered" in compute:
        grid, steered = compute["upo"], compute["steered"]
        ratio = {k: None if grid[k] in (None, 0) or steered[k] is None else steered[k] / grid[k]
                 for k in ("steps", "tokens", "seconds")}
        lines.append("| steered / grid | | " + " | ".join(_cell(ratio[k]) for k in ("steps", "tokens", "seconds")) + " |")
    return lines


def _verdict_table(summary: list[dict]) -> list[str]:
    lines = ["| axes | UPO point | draws beyond the front | draws behind it | most often better than each "
             "preference-only point on (share of draws) | at 95% |", "|---|---|---|---|---|---|"]
    for e in summary:
        lines += [f"| {_axes(e)} | {v['name']} | {v['share_beyond']:.3f} | {v['share_behind']:.3f} | "
                  + "; ".join(f"{a['preference']}: {a['axis']} {a['share']:.3f}" for a in v.get("against", []))
                  + f" | **{v['verdict']}** |" for v in e.get("upo_verdicts", [])]
    return lines


def _comparison_table(comparisons: list[dict]) -> list[str]:
    lines = ["| UPO point | preference-only point | metric | UPO - pref | 95% interval | better |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {c['upo']} | {c['preference']} | {c['metric']} {ARROWS[direction(c['metric'])].split(' ')[0]}".rstrip()
              + f" | {format_value(c['difference'])} | {_interval((c['low'], c['high']))} | {c['better']} |"
              for c in comparisons]
    return lines


def _equal_length_table(comparisons: list[dict]) -> list[str]:
    lines = ["| UPO point | preference-only point | metric | UPO - pref at equal length | 95% interval | better "
             "| UPO's generations at shared lengths | pref's | effective generations a side "
             "| UPO's words / pref's within bins |", "|---|---|---|---|---|---|---|---|---|---|"]
    return lines + [f"| {c['upo']} | {c['preference']} | {equal_length_cells(c, new='upo', old='preference')} |"
                    for c in comparisons]


def _claims_table(result: dict) -> list[str]:
    """The sweep's questions (`upo.frontier.claims`), each answered from the paired difference and again
    at equal length."""
    def cells(answer: dict | None, missing: str = "") -> str:
        if answer is None:
            return f" | {missing} | "
        bounds = "" if answer["answer"] == "no interval" else _interval((answer["low"], answer["high"]))
        worst = f" ({format_value(answer['worst'])} not ruled out)" if "worst" in answer else ""
        return f"{format_value(answer['difference'])} | {bounds} | **{answer['answer']}**{worst}"

    rows = claims(result)
    lines = ["| UPO point | question | against | UPO - other | 95% interval | answer | at equal length | 95% interval "
             "| answer |", "|---|---|---|---|---|---|---|---|---|"]
    for c in rows:
        against = c["against"] + (" (its term)" if c["own_term"] else "")
        missing = "no shared length" if c.get("equal_length_compared") else "not compared"
        if "term_missing" in c:
            answers = " | not among the points | not asked |  |  | "
        elif "front" in c:
            answers = f" |  | **{c['front']}** |  |  | "
        else:
            answers = f"{cells(c['raw'], 'not computed')} | {cells(c['equal_length'], missing)}"
        lines.append(f"| {c['upo']} | {c['question']} | {against} | {answers} |")
    return lines + ["", CLAIMS] if rows else []


def _value(row: dict, metric: str) -> str:
    """The point's value with its interval, when it has one."""
    interval = row.get("intervals", {}).get(metric)
    return _cell(row["metrics"].get(metric)) + (f" {_interval(interval)}" if interval else "")


def _failure_line(failure: dict) -> str:
    """- NAME[ (seed S)]: the error[ (its traceback's file)]."""
    seed = "" if failure.get("seed") is None else f" (seed {failure['seed']})"
    where = f" (traceback: {failure['traceback']})" if failure.get("traceback") else ""
    return f"- {failure['name']}{seed}: {failure['error']}{where}"


def format_report(result: dict, plots: dict[str, str]) -> str:
    """report.md from frontier.json's dict and {aux metric: PNG file name}."""
    pref, aux = result["preference_metric"], result["aux_metrics"]
    shown = [pref, *aux, "length/words_ratio", *(["length/cut"] if any("length/cut" in r["metrics"] for r in result["points"])
                                                 else [])]
    s = result["eval_settings"]
    seeds = result.get("seeds")
    partial = bool(seeds) and any(len(r.get("runs", [])) != len(seeds) for r in result["points"])
    runs = ("one run per point" if not seeds else
            f"each point the mean over its finished runs of seeds {', '.join(map(str, seeds))} (named beside it)"
            if partial else f"each point trained and generated with seeds {', '.join(map(str, seeds))} (values: the mean)")
    lines = [
        f"# UPO frontier: `{result['sweep']}`" + (" (quick)" if result["quick"] else ""),
        "",
        f"{len(result['points'])} points evaluated on the first {s['prompts']} held-out rows of `{s['data']}` "
        f"({s['max_new_tokens']} new tokens at most, judge: {s['judge'] or 'none'}). Preference metric: "
        f"`{pref}`; auxiliary metrics: {', '.join(f'`{m}`' for m in aux)}; {runs}; 95% intervals in brackets. "
        "All metrics of every point are in frontier.csv and frontier.json, each run's in its eval.json"
        + (f" in its folder under `{result['points_dir']}`." if result.get("points_dir") else "."),
        "",
        *(f"**Warning**: {w}\n" for w in result["warnings"]),
        "## Points",
        "",
        "| point | group | method | aux_coef | " + " | ".join(f"{m} {ARROWS[direction(m)]}".strip() for m in shown) + " |",
        "|---|---|---|---|" + "---|" * len(shown),
    ]
    for r in result["points"]:
        name = r["name"] + (f" (seed {', '.join(str(run['seed']) for run in r['runs'])})" if partial else "")
        lines.append(f"| {name} | {r['group']} | {r['method']} | {_cell(r['aux_coef'])} | "
                     + " | ".join(_value(r, m) for m in shown) + " |")
    lines += ["", "## Fronts", ""]
    for metric, png in plots.items():
        lines += [f"![{pref} vs {metric}]({png})", ""]
    has_preference = any(r["group"] == "preference" for r in result["points"])
    if has_preference:
        lines += ["## How far UPO lies beyond the preference-only front", "", *_summary_table(result["summary"]), "",
                  *_reference_lines(result["summary"])]
    else:  # e.g. the steered sweep, whose KTO run is its grid's aux_coef 0 point
        lines += ["## How far UPO lies beyond the preference-only front", "",
                  "No preference-only point in this sweep: nothing to compare UPO against.", "",
                  *_reference_lines(result["summary"])]
    if any(e.get("upo_verdicts") for e in result["summary"]):
        lines += ["### Each UPO point against the preference-only front", "", *_verdict_table(result["summary"]), ""]
    answers = _claims_table(result) if has_preference else []  # every question is asked against preference-only points
    if answers:
        lines += ["### What the sweep answers, at 95%", "", *answers, ""]
    if result.get("comparisons"):
        lines += ["### Paired differences: UPO - preference-only", "", *_comparison_table(result["comparisons"]), ""]
    if result.get("comparisons_at_equal_length"):
        lines += ["### At equal length: UPO - preference-only", "", EQUAL_LENGTH,
                  "", *_equal_length_table(result["comparisons_at_equal_length"]), ""]
    if any(e.get("hv_steered") is not None for e in result["summary"]):
        lines += ["## UPO steered (one run) against UPO trained at each aux_coef", "", *_steered_table(result["summary"]),
                  "", "Training compute per seed:", "", *_compute_table(result.get("compute", {})), ""]
    settings = result["interval_settings"]
    lines += [DEFINITIONS.format(confidence=settings["confidence"], resamples=settings["bootstrap_resamples"],
                                 seed=settings["bootstrap_seed"], alpha=1 - settings["confidence"])]
    if result["failed"]:
        lines += ["## Points that failed", "", *map(_failure_line, result["failed"]), ""]
    return "\n".join(lines)
