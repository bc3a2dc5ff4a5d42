"""Log-ratio at step 0 of full fine-tuning in bf16: how far the reference log-probs sit from the policy's.

Before any update the policy is the reference, so every implicit reward beta * (log pi_theta -
log pi_ref) should be 0. This runs `upo.trainer.train` for one DPO step on HH-RLHF pairs
(SmolLM2-135M-Instruct by default, bf16 autocast, full fine-tuning) and records, in the first
micro-batch, |policy - reference| summed log-probs per sequence: with the reference log-probs
precomputed (the default) and computed beside the policy in each step.

    python benchmarks/bf16_step0.py                  # 16 pairs, batch 4, max_length 256
    python benchmarks/bf16_step0.py --model PATH     # another model folder

Figures are printed and written to benchmarks/results/bf16-step0.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch
from _common import HH, machine_info, upo_config, versions, write_record

from upo import methods
from upo.config import EMBEDDED_MODEL
from upo.trainer import train

RESULTS = Path(__file__).parent / "results"


def step0_offsets(cfg) -> torch.Tensor:
    """[N] policy - reference summed log-probs of the first micro-batch of a run of `cfg`."""
    seen: list[torch.Tensor] = []
    dpo = methods.METHODS["dpo"]

    def spy(x, cfg):
        seen.append((x.policy_logps.detach() - x.reference_logps).float().cpu())
        return dpo.loss(x, cfg)

    methods.METHODS["dpo"] = dataclasses.replace(dpo, loss=spy)
    try:
        train(cfg)
    finally:
        methods.METHODS["dpo"] = dpo
    return seen[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HH)
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--output", type=Path, default=RESULTS / "bf16-step0.json")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"skipping: {args.data} not found (the shared HH-RLHF pairs)")
        return 0
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precompute in (True, False):
            cfg = upo_config("dpo", "dpo", data=args.data, output_dir=Path(tmp) / str(precompute),
                             batch_size=args.batch_size, steps=1, max_length=args.max_length, precision="bf16",
                             lora=False, model=args.model, rewards={})  # fmt: skip
            cfg.max_examples, cfg.precompute_ref_logps = 4 * args.batch_size, precompute
            offsets = step0_offsets(cfg)
            name = "precomputed" if precompute else "beside the policy"
            summary[name] = {"mean_abs": offsets.abs().mean().item(), "max_abs": offsets.abs().max().item(),
                             "mean": offsets.mean().item(), "sequences": len(offsets)}  # fmt: skip
            print(f"reference {name}: mean |policy - reference| logps at step 0 = {offsets.abs().mean().item():.4g} "
                  f"(max {offsets.abs().max().item():.4g}, signed mean {offsets.mean().item():.4g}, "
                  f"{len(offsets)} sequences)", flush=True)
    write_record(args.output, {"settings": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(),
                               "versions": versions("torch", "transformers", "accelerate", "upo"), "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
