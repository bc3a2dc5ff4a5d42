"""Steered UPO over reward mixes (`steer_reward_mixes`, alone or with `steer_aux_coefs`): the
conditions and their draw, each mix's r_a by hand and from one scoring, the mix tokens in training,
generation and evaluation, the errors that list the trained mixes, steering.json, and a sweep's
steered point with mixes."""

from __future__ import annotations

import copy
import json
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import run_config
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from upo.cli import main
from upo.config import ConfigError, UPOConfig, coerce
from upo.data.steering import (
    Condition,
    ConditionedItems,
    SteeringError,
    add_mix_tokens,
    add_steering_tokens,
    condition_length,
    mix_token,
    mix_token_ids,
    read_reward_mixes,
    read_steering,
    steering_conditions,
    steering_suffix,
    steering_token_ids,
    write_steering,
)
from upo.data.tokenize import encode_prompt
from upo.evaluation.config import EvalConfig
from upo.evaluation.eval import run_eval
from upo.frontier.sweep import condition_folder, config_keys, expand_points
from upo.generation import _prompt_ids
from upo.metrics import read_metrics
from upo.prepare import prepare_data
from upo.rewards import scoring
from upo.rewards.scoring import RewardMixes, RewardStandardizer
from upo.trainer import train

PROMPT = [{"role": "user", "content": "Tell me about tea."}]
MIXES = {"safe": {"length": 1.0}, "short": {"length": -1.0, "length_words": 0.5}}


@pytest.fixture
def mixed_tokenizer(tiny_tokenizer):
    """Steered on aux_coef (0.3, 1) and over the mixes safe, short: aux_coef's tokens added first."""
    tokenizer = copy.deepcopy(tiny_tokenizer)
    add_steering_tokens(tokenizer, [0.3, 1.0])
    add_mix_tokens(tokenizer, list(MIXES))
    return tokenizer


# ---- the conditions: product, tokens, draw ------------------------------------------------------


def test_conditions_are_the_product_aux_coef_major():
    both = steering_conditions({0.0: 100, 1.0: 101}, {"safe": 200, "short": 201})
    assert both == [Condition(0.0, "safe", (100, 200)), Condition(0.0, "short", (100, 201)),
                    Condition(1.0, "safe", (101, 200)), Condition(1.0, "short", (101, 201))]
    assert steering_conditions(None, {"safe": 200, "short": 201}) == [Condition(None, "safe", (200,)),
                                                                      Condition(None, "short", (201,))]
    assert steering_conditions({0.3: 7}, None) == [Condition(0.3, None, (7,))]
    assert steering_conditions(None, None) == []
    assert [condition_length(a, m) for a, m in (([1.0], MIXES), ([1.0], None), (None, MIXES), (None, None))] == [
        2, 1, 1, 0]


def test_each_example_gets_its_conditions_tokens_aux_coef_and_mix_rewards():
    """Unpaired items: the mix's `reward`; paired ones: its chosen and rejected rewards. Four conditions
    over eight items: two each per epoch, and every item moves on to the next condition each epoch."""
    conditions = steering_conditions({0.0: 100, 1.0: 101}, {"safe": 200, "short": 201})
    items = [{"index": i, "prompt_ids": [7, i], "completion_ids": [1],
              "mix_rewards": {"safe": {"reward": 10.0 + i}, "short": {"reward": -10.0 - i}}} for i in range(8)]
    data = ConditionedItems(items, conditions, seed=5)
    first = [data.condition(k) for k in range(8)]
    assert sorted(Counter(first).values()) == [2, 2, 2, 2]
    for epoch in range(2):
        data.set_epoch(epoch)
        for k in range(8):
            c = conditions[(first[k] + epoch) % 4]
            item = data[k]
            assert item["prompt_ids"] == [7, k, *c.token_ids] and item["aux_coef"] == c.aux_coef
            assert item["reward"] == (10.0 + k if c.reward_mix == "safe" else -10.0 - k)
    with data.bare():  # the reference's items: no tokens, no condition, no reward
        assert data[3] == items[3] and "reward" not in data[3]
    assert items[0]["prompt_ids"] == [7, 0] and "reward" not in items[0]  # the items are not changed

    mixes_only = steering_conditions(None, {"safe": 200, "short": 201})
    pairs = [{"index": 0, "prompt_ids": [5], "chosen_ids": [1], "rejected_ids": [2],
              "mix_rewards": {"safe": {"chosen_reward": 1.0, "rejected_reward": 2.0},
                              "short": {"chosen_reward": 3.0, "rejected_reward": 4.0}}}]
    pair = ConditionedItems(pairs, mixes_only, seed=0)[0]
    mix = mixes_only[pair["prompt_ids"][-1] - 200].reward_mix
    assert (pair["chosen_reward"], pair["rejected_reward"]) == tuple(pairs[0]["mix_rewards"][mix].values())
    assert "aux_coef" not in pair  # mixes alone: the example's aux_coef is the config's


