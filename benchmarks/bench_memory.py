"""Peak resident memory of upo and TRL at long sequences: DPO and KTO at max_length 1024 and 2048.

Each run is one of bench_trl.py's runs (its own process, so its peak RSS is its own: model load,
data, reference precompute and the steps), at bench_trl's equal settings. HH-RLHF's pairs are
mostly short, so the runs get its longest ones: the `batch_size * (warmup + steps)` pairs with the
most characters, written to a temporary file that both libraries read. Sequences still end where
the data ends, so a run's sequences may be shorter than max_length: `largest_batch_tokens` gives
the real tokens of its largest trained batch (every sequence, both sides of the pairs).

    make bench-env
    .venv-bench/bin/python benchmarks/bench_memory.py          # 1024 and 2048, 1 warm-up + 2 steps each
    .venv-bench/bin/python benchmarks/bench_memory.py --lengths 128 --steps 1 --model /path/to/tiny-model  # plumbing
    .venv-bench/bin/python benchmarks/bench_memory.py --gradient_checkpointing --output benchmarks/results/memory-checkpointed.json

Results: a table, and benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

import torch
from _common import HH, machine_info, versions, write_record
from bench_trl import RESULTS, spawn

from upo.config import EMBEDDED_MODEL

VARIANTS = ("upo_dpo", "trl_dpo", "upo_kto", "trl_kto")
COUNTERPARTS = {"upo_dpo": "trl_dpo", "upo_kto": "trl_kto"}


def longest_pairs(data: Path, count: int, out: Path) -> None:
    """The `count` pairs of `data` (HH-RLHF JSON lines) with the most characters, to `out`."""
    with gzip.open(data, "rt") if data.suffix == ".gz" else data.open() as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows.sort(key=lambda r: -(len(r["chosen"]) + len(r["rejected"])))
    out.write_text("".join(json.dumps(r) + "\n" for r in rows[:count]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HH)
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--lengths", default="1024,2048", help="comma-separated max_length values")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="measured steps per run (after 1 warm-up)")
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32", "fp16"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--logits_chunk_tokens", type=int, default=None,
                        help="upo runs: completion tokens per LM-head chunk (0: all at once; default: upo's default)")
    parser.add_argument("--gradient_checkpointing", action="store_true",
                        help="activation checkpointing in both libraries (upo's gradient_checkpointing, TRL's own)")
    parser.add_argument("--output", type=Path, default=RESULTS / "memory.json")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"skipping: {args.data} not found (the shared HH-RLHF pairs)")
        return 0
    names = args.variants.split(",")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "longest.jsonl"
        longest_pairs(args.data, args.batch_size * (1 + args.steps), data)
        for length in (int(x) for x in args.lengths.split(",")):
            runs = {}
            for name in names:
                child_argv = ["--data", str(data), "--model", args.model, "--max_length", str(length),
                              "--batch_size", str(args.batch_size), "--warmup", "1", "--steps", str(args.steps),
                              "--precision", args.precision]
                if args.logits_chunk_tokens is not None:
                    child_argv += ["--logits_chunk_tokens", str(args.logits_chunk_tokens)]
                if args.gradient_checkpointing:
                    child_argv.append("--gradient_checkpointing")
                logdir = Path(tmp) / f"{name}-{length}"
                logdir.mkdir()
                run = spawn(name, child_argv, logdir)
                runs[name] = {"peak_rss_gb": run["peak_rss_bytes"] / 1e9, "largest_batch_tokens": max(run["trained_tokens"]),
                              "trained_tokens": run["trained_tokens"]}
                print(f"max_length {length}: {name}: peak RSS {runs[name]['peak_rss_gb']:.2f} GB, "
                      f"largest batch {runs[name]['largest_batch_tokens']} tokens", flush=True)
            ratios = {f"{u}/{t}": runs[u]["peak_rss_gb"] / runs[t]["peak_rss_gb"]
                      for u, t in COUNTERPARTS.items() if u in runs and t in runs}
            results[str(length)] = {"runs": runs, "peak_rss_ratios": ratios}
    lines = ["| max_length | run | peak RSS GB | largest batch (real tokens) | vs TRL |", "|---|---|---|---|---|"]
    for length, r in results.items():
        for name, run in r["runs"].items():
            ratio = r["peak_rss_ratios"].get(f"{name}/{COUNTERPARTS.get(name)}")
            lines.append(f"| {length} | {name} | {run['peak_rss_gb']:.2f} | {run['largest_batch_tokens']} | "
                         f"{f'{ratio:.2f}x' if ratio else ''} |")
    text = "\n".join(lines)
    print("\n" + text)
    write_record(args.output, {"settings": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(),
                               "threads": torch.get_num_threads(),
                               "versions": versions("torch", "transformers", "trl", "upo"), "results": results,
                               "table": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
