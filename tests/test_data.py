"""Data pipeline: row formats, sources, errors, tokenization and truncation, batches, sampler."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from upo.data.collate import (
    LengthGroupedBatchSampler,
    collate_pairs,
    collate_unpaired,
    first_items,
    sequence_lengths,
)
from upo.data.records import (
    DataError,
    PreferencePair,
    UnpairedExample,
    UnusableRow,
    load_records,
    parse_hh,
    parse_row,
    prompt_text,
    to_unpaired,
)
from upo.data.tokenize import derangement, encode_completion, encode_prompt, tokenize_pairs, tokenize_unpaired

HH_CHOSEN = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant:  Mix flour and water. "
HH_REJECTED = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant: No."
CHAT = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


# ---- formats ---------------------------------------------------------------------------------


def test_paired_plain_text_keeps_strings_exactly(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"prompt": "Q?", "chosen": " yes ", "rejected": "no", "extra": 1}]
    )
    result = load_records(str(path))
    assert result.records == [PreferencePair("Q?", " yes ", "no", f"{path}:1")]
    assert result.skipped == {}


def test_paired_chat_prompt():
    pair = parse_row({"prompt": CHAT, "chosen": "Hello", "rejected": "Go away"}, "d.jsonl:1")
    assert pair.prompt == CHAT and pair.chosen == "Hello"


def test_trl_conversational_lists_share_their_leading_messages():
    row = {
        "chosen": [*CHAT, {"role": "assistant", "content": "Hello"}],
        "rejected": [*CHAT, {"role": "assistant", "content": "Go away"}],
    }
    assert parse_row(row, "x") == PreferencePair(CHAT, "Hello", "Go away", "x")
    with_prompt = {"prompt": CHAT, "chosen": row["chosen"][-1:], "rejected": row["rejected"][-1:]}
    assert parse_row(with_prompt, "x") == PreferencePair(CHAT, "Hello", "Go away", "x")


def test_hh_dialogue_becomes_messages_and_stripped_replies():
    pair = parse_row({"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, "hh.jsonl:3")
    assert pair.prompt == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How do I bake bread?"},
    ]
    assert (pair.chosen, pair.rejected) == ("Mix flour and water.", "No.")
    prompt = HH_CHOSEN[: HH_CHOSEN.rfind("Assistant:") + 10]
    as_field = parse_row(
        {"prompt": prompt, "chosen": " Mix flour and water.", "rejected": " No."}, "hh.jsonl:3"
    )
    assert as_field == pair


def test_hh_merges_consecutive_turns_of_one_speaker():
    text = "\n\nHuman: a\n\nAssistant: b\n\nAssistant: c\n\nHuman: d\n\nAssistant: "
    pair = parse_hh(text + "yes", text + "no", "s")
    assert [m["role"] for m in pair.prompt] == ["user", "assistant", "user"]
    assert pair.prompt[1]["content"] == "b\n\nc"


def test_hh_prompts_must_be_a_shared_prefix():
    with pytest.raises(DataError, match="prompts are not a shared prefix") as info:
        parse_hh(HH_CHOSEN, HH_REJECTED.replace("Hi there", "Hey"), "hh.jsonl:9")
    assert "hh.jsonl:9" in str(info.value) and "'chosen'" in str(info.value)


@pytest.mark.parametrize("label", [True, False, 1, 0])
def test_unpaired_labels(label):
    example = parse_row({"prompt": "Q", "completion": "A", "label": label}, "u.jsonl:1")
    assert example == UnpairedExample("Q", "A", bool(label), "u.jsonl:1")
    assert isinstance(example.label, bool)


def test_json_array_and_json_lines(tmp_path):
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "d", "chosen": "e", "rejected": "f"}]
    array = tmp_path / "d.json"
    array.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    assert [r.source for r in load_records(str(array)).records] == [f"{array}:2", f"{array}:7"]
    lines = write_jsonl(tmp_path / "l.json", rows)
    assert [r.prompt for r in load_records(str(lines)).records] == ["a", "d"]


def test_jsonl_gz(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "a", "completion": "b", "label": 1}) + "\n\n")
    assert load_records(str(path)).records == [UnpairedExample("a", "b", True, f"{path}:1")]


def test_parquet_file_and_folder_through_datasets(tmp_path):
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": None, "chosen": "e", "rejected": "f"}]
    datasets.Dataset.from_list(rows[:1]).to_parquet(str(tmp_path / "one.parquet"))
    result = load_records(str(tmp_path / "one.parquet"))
    assert result.records == [PreferencePair("a", "b", "c", f"{tmp_path / 'one.parquet'}[train] row 1")]
    (tmp_path / "folder").mkdir()
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "folder" / "train.parquet"))
    with pytest.raises(DataError, match=r"folder\[train\] row 2: missing field 'prompt'"):
        load_records(str(tmp_path / "folder"))


def test_real_hh_file(hh_file):
    result = load_records(str(hh_file))
    assert len(result.records) + sum(result.skipped.values()) == 1800
    assert set(result.skipped) <= {"prompts differ", "empty response"} and len(result.records) > 1750
    for pair in result.records:
        assert isinstance(pair.prompt, list) and pair.prompt[-1]["role"] == "user"
        assert pair.chosen != "" and pair.rejected != "" and pair.chosen == pair.chosen.strip()


# ---- errors ----------------------------------------------------------------------------------

GOOD = {"prompt": "Q", "chosen": "A", "rejected": "B"}


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ('{"prompt": "Q", "chosen": "A",', r"d.jsonl:2: malformed JSON"),
        ("[1, 2]", r"d.jsonl:2: expected a JSON object"),
        (
            {"prompt": "Q", "chosen": "A", "rejectd": "B"},
            r"d.jsonl:2: missing field 'rejected' \(found 'rejectd'\)",
        ),
        (
            {"prompt": "Q", "choosen": "A", "rejected": "B"},
            r"d.jsonl:2: missing field 'chosen' \(found 'choosen'\)",
        ),
        (
            {"promt": "Q", "chosen": "A", "rejected": "B"},
            r"d.jsonl:2: missing field 'prompt' \(found 'promt'\)",
        ),
        ({"question": "Q", "answer": "A"}, r"d.jsonl:2: missing field 'chosen' or 'completion'"),
        ({**GOOD, "chosen": 3}, r"d.jsonl:2: field 'chosen': expected a non-empty string, got int"),
        ({**GOOD, "prompt": [{"role": "user"}]}, r"d.jsonl:2: field 'prompt\[0\]': expected \{\"role\""),
        ({**GOOD, "prompt": ""}, r"d.jsonl:2: field 'prompt': expected a non-empty string"),
        (
            {**GOOD, "chosen": [{"role": "user", "content": "A"}]},
            r"d.jsonl:2: field 'chosen': expected the last message",
        ),
        (
            {"prompt": "Q", "completion": "A", "label": 2},
            r"d.jsonl:2: field 'label': expected true/false or 1/0",
        ),
        ({"prompt": "Q", "completion": "A", "label": "yes"}, r"d.jsonl:2: field 'label'"),
        ({**GOOD, "completion": "C"}, r"d.jsonl:2: fields 'chosen' and 'completion'"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, line, pattern):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, line])
    with pytest.raises(DataError, match=pattern):
        load_records(str(path))


def test_mixed_paired_and_unpaired_rows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, {"prompt": "Q", "completion": "A", "label": 1}])
    with pytest.raises(
        DataError, match=r"d.jsonl:3: row is unpaired, but the first row \(.*d.jsonl:1\) is paired"
    ):
        load_records(str(path))


def test_json_array_error_names_the_element_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([GOOD, {**GOOD, "rejected": None}], indent=1), encoding="utf-8")
    with pytest.raises(DataError, match=r"d.json:7: missing field 'rejected'"):
        load_records(str(path))


def test_non_utf8_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"prompt": "\xff", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: invalid UTF-8"):
        load_records(str(path))


def test_unusable_rows_are_skipped_and_counted(tmp_path):
    rows = [GOOD, {**GOOD, "rejected": "A"}, {**GOOD, "chosen": "  "}, {**GOOD, "rejected": "A"}]
    result = load_records(str(write_jsonl(tmp_path / "d.jsonl", rows)))
    assert len(result.records) == 1
    assert result.skipped == {"identical responses": 2, "empty response": 1}
    with pytest.raises(UnusableRow, match=r"x:4: field 'chosen': empty response") as info:
        parse_row({**GOOD, "chosen": ""}, "x:4")
    assert isinstance(info.value, DataError) and info.value.reason == "empty response"


def test_empty_dataset(tmp_path):
    with pytest.raises(DataError, match=r"d.jsonl: empty dataset"):
        load_records(str(write_jsonl(tmp_path / "d.jsonl", [])))
    with pytest.raises(DataError, match=r"e.jsonl: empty dataset.*1 identical responses"):
        load_records(str(write_jsonl(tmp_path / "e.jsonl", [{**GOOD, "rejected": "A"}])))


def test_missing_paths_say_not_found(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"nope.jsonl: not found"):
        load_records(str(tmp_path / "nope.jsonl"))

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"someone/missing: not found"):
        load_records("someone/missing")
    with pytest.raises(DataError, match=r"missing-dir: not found: no such file or folder$"):
        load_records(str(tmp_path / "missing-dir"))


def test_to_unpaired_and_prompt_text():
    pairs = [PreferencePair("p0", "c0", "r0", "s0"), PreferencePair(CHAT, "c1", "r1", "s1")]
    out = to_unpaired(pairs)
    assert [(e.completion, e.label, e.source) for e in out] == [
        ("c0", True, "s0"), ("r0", False, "s0"), ("c1", True, "s1"), ("r1", False, "s1"),
    ]  # fmt: skip
    assert out[3].prompt == CHAT
    assert prompt_text("p0") == "p0" and prompt_text(CHAT) == "Be kind.\n\nHi"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "", 3]), "content": st.text(max_size=5)}
    ),
    max_size=3,
)
hh_text = st.builds(
    lambda a, b: f"\n\nHuman: {a}\n\nAssistant: {b}", st.text(max_size=8), st.text(max_size=8)
)
keys = st.sampled_from(["prompt", "chosen", "rejected", "completion", "label", "rejectd", "x"]) | st.text(
    max_size=6
)


@settings(max_examples=400, deadline=None)
@given(
    row=st.dictionaries(keys, json_values | messages | hh_text | st.sampled_from([0, 1, True]), max_size=5)
)
def test_parse_row_only_raises_data_error(row):
    try:
        record = parse_row(row, "fuzz:1")
    except DataError as e:
        assert str(e).startswith("fuzz:1")
    else:
        assert isinstance(record, PreferencePair | UnpairedExample)


# ---- tokenization and batches ----------------------------------------------------------------


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
