"""upo.reference.item_logps, the one batched log-prob loop: whatever the length order and batch
boundaries, every item gets its own sequences' values back; and first_epoch_reference_logps, which
scores training's own micro-batches and keeps the values of their real examples only."""

from __future__ import annotations

import pytest

from upo.data.collate import collate_fn, first_items
from upo.reference import first_epoch_reference_logps, item_logps, precompute_reference_logps


def completion_token_sum(input_ids, attention_mask, loss_mask, kl=None):
    """[N] a stand-in for summed log-probs that identifies each sequence: the sum of its completion ids
    (and with `kl`, as `make_reference_fn`'s, the mismatched sequences' too)."""
    sums = (input_ids * loss_mask).sum(-1).float()
    return sums if kl is None else (sums, completion_token_sum(*kl))


def pair_items() -> list[dict]:
    # lengths differ, so the loop's longest-first order is not the items' order
    return [{"index": i, "prompt_ids": [1] * (1 + i % 3), "chosen_ids": [10 + i] * (1 + i % 4),
             "rejected_ids": [100 + i]} for i in range(7)]  # fmt: skip


def unpaired_items() -> list[dict]:
    return [{"index": i, "prompt_ids": [1] * (1 + i % 2), "completion_ids": [10 + i] * (1 + i % 3), "label": i % 2 == 0,
             "kl_completion_ids": [200 + i]} for i in range(5)]  # fmt: skip


@pytest.mark.parametrize("batch_size", [1, 2, 3, 16])
def test_pairs_get_their_own_chosen_and_rejected_values(batch_size):
    items = pair_items()
    out = item_logps(items, "paired", collate_fn("paired", 0), completion_token_sum, batch_size=batch_size,
                     device="cpu", progress=False)
    assert out == [{"chosen_logps": float(sum(it["chosen_ids"])), "rejected_logps": float(sum(it["rejected_ids"]))}
                   for it in items]


@pytest.mark.parametrize("with_kl", [True, False])
def test_unpaired_items_get_their_values_and_kl_values_when_asked(with_kl):
    items = unpaired_items()
    out = item_logps(items, "unpaired", collate_fn("unpaired", 0), completion_token_sum, batch_size=2, device="cpu",
                     with_kl=with_kl, progress=False)
    expected = [{"logps": float(sum(it["completion_ids"]))} for it in items]
    if with_kl:
        expected = [{**e, "kl_logps": float(sum(it["kl_completion_ids"]))} for e, it in zip(expected, items, strict=True)]
    assert out == expected


def test_precompute_writes_the_reference_keys_the_collators_read():
    pairs, unpaired = pair_items(), unpaired_items()
    precompute_reference_logps(pairs, "paired", collate_fn("paired", 0), completion_token_sum, 3, "cpu", progress=False)
    precompute_reference_logps(unpaired, "unpaired", collate_fn("unpaired", 0), completion_token_sum, 3, "cpu",
                               progress=False, with_kl=True)
    batch = collate_fn("paired", 0)(pairs[:2])
    assert batch["reference_logps"].tolist() == [10.0, 22.0, 100.0, 101.0]  # chosen rows, then rejected rows
    batch = collate_fn("unpaired", 0)(unpaired[:2])
    assert batch["reference_logps"].tolist() == [10.0, 22.0] and batch["kl_reference_logps"].tolist() == [200.0, 201.0]


@pytest.mark.parametrize("fmt", ["paired", "unpaired"])
def test_first_epoch_values_belong_to_the_real_examples_of_each_batch(fmt):
    """Batches as the step receives them: a full one, a short one cut to its real first example
    (first_items keeps KTO's kl rows whole), and one of top-up copies only (0 real): every real
    example gets its own values, the copies none."""
    items = pair_items() if fmt == "paired" else unpaired_items()
    collate = collate_fn(fmt, 0)
    batches = [(collate([items[3], items[0]]), 2), (first_items(collate([items[1], items[3]]), 1), 1),
               (collate([items[3], items[0]]), 0)]
    out = first_epoch_reference_logps(batches, completion_token_sum, fmt, with_kl=True, progress=False)
    assert [index for index, _ in out] == [3, 0, 1]
    for index, values in out:
        it = items[index]
        if fmt == "paired":
            assert values == {"reference_chosen_logps": float(sum(it["chosen_ids"])),
                              "reference_rejected_logps": float(sum(it["rejected_ids"]))}
        else:
            assert values == {"reference_logps": float(sum(it["completion_ids"])),
                              "reference_kl_logps": float(sum(it["kl_completion_ids"]))}
