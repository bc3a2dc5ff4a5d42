"""Data pipeline, from rows to batches: tokenization and truncation, collation, the sampler."""

from __future__ import annotations

import pytest
import torch

from upo.data.collate import (
    LengthGroupedBatchSampler,
    collate_pairs,
    collate_unpaired,
    first_items,
    sequence_lengths,
)
from upo.data.records import (
    PreferencePair,
    UnpairedExample,
)
from upo.data.tokenize import derangement, encode_completion, encode_prompt, tokenize_pairs, tokenize_unpaired

CHAT = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]


def test_encode_prompt_uses_the_chat_template(tiny_tokenizer):
    ids = encode_prompt(CHAT, tiny_tokenizer)
    expected = (
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tiny_tokenizer.decode(ids) == expected
    assert tiny_tokenizer.decode(encode_prompt("Plain text", tiny_tokenizer)) == "Plain text"
    assert encode_completion("Hi", tiny_tokenizer)[-1] == tiny_tokenizer.eos_token_id
    no_template = tiny_tokenizer.__class__(
        tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token="<|im_end|>"
    )
    with pytest.raises(ValueError, match="no chat template"):
        encode_prompt(CHAT, no_template)


def test_loss_mask_covers_exactly_the_completions(tiny_tokenizer):
    pairs = [
        PreferencePair(CHAT, "Paris.", "I will not help with that.", "a"),
        PreferencePair("Q", "Yes", "No", "b"),
    ]
    items, stats = tokenize_pairs(pairs, tiny_tokenizer, max_length=512, max_prompt_length=256)
    assert (
        stats.summary()
        == "2 examples: 0 prompts truncated, 0 responses truncated, 0 dropped (longer than max_length)"
    )
    batch = collate_pairs(items, tiny_tokenizer.pad_token_id)
    sides = [(it["prompt_ids"], it["chosen_ids"]) for it in items] + [
        (it["prompt_ids"], it["rejected_ids"]) for it in items
    ]
    assert batch["input_ids"].shape[1] == max(
        len(p) + len(c) for p, c in sides
    )  # the batch's longest, no more
    for row, (prompt, completion) in enumerate(sides):
        n = len(prompt) + len(completion)
        assert batch["input_ids"][row, :n].tolist() == prompt + completion
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
        assert batch["input_ids"][row][batch["loss_mask"][row]].tolist() == completion
        assert not batch["loss_mask"][row, : len(prompt)].any() and not batch["loss_mask"][row, n:].any()
        assert batch["prompt_last_index"][row] == len(prompt) - 1
        assert completion[-1] == tiny_tokenizer.eos_token_id
    assert batch["desirable"].tolist() == [True, True, False, False]
    assert batch["index"].tolist() == [0, 1] and batch["rewards"].tolist() == [0.0] * 4
    assert "reference_logps" not in batch


def test_truncation_keeps_the_prompt_end_and_cuts_completions(tiny_tokenizer):
    long_prompt = "How do I bake bread? " * 10
    full_prompt = encode_prompt(long_prompt, tiny_tokenizer)
    full_chosen = encode_completion("The capital of France is Paris.", tiny_tokenizer)
    pairs = [
        PreferencePair(long_prompt, "The capital of France is Paris.", "No", "a"),
        PreferencePair("Hi", "A", "B", "b"),
    ]
    items, stats = tokenize_pairs(pairs, tiny_tokenizer, max_length=12, max_prompt_length=8)
    assert items[0]["prompt_ids"] == full_prompt[-8:]
    assert items[0]["chosen_ids"] == full_chosen[:4] and items[0]["rejected_ids"] == encode_completion(
        "No", tiny_tokenizer
    )
    assert (stats.total, stats.prompt_truncated, stats.completion_truncated, stats.dropped) == (2, 1, 1, 0)
    items, stats = tokenize_pairs(pairs, tiny_tokenizer, max_length=8, max_prompt_length=8)
    assert [it["index"] for it in items] == [1] and stats.dropped == 1
    assert stats.summary().startswith("2 examples: 0 prompts truncated, 0 responses truncated, 1 dropped")


def test_derangement_and_kl_completions(tiny_tokenizer):
    for n in (2, 3, 10, 101):
        perm = derangement(n, seed=7)
        assert sorted(perm) == list(range(n)) and all(perm[i] != i for i in range(n))
        assert perm == derangement(n, seed=7)
    assert derangement(50, seed=1) != derangement(50, seed=2)
    examples = [UnpairedExample("Q", f"answer {k}", k % 2 == 0, str(k)) for k in range(6)]
    items, _ = tokenize_unpaired(examples, tiny_tokenizer, max_length=64, max_prompt_length=32, seed=3)
    perm = derangement(6, seed=3)
    for i, item in enumerate(items):
        assert item["kl_completion_ids"] == items[perm[i]]["completion_ids"] != item["completion_ids"]
    single, _ = tokenize_unpaired(examples[:1], tiny_tokenizer, max_length=64, max_prompt_length=32, seed=3)
    assert single[0]["kl_completion_ids"] == single[0]["completion_ids"]


def test_collate_unpaired_with_optional_fields(tiny_tokenizer):
    examples = [UnpairedExample(CHAT, "Yes", True, "a"), UnpairedExample("Q", "No, I will not.", False, "b")]
    items, _ = tokenize_unpaired(examples, tiny_tokenizer, max_length=64, max_prompt_length=32, seed=0)
    items = [
        {**it, "reward": 0.5 * k, "reference_logps": -1.0, "reference_kl_logps": -2.0}
        for k, it in enumerate(items)
    ]
    batch = collate_unpaired(items, tiny_tokenizer.pad_token_id)
    longest = max(len(it["prompt_ids"]) + len(it["completion_ids"]) for it in items)
    kl_longest = max(len(it["prompt_ids"]) + len(it["kl_completion_ids"]) for it in items)
    assert batch["input_ids"].shape == (2, longest) and batch["kl_input_ids"].shape == (2, kl_longest)
    assert batch["kl_loss_mask"].sum().item() == sum(len(it["kl_completion_ids"]) for it in items)
    assert batch["desirable"].tolist() == [True, False] and batch["rewards"].tolist() == [0.0, 0.5]
    assert batch["reference_logps"].tolist() == [-1.0, -1.0] and batch["kl_reference_logps"].tolist() == [
        -2.0,
        -2.0,
    ]
    assert torch.equal(batch["kl_prompt_last_index"], batch["prompt_last_index"])
    with pytest.raises(ValueError, match="reference_logps"):
        collate_unpaired([items[0], {k: v for k, v in items[1].items() if k != "reference_logps"}], 0)


def test_collate_pairs_rewards_and_reference_logps():
    items = [
        {"index": 4, "prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5, 6], "chosen_reward": 1.0,
         "rejected_reward": -1.0, "reference_chosen_logps": -3.0, "reference_rejected_logps": -4.0},
        {"index": 9, "prompt_ids": [7], "chosen_ids": [8], "rejected_ids": [9], "chosen_reward": 2.0,
         "rejected_reward": 0.0, "reference_chosen_logps": -5.0, "reference_rejected_logps": -6.0},
    ]  # fmt: skip
    batch = collate_pairs(items, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0, 0], [7, 8, 0, 0, 0], [1, 2, 4, 5, 6], [7, 9, 0, 0, 0]]
    assert batch["rewards"].tolist() == [1.0, 2.0, -1.0, 0.0]
    assert batch["reference_logps"].tolist() == [-3.0, -5.0, -4.0, -6.0]
    assert batch["index"].tolist() == [4, 9] and sequence_lengths(items) == [5, 2]


