"""Reference log-probs: the reference model's forward, and the one batched log-prob loop.

The reference model is a separate frozen copy, or the policy itself: with LoRA, its adapters
disabled; without, before training, when the reference log-probs are computed once
(`precompute_run_reference_logps`: the training examples' in training's own first-epoch micro-batches,
the held-out ones' in batches of their own), after which the batches carry them and no reference
forward runs; they are saved with the run (`reference_table`) so a resume reuses them, and in the
cache shared by runs (`upo.reference_cache`) so a run whose reference forward sees the same inputs does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from accelerate.utils import gather_object
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from upo.data.collate import collate_fn, sequence_lengths, stack_sequences
from upo.logps import sequence_logps
from upo.reference_cache import InputDigest, ReferenceCache, cache_key, read_table, write_table

# (input_ids, attention_mask, loss_mask) -> [N]; `make_reference_fn`'s also takes kl=[...] -> ([N], [B])
ReferenceFn = Callable[..., torch.Tensor]


def make_reference_fn(accelerator, policy, ref_model, lora: bool) -> ReferenceFn:
    """(input_ids, attention_mask, loss_mask) -> reference summed log-probs [N], no grad, under the
    policy's autocast: from `ref_model`, else from the policy itself (with `lora`, adapters disabled;
    without, only while it has not been updated: for precomputing them before training). `ref_model`
    runs with the policy's settings (`CompletionLogps`: padding-free, shared prompts, logits chunks).

    With `kl` (KTO's mismatched sequences: input_ids, attention_mask, loss_mask, their prompts the
    batch's) it returns ([N], [B]): theirs too, computed as the policy computes its own in a step
    (`upo.forward`): from the keys and values of the batch's prompts. Same operations on the same
    inputs, so before the first update the policy's z0 equals the reference's bit for bit, in bf16 too.
    """
    settings = accelerator.unwrap_model(policy)
    options = {"padding_free": settings.padding_free, "shared_prompt": settings.shared_prompt,
               "logits_chunk_tokens": settings.logits_chunk_tokens, "ld_alpha": settings.ld_alpha}

    def run(sequences, keep_prompts=False, prompt_cache=None) -> dict:
        if ref_model is not None:
            out = sequence_logps(ref_model, *sequences, keep_prompts=keep_prompts and settings.shared_prompt,
                                 prompt_cache=prompt_cache, **options)
            return {"sum": out.sum, "prompt_cache": out.prompt_cache}
        return policy(*sequences, keep_prompts=keep_prompts, prompt_cache=prompt_cache)

    def run_with_kl(sequences, kl):
        out = run(sequences, keep_prompts=kl is not None)
        if kl is None:
            return out["sum"]
        return out["sum"], run(kl, prompt_cache=out.get("prompt_cache"))["sum"]

    @torch.no_grad()
    def reference_logps(input_ids, attention_mask, loss_mask, kl=None):
        sequences = (input_ids, attention_mask, loss_mask)
        with accelerator.autocast():
            if ref_model is not None or not lora:  # a frozen copy, or the policy before any update
                return run_with_kl(sequences, kl)
            trainable = [p for p in policy.parameters() if p.requires_grad]
            with accelerator.unwrap_model(policy).lm.disable_adapter():  # LoRA: the base model
                logps = run_with_kl(sequences, kl)
            # peft re-enables the adapters by setting requires_grad on the parameters the module holds
            # at exit; under FSDP2 those are the gathered copies, not the shards the optimizer steps.
            for p in trainable:
                p.requires_grad_(True)
            return logps

    return reference_logps


@torch.no_grad()
def mix_into_reference(reference: torch.nn.Module, policy: torch.nn.Module, alpha: float) -> None:
    """TR-DPO's update (Gorbatovski et al. 2024, arXiv 2404.09656; TRL's SyncRefModelCallback): each
    reference weight <- alpha * the policy's + (1 - alpha) * its own, in place. The two must be the
    same architecture (the reference copy of the policy's model)."""
    ref, pol = dict(reference.named_parameters()), dict(policy.named_parameters())
    mismatched = sorted(n for n in ref.keys() | pol.keys() if n not in ref or n not in pol or ref[n].shape != pol[n].shape)
    if mismatched:
        raise ValueError(f"sync_ref_model: the reference and the policy differ in {', '.join(mismatched[:3])}: a "
                         "ref_model of another architecture cannot be mixed with the policy")
    for name, weight in ref.items():
        weight.mul_(1.0 - alpha).add_(pol[name].detach().to(weight.dtype), alpha=alpha)


@torch.no_grad()
def item_logps(items: list[dict], fmt: str, collate, logps_fn: ReferenceFn, *, batch_size: int, device,
               with_kl: bool = False, progress: bool = True, desc: str = "log-probs") -> list[dict[str, float]]:
    """Summed completion log-probs of every item's sequences, in the items' order: the one batched
    loop (sort by length, batch, collate, score, write back) of the held-out items' reference
    precompute and of `upo eval`.

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


def first_epoch_reference_logps(batches: Iterable[tuple[dict, int]], reference_fn: ReferenceFn, fmt: str, *,
                                with_kl: bool, total: int | None = None,
                                progress: bool = True) -> list[tuple[int, dict[str, float]]]:
    """Reference log-probs of this process's training examples, each computed in the micro-batch
    it has in training's first epoch (`batches`: the collated batches as the step receives them, each
    with its number of real examples, the first ones; the others are Accelerate's top-up copies).

    In bf16 a sequence's log-prob depends on which sequences share its batch (the packed length,
    the padded width), so only identical inputs make the policy's first step equal to its reference:
    every log-ratio before the first update exactly 0. Later epochs batch differently and reuse these
    per-example values. Returns (dataset index, {reference key: value}) of each real example.
    """
    out = []
    for batch, real in tqdm(batches, total=total, desc="reference log-probs (train)", disable=not progress,
                            leave=False):
        sequences = [batch[key] for key in ("input_ids", "attention_mask", "loss_mask")]
        kl = None
        if fmt != "paired" and with_kl:  # KTO's mismatched sequences: the whole kl batch, as the step runs it
            logps, kl = reference_fn(*sequences, kl=[batch[f"kl_{key}"] for key in ("input_ids", "attention_mask", "loss_mask")])
            kl = kl.float().cpu()
        else:
            logps = reference_fn(*sequences)
        logps = logps.float().cpu()  # [N]
        index = batch["index"].tolist()[:real]
        if fmt == "paired":  # rows [0, b) chosen, [b, 2b) rejected
            b = len(logps) // 2
            values = [{"reference_chosen_logps": c, "reference_rejected_logps": r}
                      for c, r in zip(logps[:b].tolist(), logps[b:].tolist(), strict=True)]
        else:
            values = [{"reference_logps": v} for v in logps.tolist()]
            if kl is not None:
                for v, k in zip(values, kl.tolist(), strict=False):
                    v["reference_kl_logps"] = k
        out.extend(zip(index, values[:real], strict=True))
    return out


def precompute_run_reference_logps(data, reference_fn: ReferenceFn, accelerator, cache: Path, pad_token_id: int, *,
                                   train_batches: Callable[[], Iterable[tuple[dict, int]]], num_train_batches: int,
                                   batch_size: int, with_kl: bool, reuse: bool, progress: bool,
                                   shared: ReferenceCache | None = None) -> None:
    """Reference log-probs of a run's train and eval items (`upo.prepare.PreparedData`), shared by
    every process and saved to `cache`; with `reuse`, read back from `cache` when it fits the items.
    The training items' come from `train_batches()`, this process's micro-batches of the first epoch
    (`first_epoch_reference_logps`); the held-out items' from batches of `batch_size`.
    `with_kl`: also KTO's mismatched sequences (only methods with a KTO reference point read them).
    With `shared`, they are looked up in the cache shared by runs (`upo.reference_cache`), keyed on
    every input of every reference forward (from a dry run of this precompute) and on the reference
    forward itself, and stored there when computed."""
    log = tqdm.write if accelerator.is_main_process else (lambda *_: None)
    if reuse and cache.exists():
        try:
            table = load_file(str(cache))
        except (SafetensorError, OSError) as e:  # e.g. truncated by a full disk: it can be recomputed
            log(f"upo: {cache} is unreadable ({e}); computing the reference log-probs again")
        else:
            if _attach_table(data, table):  # a resumed run: its own values
                return
    key = None
    if shared is not None:
        with torch.random.fork_rng(devices=[]):  # the dry run iterates the loader: leave the RNG as it was
            key = _shared_key(data, shared, accelerator, pad_token_id, train_batches, batch_size, with_kl)
        table = read_table(shared.path(key), key, log)
        hit = table is not None and _attach_table(data, table)
        if accelerator.num_processes > 1:  # all processes load, or all compute (the forward may be collective)
            hit = all(gather_object([hit]))
        if hit:
            log(f"upo: reference log-probs reused from the cache ({shared.path(key)})")
            _save_table(data, cache, accelerator)
            return
    train, heldout = _this_process_logps(data, data.eval_items, reference_fn, accelerator, pad_token_id,
                                         train_batches(), num_train_batches, batch_size, with_kl, progress)
    _share_logps(data, train, heldout, accelerator)
    table = _save_table(data, cache, accelerator)
    if key is not None and accelerator.is_main_process:
        try:
            write_table(shared.path(key), key, table)
        except (SafetensorError, OSError) as e:  # a read-only or full cache folder: the run has its values
            log(f"upo: could not cache the reference log-probs in {shared.path(key)} ({e})")


def _attach_table(data, table: dict[str, torch.Tensor]) -> bool:
    """Attach a saved table (`train.*`, `eval.*` keys) to the run's items; False if it does not fit them."""
    train_ok = attach_reference_table(data.train_items, {k[6:]: v for k, v in table.items() if k.startswith("train.")})
    eval_ok = not data.eval_items or attach_reference_table(
        data.eval_items, {k[5:]: v for k, v in table.items() if k.startswith("eval.")}
    )
    return train_ok and eval_ok


