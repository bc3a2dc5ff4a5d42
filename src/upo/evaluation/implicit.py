"""Implicit-reward metrics on held-out pairs: r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)).

Each model scores the pairs tokenized by its own tokenizer (a CSFT policy sees its desirable control
token after the prompt, as it does when generating; the reference does not), with the one
log-prob function of the project (`upo.logps.sequence_logps`); the metrics are the standard DPO
names of `upo.steps.pair_metrics`.
"""

from __future__ import annotations

import torch

from upo.data.collate import collate_fn
from upo.data.control import control_token_ids
from upo.data.records import PreferencePair
from upo.data.tokenize import tokenize_pairs
from upo.logps import sequence_logps
from upo.modeling import eval_mode
from upo.reference import item_logps
from upo.steps import pair_metrics

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(model, precision: str):
    """Autocast on the model's device in `precision` (bf16 | fp16), or a no-op context for fp32."""
    return torch.autocast(model.device.type, dtype=AUTOCAST_DTYPES.get(precision, torch.float32),
                          enabled=precision in AUTOCAST_DTYPES)


@torch.no_grad()
def pair_logps(model, tokenizer, pairs: list[PreferencePair], *, max_length: int, max_prompt_length: int,
               batch_size: int = 8, precision: str = "bf16", progress: bool = True,
               desc: str = "log-probs") -> dict[int, tuple[float, float]]:
    """{pair index: (summed log-prob of chosen, of rejected)} for the pairs that fit max_length."""
    items, _ = tokenize_pairs(pairs, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length,
                              control=control_token_ids(tokenizer))

    def logps_fn(input_ids, attention_mask, loss_mask):  # [2n] rows [0, n) chosen, [n, 2n) rejected
        with autocast(model, precision):
            return sequence_logps(model, input_ids, attention_mask, loss_mask).sum

    with eval_mode(model):
        logps = item_logps(items, "paired", collate_fn("paired", tokenizer.pad_token_id), logps_fn,
                           batch_size=batch_size, device=model.device, progress=progress, desc=desc)
    return {item["index"]: (lp["chosen_logps"], lp["rejected_logps"]) for item, lp in zip(items, logps, strict=True)}


def implicit_reward_metrics(policy: dict[int, tuple[float, float]], reference: dict[int, tuple[float, float]],
                            beta: float) -> dict[str, float]:
    """Means over the pairs both models scored: rewards/{chosen,rejected,margins,accuracies} with
    rewards = beta * (policy - reference) summed log-probs, logps/{chosen,rejected} of the policy,
    and rewards/pairs, their number (no metric when there is no common pair)."""
    common = sorted(policy.keys() & reference.keys())
    if not common:
        return {}
    pol = torch.tensor([policy[i] for i in common], dtype=torch.float64)  # [B, 2] chosen, rejected
    ref = torch.tensor([reference[i] for i in common], dtype=torch.float64)  # [B, 2]
    rewards = beta * (pol - ref)  # [B, 2]
    metrics = pair_metrics(rewards[:, 0], rewards[:, 1], pol[:, 0], pol[:, 1])
    return {**{k: float(v) for k, v in metrics.items()}, "rewards/pairs": float(len(common))}
