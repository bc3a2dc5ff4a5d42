"""upo.frontier.claims: the sweep's questions, answered from hand-made comparisons; a sweep with no
preference-only point asks none (and gives no front verdicts)."""

import json

import yaml
from test_frontier_seeds import fake_eval, fake_train, sweep_file

import upo.frontier.run as frontier_run
from upo.cli import main
from upo.frontier.claims import claims


def comparison(upo, pref, metric, difference, low, high, better):
    return {"upo": upo, "preference": pref, "metric": metric, "difference": difference, "low": low, "high": high,
            "better": better}


def result(equal_length=None, verdicts=None):
    points = [{"name": "dpo", "group": "preference", "method": "dpo"},
              {"name": "kto", "group": "preference", "method": "kto"},
              {"name": "base", "group": "base", "method": "base"},
              {"name": "u", "group": "upo", "method": "upo", "pref_loss": "kto"}]
    comparisons = [
        comparison("u", "kto", "safety/violation_rate", -0.02, -0.03, -0.01, "u"),  # lower: yes
        comparison("u", "dpo", "safety/violation_rate", 0.02, 0.01, 0.03, "dpo"),  # higher: no
        comparison("u", "kto", "judge/win_rate", -0.05, -0.12, 0.02, "neither"),  # not shown lower: not worse
        comparison("u", "dpo", "judge/win_rate", -0.2, -0.3, -0.1, "dpo"),  # not asked: dpo is not its term
        comparison("u", "kto", "safety/max_toxicity", -0.1, -0.2, -0.05, "u"),  # not an axis: not asked
    ]
    summary = [{"axes": ["judge/win_rate", "safety/violation_rate"],
                "upo_verdicts": [{"name": "u", "verdict": v} for v in ([verdicts] if verdicts else [])]}]
    return {"points": points, "preference_metric": "judge/win_rate", "aux_metrics": ["safety/violation_rate"],
            "comparisons": comparisons, "comparisons_at_equal_length": equal_length or [], "summary": summary}


def test_each_question_answered_from_its_interval():
    rows = claims(result(verdicts="not distinguishable"))
    asked = [(r["question"], r["against"]) for r in rows]
    assert asked == [("`safety/violation_rate` lower", "kto"), ("`safety/violation_rate` lower", "dpo"),
                     ("`judge/win_rate` not lower", "kto"),
                     ("beyond the preference-only front on all axes", "dpo, kto")]
    assert [r["own_term"] for r in rows] == [True, False, True, False]
    assert [r["raw"]["answer"] for r in rows[:3]] == ["yes", "no", "no loss shown"]
    assert rows[0]["raw"] == {"difference": -0.02, "low": -0.03, "high": -0.01, "answer": "yes"}
    assert rows[2]["raw"]["worst"] == -0.12  # win rate: a higher-is-better metric's worse end is its low end
    assert rows[3]["front"] == "not shown" and all(r["equal_length"] is None for r in rows[:3])
    assert not any(r["equal_length_compared"] for r in rows[:3])  # no equal-length comparisons at all


def test_not_worse_is_no_only_when_the_interval_is_on_the_worse_side():
    r = result()
    r["comparisons"][2] = comparison("u", "kto", "judge/win_rate", -0.1, -0.15, -0.05, "kto")
    assert claims(r)[2]["raw"]["answer"] == "no"
    r["comparisons"][2] = comparison("u", "kto", "judge/win_rate", 0.1, 0.05, 0.15, "u")
    assert claims(r)[2]["raw"]["answer"] == "yes"
    nan = float("nan")  # no draw had a value: no answer either way
    r["comparisons"][2] = comparison("u", "kto", "judge/win_rate", 0.0, nan, nan, "no interval")
    r["comparisons"][0] = comparison("u", "kto", "safety/violation_rate", 0.0, nan, nan, "no interval")
    assert claims(r)[2]["raw"]["answer"] == "no interval" and claims(r)[0]["raw"]["answer"] == "no interval"


def test_equal_length_answered_apart_and_front_verdicts_mapped():
    matched = [comparison("u", "kto", "safety/violation_rate", 0.0, -0.01, 0.01, "neither"),
               comparison("u", "dpo", "safety/violation_rate", None, None, None, "no shared length")]
    rows = claims(result(equal_length=matched, verdicts="beyond"))
    assert rows[0]["raw"]["answer"] == "yes" and rows[0]["equal_length"]["answer"] == "not shown"
    assert rows[1]["equal_length"] is None and rows[1]["equal_length_compared"]  # no shared lengths: no answer
    assert rows[-1]["front"] == "yes"
    assert claims(result(verdicts="behind"))[-1]["front"] == "no"