def _this_process_logps(data, eval_items: list[dict], reference_fn: ReferenceFn, accelerator, pad_token_id: int,
                        train_batches: Iterable[tuple[dict, int]], num_train_batches: int | None, batch_size: int,
                        with_kl: bool, progress: bool) -> tuple[list[tuple[int, dict]], list[dict]]:
    """This process's share of the reference log-probs: (dataset index, values) of its training
    examples, and the values of its contiguous share of `eval_items` (which get them too).

    Every process runs as many forward calls (its share of each batch; the reference may be the
    prepared policy, whose forward is collective under FSDP): the held-out share is padded to one
    size with the last item."""
    train = first_epoch_reference_logps(train_batches, reference_fn, data.train_format, with_kl=with_kl,
                                        total=num_train_batches, progress=progress)
    if not eval_items:
        return train, []
    with accelerator.split_between_processes(eval_items, apply_padding=True) as share:
        precompute_reference_logps(share, data.eval_format, collate_fn(data.eval_format, pad_token_id),
                                   reference_fn, batch_size, accelerator.device, progress=progress,
                                   desc="reference log-probs (eval)", with_kl=with_kl)
    n, p = len(eval_items), accelerator.num_processes
    real = n // p + (accelerator.process_index < n % p)
    return train, [{k: item[k] for k in REFERENCE_KEYS if k in item} for item in share[:real]]


