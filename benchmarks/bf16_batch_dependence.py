"""How much a sequence's summed log-prob depends on the batch it is computed in, bf16 vs fp32.

Four HH-RLHF texts (150 tokens, the first 20 as prompt) through SmolLM2-135M-Instruct's
`upo.logps.sequence_logps`, packed and padded: as a batch of 4, within a batch of 16, and alone.
This is why precomputed reference log-probs are not bitwise the policy's at step 0 in bf16.

    python benchmarks/bf16_batch_dependence.py [--data HH-RLHF.jsonl.gz]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import torch
from _common import HH

from upo.config import EMBEDDED_MODEL
from upo.data.collate import collate_unpaired
from upo.logps import sequence_logps
from upo.modeling import load_causal_lm, load_tokenizer, resolve_model_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HH)
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"skipping: {args.data} not found (the shared HH-RLHF pairs)")
        return 0
    path = resolve_model_path(EMBEDDED_MODEL)
    tokenizer, lm = load_tokenizer(path), load_causal_lm(path).eval()
    with gzip.open(args.data, "rt") as f:
        texts = [json.loads(line)["chosen"][:600] for _, line in zip(range(16), f, strict=False)]
    ids = [tokenizer(t)["input_ids"][:150] for t in texts]
    items = [{"index": i, "prompt_ids": x[:20], "completion_ids": x[20:], "kl_completion_ids": x[20:], "label": True}
             for i, x in enumerate(ids)]  # fmt: skip

    def logps(rows: list[int], padding_free: bool, bf16: bool) -> torch.Tensor:
        batch = collate_unpaired([items[i] for i in rows], tokenizer.pad_token_id)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return sequence_logps(lm, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                                  padding_free=padding_free).sum  # fmt: skip

    for padding_free in (True, False):
        for bf16 in (True, False):
            four = logps(list(range(4)), padding_free, bf16)
            in_16 = logps(list(range(16)), padding_free, bf16)[:4]
            alone = torch.cat([logps([i], padding_free, bf16) for i in range(4)])
            print(f"{'packed' if padding_free else 'padded'} {'bf16' if bf16 else 'fp32'}: batch of 4 - within 16 "
                  f"{[round(v, 4) for v in (four - in_16).tolist()]}, batch of 4 - alone "
                  f"{[round(v, 4) for v in (four - alone).tolist()]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
