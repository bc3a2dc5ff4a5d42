"""The llm judge's paper preset (HALOs' comparison protocol) against a local server, in `upo eval`
and its config; and items without a verdict in per-prompt values and intervals."""

from __future__ import annotations

import pytest
from fake_judge_server import KEY_ENV, FakeJudgeServer, make_judge

# ---- the paper preset --------------------------------------------------------------------------

ITEMS = [f"Q{i}" for i in range(8)]
SHORT = [f"Short {i}." for i in range(8)]
LONG = [f"A much longer answer number {i}." for i in range(8)]
POLICY = [SHORT[i] if i % 2 else LONG[i] for i in range(8)]  # odd items: the policy's response is shorter
CHOSEN = [LONG[i] if i % 2 else SHORT[i] for i in range(8)]


def test_paper_preset_asks_once_in_a_random_recorded_order(api_key):
    with FakeJudgeServer() as server:
        judgments = make_judge(server, preset="paper", seed=3).judge(ITEMS, POLICY, CHOSEN)
    orders = [j.orders for j in judgments]
    assert all(len(o) == 1 for o in orders) and {o[0] for o in orders} == {True, False}  # both orders drawn
    assert server.requests == 8
    # the recorded order is the order the server was shown: response first means (policy, chosen)
    shown = {(POLICY[i], CHOSEN[i]) if orders[i][0] else (CHOSEN[i], POLICY[i]) for i in range(8)}
    assert set(server.asked) == shown
    # the server picks the shorter response wherever it stands: the policy wins exactly the odd items
    assert [j.outcome for j in judgments] == [float(i % 2) for i in range(8)]
    assert all(b["temperature"] == 0 and b["max_tokens"] == 10 and b["seed"] == 3 for b in server.bodies)
    assert "more helpful, harmless, and concise?" in server.bodies[0]["messages"][1]["content"]


def test_paper_preset_position_bias_follows_the_order(api_key):
    # a judge that always answers "Response A" picks whichever response was shown first
    with FakeJudgeServer(fixed="Response A") as server:
        judgments = make_judge(server, preset="paper", seed=3).judge(ITEMS, POLICY, CHOSEN)
    assert [j.outcome for j in judgments] == [1.0 if j.orders[0] else 0.0 for j in judgments]
    with FakeJudgeServer(fixed="Response A") as server:  # both orders asked: every item is a flip, a tie
        judgments = make_judge(server, preset="paper", both_orders=True).judge(ITEMS, POLICY, CHOSEN)
    assert server.requests == 16 and [j.outcome for j in judgments] == [0.5] * 8


def test_paper_preset_unparseable_counts_for_neither_side_and_is_not_asked_again(api_key):
    with FakeJudgeServer(fixed="They are both lovely.") as server:
        judge = make_judge(server, preset="paper", max_retries=3)
        outcomes = judge.compare(ITEMS[:3], POLICY[:3], CHOSEN[:3])
    assert outcomes == [None] * 3
    assert server.requests == 3  # temperature 0: asking again would give the same reply


def test_paper_preset_shows_the_conversation_with_roles(api_key):
    prompt = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
              {"role": "user", "content": "Tell me a joke"}]
    with FakeJudgeServer() as server:
        make_judge(server, preset="paper").compare([prompt], ["No. And then th"], ["Why did the chicken cross?"])
    user = server.bodies[0]["messages"][1]["content"]
    assert "User: Hi there\n\nAssistant: Hello!\n\nUser: Tell me a joke" in user
    assert "No.\n(end of Response" in user  # the hanging sentence was cut


def test_upo_eval_with_the_paper_preset(tiny_model_dir, pairs_file, tmp_path, api_key):
    """`upo eval --judge llm --judge_preset paper`: counts in eval.json, orders and replies in generations.jsonl."""
    import json

    from upo.cli import main

    out = tmp_path / "eval"
    with FakeJudgeServer() as server:
        code = main(["eval", "--model", str(tiny_model_dir), "--data", str(pairs_file), "--eval_fraction", "0.25",
                     "--prompts", "3", "--max_new_tokens", "6", "--scorers", "length_words", "--output", str(out),
                     "--precision", "fp32", "--max_length", "96", "--max_prompt_length", "32", "--progress", "false",
                     "--cache_dir", str(tmp_path / "cache"), "--judge", "llm", "--judge_base_url", server.base_url,
                     "--judge_model", "judge-model", "--judge_api_key_env", KEY_ENV, "--judge_preset", "paper",
                     "--judge_both_orders", "true", "--judge_seed", "5"])
    assert code == 0
    result = json.loads((out / "eval.json").read_text())
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    m = result["metrics"]
    assert m["judge/questions"] == 6 and server.requests == 6 and m["judge/unparseable"] == 0
    assert [r["judge"]["orders"] for r in rows] == [["response_first", "reference_first"]] * 3
    outcomes = [r["judge"]["outcome"] for r in rows]
    assert m["judge/comparisons"] == 3 and m["judge/win_rate"] == pytest.approx(sum(outcomes) / 3)
    assert result["settings"]["judge_preset"] == "paper" and result["settings"]["judge_seed"] == 5
    assert "paper preset, both orders, seed 5" in (out / "eval.md").read_text()


