"""Data pipeline: row formats, sources and errors (tokenization and batches: test_tokenize_collate.py)."""

from __future__ import annotations

import gzip
import json

import datasets
import pytest
from helpers import write_lines
from hypothesis import given, settings
from hypothesis import strategies as st

from upo.data.readers import load_records
from upo.data.records import (
    DataError,
    PreferencePair,
    UnpairedExample,
    UnusableRow,
    parse_hh,
    parse_row,
    prompt_text,
    to_unpaired,
)

HH_CHOSEN = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant:  Mix flour and water. "
HH_REJECTED = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant: No."
CHAT = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]


# ---- formats ---------------------------------------------------------------------------------


def test_paired_plain_text_keeps_strings_exactly(tmp_path):
    path = write_lines(
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
    lines = write_lines(tmp_path / "l.json", rows)
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
    path = write_lines(tmp_path / "d.jsonl", [GOOD, line])
    with pytest.raises(DataError, match=pattern):
        load_records(str(path))


def test_mixed_paired_and_unpaired_rows(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, GOOD, {"prompt": "Q", "completion": "A", "label": 1}])
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
    result = load_records(str(write_lines(tmp_path / "d.jsonl", rows)))
    assert len(result.records) == 1
    assert result.skipped == {"identical responses": 2, "empty response": 1}
    with pytest.raises(UnusableRow, match=r"x:4: field 'chosen': empty response") as info:
        parse_row({**GOOD, "chosen": ""}, "x:4")
    assert isinstance(info.value, DataError) and info.value.reason == "empty response"


def test_empty_dataset(tmp_path):
    with pytest.raises(DataError, match=r"d.jsonl: empty dataset"):
        load_records(str(write_lines(tmp_path / "d.jsonl", [])))
    with pytest.raises(DataError, match=r"e.jsonl: empty dataset.*1 identical responses"):
        load_records(str(write_lines(tmp_path / "e.jsonl", [{**GOOD, "rejected": "A"}])))


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
