"""`upo compare A B`: two evaluations of the same prompts, metric by metric, with paired intervals.

For every metric both eval.json files hold per-unit values of (`upo.evaluation.intervals`): the
means of A and B, the difference B - A, and its 95% percentile bootstrap interval, each resample
drawing the same units (prompts, or held-out pairs) for both sides (`upo.stats`). An interval that
excludes 0 says that the difference is larger than the choice of prompts explains; it says nothing
about training seeds (a frontier with `seeds:` resamples those too).

The prompts must be the same rows in the same order (the same data, split and `prompts`), else it
is an error; held-out pairs are compared on the pairs both evaluations scored.

When both hold response lengths, each per-prompt metric (lengths aside) is also compared at equal
length (`upo.evaluation.length_matched`): a lower reading grade or a higher win rate can come from
answering shorter, and this difference is adjusted for length (as far as bins and a within-bin
slope on log length capture it).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from upo.evaluation.config import output_paths
from upo.evaluation.intervals import INTERVAL_SETTINGS, UNIT_KINDS, compact_json, units_of
from upo.evaluation.length_matched import length_matched_difference
from upo.evaluation.metrics import direction
from upo.evaluation.rejudge import mixed_judges_warning
from upo.evaluation.report import ARROWS, format_value, metric_order
from upo.stats import CONFIDENCE, RESAMPLES, paired_difference_draws, percentile_interval

UNIT_NAMES = {"per_prompt": "prompts", "per_pair": "pairs"}
LENGTH = "length/words"  # the per-prompt response length that comparisons at equal length bin by


# Settings that change what a metric measures: two evaluations that differ in one are not paired
# measurements of the same thing (the judge, the reference of the implicit rewards, the sampling).
# The model, the seeds and the batch sizes may differ; different data or prompts are an error (`align`).
MEASUREMENT_SETTINGS = ("judge", "judge_model", "judge_base_url", "judge_preset", "judge_both_orders", "judge_seed",
                        "judge_max_length", "ref_model", "beta", "violation_threshold", "max_new_tokens", "do_sample",
                        "temperature", "top_p", "samples", "max_length", "max_prompt_length")


def eval_file(path: str | Path) -> Path:
    """The eval.json of an eval folder, or `path` itself."""
    path = Path(path)
    return path / "eval.json" if path.is_dir() else path


def load_eval(path: str | Path) -> dict:
    """The eval.json dict of an eval folder or of a .json file; a ValueError naming the file when it
    is not one `upo eval` wrote (not JSON, or per-unit sections of another shape)."""
    file = eval_file(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no eval.json (give an `upo eval` output folder or its .json file)")
    try:
        result = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not an eval.json of `upo eval` (not JSON: {e})") from None
    if not isinstance(result, dict):
        raise ValueError(f"{file}: not an eval.json of `upo eval` (a JSON {type(result).__name__}, not an object)")
    for kind in UNIT_KINDS:
        check_units(file, kind, result.get(kind))
    if not units_of(result):
        raise ValueError(f"{file} has no per-prompt values (written by an older upo eval): evaluate again")
    return result


def check_units(file: Path, kind: str, section) -> None:
    """A ValueError naming `file` and the field unless `section` is absent or {"ids": [n], "values":
    {metric: [n numbers or nulls]}}."""
    if section is None:
        return
    ids, values = (section.get("ids"), section.get("values")) if isinstance(section, dict) else (None, None)
    if not isinstance(ids, list) or not isinstance(values, dict):
        raise ValueError(f"{file}: {kind} must hold a list `ids` and a mapping `values`, as `upo eval` writes it")
    for metric, v in values.items():
        if not isinstance(v, list) or len(v) != len(ids) or not all(
                x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)) for x in v):
            raise ValueError(f"{file}: {kind}.values.{metric} must be {len(ids)} numbers or nulls, one per id")


def evaluation_files(side: str | Path) -> set[Path]:
    """The files `upo eval` wrote for a side given as its folder or its .json (`output_paths`)."""
    path = Path(side)
    return set(output_paths(str(path))) if path.is_dir() or path.suffix == ".json" else {path}


def setting_differences(a: dict, b: dict) -> list[str]:
    """"key: A's vs B's" for each of `MEASUREMENT_SETTINGS` the two eval.json dicts recorded
    differently; the reference and beta only where both have a reference (each records its model's
    own beta, which without one measures nothing)."""
    sa, sb = a.get("settings") or {}, b.get("settings") or {}
    both_referenced = bool(sa.get("ref_model")) and bool(sb.get("ref_model"))
    return [f"{k}: {sa.get(k)!r} vs {sb.get(k)!r}" for k in MEASUREMENT_SETTINGS
            if k in sa and k in sb and sa[k] != sb[k] and (both_referenced or k not in ("ref_model", "beta"))]


def align(kind: str, ids_a: list[str], ids_b: list[str]) -> tuple[list[int], list[int]]:
    """Positions in A and in B of the units they share, in A's order. Prompts must be the same list."""
    if ids_a == ids_b:
        return list(range(len(ids_a))), list(range(len(ids_b)))
    if kind == "per_prompt":
        first = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=False)) if x != y), min(len(ids_a), len(ids_b)))
        raise ValueError(f"the two evaluations are not on the same prompts ({len(ids_a)} and {len(ids_b)} prompts, "
                         f"first difference at prompt {first}): evaluate both on the same data, split and number "
                         "of prompts")
    where_b = {u: i for i, u in reversed(list(enumerate(ids_b)))}
    shared = [(i, where_b[u]) for i, u in enumerate(ids_a) if u in where_b]
    return [i for i, _ in shared], [j for _, j in shared]


