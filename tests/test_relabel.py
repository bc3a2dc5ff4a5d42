"""Preference baselines given the auxiliary information: pairs re-ranked by r_p-proxy + r_a."""

from __future__ import annotations

import numpy as np
from helpers import run_config

from upo.data.records import PreferencePair
from upo.data.relabel import relabel_pairs
from upo.metrics import read_metrics
from upo.prepare import prepare_data
from upo.trainer import train


def _pairs(n):
    return [PreferencePair(f"p{i}", f"c{i}", f"r{i}", f"f:{i}") for i in range(n)]


def test_relabel_rule_by_hand():
    """margin 1: pair 0 has r_a(rejected) - r_a(chosen) = 2 - 0 = 2 > 1, swapped; pair 1 has
    0.5 - 1 = -0.5, kept; pair 2 has 1.5 - 0.5 = 1.0, not > 1, kept (the user's label wins ties)."""
    pairs, swapped = relabel_pairs(_pairs(3), np.array([0.0, 2.0, 1.0, 0.5, 0.5, 1.5]), margin=1.0)
    assert swapped == 1
    assert (pairs[0].chosen, pairs[0].rejected) == ("r0", "c0")
    assert (pairs[1].chosen, pairs[2].chosen) == ("c1", "c2")


def test_large_margin_keeps_every_label():
    pairs, swapped = relabel_pairs(_pairs(3), np.array([0.0, 2.0, 1.0, 0.5, 0.5, 1.5]), margin=10.0)
    assert swapped == 0 and [p.chosen for p in pairs] == ["c0", "c1", "c2"]


def test_prepare_relabels_when_rewards_contradict_the_labels(tiny_model_dir, tiny_tokenizer, pairs_file, tmp_path):
    """Every rejected answer is longer; rewarding length (weight -1 on `length`) puts each rejected
    response about two standard deviations above its chosen one, so all training pairs swap."""
    cfg = run_config(tiny_model_dir, pairs_file, tmp_path, method="dpo", relabel=True, rewards={"length": -1.0})
    data = prepare_data(cfg, tiny_tokenizer, progress=False)
    assert any(line.startswith(f"relabelled {len(data.train_items)} of {len(data.train_items)} pairs") for line in data.report)
    kept = run_config(tiny_model_dir, pairs_file, tmp_path, method="dpo", relabel=True, rewards={"length": 1.0})
    assert any(line.startswith("relabelled 0 of") for line in prepare_data(kept, tiny_tokenizer, progress=False).report)


def test_relabelled_kto_trains(tiny_model_dir, pairs_file, tmp_path):
    train(run_config(tiny_model_dir, pairs_file, tmp_path, method="kto", relabel=True, rewards={"length": -1.0}, max_steps=1))
    assert read_metrics(tmp_path / "run" / "metrics.jsonl")[0]["step"] == 1
