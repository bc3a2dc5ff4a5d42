"""FSDP2 and DeepSpeed ZeRO-2/3 (the shipped `examples/accelerate/*.yaml`) on 2 CPU processes, gloo.

Accelerate 1.15 turns these engines on only for GPU-type process groups. With ACCELERATE_USE_CPU=1
an FSDP launch silently becomes DDP (AcceleratorState switches to FSDP only from MULTI_GPU, NPU,
XPU, ...), and a DeepSpeed launch becomes a single process (`accelerate launch` takes the
DeepSpeed launcher only when not on CPU). So each worker first runs ON_CPU, which makes that one
decision for the CPU process group exactly as Accelerate makes it for GPUs: distributed type
FSDP or DEEPSPEED with the plugin `accelerate launch` built from the yaml file, written back to
PartialState (DeepSpeed's plugin also selected, as Accelerate does). Everything after it is
Accelerate's, torch's and DeepSpeed's own code: fully_shard of every decoder layer and the root
with cpu_ram_efficient_loading; deepspeed.initialize with ZeRO partitioning (DeepSpeed's CPU
accelerator, gloo); their gradient clipping; sharded checkpoints (one file per process, which DDP
would not write); the gathered state dict for final/.

One launch per engine runs its 2-process trainings (process start dominates the time): DPO with
full fine-tuning and LoRA (merged; under FSDP also adapter-only), full fine-tuning with
gradient_checkpointing (the engine's hooks outside each rerun layer), UPO (its value head is part
of the one trained module) and UPO steered by adapter (two adapters, final/ split into the merged
aux_coef 0 policy and steer_adapter/), at batch 2 per process, compared with one process at batch 4, and a checkpoint resumed, compared bitwise with the uninterrupted
run. The LoRA run holds out 3 of the 12 examples, so the reference log-probs of the 9 training
examples come from loader batches of 4, 4 and 1 (in the last, process 1 holds only a copy and still
runs the collective forward) and those of the 3 held-out ones split 2/1 between the processes
(reference.precompute_run_reference_logps).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from helpers import run_config
from safetensors.torch import load_file
from test_invariants import assert_same_updates
from test_multiprocess import _launch
from transformers import AutoModelForCausalLM

from upo.trainer import train

ON_CPU = """
    import os

    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    os.environ["ACCELERATE_USE_CPU"] = "1"  # gloo process group on CPU
    _init = AcceleratorState.__init__

    def _init_on_cpu(self, *args, fsdp_plugin=None, deepspeed_plugin=None, **kwargs):
        _init(self, *args, fsdp_plugin=fsdp_plugin, deepspeed_plugin=deepspeed_plugin, **kwargs)
        if self.distributed_type != DistributedType.MULTI_CPU:
            return
        if fsdp_plugin is not None:
            self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
        elif deepspeed_plugin is not None:
            self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.DEEPSPEED
            deepspeed_plugin.set_mixed_precision(self._mixed_precision)
            deepspeed_plugin.select(_from_accelerator_state=True)
            self.deepspeed_plugins = deepspeed_plugin

    AcceleratorState.__init__ = _init_on_cpu
"""

# engine -> (launcher environment, the files one process writes in a checkpoint, per process)
ENGINES = {
    "fsdp": ({"ACCELERATE_USE_CPU": "1"}, ["pytorch_model_fsdp_0/__{rank}_0.distcp", "optimizer_0/__{rank}_0.distcp"]),
    "deepspeed_zero2": ({"DS_ACCELERATOR": "cpu"}, ["pytorch_model/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"]),
    "deepspeed_zero3": ({"DS_ACCELERATOR": "cpu"}, ["pytorch_model/zero_pp_rank_{rank}_mp_rank_00_model_states.pt",
                                                    "pytorch_model/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"]),
}  # fmt: skip
COMMON = dict(method="dpo", eval_fraction=0.0, learning_rate=1e-2)
RUNS = {
    "full": dict(max_steps=3),
    "lora": dict(max_steps=2, lora=True, lora_r=4, eval_fraction=0.25),  # 2 steps: 8 of the 9 examples
    "adapter": dict(max_steps=3, lora=True, lora_r=4, merge_lora=False),
    "upo": dict(max_steps=3, method="upo"),  # the value head inside the one trained module
    "checkpointed": dict(max_steps=3, gradient_checkpointing=True),  # layers rerun in backward inside the engine
    # steered by adapter: two LoRA adapters, one condition per step (each of the 3 once), saved split
    "steered": dict(max_steps=3, method="upo", lora=True, lora_r=4, steer_aux_coefs=[0.0, 1.0, 3.0],
                    steer_by="adapter"),
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
@pytest.mark.parametrize("engine", list(ENGINES))
def test_two_sharded_processes_match_one_process_and_resume(engine, tiny_model_dir, pairs_file, tmp_path):
    if engine.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (pip install deepspeed)")
    env, shard_files = ENGINES[engine]
    runs = {k: v for k, v in RUNS.items() if engine == "fsdp" or k != "adapter"}
    if engine.startswith("deepspeed"):  # DeepSpeed clips policy and value head together, one process apart
        runs = {k: {**v, "max_grad_norm": None} if k in ("upo", "steered") else v for k, v in runs.items()}
    two = {name: run_config(tiny_model_dir, pairs_file, tmp_path / f"two-{name}", batch_size=2, **{**COMMON, **kw})
           for name, kw in runs.items()}  # fmt: skip
    full = run_config(tiny_model_dir, pairs_file, tmp_path / "two-uninterrupted", max_steps=4, **RESUME)
    part = run_config(tiny_model_dir, pairs_file, tmp_path / "two-resumed", max_steps=2, **RESUME)
    resumed = run_config(tiny_model_dir, pairs_file, tmp_path / "two-resumed", max_steps=4, resume=True, **RESUME)
    result = _launch([*two.values(), full, part, resumed], tmp_path, config_file=f"{engine}.yaml", preamble=ON_CPU,
                     env=env)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    start = load_file(str(tiny_model_dir / "model.safetensors"))
    for name, kw in runs.items():
        one = train(run_config(tiny_model_dir, pairs_file, tmp_path / f"one-{name}", batch_size=4, **{**COMMON, **kw}))
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
        if name == "upo":  # the value head too: its last layer starts at zero
            a, b = (load_file(str(f / "value_head.safetensors")) for f in (one, final_two))
            assert a.keys() == b.keys()
            for k in a:
                torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
            assert not torch.equal(a["net.5.weight"], torch.zeros_like(a["net.5.weight"]))
        if name == "steered":  # final/steer_adapter/: the steering direction, from the gathered adapters
            a, b = (load_file(str(f / "steer_adapter" / "adapter_model.safetensors")) for f in (one, final_two))
            assert a.keys() == b.keys() and len(a) > 0
            for k in a:
                torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=COMMON["learning_rate"] / 50, msg=k)
            assert any(".lora_B." in k and v.abs().max() > 0 for k, v in a.items()), "the steering adapter did not train"

    # the checkpoint is sharded: each process wrote its own part of the weights and optimizer state
    checkpoint = Path(part.output_dir) / "checkpoints" / "step-2"
    for pattern in shard_files:
        assert all((checkpoint / pattern.format(rank=rank)).is_file() for rank in (0, 1)), pattern
    assert f"resumed from {checkpoint}" in result.stdout + result.stderr
    a = load_file(str(Path(full.output_dir) / "final" / "model.safetensors"))
    b = load_file(str(Path(resumed.output_dir) / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