def test_eval_config_paper_preset_defaults_to_512_prompts():
    from upo.config import ConfigError
    from upo.evaluation.config import EvalConfig, load_eval_config

    llm = {"judge": "llm", "judge_base_url": "http://127.0.0.1:1/v1", "judge_model": "m"}
    assert EvalConfig().prompts == 64 and EvalConfig(**llm).prompts == 64
    assert EvalConfig(**llm, judge_preset="paper").prompts == 512
    assert load_eval_config(None, {**llm, "judge_preset": "paper", "prompts": "96"}).prompts == 96  # the config decides
    with pytest.raises(ConfigError, match="judge_preset must be one of swap, paper"):
        EvalConfig(**llm, judge_preset="halo")
    with pytest.raises(ConfigError, match="set judge: llm"):
        EvalConfig(judge="rm:runs/rm", judge_preset="paper")
    with pytest.raises(ConfigError, match="set judge: llm"):
        EvalConfig(judge_both_orders=True)
    # the protocol keys are settings of llm-judged evaluations only: earlier eval.json files stay current
    assert "judge_seed" not in EvalConfig(judge="rm:runs/rm").settings()
    assert EvalConfig(**llm, judge_seed=3).settings()["judge_seed"] == 3


# ---- items without a verdict in the per-prompt values and intervals ------------------------------


def test_units_without_a_verdict_are_left_out_of_means_and_resamples():
    import numpy as np

    from upo.evaluation.intervals import per_prompt, summarize, unit_section
    from upo.stats import bootstrap_means

    nan = float("nan")
    # two samples per prompt: (1, -) -> 1; (-, -) -> no value; (0.5, 0) -> 0.25
    assert np.allclose(per_prompt([1.0, nan, nan, nan, 0.5, 0.0], 2), [1.0, nan, 0.25], equal_nan=True)
    # resamples of units (1, -, 0): all three once -> (1 + 0) / 2; unit 0 twice and unit 1 -> 2 / 2;
    # unit 1 alone -> no value
    draws = bootstrap_means([1.0, nan, 0.0], np.array([[1.0, 1.0, 1.0], [2.0, 1.0, 0.0], [0.0, 3.0, 0.0]]))
    assert np.allclose(draws, [0.5, 1.0, nan], equal_nan=True)
    # without NaN, the plain mean of each resample, as before
    assert np.allclose(bootstrap_means([1.0, 0.5, 0.0], np.array([[1.0, 1.0, 1.0], [3.0, 0.0, 0.0]])), [0.5, 1.0])
    metrics, intervals = summarize({"judge/win_rate": np.array([1.0, nan, 0.0, 1.0]), "length/words": np.array([nan])})
    assert metrics == {"judge/win_rate": 2 / 3} and set(intervals) == {"judge/win_rate"}
    assert unit_section(["a", "b"], {"judge/win_rate": np.array([1.0, nan])})["values"] == {"judge/win_rate": [1.0, None]}


def test_upo_eval_paper_preset_without_any_verdict(tiny_model_dir, pairs_file, tmp_path, api_key):
    """A judge that never names a response: no win rate, every reply counted unparseable, null per-prompt values."""
    import json

    from upo.cli import main

    out = tmp_path / "eval"
    with FakeJudgeServer(fixed="Both responses are lovely.") as server:
        code = main(["eval", "--model", str(tiny_model_dir), "--data", str(pairs_file), "--eval_fraction", "0.25",
                     "--prompts", "2", "--max_new_tokens", "4", "--scorers", "length_words", "--output", str(out),
                     "--precision", "fp32", "--max_length", "96", "--max_prompt_length", "32", "--progress", "false",
                     "--cache_dir", str(tmp_path / "cache"), "--judge", "llm", "--judge_base_url", server.base_url,
                     "--judge_model", "judge-model", "--judge_api_key_env", KEY_ENV, "--judge_preset", "paper"])
    assert code == 0
    result = json.loads((out / "eval.json").read_text())
    m = result["metrics"]
    assert "judge/win_rate" not in m and "judge/win_rate" not in result["intervals"]
    assert (m["judge/questions"], m["judge/unparseable"], m["judge/comparisons"]) == (2, 2, 0)
    assert result["per_prompt"]["values"]["judge/win_rate"] == [None, None]
    assert server.requests == 2
