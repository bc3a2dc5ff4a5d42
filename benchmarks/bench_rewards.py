"""Throughput of the built-in rewards on synthetic ~60-word responses.

    .venv/bin/python benchmarks/bench_rewards.py [--n 2000] [--names safety,relevance]

Prints responses/second per built-in and writes the figures to benchmarks/results/rewards.json
(with --names, only those built-ins, and nothing is written). The target is TARGET_RPS
responses/second per built-in; `meets_target` says which ones reach it on this machine.

Every text is distinct, so textstat's per-text LRU caches (128 entries) cannot flatter the
numbers; the one-off cost of the first call (cmudict / classifier / model load) is reported
apart. Prompts are ~12-word questions, one per two responses as in paired data (`relevance`
embeds each distinct prompt once). The score_texts rows time all built-ins together through a
fresh sqlite cache: cold (score and store) and warm (lookups only).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import torch
from _common import write_record

from upo.rewards import BUILTIN_REWARDS, BUILTIN_VERSIONS, ScoreCache, score_texts

RESULTS = Path(__file__).resolve().parent / "results" / "rewards.json"
TARGET_RPS = 1000.0  # from the "upo scorers" issue: each built-in on the 2-core CPU machine

# Common words, academic words, words outside cmudict (pyphen path), numbers and names.
VOCAB = (
    "the a to of and you it is that can for your this with be not if are or have but do "
    "help people time water house simple answer question think good make sure try "
    "information important different example understand because however research "
    "particularly approximately environment consideration responsibility communication "
    "opportunities characteristics recommendation unfortunately "
    "chatbot smartphone uploaded skincare cryptocurrency 2024 42 3.5 Paris Kubernetes"
).split()


def synthetic_responses(n: int, seed: int = 0) -> list[str]:
    """n distinct responses of 60 words (plus a numeric suffix), in sentences of up to 18 words."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        sentences, words = [], 0
        while words < 60:
            k = min(rng.randint(4, 18), 60 - words)
            sentence = " ".join(rng.choice(VOCAB) for _ in range(k))
            sentences.append(sentence.capitalize() + rng.choice(".!?."))
            words += k
        texts.append(f"{' '.join(sentences)} ({i})")  # the suffix keeps every text distinct
    return texts


def synthetic_prompts(n: int, seed: int = 0) -> list[str]:
    """One distinct ~12-word question per two responses: [q0, q0, q1, q1, ...][:n]."""
    rng = random.Random(seed)
    questions = [
        f"How can I {' '.join(rng.choice(VOCAB) for _ in range(10))} ({i})?" for i in range((n + 1) // 2)
    ]
    return [q for q in questions for _ in range(2)][:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of responses")
    parser.add_argument(
        "--names", help="comma-separated built-ins to time (default: all; then nothing is written)"
    )
    args = parser.parse_args()
    names = args.names.split(",") if args.names else list(BUILTIN_REWARDS)

    texts = synthetic_responses(args.n)
    prompts = synthetic_prompts(args.n)
    warmup = synthetic_responses(8, seed=1)
    results: dict[str, dict[str, float | bool]] = {}
    for name in names:
        fn = BUILTIN_REWARDS[name]
        start = time.perf_counter()
        fn(synthetic_prompts(len(warmup), seed=1), warmup)
        first_call_s = time.perf_counter() - start
        start = time.perf_counter()
        fn(prompts, texts)
        seconds = time.perf_counter() - start
        results[name] = {
            "seconds": seconds,
            "responses_per_second": len(texts) / seconds,
            "first_call_seconds": first_call_s,
            "meets_target": len(texts) / seconds >= TARGET_RPS,
        }
        r = results[name]
        print(f"{name:28s} {r['responses_per_second']:>10,.0f} responses/s  ({seconds:.3f} s)", flush=True)

    if not args.names:
        with tempfile.TemporaryDirectory() as cache_dir, ScoreCache(cache_dir) as cache:
            for label in ("score_texts_all_cold_cache", "score_texts_all_warm_cache"):
                start = time.perf_counter()
                score_texts(prompts, texts, names, cache=cache, progress=False)
                seconds = time.perf_counter() - start
                results[label] = {"seconds": seconds, "responses_per_second": len(texts) / seconds}
                print(f"{label:28s} {len(texts) / seconds:>10,.0f} responses/s  ({seconds:.3f} s)")

    missed = [name for name in names if not results[name]["meets_target"]]
    print(f"below {TARGET_RPS:,.0f} responses/s: {', '.join(missed) or 'none'}")
    if args.names:
        return
    report = {
        "n_responses": len(texts),
        "mean_words": sum(len(t.split()) for t in texts) / len(texts),
        "n_distinct_prompts": len(set(prompts)),
        "target_responses_per_second": TARGET_RPS,
        "below_target": missed,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "versions": BUILTIN_VERSIONS,
        "results": results,
    }
    write_record(RESULTS, report)


if __name__ == "__main__":
    main()
