"""`upo rejudge`: a finished evaluation's generations judged again by another reward model, only the
judge's metrics rewritten, and each evaluation's judge weights recorded."""

from __future__ import annotations

import hashlib
import json

import pytest
from helpers import save_tiny_reward_model

from upo.cli import main


@pytest.fixture
def evaluation(tiny_model_dir, tiny_tokenizer, pairs_file, tmp_path):
    """A finished evaluation judged by a tiny reward model (3 prompts, one sample each: 0/1 verdicts)."""
    rm = save_tiny_reward_model(tiny_tokenizer, tmp_path / "rm")
    out = tmp_path / "eval"
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(pairs_file), "--eval_fraction", "0.25",
                 "--prompts", "3", "--samples", "1", "--max_new_tokens", "8", "--scorers", "length_words",
                 "--output", str(out), "--precision", "fp32", "--max_length", "96", "--max_prompt_length", "32",
                 "--cache_dir", str(tmp_path / "cache"), "--progress", "false", "--judge", f"rm:{rm}"])
    assert code == 0
    return out, rm


def test_an_evaluation_records_its_judges_weights(evaluation):
    out, rm = evaluation
    result = json.loads((out / "eval.json").read_text())
    weights = hashlib.sha256((out.parent / "rm" / "model.safetensors").read_bytes()).hexdigest()
    assert result["judge_weights"] == weights


def test_rejudging_with_the_negated_judge_reverses_every_verdict(evaluation, tiny_tokenizer, tmp_path, capsys):
    """A judge whose scores are negated reverses each win and loss (1 - v per generation), so each
    prompt's value and the win rate become 1 - the old ones; nothing else changes."""
    out, rm = evaluation
    before = json.loads((out / "eval.json").read_text())
    flipped = save_tiny_reward_model(tiny_tokenizer, tmp_path / "rm-flipped", sign=-1.0)
    assert main(["rejudge", str(out), "--judge", f"rm:{flipped}"]) == 0
    after = json.loads((out / "eval.json").read_text())
    old, new = before["per_prompt"]["values"]["judge/win_rate"], after["per_prompt"]["values"]["judge/win_rate"]
    assert set(old) <= {0.0, 1.0}  # each prompt's one verdict: a win or a loss, so reversing changes it
    assert new == pytest.approx([1 - v for v in old])
    assert after["metrics"]["judge/win_rate"] == pytest.approx(1 - before["metrics"]["judge/win_rate"])
    assert after["settings"]["judge"] == f"rm:{flipped}" and after["judge_weights"] != before["judge_weights"]
    for key in ("length/words", "length/cut"):
        assert after["metrics"][key] == before["metrics"][key]
        assert after["per_prompt"]["values"][key] == before["per_prompt"]["values"][key]
    from upo.evaluation.report import format_eval

    assert (out / "eval.md").read_text() == format_eval(after) + "\n"
    # judged by these weights already: --if_changed leaves it; without it, it is judged again
    assert main(["rejudge", str(out / "eval.json"), "--judge", f"rm:{flipped}", "--if_changed"]) == 0
    assert "judged by these weights already" in capsys.readouterr().out
    assert main(["rejudge", str(out), "--judge", f"rm:{rm}"]) == 0
    again = json.loads((out / "eval.json").read_text())
    assert again["per_prompt"]["values"]["judge/win_rate"] == pytest.approx(old)


def test_rejudging_refuses_what_it_cannot_do(evaluation, tmp_path, capsys):
    out, _ = evaluation
    assert main(["rejudge", str(tmp_path / "nowhere")]) == 1
    assert "no eval.json" in capsys.readouterr().err
    assert main(["rejudge", str(out), "--judge", "llm"]) == 1
    assert "rejudging takes a reward-model judge" in capsys.readouterr().err


def test_comparisons_warn_when_two_judges_judged(evaluation, tiny_tokenizer, tmp_path, capsys):
    """upo compare (and the frontier's report, through the same check) names evaluations judged by
    reward models of different weights, and says nothing once one judge judged both."""
    import shutil

    from upo.evaluation.rejudge import mixed_judges_warning

    out, rm = evaluation
    other = tmp_path / "other"
    shutil.copytree(out, other)
    flipped = save_tiny_reward_model(tiny_tokenizer, tmp_path / "rm-flipped", sign=-1.0)
    assert main(["rejudge", str(other), "--judge", f"rm:{flipped}"]) == 0
    capsys.readouterr()
    assert main(["compare", str(out), str(other)]) == 0
    assert "judged by reward models of different weights" in capsys.readouterr().err
    assert main(["rejudge", str(other), "--judge", f"rm:{rm}"]) == 0
    results = [json.loads((d / "eval.json").read_text()) for d in (out, other)]
    assert mixed_judges_warning(results) is None
    del results[0]["judge_weights"]  # evaluated before upo recorded them: unknown, so warned too
    assert "no record: 1" in mixed_judges_warning(results)


def test_rejudging_keeps_the_recorded_judge_name_and_goes_on_past_a_failure(evaluation, tmp_path, capsys):
    """The same folder named another way (rm:x/ for rm:x) keeps the recorded name: the frontier
    reads a changed judge setting as another evaluation. A failing evaluation does not stop the rest."""
    out, rm = evaluation
    before = json.loads((out / "eval.json").read_text())
    assert main(["rejudge", str(tmp_path / "nowhere"), str(out), "--judge", f"rm:{rm}/"]) == 1
    captured = capsys.readouterr()
    assert "1 of 2 evaluations failed" in captured.err and "win rate" in captured.out
    assert json.loads((out / "eval.json").read_text())["settings"] == before["settings"]


def test_an_llm_judged_evaluation_is_not_rejudged(evaluation, capsys):
    out, _ = evaluation
    result = json.loads((out / "eval.json").read_text())
    result["settings"]["judge"] = "llm"
    (out / "eval.json").write_text(json.dumps(result))
    assert main(["rejudge", str(out), "--judge", "rm:/some/rm"]) == 1
    assert "an llm judge judged it" in capsys.readouterr().err


def test_an_evaluation_without_a_judge_gets_one(tiny_model_dir, tiny_tokenizer, pairs_file, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(pairs_file), "--eval_fraction", "0.25",
                 "--prompts", "2", "--max_new_tokens", "4", "--scorers", "length_words", "--output", str(out),
                 "--precision", "fp32", "--max_length", "96", "--max_prompt_length", "32", "--progress", "false",
                 "--cache_dir", str(tmp_path / "cache")]) == 0
    assert "judge/win_rate" not in json.loads((out / "eval.json").read_text())["metrics"]
    rm = save_tiny_reward_model(tiny_tokenizer, tmp_path / "rm")
    assert main(["rejudge", str(out), "--judge", f"rm:{rm}"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["metrics"]["judge/comparisons"] == 2 and result["directions"]["judge/win_rate"] == "max"