# ---- each mix's reward --------------------------------------------------------------------------


def test_reward_mixes_hand_worked():
    """Raw scores of three responses on (a, b): a = (1, 2, 3) has mean 2, population std sqrt(2/3);
    b = (10, 10, 40) mean 20, std sqrt(200) = 14.142. z_a = (-1.2247, 0, 1.2247), z_b = (-0.7071,
    -0.7071, 1.4142). Mix x = {a: 1}: z_a. Mix y = {b: 2, a: -1}: 2 z_b - z_a = (-0.1895, -1.4142,
    1.6037)."""
    raw = np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 40.0]])
    mixes = RewardMixes.fit(raw, {"x": {"a": 1.0}, "y": {"b": 2.0, "a": -1.0}})
    assert mixes.names == ["a", "b"] == RewardMixes.union({"x": {"a": 1}, "y": {"b": 2, "a": -1}})
    r = mixes.combine(raw)
    za, zb = np.sqrt(1.5) * np.array([-1.0, 0.0, 1.0]), np.array([-1.0, -1.0, 2.0]) / np.sqrt(2)
    assert r["x"] == pytest.approx(za) and r["x"] == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-4)
    assert r["y"] == pytest.approx(2 * zb - za) and r["y"] == pytest.approx([-0.1895, -1.4142, 1.6037], abs=1e-4)
    # bit for bit a standardizer fitted with the mix as its rewards (its columns in its order)
    alone = RewardStandardizer.fit(raw[:, [1, 0]], ["b", "a"], [2.0, -1.0])
    assert np.array_equal(r["y"], alone.combine(raw[:, [1, 0]]))
    # a one-reward mix too: numpy sums a lone column (pairwise) and a column of a wider array (in order)
    # differently in the last bits, so each mix is fitted on its own columns
    wide = np.random.default_rng(0).normal(size=(1000, 3)) * 7 + 3
    one = RewardMixes.fit(wide, {"x": {"a": 1.0}, "y": {"b": 1.0, "c": 0.5}}).combine(wide)["x"]
    assert np.array_equal(one, RewardStandardizer.fit(wide[:, [0]], ["a"], [1.0]).combine(wide[:, [0]]))
    # held-out scores: the training statistics
    assert mixes.combine(np.array([[2.0, 20.0]]))["y"] == pytest.approx([0.0])
    swapped = raw[:, [1, 0]]  # a mix's union is its own rewards' order: (b, a)
    raw_only = RewardMixes.fit(swapped, {"y": {"b": 2.0, "a": -1.0}}, standardize=False).combine(swapped)["y"]
    assert raw_only.tolist() == [19.0, 18.0, 77.0]  # 2 b - a, unstandardized
    assert json.loads(json.dumps(mixes.to_dict()))["mixes"]["y"] == {"b": 2.0, "a": -1.0}


def test_a_mix_equal_to_rewards_gives_the_unsteered_rewards_and_each_scorer_runs_once(
        tiny_tokenizer, pairs_file, tmp_path, monkeypatch):
    calls = []
    score_texts = scoring.score_texts
    monkeypatch.setattr(scoring, "score_texts", lambda p, c, names, **k: calls.append(names) or
                        score_texts(p, c, names, **k))
    keys = dict(dataset=str(pairs_file), progress=False, cache_dir=str(tmp_path / "c"), max_length=96,
                max_prompt_length=8, pref_loss="dpo", eval_fraction=0.25)
    plain = prepare_data(UPOConfig(**keys, rewards=MIXES["short"]), copy.deepcopy(tiny_tokenizer), progress=False)
    calls.clear()
    steered = prepare_data(UPOConfig(**keys, steer_reward_mixes=MIXES), copy.deepcopy(tiny_tokenizer),
                           progress=False)
    assert calls == [["length", "length_words"]] * 2  # training and held-out rows: one scoring of the union each
    for a, b in ((plain.train_items, steered.train_items), (plain.eval_items, steered.eval_items)):
        assert [(x["chosen_reward"], x["rejected_reward"]) for x in a] == [
            tuple(y["mix_rewards"]["short"].values()) for y in b]  # exactly equal
        assert all("chosen_reward" not in y for y in b)
    safe = [y["mix_rewards"]["safe"]["chosen_reward"] for y in steered.train_items]
    assert safe != [y["mix_rewards"]["short"]["chosen_reward"] for y in steered.train_items]
    # the mix's token to come: prompts are cut one token shorter than an unsteered run's (two with aux_coef too)
    assert max(len(y["prompt_ids"]) for y in plain.train_items) == 8
    assert max(len(y["prompt_ids"]) for y in steered.train_items) == 7
    both = prepare_data(UPOConfig(**keys, steer_reward_mixes=MIXES, steer_aux_coefs=[0, 1]),
                        copy.deepcopy(tiny_tokenizer), progress=False)
    assert max(len(y["prompt_ids"]) for y in both.train_items) == 6


