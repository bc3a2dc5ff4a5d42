"""TR-DPO (`sync_ref_model`): every `ref_model_sync_steps` optimizer steps the reference copy becomes
`ref_model_mixup_alpha` * policy + (1 - alpha) * itself; checkpoints keep it, and a resumed run ends where an
uninterrupted one does."""

from __future__ import annotations

import pytest
import torch
from helpers import build_tiny_model, run_config
from safetensors.torch import load_file

from upo.config import ConfigError, UPOConfig
from upo.reference import mix_into_reference
from upo.trainer import train

TR_DPO = dict(method="dpo", precompute_ref_logps=False, sync_ref_model=True, ref_model_mixup_alpha=0.5)


def test_mix_into_reference_hand_worked():
    reference, policy = build_tiny_model(50, seed=0), build_tiny_model(50, seed=1)
    before = {n: p.clone() for n, p in reference.named_parameters()}
    mix_into_reference(reference, policy, 0.25)
    for name, p in policy.named_parameters():
        torch.testing.assert_close(dict(reference.named_parameters())[name], 0.25 * p + 0.75 * before[name])
    with pytest.raises(ValueError, match="the reference and the policy differ in"):
        mix_into_reference(reference, build_tiny_model(60), 0.5)


def test_the_reference_follows_the_policy_and_is_checkpointed(tiny_model_dir, pairs_file, tmp_path):
    """Synced every 2 steps at alpha 0.5: after step 2 the reference is (initial + policy at step 2) / 2, which
    the checkpoint of step 2 holds."""
    final = train(run_config(tiny_model_dir, pairs_file, tmp_path, ref_model_sync_steps=2, save_steps=2, **TR_DPO))
    initial, trained = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(final / "model.safetensors"))
    reference = load_file(str(tmp_path / "run" / "checkpoints" / "step-2" / "reference.safetensors"))
    shared = reference.keys() & trained.keys()  # tied embeddings: each file keeps one of the two names
    assert len(shared) >= len(reference) - 1 and len(shared) > 5
    moved = 0
    for key in shared:
        value = reference[key]
        torch.testing.assert_close(value, 0.5 * initial[key] + 0.5 * trained[key])
        moved += not torch.equal(value, initial[key])
    assert moved  # the policy moved, and the reference with it


def test_a_resumed_tr_dpo_run_ends_where_an_uninterrupted_one_does(tiny_model_dir, pairs_file, tmp_path):
    kw = dict(ref_model_sync_steps=1, save_steps=2, **TR_DPO)
    full = train(run_config(tiny_model_dir, pairs_file, tmp_path / "full", max_steps=4, **kw))
    train(run_config(tiny_model_dir, pairs_file, tmp_path / "part", max_steps=2, **kw))
    resumed = train(run_config(tiny_model_dir, pairs_file, tmp_path / "part", max_steps=4, resume=True, **kw))
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (dict(method="dpo", sync_ref_model=True), "sync_ref_model updates a copy of the reference.*precompute_ref_logps"),
        (dict(method="dpo", sync_ref_model=True, precompute_ref_logps=False, lora=True), "train without lora"),
        (dict(method="dpo", ref_model_sync_steps=8), r"ref_model_sync_steps \(sync_ref_model is false\)"),
    ],
)
def test_tr_dpo_settings_are_checked(keys, message):
    with pytest.raises(ConfigError, match=message):
        UPOConfig(**keys)
