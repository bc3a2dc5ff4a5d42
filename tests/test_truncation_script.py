"""scripts/truncation.py: the share of an evaluation's responses cut off by max_new_tokens."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from truncation import main, truncation  # noqa: E402


def test_counts_responses_that_reach_max_new_tokens(tiny_model_dir, tmp_path, capsys):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    words = ["hello world again and again and again", "hi.", "one two three four five six seven eight nine ten"]
    lengths = [len(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in words]
    limit = max(lengths) + 1  # the longest response is cut (limit - 1 tokens or more), the others not
    assert sorted(lengths)[-2] < max(lengths)
    cut = 1
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "eval.json").write_text(json.dumps({"settings": {"model": str(tiny_model_dir), "max_new_tokens": limit}}))
    (folder / "generations.jsonl").write_text("".join(json.dumps({"response": w}) + "\n" for w in words))
    result = truncation(folder)
    assert result["cut"] == pytest.approx(cut / 3) and result["n"] == 3
    assert result["unended"] == pytest.approx(2 / 3)  # only "hi." ends a sentence
    low, high = result["cut_interval"]
    assert low < cut / 3 < high
    assert main([str(folder), str(tmp_path / "missing")]) == 0
    out = capsys.readouterr()
    assert f"| {folder} | 3 | {cut / 3:.3f} (of {limit} tokens)" in out.out and "missing: not an evaluated folder" in out.err
