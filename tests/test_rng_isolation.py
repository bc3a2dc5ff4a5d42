"""A run's random initialization does not depend on its rewards' scoring: a scorer may draw from
torch's RNG (building its model) or not (its scores read from the cache), and the LoRA adapters
built after the data is prepared must come out the same either way."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import run_config

import upo.policy_lm
from upo.trainer import train


def noisy_length(prompts: list[str], responses: list[str]) -> list[float]:
    """A reward that draws from torch's RNG, as a scorer building its model does."""
    torch.rand(1000)
    return [float(len(r)) for r in responses]


def test_lora_initialization_does_not_depend_on_reward_scoring(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    add_lora, initial = upo.policy_lm.add_lora, {}

    def recording_add_lora(*args, **kwargs):
        lm = add_lora(*args, **kwargs)
        initial[name] = {k: v.detach().clone() for k, v in lm.named_parameters() if "lora_A" in k}
        return lm

    monkeypatch.setattr(upo.policy_lm, "add_lora", recording_add_lora)
    for name, rewards in (("length", {"length": 1.0}), ("noisy", {"test_rng_isolation:noisy_length": 1.0})):
        train(run_config(tiny_model_dir, pairs_file, tmp_path / name, lora=True, max_steps=1, rewards=rewards))
    assert initial["length"] and initial["length"].keys() == initial["noisy"].keys()
    assert all(torch.equal(initial["length"][k], initial["noisy"][k]) for k in initial["length"])
