"""What the training loop tells each Accelerate engine (DDP, FSDP2, DeepSpeed ZeRO-2/3).

The loop is the same for every engine launched with `accelerate launch --config_file ...`; only
DeepSpeed needs to be told two things:

- it runs gradient accumulation and clipping itself, from its own config: upo's keys fill those
  (and the micro-batch size, which it cannot read from upo's batch-sampler loader);
- under ZeRO-3 transformers loads every model partitioned, so the frozen reference model runs
  inside a DeepSpeed engine that gathers each layer's weights as it runs (elsewhere it is a plain
  copy on the device).
"""

from __future__ import annotations

import copy

from accelerate.utils import DistributedType

from upo.config import UPOConfig


def configure_engine(accelerator, cfg: UPOConfig) -> None:
    """Before `accelerator.prepare`: upo's batch size, accumulation and clipping for DeepSpeed; a
    4-bit base (QLoRA) and TR-DPO's reference updates refused on the sharding engines."""
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if cfg.lora and cfg.load_in_4bit and sharded:
        raise ValueError(f"load_in_4bit (QLoRA) runs on one process or under DDP; {accelerator.distributed_type} "
                         "shards the weights, which upo does not do with a 4-bit base: launch with a DDP config "
                         "(or none), or train without load_in_4bit")
    if cfg.sync_ref_model and sharded:
        raise ValueError(f"sync_ref_model (TR-DPO) mixes the policy's weights into the reference's on one process "
                         f"or under DDP; {accelerator.distributed_type} shards them: launch with a DDP config (or none)")
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.state.deepspeed_plugin.deepspeed_config.update(
            train_micro_batch_size_per_gpu=cfg.batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            gradient_clipping=cfg.max_grad_norm or 0.0,  # DeepSpeed: 0 = no clipping (upo: null)
        )


def prepare_reference(accelerator, ref_model):
    """The frozen reference model ready for forward passes on this engine."""
    plugin = accelerator.state.deepspeed_plugin if accelerator.distributed_type == DistributedType.DEEPSPEED else None
    if plugin is None or plugin.zero_stage != 3:
        return ref_model.to(accelerator.device)
    import deepspeed

    config = copy.deepcopy(plugin.deepspeed_config)
    config.pop("train_batch_size")  # "auto" here; DeepSpeed derives it from the micro-batch and accumulation
    engine, *_ = deepspeed.initialize(model=ref_model, config=config)  # no optimizer: inference only
    engine.eval()  # DeepSpeedEngine.eval returns None, not the engine
    return engine
