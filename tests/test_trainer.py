"""Trainer smoke tests on a tiny in-process model: every method trains, checkpoints round-trip,
resume continues from the saved step, and final/ loads with transformers."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from helpers import run_config as _cfg
from helpers import write_pairs
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from upo.checkpoint import checkpoint_dirs
from upo.logps import CompletionLogps
from upo.methods import METHODS
from upo.metrics import read_metrics
from upo.trainer import train


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize(("method", "pref_loss"), [(m, "kto") for m in sorted(METHODS)] + [("upo", "dpo")])
def test_every_method_trains_two_steps(method, pref_loss, tiny_model_dir, pairs_file, tmp_path):
    """The smoke test of every method in the table (metric names and loss values: test_steps.py)."""
    optimizer = "rmsprop" if method == "ipo" else "adamw"
    mix = {"loss_mix": {"dpo": 0.8, "bco_pair": 0.2, "sft": 1.0}} if METHODS[method].mixes else {}  # MPO's
    cfg = _cfg(tiny_model_dir, pairs_file, tmp_path, method=method, pref_loss=pref_loss, optimizer=optimizer, **mix)
    final = train(cfg)
    before = _weights(tiny_model_dir)
    after = _weights(final)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved, "no parameter changed after 2 optimizer steps"
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ["loss", "logps/chosen", "step_seconds", "tokens_per_second", "grad_norm", "lr"]:
        assert f"train/{key}" in rows[-1], key
    # evaluation on held-out pairs at the end: implicit rewards of every method with a reference or a
    # reward of its own (beta * the policy's log-probs: SimPO, CPO, ORPO)
    if METHODS[method].uses_reference or "beta" in METHODS[method].reads:
        assert "eval/rewards/accuracies" in rows[-1]
    for row in rows:
        for key, value in row.items():
            assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)
    assert (tmp_path / "run" / "config.yaml").exists()
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.config.vocab_size >= AutoModelForCausalLM.from_pretrained(tiny_model_dir).config.vocab_size
    assert (final / "upo_config.yaml").exists() and (final / "tokenizer_config.json").exists()
    assert (final / "value_head.safetensors").exists() == METHODS[method].uses_value_head


def test_a_reference_free_mix_computes_no_reference(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    """CPO-SimPO as {simpo: 1, sft: 1}: no reference log-probs (neither precomputed nor by a copy), and its
    held-out rewards are SimPO's own."""
    import upo.trainer as trainer

    def no_reference(*args, **kwargs):
        raise AssertionError("a reference-free mix computed reference log-probs")

    monkeypatch.setattr(trainer, "precompute_run_reference_logps", no_reference)
    final = train(_cfg(tiny_model_dir, pairs_file, tmp_path, method="mix", loss_mix={"simpo": 1.0, "sft": 1.0}))
    row = read_metrics(final.parent / "metrics.jsonl")[-1]
    assert "train/mix/simpo" in row and "eval/rewards/accuracies" in row


def test_resume_continues_from_saved_step_and_matches_uninterrupted_run(tiny_model_dir, pairs_file, tmp_path):
    full = _cfg(tiny_model_dir, pairs_file, tmp_path / "full", method="upo", pref_loss="dpo", max_steps=4, save_steps=2)
    train(full)
    # The interrupted run: stops after step 2 (its checkpoint), then resumes to step 4.
    part = _cfg(tiny_model_dir, pairs_file, tmp_path / "part", method="upo", pref_loss="dpo", max_steps=2, save_steps=2)
    train(part)
    assert [p.name for p in checkpoint_dirs(part.output_dir)] == ["step-2"]
    resumed = _cfg(tiny_model_dir, pairs_file, tmp_path / "part", method="upo", pref_loss="dpo", max_steps=4,
                   save_steps=2, resume=True)
    final = train(resumed)
    a, b = _weights(tmp_path / "full" / "run" / "final"), _weights(final)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    rows_full = read_metrics(tmp_path / "full" / "run" / "metrics.jsonl")
    rows_part = read_metrics(tmp_path / "part" / "run" / "metrics.jsonl")
    # The 2-step run evaluated at its last step (2); a killed run would not have. Compare training
    # metrics everywhere and whole rows after the resume point.
    def deterministic(rows, drop_eval=False):
        timing = ("train/step_seconds", "train/tokens_per_second")  # wall-clock, differs run to run
        return [{k: v for k, v in r.items() if k not in timing and not (drop_eval and k.startswith("eval/"))}
                for r in rows]

    assert deterministic(rows_full, drop_eval=True) == deterministic(rows_part, drop_eval=True)
    assert deterministic(rows_full)[2:] == deterministic(rows_part)[2:]


