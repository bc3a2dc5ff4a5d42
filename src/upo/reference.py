"""Reference log-probs: the reference model's forward, and the one batched log-prob loop.

The reference model is a separate frozen copy, or the policy itself: with LoRA, its adapters
disabled; without, before training, when the reference log-probs are computed once
(`precompute_reference_logps`), after which the batches carry them and no reference forward runs;
they are saved with the run (`reference_table`) so a resume reuses them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate.utils import gather_object
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from upo.data.collate import collate_fn, sequence_lengths, stack_sequences
from upo.logps import sequence_logps

ReferenceFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def make_reference_fn(accelerator, policy, ref_model, lora: bool) -> ReferenceFn:
    """(input_ids, attention_mask, loss_mask) -> reference summed log-probs [N], no grad, under the
    policy's autocast: from `ref_model`, else from the policy itself (with `lora`, adapters disabled;
    without, only while it has not been updated: for precomputing them before training). `ref_model`
    runs with the policy's settings (`CompletionLogps`: padding-free, shared prompts, logits chunks)."""
    settings = accelerator.unwrap_model(policy)
    options = {"padding_free": settings.padding_free, "shared_prompt": settings.shared_prompt,
               "logits_chunk_tokens": settings.logits_chunk_tokens}

    @torch.no_grad()
    def reference_logps(input_ids, attention_mask, loss_mask) -> torch.Tensor:
        with accelerator.autocast():
            if ref_model is not None:
                return sequence_logps(ref_model, input_ids, attention_mask, loss_mask, **options).sum
            if not lora:  # full fine-tuning before any update: the policy is the reference
                return policy(input_ids, attention_mask, loss_mask)["sum"]
            trainable = [p for p in policy.parameters() if p.requires_grad]
            with accelerator.unwrap_model(policy).lm.disable_adapter():  # LoRA: the base model
                logps = policy(input_ids, attention_mask, loss_mask)["sum"]
            # peft re-enables the adapters by setting requires_grad on the parameters the module holds
            # at exit; under FSDP2 those are the gathered copies, not the shards the optimizer steps.
            for p in trainable:
                p.requires_grad_(True)
            return logps

    return reference_logps


@torch.no_grad()
def item_logps(items: list[dict], fmt: str, collate, logps_fn: ReferenceFn, *, batch_size: int, device,
               with_kl: bool = False, progress: bool = True, desc: str = "log-probs") -> list[dict[str, float]]:
    """Summed completion log-probs of every item's sequences, in the items' order: the one batched
    loop (sort by length, batch, collate, score, write back) of reference precompute and `upo eval`.

    `logps_fn(input_ids, attention_mask, loss_mask) -> [N]` runs without gradient, under whatever
    autocast and eval/train mode the caller gives it. Returns per item {"chosen_logps", "rejected_logps"} for
    pairs (`fmt` "paired"), {"logps"} for unpaired examples, plus with `with_kl` {"kl_logps"} of
    KTO's mismatched sequence.
    """
    out: list[dict[str, float]] = [{} for _ in items]
    lengths = sequence_lengths(items)
    order = sorted(range(len(items)), key=lambda i: -lengths[i])  # little padding per batch
    bar = tqdm(total=len(items), desc=desc, disable=not progress, leave=False)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate([items[i] for i in rows]).items()}
        sequences = [batch[key] for key in ("input_ids", "attention_mask", "loss_mask")]
        if fmt != "paired" and with_kl:  # one forward of both: rows i and n + i share prompt i
            sequences = stack_sequences(sequences, [batch[f"kl_{key}"] for key in ("input_ids", "attention_mask", "loss_mask")])
        logps = logps_fn(*sequences).float().cpu().tolist()
        n = len(rows)
        if fmt == "paired":  # rows [0, n) chosen, [n, 2n) rejected
            for i, chosen, rejected in zip(rows, logps[:n], logps[n:], strict=True):
                out[i] = {"chosen_logps": chosen, "rejected_logps": rejected}
        else:
            for i, value in zip(rows, logps[:n], strict=True):
                out[i]["logps"] = value
            if with_kl:  # the mismatched sequences
                for i, value in zip(rows, logps[n:], strict=True):
                    out[i]["kl_logps"] = value
        bar.update(len(rows))
    bar.close()
    return out


def precompute_reference_logps(items: list[dict], fmt: str, collate, reference_fn: ReferenceFn, batch_size: int,
                               device, progress: bool = True, desc: str = "reference log-probs",
                               with_kl: bool = True) -> None:
    """Store reference log-probs in every item (`reference_chosen_logps` / `reference_rejected_logps`
    for pairs; `reference_logps`, and with `with_kl` `reference_kl_logps` of KTO's mismatched
    sequences, for unpaired examples)."""
    logps = item_logps(items, fmt, collate, reference_fn, batch_size=batch_size, device=device,
                       with_kl=with_kl and fmt == "unpaired", progress=progress, desc=desc)
    for item, values in zip(items, logps, strict=True):
        item.update({f"reference_{k}": v for k, v in values.items()})


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


def precompute_run_reference_logps(data, reference_fn: ReferenceFn, accelerator, cache: Path, pad_token_id: int, *,
                                   batch_size: int, with_kl: bool, reuse: bool, progress: bool) -> None:
    """Reference log-probs of a run's train and eval items (`upo.prepare.PreparedData`), shared by
    every process and saved to `cache`; with `reuse`, read back from `cache` when it fits the items.
    `with_kl`: also KTO's mismatched sequences (only methods with a KTO reference point read them)."""
    table = None
    if reuse and cache.exists():
        try:
            table = load_file(str(cache))
        except (SafetensorError, OSError) as e:  # e.g. truncated by a full disk: it can be recomputed
            if accelerator.is_main_process:
                tqdm.write(f"upo: {cache} is unreadable ({e}); computing the reference log-probs again")
    if table is not None:
        train_ok = attach_reference_table(data.train_items, {k[6:]: v for k, v in table.items() if k.startswith("train.")})
        eval_ok = not data.eval_items or attach_reference_table(
            data.eval_items, {k[5:]: v for k, v in table.items() if k.startswith("eval.")}
        )
        if train_ok and eval_ok:
            return
    for items, fmt, name in ((data.train_items, data.train_format, "train"), (data.eval_items, data.eval_format, "eval")):
        if not items:
            continue
        # Each process computes a contiguous share, then every process receives all the values. The
        # shares are padded to one size (with the last item), so every process makes as many forward
        # calls: the reference may be the prepared policy, whose forward is collective under FSDP.
        with accelerator.split_between_processes(items, apply_padding=True) as mine:
            precompute_reference_logps(mine, fmt, collate_fn(fmt, pad_token_id), reference_fn, batch_size,
                                       accelerator.device, progress=progress, desc=f"reference log-probs ({name})",
                                       with_kl=with_kl)
        if accelerator.num_processes > 1:
            real = len(items) // accelerator.num_processes + (accelerator.process_index < len(items) % accelerator.num_processes)
            shared = gather_object([{k: item[k] for k in REFERENCE_KEYS if k in item} for item in mine[:real]])
            for item, values in zip(items, shared, strict=True):
                item.update(values)
    if accelerator.is_main_process:
        table = {f"train.{k}": v for k, v in reference_table(data.train_items).items()}
        table.update({f"eval.{k}": v for k, v in reference_table(data.eval_items).items()})
        save_file(table, str(cache.with_suffix(".tmp")))
        os.replace(cache.with_suffix(".tmp"), cache)  # a run killed mid-write leaves no truncated cache
