"""Shared prompts against unshared forwards, interleaved batch by batch in one process.

bench_trl.py times `shared_prompt: true` and `false` in separate runs, minutes apart, and this
machine's speed drifts by tens of percent over minutes. Here both take turns on the same batches
in one process, with the trainer's own pieces (upo.forward.step_inputs, the method table's loss,
backward): for DPO, one step with each pair's prompt run once and one with it run twice; for
KTO, one step whose mismatched sequences reuse the prompts' keys and values and one that runs
them whole. Gradients are computed and dropped (no optimizer step), so both see the same
weights. The figures are medians of the per-batch ratios unshared / shared.

    python benchmarks/bench_shared_prompt.py                # full fine-tuning, bf16, batch 4, max_length 256
    python benchmarks/bench_shared_prompt.py --passes 1     # quicker

Figures are printed and written to benchmarks/results/shared-prompt.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import HH, cpu_model, machine_info, upo_config, versions, write_record
from accelerate import Accelerator

from upo.data.collate import LengthGroupedBatchSampler, collate_fn, sequence_lengths
from upo.forward import step_inputs
from upo.logps import CompletionLogps
from upo.methods import METHODS
from upo.modeling import disable_dropout, load_causal_lm, load_tokenizer, resolve_model_path
from upo.prepare import prepare_data
from upo.reference import make_reference_fn, precompute_reference_logps

RESULTS = Path(__file__).parent / "results"


def _step(policy, method, cfg, accelerator, batch, shared: bool) -> float:
    """Forward and backward of one training step, prompts shared or not; its wall time."""
    policy.shared_prompt = shared
    start = time.perf_counter()
    loss, _ = method.loss(step_inputs(batch, policy, None, method, cfg, accelerator), cfg)
    loss.backward()
    policy.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HH)
    parser.add_argument("--batches", type=int, default=6, help="distinct batches per method")
    parser.add_argument("--passes", type=int, default=2, help="passes over the batches (after one warm-up step each)")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--output", type=Path, default=RESULTS / "shared-prompt.json")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"skipping: {args.data} not found (the shared HH-RLHF pairs)")
        return 0

    accelerator = Accelerator(mixed_precision="bf16")
    summary, samples = {}, {}
    lm = tokenizer = None
    for name in ("dpo", "kto"):
        cfg = upo_config(name, "kto", data=args.data, output_dir=Path("unused"), batch_size=args.batch_size,
                         steps=args.batches, max_length=args.max_length, precision="bf16", lora=False)
        if lm is None:
            path = resolve_model_path(cfg.model)
            tokenizer = load_tokenizer(path)
            lm = load_causal_lm(path)
            disable_dropout(lm)
        method, fmt = METHODS[name], METHODS[name].data
        data = prepare_data(cfg, tokenizer, progress=False)
        collate = collate_fn(fmt, tokenizer.pad_token_id)
        policy = CompletionLogps(lm)
        precompute_reference_logps(data.train_items, fmt, collate, make_reference_fn(accelerator, policy, None, False),
                                   2 * args.batch_size, accelerator.device, progress=False)
        sampler = LengthGroupedBatchSampler(sequence_lengths(data.train_items), args.batch_size, seed=cfg.seed)
        batches = [collate([data.train_items[i] for i in idx]) for idx in sampler][: args.batches]

        run = (policy, method, cfg, accelerator)
        _step(*run, batches[0], True)  # warm-up: first-touch allocations, kernel selection
        _step(*run, batches[0], False)
        times = {"shared": [], "unshared": []}
        for p in range(args.passes):
            for i, batch in enumerate(batches):
                for shared in ((True, False) if (p + i) % 2 == 0 else (False, True)):  # who goes first alternates
                    times["shared" if shared else "unshared"].append(_step(*run, batch, shared))
        ratios = [u / s for u, s in zip(times["unshared"], times["shared"], strict=True)]
        quartiles = statistics.quantiles(ratios, n=4)
        summary[name] = {"unshared_over_shared_median": statistics.median(ratios),
                         "unshared_over_shared_quartiles": [quartiles[0], quartiles[2]],
                         "shared_seconds_per_step": statistics.median(times["shared"]),
                         "unshared_seconds_per_step": statistics.median(times["unshared"]), "pairs": len(ratios)}
        samples[name] = times
        print(f"{name}: unshared / shared step time, same batch, interleaved: median {statistics.median(ratios):.3f}x "
              f"(quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}, {len(ratios)} pairs); shared "
              f"{summary[name]['shared_seconds_per_step']:.2f} s, unshared {summary[name]['unshared_seconds_per_step']:.2f} s",
              flush=True)
    text = (f"SmolLM2-135M-Instruct, full fine-tuning, bf16, forward + backward, batch {args.batch_size}, max_length "
            f"{args.max_length}, {args.passes} passes x {args.batches} batches, {torch.get_num_threads()} threads, "
            f"{cpu_model()}: " + "; ".join(f"{n} {s['unshared_over_shared_median']:.3f}x" for n, s in summary.items()))
    print(text)
    record = {"settings": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(),
              "versions": versions("torch", "transformers", "accelerate", "upo"), "summary": summary,
              "samples": samples, "table": text}
    write_record(args.output, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