def test_the_value_head_lives_in_the_one_trained_module_and_old_checkpoints_resume(tiny_model_dir, pairs_file,
                                                                                      tmp_path):
    """Accelerate saves one model (model.safetensors holds value_head.*); a checkpoint in the layout
    written before (the head in model_1.safetensors, Accelerate's second model) resumes to the same
    end as an uninterrupted run."""
    common = dict(method="upo", pref_loss="dpo", save_steps=2)
    full = train(_cfg(tiny_model_dir, pairs_file, tmp_path / "full", max_steps=4, **common))
    train(_cfg(tiny_model_dir, pairs_file, tmp_path / "part", max_steps=2, **common))
    step = tmp_path / "part" / "run" / "checkpoints" / "step-2"
    assert not (step / "model_1.safetensors").exists()
    saved = load_file(str(step / "model.safetensors"))
    head = {k.removeprefix("value_head."): v for k, v in saved.items() if k.startswith("value_head.")}
    assert head.keys() == load_file(str(full / "value_head.safetensors")).keys()
    # Rewrite the checkpoint in the old layout (whose trainer_state.json listed no files).
    save_file({k: v for k, v in saved.items() if not k.startswith("value_head.")}, str(step / "model.safetensors"))
    save_file(head, str(step / "model_1.safetensors"))
    state = json.loads((step / "trainer_state.json").read_text())
    (step / "trainer_state.json").write_text(json.dumps({k: v for k, v in state.items() if k != "files"}))
    final = train(_cfg(tiny_model_dir, pairs_file, tmp_path / "part", max_steps=4, resume=True, **common))
    for name in ("model.safetensors", "value_head.safetensors"):
        a, b = load_file(str(full / name)), load_file(str(final / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_refuses_to_overwrite_a_run(tiny_model_dir, pairs_file, tmp_path):
    cfg = _cfg(tiny_model_dir, pairs_file, tmp_path, method="dpo", max_steps=1)
    train(cfg)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(cfg)


def test_lora_merged_and_adapter_only(tiny_model_dir, pairs_file, tmp_path):
    merged = train(_cfg(tiny_model_dir, pairs_file, tmp_path / "m", method="dpo", lora=True, lora_r=4))
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert not any("lora" in name for name, _ in model.named_parameters())
    before, after = _weights(tiny_model_dir), _weights(merged)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    adapter = train(_cfg(tiny_model_dir, pairs_file, tmp_path / "a", method="kto", lora=True, lora_r=4, merge_lora=False))
    assert (adapter / "adapter_config.json").exists()


@pytest.mark.parametrize("variant", [{"use_dora": True}, {"use_rslora": True}, {"lora_modules_to_save": ["norm"]}])
def test_dora_and_rslora_train_and_merge_into_the_trained_model(variant, tiny_model_dir, pairs_file, tmp_path):
    """DoRA's magnitude vectors (and rsLoRA's alpha / sqrt(r) scale, modules trained in full) train; the merged
    final/ computes what the adapters on the base compute (same seed and data, saved merged and as adapters)."""
    from peft import PeftModel

    kw = dict(method="dpo", lora=True, lora_r=4, lora_alpha=8, **variant)
    merged = train(_cfg(tiny_model_dir, pairs_file, tmp_path / "m", **kw))
    adapters = train(_cfg(tiny_model_dir, pairs_file, tmp_path / "a", merge_lora=False, **kw))
    config = json.loads((adapters / "adapter_config.json").read_text())
    assert (config["use_dora"], config["use_rslora"]) == (bool(variant.get("use_dora")), bool(variant.get("use_rslora")))
    saved = load_file(str(adapters / "adapter_model.safetensors"))
    assert any("lora_magnitude_vector" in k for k in saved) == bool(variant.get("use_dora"))
    assert any(k.endswith("model.norm.weight") for k in saved) == bool(variant.get("lora_modules_to_save"))
    assert config["modules_to_save"] == (variant.get("lora_modules_to_save") or None)
    on_base = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapters)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = on_base(input_ids=ids).logits
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(merged)(input_ids=ids).logits, expected,
                                   rtol=1e-4, atol=1e-5)
        with on_base.disable_adapter():
            assert (on_base(input_ids=ids).logits - expected).abs().max() > 1e-3  # the adapters changed the model


