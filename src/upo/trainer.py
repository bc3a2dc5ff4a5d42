"""The one training loop, on Hugging Face Accelerate. Read it top to bottom:

set-up (models, data, reference log-probs, optimizer) -> resume -> for each optimizer step:
forward -> method loss -> backward -> clip -> step -> log / evaluate / checkpoint -> final save -> curves.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DataLoaderConfiguration, set_seed
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from upo.atomic import atomic_folder
from upo.checkpoint import (
    check_resume,
    check_same_data,
    data_fingerprint,
    intact_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    load_reference,
    remove_stale_copies,
    save_checkpoint,
)
from upo.config import UPOConfig
from upo.curves import plot_curves
from upo.data.collate import LengthGroupedBatchSampler, collate_fn, first_items, sequence_lengths
from upo.data.control import add_control_tokens
from upo.data.steering import (
    ConditionedItems,
    add_mix_tokens,
    add_steering_tokens,
    steering_conditions,
    write_steering,
)
from upo.embedded import cache_root
from upo.engines import configure_engine, prepare_reference
from upo.forward import step_inputs
from upo.heldout_metrics import heldout_metrics
from upo.launch import check_launch
from upo.logps import CompletionLogps
from upo.methods import METHODS, needs_kto_reference_point, uses_reference
from upo.metrics import MetricsAverager, MetricsWriter, reduce_metrics
from upo.modeling import (
    ValueHead,
    check_gradient_checkpointing,
    dequantized_state,
    full_copy,
    load_causal_lm,
    load_tokenizer,
    merged,
    resolve_model_path,
)
from upo.policy_lm import base_dtype, build_policy_lm
from upo.prepare import prepare_data
from upo.reference import make_reference_fn, mix_into_reference, precompute_run_reference_logps
from upo.reference_cache import reference_cache
from upo.steer_adapter import ADAPTER_FOLDER, split_steer_adapter
from upo.stop import TrainingStopped, agreed_stop, stop_requests
from upo.tracking import accelerator_kwargs, finish_tracking, start_tracking

MIXED_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}


def train(cfg: UPOConfig) -> Path:
    """Train according to `cfg`; returns the `final/` folder (a save_pretrained model + tokenizer)."""
    # Fail on a bad model path before anything heavy starts.
    model_path = resolve_model_path(cfg.model, cfg.cache_dir, progress=cfg.progress)
    # Several runs may share one process (the demo, sweeps, tests): Accelerate keeps its settings in
    # process-wide singletons, so clear them (the process group is kept). PartialState too: under FSDP
    # and DeepSpeed the previous run rewrote its distributed type, and the next would not set it up.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    accelerator = Accelerator(
        mixed_precision=MIXED_PRECISION[cfg.precision],
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        # We step the scheduler once per optimizer step ourselves (not once per process per call).
        step_scheduler_with_optimizer=False,
        # Every loader batch is split across the processes, so P processes at batch_size b see, per
        # step, exactly the examples one process sees at batch_size P * b (the sampler's batches).
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        **accelerator_kwargs(cfg),  # report_to: TensorBoard, Trackio, W&B, MLflow
    )
    check_launch(accelerator.num_processes)
    configure_engine(accelerator, cfg)  # DeepSpeed: upo's batch size, accumulation and clipping
    main = accelerator.is_main_process
    show = cfg.progress and main
    log = tqdm.write if main else (lambda *_: None)
    out = Path(cfg.output_dir)
    resume_from = intact_checkpoint(out, log) if cfg.resume else None
    if resume_from is not None:
        for key, (old, new) in check_resume(resume_from, cfg, accelerator.num_processes).items():
            log(f"upo: resuming with {key} changed: {old!r} -> {new!r}")
    if not cfg.resume and (latest_checkpoint(out) or (out / "final").exists()):
        raise FileExistsError(
            f"{out} already holds a run; pass --resume true to continue it, or choose another --output_dir"
        )
    if main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_copies(out)
        cfg.save(out / "config.yaml")  # what this run trains (a resume differs only in RESUMABLE_CHANGES)
    set_seed(cfg.seed)
    method = METHODS[cfg.method]

    # ---- model, tokenizer, data ----------------------------------------------------------------
    if cfg.gradient_checkpointing:
        check_gradient_checkpointing(model_path)  # before the data is read and scored
    tokenizer = load_tokenizer(model_path)
    control_ids = add_control_tokens(tokenizer) if method.control_tokens else None  # CSFT
    # steered UPO by token: the conditions' tokens (aux_coef's, then the reward mixes'); by adapter: none
    by_token = cfg.steer_by == "token"
    aux_ids = add_steering_tokens(tokenizer, cfg.steer_aux_coefs) if cfg.steer_aux_coefs and by_token else None
    mix_ids = add_mix_tokens(tokenizer, list(cfg.steer_reward_mixes)) if cfg.steer_reward_mixes and by_token else None
    conditions = steering_conditions(aux_ids, mix_ids)  # [] when not steered
    # Scoring the rewards may draw from torch's RNG (a scorer's model being built) or not (scores read
    # from the cache): the model's random initialization (LoRA, value head) must not depend on which.
    with torch.random.fork_rng(devices=[]):
        data = prepare_data(cfg, tokenizer, progress=show)
    for line in data.report:
        log(f"upo: {line}")
    fingerprint = data_fingerprint(data.train_items)
    if resume_from is not None:
        check_same_data(resume_from, fingerprint)
    if main and data.standardizer is not None:
        (out / "reward_standardizer.json").write_text(json.dumps(data.standardizer.to_dict(), indent=2))

    token_texts = {**{i: "desirable" if label else "undesirable" for label, i in (control_ids or {}).items()},
                   **{i: f"{c:g}" for c, i in (aux_ids or {}).items()}, **{i: n for n, i in (mix_ids or {}).items()}}
    lm, steering = build_policy_lm(cfg, model_path, tokenizer, token_texts, device=accelerator.device)
    # The reference is the policy before any update, so at step 0 every log-ratio is 0, in bf16 too
    # (a sequence's bf16 log-prob depends on its batch: the precompute runs training's first-epoch
    # batches, and a frozen copy runs each step's). The policy itself computes them with LoRA (its
    # adapters disabled) or when they are precomputed; otherwise a frozen copy does, in the dtype of
    # the policy's weights (`base_dtype`) and under the same autocast (a bf16 copy of fp32 weights would
    # not compute what the policy computes: its embeddings, norms and residual stream stay fp32 under
    # autocast). `ref_model` names another reference, always a frozen copy.
    ref_model = None
    if uses_reference(method, cfg.loss_mix) and (cfg.ref_model or not (cfg.lora or cfg.precompute_ref_logps)):
        ref_path = resolve_model_path(cfg.ref_model, cfg.cache_dir) if cfg.ref_model else model_path
        ref_model = load_causal_lm(ref_path, dtype=base_dtype(cfg), attn_implementation=cfg.attn_implementation)
        ref_model = prepare_reference(accelerator, ref_model.eval().requires_grad_(False))
    # One trained module: the LM and, for the methods that have one, the value head V_psi(x).
    value_head = ValueHead(lm.config.hidden_size, cfg.value_head_hidden) if method.uses_value_head else None
    policy = CompletionLogps(lm, value_head, padding_free=cfg.padding_free, shared_prompt=cfg.shared_prompt,
                             logits_chunk_tokens=cfg.logits_chunk_tokens, ld_alpha=cfg.ld_alpha)

    # ---- batches, optimizer --------------------------------------------------------------------
    pad = tokenizer.pad_token_id
    # cfg.batch_size is per process; the sampler draws whole optimizer steps (all processes, all
    # accumulated micro-batches), so the examples of a step do not depend on how it is split.
    world = accelerator.num_processes
    sampler = LengthGroupedBatchSampler(
        sequence_lengths(data.train_items), cfg.batch_size * world, seed=cfg.seed, group_by_length=cfg.group_by_length,
        per_step=cfg.gradient_accumulation_steps,
    )
    # Steered: every example carries its condition (tokens after the prompt, aux_coef, its mix's rewards),
    # changing each epoch; the items themselves, whose reference log-probs are computed below, stay without it.
    train_set = ConditionedItems(data.train_items, conditions, cfg.seed) if conditions else data.train_items
    train_loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate_fn(data.train_format, pad))
    eval_loader = None
    if data.eval_items:
        eval_set = ConditionedItems(data.eval_items, conditions, cfg.seed) if conditions else data.eval_items
        eval_loader = DataLoader(eval_set, batch_size=cfg.batch_size * world, collate_fn=collate_fn(data.eval_format, pad))
    groups = [{"params": [p for p in lm.parameters() if p.requires_grad], "lr": cfg.learning_rate}]
    if value_head is not None:
        groups.append({"params": list(value_head.parameters()), "lr": cfg.value_lr, "weight_decay": 0.0})
    if cfg.optimizer == "adamw":
        # The fused kernel (CPU and CUDA) updates 135M parameters in 0.17 s on 2 CPU cores; the
        # default per-tensor loop takes 2.3 s, longer than a LoRA training step.
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                      fused=accelerator.device.type in ("cpu", "cuda"))
    else:
        optimizer = torch.optim.RMSprop(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.gradient_accumulation_steps)  # split batches: same on every process
    total_steps = cfg.max_steps or steps_per_epoch * cfg.num_epochs
    schedule = "constant_with_warmup" if cfg.lr_scheduler == "constant" else cfg.lr_scheduler
    scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=total_steps)

    policy, optimizer, train_loader, scheduler = accelerator.prepare(policy, optimizer, train_loader, scheduler)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    reference_fn = make_reference_fn(accelerator, policy, ref_model, cfg.lora)

    # ---- reference log-probs once, then free the reference model ---------------------------------
    if uses_reference(method, cfg.loss_mix) and cfg.precompute_ref_logps:
        # Cached in the run folder, so a resumed run reuses them.
        # Each example's in the micro-batch it has in the first epoch: in bf16 a sequence's log-prob
        # depends on its batch, and so the first step's log-ratios are exactly 0.
        # Steered runs: the same batches, without the condition tokens (the reference never sees them).
        # Runs whose reference forward sees the same inputs share them through the cache (upo.reference_cache).
        bare = train_set.bare() if conditions else contextlib.nullcontext()
        shared = None
        if cfg.cache_reference_logps:
            shared = reference_cache(accelerator, policy, ref_model, cfg.lora, cache_root(cfg.cache_dir), log)
        with torch.random.fork_rng(devices=[]), bare:  # iterating a loader draws from the global RNG
            precompute_run_reference_logps(
                data, reference_fn, accelerator, out / "reference_logps.safetensors", pad,
                train_batches=lambda: _first_epoch_batches(train_loader, sampler, cfg.batch_size, accelerator),
                num_train_batches=len(train_loader), batch_size=cfg.batch_size * 2, reuse=cfg.resume, progress=show,
                with_kl=needs_kto_reference_point(method, cfg.pref_loss), shared=shared,
            )
        # From here on the batches carry them. The closure held the reference model too: drop both.
        ref_model = reference_fn = None

    # ---- resume ---------------------------------------------------------------------------------
    global_step, epoch, skip = 0, 0, 0
    if resume_from is not None:
        state = load_checkpoint(accelerator, resume_from, policy)
        if cfg.sync_ref_model:  # TR-DPO: the reference as that step had made it
            load_reference(resume_from, ref_model)
        global_step, epoch, skip = state["global_step"], state["epoch"], state["batches_seen_in_epoch"]
        if skip >= len(train_loader):
            epoch, skip = epoch + 1, 0
        log(f"upo: resumed from {resume_from} at step {global_step}")
    writer = MetricsWriter(out / "metrics.jsonl", resume_step=global_step if resume_from else None, enabled=main)
    start_tracking(accelerator, cfg, resume_step=global_step if resume_from else None)

    # ---- the loop -------------------------------------------------------------------------------
    averager = MetricsAverager()
    bar = tqdm(total=total_steps, initial=global_step, desc=f"{cfg.method} training", disable=not show, dynamic_ncols=True)
    policy_params = optimizer.param_groups[0]["params"]
    head_params = [p for g in optimizer.param_groups[1:] for p in g["params"]]
    with stop_requests() as requested:  # upo.stop: a stop signal is acted on at the end of a step
        while global_step < total_steps:
            sampler.set_epoch(epoch)
            # Accelerate's loader re-applies its own pass counter to the sampler at every pass; a resumed
            # run starts it at 0, so set it too (else the epoch after a resume replays epoch 0's order).
            train_loader.set_epoch(epoch)
            if conditions:
                train_set.set_epoch(epoch)  # each example's condition of this epoch
            loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
            seen = skip
            step_start, step_tokens = time.perf_counter(), 0
            for batch in loader:
                seen += 1
                batch, _, loss_scale = _own_batch(batch, seen - 1, sampler, cfg.batch_size, accelerator)
                if steering is not None:  # the step's condition: the adapter's scale, each sequence's aux_coef
                    batch = steering.apply(batch, global_step)
                step_tokens += int(batch["attention_mask"].sum())  # real (non-padding) policy tokens
                with accelerator.accumulate(policy):
                    x = step_inputs(batch, policy, reference_fn, method, cfg, accelerator)
                    loss, metrics = method.loss(x, cfg)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"non-finite loss ({loss.item()}) at step {global_step + 1}, epoch {epoch}, batch {seen} "
                            f"(dataset rows {batch['index'].tolist()}); metrics: "
                            + ", ".join(f"{k}={float(v):.4g}" for k, v in metrics.items())
                        )
                    accelerator.backward(loss * loss_scale)
                    if accelerator.sync_gradients and cfg.max_grad_norm:
                        # Policy and value head are clipped apart: the head's regression on large rewards
                        # must not shrink the policy's step (Accelerate unscales fp16 grads in the first call).
                        metrics["grad_norm"] = accelerator.clip_grad_norm_(policy_params, cfg.max_grad_norm)
                        if head_params:
                            metrics["value_head/grad_norm"] = torch.nn.utils.clip_grad_norm_(head_params, cfg.max_grad_norm)
                    optimizer.step()  # a no-op until the last micro-batch of an accumulation
                    if accelerator.sync_gradients:
                        scheduler.step()
                    optimizer.zero_grad()
                averager.add(metrics)
                if not accelerator.sync_gradients:
                    continue
                elapsed = time.perf_counter() - step_start
                # step_tokens (deterministic, unlike the timings): what `upo frontier` sums as training compute
                averager.add({"step_seconds": elapsed, "tokens_per_second": step_tokens / elapsed, "step_tokens": step_tokens})
                global_step += 1
                if cfg.sync_ref_model and global_step % cfg.ref_model_sync_steps == 0:  # TR-DPO
                    mix_into_reference(ref_model, accelerator.unwrap_model(policy).lm, cfg.ref_model_mixup_alpha)
                bar.update(1)
                last = global_step >= total_steps
                row = {}
                if global_step % cfg.logging_steps == 0 or last:
                    row.update(reduce_metrics(accelerator, averager.pop(), prefix="train/"))
                    row["train/lr"] = scheduler.get_last_lr()[0]
                    row["train/epoch"] = epoch + seen / len(train_loader)
                    bar.set_postfix(loss=f"{row.get('train/loss', float('nan')):.4f}")
                if eval_loader is not None and ((cfg.eval_steps and global_step % cfg.eval_steps == 0) or last):
                    held_out = steering.batches(eval_loader) if steering is not None else eval_loader
                    row.update(heldout_metrics(held_out, policy, reference_fn, method, cfg, accelerator,
                                               data.eval_format, progress=show))
                if row:
                    writer.write(global_step, row)
                    accelerator.log(row, step=global_step)
                stop = None if last else agreed_stop(accelerator, requested())  # SIGTERM / SIGUSR1: save, then stop
                if (cfg.save_steps and (global_step % cfg.save_steps == 0 or last)) or stop:
                    state = {"global_step": global_step, "epoch": epoch, "batches_seen_in_epoch": seen,
                             "num_processes": world, "data_fingerprint": fingerprint}
                    checkpoint = save_checkpoint(accelerator, out, global_step, state, cfg, keep=cfg.save_total_limit,
                                                 reference=ref_model if cfg.sync_ref_model else None)
                if stop:
                    bar.close()
                    finish_tracking(accelerator)
                    raise TrainingStopped(stop, global_step, checkpoint)
                if last:
                    break
                step_start, step_tokens = time.perf_counter(), 0
            epoch, skip = epoch + 1, 0
    bar.close()
    final = _save_final(accelerator, policy, tokenizer, cfg, data, out)
    finish_tracking(accelerator)
    if main and cfg.plot_curves:
        try:
            plot_curves(out)
        except Exception as e:  # the model is saved: a plotting problem must not fail the run
            warnings.warn(f"could not draw the training curves ({type(e).__name__}: {e}); retry with `upo plot {out}`",
                          stacklevel=2)
    return final


def _own_batch(batch: dict, k: int, sampler: LengthGroupedBatchSampler, per_process: int,
               accelerator) -> tuple[dict, int, float]:
    """The `k`-th loader batch of an epoch as this process trains on it: without the copies
    Accelerate topped a short batch up with (unless it holds only copies), with its number of real
    examples and its loss factor (`_share`)."""
    mine, loss_scale = _share(sampler, k, per_process, accelerator)
    if 0 < mine < len(batch["index"]):
        batch = first_items(batch, mine)
    return batch, mine, loss_scale


def _first_epoch_batches(train_loader, sampler: LengthGroupedBatchSampler, per_process: int, accelerator):
    """Yields (batch, real examples) of this process's micro-batches of the first epoch, exactly as
    the step receives them: where the reference log-probs are precomputed."""
    sampler.set_epoch(0)
    train_loader.set_epoch(0)
    for k, batch in enumerate(train_loader):
        batch, mine, _ = _own_batch(batch, k, sampler, per_process, accelerator)
        yield batch, mine


def _share(sampler: LengthGroupedBatchSampler, batch: int, per_process: int, accelerator) -> tuple[int, float]:
    """This process's examples in the `batch`-th loader batch of the epoch (counted from 0), and the
    factor on its mean loss that makes every optimizer step the mean over all of that step's examples.

    Accelerate gives each process `per_process` rows of every sampler batch and tops a short last
    batch up with examples from the epoch's first batch; those copies count for nothing (a process
    left with copies only still runs forward and backward, with factor 0, for the collectives).
    Accelerate divides each micro-batch's loss by the accumulation steps and the processes' gradients
    are averaged, so a micro-batch of k examples, in a step of S over P processes and G accumulation
    steps, gets k * P * G / S: exactly 1 in a full step, more in a short last one.
    """
    in_batch, in_step = sampler.examples(batch)
    mine = min(max(in_batch - per_process * accelerator.process_index, 0), per_process)
    return mine, mine * accelerator.num_processes * accelerator.gradient_accumulation_steps / in_step


def _save_final(accelerator, policy, tokenizer, cfg: UPOConfig, data, out: Path) -> Path:
    """final/: save_pretrained model (LoRA merged on request) + tokenizer + resolved config, the
    value head (value_head.safetensors) of the methods that have one, and a steered run's conditions
    (steering.json).

    Under FSDP or DeepSpeed ZeRO-3 each process holds a shard of every weight, so the full weights
    are gathered first (a collective: every process calls it) and saved from the main process.
    """
    final = out / "final"
    state = accelerator.get_state_dict(policy)  # on the main process only, under FSDP and ZeRO-3
    if accelerator.is_main_process:
        parts = {"lm": {}, "value_head": {}}  # CompletionLogps' two modules
        for key, tensor in state.items():
            module, name = key.split(".", 1)
            parts[module][name] = tensor
        by_adapter = bool(cfg.steer_aux_coefs) and cfg.steer_by == "adapter"
        trained = accelerator.unwrap_model(policy).lm
        if cfg.lora and cfg.load_in_4bit:  # QLoRA: the 4-bit base as the weights it computed with
            parts["lm"] = dequantized_state(trained, parts["lm"])
        lm = full_copy(trained, parts["lm"], merge=cfg.lora and cfg.merge_lora and not by_adapter)
        with atomic_folder(final) as tmp:
            if by_adapter:  # final/steer_adapter/, then final/ itself: the base with `default` merged (aux_coef 0)
                lm = merged(split_steer_adapter(lm, tmp / ADAPTER_FOLDER))
            lm.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            cfg.save(tmp / "upo_config.yaml")
            if parts["value_head"]:
                save_file({k: v.contiguous() for k, v in parts["value_head"].items()},
                          str(tmp / "value_head.safetensors"))
            if data.standardizer is not None:
                (tmp / "reward_standardizer.json").write_text(json.dumps(data.standardizer.to_dict(), indent=2))
            if cfg.steer_aux_coefs or cfg.steer_reward_mixes:
                write_steering(tmp, cfg.steer_aux_coefs, cfg.steer_reward_mixes, by=cfg.steer_by)
    accelerator.wait_for_everyone()
    return final