# ---- tokens at generation -----------------------------------------------------------------------


def test_generation_appends_both_tokens_or_says_which_exist(tiny_tokenizer, mixed_tokenizer):
    assert mix_token("safe") == "<|mix=safe|>"
    mix_ids, aux_ids = mix_token_ids(mixed_tokenizer), steering_token_ids(mixed_tokenizer)
    assert list(mix_ids) == ["safe", "short"] and list(aux_ids) == [0.3, 1.0]
    assert mix_token_ids(tiny_tokenizer) == {}
    assert _prompt_ids(mixed_tokenizer, PROMPT, 0.3, "short") == encode_prompt(PROMPT, mixed_tokenizer) + [
        aux_ids[0.3], mix_ids["short"]]
    with pytest.raises(SteeringError, match="reward mix 'risky' is not one this model was trained on; trained "
                                            "mixes: safe, short"):
        steering_suffix(mixed_tokenizer, 0.3, "risky")
    with pytest.raises(SteeringError, match=r"choose one with reward_mix \(--reward_mix\), one of safe, short"):
        steering_suffix(mixed_tokenizer, 0.3)
    with pytest.raises(SteeringError, match="trained values: 0.3, 1"):
        steering_suffix(mixed_tokenizer, 3.0, "safe")
    with pytest.raises(SteeringError, match="not trained steered over reward mixes"):
        steering_suffix(tiny_tokenizer, None, "safe")
    mixes_only = copy.deepcopy(tiny_tokenizer)
    add_mix_tokens(mixes_only, ["safe"])
    assert steering_suffix(mixes_only, None, "safe") == [mix_token_ids(mixes_only)["safe"]]
    with pytest.raises(SteeringError, match="aux_coef 1 was given, but this model was not trained steered"):
        steering_suffix(mixes_only, 1.0, "safe")
    # the README's recipe for plain transformers: the chat template's text + both tokens' text
    text = mixed_tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    readme = mixed_tokenizer(text + "<|aux_coef=0.3|><|mix=short|>", add_special_tokens=False)["input_ids"]
    assert readme == _prompt_ids(mixed_tokenizer, PROMPT, 0.3, "short")


def test_steering_json_records_the_mixes_and_keeps_aux_only_runs_as_they_were(tmp_path):
    write_steering(tmp_path, [0.3, 1.0])
    assert json.loads((tmp_path / "steering.json").read_text()) == {
        "aux_coefs": [0.3, 1.0], "tokens": {"0.3": "<|aux_coef=0.3|>", "1": "<|aux_coef=1|>"},
        "usage": "append the token of the chosen aux_coef to the prompt (after the chat template's generation "
                 "prompt); upo eval --aux_coef VALUE does it"}
    assert read_reward_mixes(tmp_path) is None
    write_steering(tmp_path, None, MIXES)
    record = json.loads((tmp_path / "steering.json").read_text())
    assert record["mix_tokens"] == {"safe": "<|mix=safe|>", "short": "<|mix=short|>"} and "tokens" not in record
    assert read_reward_mixes(tmp_path) == MIXES and read_steering(tmp_path) is None
    write_steering(tmp_path, [1.0], MIXES)
    assert "--aux_coef VALUE --reward_mix NAME" in json.loads((tmp_path / "steering.json").read_text())["usage"]


# ---- config -------------------------------------------------------------------------------------