def verdict(metric: str, low: float, high: float) -> str:
    """Which side the interval of B - A favours: "A", "B", "neither" (it holds 0), or for a metric
    without a better direction "higher in B" / "lower in B" / "neither"; "no interval" when a bound is
    not a number (no draw had a value)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "no interval"
    if low <= 0 <= high:
        return "neither"
    better = direction(metric)
    if better is None:
        return "higher in B" if low > 0 else "lower in B"
    return "B" if (low > 0) == (better == "max") else "A"


def difference_row(metric: str, units: str, a, b, confidence: float = CONFIDENCE) -> dict:
    """The comparison of one metric from per-unit values a [k_a, n] and b [k_b, n] (or [n]). "n": the
    units; "n_a", "n_b": those with a value on each side (NaN: a prompt without an llm-judge verdict),
    each side's mean being over its own."""
    low, high = percentile_interval(paired_difference_draws(a, b), confidence)
    mean_a, mean_b = float(np.nanmean(a)), float(np.nanmean(b))
    n_a, n_b = (int(np.any(np.isfinite(np.atleast_2d(x)), axis=0).sum()) for x in (a, b))
    return {"metric": metric, "units": units, "n": int(np.shape(a)[-1]), "n_a": n_a, "n_b": n_b, "a": mean_a, "b": mean_b,
            "difference": mean_b - mean_a, "low": low, "high": high, "excludes_zero": bool(low > 0 or high < 0),
            "better": verdict(metric, low, high)}


def equal_length_row(metric: str, a, a_words, b, b_words) -> dict:
    """The length-matched comparison of one metric: the difference B - A at equal length, its interval,
    the side it favours, and the shares of A's and B's generations at lengths both have."""
    matched = length_matched_difference(a, a_words, b, b_words)
    side = "no shared length" if matched["difference"] is None else verdict(metric, matched["low"], matched["high"])
    return {"metric": metric, **matched, "better": side}


def equal_length_rows(a: dict, b: dict) -> list[dict]:
    """One row per per-prompt metric both eval.json dicts hold (lengths aside), at equal length; none
    without per-prompt lengths on both sides."""
    units_a, units_b = units_of(a), units_of(b)
    if "per_prompt" not in units_a or "per_prompt" not in units_b:
        return []
    (ids_a, values_a), (ids_b, values_b) = units_a["per_prompt"], units_b["per_prompt"]
    if LENGTH not in values_a or LENGTH not in values_b:
        return []
    pos_a, pos_b = align("per_prompt", ids_a, ids_b)
    return [equal_length_row(m, values_a[m][pos_a], values_a[LENGTH][pos_a], values_b[m][pos_b], values_b[LENGTH][pos_b])
            for m in sorted(values_a.keys() & values_b.keys(), key=metric_order) if not m.startswith("length/")]


