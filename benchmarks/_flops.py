"""Model FLOPs, this machine's matmul peak (for the benchmarks' model-FLOPs utilization, MFU), and profile summaries.

Model FLOPs per step: 6N per trained token (full fine-tuning; with LoRA 4N + 6 N_lora, since the
frozen weights get no weight gradient) plus 2N per token of forward passes without gradient,
counting only the tokens a step needs (`token_counts`): a pair's prompt once, and of KTO's
mismatched sequences only the completions (their prompts are the batch's own, already run).
"""

from __future__ import annotations

import time

import torch


def step_flops(trained_tokens: float, forward_tokens: float, n: int, n_lora: int = 0) -> float:
    """Model FLOPs of one step: 6N per trained token (4N + 6 N_lora with LoRA) + 2N per forward-only token."""
    per_trained = 4 * n + 6 * n_lora if n_lora else 6 * n
    return per_trained * trained_tokens + 2 * (n + n_lora) * forward_tokens


def token_counts(attention_mask: torch.Tensor, completion_mask: torch.Tensor, paired: bool) -> dict[str, int]:
    """Tokens of one batch [N, T]: "real" (every non-padding token of every sequence: a pair's
    prompt twice, as the tokens/s of upo and TRL count them), "prompt" (of those, the prompts') and
    "needed" (what a forward must run: with `paired`, rows [0, N/2) and [N/2, N) pairs of one prompt,
    each prompt once)."""
    real = int(attention_mask.sum())
    prompt = int((attention_mask.bool() & ~completion_mask.bool()).sum())
    return {"real": real, "prompt": prompt, "needed": real - prompt // 2 if paired else real}


def parameter_counts(model) -> dict[str, int]:
    """total, input embedding, N (= total, tied weights once), N less the embedding, and trainable
    parameters."""
    seen, total, trainable = set(), 0, 0
    for p in model.parameters():  # tied weights are one tensor: count them once
        if id(p) in seen:
            continue
        seen.add(id(p))
        quant_state = getattr(p, "quant_state", None)  # a 4-bit weight (QLoRA) holds two values a byte
        total += quant_state.shape.numel() if quant_state is not None else p.numel()
        trainable += p.numel() if p.requires_grad else 0
    embedding = model.get_input_embeddings().weight.numel()
    return {"total": total, "embedding": embedding, "n": total, "n_non_embedding": total - embedding,
            "trainable": trainable}


def matmul_peak(dtype: torch.dtype, size: int, reps: int) -> float:
    """Best GFLOP/s of a size x size torch.matmul at the current thread count."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.matmul(a, b)  # warm-up (oneDNN picks its kernel)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def model_counts(model, lora: bool) -> dict[str, int]:
    """parameter_counts with N of the base model only and, with LoRA, n_lora = the adapters' size."""
    counts = parameter_counts(model)
    counts["n_lora"] = counts["trainable"] if lora else 0
    counts["n"] -= counts["n_lora"]
    counts["n_non_embedding"] -= counts["n_lora"]
    return counts


def new_step(trained: dict[str, int]) -> dict[str, int]:
    """A step's token counts from its trained batch's `token_counts`; forward-only ones are added later."""
    return {"trained": trained["real"], "trained_needed": trained["needed"], "prompt": trained["prompt"],
            "forward": 0, "forward_needed": 0}


def step_columns(steps: list[dict[str, int]]) -> dict[str, list[int]]:
    """Per-step token counts as the run record's columns: trained_tokens, forward_tokens, ..."""
    return {f"{key}_tokens": [s[key] for s in steps] for key in steps[0]} if steps else {}


def profile_text(ops) -> str:
    """A profile's phases (the forward passes bench_trl.py labels, backward, the optimizer: total CPU
    seconds, nested ops included), then the op table by self CPU time (torch.profiler's key_averages)."""
    def total(match) -> float:
        return sum(e.cpu_time_total for e in ops if match(e.key)) / 1e6

    phases = {"steps (ProfilerStep*)": total(lambda k: k.startswith("ProfilerStep")),
              "forward with gradient": total(lambda k: k == "upo: forward with gradient"),
              "forward without gradient (KTO's KL sequences)": total(lambda k: k == "upo: forward without gradient"),
              "backward (autograd::engine::evaluate_function*)": total(lambda k: k.startswith("autograd::engine")),
              "optimizer step": total(lambda k: k.startswith("Optimizer.step"))}
    return ("phases over the profiled steps (CPU time, nested ops included):\n"
            + "".join(f"  {k:<50} {v:8.3f} s\n" for k, v in phases.items())
            + "\n" + ops.table(sort_by="self_cpu_time_total", row_limit=40))