def test_reward_mixes_config_is_checked():
    assert UPOConfig(steer_reward_mixes={"a": {"length": 1}}).steer_reward_mixes == {"a": {"length": 1.0}}
    assert UPOConfig().steer_reward_mixes is None  # off by default
    assert coerce("steer_reward_mixes", "{safe: {safety: 0.95, readability: 0.05}, r: {readability: 1}}") == {
        "safe": {"safety": 0.95, "readability": 0.05}, "r": {"readability": 1.0}}
    with pytest.raises(ConfigError, match="steer_reward_mixes replaces rewards"):
        UPOConfig(steer_reward_mixes=MIXES, rewards={"length": 1.0})
    with pytest.raises(ConfigError, match="method 'dpo' cannot be steered"):
        UPOConfig(method="dpo", steer_reward_mixes=MIXES)
    with pytest.raises(ConfigError, match="mix name 'a b'"):
        UPOConfig(steer_reward_mixes={"a b": {"length": 1.0}})
    with pytest.raises(ConfigError, match="non-empty mapping of name"):
        UPOConfig(steer_reward_mixes={})
    with pytest.raises(ConfigError, match="steer_reward_mixes.a must be a non-empty mapping"):
        UPOConfig(steer_reward_mixes={"a": {}})
    with pytest.raises(ConfigError, match="weights must be finite"):
        UPOConfig(steer_reward_mixes={"a": {"length": float("nan")}})
    with pytest.raises(ConfigError, match="precompute_ref_logps: true"):
        UPOConfig(steer_reward_mixes=MIXES, precompute_ref_logps=False)
    both = UPOConfig(steer_reward_mixes=MIXES, steer_aux_coefs=[0, 1])
    assert both.steer_aux_coefs == [0.0, 1.0]


# ---- a sweep's steered point with mixes ---------------------------------------------------------


def test_a_steered_point_with_mixes_becomes_one_point_per_condition():
    spec = {"points": [{"name": "m", "method": "upo", "steer_reward_mixes": MIXES},
                       {"name": "both", "method": "upo", "steer_aux_coefs": [0, 1], "steer_reward_mixes": MIXES},
                       {"name": "aux", "method": "upo", "steer_aux_coefs": [0.3]}]}
    points = expand_points(spec, {"rewards": {"safety": 1.0}})
    assert [(p.name, p.group, p.aux_coef, p.variant, p.trained) for p in points] == [
        ("m-safe", "steered", None, "safe", "m"), ("m-short", "steered", None, "short", "m"),
        ("both-aux0-safe", "steered", 0.0, "safe", "both"), ("both-aux0-short", "steered", 0.0, "short", "both"),
        ("both-aux1-safe", "steered", 1.0, "safe", "both"), ("both-aux1-short", "steered", 1.0, "short", "both"),
        ("aux-aux0.3", "steered", 0.3, None, "aux")]  # aux_coef alone: as before
    assert [condition_folder(p.aux_coef, p.variant) for p in points] == [
        "mix-safe", "mix-short", "aux-0-mix-safe", "aux-0-mix-short", "aux-1-mix-safe", "aux-1-mix-short", "aux-0.3"]
    # the base's rewards are not a mixed point's (its config would refuse both), but are the others'
    assert "rewards" not in config_keys({"rewards": {"safety": 1.0}}, points[0].overrides)
    assert config_keys({"rewards": {"safety": 1.0}}, points[-1].overrides)["rewards"] == {"safety": 1.0}


def test_each_condition_of_a_mixed_point_is_evaluated_with_its_tokens_in_its_folder(tmp_path, monkeypatch):
    """`upo frontier` evaluates a trained mixed point's conditions with their aux_coef and reward_mix,
    into aux-C-mix-MIX/ of the one run folder (run_eval replaced: it sees the config it would run)."""
    from upo.frontier import run

    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(json.dumps({"output_dir": str(tmp_path / "f"), "base": {"dataset": "d.jsonl"},
                                      "points": [{"name": "both", "steer_aux_coefs": [1], "steer_reward_mixes": MIXES}]}))
    sweep = run.load_sweep(sweep_file)
    (tmp_path / "f" / "points" / "both" / "final").mkdir(parents=True)  # trained: only evaluated
    seen = []
    monkeypatch.setattr(run, "run_eval", lambda cfg, **kwargs: seen.append(cfg))
    for point in sweep.points:
        run._run_point(point, sweep, EvalConfig(), None, {}, None)
    assert [(c.aux_coef, c.reward_mix, c.output) for c in seen] == [
        (1.0, m, str(tmp_path / "f" / "points" / "both" / f"aux-1-mix-{m}")) for m in MIXES]
    assert all(c.model == str(tmp_path / "f" / "points" / "both" / "final") for c in seen)


# ---- training and evaluation end to end ---------------------------------------------------------


