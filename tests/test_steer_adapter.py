"""Steered UPO by adapter (steer_by: adapter, upo.steer_adapter): aux_coef scales a second LoRA adapter."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import deterministic, run_config
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from upo.config import ConfigError, UPOConfig
from upo.data.steering import SteeringError, read_steering, write_steering
from upo.evaluation.config import EvalConfig
from upo.evaluation.eval import run_eval
from upo.metrics import read_metrics
from upo.steer_adapter import (
    ADAPTER_FOLDER,
    AdapterSteering,
    adapter_weight,
    add_steer_adapter,
    load_steered,
    set_adapter_weight,
    split_steer_adapter,
    step_condition,
)
from upo.trainer import train

COEFS = [0.0, 1.0, 3.0]


def test_adapter_weight_is_aux_coef_over_the_largest():
    assert [adapter_weight(c, COEFS) for c in COEFS] == [0.0, 1 / 3, 1.0]
    assert adapter_weight(0.3, [0.3, 0.6]) == 0.5


def test_final_and_its_steer_adapter_give_exactly_the_trained_mix_at_each_condition(tiny_model_dir, tmp_path):
    """Training runs W0 + (1 - w) dW_default + w dW_steer; final/ (default merged) plus steer_adapter/
    (dW_steer - dW_default, rank 2r) at scale w must give the same model at every trained aux_coef."""
    from peft.tuners.lora import LoraLayer

    from upo.modeling import add_lora

    torch.manual_seed(0)
    lm = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), UPOConfig(lora=True, lora_r=4, lora_alpha=8))
    add_steer_adapter(lm)
    for layer in lm.modules():  # both adapters away from their zero start, and apart
        if isinstance(layer, LoraLayer):
            for name in ("default", "steer"):
                torch.nn.init.normal_(layer.lora_B[name].weight, std=0.05)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    trained = {}
    with torch.no_grad():
        for c in COEFS:
            set_adapter_weight(lm, adapter_weight(c, COEFS))
            trained[c] = lm(ids).logits
    final = tmp_path / "final"
    merged = split_steer_adapter(lm, final / ADAPTER_FOLDER).merge_and_unload()
    merged.save_pretrained(final)
    write_steering(final, COEFS, by="adapter")
    for c in COEFS:
        with torch.no_grad():
            got = load_steered(AutoModelForCausalLM.from_pretrained(final), final, c)(ids).logits
        assert torch.allclose(got, trained[c], atol=1e-5), c
    assert not torch.allclose(trained[0.0], trained[3.0], atol=1e-3)


def test_each_block_of_k_steps_trains_every_condition_once_seeded():
    k = 3
    draws = [step_condition(s, [1] * k, seed=1) for s in range(30)]
    assert all(sorted(draws[b: b + k]) == [0, 1, 2] for b in range(0, 30, k))
    assert draws == [step_condition(s, [1] * k, seed=1) for s in range(30)]  # a function of its arguments: resumable
    assert draws != [step_condition(s, [1] * k, seed=2) for s in range(30)]
    assert draws != [s % k for s in range(30)]  # shuffled within blocks, not a fixed rotation
    assert Counter(step_condition(s, [1] * 4, 0) for s in range(400)) == {c: 100 for c in range(4)}
    # the permutation of range(K) the draw was before steer_aux_weights existed: runs resume with the same steps
    assert draws == [int(np.random.default_rng([1, 0x57EE, s // k]).permutation(k)[s % k]) for s in range(30)]


def test_weighted_steps_train_each_condition_its_share_of_every_block():
    """Weights [2, 1, 1]: every block of 4 steps trains condition 0 twice, 1 and 2 once, in a seeded order."""
    draws = [step_condition(s, [2, 1, 1], seed=3) for s in range(40)]
    assert all(sorted(draws[b: b + 4]) == [0, 0, 1, 2] for b in range(0, 40, 4))
    assert len({tuple(draws[b: b + 4]) for b in range(0, 40, 4)}) > 1  # reshuffled each block
    steering = AdapterSteering(None, [0.0, 1.0, 3.0], seed=3, weights=[2, 1, 1])
    assert [steering.aux_coef(s) for s in range(40)] == [[0.0, 1.0, 3.0][d] for d in draws]


def test_a_weighted_run_trains_each_step_at_its_drawn_condition(tiny_model_dir, pairs_file, tmp_path):
    """steer_aux_weights [3, 1, 1]: each step's logged aux_coef is step_condition's draw with those weights."""
    final = train(run_config(tiny_model_dir, pairs_file, tmp_path, lora=True, lora_r=4, max_steps=10, batch_size=2,
                             steer_aux_coefs=COEFS, steer_by="adapter", steer_aux_weights=[3, 1, 1], seed=5,
                             max_length=128, max_prompt_length=64, logging_steps=1))
    rows = [r for r in read_metrics(final.parent / "metrics.jsonl") if "train/loss" in r]
    assert [r["train/upo/aux_coef_mean"] for r in rows] == [COEFS[step_condition(s, [3, 1, 1], 5)] for s in range(10)]
    assert [r["train/upo/aux_coef_mean"] for r in rows].count(COEFS[0]) == 6  # 3 of every 5 steps


def test_adapter_steering_config_is_checked():
    keys = dict(method="upo", steer_aux_coefs=COEFS, steer_by="adapter", rewards={"length": 1.0})
    assert UPOConfig(lora=True, **keys).steer_by == "adapter"
    with pytest.raises(ConfigError, match="needs lora: true"):
        UPOConfig(lora=False, **keys)
    with pytest.raises(ConfigError, match="needs lora: true and merge_lora: true"):
        UPOConfig(lora=True, merge_lora=False, **keys)
    with pytest.raises(ConfigError, match="a value > 0"):
        UPOConfig(lora=True, **{**keys, "steer_aux_coefs": [0.0]})
    with pytest.raises(ConfigError, match="'token' or 'adapter'"):
        UPOConfig(lora=True, **{**keys, "steer_by": "prompt"})
    with pytest.raises(ConfigError, match="steer_by .the run is not steered"):
        UPOConfig(method="upo", lora=True, steer_by="adapter", rewards={"length": 1.0})
    assert UPOConfig(lora=True, steer_aux_weights=[2, 1, 1], **keys).steer_aux_weights == [2, 1, 1]
    for weights in ([2, 1], [2, 0, 1], [1.5, 1, 1]):
        with pytest.raises(ConfigError, match="steer_aux_weights must be one whole number >= 1 per"):
            UPOConfig(lora=True, steer_aux_weights=weights, **keys)
    with pytest.raises(ConfigError, match=r"steer_aux_weights \(it weighs the steps of a run steered by adapter"):
        UPOConfig(lora=True, steer_aux_weights=[2, 1, 1], **{**keys, "steer_by": "token"})


def test_lora_on_an_embedding_fails_when_the_steering_adapter_is_added(tiny_model_dir):
    """The end of training combines the two adapters into one LoRA adapter (split_steer_adapter), which
    it cannot do for LoRA on an embedding: that fails before the first step, naming the setting."""
    from upo.modeling import add_lora

    cfg = UPOConfig(lora=True, lora_r=4, lora_alpha=8, lora_target_modules=["embed_tokens", "q_proj"])
    lm = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cfg)
    with pytest.raises(ConfigError, match="also trains embed_tokens .lora_target_modules naming an embedding"):
        add_steer_adapter(lm)
    add_steer_adapter(add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                               UPOConfig(lora=True, lora_r=4, lora_alpha=8, lora_target_modules=["q_proj"])))


@pytest.fixture(scope="module")
def adapter_run(tiny_model_dir, pairs_file, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adapter")
    return train(run_config(tiny_model_dir, pairs_file, tmp, lora=True, lora_r=4, max_steps=4, batch_size=2,
                            steer_aux_coefs=COEFS, steer_by="adapter", ref_model=str(tiny_model_dir),
                            max_length=128, max_prompt_length=64))


def test_final_holds_the_aux_coef_0_policy_and_the_steering_adapter(adapter_run, tiny_model_dir):
    final = adapter_run
    assert read_steering(final) == COEFS
    record = json.loads((final / "steering.json").read_text())
    assert record["steer_by"] == "adapter" and record["adapter"] == ADAPTER_FOLDER and "tokens" not in record
    assert (final / ADAPTER_FOLDER / "adapter_config.json").is_file()
    steer = load_file(str(final / ADAPTER_FOLDER / "adapter_model.safetensors"))
    assert steer and any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in steer.items()), \
        "the steering adapter did not train"
    # final/ itself: a plain model (LoRA merged), no new tokens, not the base model
    merged = load_file(str(final / "model.safetensors"))
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    assert merged.keys() == base.keys() and any(not torch.equal(merged[k], base[k]) for k in base)
    rows = [r for r in read_metrics(final.parent / "metrics.jsonl") if "train/loss" in r]
    assert rows and all(r["train/upo/aux_coef_mean"] in COEFS for r in rows)  # one condition per step


def test_the_conditions_are_different_models_and_0_is_final_itself(adapter_run):
    final = adapter_run
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    logits = {}
    for c in COEFS:
        model = load_steered(AutoModelForCausalLM.from_pretrained(final), final, c)
        logits[c] = model(ids).logits
    plain = AutoModelForCausalLM.from_pretrained(final)(ids).logits
    assert torch.allclose(logits[0.0], plain, atol=1e-6)
    assert not torch.allclose(logits[1.0], logits[3.0]) and not torch.allclose(logits[0.0], logits[1.0])
    with pytest.raises(SteeringError, match="trained values: 0, 1, 3"):
        load_steered(AutoModelForCausalLM.from_pretrained(final), final, 0.5)
    with pytest.raises(SteeringError, match="one of 0, 1, 3"):
        load_steered(AutoModelForCausalLM.from_pretrained(final), final, None)


def test_upo_eval_evaluates_each_condition(adapter_run, tiny_model_dir, pairs_file, tmp_path):
    final = adapter_run
    cfg = dict(model=str(final), data=str(pairs_file), eval_fraction=0.25, prompts=2, max_new_tokens=4,
               scorers=["length_words"], ref_model=str(tiny_model_dir), precision="fp32", max_length=96,
               max_prompt_length=32, progress=False, cache_dir=str(tmp_path / "c"))
    with pytest.raises(SteeringError, match="trained values: 0, 1, 3"):
        run_eval(EvalConfig(**cfg, aux_coef=0.5, output=str(tmp_path / "bad")))
    results = {c: run_eval(EvalConfig(**cfg, aux_coef=c, output=str(tmp_path / f"aux{c}"))) for c in (0.0, 3.0)}
    assert results[3.0]["settings"]["aux_coef"] == 3.0 and results[3.0]["counts"]["generations"] == 2
    assert results[0.0]["metrics"]["logps/chosen"] != results[3.0]["metrics"]["logps/chosen"]


def test_a_resumed_adapter_steered_run_matches_the_uninterrupted_one(tiny_model_dir, pairs_file, tmp_path):
    """The step's condition is a function of the step: a run stopped at step 3 and resumed trains
    every step under the condition it had, so it ends with the uninterrupted run's weights."""
    keys = dict(steer_aux_coefs=COEFS, steer_by="adapter", lora=True, lora_r=4, batch_size=4, save_steps=3,
                eval_steps=None)
    full = train(run_config(tiny_model_dir, pairs_file, tmp_path / "full", max_steps=7, **keys))
    train(run_config(tiny_model_dir, pairs_file, tmp_path / "part", max_steps=3, **keys))
    resumed = train(run_config(tiny_model_dir, pairs_file, tmp_path / "part", max_steps=7, resume=True, **keys))
    for name in ("model.safetensors", f"{ADAPTER_FOLDER}/adapter_model.safetensors"):
        a, b = load_file(str(full / name)), load_file(str(resumed / name))
        assert all(torch.equal(a[k], b[k]) for k in a)
    rows_full, rows_part = ([{k: v for k, v in r.items() if not k.startswith("eval/")} for r in
                             deterministic(read_metrics(f.parent / "metrics.jsonl"))] for f in (full, resumed))
    assert rows_full == rows_part
