"""eval.md: one evaluation as a Markdown table, each metric with its 95% interval and better direction."""

from __future__ import annotations

ARROWS = {"max": "↑ higher", "min": "↓ lower", None: ""}

# the order of sections in the table, by metric-name prefix
SECTIONS = ("judge/", "rewards/", "logps/", "safety/", "toxicity/", "readability/", "reading_ease/", "profanity/",
            "sentiment/", "relevance/", "scorer/", "length/")


def metric_order(metric: str) -> tuple[int, str]:
    rank = next((i for i, prefix in enumerate(SECTIONS) if metric.startswith(prefix)), len(SECTIONS))
    return rank, metric


def format_value(value: float) -> str:
    return f"{value:.4g}"


def format_interval(interval: dict | None) -> str:
    return "" if interval is None else f"[{format_value(interval['low'])}, {format_value(interval['high'])}]"


def interval_note(settings: dict) -> str:
    """How the intervals were computed, in words."""
    return (f"Intervals: {settings['confidence']:.0%}; `wilson` = Wilson score interval of a rate of 0/1 outcomes "
            f"(one generation per prompt, or a pair ranked right or not); `bootstrap` = percentile bootstrap "
            f"over the prompts (their mean over samples) or the pairs, {settings['bootstrap_resamples']} resamples, "
            f"seed {settings['bootstrap_seed']}.")


def format_eval(result: dict) -> str:
    """The table of an eval.json dict (its metrics, intervals, directions, counts and settings)."""
    s, counts = result["settings"], result["counts"]
    judge = s["judge"] or "none"
    if s["judge"] == "llm":
        orders = ", both orders" if s["judge_both_orders"] else ""
        judge += f" `{s['judge_model']}` ({s['judge_preset']} preset{orders}, seed {s['judge_seed']})"
    lines = [
        f"# upo eval: {result['model']}",
        "",
        f"{counts['generations']} generations ({s['samples']} per prompt) for {counts['prompts']} held-out prompts "
        f"of `{result['data']}`; up to {s['max_new_tokens']} new tokens, "
        + (f"temperature {s['temperature']}, top_p {s['top_p']}" if s["do_sample"] else "greedy")
        + f", seed {s['seed']}. Judge: {judge}. Implicit rewards: "
        + (f"reference `{s['ref_model']}`, beta {s['beta']}." if s["ref_model"] else "no reference model given."),
        "",
        "| metric | value | 95% interval | interval method | better |",
        "|---|---|---|---|---|",
    ]
    for metric in sorted(result["metrics"], key=metric_order):
        interval = result["intervals"].get(metric)
        lines.append(f"| {metric} | {format_value(result['metrics'][metric])} | {format_interval(interval)} "
                     f"| {interval['method'] if interval else ''} | {ARROWS[result['directions'][metric]]} |")
    return "\n".join([*lines, "", interval_note(result["interval_settings"])])
