"""Judges: the reward-model judge on a tiny classifier, the LLM judge against a local HTTP server."""

from __future__ import annotations

import json
import re
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import save_tiny_reward_model

from upo.judges import JudgeError, LLMJudge, RewardModelJudge, parse_answer, win_rate
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
    with pytest.raises(ValueError, match="0, 0.5 or 1"):
        win_rate([1.0, 0.7])


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


class FakeJudgeServer:
    """A /v1/chat/completions endpoint on 127.0.0.1 that prefers the shorter response, or always
    answers `fixed`; it fails its first `failures` requests with the given HTTP statuses and
    answers 401 without the right bearer token. Records (A, B) of every question it answered."""

    def __init__(self, failures: tuple[int, ...] = (), fixed: str | None = None):
        self.failures = list(failures)
        self.fixed = fixed
        self.requests = 0
        self.asked: list[tuple[str, str]] = []
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
                a, b = re.search(r"\[Response A\]\n(.*)\n\n\[Response B\]\n(.*)\n\nAnswer", user, re.S).groups()
                with server.lock:
                    server.asked.append((a, b))
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


def test_llm_judge_unreadable_answers_tie_after_retries(api_key):
    with FakeJudgeServer(fixed="I cannot decide.") as server:
        outcomes = _judge(server, max_retries=2).compare(["Q"], ["a"], ["bb"])
    assert outcomes == [0.5]
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
