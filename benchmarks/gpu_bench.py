"""upo (and TRL, when importable) on random-weight Qwen2-0.5B and -1.5B shapes: tokens/s, MFU, peak memory.

For a lent GPU, where nothing can be downloaded: the models are built in-process from their
configs (random weights: speed does not depend on them), the tokenizer is the tests' tiny BPE
tokenizer (its ids use the first 400 rows of the 151,936-row embedding; the LM head still runs
over the whole vocabulary), and the data are synthetic pairs of random words. Each variant trains
`--warmup + --steps` optimizer steps in bf16 autocast (fp32 weights, full fine-tuning), with
upo's and TRL's runners (bench_trl.py, _trl_runner.py: same token counts, same FLOP formula), one after the
other in this process; peak memory is torch.cuda.max_memory_allocated of each run.

MFU = model FLOP/s (6N per trained token + 2N per forward-only token, N = all parameters, the
tied embedding once) / the bf16 matmul peak measured here (best of a square 8192 matmul).

    python benchmarks/gpu_bench.py                 # on a GPU (benchmarks/gpu_check.sh runs it)
    python benchmarks/gpu_bench.py --tiny --steps 1 --warmup 1   # plumbing check on CPU
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from _trl_runner import run_trl
from bench_trl import measured, parse_args, run_upo

from upo.logps import CompletionLogps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import build_tiny_tokenizer  # noqa: E402  (the tests' tokenizer, built in-process; no pytest needed)

MODELS = {  # Qwen2-0.5B and Qwen2-1.5B shapes; "tiny" for a CPU plumbing check
    "qwen2-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=400, tie_word_embeddings=True),
}
WORDS = "the a of to and in is it you that he was for on are with as I his they be at one have this".split()


def bf16_matmul_peak(device: torch.device, size: int = 8192, reps: int = 10) -> float:
    """Best GFLOP/s of a size x size bf16 matmul on `device`."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(reps + 1):  # the first is a warm-up
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def save_model(name: str, folder: Path, device: torch.device) -> Path:
    """A random-weight Qwen2 of `name`'s shape + the tests' tokenizer, saved with save_pretrained."""
    tokenizer = build_tiny_tokenizer()
    config = transformers.Qwen2Config(**MODELS[name], max_position_embeddings=4096, pad_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    return folder


def synthetic_pairs(path: Path, n: int, words: int) -> Path:
    """`n` pairs: a prompt and two answers of random words, about `words` words each."""
    rng = random.Random(0)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(k // 2, k)))

    rows = [{"prompt": [{"role": "user", "content": text(words)}], "chosen": text(words), "rejected": text(words)}
            for _ in range(n)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="qwen2-0.5b,qwen2-1.5b")
    parser.add_argument("--tiny", action="store_true", help="the tiny model only (CPU plumbing check)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="also write the results here (JSON)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    names = ["tiny"] if args.tiny else args.models.split(",")
    variants = ["upo_dpo", "upo_upo", "upo_dpo_padded"]
    if importlib.util.find_spec("trl") is not None:
        variants.append("trl_dpo")
    else:
        print("gpu_bench: trl is not importable, upo only")
    peak = bf16_matmul_peak(device, size=512 if args.tiny else 8192)
    print(f"gpu_bench: {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}, "
          f"bf16 matmul peak {peak / 1e3:.1f} TFLOP/s, torch {torch.__version__}, transformers {transformers.__version__}")
    forward = CompletionLogps.forward  # run_upo wraps it to count tokens; restored after each run
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_pairs(Path(tmp) / "pairs.jsonl", args.batch_size * (args.warmup + args.steps), args.max_length // 6)
        for name in names:
            model_dir = save_model(name, Path(tmp) / name, device)
            bench_args = parse_args(["--model", str(model_dir), "--data", str(data), "--batch_size", str(args.batch_size),
                                     "--max_length", str(args.max_length), "--steps", str(args.steps),
                                     "--warmup", str(args.warmup), "--precision", "bf16", "--trl_attn", "sdpa"])  # fmt: skip
            for variant in variants:
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                run = run_upo if variant.startswith("upo") else run_trl
                try:
                    out = run(variant, bench_args, Path(tmp) / f"{name}-{variant}", time.perf_counter())
                finally:
                    CompletionLogps.forward = forward
                m = measured(out, args.warmup)
                row = {"model": name, "variant": variant, "params": out["params"]["n"],
                       "tokens_per_second": statistics.median(m["tokens_per_second"]),
                       "mfu": statistics.median(m["flops_per_second"]) / (peak * 1e9),
                       "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
                       "step_seconds": statistics.median(m["step_seconds"])}
                results.append(row)
                memory = f"{row['peak_memory_gib']:.1f} GiB" if row["peak_memory_gib"] is not None else "n/a (CPU)"
                print(f"gpu_bench: {name:11s} {variant:15s} {row['tokens_per_second']:9.0f} tokens/s  "
                      f"MFU {100 * row['mfu']:5.1f}%  peak memory {memory}  {row['step_seconds']:.3f} s/step", flush=True)
    if args.output:
        args.output.write_text(json.dumps({"bf16_matmul_peak_gflops": peak, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
