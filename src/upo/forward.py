"""Turning a collated batch into `StepInputs`: policy, reference, value head, KTO reference point.

The reference model is a separate frozen copy, or the policy itself: with LoRA, its adapters
disabled; without, before training, when the reference log-probs are computed once
(`precompute_reference_logps`), after which the batches carry them and no reference forward runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from upo import losses
from upo.logps import sequence_logps
from upo.methods import Method, needs_kto_reference_point
from upo.step import StepInputs

ReferenceFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def make_reference_fn(accelerator, policy, ref_model, lora: bool, padding_free: bool = True) -> ReferenceFn:
    """(input_ids, attention_mask, loss_mask) -> reference summed log-probs [N], no grad, under the
    policy's autocast: from `ref_model`, else from the policy itself (with `lora`, adapters disabled;
    without, only while it has not been updated: for precomputing them before training)."""

    @torch.no_grad()
    def reference_logps(input_ids, attention_mask, loss_mask) -> torch.Tensor:
        with accelerator.autocast():
            if ref_model is not None:
                return sequence_logps(ref_model, input_ids, attention_mask, loss_mask, padding_free=padding_free).sum
            lm = accelerator.unwrap_model(policy).lm
            trainable = [p for p in policy.parameters() if p.requires_grad]
            with lm.disable_adapter() if lora else contextlib.nullcontext():  # LoRA: the base model
                logps = policy(input_ids, attention_mask, loss_mask)["sum"]
            # peft re-enables the adapters by setting requires_grad on the parameters the module holds
            # at exit; under FSDP2 those are the gathered copies, not the shards the optimizer steps.
            for p in trainable:
                p.requires_grad_(True)
            return logps

    return reference_logps


def step_inputs(batch, policy, reference_fn, method: Method, cfg, accelerator) -> StepInputs:
    """Run the policy (and whatever the method needs) on one micro-batch.

    All its forward passes share one autocast region: autocast keeps the low-precision copies of
    the trainable weights it makes for the policy's forward until the outermost region ends, so
    KTO's mismatched-pair forward reuses them instead of casting 135M weights again (~70 ms a step
    on 2 CPU cores). The forward with gradient runs first; torch does not cache casts made without
    gradient, so the order is safe either way.
    """
    with accelerator.autocast():
        out = policy(
            batch["input_ids"],
            batch["attention_mask"],
            batch["loss_mask"],
            batch["prompt_last_index"] if method.uses_value_head else None,  # the policy's value head gives V(x)
        )
        reference = batch.get("reference_logps")
        if reference is None and method.uses_reference:
            reference = reference_fn(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
        z0 = None
        if needs_kto_reference_point(method, cfg.pref_loss) and "kl_input_ids" in batch:
            z0 = kto_reference_point(batch, policy, reference_fn, accelerator)
    return StepInputs(
        policy_logps=out["sum"],
        policy_mean_logps=out["mean"],
        reference_logps=reference,
        desirable=batch["desirable"],
        rewards=batch["rewards"],
        values=out.get("values"),
        kto_reference_point=z0,
        num_tokens=out["num_tokens"],
    )


@torch.no_grad()
def kto_reference_point(batch, policy, reference_fn, accelerator) -> torch.Tensor:
    """z0 from the mismatched (prompt_i, completion_j) sequences, averaged over all processes."""
    kl_policy = policy(batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_loss_mask"])["sum"]
    kl_reference = batch.get("kl_reference_logps")
    if kl_reference is None:
        kl_reference = reference_fn(batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_loss_mask"])
    # The mean runs over every process's mismatched pairs, so all processes share one z0.
    return losses.kto_reference_point(accelerator.gather(kl_policy), accelerator.gather(kl_reference))


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


@contextlib.contextmanager
def eval_mode(*modules):
    was_training = [m.training for m in modules if m is not None]
    for m in modules:
        if m is not None:
            m.eval()
    try:
        yield
    finally:
        for m, t in zip([m for m in modules if m is not None], was_training, strict=True):
            m.train(t)