def format_equal_length(rows: list[dict], units: str = "generations") -> list[str]:
    """The Markdown table of `equal_length_rows`; `units`: what is binned by length ("prompts" when
    an evaluation drew several samples a prompt: each prompt's mean length and value)."""
    lines = [f"| metric | B - A at equal length | 95% interval | better | B's {units} at shared lengths | A's "
             f"| effective {units} a side | B's words / A's within bins |", "|---|---|---|---|---|---|---|---|"]
    return lines + [f"| {equal_length_cells(r, new='b', old='a')} |" for r in rows]


def equal_length_cells(row: dict, new: str, old: str) -> str:
    """A length-matched comparison's Markdown cells from its metric on (difference, interval, better,
    both sides' overlap, effective generations, the words ratio within the shared bins), for a row of `equal_length_row` whose sides' keys end
    in `new` (the side the difference is of: `overlap_<new>`, `n_<new>`) and `old` (subtracted)."""
    arrow = ARROWS[direction(row["metric"])].split(" ")[0]
    words = "" if row.get("length_gap") is None else f"{2 ** row['length_gap']:.2f}x"  # the gap adjusted for
    cells = ["", ""] if row["difference"] is None else \
        [format_value(row["difference"]), f"[{format_value(row['low'])}, {format_value(row['high'])}]"]
    if row["difference"] is not None and row.get("draws", RESAMPLES) < RESAMPLES:  # draws without a shared bin
        cells[1] += f" ({row['draws']} of {RESAMPLES} draws)"
    return (f"{row['metric']} {arrow}".rstrip() + f" | {cells[0]} | {cells[1]} | {row['better']} "
            f"| {row[f'overlap_{new}']:.0%} | {row[f'overlap_{old}']:.0%} "
            f"| {effective_cell(row['effective_n'], row[f'n_{old}'], row[f'n_{new}'])} | {words}")


def effective_cell(effective_n: float, n_a: int, n_b: int) -> str:
    """"E of M": the comparison's effective generations a side, of the most its sizes allow (every
    generation at lengths both share: 2 n_a n_b / (n_a + n_b))."""
    most = 2 * n_a * n_b / (n_a + n_b) if n_a + n_b else 0.0
    return f"{effective_n:.0f} of {most:.0f}"


def compare_results(a: dict, b: dict) -> list[dict]:
    """One row per metric that both eval.json dicts hold per-unit values of (see the module docstring)."""
    units_a, units_b = units_of(a), units_of(b)
    rows = []
    for kind in UNIT_KINDS:
        if kind not in units_a or kind not in units_b:
            continue
        (ids_a, values_a), (ids_b, values_b) = units_a[kind], units_b[kind]
        pos_a, pos_b = align(kind, ids_a, ids_b)
        if not pos_a:
            continue
        for metric in sorted(values_a.keys() & values_b.keys(), key=metric_order):
            rows.append(difference_row(metric, UNIT_NAMES[kind], values_a[metric][pos_a], values_b[metric][pos_b]))
    return rows


