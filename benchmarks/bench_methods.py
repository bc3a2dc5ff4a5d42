"""Seconds per optimizer step of DPO, KTO and UPO on SmolLM2-135M-Instruct, measured in one run.

Same data (the shared HH-RLHF pairs), model, batch size, max_length, precision and LoRA settings
for every method; runs alternate method by method over several rounds so drift on a shared
machine hits all methods alike. UPO's overhead is reported against the preference-only method with
the same preference term (UPO-kto vs KTO, UPO-dpo vs DPO), which sees exactly the same batches.

    python benchmarks/bench_methods.py                 # LoRA, bf16, batch 4, max_length 256
    python benchmarks/bench_methods.py --steps 4 --rounds 1

Figures are printed and written to benchmarks/results/methods.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import HH, cpu_model, upo_config, write_record

from upo.metrics import read_metrics
from upo.trainer import train

VARIANTS = {  # name -> (method, pref_loss)
    "dpo": ("dpo", "dpo"),
    "upo-dpo": ("upo", "dpo"),
    "kto": ("kto", "kto"),
    "upo-kto": ("upo", "kto"),
}
BASELINE = {"upo-dpo": "dpo", "upo-kto": "kto"}


def run_once(name: str, args, workdir: Path) -> dict:
    method, pref = VARIANTS[name]
    cfg = upo_config(method, pref, data=args.data, output_dir=workdir / f"{name}-{time.monotonic_ns()}",
                     batch_size=args.batch_size, steps=args.warmup + args.steps, max_length=args.max_length,
                     precision=args.precision, lora=not args.full)
    final = train(cfg)
    rows = read_metrics(final.parent / "metrics.jsonl")[args.warmup :]
    return {
        "step_seconds": [r["train/step_seconds"] for r in rows],
        "tokens_per_second": [r["train/tokens_per_second"] for r in rows],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HH)
    parser.add_argument("--steps", type=int, default=6, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps at the start of each run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "methods.json")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipping: {args.data} not found (the shared HH-RLHF pairs)")
        return 0
    names = args.variants.split(",")
    samples: dict[str, dict[str, list[float]]] = {n: {"step_seconds": [], "tokens_per_second": []} for n in names}
    # UPO and its preference-only counterpart see the very same batches, so step i of one is
    # comparable with step i of the other in the same round: the per-step ratio cancels batch length.
    paired_ratios: dict[str, list[float]] = {n: [] for n in BASELINE if n in names and BASELINE[n] in names}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            this_round = {}
            for name in names:  # alternate methods within each round
                result = this_round[name] = run_once(name, args, Path(tmp))
                for key in samples[name]:
                    samples[name][key] += result[key]
                print(f"round {round_ + 1}: {name}: {statistics.median(result['step_seconds']):.2f} s/step", flush=True)
            for name in paired_ratios:
                upo, base = this_round[name]["step_seconds"], this_round[BASELINE[name]]["step_seconds"]
                paired_ratios[name] += [u / b for u, b in zip(upo, base, strict=True)]
    table = {}
    for name in names:
        sec = statistics.median(samples[name]["step_seconds"])
        table[name] = {"seconds_per_step": sec, "tokens_per_second": statistics.median(samples[name]["tokens_per_second"]),
                       "n_steps": len(samples[name]["step_seconds"])}
    for name, ratios in paired_ratios.items():
        table[name]["overhead_vs_" + BASELINE[name]] = statistics.median(ratios)
    print(f"\nSmolLM2-135M-Instruct, {'full' if args.full else 'LoRA'}, {args.precision}, batch {args.batch_size}, "
          f"max_length {args.max_length}, median over {args.rounds} rounds x {args.steps} steps")
    print("| method | s/step | tokens/s | step-time ratio vs preference-only (median of paired steps) |")
    print("|---|---|---|---|")
    for name, row in table.items():
        ratio = next((f"{v:.3f}x" for k, v in row.items() if k.startswith("overhead_vs_")), "")
        print(f"| {name} | {row['seconds_per_step']:.2f} | {row['tokens_per_second']:.0f} | {ratio} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    record = {"settings": {k: str(v) for k, v in vars(args).items()}, "machine": cpu_model(),
              "threads": torch.get_num_threads(), "results": table, "samples": samples,
              "paired_ratios": paired_ratios}
    write_record(args.output, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