def test_first_items_is_the_batch_of_those_items():
    """What the trainer keeps of a batch Accelerate topped up with copies: exactly the collated first k."""
    items = [
        {"index": i, "prompt_ids": [1] * (4 - i), "chosen_ids": [2, 3], "rejected_ids": [4] * (i + 1),
         "completion_ids": [5] * (i + 2), "kl_completion_ids": [6], "label": i % 2, "reward": float(i)}
        for i in range(3)
    ]  # fmt: skip
    # The longest sequences are among the first two items, so the padding width is the same.
    for collate in (collate_pairs, collate_unpaired):
        whole, first = collate(items, 0), collate(items[:2], 0)
        kept = first_items(whole, 2)
        assert kept.keys() == first.keys()
        for key, value in first.items():
            assert torch.equal(kept[key], whole[key] if key.startswith("kl_") else value), key  # kl_*: kept whole


@pytest.mark.parametrize(("n", "batch", "per_step", "drop_last"), [(15, 2, 2, False), (13, 4, 2, False),
                                                                  (13, 4, 2, True), (8, 2, 2, False)])
def test_sampler_counts_the_examples_of_each_batch_and_step(n, batch, per_step, drop_last):
    sampler = LengthGroupedBatchSampler(list(range(1, n + 1)), batch, seed=0, per_step=per_step, drop_last=drop_last)
    batches = list(sampler)
    steps = [sum(map(len, batches[k : k + per_step])) for k in range(0, len(batches), per_step)]
    assert [sampler.examples(j) for j in range(len(batches))] == [(len(b), steps[j // per_step])
                                                                   for j, b in enumerate(batches)]  # fmt: skip


def test_sampler_is_deterministic_complete_and_length_grouped():
    lengths = [(k * 37) % 101 for k in range(103)]
    sampler = LengthGroupedBatchSampler(lengths, 4, seed=1, mega_batch_mult=100)
    first = list(sampler)
    assert first == list(LengthGroupedBatchSampler(lengths, 4, seed=1, mega_batch_mult=100))
    assert (
        sorted(i for batch in first for i in batch) == list(range(103)) and len(first) == len(sampler) == 26
    )
    sampler.set_epoch(1)
    assert list(sampler) != first
    # one mega-batch holds everything: batches are contiguous runs of the sorted lengths
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in first)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:], strict=False))
    assert [len(b) for b in first].count(3) == 1
    dropped = list(LengthGroupedBatchSampler(lengths, 4, seed=1, drop_last=True))
    assert len(dropped) == 25 and all(len(b) == 4 for b in dropped)
    plain = list(LengthGroupedBatchSampler(lengths, 4, seed=1, group_by_length=False))
    assert sorted(i for b in plain for i in b) == list(range(103)) and plain != first