def test_saved_modules_train_in_fp32_on_a_bf16_base(tiny_model_dir, pairs_file, tmp_path):
    """peft copies saved modules in the base's dtype; upo keeps everything that trains in fp32."""
    from upo.modeling import load_tokenizer
    from upo.policy_lm import build_policy_lm

    cfg = _cfg(tiny_model_dir, pairs_file, tmp_path, method="dpo", lora=True, lora_base_dtype="bf16", precision="bf16",
               lora_modules_to_save=["norm"])
    lm, _ = build_policy_lm(cfg, str(tiny_model_dir), load_tokenizer(str(tiny_model_dir)), {})
    trained = {name: p.dtype for name, p in lm.named_parameters() if p.requires_grad}
    assert any("modules_to_save" in name for name in trained) and set(trained.values()) == {torch.float32}
    assert lm.get_input_embeddings().weight.dtype == torch.bfloat16  # the frozen base stays bf16


def test_reference_model_without_precompute(tiny_model_dir, pairs_file, tmp_path):
    """The reference forward runs every step when log-probs are not precomputed; same losses at step 1."""
    a = train(_cfg(tiny_model_dir, pairs_file, tmp_path / "a", method="dpo", max_steps=1))
    b = train(_cfg(tiny_model_dir, pairs_file, tmp_path / "b", method="dpo", max_steps=1, precompute_ref_logps=False))
    ra = read_metrics(a.parent / "metrics.jsonl")[0]
    rb = read_metrics(b.parent / "metrics.jsonl")[0]
    assert ra["train/loss"] == pytest.approx(rb["train/loss"], abs=1e-5)
    assert ra["train/loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1: log 2


@pytest.fixture
def autocast_seen(monkeypatch) -> list[tuple[bool, torch.dtype]]:
    """(autocast on, its dtype) on CPU at every policy forward of the test's run."""
    seen = []
    forward = CompletionLogps.forward

    def recording_forward(self, *args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(CompletionLogps, "forward", recording_forward)
    return seen


@pytest.mark.parametrize("precompute", [True, False])
@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_bf16_full_fine_tuning_starts_at_log_ratio_zero(method, precompute, tiny_model_dir, pairs_file, tmp_path,
                                                        monkeypatch, autocast_seen):
    """Before any update the policy is the reference, so in bf16 (autocast over fp32 weights) every
    log-ratio of the first batch is exactly 0, and so are the logged rewards (and KTO's z0), whether
    the reference log-probs are precomputed by the policy or computed each step by a frozen copy.
    A bf16 copy of the reference was off by 2e-3 nats per sequence on average here (5e-3 at most)."""
    seen = []
    entry = METHODS[method]
    spy = lambda x, cfg: (seen.append(x.policy_logps.detach() - x.reference_logps), entry.loss(x, cfg))[1]  # noqa: E731
    monkeypatch.setitem(METHODS, method, dataclasses.replace(entry, loss=spy))
    final = train(_cfg(tiny_model_dir, pairs_file, tmp_path, method=method, precision="bf16",
                       precompute_ref_logps=precompute, max_steps=1, batch_size=4, eval_fraction=0.0))  # fmt: skip
    assert autocast_seen and all(on_and_dtype == (True, torch.bfloat16) for on_and_dtype in autocast_seen)
    assert len(seen[0]) >= 4 and torch.equal(seen[0], torch.zeros_like(seen[0]))
    row = read_metrics(final.parent / "metrics.jsonl")[0]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", *(["kto/kl"] if method == "kto" else [])):
        assert row[f"train/{key}"] == 0.0, key


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_bf16_precomputed_reference_is_the_policy_on_every_batch_of_the_first_step(method, wide_model_dir, tmp_path,
                                                                                   monkeypatch, autocast_seen):
    """The precomputed reference log-probs of each example come from the micro-batch it has in
    training's first epoch, so in bf16 every log-ratio before the first update is exactly 0 (and
    KTO's z0). 13 pairs at batch 4 with 4 accumulation steps (KTO: 26 examples, 7): the whole epoch,
    short last batch included, is one optimizer step. Batched on their own (by length, twice the
    batch), the precomputed values were not the policy's here (DPO: 3e-5 nats off on a sequence of
    the first batch; KTO's happened to match)."""
    seen = []
    entry = METHODS[method]
    spy = lambda x, cfg: (seen.append((x.policy_logps.detach() - x.reference_logps, x.kto_reference_point)),  # noqa: E731
                          entry.loss(x, cfg))[1]
    monkeypatch.setitem(METHODS, method, dataclasses.replace(entry, loss=spy))
    data = write_pairs(tmp_path / "pairs-13.jsonl", 13)  # KTO: 26 examples, 7 micro-batches
    train(_cfg(wide_model_dir, data, tmp_path, method=method, precision="bf16", max_steps=1, batch_size=4,
               gradient_accumulation_steps=4 if method == "dpo" else 7, eval_fraction=0.0, rewards={}))  # fmt: skip
    assert autocast_seen and all(on_and_dtype == (True, torch.bfloat16) for on_and_dtype in autocast_seen)
    assert sum(len(d) for d, _ in seen) == 26  # 13 pairs' sequences, all in the first step
    for diff, z0 in seen:
        assert torch.equal(diff, torch.zeros_like(diff)), diff
        assert z0 is None or z0.item() == 0.0


def test_gradient_accumulation_steps(tiny_model_dir, pairs_file, tmp_path):
    cfg = _cfg(tiny_model_dir, pairs_file, tmp_path, method="dpo", batch_size=1, gradient_accumulation_steps=2)
    train(cfg)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]


def test_metrics_averager_weights_batches():
    from upo.metrics import MetricsAverager

    avg = MetricsAverager()
    avg.add({"acc": 1.0}, weight=4)  # a full batch of 4 pairs, all right
    avg.add({"acc": 0.0}, weight=2)  # a short last batch of 2, all wrong
    assert avg.pop() == {"acc": 4 / 6}
    assert avg.pop() == {}


@pytest.mark.parametrize(("method", "absent"), [("oppo", "eval/upo/aux_loss"), ("upo", "eval/kto/kl")])
def test_held_out_metrics_belong_to_the_method(method, absent, tiny_model_dir, pairs_file, tmp_path):
    """Unpaired methods get their own loss on held-out pairs; UPO with a KTO term (no mismatched
    sequences in held-out pairs) reports its aux terms instead."""
    train(_cfg(tiny_model_dir, pairs_file, tmp_path, method=method, max_steps=1))
    last = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    assert "eval/rewards/accuracies" in last and absent not in last
    assert ("eval/loss" in last) == (method == "oppo")
    if method == "upo":
        assert "eval/upo/aux_loss" in last


def test_heldout_eval_false_holds_the_split_out_without_evaluating_it(tiny_model_dir, pairs_file, tmp_path):
    """heldout_eval: false (what `upo frontier` sweeps set, since `upo eval` measures the held-out
    prompts afterwards): no eval/ metrics and no held-out reference log-probs, while training is
    the very same, held-out rows still excluded."""
    runs = {}
    for heldout_eval in (True, False):
        out = tmp_path / str(heldout_eval)
        cfg = _cfg(tiny_model_dir, pairs_file, out, method="upo", max_steps=2, heldout_eval=heldout_eval)
        runs[heldout_eval] = (_weights(train(cfg)), read_metrics(out / "run" / "metrics.jsonl"),
                              load_file(str(out / "run" / "reference_logps.safetensors")))
    (evaluated, rows, table), (held, held_rows, held_table) = runs[True], runs[False]
    assert any(k.startswith("eval/") for k in rows[-1]) and any(k.startswith("eval.") for k in table)
    assert not any(k.startswith("eval/") for row in held_rows for k in row)
    assert not any(k.startswith("eval.") for k in held_table)
    assert evaluated.keys() == held.keys() and all(torch.equal(evaluated[k], held[k]) for k in held)


@pytest.mark.parametrize(("method", "has_kl"), [("kto", True), ("oppo", False)])
def test_reference_for_mismatched_sequences_only_when_kto_needs_it(method, has_kl, tiny_model_dir, pairs_file, tmp_path):
    train(_cfg(tiny_model_dir, pairs_file, tmp_path, method=method, max_steps=1))
    table = load_file(str(tmp_path / "run" / "reference_logps.safetensors"))
    assert ("train.reference_kl_logps" in table) == has_kl
    assert "train.reference_logps" in table