def format_comparison(name_a: str, name_b: str, rows: list[dict], warnings: list[str] = ()) -> str:
    lines = [
        f"# upo compare: A = `{name_a}`, B = `{name_b}`",
        "",
        *(f"**Warning**: {w}.\n" for w in warnings),
        f"Difference B - A of each metric with its {CONFIDENCE:.0%} paired bootstrap interval (the same resampled "
        f"prompts or pairs for A and B, {INTERVAL_SETTINGS['bootstrap_resamples']} resamples, seed "
        f"{INTERVAL_SETTINGS['bootstrap_seed']}). `better`: the side the interval favours; `neither` when it holds 0.",
        "",
        "| metric | units | A | B | B - A | 95% interval | better |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        arrow = ARROWS[direction(r["metric"])].split(" ")[0]
        lines.append(f"| {r['metric']} {arrow}".rstrip() + f" | {units_cell(r)} | {format_value(r['a'])} "
                     f"| {format_value(r['b'])} | {format_value(r['difference'])} "
                     f"| [{format_value(r['low'])}, {format_value(r['high'])}] | {r['better']} |")
    return "\n".join(lines)


def units_cell(row: dict) -> str:
    """"96 prompts", or with units that lack a value on a side "96 prompts (A 90, B 96 with a value)"."""
    cell = f"{row['n']} {row['units']}"
    n_a, n_b = row.get("n_a", row["n"]), row.get("n_b", row["n"])
    return cell if n_a == n_b == row["n"] else f"{cell} (A {n_a}, B {n_b} with a value)"


def output_files(output: str, a: str, b: str) -> tuple[Path, Path]:
    """(the JSON, the Markdown beside it) of `--output`; a ValueError for a folder, a .md path (the
    two would be one file) or a file of either evaluation (it would be overwritten)."""
    path = Path(output)
    md = path.with_suffix(".md")
    if path.is_dir():
        raise ValueError(f"--output {output}: a folder; give a file path, e.g. {path / 'comparison.json'}")
    if md == path:
        raise ValueError(f"--output {output}: the JSON goes there and the Markdown beside it, as .md: give a .json path")
    inputs = {f.resolve() for side in (a, b) for f in evaluation_files(side)}
    if path.resolve() in inputs or md.resolve() in inputs:
        raise ValueError(f"--output {output}: it would overwrite an evaluation being compared; write elsewhere")
    return path, md


def run_compare(a: str, b: str, output: str | None = None) -> str:
    """`upo compare`: the Markdown tables (returned); with `output` (a .json path) also the JSON, and
    the Markdown beside it (.md). Evaluations that differ in a setting of `MEASUREMENT_SETTINGS` are
    compared with a warning (printed, and in both outputs)."""
    files = output_files(output, a, b) if output else None
    result_a, result_b = load_eval(a), load_eval(b)
    rows, matched = compare_results(result_a, result_b), equal_length_rows(result_a, result_b)
    differences = setting_differences(result_a, result_b)
    warnings = [("the two evaluations differ in how they measure, so a difference may come from that and not "
                 "from the models: " + "; ".join(differences))] if differences else []
    warnings += [w for w in [mixed_judges_warning([result_a, result_b])] if w]
    for warning in warnings:
        print(f"upo compare: WARNING: {warning}", file=sys.stderr, flush=True)
    text = format_comparison(a, b, rows, warnings)
    if matched:
        several = any(((r.get("settings") or {}).get("samples") or 1) > 1 for r in (result_a, result_b))
        units = "prompts" if several else "generations"  # several samples: each prompt's means are binned
        text += ("\n\n## At equal length\n\nEach metric compared within bins of response length (word counts a "
                 "factor √2 apart), each bin's B - A adjusted for the two sides' gap in mean log length within it (the "
                 "metric's within-bin slope on log2 words times the gap), then averaged over the bins both have "
                 "generations in, each weighted by the inverse variance of its difference (n_A n_B / (n_A + n_B)). "
                 "Two columns say how much of each side those bins hold; the next, the size of two equal groups a "
                 "comparison of the same variance would take, of the most the two sizes allow (small: the difference "
                 "rests on few generations; not comparable at equal length); the last, B's words over A's within "
                 "the bins (geometric means), the gap adjusted for." + (" With several samples a prompt, the units "
                 "binned are prompts (each its samples' mean length and value)." if several else "") + "\n\n"
                 + "\n".join(format_equal_length(matched, units)))
    if files:
        path, md = files
        path.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(text + "\n")
        path.write_text(compact_json({"a": a, "b": b, **INTERVAL_SETTINGS, "setting_differences": differences,
                                      "metrics": rows, "at_equal_length": matched}) + "\n")
    return text
