"""Bad input fails clearly: `upo validate` reports every problem, parsers raise only DataError
(fuzzed), scorer failures name the data row and field, and empty or too-long data is reported.

Cases already covered elsewhere (not repeated here): malformed JSON, missing/misspelled fields,
non-string responses, wrong labels, mixed formats (test_data.py::test_errors_name_file_line_and_field,
test_mixed_paired_and_unpaired_rows); empty and identical responses skipped and counted
(test_data.py::test_unusable_rows_are_skipped_and_counted); HH prompts that are not a shared
prefix (test_data.py::test_hh_prompts_must_be_a_shared_prefix); non-UTF-8 lines
(test_data.py::test_non_utf8_line); truncation counts (test_data.py::test_truncation_keeps_the_prompt_end_and_cuts_completions);
empty dataset (test_data.py::test_empty_dataset); scorers returning NaN/inf, raising or returning the
wrong count (test_rewards.py::test_score_texts_bad_scorers); unknown and ill-typed config keys
(test_config.py); a missing model path (test_cli.py::test_missing_model_path_is_clear).
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from helpers import write_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from upo.cli import main
from upo.config import UPOConfig
from upo.data.readers import BadRow, load_records, scan_records
from upo.data.records import DataError, parse_row
from upo.data.tokenize import encode_completion, encode_prompt
from upo.prepare import prepare_data
from upo.validate import error_kind, validate_dataset

GOOD = {"prompt": "Q", "chosen": "A fine answer.", "rejected": "No."}
HH_A = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bread?\n\nAssistant: Flour."
HH_B = "\n\nHuman: Hey\n\nAssistant: Hello\n\nHuman: Bread?\n\nAssistant: No."


# ---- upo validate ----------------------------------------------------------------------------

BAD_FILE = [
    GOOD,                                                   # 1 usable
    '{"prompt": "Q", "chosen": "A",',                       # 2 malformed JSON
    {"prompt": "Q", "chosen": "A", "rejectd": "B"},         # 3 misspelled field
    {**GOOD, "chosen": 3},                                  # 4 non-string response
    {**GOOD, "rejected": GOOD["chosen"]},                   # 5 identical: skipped
    {**GOOD, "chosen": "   "},                              # 6 empty response: skipped
    {"chosen": HH_A, "rejected": HH_B},                     # 7 HH prompts differ: skipped
    b'{"prompt": "\xff", "chosen": "a", "rejected": "b"}',  # 8 not UTF-8
    {"prompt": "Q", "completion": "A", "label": 1},         # 9 unpaired among paired rows
    "[" * 100_000,                                          # 10 nested too deeply for json
    '{"prompt": ' + "7" * 5000 + "}",                       # 11 an int json refuses to convert
    {**GOOD, "prompt": "Q2"},                               # 12 usable
]  # fmt: skip


def test_validate_reports_every_problem_with_its_line_and_field(tmp_path, capsys):
    path = write_lines(tmp_path / "d.jsonl", BAD_FILE)
    assert main(["validate", "--data", str(path)]) == 1
    out = capsys.readouterr().out
    expected = {
        2: "malformed JSON at column",
        3: "missing field 'rejected' (found 'rejectd')",
        4: "field 'chosen': expected a non-empty string, got int",
        8: "invalid UTF-8",
        9: "row is unpaired, but the first row",
        10: "malformed JSON: nested too deeply",
        11: "malformed JSON: Exceeds the limit",
    }
    for line, message in expected.items():
        assert f"{path}:{line}: {message}" in out, line
    report = validate_dataset(str(path))
    assert [int(e.source.rsplit(":", 1)[1]) for e in report.errors] == sorted(expected)
    assert report.skipped == {"identical responses": 1, "empty response": 1, "prompts differ": 1}
    assert (report.usable, report.rows, report.fmt) == (2, 12, "paired")
    assert "| usable (paired) | 2 |" in out and "| errors | 7 |" in out and "| skipped: prompts differ | 1 |" in out
    assert f"| malformed JSON | 3 | {path}:2 |" in out  # errors grouped by kind, with the first row


def test_validate_agrees_with_load_records_on_a_clean_file(tmp_path, capsys):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, {**GOOD, "rejected": "A fine answer."}, {**GOOD, "prompt": "R"}])
    assert main(["validate", "--data", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| usable (paired) | 2 |" in out and "| skipped: identical responses | 1 |" in out and "| errors | 0 |" in out
    loaded = load_records(str(path))
    scanned = scan_records(str(path))
    assert scanned.records == loaded.records and scanned.skipped == loaded.skipped and scanned.errors == []


def test_validate_token_lengths_and_truncation(tiny_model_dir, tiny_tokenizer, tmp_path, capsys):
    long_prompt = "How do I bake bread? " * 12
    long_answer = "Mix flour, water, salt and yeast, then knead and bake it. " * 6
    rows = [{"prompt": long_prompt, "chosen": long_answer, "rejected": "No."}, GOOD, {**GOOD, "prompt": "Why?"}]
    path = write_lines(tmp_path / "d.jsonl", rows)
    assert main(["validate", "--data", str(path), "--model", str(tiny_model_dir), "--max_length", "64"]) == 0
    out = capsys.readouterr().out
    # Independently: prompt and response token counts as training builds them.
    prompts = [len(encode_prompt(r["prompt"], tiny_tokenizer)) for r in rows]
    responses = [len(encode_completion(r[k], tiny_tokenizer)) for r in rows for k in ("chosen", "rejected")]
    assert prompts[0] > 32 and responses[0] > 64 and max(prompts[1:] + responses[1:]) < 32
    assert f"| prompt | 3 | {min(prompts)} |" in out and f"{max(prompts)} | 1 > max_prompt_length=32 |" in out
    assert f"| response | 6 | {min(responses)} |" in out
    # only the long pair's prompt is cut (to 32 tokens), and only its chosen response
    assert "training would see 3 examples: 1 prompts truncated, 1 responses truncated, 0 dropped" in out


def test_validate_without_any_usable_row_fails(tmp_path, capsys):
    path = write_lines(tmp_path / "d.jsonl", [{**GOOD, "rejected": GOOD["chosen"]}] * 2)
    assert main(["validate", "--data", str(path)]) == 1
    assert f"{path}: empty dataset: no usable rows (skipped: 2 identical responses)" in capsys.readouterr().out


def test_train_on_data_that_filters_to_nothing_is_one_clear_line(tiny_model_dir, tmp_path, capsys):
    path = write_lines(tmp_path / "d.jsonl", [{**GOOD, "rejected": GOOD["chosen"]}, {**GOOD, "chosen": ""}])
    code = main(["train", "--model", str(tiny_model_dir), "--dataset", str(path), "--method", "dpo",
                 "--output_dir", str(tmp_path / "run"), "--progress", "false"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "empty dataset: no usable rows (skipped: 1 identical responses, 1 empty response)" in err


def test_no_training_examples_left_after_the_eval_split(tiny_tokenizer, tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, {**GOOD, "prompt": "R"}])
    cfg = UPOConfig(dataset=str(path), method="dpo", eval_fraction=0.9, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"d.jsonl: no training examples left after splitting off evaluation"):
        prepare_data(cfg, tiny_tokenizer, progress=False)


@pytest.mark.parametrize("model", ["missing-model-dir/", "./nope", "a/b/c"])
def test_validate_with_a_missing_model_is_one_clear_line(model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_lines(tmp_path / "d.jsonl", [GOOD])
    assert main(["validate", "--data", str(path), "--model", model]) == 2
    err = capsys.readouterr().err
    assert "model path does not exist" in err or "could not load a tokenizer" in err
    assert "Traceback" not in err


def test_validate_a_missing_file_and_a_corrupt_gzip(tmp_path, capsys):
    assert main(["validate", "--data", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: not found" in capsys.readouterr().err
    good = gzip.compress(b"".join(json.dumps({**GOOD, "prompt": f"Q{i}"}).encode() + b"\n" for i in range(200)))
    corrupt = good[:40] + bytes(b ^ 0x55 for b in good[40:80]) + good[80:]
    (tmp_path / "c.jsonl.gz").write_bytes(corrupt)
    with pytest.raises(DataError, match=r"c.jsonl.gz: cannot read"):
        load_records(str(tmp_path / "c.jsonl.gz"))
    (tmp_path / "t.jsonl.gz").write_bytes(good[: len(good) // 2])  # truncated download
    with pytest.raises(DataError, match=r"t.jsonl.gz: cannot read"):
        load_records(str(tmp_path / "t.jsonl.gz"))


def test_json_array_stops_at_its_first_malformed_element(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n {"prompt": "Q", "chosen": "A", "rejected": "B"},\n {"prompt": "Q", "chosen": 3, "rejected": "B"},\n'
                    ' {"prompt": "Q" "chosen": "A"},\n {"prompt": "Q", "chosen": "A", "rejected": "C"}\n]')  # fmt: skip
    report = validate_dataset(str(path))
    assert [e.message.split(": ", 1)[1] for e in report.errors] == [
        "field 'chosen': expected a non-empty string, got int",
        "malformed JSON at column 17: Expecting ',' delimiter",
    ]
    assert [e.source for e in report.errors] == [f"{path}:3", f"{path}:4"] and report.usable == 1


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("d:1: malformed JSON at column 3: Expecting value", "malformed JSON"),
        ("d:1: missing field 'rejected' (found 'rejectd')", "missing field 'rejected'"),
        ("d:1: field 'prompt[0]': expected {\"role\": str, \"content\": str}, got 3",
         "field 'prompt[0]': expected {\"role\": str, \"content\": str}"),
        ("d:1: fields 'chosen' and 'completion': a row is paired (a) or unpaired (b)",
         "fields 'chosen' and 'completion': a row is paired"),
        ("d:1: invalid UTF-8 at byte 4 of the line: b'\\xff'", "invalid UTF-8"),
    ],
)  # fmt: skip
def test_error_kinds_group_rows_without_their_details(message, kind):
    assert error_kind(BadRow("d:1", message)) == kind


def test_validate_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["validate", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "usage: upo validate" in out and "--max_length" in out and "--model" in out


# ---- fuzzing: any bytes, any JSON, only DataError --------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
row_keys = st.sampled_from(["prompt", "chosen", "rejected", "completion", "label", "chosn"]) | st.text(max_size=4)
rows = st.dictionaries(row_keys, json_values | st.sampled_from([HH_A, HH_B, 1, True, ""]), max_size=5) | json_values
json_line_bytes = st.lists(rows, max_size=6).map(lambda rs: b"".join(json.dumps(r).encode() + b"\n" for r in rs))
# lines of JSON with bytes inserted: a byte can break the JSON, the UTF-8, or split a line
mangled = st.tuples(json_line_bytes, st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=3)),
                                              max_size=3)).map(
    lambda t: _insert(t[0], t[1])
)


def _insert(data: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    for at, chunk in edits:
        at %= len(data) + 1
        data = data[:at] + chunk + data[at:]
    return data


def _check_source(raw: bytes, suffix: str) -> None:
    """Both readers agree: load_records returns exactly what a clean scan found, or raises the
    DataError of the scan's first problem; nothing else is ever raised."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
        try:
            scan = scan_records(str(path))
        except DataError as e:  # only when the source cannot be read at all
            with pytest.raises(DataError, match="cannot read"):
                load_records(str(path))
            assert "cannot read" in str(e)
            return
        try:
            loaded = load_records(str(path))
        except DataError as e:
            message = str(e)
            assert message.startswith(str(path))
            if scan.errors:
                assert message == scan.errors[0].message
            else:
                assert not scan.records and "empty dataset" in message
        else:
            assert scan.errors == [] and loaded.records == scan.records and loaded.skipped == scan.skipped
        for error in scan.errors:
            assert error.message.startswith(f"{error.source}: ") and error.source.startswith(f"{path}:")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=200) | json_line_bytes | mangled, suffix=st.sampled_from([".jsonl", ".json", ".jsonl.gz"]))
