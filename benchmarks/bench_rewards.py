"""Throughput of the built-in rewards on synthetic ~60-word responses.

    .venv/bin/python benchmarks/bench_rewards.py [--n 2000]

Prints responses/second per built-in and writes the figures to benchmarks/results/rewards.json.
Every text is distinct, so textstat's per-text LRU caches (128 entries) cannot flatter the
numbers; the one-off cost of the first call (cmudict / classifier load) is reported apart.
The score_texts rows time all built-ins together through a fresh sqlite cache: cold (score and
store) and warm (lookups only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

from upo.rewards import BUILTIN_REWARDS, BUILTIN_VERSIONS, ScoreCache, score_texts

RESULTS = Path(__file__).resolve().parent / "results" / "rewards.json"

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of responses")
    args = parser.parse_args()

    texts = synthetic_responses(args.n)
    prompts = [""] * len(texts)
    warmup = synthetic_responses(8, seed=1)
    results: dict[str, dict[str, float]] = {}
    for name, fn in BUILTIN_REWARDS.items():
        start = time.perf_counter()
        fn([""] * len(warmup), warmup)
        first_call_s = time.perf_counter() - start
        start = time.perf_counter()
        fn(prompts, texts)
        seconds = time.perf_counter() - start
        results[name] = {
            "seconds": seconds,
            "responses_per_second": len(texts) / seconds,
            "first_call_seconds": first_call_s,
        }

    names = list(BUILTIN_REWARDS)
    with tempfile.TemporaryDirectory() as cache_dir, ScoreCache(cache_dir) as cache:
        for label in ("score_texts_all_cold_cache", "score_texts_all_warm_cache"):
            start = time.perf_counter()
            score_texts(prompts, texts, names, cache=cache, progress=False)
            seconds = time.perf_counter() - start
            results[label] = {"seconds": seconds, "responses_per_second": len(texts) / seconds}

    for name, r in results.items():
        print(f"{name:28s} {r['responses_per_second']:>10,.0f} responses/s  ({r['seconds']:.3f} s)")

    report = {
        "n_responses": len(texts),
        "mean_words": sum(len(t.split()) for t in texts) / len(texts),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": BUILTIN_VERSIONS,
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
