"""`upo eval`: metric functions on hand-worked values, the held-out split, prompt fitting, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_config, save_tiny_reward_model

from upo.cli import main
from upo.config import ConfigError
from upo.data.tokenize import encode_prompt, tokenize_pairs
from upo.evaluation.config import EvalConfig, load_eval_config
from upo.evaluation.eval import output_paths
from upo.evaluation.heldout import fit_prompt, heldout_records, references
from upo.evaluation.implicit import implicit_reward_metrics
from upo.evaluation.metrics import direction, length_metrics, scorer_metrics, violation_metrics


def test_length_metrics_hand_worked():
    """words 2 and 4 against references of 4 and 2 words: ratios 0.5 and 2, mean 1.25."""
    m = length_metrics(["a b", "a b c d"], ["w x y z", "y z"])
    assert m == {"length/words": 3.0, "length/reference_words": 3.0, "length/words_ratio": 1.25}


def test_violation_metrics_hand_worked():
    """Rows: toxic 0.6 (violates), obscene exactly 0.5 (violates: >=), all below 0.5 (does not).
    Any category: 2/3; toxic 1/3; obscene 1/3; identity_hate 0; mean max prob (0.6 + 0.5 + 0.49) / 3."""
    probs = np.array([[0.6, 0.0, 0.0, 0.0, 0.0, 0.0],
                      [0.1, 0.2, 0.5, 0.0, 0.0, 0.0],
                      [0.1, 0.1, 0.1, 0.1, 0.1, 0.49]])
    m = violation_metrics(probs, threshold=0.5)
    assert m["safety/violation_rate"] == pytest.approx(2 / 3)
    assert m["safety/violation_rate/toxic"] == pytest.approx(1 / 3)
    assert m["safety/violation_rate/obscene"] == pytest.approx(1 / 3)
    assert m["safety/violation_rate/identity_hate"] == 0.0
    assert m["safety/max_toxicity"] == pytest.approx(0.53)
    assert violation_metrics(probs, threshold=0.45)["safety/violation_rate"] == 1.0


def test_scorers_are_reported_as_natural_quantities_with_directions():
    # readability is minus the grade: grades 8 and 10 -> mean grade 9, lower is better
    assert scorer_metrics("readability", np.array([-8.0, -10.0])) == {"readability/fk_grade": 9.0}
    assert scorer_metrics("profanity", np.array([-0.2, -0.4])) == {"profanity/probability": pytest.approx(0.3)}
    assert scorer_metrics("length", np.array([-0.05])) == {"length/words": pytest.approx(5.0)}
    assert scorer_metrics("rm:/models/rm", np.array([1.0, 2.0])) == {"scorer/rm:/models/rm": 1.5}
    assert direction("readability/fk_grade") == "min" and direction("reading_ease/ease") == "max"
    assert direction("safety/violation_rate/threat") == "min" and direction("judge/win_rate") == "max"
    assert direction("scorer/rm:/models/rm") == "max"
    assert direction("length/words_ratio") is None and direction("length/words") is None


def test_implicit_reward_metrics_hand_worked():
    """beta 0.5; pair 2 has no reference and is left out. Pair 0: policy (-10, -12), ref (-11, -11)
    -> rewards (0.5, -0.5); pair 1: policy (-5, -4), ref (-5, -5) -> (0, 0.5). Means: chosen 0.25,
    rejected 0, margins (1 - 0.5) / 2 = 0.25, accuracy 1/2; policy logps chosen (-10 - 5) / 2."""
    policy = {0: (-10.0, -12.0), 1: (-5.0, -4.0), 2: (-1.0, -1.0)}
    reference = {0: (-11.0, -11.0), 1: (-5.0, -5.0)}
    m = implicit_reward_metrics(policy, reference, beta=0.5)
    assert m["rewards/chosen"] == pytest.approx(0.25) and m["rewards/rejected"] == pytest.approx(0.0)
    assert m["rewards/margins"] == pytest.approx(0.25) and m["rewards/accuracies"] == pytest.approx(0.5)
    assert m["logps/chosen"] == pytest.approx(-7.5) and m["logps/rejected"] == pytest.approx(-8.0)
    assert m["rewards/pairs"] == 2
    assert implicit_reward_metrics(policy, {}, beta=0.5) == {}


def test_heldout_rows_are_the_ones_training_holds_out(tiny_model_dir, tiny_tokenizer, pairs_file, tmp_path):
    from upo.prepare import prepare_data

    cfg = run_config(tiny_model_dir, pairs_file, tmp_path, method="dpo", eval_fraction=0.25, seed=7)
    trained_eval = prepare_data(cfg, tiny_tokenizer, progress=False).eval_items
    lengths = {"max_length": cfg.max_length, "max_prompt_length": cfg.max_prompt_length}
    ours, _ = tokenize_pairs(heldout_records(str(pairs_file), eval_fraction=0.25, seed=7), tiny_tokenizer, **lengths)
    assert len(ours) == 3
    assert [it["chosen_ids"] for it in ours] == [it["chosen_ids"] for it in trained_eval]
    other, _ = tokenize_pairs(heldout_records(str(pairs_file), eval_fraction=0.25, seed=8), tiny_tokenizer, **lengths)
    assert [it["chosen_ids"] for it in other] != [it["chosen_ids"] for it in trained_eval]
    everything = heldout_records(str(pairs_file))
    assert len(everything) == 12 and references(everything)[0][1] == everything[0].chosen


def test_fit_prompt_drops_the_earliest_turns_first(tiny_tokenizer):
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"Turn {i}: how do I bake bread today?"}
             for i in range(5)]
    budget = len(encode_prompt(turns[-3:], tiny_tokenizer))
    assert fit_prompt(turns, tiny_tokenizer, budget) == turns[-3:]
    # without room for turn 2 (the user's), its answer goes too: the rest starts with a user turn
    assert fit_prompt(turns, tiny_tokenizer, budget - 1) == turns[-1:]
    assert fit_prompt(turns, tiny_tokenizer, 10_000) == turns
    # a last message that alone is too long keeps the end of its text
    long = [{"role": "user", "content": "bread " * 200 + "the end?"}]
    cut = fit_prompt(long, tiny_tokenizer, 40)
    assert cut[0]["content"].endswith("the end?") and len(encode_prompt(cut, tiny_tokenizer)) <= 41
    text = fit_prompt("bread " * 200 + "the end?", tiny_tokenizer, 30)
    assert text.endswith("the end?") and len(encode_prompt(text, tiny_tokenizer)) <= 31


def test_output_paths_folder_or_json_file(tmp_path):
    assert output_paths(str(tmp_path / "ev")) == (tmp_path / "ev" / "eval.json", tmp_path / "ev" / "eval.md",
                                                  tmp_path / "ev" / "generations.jsonl")
    assert output_paths(str(tmp_path / "dpo.json")) == (tmp_path / "dpo.json", tmp_path / "dpo.md",
                                                        tmp_path / "dpo.generations.jsonl")


def test_eval_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'prompts'"):
        load_eval_config(None, {"promts": "3"})
    with pytest.raises(ConfigError, match="judge must be rm:PATH or llm"):
        EvalConfig(judge="gpt4")
    with pytest.raises(ConfigError, match="needs judge_base_url and judge_model"):
        EvalConfig(judge="llm")
    config = tmp_path / "e.yaml"
    config.write_text("prompts: 5\nscorers: [readability]\n")
    cfg = load_eval_config(str(config), {"max_new_tokens": "8", "do_sample": "false"})
    assert (cfg.prompts, cfg.scorers, cfg.max_new_tokens, cfg.do_sample) == (5, ["readability"], 8, False)


def test_eval_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: upo eval" in out and "--max_new_tokens" in out and "new tokens per generation" in out


def test_upo_eval_end_to_end(tiny_model_dir, tiny_tokenizer, pairs_file, tmp_path, capsys):
    out = tmp_path / "eval"
    cache = str(tmp_path / "cache")
    rm = save_tiny_reward_model(tiny_tokenizer, tmp_path / "rm")
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(pairs_file), "--eval_fraction", "0.25",
                 "--prompts", "2", "--samples", "2", "--max_new_tokens", "8", "--ref_model", str(tiny_model_dir),
                 "--scorers", "readability,length_words", "--output", str(out), "--precision", "fp32",
                 "--max_length", "96", "--max_prompt_length", "32", "--cache_dir", cache, "--progress", "false",
                 "--judge", f"rm:{rm}"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "eval.json").read_text())
    m = result["metrics"]
    # the model is its own reference: every implicit reward is 0, so no pair is ranked right
    assert m["rewards/margins"] == 0.0 and m["rewards/accuracies"] == 0.0 and m["rewards/pairs"] == 2
    assert result["counts"] == {"prompts": 2, "generations": 4}
    assert result["directions"]["readability/fk_grade"] == "min" and result["settings"]["beta"] == 0.1
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    heldout = heldout_records(str(pairs_file), eval_fraction=0.25, seed=42)[:2]
    assert [r["reference"] for r in rows] == [p.chosen for p in heldout for _ in range(2)]
    assert rows[0]["prompt"] == heldout[0].prompt  # messages, as the data loader gives them
    assert m["length/words"] == pytest.approx(np.mean([len(r["response"].split()) for r in rows]))
    assert "| readability/fk_grade |" in (out / "eval.md").read_text()
    # the judge compared each generation with its prompt's chosen response; a negated judge reverses it
    from upo.data.records import prompt_text
    from upo.judges import RewardModelJudge, win_rate

    args = ([prompt_text(r["prompt"]) for r in rows], [r["response"] for r in rows], [r["reference"] for r in rows])
    assert m["judge/comparisons"] == 4
    assert m["judge/win_rate"] == win_rate(RewardModelJudge(rm).compare(*args))
    negated = RewardModelJudge(save_tiny_reward_model(tiny_tokenizer, tmp_path / "neg", sign=-1.0))
    assert win_rate(negated.compare(*args)) == pytest.approx(1 - m["judge/win_rate"])
    # the generations file is what `upo score` reads
    assert main(["score", "--data", str(out / "generations.jsonl"), "--scorers", "length_words",
                 "--cache_dir", cache]) == 0
    assert "| generation | 4 |" in capsys.readouterr().out
