"""Judges: the reward-model judge on a tiny classifier, the LLM judge against a local HTTP server."""

from __future__ import annotations

import json
import re
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import save_tiny_reward_model

from upo.judge_protocols import parse_answer
from upo.judges import JudgeError, LLMJudge, RewardModelJudge, win_rate
from upo.rewards.cache import ScoreCache

KEY = "sk-test-very-secret-0123456789"
KEY_ENV = "UPO_TEST_JUDGE_KEY"

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


# where the two responses stand in the swap and the paper presets' questions
SHOWN = [re.compile(r"\[Response A\]\n(.*)\n\n\[Response B\]\n(.*)\n\nAnswer", re.S),
         re.compile(r"Response A:\n(.*)\n\(end of Response A\)\n\nResponse B:\n(.*)\n\(end of Response B\)", re.S)]


class FakeJudgeServer:
    """A /v1/chat/completions endpoint on 127.0.0.1 that prefers the shorter response, or always
    answers `fixed`; it fails its first `failures` requests with the given HTTP statuses and
    answers 401 without the right bearer token. Records (A, B) of every question it answered."""

    def __init__(self, failures: tuple[int, ...] = (), fixed: str | None = None):
        self.failures = list(failures)
        self.fixed = fixed
        self.requests = 0
        self.asked: list[tuple[str, str]] = []
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                with server.lock:
                    server.requests += 1
                    status = server.failures.pop(0) if server.failures else None
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    return self._send(401, {"error": "bad key"})
                if status is not None:
                    return self._send(status, {"error": "try again"})
                user = body["messages"][-1]["content"]
                a, b = next(m.groups() for m in (p.search(user) for p in SHOWN) if m)
                with server.lock:
                    server.asked.append((a, b))
                    server.bodies.append(body)
                answer = server.fixed or ("A" if len(a) <= len(b) else "B")
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": answer}}]})

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)  # quick shutdown

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def _judge(server, **kwargs) -> LLMJudge:
    options = dict(api_key_env=KEY_ENV, backoff=0.001, max_retries=4, timeout=5, concurrency=3)
    options.update(kwargs)
    return LLMJudge(server.base_url, "judge-model", **options)


def test_llm_judge_asks_both_orders_and_decides(api_key):
    prompts = ["Q1", "Q2", "Q3"]
    responses = ["short", "a much longer response", "same size!"]
    references = ["a much longer reference", "tiny", "equal size"]
    with FakeJudgeServer() as server:
        outcomes = _judge(server).compare(prompts, responses, references)
    assert outcomes[:2] == [1.0, 0.0]  # the shorter one wins, in both orders
    # equal lengths: the server answers A both times, so the answer flips with the order: a tie
    assert outcomes[2] == 0.5
    assert sorted(server.asked) == sorted([(r, ref) for r, ref in zip(responses, references, strict=True)]
                                          + [(ref, r) for r, ref in zip(responses, references, strict=True)])
    assert server.requests == 6


def test_llm_judge_position_bias_is_a_tie(api_key):
    with FakeJudgeServer(fixed="A") as server:
        outcomes = _judge(server).compare(["Q1", "Q2"], ["x", "a long one"], ["a long one", "x"])
    assert outcomes == [0.5, 0.5] and win_rate(outcomes) == 0.5


def test_llm_judge_unreadable_answers_count_for_neither_side_after_retries(api_key):
    with FakeJudgeServer(fixed="I cannot decide.") as server:
        outcomes = _judge(server, max_retries=2).compare(["Q"], ["a"], ["bb"])
    assert outcomes == [None]
    assert server.requests == 2 * 3  # two questions, each asked 1 + 2 times


def test_llm_judge_retries_server_errors_and_rate_limits(api_key):
    with FakeJudgeServer(failures=(500, 429, 503)) as server:
        outcomes = _judge(server, concurrency=1).compare(["Q"], ["short"], ["much longer"])
    assert outcomes == [1.0]
    assert server.requests == 3 + 2  # three failures retried, then both questions answered


def test_llm_judge_gives_up_without_leaking_the_key(api_key):
    with FakeJudgeServer(failures=(500,) * 10) as server:
        judge = _judge(server, max_retries=2)
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
            _judge(server).ask("Q", "a", "b")
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


# ---- the paper preset --------------------------------------------------------------------------

ITEMS = [f"Q{i}" for i in range(8)]
SHORT = [f"Short {i}." for i in range(8)]
LONG = [f"A much longer answer number {i}." for i in range(8)]
POLICY = [SHORT[i] if i % 2 else LONG[i] for i in range(8)]  # odd items: the policy's response is shorter
CHOSEN = [LONG[i] if i % 2 else SHORT[i] for i in range(8)]


def test_paper_preset_asks_once_in_a_random_recorded_order(api_key):
    with FakeJudgeServer() as server:
        judgments = _judge(server, preset="paper", seed=3).judge(ITEMS, POLICY, CHOSEN)
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
        judgments = _judge(server, preset="paper", seed=3).judge(ITEMS, POLICY, CHOSEN)
    assert [j.outcome for j in judgments] == [1.0 if j.orders[0] else 0.0 for j in judgments]
    with FakeJudgeServer(fixed="Response A") as server:  # both orders asked: every item is a flip, a tie
        judgments = _judge(server, preset="paper", both_orders=True).judge(ITEMS, POLICY, CHOSEN)
    assert server.requests == 16 and [j.outcome for j in judgments] == [0.5] * 8


def test_paper_preset_unparseable_counts_for_neither_side_and_is_not_asked_again(api_key):
    with FakeJudgeServer(fixed="They are both lovely.") as server:
        judge = _judge(server, preset="paper", max_retries=3)
        outcomes = judge.compare(ITEMS[:3], POLICY[:3], CHOSEN[:3])
    assert outcomes == [None] * 3
    assert server.requests == 3  # temperature 0: asking again would give the same reply


def test_paper_preset_shows_the_conversation_with_roles(api_key):
    prompt = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
              {"role": "user", "content": "Tell me a joke"}]
    with FakeJudgeServer() as server:
        _judge(server, preset="paper").compare([prompt], ["No. And then th"], ["Why did the chicken cross?"])
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