def _share_logps(data, train: list[tuple[int, dict]], heldout: list[dict], accelerator) -> None:
    """Give every process's values (`_this_process_logps`) to the items of every process."""
    shared = gather_object(train) if accelerator.num_processes > 1 else train
    position = {item["index"]: i for i, item in enumerate(data.train_items)}
    if len(position) != len(data.train_items):
        raise RuntimeError("training items share a dataset index: their reference log-probs cannot be told apart")
    for index, values in shared:
        data.train_items[position[index]].update(values)
    missing = [item["index"] for item in data.train_items if not any(k in item for k in REFERENCE_KEYS)]
    if missing:
        raise RuntimeError(f"no reference log-probs for training rows {missing[:10]}: the first epoch missed them")
    if data.eval_items and accelerator.num_processes > 1:
        for item, values in zip(data.eval_items, gather_object(heldout), strict=True):
            item.update(values)


def _save_table(data, cache: Path, accelerator) -> dict[str, torch.Tensor]:
    """The run's table of reference log-probs, written to the run folder's `cache` by the main process."""
    table = {f"train.{k}": v for k, v in reference_table(data.train_items).items()}
    table.update({f"eval.{k}": v for k, v in reference_table(data.eval_items).items()})
    if accelerator.is_main_process:
        save_file(table, str(cache.with_suffix(".tmp")))
        os.replace(cache.with_suffix(".tmp"), cache)  # a run killed mid-write leaves no truncated cache
    return table


def _shared_key(data, shared: ReferenceCache, accelerator, pad_token_id: int, train_batches, batch_size: int,
                with_kl: bool) -> str:
    """The shared cache's key of this precompute (`upo.reference_cache`): a dry run of it, whose
    stand-in reference function hashes every input and numbers every output row, so the key also
    holds which row each item's value comes from; then every process's part, in rank order."""
    digest = InputDigest()
    train, heldout = _this_process_logps(data, [dict(it) for it in data.eval_items], digest, accelerator,
                                         pad_token_id, train_batches(), None, batch_size, with_kl, progress=False)
    part = {"identity": shared.identity, "inputs": digest.hash.hexdigest(), "train_rows": train, "eval_rows": heldout}
    parts = gather_object([part]) if accelerator.num_processes > 1 else [part]
    table_order = {"train": [item["index"] for item in data.train_items], "eval": len(data.eval_items)}
    return cache_key([table_order, *parts])
