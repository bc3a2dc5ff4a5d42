"""Implicit-reward metrics on held-out pairs: r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)).

Each model scores the pairs tokenized by its own tokenizer (a CSFT policy sees its desirable control
token after the prompt, as it does when generating; the reference does not), with the one
log-prob function of the project (`upo.logps.sequence_logps`); the metrics are the standard DPO
names of `upo.steps.pair_metrics`, given per pair so that they get intervals.
"""

from __future__ import annotations

import numpy as np
import torch

from upo.data.collate import collate_fn
from upo.data.control import control_token_ids
from upo.data.records import PreferencePair
from upo.data.steering import steering_suffix
from upo.data.tokenize import tokenize_pairs
from upo.logps import sequence_logps
from upo.modeling import eval_mode, inference_autocast
from upo.reference import item_logps


@torch.no_grad()
def pair_logps(model, tokenizer, pairs: list[PreferencePair], *, max_length: int, max_prompt_length: int,
               batch_size: int = 8, precision: str = "bf16", progress: bool = True,
               desc: str = "log-probs", aux_coef: float | None = None,
               reward_mix: str | None = None) -> dict[int, tuple[float, float]]:
    """{pair index: (summed log-prob of chosen, of rejected)} for the pairs that fit max_length; a
    steered model's prompts end with the tokens of `aux_coef` and `reward_mix`, appended as training does, after
    truncation at the full lengths: the completions stay token for token the reference's (whose
    log-ratio they make), at one token per condition more than max_length."""
    steer = steering_suffix(tokenizer, aux_coef, reward_mix)
    items, _ = tokenize_pairs(pairs, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length,
                              control=control_token_ids(tokenizer))
    for item in items:
        item["prompt_ids"] = item["prompt_ids"] + steer

    def logps_fn(input_ids, attention_mask, loss_mask):  # [2n] rows [0, n) chosen, [n, 2n) rejected
        return sequence_logps(model, input_ids, attention_mask, loss_mask, shared_prompt=True).sum

    with eval_mode(model), inference_autocast(model, precision):
        logps = item_logps(items, "paired", collate_fn("paired", tokenizer.pad_token_id), logps_fn,
                           batch_size=batch_size, device=model.device, progress=progress, desc=desc)
    return {item["index"]: (lp["chosen_logps"], lp["rejected_logps"]) for item, lp in zip(items, logps, strict=True)}


def implicit_reward_values(policy: dict[int, tuple[float, float]], reference: dict[int, tuple[float, float]],
                           beta: float) -> tuple[list[int], dict[str, np.ndarray]]:
    """(pair indices, {metric: [B] values}) over the B pairs both models scored, with rewards =
    beta * (policy - reference) summed log-probs: rewards/{chosen,rejected,margins}, rewards/accuracies
    (1 when chosen's reward is above rejected's, else 0) and logps/{chosen,rejected} of the policy.
    Their means are the standard DPO metrics of `upo.steps.pair_metrics`."""
    common = sorted(policy.keys() & reference.keys())
    pol = np.asarray([policy[i] for i in common], dtype=np.float64).reshape(-1, 2)  # [B, 2] chosen, rejected
    ref = np.asarray([reference[i] for i in common], dtype=np.float64).reshape(-1, 2)  # [B, 2]
    rewards = beta * (pol - ref)  # [B, 2]
    return common, {
        "rewards/chosen": rewards[:, 0],
        "rewards/rejected": rewards[:, 1],
        "rewards/margins": rewards[:, 0] - rewards[:, 1],
        "rewards/accuracies": (rewards[:, 0] > rewards[:, 1]).astype(np.float64),
        "logps/chosen": pol[:, 0],
        "logps/rejected": pol[:, 1],
    }
