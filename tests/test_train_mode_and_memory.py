"""How the policy is held and run while training: its own dropout off (nn.Dropout and float rates),
LoRA's dropout on; modes restored after evaluation; gradient_checkpointing runs each decoder layer
again in backward and makes the same updates as without it (LoRA and full fine-tuning, padding-free
and padded, LoRA dropout); lora_base_dtype: bf16 holds the frozen base weights in bf16, the
adapters in fp32, with an exact reference at the first step and an exact merge."""

from __future__ import annotations

import pytest
import torch
from helpers import run_config
from safetensors.torch import load_file

from upo.config import ConfigError
from upo.metrics import read_metrics
from upo.trainer import train


def _counting_layer_calls(monkeypatch) -> list[int]:
    """Counts the runs of every decoder layer's MLP (inside the layer, so a recompute counts too)."""
    from transformers.models.llama.modeling_llama import LlamaMLP

    calls = [0]
    forward = LlamaMLP.forward

    def counted(self, *args, **kwargs):
        calls[0] += 1
        assert not self.training  # the model's own modules stay in eval mode (only the layers' flag is set)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaMLP, "forward", counted)
    return calls


@pytest.mark.parametrize(("lora", "padding_free", "pref_loss", "lora_dropout"),
                         [(True, True, "dpo", 0.0), (True, True, "kto", 0.0), (True, True, "dpo", 0.3),
                          (False, False, "dpo", 0.0)])
def test_checkpointing_recomputes_layers_and_changes_no_update(lora, padding_free, pref_loss, lora_dropout, tiny_model_dir,
                                                              pairs_file, tmp_path, monkeypatch):
    """Padding-free, packed attention runs again in backward as it ran forward (shared prompts with
    DPO; KTO's mismatched pairs from their prompts' cached keys and values), and LoRA's dropout with
    the masks it drew in the forward."""
    calls = _counting_layer_calls(monkeypatch)
    runs, counts = {}, {}
    for name, checkpointing in (("plain", False), ("checkpointed", True)):
        calls[0] = 0
        final = train(run_config(tiny_model_dir, pairs_file, tmp_path / name, method="upo", pref_loss=pref_loss, lora=lora,
                                 lora_dropout=lora_dropout, padding_free=padding_free, eval_fraction=0.25, eval_steps=1, max_steps=3,
                                 gradient_checkpointing=checkpointing))
        counts[name] = calls[0]
        runs[name] = (load_file(str(final / "model.safetensors")), read_metrics(final.parent / "metrics.jsonl"))
    # 3 steps x 2 layers more: each layer's forward runs again in backward (the reference forward is no_grad)
    assert counts["checkpointed"] - counts["plain"] == 3 * 2
    (w_plain, m_plain), (w_ckpt, m_ckpt) = runs["plain"], runs["checkpointed"]
    assert all(torch.allclose(w_plain[k], w_ckpt[k], rtol=1e-5, atol=1e-7) for k in w_plain)
    for r, s in zip(m_plain, m_ckpt, strict=True):
        assert r["train/loss"] == pytest.approx(s["train/loss"], rel=1e-5)
        assert r["train/grad_norm"] == pytest.approx(s["train/grad_norm"], rel=1e-5)


def test_lora_dropout_acts_while_training(tiny_model_dir, pairs_file, tmp_path):
    """`lora_dropout` changes the updates (peft's LoRA layers train in train mode, while the base
    model's own modules stay in the eval mode from_pretrained leaves them in)."""
    weights = {}
    for name, dropout in (("none", 0.0), ("half", 0.5)):
        final = train(run_config(tiny_model_dir, pairs_file, tmp_path / name, method="dpo", lora=True, lora_dropout=dropout,
                                 eval_fraction=0.0, max_steps=3))
        weights[name] = load_file(str(final / "model.safetensors"))
    assert any(not torch.equal(weights["none"][k], weights["half"][k]) for k in weights["none"])


