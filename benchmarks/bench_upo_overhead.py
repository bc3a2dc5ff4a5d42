"""UPO's step against its preference-only step, interleaved step by step in one process.

bench_trl.py and bench_methods.py time UPO and its preference-only method in separate runs, so
this shared machine's drift between runs (often ±5-10%) is larger than UPO's extra work. Here both
take turns on the same batches in one process: for each batch, one KTO step and one UPO step
(UPO's KTO term plus the advantage-weighted term and the value head), in alternating order, with
the trainer's own pieces (upo.forward.step_inputs, the method table's losses, the value head,
fused AdamW, separate clipping of policy and head). Each method has its own optimizer over the
same model, so both see the same weights to within a few small updates. The figure is the median
of the per-batch ratios UPO / KTO.

    python benchmarks/bench_upo_overhead.py                 # full fine-tuning, bf16, batch 4, max_length 256
    python benchmarks/bench_upo_overhead.py --passes 1      # quicker

Figures are printed and written to benchmarks/results/upo-overhead.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import HH, cpu_model, machine_info, upo_config, versions, write_record
from accelerate import Accelerator

from upo.data.collate import LengthGroupedBatchSampler, collate_unpaired, sequence_lengths
from upo.forward import step_inputs
from upo.logps import CompletionLogps
from upo.methods import METHODS
from upo.modeling import ValueHead, disable_dropout, load_causal_lm, load_tokenizer, resolve_model_path
from upo.prepare import prepare_data
from upo.reference import make_reference_fn, precompute_reference_logps
from upo.stats import RESAMPLES, SEED, percentile_interval

RESULTS = Path(__file__).parent / "results"


def batch_bootstrap(kto: list[float], upo: list[float], batches: int, resamples: int = RESAMPLES,
                    seed: int = SEED) -> tuple[list[float], list[float]]:
    """95% percentile-bootstrap intervals of the median per-pair ratio UPO / KTO and of the ratio of
    total times, resampling the distinct batches (each with all its passes' pairs: a batch's passes
    are not independent), as [low, high] each. Pairs are in pass-major order."""
    kto_t, upo_t = np.asarray(kto).reshape(-1, batches), np.asarray(upo).reshape(-1, batches)  # [passes, batches]
    rng = np.random.default_rng(seed)
    medians, totals = [], []
    for _ in range(resamples):
        pick = rng.integers(0, batches, batches)
        k, u = kto_t[:, pick], upo_t[:, pick]
        medians.append(float(np.median(u / k)))
        totals.append(float(u.sum() / k.sum()))
    return list(percentile_interval(medians)), list(percentile_interval(totals))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HH)
    parser.add_argument("--batches", type=int, default=8, help="distinct batches (each a step of both methods)")
    parser.add_argument("--passes", type=int, default=3, help="passes over the batches (the first batch of the first pass is warm-up)")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--output", type=Path, default=RESULTS / "upo-overhead.json")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"skipping: {args.data} not found (the shared HH-RLHF pairs)")
        return 0

    cfgs = {name: upo_config(name, "kto", data=args.data, output_dir=Path("unused"), batch_size=args.batch_size,
                             steps=args.batches, max_length=args.max_length, precision="bf16", lora=False)
            for name in ("kto", "upo")}
    accelerator = Accelerator(mixed_precision="bf16")
    path = resolve_model_path(cfgs["upo"].model)
    tokenizer = load_tokenizer(path)
    data = prepare_data(cfgs["upo"], tokenizer, progress=False)  # unpaired items with their UPO rewards
    collate = lambda items: collate_unpaired(items, tokenizer.pad_token_id)  # noqa: E731
    lm = load_causal_lm(path)
    disable_dropout(lm)
    head = ValueHead(lm.config.hidden_size, cfgs["upo"].value_head_hidden)
    policy = CompletionLogps(lm, head)  # KTO's steps never call the head
    # The policy before any update is the reference (as in the trainer); the batches then carry it.
    precompute_reference_logps(data.train_items, "unpaired", collate,
                               make_reference_fn(accelerator, policy, None, lora=False), 2 * args.batch_size,
                               accelerator.device, progress=False)  # fmt: skip
    sampler = LengthGroupedBatchSampler(sequence_lengths(data.train_items), args.batch_size, seed=cfgs["upo"].seed)
    batches = [collate([data.train_items[i] for i in idx]) for idx in sampler][: args.batches]
    lr = cfgs["upo"].learning_rate
    optimizers = {
        "kto": torch.optim.AdamW(lm.parameters(), lr=lr, fused=True),
        "upo": torch.optim.AdamW([{"params": list(lm.parameters())},
                                  {"params": list(head.parameters()), "lr": cfgs["upo"].value_lr}], lr=lr, fused=True),
    }

    def step(name: str, batch) -> float:
        """One optimizer step of `name` on `batch`, as the trainer's loop does it; its wall time."""
        cfg, method = cfgs[name], METHODS[name]
        start = time.perf_counter()
        x = step_inputs(batch, policy, None, method, cfg, accelerator)
        loss, _ = method.loss(x, cfg)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), cfg.max_grad_norm)
        if method.uses_value_head:
            torch.nn.utils.clip_grad_norm_(head.parameters(), cfg.max_grad_norm)
        optimizers[name].step()
        optimizers[name].zero_grad()
        return time.perf_counter() - start

    step("kto", batches[0])  # warm-up: first-touch allocations, oneDNN kernel selection
    step("upo", batches[0])
    times: dict[str, list[float]] = {"kto": [], "upo": []}
    for p in range(args.passes):
        for i, batch in enumerate(batches):
            order = ("kto", "upo") if (p + i) % 2 == 0 else ("upo", "kto")  # who goes first alternates
            for name in order:
                times[name].append(step(name, batch))
        print(f"pass {p + 1}: kto {statistics.median(times['kto'][-len(batches):]):.3f} s/step, "
              f"upo {statistics.median(times['upo'][-len(batches):]):.3f} s/step", flush=True)
    ratios = [u / k for u, k in zip(times["upo"], times["kto"], strict=True)]
    quartiles = statistics.quantiles(ratios, n=4)
    median_interval, totals_interval = batch_bootstrap(times["kto"], times["upo"], len(batches))
    summary = {
        "upo_over_kto_median": statistics.median(ratios),
        "upo_over_kto_median_interval": median_interval,
        "upo_over_kto_quartiles": [quartiles[0], quartiles[2]],
        "upo_over_kto_of_totals": sum(times["upo"]) / sum(times["kto"]),
        "upo_over_kto_of_totals_interval": totals_interval,
        "kto_seconds_per_step": statistics.median(times["kto"]),
        "upo_seconds_per_step": statistics.median(times["upo"]),
        "pairs": len(ratios),
    }
    text = (f"SmolLM2-135M-Instruct, full fine-tuning, bf16, batch {args.batch_size}, max_length {args.max_length}, "
            f"{args.passes} passes x {len(batches)} batches, {torch.get_num_threads()} threads, {cpu_model()}\n"
            f"UPO (KTO term) / KTO step time, same batch, interleaved: median {summary['upo_over_kto_median']:.3f}x "
            f"[{median_interval[0]:.3f}, {median_interval[1]:.3f}] (quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}, "
            f"{len(ratios)} pairs); ratio of total times {summary['upo_over_kto_of_totals']:.3f}x "
            f"[{totals_interval[0]:.3f}, {totals_interval[1]:.3f}] (95%, batches resampled); "
            f"KTO {summary['kto_seconds_per_step']:.2f} s/step, "
            f"UPO {summary['upo_seconds_per_step']:.2f} s/step")
    print(text)
    record = {"settings": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(),
              "versions": versions("torch", "transformers", "accelerate", "upo"), "summary": summary,
              "samples": times, "table": text}
    write_record(args.output, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
