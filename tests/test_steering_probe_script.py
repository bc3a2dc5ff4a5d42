"""scripts/steering_probe.py: how far apart a model steered by adapter holds two of its conditions
(README, Steered UPO). A training checkpoint, rebuilt as the trainer builds it with its two adapters
mixed, must read as the final/ saved at the same step (merged, its steer_adapter/ at each scale)."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest
from helpers import run_config

from upo.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from steering_probe import main, probe  # noqa: E402

COEFS = [0.0, 1.0, 3.0]


def _hh_rows(path: Path) -> Path:
    """HH-RLHF-format rows: two single-turn, one multi-turn (which the probe skips)."""
    rows = [("What is a cat?", "A small animal that purrs.", "I will not say."),
            ("Name a colour.", "Blue is a colour.", "No."),
            ("Hi.\n\nAssistant: Hello.\n\nHuman: And?", "And nothing.", "Go away.")]  # fmt: skip
    with gzip.open(path, "wt") as f:
        for prompt, chosen, rejected in rows:
            for_both = f"\n\nHuman: {prompt}\n\nAssistant: "
            f.write(json.dumps({"chosen": for_both + chosen, "rejected": for_both + rejected}) + "\n")
    return path


def test_a_checkpoint_reads_as_its_final_and_a_condition_as_itself(tiny_model_dir, pairs_file, tmp_path, capsys):
    final = train(run_config(tiny_model_dir, pairs_file, tmp_path, lora=True, lora_r=4, max_steps=3, batch_size=2,
                             save_steps=3, steer_aux_coefs=COEFS, steer_by="adapter", max_length=128,
                             max_prompt_length=64))  # fmt: skip
    checkpoint = final.parent / "checkpoints" / "step-3"
    data = str(_hh_rows(tmp_path / "hh.jsonl.gz"))
    kw = dict(pairs=5, data=data)
    from_final = probe(final, conditions=(0.0, 3.0), **kw)
    assert from_final["pairs"] == 2 and from_final["by_adapter"]
    assert from_final["diff"] > 1e-4 and from_final["kl"] > 0  # the conditions are different models
    from_checkpoint = probe(checkpoint, conditions=(0.0, 3.0), **kw)
    for key in ("diff", "kl", "margin_a", "margin_b"):
        assert from_checkpoint[key] == pytest.approx(from_final[key], rel=1e-3, abs=1e-5), key
    same = probe(checkpoint, conditions=(1.0, 1.0), **kw)
    assert same["diff"] == 0 and same["kl"] == 0
    # against final/ itself (aux_coef 0, merged): as the model's own conditions 3 and 0
    against = probe(final, against=final, conditions=(3.0, 0.0), **kw)
    own = probe(final, conditions=(3.0, 0.0), **kw)
    for key in ("diff", "kl", "margin_a", "margin_b"):
        assert against[key] == pytest.approx(own[key], rel=1e-3, abs=1e-5), key
    main([str(final), "--pairs", "5", "--data", data])
    assert f"{final}: aux_coef 0 vs 3 (2 single-turn pairs): mean |logp difference| per response token " \
           f"{from_final['diff']:.4f}" in capsys.readouterr().out  # fmt: skip


def test_two_reward_mixes_of_a_model_steered_over_them(tiny_model_dir, pairs_file, tmp_path, capsys):
    """A final/ steered over two mixes by token: its two mixes' tokens give different log-probs; a mix against
    itself gives none; a checkpoint of such a run is refused (probe its final/)."""
    mixes = {"short": {"length": -1.0}, "long": {"length": 1.0}}
    final = train(run_config(tiny_model_dir, pairs_file, tmp_path, rewards={}, steer_reward_mixes=mixes, max_steps=2,
                             save_steps=2, max_length=128, max_prompt_length=64))
    data = str(_hh_rows(tmp_path / "hh.jsonl.gz"))
    apart = probe(final, pairs=5, data=data, mixes=("short", "long"))
    assert apart["pairs"] == 2 and apart["diff"] > 1e-4 and apart["kl"] > 0
    same = probe(final, pairs=5, data=data, mixes=("long", "long"))
    assert same["diff"] == 0 and same["kl"] == 0
    against = probe(final, against=final, pairs=5, data=data, mixes=("long", "long"))  # the mix token vs none
    assert against["diff"] > 1e-4 and against["margin_a"] == pytest.approx(same["margin_a"])
    base = probe(final, against=tiny_model_dir, pairs=5, data=data, mixes=("long", "long"))  # 2 tokens fewer
    assert base["diff"] > 0 and base["kl"] >= 0
    with pytest.raises(SystemExit, match="reward mix 'lng' is not one this model was trained on; trained mixes: "):
        probe(final, pairs=5, data=data, mixes=("short", "lng"))
    with pytest.raises(SystemExit, match="probe its final/"):
        probe(final.parent / "checkpoints" / "step-2", pairs=5, data=data, mixes=("short", "long"))
    main([str(final), "--mixes", "short", "long", "--pairs", "5", "--data", data])
    assert f"{final}: reward mix short vs long (2 single-turn pairs)" in capsys.readouterr().out