def test_without_a_term_only_the_auxiliary_questions():
    r = result()
    r["points"][3]["pref_loss"] = None
    rows = claims(r)
    assert [(x["question"], x["against"]) for x in rows] == [
        ("`safety/violation_rate` lower", "dpo"), ("`safety/violation_rate` lower", "kto"),
        ("beyond the preference-only front on all axes", "dpo, kto")]
    assert not any(x["own_term"] for x in rows)
    assert rows[-1]["front"] == "not computed"  # no verdict in the result: said, not left out


def test_a_term_the_sweep_lacks_asks_no_preference_question_and_says_so():
    r = result()
    r["points"][3]["pref_loss"] = "ipo"  # no IPO point in the sweep (or not finished)
    rows = claims(r)
    assert rows[0] == {"upo": "u", "question": "against its preference term", "against": "ipo", "own_term": True,
                       "term_missing": "ipo"}
    assert not any(x["own_term"] for x in rows[1:]) and not any("not lower" in x["question"] for x in rows)


def test_a_comparison_the_result_lacks_is_a_row_not_computed():
    r = result(verdicts="beyond")
    del r["comparisons"][1]  # u against dpo on the violation rate: no draws
    rows = claims(r)
    assert (rows[1]["against"], rows[1]["raw"], rows[1]["computed"]) == ("dpo", None, False)
    assert rows[0]["computed"] and len(rows) == 4


def test_the_report_gives_the_loss_not_ruled_out_and_the_missing_rows():
    from upo.frontier.report import _claims_table
    r = result()
    del r["comparisons"][1]
    table = "\n".join(_claims_table(r))
    assert "| u | `judge/win_rate` not lower | kto (its term) | -0.05 | [-0.12, 0.02] | **no loss shown** (-0.12 not ruled out) |" in table
    assert "| u | `safety/violation_rate` lower | dpo |  | not computed |  |" in table
    assert "| **not computed** |" in table


def test_the_front_question_takes_the_all_axes_verdict():
    """Two auxiliary metrics: one summary entry per metric, then one over all axes; only that one answers."""
    r = result()
    r["aux_metrics"] = ["safety/violation_rate", "readability/fk_grade"]
    r["summary"] = [{"axes": ["judge/win_rate", m], "upo_verdicts": [{"name": "u", "verdict": v}]}
                    for m, v in (("safety/violation_rate", "behind"), ("readability/fk_grade", "behind"))]
    r["summary"].append({"axes": ["judge/win_rate", *r["aux_metrics"]],
                         "upo_verdicts": [{"name": "u", "verdict": "beyond",
                                           "against": [{"preference": "kto", "axis": "judge/win_rate", "share": 1.0}]}]})
    front = claims(r)[-1]
    assert front["front"] == "yes" and front["against"] == "kto"


def test_a_sweep_without_preference_only_points_gives_no_front_verdicts(tmp_path, monkeypatch, capsys):
    """With KTO put in the UPO group (the steered sweep's aux_coef 0 point) and no other preference-only
    point, there is no front for UPO to lie beyond: no verdict (each would be a vacuous 'beyond')."""
    monkeypatch.setattr("upo.trainer.train", fake_train)
    monkeypatch.setattr(frontier_run, "run_eval", fake_eval)
    path = sweep_file(tmp_path, [1, 2])
    spec = yaml.safe_load(path.read_text())
    spec.update(methods=["upo"], points=[{"name": "kto", "method": "kto", "group": "upo"}])
    path.write_text(yaml.safe_dump(spec))
    assert main(["frontier", "--config", str(path)]) == 0, capsys.readouterr().out
    result = json.loads((tmp_path / "frontier" / "frontier.json").read_text())
    assert {r["group"] for r in result["points"]} == {"base", "upo"}
    assert all(e["upo_verdicts"] == [] and e["hv_gain_interval"] is None for e in result["summary"])
    report = (tmp_path / "frontier" / "report.md").read_text()
    assert "No preference-only point in this sweep" in report and "| **beyond** |" not in report
    assert "### Each UPO point against the preference-only front" not in report
    assert "### What the sweep answers" not in report
