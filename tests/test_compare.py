"""`upo compare`: paired differences of two evaluations on hand-made eval.json files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from upo.cli import main
from upo.evaluation.compare import align, compare_results, equal_length_rows, load_eval, units_cell, verdict
from upo.stats import bootstrap_interval, paired_difference_draws, percentile_interval

PROMPTS = ["p1", "p2", "p3", "p4"]


def evaluation(per_prompt: dict, pairs: dict | None = None, ids: list[str] = PROMPTS) -> dict:
    pair_ids, pair_values = pairs or ([], {})
    return {"metrics": {k: float(np.mean(v)) for k, v in per_prompt.items()},
            "per_prompt": {"ids": ids, "values": per_prompt},
            "per_pair": {"ids": pair_ids, "values": pair_values}}


A = evaluation({"judge/win_rate": [0.0, 0.5, 0.0, 0.5], "safety/violation_rate": [1.0, 0.0, 0.0, 0.0],
                "readability/fk_grade": [5.0, 9.0, 6.0, 8.0], "length/words_ratio": [1.0, 1.0, 1.0, 1.0]},
               (["x", "y", "z"], {"rewards/accuracies": [1.0, 0.0, 1.0]}))
B = evaluation({"judge/win_rate": [0.5, 1.0, 0.5, 1.0], "safety/violation_rate": [0.0, 0.0, 0.0, 0.0],
                "readability/fk_grade": [4.0, 8.0, 5.0, 7.0], "length/words_ratio": [2.0, 2.0, 2.0, 2.0]},
               (["z", "y"], {"rewards/accuracies": [1.0, 1.0]}))


def test_paired_difference_is_the_bootstrap_of_per_unit_differences():
    """One seed a side: resampling the units together = resampling the differences b - a. A constant
    shift is known exactly, however spread the values: the point of pairing."""
    a = np.array([0.0, 1.0, 0.0, 1.0, 1.0])
    b = np.array([1.0, 1.0, 0.0, 0.0, 1.0])
    assert percentile_interval(paired_difference_draws(a, b)) == bootstrap_interval(b - a)
    assert percentile_interval(paired_difference_draws(a, a + 0.5)) == pytest.approx((0.5, 0.5))
    with pytest.raises(ValueError, match="same units"):
        paired_difference_draws(a, b[:3])


def test_compare_hand_worked():
    rows = {r["metric"]: r for r in compare_results(A, B)}
    # win rate: +0.5 on every prompt -> exactly [0.5, 0.5], B better (higher is better)
    win = rows["judge/win_rate"]
    assert (win["a"], win["b"], win["difference"], win["low"], win["high"]) == pytest.approx((0.25, 0.75, 0.5, 0.5, 0.5))
    assert win["better"] == "B" and win["excludes_zero"] and win["units"] == "prompts" and win["n"] == 4
    # violations: differences (-1, 0, 0, 0): -k/4 with k ~ Binomial(4, 1/4): [-3/4, 0] holds 0
    viol = rows["safety/violation_rate"]
    assert (viol["difference"], viol["low"], viol["high"]) == pytest.approx((-0.25, -0.75, 0.0))
    assert viol["better"] == "neither" and not viol["excludes_zero"]
    # grade: -1 on every prompt, lower is better -> B; length has no better direction
    assert rows["readability/fk_grade"]["better"] == "B" and rows["readability/fk_grade"]["high"] == pytest.approx(-1.0)
    assert rows["length/words_ratio"]["better"] == "higher in B"
    # pairs: compared on the two both scored (y, z): A (0, 1), B (1, 1)
    acc = rows["rewards/accuracies"]
    assert (acc["units"], acc["n"], acc["a"], acc["b"]) == ("pairs", 2, 0.5, 1.0)
    # swapping the sides swaps the verdict
    assert {r["metric"]: r["better"] for r in compare_results(B, A)}["judge/win_rate"] == "A"


def test_compare_at_equal_length(tmp_path, capsys):
    """B's grade is 1.75 lower, but B answers shorter: within lengths (3 and 10 words) it is 9/14
    lower (test_length_matched.py works the same numbers)."""
    a = evaluation({"readability/fk_grade": [1.0, 1.0, 5.0, 5.0], "length/words": [3.0, 3.0, 10.0, 10.0],
                    "length/words_ratio": [1.0, 1.0, 2.0, 2.0]})
    b = evaluation({"readability/fk_grade": [0.0, 0.0, 0.0, 5.0], "length/words": [3.0, 3.0, 3.0, 10.0],
                    "length/words_ratio": [1.0, 1.0, 1.0, 2.0]})
    assert {r["metric"]: r for r in compare_results(a, b)}["readability/fk_grade"]["difference"] == -1.75
    [grade] = equal_length_rows(a, b)  # lengths themselves are not compared at equal length
    assert grade["metric"] == "readability/fk_grade" and grade["difference"] == pytest.approx(-9 / 14)
    assert grade["overlap_a"] == grade["overlap_b"] == 1.0
    assert equal_length_rows(A, B) == []  # no per-prompt lengths: nothing to match on
    for name, result in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps(result))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "c.json")]) == 0
    assert "## At equal length" in capsys.readouterr().out
    saved = json.loads((tmp_path / "c.json").read_text())["at_equal_length"]
    assert saved[0]["difference"] == pytest.approx(-9 / 14) and saved[0]["better"] in ("B", "neither")
    assert "| effective generations a side |" in (tmp_path / "c.md").read_text()
    for name, result in (("a", a), ("b", b)):  # several samples a prompt: prompts are what is binned
        (tmp_path / name / "eval.json").write_text(json.dumps({**result, "settings": {"samples": 3}}))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    table = capsys.readouterr().out
    assert "| B's prompts at shared lengths | A's | effective prompts a side |" in table


def test_compare_refuses_different_prompts():
    other = evaluation({"judge/win_rate": [1.0, 1.0, 1.0, 1.0]}, ids=["p1", "p2", "q3", "p4"])
    with pytest.raises(ValueError, match="not on the same prompts .*first difference at prompt 2"):
        compare_results(A, other)
    with pytest.raises(ValueError, match="4 and 3 prompts"):
        align("per_prompt", PROMPTS, PROMPTS[:3])
    assert align("per_pair", ["x", "y", "z"], ["z", "y"]) == ([1, 2], [1, 0])


def test_upo_compare_command(tmp_path, capsys):
    for name, result in (("a", A), ("b", B)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps(result))
    out = tmp_path / "cmp" / "a-vs-b.json"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b" / "eval.json"), "--output", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| judge/win_rate ↑ | 4 prompts | 0.25 | 0.75 | 0.5 | [0.5, 0.5] | B |" in table
    assert "| rewards/accuracies ↑ | 2 pairs | 0.5 | 1 | 0.5 | [0, 1] | neither |" in table
    saved = json.loads(out.read_text())
    assert saved["confidence"] == 0.95 and [r["metric"] for r in saved["metrics"]][0] == "judge/win_rate"
    assert out.with_suffix(".md").read_text().strip() == table.strip()

    old = tmp_path / "old.json"
    old.write_text(json.dumps({"metrics": {"judge/win_rate": 0.5}}))
    assert main(["compare", str(old), str(tmp_path / "a")]) == 2
    assert "no per-prompt values" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing"), str(tmp_path / "a")]) == 2
    with pytest.raises(ValueError):
        load_eval(old)


def test_compare_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["compare", "--help"])
    assert e.value.code == 0
    assert "usage: upo compare" in capsys.readouterr().out


def test_verdict_without_a_finite_interval_names_no_side():
    assert verdict("judge/win_rate", float("nan"), float("nan")) == "no interval"
    assert verdict("judge/win_rate", 0.01, 0.2) == "B" and verdict("safety/violation_rate", 0.01, 0.2) == "A"
    assert verdict("length/words", -0.3, -0.1) == "lower in B" and verdict("judge/win_rate", -0.1, 0.1) == "neither"


def test_an_equal_length_interval_from_fewer_draws_says_how_many():
    from upo.evaluation.compare import equal_length_cells

    row = {"metric": "readability/fk_grade", "difference": -1.0, "low": -2.0, "high": -0.5, "better": "B",
           "overlap_a": 0.5, "overlap_b": 0.25, "effective_n": 10.0, "n_a": 40, "n_b": 40, "length_gap": 0.0}
    assert "[-2, -0.5] (1400 of 2000 draws) | B |" in equal_length_cells({**row, "draws": 1400}, new="b", old="a")
    assert "[-2, -0.5] | B |" in equal_length_cells({**row, "draws": 2000}, new="b", old="a")


@pytest.mark.parametrize(("content", "match"), [
    ('{"per_prompt": {"ids": ["p1"], "values": {"judge/win_rate": [1', "not JSON"),
    ("[1, 2]", "a JSON list, not an object"),
    ('{"per_prompt": {"ids": ["p1", "p2"]}}', "per_prompt must hold a list `ids` and a mapping `values`"),
    ('{"per_prompt": {"ids": ["p1", "p2"], "values": {"judge/win_rate": [1]}}}',
     "per_prompt.values.judge/win_rate must be 2 numbers or nulls"),
    ('{"per_prompt": {"ids": ["p1"], "values": {"judge/win_rate": ["x"]}}}', "must be 1 numbers or nulls"),
])
def test_a_file_that_is_not_an_eval_json_is_named_with_its_problem(tmp_path, capsys, content, match):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "eval.json").write_text(json.dumps(A))
    assert main(["compare", str(tmp_path / "a"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"upo: error: {bad}: ") and re.search(match, err), err


def test_compare_output_never_overwrites_an_input_and_keeps_json_and_markdown_apart(tmp_path, capsys):
    for name, result in (("a", A), ("b", B)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps(result))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    kept = (tmp_path / "b" / "eval.json").read_text()
    for output, match in ((tmp_path / "b" / "eval.json", "would overwrite an evaluation"),
                          (tmp_path / "a" / "eval", "would overwrite an evaluation"),  # its .md: a/eval.md
                          (tmp_path / "a" / "generations.jsonl", "would overwrite an evaluation"),
                          (tmp_path / "c.md", "give a .json path"), (tmp_path / "a", "a folder")):
        assert main(["compare", a, b, "--output", str(output)]) == 2
        assert match in capsys.readouterr().err, output
    assert (tmp_path / "b" / "eval.json").read_text() == kept and not (tmp_path / "c.md").exists()


def test_evaluations_that_measure_differently_are_compared_with_a_warning(tmp_path, capsys):
    settings = {"judge": "rm:rm/final", "ref_model": None, "beta": 0.1, "temperature": 0.7, "seed": 1, "model": "x"}
    other = {**settings, "seed": 2, "model": "y", "beta": 0.05}  # another model (its own beta, no reference) and seed
    for name, result, s in (("a", A, settings), ("b", B, other), ("c", B, {**other, "judge": "llm", "temperature": 1.0,
                                                                           "ref_model": "base"})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps({**result, "settings": s}))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "ab.json")]) == 0
    assert "WARNING" not in capsys.readouterr().err
    assert json.loads((tmp_path / "ab.json").read_text())["setting_differences"] == []
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "c"), "--output", str(tmp_path / "ac.json")]) == 0
    captured = capsys.readouterr()
    assert "WARNING: the two evaluations differ in how they measure" in captured.err
    assert "judge: 'rm:rm/final' vs 'llm'; temperature: 0.7 vs 1.0" in captured.err
    assert "**Warning**: the two evaluations differ" in (tmp_path / "ac.md").read_text()
    assert json.loads((tmp_path / "ac.json").read_text())["setting_differences"] == [
        "judge: 'rm:rm/final' vs 'llm'", "temperature: 0.7 vs 1.0"]


def test_units_without_a_value_on_one_side_are_counted_per_side():
    """An llm judge's missing verdicts (null) on A: each side's mean is over its own verdicts, and the
    table says how many each side has."""
    a = evaluation({"judge/win_rate": [0.0, 0.5, 0.0, 0.5]})
    a["per_prompt"]["values"]["judge/win_rate"] = [None, 0.5, None, 0.5]
    b = evaluation({"judge/win_rate": [0.5, 1.0, 0.5, 1.0]})
    (row,) = compare_results(a, b)
    assert (row["n"], row["n_a"], row["n_b"], row["a"], row["b"]) == (4, 2, 4, 0.5, 0.75)
    assert units_cell(row) == "4 prompts (A 2, B 4 with a value)"
    assert units_cell({**row, "n_a": 4}) == "4 prompts"
