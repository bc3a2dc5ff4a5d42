"""Judges: the reward-model judge on a tiny classifier, the LLM judge against a local HTTP server."""

from __future__ import annotations

import traceback

import pytest
from fake_judge_server import KEY, KEY_ENV, FakeJudgeServer, make_judge
from helpers import save_tiny_reward_model

from upo.judge_protocols import parse_answer
from upo.judges import JudgeError, LLMJudge, RewardModelJudge, win_rate
from upo.rewards.cache import ScoreCache

# ---- win rate --------------------------------------------------------------------------------


def test_win_rate_counts_ties_half():
    assert win_rate([1.0, 0.0, 0.5, 0.5]) == 0.5
    assert win_rate([1.0, 1.0, 0.5]) == pytest.approx(2.5 / 3)
    assert win_rate([0.0]) == 0.0
    with pytest.raises(ValueError, match="no outcomes"):
        win_rate([])
    with pytest.raises(ValueError, match="0, 0.5, 1 or None"):
        win_rate([1.0, 0.7])


def test_win_rate_leaves_out_items_without_a_verdict():
    # 1 win, 1 tie, 2 without a verdict: (1 + 0.5) / 2, not / 4
    assert win_rate([1.0, None, 0.5, None]) == 0.75
    with pytest.raises(ValueError, match="no outcomes with a verdict"):
        win_rate([None, None])


def test_parse_answer():
    for text, expected in [("A", "A"), (" b.", "B"), ("**B**", "B"), ("Response A", "A"), ("Answer: B", "B"),
                           ("(A)", "A"), ("A or B", None), ("Both are fine", None), ("", None), ("AB", None)]:
        assert parse_answer(text) == expected, text


# ---- reward-model judge ------------------------------------------------------------------------


PROMPTS = ["Tell me about tea.", "Tell me about snow.", "Hi?"]
RESPONSES = ["Tea is a drink made from leaves.", "No.", "Hello there, how can I help you today?"]
REFERENCES = ["Tea is a drink made from leaves.", "Snow is frozen water that falls from clouds.", "Go away."]


def test_reward_model_judge_wins_losses_and_ties(tiny_tokenizer, tmp_path):
    save_tiny_reward_model(tiny_tokenizer, tmp_path / "rm")
    save_tiny_reward_model(tiny_tokenizer, tmp_path / "neg", sign=-1.0)
    judge = RewardModelJudge(str(tmp_path / "rm"), batch_size=2)
    outcomes = judge.compare(PROMPTS, RESPONSES, REFERENCES)
    assert outcomes[0] == 0.5  # the response is the reference: a tie, whatever its batch
    scores = judge.scores(PROMPTS * 2, RESPONSES + REFERENCES)
    expected = [1.0 if r > ref else 0.0 for r, ref in zip(scores[1:3], scores[4:6], strict=True)]
    assert outcomes[1:] == expected
    # the negated head reverses every decided outcome and keeps the tie
    flipped = RewardModelJudge(str(tmp_path / "neg")).compare(PROMPTS, RESPONSES, REFERENCES)
    assert flipped == [1.0 - o for o in outcomes]
    assert 0.0 in outcomes + flipped and 1.0 in outcomes + flipped  # both a win and a loss were exercised
    assert win_rate(outcomes) + win_rate(flipped) == pytest.approx(1.0)
    assert judge.name == "rm" and "rm" in repr(judge)


def test_reward_model_judge_uses_the_cache(tiny_tokenizer, tmp_path, monkeypatch):
    save_tiny_reward_model(tiny_tokenizer, tmp_path / "rm")
    with ScoreCache(tmp_path / "cache") as cache:
        judge = RewardModelJudge(str(tmp_path / "rm"), cache=cache)
        first = judge.compare(PROMPTS, RESPONSES, REFERENCES)

        def fail(*args):
            raise AssertionError("scored again instead of reading the cache")

        monkeypatch.setattr(judge, "_score", fail)
        assert judge.compare(PROMPTS, RESPONSES, REFERENCES) == first
        # the same model under another max_length is another cache key: scored afresh
        other = RewardModelJudge(str(tmp_path / "rm"), max_length=8, cache=cache)
        calls = []
        original = other._score
        monkeypatch.setattr(other, "_score", lambda p, c: calls.append(len(c)) or original(p, c))
        other.compare(PROMPTS, RESPONSES, REFERENCES)
        assert calls == [5]  # 6 texts, one duplicate (response 0 = reference 0)


# ---- LLM judge against a local server ----------------------------------------------------------


def test_llm_judge_asks_both_orders_and_decides(api_key):
    prompts = ["Q1", "Q2", "Q3"]
    responses = ["short", "a much longer response", "same size!"]
    references = ["a much longer reference", "tiny", "equal size"]
    with FakeJudgeServer() as server:
        outcomes = make_judge(server).compare(prompts, responses, references)
    assert outcomes[:2] == [1.0, 0.0]  # the shorter one wins, in both orders
    # equal lengths: the server answers A both times, so the answer flips with the order: a tie
    assert outcomes[2] == 0.5
    assert sorted(server.asked) == sorted([(r, ref) for r, ref in zip(responses, references, strict=True)]
                                          + [(ref, r) for r, ref in zip(responses, references, strict=True)])
    assert server.requests == 6


def test_llm_judge_position_bias_is_a_tie(api_key):
    with FakeJudgeServer(fixed="A") as server:
        outcomes = make_judge(server).compare(["Q1", "Q2"], ["x", "a long one"], ["a long one", "x"])
    assert outcomes == [0.5, 0.5] and win_rate(outcomes) == 0.5


