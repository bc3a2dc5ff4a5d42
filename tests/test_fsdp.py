"""FSDP2 (`examples/accelerate/fsdp.yaml`, torch's `fully_shard`) on 2 CPU processes with gloo.

Accelerate 1.15 turns FSDP on only for GPU-type process groups: with ACCELERATE_USE_CPU=1 the same
launch silently becomes DDP (AcceleratorState switches to FSDP only from MULTI_GPU/NPU/XPU/...).
FSDP_ON_CPU below makes that one decision for the CPU group, exactly as Accelerate makes it for
GPUs (distributed type FSDP, the plugin that `accelerate launch` built from fsdp.yaml, written
back to PartialState); everything after it is Accelerate's and torch's FSDP2 code: fully_shard of
every decoder layer and of the root, cpu_ram_efficient_loading (rank 0's weights broadcast),
DTensor gradient clipping, sharded checkpoints through torch.distributed.checkpoint, and the
gathered state dict for final/. The parameters are DTensors during training (the checkpoint has
one shard file per process, which DDP would not write).

One launch runs every 2-process training (process start and gloo set-up dominate the time):
full fine-tuning and LoRA (merged and adapter-only) at batch 2 per process, compared with one
process at batch 4, and a sharded checkpoint resumed, compared with the uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import run_config
from safetensors.torch import load_file
from test_invariants import assert_same_updates
from test_multiprocess import _launch
from transformers import AutoModelForCausalLM

from upo.trainer import train

FSDP_ON_CPU = """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    _init = AcceleratorState.__init__

    def _init_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
        _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    AcceleratorState.__init__ = _init_fsdp_on_cpu
"""

COMMON = dict(method="dpo", eval_fraction=0.0, learning_rate=1e-2)
RUNS = {
    "full": dict(max_steps=3),
    "lora": dict(max_steps=3, lora=True, lora_r=4),
    "adapter": dict(max_steps=3, lora=True, lora_r=4, merge_lora=False),
}
RESUME = dict(save_steps=2, **COMMON)


def _moved_same(one: dict, two: dict, start: dict, lr: float) -> None:
    """Same updates where one process moved a weight (LoRA leaves the embeddings), equal elsewhere."""
    assert one.keys() == two.keys()
    moved = {k for k in one if not torch.equal(one[k], start[k])}
    assert moved, "nothing trained"
    assert all(torch.equal(one[k], two[k]) for k in one.keys() - moved)
    assert_same_updates({k: one[k] for k in moved}, two, start, lr=lr)


@pytest.mark.slow
def test_fsdp_two_processes_match_one_process_and_resume(tiny_model_dir, pairs_file, tmp_path):
    two = {name: run_config(tiny_model_dir, pairs_file, tmp_path / f"two-{name}", batch_size=2, **COMMON, **kw)
           for name, kw in RUNS.items()}  # fmt: skip
    full = run_config(tiny_model_dir, pairs_file, tmp_path / "two-uninterrupted", max_steps=4, **RESUME)
    part = run_config(tiny_model_dir, pairs_file, tmp_path / "two-resumed", max_steps=2, **RESUME)
    resumed = run_config(tiny_model_dir, pairs_file, tmp_path / "two-resumed", max_steps=4, resume=True, **RESUME)
    result = _launch([*two.values(), full, part, resumed], tmp_path, config_file="fsdp.yaml", preamble=FSDP_ON_CPU)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    start = load_file(str(tiny_model_dir / "model.safetensors"))
    for name, kw in RUNS.items():
        one = train(run_config(tiny_model_dir, pairs_file, tmp_path / f"one-{name}", batch_size=4, **COMMON, **kw))
        final_two = Path(two[name].output_dir) / "final"
        if name == "adapter":  # adapter weights only: B starts at zero, so every tensor moved
            a, b = (load_file(str(f / "adapter_model.safetensors")) for f in (one, final_two))
            assert a.keys() == b.keys() and len(a) > 0
            assert_same_updates(a, b, {k: torch.zeros_like(v) for k, v in a.items()}, lr=COMMON["learning_rate"])
            continue
        # final/ holds the full gathered weights (not one process's shard) and loads with transformers
        model = AutoModelForCausalLM.from_pretrained(final_two)
        assert model.model.embed_tokens.weight.shape == start["model.embed_tokens.weight"].shape
        _moved_same(load_file(str(one / "model.safetensors")), load_file(str(final_two / "model.safetensors")),
                    start, lr=COMMON["learning_rate"])  # fmt: skip

    # the checkpoint is sharded: one file of model weights and one of optimizer state per process
    checkpoint = Path(part.output_dir) / "checkpoints" / "step-2"
    for folder in ("pytorch_model_fsdp_0", "optimizer_0"):
        assert sorted(p.name for p in (checkpoint / folder).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert f"resumed from {checkpoint}" in result.stdout + result.stderr
    a = load_file(str(Path(full.output_dir) / "final" / "model.safetensors"))
    b = load_file(str(Path(resumed.output_dir) / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
