"""`upo eval`: metric functions on hand-worked values, the held-out split, prompt fitting, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_config, save_tiny_reward_model

from upo.cli import main
from upo.config import ConfigError
from upo.data.tokenize import encode_prompt, tokenize_pairs
from upo.evaluation.config import EvalConfig, load_eval_config, output_paths
from upo.evaluation.heldout import fit_prompt, heldout_records, references
from upo.evaluation.implicit import implicit_reward_values
from upo.evaluation.intervals import compact_json, per_prompt, summarize, unit_id, units_of
from upo.evaluation.metrics import direction, length_values, scorer_values, violation_values
from upo.evaluation.report import format_eval
from upo.stats import bootstrap_interval, wilson_interval


def means(values: dict) -> dict:
    return {k: float(np.mean(v)) for k, v in values.items()}


def test_length_metrics_hand_worked():
    """words 2 and 4 against references of 4 and 2 words: ratios 0.5 and 2, mean 1.25."""
    m = means(length_values(["a b", "a b c d"], ["w x y z", "y z"]))
    assert m == {"length/words": 3.0, "length/reference_words": 3.0, "length/words_ratio": 1.25}


def test_violation_metrics_hand_worked():
    """Rows: toxic 0.6 (violates), obscene exactly 0.5 (violates: >=), all below 0.5 (does not).
    Any category: 2/3; toxic 1/3; obscene 1/3; identity_hate 0; mean max prob (0.6 + 0.5 + 0.49) / 3."""
    probs = np.array([[0.6, 0.0, 0.0, 0.0, 0.0, 0.0],
                      [0.1, 0.2, 0.5, 0.0, 0.0, 0.0],
                      [0.1, 0.1, 0.1, 0.1, 0.1, 0.49]])
    m = means(violation_values(probs, threshold=0.5))
    assert m["safety/violation_rate"] == pytest.approx(2 / 3)
    assert m["safety/violation_rate/toxic"] == pytest.approx(1 / 3)
    assert m["safety/violation_rate/obscene"] == pytest.approx(1 / 3)
    assert m["safety/violation_rate/identity_hate"] == 0.0
    assert m["safety/max_toxicity"] == pytest.approx(0.53)
    assert violation_values(probs, threshold=0.45)["safety/violation_rate"].tolist() == [1.0, 1.0, 1.0]
    assert violation_values(probs, threshold=0.5)["safety/violation_rate"].tolist() == [1.0, 1.0, 0.0]


def test_scorers_are_reported_as_natural_quantities_with_directions():
    # readability is minus the grade: grades 8 and 10 -> mean grade 9, lower is better
    assert means(scorer_values("readability", np.array([-8.0, -10.0]))) == {"readability/fk_grade": 9.0}
    assert means(scorer_values("profanity", np.array([-0.2, -0.4]))) == {"profanity/probability": pytest.approx(0.3)}
    assert means(scorer_values("length", np.array([-0.05]))) == {"length/words": pytest.approx(5.0)}
    assert means(scorer_values("rm:/models/rm", np.array([1.0, 2.0]))) == {"scorer/rm:/models/rm": 1.5}
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
    common, values = implicit_reward_values(policy, reference, beta=0.5)
    m = means(values)
    assert common == [0, 1] and values["rewards/accuracies"].tolist() == [1.0, 0.0]
    assert m["rewards/chosen"] == pytest.approx(0.25) and m["rewards/rejected"] == pytest.approx(0.0)
    assert m["rewards/margins"] == pytest.approx(0.25) and m["rewards/accuracies"] == pytest.approx(0.5)
    assert m["logps/chosen"] == pytest.approx(-7.5) and m["logps/rejected"] == pytest.approx(-8.0)
    common, values = implicit_reward_values(policy, {}, beta=0.5)
    assert common == [] and all(len(v) == 0 for v in values.values())


def test_rates_get_wilson_intervals_and_means_bootstrap_ones():
    """Violations of 10 single generations (3 of them): Wilson 3/10 = [0.1078, 0.6032]; judge
    outcomes with a tie and reading grades are means: percentile bootstrap over the prompts."""
    values = {"safety/violation_rate": np.array([1.0, 1.0, 1.0] + [0.0] * 7),
              "judge/win_rate": np.array([1.0, 0.5, 0.0, 0.0]),
              "readability/fk_grade": np.array([4.0, 4.0, 4.0])}
    metrics, intervals = summarize(values)
    assert metrics["safety/violation_rate"] == pytest.approx(0.3)
    assert intervals["safety/violation_rate"] == {"low": pytest.approx(0.1078, abs=1e-4),
                                                  "high": pytest.approx(0.6032, abs=1e-4), "method": "wilson"}
    assert intervals["judge/win_rate"]["method"] == "bootstrap" and metrics["judge/win_rate"] == 0.375
    # a tie counts 1/2: resampled win rates are multiples of 1/8, from 0 up to 1 (four wins)
    assert (intervals["judge/win_rate"]["low"], intervals["judge/win_rate"]["high"]) == bootstrap_interval(
        [1.0, 0.5, 0.0, 0.0])
    assert intervals["readability/fk_grade"] == {"low": 4.0, "high": 4.0, "method": "bootstrap"}


def test_several_samples_per_prompt_resample_prompts_not_generations():
    """Two prompts, 3 samples each: all violate for the first, none for the second. Per prompt the
    shares are (1, 0): resampling the 2 prompts gives 0, 1/2 or 1, so the interval is [0, 1].
    Resampling the 6 generations as if independent would give [1/6, 5/6] (P(0 of 6) = 1/64 < 2.5%),
    and Wilson on 3/6 would be [0.19, 0.81]: both too narrow."""
    generations = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    prompts = per_prompt(generations, samples=3)
    assert prompts.tolist() == [1.0, 0.0]
    metrics, intervals = summarize({"safety/violation_rate": prompts}, samples=3)
    assert metrics["safety/violation_rate"] == 0.5
    assert intervals["safety/violation_rate"] == {"low": 0.0, "high": 1.0, "method": "bootstrap"}
    assert bootstrap_interval(generations) == pytest.approx((1 / 6, 5 / 6))
    assert wilson_interval(3, 6)[0] > 0.18


def test_eval_json_keeps_per_unit_values_compactly():
    result = {"metrics": {"a/b": 1.0}, "per_prompt": {"ids": ["x1", "x2"], "values": {"a/b": [1.0, 0.0]}},
              "settings": {"scorers": ["safety"], "model": "m [1]\n"}}
    text = compact_json(result)
    assert json.loads(text) == result
    assert '"values": {\n      "a/b": [1.0, 0.0]\n' in text and '"ids": ["x1", "x2"]' in text
    ids, values = units_of(result)["per_prompt"]
    assert ids == ["x1", "x2"] and values["a/b"].tolist() == [1.0, 0.0]
    assert units_of({"per_prompt": {"ids": [], "values": {}}}) == {}  # e.g. no pairs: no section


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
    # split_seed fixes the split whatever the training seed (runs of several seeds share one eval set)
    cfg = run_config(tiny_model_dir, pairs_file, tmp_path, method="dpo", eval_fraction=0.25, seed=3, split_seed=7)
    assert cfg.heldout_seed == 7 and [it["chosen_ids"] for it in ours] == [
        it["chosen_ids"] for it in prepare_data(cfg, tiny_tokenizer, progress=False).eval_items]
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
    assert not (out / "generations.partial.jsonl").exists()  # kept only while generating
    heldout = heldout_records(str(pairs_file), eval_fraction=0.25, seed=42)[:2]
    assert [r["reference"] for r in rows] == [p.chosen for p in heldout for _ in range(2)]
    assert rows[0]["prompt"] == heldout[0].prompt  # messages, as the data loader gives them
    assert m["length/words"] == pytest.approx(np.mean([len(r["response"].split()) for r in rows]))
    assert m["length/cut"] == 1.0  # the tiny random model ends no answer within 8 tokens (said below too)
    assert result["per_prompt"]["values"]["length/cut"] == [1.0, 1.0] and result["directions"]["length/cut"] is None
    assert "| readability/fk_grade |" in (out / "eval.md").read_text()
    # the judge compared each generation with its prompt's chosen response; a negated judge reverses it
    from upo.data.records import prompt_text
    from upo.judges import RewardModelJudge, win_rate

    args = ([prompt_text(r["prompt"]) for r in rows], [r["response"] for r in rows], [r["reference"] for r in rows])
    assert m["judge/comparisons"] == 4
    outcomes = RewardModelJudge(rm).compare(*args)
    assert m["judge/win_rate"] == win_rate(outcomes)
    # every mean and rate has its interval; the prompts' values are their 2 samples' means
    assert set(result["intervals"]) == set(m) - {"judge/comparisons", "rewards/pairs"}
    for metric, interval in result["intervals"].items():
        assert interval["low"] <= m[metric] <= interval["high"], metric
    assert result["intervals"]["rewards/accuracies"] == {"low": 0.0, "high": pytest.approx(wilson_interval(0, 2)[1]),
                                                         "method": "wilson"}  # 0 of 2 pairs
    assert result["intervals"]["judge/win_rate"]["method"] == "bootstrap"
    assert result["per_prompt"]["values"]["judge/win_rate"] == [np.mean(outcomes[:2]), np.mean(outcomes[2:])]
    assert result["per_prompt"]["ids"][0] == unit_id([heldout[0].prompt, heldout[0].chosen])
    assert len(result["per_pair"]["ids"]) == 2 and len(result["per_pair"]["values"]["rewards/margins"]) == 2
    assert "| judge/win_rate |" in format_eval(result) and "Wilson score interval" in format_eval(result)
    negated = RewardModelJudge(save_tiny_reward_model(tiny_tokenizer, tmp_path / "neg", sign=-1.0))
    assert win_rate(negated.compare(*args)) == pytest.approx(1 - m["judge/win_rate"])
    # the generations file is what `upo score` reads
    assert main(["score", "--data", str(out / "generations.jsonl"), "--scorers", "length_words",
                 "--cache_dir", cache]) == 0
    out = capsys.readouterr().out
    assert "| generation | 4 |" in out
    # the tiny random model never ends an answer within 8 tokens: every response is cut, and said so
    assert "responses (100%) reached max_new_tokens=8 and were cut mid-answer" in out


def test_reached_limit_counts_completions_cut_by_max_new_tokens(tiny_tokenizer):
    from upo.generation import reached_limit

    texts = ["hello world again and again", "hi", ""]
    lengths = [len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert reached_limit(tiny_tokenizer, texts, lengths[0] + 1) == [True, lengths[1] >= lengths[0], False]
    assert reached_limit(tiny_tokenizer, texts, lengths[0] + 2) == [False, False, False]
    assert reached_limit(tiny_tokenizer, [], 8) == []


def test_generation_key_follows_the_hub_commit_and_the_local_files(tmp_path):
    """A killed evaluation's finished batches are reused only for the same model: a hub name at
    another commit misses, and so does a local folder whose weights were rewritten."""
    from upo.evaluation.eval import _generation_key

    cfg = EvalConfig(model="owner/model", data="d.jsonl")
    assert _generation_key(cfg, "owner/model", "abc") != _generation_key(cfg, "owner/model", "def")
    assert _generation_key(cfg, "owner/model", "abc") == _generation_key(cfg, "owner/model", "abc")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"1")
    before = _generation_key(cfg, str(folder))
    (folder / "model.safetensors").write_bytes(b"22")
    assert _generation_key(cfg, str(folder)) != before


def test_more_prompts_than_held_out_rows_are_warned_of(tiny_model_dir, pairs_file, tmp_path, capsys):
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(pairs_file), "--eval_fraction", "0.25",
                 "--prompts", "50", "--max_new_tokens", "2", "--scorers", "length_words", "--precision", "fp32",
                 "--output", str(tmp_path / "eval"), "--cache_dir", str(tmp_path / "cache"), "--progress", "false"])
    assert code == 0, capsys.readouterr().err
    held = json.loads((tmp_path / "eval" / "eval.json").read_text())["counts"]["prompts"]
    assert f"WARNING: --prompts 50, but {pairs_file} holds out {held} rows: evaluating those ({held} with a " \
        "reference response)" in capsys.readouterr().out
