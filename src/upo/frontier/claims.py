"""The questions a UPO frontier is run to answer, each answered at 95% from the report's intervals.

For each UPO point U, with T its preference term (the preference-only point of the method in U's
`pref_loss`, when the sweep has one):

- for each auxiliary metric m and each preference-only point Q (T first): is U better than Q on m?
- on the preference metric: is U not worse than T? (UPO's auxiliary term should cost no preference)
- is U beyond the preference-only front on all axes at once (the level-5% test of `uncertainty`)?

Each comparison is answered from the paired difference U - Q and again from the same at equal length
(`uncertainty.equal_length_comparisons`): "yes" when the interval lies on the asked side of 0, "no"
when it lies on the other, "not shown" when it holds 0. "Not worse" cannot be shown without a margin:
there "no" when the interval lies on the worse side, "yes" when on the better side, and "no loss
shown" when it holds 0, with its end on the worse side ("worst": the largest loss the data do not
rule out). An interval that could not be computed answers "no interval". The front question answers
"yes" for beyond, "no" for behind, "not shown" for not distinguishable.

No question disappears: a comparison the result lacks (a metric without draws, a point without
per-prompt values) is a row whose raw answer is None ("computed": False), a front test that did not
run is the front answer "not computed", and a UPO point whose preference term is not among the points
(not in the sweep, or not finished yet) has a row saying so ("term_missing") in place of its
term's questions.
"""

from __future__ import annotations

from upo.evaluation.metrics import direction

ANSWER_OF_VERDICT = {"beyond": "yes", "behind": "no", "not distinguishable": "not shown"}


def _answer(comparison: dict | None, upo: str, other: str, not_worse: bool) -> dict | None:
    """{difference, low, high, answer} of one comparison (None when there is none, or no shared lengths)."""
    if comparison is None or comparison["difference"] is None:
        return None
    held = "no loss shown" if not_worse else "not shown"
    answer = {upo: "yes", other: "no", "neither": held}.get(comparison["better"], "no interval")
    out = {"difference": comparison["difference"], "low": comparison["low"], "high": comparison["high"],
           "answer": answer}
    if answer == "no loss shown":  # the worse side's end: a loss this large is not ruled out
        out["worst"] = comparison["low"] if direction(comparison["metric"]) == "max" else comparison["high"]
    return out


def _question(metric: str, not_worse: bool) -> str:
    side = {"max": "higher", "min": "lower"}[direction(metric)]
    worse = {"max": "lower", "min": "higher"}[direction(metric)]
    return f"`{metric}` not {worse}" if not_worse else f"`{metric}` {side}"


def claims(result: dict) -> list[dict]:
    """One row per (UPO point, question, other point) of frontier.json's dict `result` (see the
    module docstring): {"upo", "question", "against", "own_term", "raw", "equal_length",
    "equal_length_compared", "computed"}, raw and equal_length {difference, low, high, answer[, worst]}
    or None (raw: not computed; at equal length: no shared lengths, or not compared); the front question
    has "front" (the answer) instead, and a missing term "term_missing" (its method)."""
    rows = {r["name"]: r for r in result["points"]}
    raw = {(c["upo"], c["preference"], c["metric"]): c for c in result.get("comparisons", [])}
    matched = {(c["upo"], c["preference"], c["metric"]): c for c in result.get("comparisons_at_equal_length", [])}
    preference = [r["name"] for r in result["points"] if r["group"] == "preference"]
    all_axes = next((e for e in reversed(result["summary"]) if len(e["axes"]) == 1 + len(result["aux_metrics"])), None)
    front = {v["name"]: v for v in (all_axes or {}).get("upo_verdicts", [])}
    out: list[dict] = []
    for u in (r["name"] for r in result["points"] if r["group"] == "upo"):
        # its term: the preference-only points of the method in its pref_loss (none: not asked)
        terms = [q for q in preference if rows[u].get("pref_loss") and rows[q]["method"] == rows[u]["pref_loss"]]
        others = terms + [q for q in preference if q not in terms]
        questions = [(m, q, False) for m in result["aux_metrics"] for q in others]
        questions += [(result["preference_metric"], q, True) for q in terms]
        if rows[u].get("pref_loss") and not terms:
            out.append({"upo": u, "question": "against its preference term", "against": rows[u]["pref_loss"],
                        "own_term": True, "term_missing": rows[u]["pref_loss"]})
        for metric, q, not_worse in questions:
            key = (u, q, metric)
            out.append({"upo": u, "question": _question(metric, not_worse), "against": q, "own_term": q in terms,
                        "raw": _answer(raw.get(key), u, q, not_worse),
                        "equal_length": _answer(matched.get(key), u, q, not_worse),
                        "equal_length_compared": key in matched, "computed": key in raw})
        verdict = front.get(u)
        out.append({"upo": u, "question": "beyond the preference-only front on all axes",
                    "against": ", ".join(a["preference"] for a in (verdict or {}).get("against", [])) or ", ".join(preference),
                    "own_term": False, "front": ANSWER_OF_VERDICT[verdict["verdict"]] if verdict else "not computed"})
    return out
