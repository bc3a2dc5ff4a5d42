"""Tokenized items -> padded batches, and the sampler that decides which items share a batch.

Sequences are right-padded to the longest one in the batch, never to a fixed maximum, and the
sampler groups similar lengths so little compute goes to padding. ``loss_mask`` marks the tokens
whose log-probs count: the completion (including its eos), never the prompt or padding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Sampler


def _pad(
    prompts: Sequence[list[int]], completions: Sequence[list[int]], pad_token_id: int
) -> dict[str, Tensor]:
    """Right-pad ``prompt + completion`` sequences to the longest of them.

    Returns input_ids [N, T] long, attention_mask [N, T] long, loss_mask [N, T] bool (True on
    completion tokens) and prompt_last_index [N] long (position of each prompt's last token).
    """
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions, strict=True)]
    n, t = len(lengths), max(lengths)
    input_ids = torch.full((n, t), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, t), dtype=torch.long)
    loss_mask = torch.zeros((n, t), dtype=torch.bool)
    for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        end = len(prompt) + len(completion)
        input_ids[row, :end] = torch.tensor(prompt + completion, dtype=torch.long)
        attention_mask[row, :end] = 1
        loss_mask[row, len(prompt) : end] = True
    prompt_last_index = torch.tensor([len(p) - 1 for p in prompts], dtype=torch.long)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_mask": loss_mask,
        "prompt_last_index": prompt_last_index,
    }


def _floats(items: list[dict], *keys: str) -> Tensor | None:
    """[len(keys) * B] float32 of ``item[key]`` for each key in turn; None when no item has them.

    A batch where only some items carry a key is a bug upstream, so it is an error, not a default.
    """
    present = [key in item for key in keys for item in items]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(f"some items of the batch lack {' / '.join(keys)}: every item needs them, or none")
    return torch.tensor([float(item[key]) for key in keys for item in items], dtype=torch.float32)


def collate_pairs(items: list[dict], pad_token_id: int) -> dict[str, Tensor]:
    """B tokenized pairs -> 2B sequences for one forward pass: rows 0..B-1 the chosen, B..2B-1 the rejected.

    Returns input_ids / attention_mask [2B, T] long, loss_mask [2B, T] bool, prompt_last_index [2B]
    long, desirable [2B] bool (True for chosen rows), index [B] long, rewards [2B] float32
    (``chosen_reward`` / ``rejected_reward``, zeros without them) and, when the items carry
    ``reference_chosen_logps`` / ``reference_rejected_logps``, reference_logps [2B] float32; and
    aux_coef [2B] float32 (a pair's steering condition on both rows) when items carry ``aux_coef``.
    """
    b = len(items)
    prompts = [item["prompt_ids"] for item in items] * 2
    completions = [item["chosen_ids"] for item in items] + [item["rejected_ids"] for item in items]
    batch = _pad(prompts, completions, pad_token_id)
    batch["desirable"] = torch.arange(2 * b) < b
    batch["index"] = torch.tensor([item["index"] for item in items], dtype=torch.long)
    rewards = _floats(items, "chosen_reward", "rejected_reward")
    batch["rewards"] = torch.zeros(2 * b) if rewards is None else rewards
    reference = _floats(items, "reference_chosen_logps", "reference_rejected_logps")
    if reference is not None:
        batch["reference_logps"] = reference
    aux_coef = _floats(items, "aux_coef", "aux_coef")
    if aux_coef is not None:
        batch["aux_coef"] = aux_coef
    return batch


def collate_unpaired(items: list[dict], pad_token_id: int) -> dict[str, Tensor]:
    """B tokenized unpaired examples -> a batch plus the mismatched KL batch for KTO's reference point.

    Returns input_ids / attention_mask [B, T] long, loss_mask [B, T] bool, prompt_last_index [B] long,
    desirable [B] bool (the labels), index [B] long, rewards [B] float32 (``reward``, zeros without
    it), reference_logps [B] float32 when items carry ``reference_logps``; and kl_input_ids /
    kl_attention_mask [B, T'] long, kl_loss_mask [B, T'] bool, kl_prompt_last_index [B] long from
    ``prompt_ids + kl_completion_ids``, kl_reference_logps [B] when items carry ``reference_kl_logps``;
    aux_coef [B] float32 when items carry ``aux_coef`` (a steered run's conditions).
    """
    prompts = [item["prompt_ids"] for item in items]
    batch = _pad(prompts, [item["completion_ids"] for item in items], pad_token_id)
    batch["desirable"] = torch.tensor([bool(item["label"]) for item in items], dtype=torch.bool)
    batch["index"] = torch.tensor([item["index"] for item in items], dtype=torch.long)
    rewards = _floats(items, "reward")
    batch["rewards"] = torch.zeros(len(items)) if rewards is None else rewards
    kl = _pad(prompts, [item["kl_completion_ids"] for item in items], pad_token_id)
    batch.update({f"kl_{key}": value for key, value in kl.items()})
    for key, name in (("reference_logps", "reference_logps"), ("reference_kl_logps", "kl_reference_logps"),
                      ("aux_coef", "aux_coef")):
        values = _floats(items, key)
        if values is not None:
            batch[name] = values
    return batch


def stack_sequences(first: list[Tensor], second: list[Tensor]) -> list[Tensor]:
    """Two right-padded batches of the same tensors (say input_ids, attention_mask, loss_mask: each
    [N, T] in `first`, [N', T'] in `second`) as one: [N + N', max(T, T')] each, the rows of `first`
    then those of `second`, padded with zeros (attention_mask 0: padding whatever the token)."""
    width = max(first[0].shape[1], second[0].shape[1])
    return [torch.cat([F.pad(a, (0, width - a.shape[1])), F.pad(b, (0, width - b.shape[1]))])
            for a, b in zip(first, second, strict=True)]


def collate_fn(fmt: str, pad_token_id: int):
    """The collate function (items -> batch) of a batch format, "paired" or "unpaired"."""
    fn = collate_pairs if fmt == "paired" else collate_unpaired
    return lambda items: fn(items, pad_token_id)


def first_items(batch: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    """The rows of a collated batch's first k items (pairs or examples), padding width unchanged.

    Paired batches hold 2B rows (chosen [0, B), rejected [B, 2B)), unpaired ones B; ``index`` has B.
    KTO's mismatched ``kl_*`` rows are kept whole: they only estimate the reference point z0.
    """
    b = len(batch["index"])
    rows = {b: torch.arange(k), 2 * b: torch.cat([torch.arange(k), torch.arange(b, b + k)])}
    return {key: v if key.startswith("kl_") else v.index_select(0, rows[v.shape[0]]) for key, v in batch.items()}


def sequence_lengths(items: list[dict]) -> list[int]:
    """Tokens per item (for a pair, its longer side): what LengthGroupedBatchSampler groups by."""
    return [
        len(item["prompt_ids"])
        + (
            max(len(item["chosen_ids"]), len(item["rejected_ids"]))
            if "chosen_ids" in item
            else len(item["completion_ids"])
        )
        for item in items
    ]


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of indices that mix randomness with similar lengths, reproducible per (seed, epoch).

    Batches come in groups of ``per_step`` (the micro-batches of one optimizer step). Each epoch:
    shuffle all indices; with group_by_length, cut them into mega-batches of ``step *
    mega_batch_mult`` indices (``step = batch_size * per_step``), sort each by length (longest
    first), cut into steps and shuffle the order of the full steps (so long and short steps
    alternate). Without grouping: plain shuffled steps. Each step is then cut into ``per_step``
    batches. So which examples share an optimizer step depends only on ``batch_size * per_step``:
    batch 4 x 1 micro-batch and batch 2 x 2 accumulated see the same examples per step, and so do
    P processes that split each batch of ``batch_size`` (Accelerate's ``split_batches``).

    Only the last batch can be short (Accelerate's multi-process sharding relies on it); drop_last
    drops it. A resumed run that calls set_epoch with the same epoch sees the same batches.
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        *,
        seed: int,
        group_by_length: bool = True,
        drop_last: bool = False,
        mega_batch_mult: int = 50,
        per_step: int = 1,
    ):
        if batch_size < 1 or mega_batch_mult < 1 or seed < 0 or per_step < 1:
            raise ValueError(
                f"need batch_size >= 1, mega_batch_mult >= 1, seed >= 0 and per_step >= 1, got {batch_size}, "
                f"{mega_batch_mult}, {seed}, {per_step}"
            )
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.per_step = per_step
        self.seed = seed
        self.group_by_length = group_by_length
        self.drop_last = drop_last
        self.mega_batch_mult = mega_batch_mult
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths)).tolist()
        step = self.batch_size * self.per_step
        if self.group_by_length:
            mega = step * self.mega_batch_mult
            chunks = [order[i : i + mega] for i in range(0, len(order), mega)]
            # a stable sort keeps the shuffled order among equal lengths
            order = [j for chunk in chunks for j in sorted(chunk, key=lambda j: -self.lengths[j])]
        steps = [order[i : i + step] for i in range(0, len(order), step)]
        if self.group_by_length:
            full = len(order) // step  # a short step stays last
            steps = [steps[k] for k in rng.permutation(full)] + steps[full:]
        batches = [s[i : i + self.batch_size] for s in steps for i in range(0, len(s), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        yield from batches

    def examples(self, batch: int) -> tuple[int, int]:
        """(items in the ``batch``-th batch of an epoch, items in the optimizer step it belongs to),
        counted from 0: every batch but the last is full, and every step but the last."""
        n = len(self.lengths) - (len(self.lengths) % self.batch_size if self.drop_last else 0)
        step = self.batch_size * self.per_step
        return min(self.batch_size, n - batch * self.batch_size), min(step, n - batch // self.per_step * step)

    def __len__(self) -> int:
        n, b = len(self.lengths), self.batch_size
        full_steps, rest = divmod(n, b * self.per_step)
        count = full_steps * self.per_step + -(-rest // b)
        return count - 1 if self.drop_last and rest % b else count