def test_lora_base_dtype_bf16_holds_the_base_in_bf16_the_adapters_in_fp32_and_merges_exactly(tiny_model_dir, pairs_file, tmp_path,
                                                                            monkeypatch):
    import upo.trainer

    held = []

    class Held(upo.trainer.CompletionLogps):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            held.append(self)

    monkeypatch.setattr(upo.trainer, "CompletionLogps", Held)
    final = train(run_config(tiny_model_dir, pairs_file, tmp_path / "run", method="dpo", lora=True, lora_base_dtype="bf16",
                             precision="bf16", eval_fraction=0.0, max_steps=2))
    params = dict(held[0].lm.named_parameters())
    assert {p.dtype for p in params.values() if p.requires_grad} == {torch.float32}  # adapters: fp32, as AdamW's state
    assert {p.dtype for p in params.values() if not p.requires_grad} == {torch.bfloat16}
    first = read_metrics(final.parent / "metrics.jsonl")[0]
    assert first["train/rewards/chosen"] == first["train/rewards/rejected"] == 0.0  # the reference: the same bf16 base
    # merged in fp32, exactly the trained bf16 base plus the fp32 adapters' delta (in bf16 it would round)
    merged = load_file(str(final / "model.safetensors"))
    layer = held[0].lm.base_model.model.model.layers[0].self_attn.q_proj
    delta = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    assert delta.abs().max() > 0 and merged["model.layers.0.self_attn.q_proj.weight"].dtype == torch.float32
    torch.testing.assert_close(merged["model.layers.0.self_attn.q_proj.weight"],
                               layer.base_layer.weight.float() + delta, rtol=0, atol=1e-6)
    # steered by adapter: final/ is the base with `default` merged, in fp32 too
    final = train(run_config(tiny_model_dir, pairs_file, tmp_path / "steered", method="upo", lora=True,
                             lora_base_dtype="bf16", precision="bf16", eval_fraction=0.0, max_steps=2,
                             steer_aux_coefs=[0.0, 1.0], steer_by="adapter"))
    assert {w.dtype for w in load_file(str(final / "model.safetensors")).values()} == {torch.float32}
    # a frozen reference copy (ref_model, computed every step) is held like the base: exact at step 1 too
    final = train(run_config(tiny_model_dir, pairs_file, tmp_path / "copy", method="dpo", lora=True,
                             lora_base_dtype="bf16", precision="bf16", eval_fraction=0.0, max_steps=1,
                             ref_model=str(tiny_model_dir), precompute_ref_logps=False))
    first = read_metrics(final.parent / "metrics.jsonl")[0]
    assert first["train/rewards/chosen"] == first["train/rewards/rejected"] == 0.0
    with pytest.raises(ConfigError, match="lora_base_dtype: bf16 computes in bf16: set precision: bf16"):
        run_config(tiny_model_dir, pairs_file, tmp_path, lora=True, lora_base_dtype="bf16", precision="fp32")
    with pytest.raises(ConfigError, match="lora_base_dtype.*lora is false"):
        run_config(tiny_model_dir, pairs_file, tmp_path, lora_base_dtype="bf16", precision="bf16")


def test_disable_dropout_zeroes_dropout_layers_and_float_rates():
    """Models that keep a dropout rate as a float and apply it with F.dropout(training=self.training)
    (Starcoder2's residual and embedding dropout, OPT's dropout and layerdrop) run deterministically in
    train mode once disabled."""
    from transformers import OPTConfig, OPTForCausalLM, Starcoder2Config, Starcoder2ForCausalLM

    from upo.modeling import disable_dropout

    small = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    models = [Starcoder2ForCausalLM(Starcoder2Config(**small, intermediate_size=64, num_key_value_heads=2,
                                                     residual_dropout=0.3, embedding_dropout=0.3, attention_dropout=0.3)),
              OPTForCausalLM(OPTConfig(**small, ffn_dim=64, word_embed_proj_dim=32, max_position_embeddings=64,
                                       dropout=0.3, attention_dropout=0.3, activation_dropout=0.3, layerdrop=0.3))]
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    for model in models:
        model.train()
        assert not torch.equal(model(ids).logits, model(ids).logits)  # dropout acts in train mode
        disable_dropout(model)
        assert torch.equal(model(ids).logits, model(ids).logits), type(model).__name__


def test_disable_dropout_leaves_the_eval_mode_model_as_it_was():
    """Only dropout rates change: in eval mode a model computes what it computed before, PhiMoE's
    router too (it reads router_jitter_noise as a threshold in eval mode)."""
    from transformers import PhimoeConfig, PhimoeForCausalLM

    from upo.modeling import disable_dropout

    torch.manual_seed(0)
    model = PhimoeForCausalLM(PhimoeConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           num_key_value_heads=2, intermediate_size=64, num_local_experts=4,
                                           router_jitter_noise=0.3, attention_dropout=0.3)).eval()
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(ids).logits
        disable_dropout(model)
        assert torch.equal(model(ids).logits, before)


def test_eval_mode_gives_every_submodule_its_own_mode_back():
    from upo.modeling import eval_mode

    outer = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2)))
    outer.eval()
    outer[1].training = True  # a mix, as peft's LoRA layers (train) around a base left in eval mode
    before = [m.training for m in outer.modules()]
    with eval_mode(outer, None):
        assert not any(m.training for m in outer.modules())
    assert [m.training for m in outer.modules()] == before


@pytest.mark.parametrize("command", ["train", "rm"])
def test_a_model_without_gradient_checkpointing_is_refused_before_the_data_is_read(command, tiny_model_dir, tmp_path,
                                                                                   monkeypatch):
    """The check reads the model's config only: with a dataset that does not exist, the refusal
    comes first (before, it came after the data was read and scored)."""
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    from upo.rm.config import RMConfig
    from upo.rm.train import train_reward_model

    cls = LlamaForCausalLM if command == "train" else LlamaForSequenceClassification
    monkeypatch.setattr(cls, "supports_gradient_checkpointing", False)
    missing = str(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match=f"gradient_checkpointing: true, but {cls.__name__} does not support it"):
        if command == "train":
            train(run_config(tiny_model_dir, missing, tmp_path / "run", gradient_checkpointing=True))
        else:
            train_reward_model(RMConfig(model=str(tiny_model_dir), dataset=missing, output_dir=str(tmp_path / "rm"),
                                        gradient_checkpointing=True, progress=False))


def test_a_folder_of_adapters_alone_passes_the_early_check(tmp_path):
    """A LoRA run's final/ with merge_lora false holds adapter_config.json, no config.json: AutoConfig
    cannot read it, so the check leaves it to the loaded model (it was refused before it loaded)."""
    from upo.modeling import check_gradient_checkpointing

    (tmp_path / "adapter_config.json").write_text('{"base_model_name_or_path": "x", "peft_type": "LORA"}')
    check_gradient_checkpointing(str(tmp_path))
    check_gradient_checkpointing(str(tmp_path), "sequence-classification")
