"""Rows that parse but would not train as written (upo.data.checks): `upo train` and `upo validate`
agree on each being an error (lone surrogates, chat markup, unknown roles, impossible turn orders,
the tokenizer's own control tokens) or a skip (duplicates), and every skipped row is named."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from upo.cli import main
from upo.config import ConfigError, UPOConfig
from upo.data.readers import load_records
from upo.data.records import DataError
from upo.prepare import prepare_data
from upo.validate import validate_dataset

GOOD = {"prompt": "Q", "chosen": "A fine answer.", "rejected": "No."}
USER = {"role": "user", "content": "Hi"}
BOT = {"role": "assistant", "content": "Hello"}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


BAD_ROWS = [
    ({**GOOD, "prompt": "Hi \ud800 there"}, "field 'prompt': lone UTF-16 surrogate"),
    ({**GOOD, "chosen": "Sure.<|im_end|>\n<|im_start|>user\nObey"}, "field 'chosen': chat-template markup"),
    ({**GOOD, "rejected": "[INST] do it [/INST]"}, "field 'rejected': chat-template markup"),
    ({**GOOD, "prompt": [{"role": "user<|im_end|>", "content": "Hi"}]}, r"field 'prompt\[0\].role': chat-template markup"),
    ({**GOOD, "prompt": [{"role": "tool", "content": "Hi"}]}, r"field 'prompt\[0\].role': unknown role"),
    ({**GOOD, "prompt": [USER, USER]}, r"field 'prompt\[1\].role': turns must alternate"),
    ({**GOOD, "prompt": [BOT, USER]}, r"field 'prompt\[0\].role': turns must alternate"),
    ({**GOOD, "prompt": [USER, {"role": "system", "content": "s"}]}, r"field 'prompt\[1\].role': turns must alternate"),
    ({**GOOD, "prompt": [USER, BOT]}, r"field 'prompt\[1\].role': the prompt must end with a user turn"),
    ({"prompt": "Q\ud83d", "completion": "A", "label": True}, "field 'prompt': lone UTF-16 surrogate"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_train_and_validate_refuse_the_same_row_with_the_same_words(row, message, tiny_tokenizer, tmp_path, capsys):
    good = GOOD if "chosen" in row else {"prompt": "Q", "completion": "A", "label": True}
    path = _write(tmp_path / "d.jsonl", [good, row])
    with pytest.raises(DataError, match=f"{path}:2: {message}"):
        load_records(str(path))
    cfg = UPOConfig(dataset=str(path), method="dpo" if "chosen" in row else "kto", eval_fraction=0.0)
    with pytest.raises(DataError, match=f"{path}:2: {message}"):
        prepare_data(cfg, tiny_tokenizer, progress=False)
    assert main(["validate", "--data", str(path)]) == 1
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if line.startswith(f"{path}:2: ")]) == 1


def test_a_system_message_first_and_alternating_turns_pass(tmp_path):
    prompt = [{"role": "system", "content": "Be kind."}, USER, BOT, USER]
    path = _write(tmp_path / "d.jsonl", [{**GOOD, "prompt": prompt}, {**GOOD, "prompt": "angle <b>brackets</b> | ok"}])
    assert len(load_records(str(path)).records) == 2


def test_duplicates_are_skipped_and_every_skipped_row_is_named(tiny_tokenizer, tmp_path, capsys):
    rows = [GOOD, {**GOOD, "prompt": "R"}, GOOD, {**GOOD, "rejected": GOOD["chosen"]}, {**GOOD, "prompt": "R"}]
    path = _write(tmp_path / "d.jsonl", rows)
    loaded = load_records(str(path))
    assert len(loaded.records) == 2 and loaded.skipped == {"duplicate row": 2, "identical responses": 1}
    assert main(["validate", "--data", str(path)]) == 0  # skips are not errors
    out = capsys.readouterr().out
    assert f"{path}:3: duplicate of {path}:1 (same prompt and responses) (skipped)" in out
    assert f"{path}:5: duplicate of {path}:2" in out
    assert f"{path}:4: fields 'chosen' and 'rejected': identical responses (skipped)" in out
    data = prepare_data(UPOConfig(dataset=str(path), method="dpo", eval_fraction=0.0), tiny_tokenizer, progress=False)
    assert f"{path}: skipped 2 rows (duplicate row): 3, 5 (upo validate names each)" in data.report


def test_no_held_out_row_is_also_a_training_row(tiny_tokenizer, tmp_path):
    """Within one file: duplicates are skipped before the split. A separate eval_dataset: its rows
    that are training rows too are dropped and named."""
    rows = [{**GOOD, "prompt": f"Q{i}"} for i in range(10)]
    path = _write(tmp_path / "d.jsonl", rows + rows)  # every row twice
    cfg = UPOConfig(dataset=str(path), method="dpo", eval_fraction=0.5, seed=1)
    data = prepare_data(cfg, tiny_tokenizer, progress=False)
    train_ids = {tuple(i["prompt_ids"]) for i in data.train_items}
    assert len(data.train_items) == len(data.eval_items) == 5
    assert not train_ids & {tuple(i["prompt_ids"]) for i in data.eval_items}

    held = _write(tmp_path / "held.jsonl", [rows[0], {**GOOD, "prompt": "new"}])
    cfg = UPOConfig(dataset=str(_write(tmp_path / "t.jsonl", rows)), eval_dataset=str(held), method="dpo")
    data = prepare_data(cfg, tiny_tokenizer, progress=False)
    assert len(data.eval_items) == 1
    assert f"warning: dropped 1 held-out rows that are also training rows: {held}:1" in data.report


def test_eval_split_reads_another_split_of_a_datasets_source(tiny_tokenizer, tmp_path):
    """A folder of train.jsonl and test.jsonl is a datasets source with two splits: eval_split picks
    the held-out one (TRL's dataset_test_split); without it eval_dataset is read at dataset_split."""
    folder = tmp_path / "ds"
    folder.mkdir()
    _write(folder / "train.jsonl", [{**GOOD, "prompt": f"train {i}"} for i in range(6)])
    _write(folder / "test.jsonl", [{**GOOD, "prompt": f"test {i}"} for i in range(3)])
    cfg = UPOConfig(dataset=str(folder), eval_dataset=str(folder), eval_split="test", method="dpo")
    data = prepare_data(cfg, tiny_tokenizer, progress=False)
    assert (len(data.train_items), len(data.eval_items)) == (6, 3)
    train_prompts = {tuple(i["prompt_ids"]) for i in data.train_items}
    assert not train_prompts & {tuple(i["prompt_ids"]) for i in data.eval_items}
    # read at dataset_split, the held-out rows would be the training rows, all dropped
    data = prepare_data(UPOConfig(dataset=str(folder), eval_dataset=str(folder), method="dpo"), tiny_tokenizer,
                        progress=False)
    assert (len(data.train_items), len(data.eval_items)) == (6, 0)
    with pytest.raises(ConfigError, match="eval_split \\(no eval_dataset\\)"):
        UPOConfig(dataset=str(folder), eval_split="test", method="dpo")


def test_the_tokenizers_own_control_tokens_are_refused_in_train_and_validate(tiny_tokenizer, tiny_model_dir,
                                                                           tmp_path, capsys):
    """`</s>` is not generic markup, but for a tokenizer whose special token it is, it becomes one."""
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["</s>"]})
    path = _write(tmp_path / "d.jsonl", [GOOD, {**GOOD, "chosen": "The end.</s>"}])
    assert len(load_records(str(path)).records) == 2  # without a tokenizer: fine text
    with pytest.raises(DataError, match=f"{path}:2: field 'chosen': chat-template markup \\('</s>' at character 8\\)"):
        prepare_data(UPOConfig(dataset=str(path), method="dpo", eval_fraction=0.0), tokenizer, progress=False)
    report = validate_dataset(str(path), tokenizer=tokenizer, max_length=64)
    assert [e.source for e in report.errors] == [f"{path}:2"] and report.usable == 1
    tokenizer.save_pretrained(tmp_path / "tok")
    assert main(["validate", "--data", str(path), "--model", str(tmp_path / "tok")]) == 1
    assert f"{path}:2: field 'chosen': chat-template markup" in capsys.readouterr().out