def test_any_bytes_parse_or_raise_data_error(raw, suffix):
    _check_source(raw, suffix)


@settings(max_examples=150, deadline=None)
@given(elements=st.lists(rows, max_size=5), indent=st.sampled_from([None, 1]))
def test_any_json_array_parses_or_raises_data_error(elements, indent):
    _check_source(json.dumps(elements, indent=indent).encode(), ".json")


@settings(max_examples=300, deadline=None)
@given(row=json_values)
def test_any_json_value_as_a_row_parses_or_raises_data_error(row):
    try:
        parse_row(row, "f:1")
    except DataError as e:
        assert str(e).startswith("f:1: ")


# ---- scorers: failures name the data file's line and field -----------------------------------

SCORERS = """
    import math

    def nan_for_bad(prompts, completions):
        return [math.nan if c == "bad" else 1.0 for c in completions]

    def huge_count(prompts, completions):
        return [0.0] * (len(completions) + 2)

    def raises(prompts, completions):
        if "bad" in completions:
            raise RuntimeError("scorer bug")
        return [0.0] * len(completions)

    def exits(prompts, completions):
        import sys

        sys.exit(0)

    def bools(prompts, completions):
        return [c != "bad" for c in completions]
"""


@pytest.mark.parametrize(
    ("fn", "pattern"),
    [
        ("nan_for_bad", r"returned nan for {path}:3 field 'rejected' \(completion 'bad'\)"),
        ("raises", r"raised RuntimeError: scorer bug \(batch of \d+ texts from {path}:\d field '(chosen|rejected)'"),
        ("huge_count", r"returned \d+ values for \d+ completions \(batch from {path}:\d field"),
        ("exits", r"raised SystemExit: 0 \(batch of \d+ texts from {path}:\d field '(chosen|rejected)'"),  # not a silent exit 0
        ("bools", r"returned True \(bool\), not a number, for {path}:\d field 'chosen'"),  # a label, not a score
    ],
)
def test_scorer_failures_name_the_data_line_and_field(fn, pattern, tiny_tokenizer, tmp_path, monkeypatch):
    module = f"upo_bad_input_scorers_{fn}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(SCORERS))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    path = write_lines(tmp_path / "d.jsonl", [GOOD, {**GOOD, "prompt": "P"}, {**GOOD, "prompt": "R", "rejected": "bad"}])
    cfg = UPOConfig(dataset=str(path), method="upo", pref_loss="dpo", eval_fraction=0.0, cache_dir=str(tmp_path / "c"),
                    rewards={f"{module}:{fn}": 1.0})  # fmt: skip
    with pytest.raises(ValueError, match=pattern.format(path=str(path).replace(".", r"\."))) as info:
        prepare_data(cfg, tiny_tokenizer, progress=False)
    assert f"reward '{module}:{fn}'" in str(info.value)
