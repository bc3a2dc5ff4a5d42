"""Reference log-probs: the reference model's forward, and the one batched log-prob loop.

The reference model is either a separate frozen copy or, with LoRA, the policy itself with its
adapters disabled. Reference log-probs can be computed once before training
(`precompute_reference_logps`), after which the batches carry them and no reference forward runs;
they are saved with the run (`reference_table`) so a resume reuses them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from upo.logps import sequence_logps

ReferenceFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def make_reference_fn(accelerator, policy, ref_model, padding_free: bool = True) -> ReferenceFn:
    """(input_ids, attention_mask, loss_mask) -> reference summed log-probs [N], no grad."""

    @torch.no_grad()
    def reference_logps(input_ids, attention_mask, loss_mask) -> torch.Tensor:
        with accelerator.autocast():
            if ref_model is not None:
                return sequence_logps(ref_model, input_ids, attention_mask, loss_mask, padding_free=padding_free).sum
            lm = accelerator.unwrap_model(policy).lm
            with lm.disable_adapter():  # LoRA: the base model is the reference
                return policy(input_ids, attention_mask, loss_mask)["sum"]

    return reference_logps


@torch.no_grad()
def precompute_reference_logps(items: list[dict], fmt: str, collate, reference_fn, batch_size: int,
                               device, progress: bool = True, desc: str = "reference log-probs",
                               with_kl: bool = True) -> None:
    """Store reference log-probs in every item (`reference_chosen_logps` / `reference_rejected_logps`
    for pairs; `reference_logps`, and with `with_kl` `reference_kl_logps` of KTO's mismatched
    sequences, for unpaired examples)."""
    order = sorted(range(len(items)), key=lambda i: -_length(items[i]))  # little padding per batch
    bar = tqdm(total=len(items), desc=desc, disable=not progress, leave=False)
    for start in range(0, len(order), batch_size):
        chunk = [items[i] for i in order[start : start + batch_size]]
        batch = {k: v.to(device) for k, v in collate(chunk).items()}
        ref = reference_fn(batch["input_ids"], batch["attention_mask"], batch["loss_mask"]).float().cpu()
        if fmt == "paired":
            n = len(chunk)
            for item, chosen, rejected in zip(chunk, ref[:n].tolist(), ref[n:].tolist(), strict=True):
                item["reference_chosen_logps"], item["reference_rejected_logps"] = chosen, rejected
        else:
            for item, r in zip(chunk, ref.tolist(), strict=True):
                item["reference_logps"] = r
            if with_kl:
                kl = reference_fn(batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_loss_mask"]).float().cpu()
                for item, k in zip(chunk, kl.tolist(), strict=True):
                    item["reference_kl_logps"] = k
        bar.update(len(chunk))
    bar.close()


def _length(item: dict) -> int:
    completion = max(len(item.get(k, [])) for k in ("chosen_ids", "rejected_ids", "completion_ids"))
    return len(item["prompt_ids"]) + completion


REFERENCE_KEYS = ("reference_chosen_logps", "reference_rejected_logps", "reference_logps", "reference_kl_logps")


def reference_table(items: list[dict]) -> dict[str, torch.Tensor]:
    """The precomputed reference log-probs as tensors (saved with the run so a resume reuses them)."""
    return {k: torch.tensor([it[k] for it in items]) for k in REFERENCE_KEYS if items and k in items[0]}


def attach_reference_table(items: list[dict], table: dict[str, torch.Tensor]) -> bool:
    if not table or any(len(v) != len(items) for v in table.values()):
        return False
    for key, values in table.items():
        for item, value in zip(items, values.tolist(), strict=True):
            item[key] = value
    return True
