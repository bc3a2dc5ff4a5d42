"""eval.md: one evaluation as a Markdown table, each metric with its better direction."""

from __future__ import annotations

ARROWS = {"max": "↑ higher", "min": "↓ lower", None: ""}

# the order of sections in the table, by metric-name prefix
SECTIONS = ("judge/", "rewards/", "logps/", "safety/", "toxicity/", "readability/", "reading_ease/", "profanity/",
            "sentiment/", "relevance/", "scorer/", "length/")


def _order(metric: str) -> tuple[int, str]:
    rank = next((i for i, prefix in enumerate(SECTIONS) if metric.startswith(prefix)), len(SECTIONS))
    return rank, metric


def format_value(value: float) -> str:
    return f"{value:.4g}"


def format_eval(result: dict) -> str:
    """The table of an eval.json dict (its metrics, directions, counts and settings)."""
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
        "| metric | value | better |",
        "|---|---|---|",
    ]
    for metric in sorted(result["metrics"], key=_order):
        lines.append(f"| {metric} | {format_value(result['metrics'][metric])} | {ARROWS[result['directions'][metric]]} |")
    return "\n".join(lines)