def test_llm_judge_unreadable_answers_count_for_neither_side_after_retries(api_key):
    with FakeJudgeServer(fixed="I cannot decide.") as server:
        outcomes = make_judge(server, max_retries=2).compare(["Q"], ["a"], ["bb"])
    assert outcomes == [None]
    assert server.requests == 2 * 3  # two questions, each asked 1 + 2 times


def test_llm_judge_retries_server_errors_and_rate_limits(api_key):
    with FakeJudgeServer(failures=(500, 429, 503)) as server:
        outcomes = make_judge(server, concurrency=1).compare(["Q"], ["short"], ["much longer"])
    assert outcomes == [1.0]
    assert server.requests == 3 + 2  # three failures retried, then both questions answered


def test_llm_judge_gives_up_without_leaking_the_key(api_key):
    with FakeJudgeServer(failures=(500,) * 10) as server:
        judge = make_judge(server, max_retries=2)
        with pytest.raises(JudgeError) as error:
            judge.ask("Q", "a", "b")
    assert server.requests == 3
    text = "".join(traceback.format_exception(error.value))
    assert "HTTP 500" in text and "after 3 attempts" in text
    assert KEY not in text and KEY not in repr(judge) and KEY not in str(vars(judge))


def test_llm_judge_bad_key_fails_at_once(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY + "-wrong")
    with FakeJudgeServer() as server:
        with pytest.raises(JudgeError, match=f"HTTP 401.*\\${KEY_ENV}") as error:
            make_judge(server).ask("Q", "a", "b")
    assert server.requests == 1  # a client error is not retried
    assert KEY + "-wrong" not in "".join(traceback.format_exception(error.value))


def test_llm_judge_retries_connection_errors(api_key):
    with FakeJudgeServer() as server:
        base_url = server.base_url
    judge = LLMJudge(base_url, "m", api_key_env=KEY_ENV, backoff=0.001, max_retries=1, timeout=2)
    with pytest.raises(JudgeError, match="after 2 attempts") as error:  # the server is gone
        judge.compare(["Q"], ["a"], ["b"])
    assert KEY not in "".join(traceback.format_exception(error.value))



def test_an_llm_judge_that_nothing_answers_fails_before_any_generation(tiny_model_dir, pairs_file, tmp_path, capsys):
    """check_reachable: any HTTP reply counts (the fake server has no GET route: 501); a closed port
    or a URL that is not http(s) is a JudgeError, which `upo eval` reports as one line before it loads
    the model (the output folder is never made)."""
    with FakeJudgeServer() as server:
        LLMJudge(server.base_url, "m").check_reachable()
        gone = server.base_url
    with pytest.raises(JudgeError, match="nothing answers at judge_base_url"):
        LLMJudge(gone, "m", timeout=2).check_reachable()
    with pytest.raises(JudgeError, match="not an http.s. URL"):
        LLMJudge("localhost:8000/v1", "m").check_reachable()
    from upo.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(pairs_file), "--judge", "llm",
                 "--judge_model", "m", "--judge_base_url", gone, "--output", str(out)]) == 2
    assert "upo: error: LLM judge: nothing answers" in capsys.readouterr().err
    assert not out.exists()


def test_reward_model_judge_shows_a_bar_over_the_texts_it_scores(tiny_tokenizer, tmp_path, capsys):
    save_tiny_reward_model(tiny_tokenizer, tmp_path / "rm")
    capsys.readouterr()
    RewardModelJudge(str(tmp_path / "rm"), batch_size=2, progress=True).compare(PROMPTS, RESPONSES, REFERENCES)
    assert "judge:   0%|          | 0/5" in capsys.readouterr().err  # 6 texts, one of them twice
    RewardModelJudge(str(tmp_path / "rm"), batch_size=2).compare(PROMPTS, RESPONSES, REFERENCES)
    assert capsys.readouterr().err == ""  # off unless asked


def test_a_missing_reward_model_folder_is_named_before_anything_is_generated(tiny_model_dir, tiny_tokenizer, pairs_file,
                                                                           tmp_path):
    """`rm:runs/rm/final` (a relative path: transformers would read it as a malformed Hub name) that
    does not exist: `upo eval` says so before generating; a sweep warns at its start and trains on."""
    from upo.evaluation.config import EvalConfig
    from upo.evaluation.eval import run_eval
    from upo.frontier.run import missing_judge_warning

    missing = "rm:runs/no-such-rm/final"
    cfg = EvalConfig(model=str(tiny_model_dir), data=str(pairs_file), eval_fraction=0.25, prompts=2, max_new_tokens=4,
                     judge=missing, progress=False, output=str(tmp_path / "eval"))
    with pytest.raises(FileNotFoundError, match="reward model rm:runs/no-such-rm/final: the folder runs/no-such-rm/final "
                                                "does not exist"):
        run_eval(cfg)
    assert not (tmp_path / "eval").exists()  # nothing generated
    assert "does not exist" in missing_judge_warning(cfg) and "runs will train" in missing_judge_warning(cfg)
    assert missing_judge_warning(EvalConfig(judge="rm:owner/name")) is None  # a Hub name: left to transformers
    assert missing_judge_warning(EvalConfig(judge=f"rm:{save_tiny_reward_model(tiny_tokenizer, tmp_path / 'rm')}")) is None
