"""QLoRA (`load_in_4bit`): LoRA adapters trained on a base quantized to 4 bits by bitsandbytes (its CPU
backend here), and final/ as the model that was trained: the dequantized base with the adapters merged.

Skips without bitsandbytes (`pip install 'upo[qlora]'`; the test extra installs it).
"""

from __future__ import annotations

import pytest
import torch
from helpers import run_config

from upo.config import ConfigError, UPOConfig

bnb = pytest.importorskip("bitsandbytes")


def _qlora_cfg(wide_model_dir, pairs_file, tmp_path, **overrides) -> UPOConfig:
    return run_config(wide_model_dir, pairs_file, tmp_path, method="dpo", lora=True, load_in_4bit=True,
                      lora_target_modules=["q_proj", "v_proj", "up_proj", "down_proj"], **overrides)


def test_the_base_is_4bit_and_only_the_adapters_train(wide_model_dir, pairs_file, tmp_path):
    from upo.modeling import load_tokenizer
    from upo.policy_lm import build_policy_lm

    cfg = _qlora_cfg(wide_model_dir, pairs_file, tmp_path, use_bnb_nested_quant=True)
    lm, _ = build_policy_lm(cfg, str(wide_model_dir), load_tokenizer(str(wide_model_dir)), {})
    quantized = [name for name, m in lm.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * 7  # every linear layer of the 2 decoder layers (the LM head is tied: not)
    layer = lm.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert layer.weight.quant_state.quant_type == "nf4" and layer.weight.quant_state.nested
    trained = {name for name, p in lm.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name for name in trained)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_final_is_the_trained_model_dequantized_with_the_adapters_merged(wide_model_dir, pairs_file, tmp_path):
    """Two runs of the same seed and data: one saves its adapters (merge_lora: false), one merges them.
    The adapters on the 4-bit base (the model as trained) and the merged final/ give the same logits;
    the adapters merged into the original unquantized weights would be another model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from upo.evaluation.eval import _load
    from upo.modeling import keep_4bit_layout
    from upo.policy_lm import qlora_base, qlora_reference
    from upo.trainer import train

    adapters = train(_qlora_cfg(wide_model_dir, pairs_file, tmp_path / "a", merge_lora=False))
    final = train(_qlora_cfg(wide_model_dir, pairs_file, tmp_path / "m"))
    config = (final / "config.json").read_text()
    assert "quantization_config" not in config  # final/ loads as a plain model
    merged = AutoModelForCausalLM.from_pretrained(final)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=torch.float32)
    base_4bit = AutoModelForCausalLM.from_pretrained(wide_model_dir, quantization_config=quantization,
                                                     device_map={"": "cpu"}, attn_implementation="eager")
    keep_4bit_layout(base_4bit)  # as training computed (upo.modeling.load_causal_lm)
    as_trained = PeftModel.from_pretrained(base_4bit, adapters)
    on_original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(wide_model_dir), adapters)
    ids = torch.randint(0, merged.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    reference = _logits(as_trained, ids)
    torch.testing.assert_close(_logits(merged, ids), reference, rtol=1e-4, atol=1e-4)
    assert (_logits(on_original, ids) - reference).abs().max() > 1e-3  # 4-bit rounding: not the trained model
    # `upo eval` of the adapters alone puts them on their 4-bit base (upo_config.yaml says how it was quantized)
    _, evaluated = _load(str(adapters), qlora_base(str(adapters)))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in evaluated.modules())
    torch.testing.assert_close(_logits(evaluated, ids), reference)
    # ... and its implicit rewards against that 4-bit base, training's reference; not against another model
    assert qlora_reference(str(final), str(wide_model_dir)) == qlora_base(str(final)) != {}
    assert qlora_reference(str(final), str(adapters)) == {}


def test_qlora_resumes_from_its_checkpoint(wide_model_dir, pairs_file, tmp_path):
    """The checkpoint holds the adapters alone (the frozen 4-bit base is loaded again), and the resumed run
    ends where an uninterrupted one does."""
    from safetensors.torch import load_file

    from upo.trainer import train

    full = train(_qlora_cfg(wide_model_dir, pairs_file, tmp_path / "full", max_steps=4))
    train(_qlora_cfg(wide_model_dir, pairs_file, tmp_path / "part", max_steps=2, save_steps=2))
    resumed = train(_qlora_cfg(wide_model_dir, pairs_file, tmp_path / "part", max_steps=4, resume=True))
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (dict(load_in_4bit=True), "load_in_4bit (lora is false)"),
        (dict(lora=True, bnb_4bit_quant_type="fp4"), "bnb_4bit_quant_type (load_in_4bit is false)"),
        (dict(lora=True, load_in_4bit=True, bnb_4bit_quant_type="int4"), "bnb_4bit_quant_type must be one of nf4, fp4"),
    ],
)
def test_qlora_settings_are_checked(keys, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        UPOConfig(**keys)


def test_sharding_engines_are_refused_with_a_4bit_base():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from upo.engines import configure_engine

    cfg = UPOConfig(method="dpo", lora=True, load_in_4bit=True)
    for engine in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        with pytest.raises(ValueError, match="load_in_4bit .QLoRA. runs on one process or under DDP"):
            configure_engine(SimpleNamespace(distributed_type=engine), cfg)
    configure_engine(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU), cfg)  # DDP: fine


def test_a_missing_bitsandbytes_is_named(monkeypatch):
    from upo.policy_lm import quantization

    monkeypatch.setitem(__import__("sys").modules, "bitsandbytes", None)
    with pytest.raises(ImportError, match="load_in_4bit: true needs bitsandbytes: pip install 'upo.qlora.'"):
        quantization(UPOConfig(method="dpo", lora=True, load_in_4bit=True))


def test_adapters_on_a_bf16_base_are_evaluated_on_it(wide_model_dir, pairs_file, tmp_path):
    """lora_base_dtype: bf16 keeps the unquantized parts (embeddings, norms) in bf16: `upo eval` loads the 4-bit
    base so too, and gets the logits the training run's model gives."""
    from peft import PeftModel

    from upo.evaluation.eval import _load
    from upo.modeling import load_causal_lm
    from upo.policy_lm import qlora_base
    from upo.trainer import train

    adapters = train(_qlora_cfg(wide_model_dir, pairs_file, tmp_path, merge_lora=False, precision="bf16",
                                lora_base_dtype="bf16"))
    base = qlora_base(str(adapters))
    assert base["dtype"] == torch.bfloat16
    as_trained = PeftModel.from_pretrained(load_causal_lm(str(wide_model_dir), **base), adapters)
    _, evaluated = _load(str(adapters), base)
    assert evaluated.get_input_embeddings().weight.dtype == torch.bfloat16
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(_logits(evaluated, ids), _logits(as_trained, ids))
