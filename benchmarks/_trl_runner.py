"""bench_trl.py's TRL side: DPOTrainer / KTOTrainer (and CPOTrainer for CPO and SimPO, ORPOTrainer)
on upo's own token ids, timed per step.

Run in a child process of bench_trl.py (or by gpu_bench.py), in the bench environment where TRL is
installed; TRL is not a dependency of upo.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from _common import LORA, learning_rate, upo_config
from _flops import model_counts, new_step, step_columns, token_counts


def _trl_dataset(method: str, args, tokenizer):
    """The items upo's pipeline makes for the same config, in TRL's pre-tokenized column names."""
    from datasets import Dataset

    from upo.prepare import prepare_data

    cfg = upo_config(method, method, data=args.data, output_dir=Path(os.devnull), batch_size=args.batch_size,
                     steps=args.warmup + args.steps, max_length=args.max_length, precision=args.precision,
                     lora=args.lora, model=args.model, rewards={})
    items = prepare_data(cfg, tokenizer, progress=False).train_items
    if method != "kto":  # the paired methods
        return Dataset.from_list([{k: it[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for it in items])
    # KTO: TRL's own KL completions: rotate the completions by one within each batch-sized chunk of
    # the (sequential) training order, as KTOTrainer._prepare_dataset does.
    rows = [{"prompt_ids": it["prompt_ids"], "completion_ids": it["completion_ids"], "label": bool(it["label"])}
            for it in items]
    b = args.batch_size
    for start in range(0, len(rows), b):
        chunk = rows[start : start + b]
        kl = [chunk[-1]["completion_ids"]] + [r["completion_ids"] for r in chunk[:-1]]
        for row, completion in zip(chunk, kl, strict=True):
            row["KL_completion_ids"] = completion
    return Dataset.from_list(rows)


def _reference_free_row(feature: dict) -> dict:
    """TRL's experimental CPO/ORPO trainers' tokenized row from upo's ids (their tokenize_row's keys:
    prompt_*, and chosen_*/rejected_* = prompt + response with labels -100 on the prompt)."""
    row = {"prompt_input_ids": feature["prompt_ids"], "prompt_attention_mask": [1] * len(feature["prompt_ids"])}
    for side in ("chosen", "rejected"):
        ids = feature["prompt_ids"] + feature[f"{side}_ids"]
        row[f"{side}_input_ids"], row[f"{side}_attention_mask"] = ids, [1] * len(ids)
        row[f"{side}_labels"] = [-100] * len(feature["prompt_ids"]) + feature[f"{side}_ids"]
    return row


def _paired_counts(inputs) -> dict[str, int]:
    """token_counts of a CPO/ORPO batch, whose chosen and rejected sides are padded separately."""
    counts = {"real": 0, "prompt": 0}
    for side in ("chosen", "rejected"):
        mask = inputs[f"{side}_attention_mask"].bool()
        counts["real"] += int(mask.sum())
        counts["prompt"] += int((mask & (inputs[f"{side}_labels"] == -100)).sum())
    return {**counts, "needed": counts["real"] - counts["prompt"] // 2}


def _trainer_and_config(method: str):
    """TRL's trainer class, its config class and the method's own config values."""
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    if method in ("dpo", "kto"):
        shared = {"beta": 0.1, "precompute_ref_log_probs": True}
        return (DPOTrainer, DPOConfig, shared) if method == "dpo" else (KTOTrainer, KTOConfig, shared)
    if method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer, ORPOConfig, {"beta": 0.1}
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    # upo's defaults (UPOConfig: beta 0.1, simpo_gamma 0.5, cpo_alpha 1); upo's simpo is TRL's without its NLL term
    if method == "simpo":
        return CPOTrainer, CPOConfig, {"beta": 0.1, "loss_type": "simpo", "simpo_gamma": 0.5, "cpo_alpha": 0.0}
    return CPOTrainer, CPOConfig, {"beta": 0.1, "loss_type": "sigmoid", "cpo_alpha": 1.0}


def run_trl(name: str, args, workdir: Path, t0: float) -> dict:
    """TRL's DPOTrainer / KTOTrainer / CPOTrainer / ORPOTrainer; s/step from a callback, tokens
    counted in training_step."""
    from transformers import AutoModelForCausalLM, TrainerCallback

    from upo.modeling import load_tokenizer, resolve_model_path

    method = name.removeprefix("trl_")  # trl_dpo, trl_kto, trl_simpo, trl_cpo, trl_orpo
    path = resolve_model_path(args.model)
    tokenizer = load_tokenizer(path)  # pad = eos when the tokenizer has none, as in upo
    dataset = _trl_dataset(method, args, tokenizer)
    # fp32 weights, as upo; the attention kernel upo uses by default here (eager without CUDA) unless
    # --trl_attn says otherwise
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=args.trl_attn)

    counts = new_step({"real": 0, "needed": 0, "prompt": 0})

    class Bench:
        """Skips TRL's tokenization (the dataset is already upo's token ids) and counts tokens.

        training_step gets one collated micro-batch. DPO: input_ids/attention_mask [2B, T], chosen
        rows then rejected rows (each prompt + completion, right-padded to the batch's longest), the
        same layout as upo's; attention_mask.sum() is the real tokens of both sides. KTO: [B, T] for
        the B examples plus KL_input_ids/KL_attention_mask [B, T'] for the mismatched sequences that
        only get a forward pass without gradient.
        """

        def _prepare_dataset(self, dataset, *_args, **_kwargs):  # DPO, KTO
            return dataset

        def tokenize_row(self, feature, *_args, **_kwargs):  # CPO, ORPO
            return _reference_free_row(feature)

        def training_step(self, *a, **kw):
            inputs = a[1] if len(a) > 1 else kw["inputs"]
            if "chosen_labels" in inputs:  # CPO, ORPO
                tokens = _paired_counts(inputs)
            else:
                tokens = token_counts(inputs["attention_mask"], inputs["completion_mask"], paired=method == "dpo")
            for key, value in new_step(tokens).items():
                counts[key] += value
            if "KL_attention_mask" in inputs:
                counts["forward"] += int(inputs["KL_attention_mask"].sum())
                counts["forward_needed"] += int(inputs["KL_completion_mask"].sum())
            return super().training_step(*a, **kw)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begin, self.ends, self.steps = None, [], []

        def on_step_begin(self, *_a, **_kw):
            if self.begin is None:
                self.begin = time.perf_counter()

        def on_step_end(self, *_a, **_kw):
            # Step i runs from step i-1's on_step_end to its own: that includes fetching and collating
            # its batch (which happens before on_step_begin) and the previous step's logging.
            self.ends.append(time.perf_counter())
            self.steps.append(dict(counts))
            counts.update(dict.fromkeys(counts, 0))

    trainer_cls, config_cls, method_args = _trainer_and_config(method)
    trainer_cls = type(f"Bench{trainer_cls.__name__}", (Bench, trainer_cls), {})
    training_args = config_cls(
        output_dir=str(workdir / name),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        max_length=args.max_length,
        learning_rate=learning_rate(args.lora),
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        # AdamW both sides, same lr/betas/eps/no weight decay, and the same implementation by default: the
        # fused kernel (TRL's default on torch >= 2.8; upo's trainer asks for it where torch has it).
        # --trl_optim adamw_torch gives TRL the per-tensor loop.
        optim=args.trl_optim,
        bf16=args.precision == "bf16",
        fp16=args.precision == "fp16",
        **method_args,
        # TRL's configs default to gradient checkpointing (less memory, one more forward per step);
        # off unless --gradient_checkpointing (both libraries) or --trl_gradient_checkpointing (TRL alone)
        gradient_checkpointing=args.trl_gradient_checkpointing,
        activation_checkpointing=args.trl_gradient_checkpointing,  # transformers 5's name for it
        use_cpu=not torch.cuda.is_available(),  # bf16 autocast on CPU needs it said
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=42,
    )
    peft_config = None
    if args.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    timer = StepTimer()
    trainer = trainer_cls(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=peft_config, callbacks=[timer])
    trainer.train()
    params = model_counts(trainer.model, args.lora)
    ends = [timer.begin] + timer.ends
    return {"step_seconds": [b - a for a, b in zip(ends, ends[1:], strict=False)], **step_columns(timer.steps),
            "setup_seconds": timer.begin - t0, "params": params}