def test_steered_training_and_eval_over_two_mixes(tiny_model_dir, pairs_file, tmp_path, capsys, monkeypatch):
    """A tiny LoRA run over two mixes (KTO term): final/ records them, their tokens' embeddings train
    (they differ from the rows the resized model started with), and `upo eval --reward_mix` generates
    under the chosen one; an unknown or missing mix is refused."""
    from upo import policy_lm as trainer  # where the trainer sets its model up (add_lora)

    started = []  # the embeddings as LoRA receives them: resized, new rows initialized
    add_lora = trainer.add_lora
    monkeypatch.setattr(trainer, "add_lora", lambda lm, *a, **k: started.append(
        lm.get_input_embeddings().weight.detach().clone()) or add_lora(lm, *a, **k))
    final = train(run_config(tiny_model_dir, pairs_file, tmp_path / "t", rewards={}, steer_reward_mixes=MIXES,
                             lora=True, lora_r=4, max_steps=3, ref_model=str(tiny_model_dir)))
    assert read_reward_mixes(final) == MIXES and read_steering(final) is None
    tokenizer = AutoTokenizer.from_pretrained(final)
    ids = mix_token_ids(tokenizer)
    assert list(ids) == ["safe", "short"], "the saved tokenizer lost the mix tokens"
    embeddings = AutoModelForCausalLM.from_pretrained(final).get_input_embeddings().weight  # LoRA merged
    old = load_file(str(tiny_model_dir / "model.safetensors"))["model.embed_tokens.weight"]
    for token_id in ids.values():
        assert not torch.allclose(embeddings[token_id], started[0][token_id]), "mix token did not train"
    assert torch.equal(embeddings[: old.shape[0]], old)
    assert json.loads((final.parent / "reward_standardizer.json").read_text())["mixes"] == MIXES
    rows = [r for r in read_metrics(final.parent / "metrics.jsonl") if "train/loss" in r]
    assert rows and "train/upo/aux_coef_mean" not in rows[0]  # mixes alone: aux_coef is the config's

    cfg = dict(model=str(final), data=str(pairs_file), eval_fraction=0.25, prompts=2, max_new_tokens=4,
               scorers=["length_words"], ref_model=str(tiny_model_dir), precision="fp32", max_length=96,
               max_prompt_length=32, progress=False, cache_dir=str(tmp_path / "c"))
    with pytest.raises(SteeringError, match="trained mixes: safe, short"):
        run_eval(EvalConfig(**cfg, reward_mix="risky", output=str(tmp_path / "bad")))
    code = main(["eval", "--model", str(final), "--data", str(pairs_file), "--eval_fraction", "0.25",
                 "--progress", "false", "--output", str(tmp_path / "cli")])
    assert code == 2 and "choose one with reward_mix (--reward_mix), one of safe, short" in capsys.readouterr().err
    results = {m: run_eval(EvalConfig(**cfg, reward_mix=m, output=str(tmp_path / m))) for m in MIXES}
    assert results["safe"]["settings"]["reward_mix"] == "safe" and results["safe"]["counts"]["generations"] == 2
    # the mix is in the input: the held-out pairs' log-probs differ
    assert results["safe"]["metrics"]["logps/chosen"] != results["short"]["metrics"]["logps/chosen"]
    assert "reward_mix" not in EvalConfig().settings()  # other evaluations keep their settings


def test_steered_training_over_aux_coefs_and_mixes_with_a_dpo_term(tiny_model_dir, pairs_file, tmp_path):
    """Both steered: each pair carries an aux_coef and its mix's rewards; the prompts end with two tokens."""
    final = train(run_config(tiny_model_dir, pairs_file, tmp_path, pref_loss="dpo", rewards={},
                             steer_aux_coefs=[0.0, 2.0], steer_reward_mixes=MIXES, standardize_rewards=False))
    assert read_steering(final) == [0.0, 2.0] and read_reward_mixes(final) == MIXES
    rows = [r for r in read_metrics(final.parent / "metrics.jsonl") if "train/loss" in r]
    assert rows and all(r["train/upo/aux_coef_mean"] in (0.0, 1.0, 2.0) for r in rows)
    # each pair's mix's r_a, unstandardized here: lengths, positive or negative by the mix (none: zeros)
    assert all(r["train/upo/reward_mean"] != 0.0 for r in rows)
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert list(steering_token_ids(tokenizer)) == [0.0, 2.0] and list(mix_token_ids(tokenizer)) == ["safe", "short"]
