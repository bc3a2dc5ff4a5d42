"""One micro-batch's forward passes: a collated batch -> `StepInputs`, what a method's step reads.

The policy runs with gradient; the reference (`upo.reference`), the value head and KTO's reference
point run as the method in the table asks. Batches that carry precomputed reference log-probs skip
the reference forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from upo import losses
from upo.methods import Method, needs_kto_reference_point, uses_reference
from upo.pair_weighting import wpo_pair_weights


@dataclass
class StepInputs:
    """Everything a method's loss may need, for N sequences of one micro-batch.

    Paired batches hold B pairs as N = 2B rows: rows [0, B) are chosen, rows [B, 2B) rejected.
    """

    policy_logps: torch.Tensor  # [N] summed completion log-probs (with grad)
    policy_mean_logps: torch.Tensor  # [N] per-token mean (with grad)
    reference_logps: torch.Tensor | None  # [N] summed (no grad)
    desirable: torch.Tensor  # [N] bool
    rewards: torch.Tensor  # [N] auxiliary reward r_a (standardized, weighted); zeros if none
    values: torch.Tensor | None = None  # [N] V_psi(x) (grad to the value head only)
    kto_reference_point: torch.Tensor | None = None  # 0-dim, detached, clamped, averaged over all processes
    num_tokens: torch.Tensor | None = None  # [N] completion tokens per sequence (for per-token means)
    aux_coef: torch.Tensor | None = None  # [N] each sequence's aux_coef in a steered run (upo.data.steering)
    pair_weights: torch.Tensor | None = None  # [B] WPO's weight of each pair (wpo_weighting; upo.pair_weighting)

    def reference_mean_logps(self) -> torch.Tensor:
        """[N] per-token mean reference log-probs: the summed ones over the completion length."""
        return self.reference_logps / self.num_tokens.clamp(min=1)


def step_inputs(batch, policy, reference_fn, method: Method, cfg, accelerator) -> StepInputs:
    """Run the policy (and whatever the method needs) on one micro-batch.

    All its forward passes share one autocast region: autocast keeps the low-precision copies of
    the trainable weights it makes for the policy's forward until the outermost region ends, so
    KTO's mismatched-pair forward reuses them instead of casting 135M weights again (~70 ms a step
    on 2 CPU cores). The forward with gradient runs first; torch does not cache casts made without
    gradient, so the order is safe either way.
    """
    kto = needs_kto_reference_point(method, cfg.pref_loss) and "kl_input_ids" in batch
    with accelerator.autocast():
        out = policy(
            batch["input_ids"],
            batch["attention_mask"],
            batch["loss_mask"],
            batch["prompt_last_index"] if method.uses_value_head else None,  # the policy's value head gives V(x)
            keep_prompts=kto,  # the mismatched sequences' prompts are this batch's: keep their keys and values
            wpo=cfg.wpo_weighting,
        )
        reference, kl_reference = batch.get("reference_logps"), batch.get("kl_reference_logps")
        sequences = [batch[key] for key in ("input_ids", "attention_mask", "loss_mask")]
        if reference is None and uses_reference(method, cfg.loss_mix):
            if kto and kl_reference is None:
                # Both as the policy runs them: the mismatched sequences from the batch's prompts' keys and values.
                kl_sequences = [batch[f"kl_{key}"] for key in ("input_ids", "attention_mask", "loss_mask")]
                reference, kl_reference = reference_fn(*sequences, kl=kl_sequences)
            else:
                reference = reference_fn(*sequences)
        z0 = None
        if kto:
            z0 = kto_reference_point(batch, policy, reference_fn, accelerator, out.get("prompt_cache"), kl_reference)
    return StepInputs(
        policy_logps=out["sum"],
        policy_mean_logps=out["mean"],
        reference_logps=reference,
        desirable=batch["desirable"],
        rewards=batch["rewards"],
        values=out.get("values"),
        kto_reference_point=z0,
        num_tokens=out["num_tokens"],
        aux_coef=batch.get("aux_coef"),
        pair_weights=wpo_pair_weights(out["wpo_mean"]) if cfg.wpo_weighting else None,
    )


@torch.no_grad()
def kto_reference_point(batch, policy, reference_fn, accelerator, prompt_cache=None, kl_reference=None) -> torch.Tensor:
    """z0 from the mismatched (prompt_i, completion_j) sequences, averaged over all processes;
    `kl_reference` [B]: their reference log-probs when the caller has them (else the batch's, or
    `reference_fn`'s).

    Their prompts are the batch's own, which the policy's forward with gradient has just run: given
    its `prompt_cache` (the prompts' keys and values at every layer), the policy runs only from
    each prompt's last token on, for the same log-probs. In token-forwards (2 N FLOPs each) per
    example, with prompt P, completion C and mismatched completion C', a KTO step costs 3 (P + C)
    for the training sequence (forward and backward) plus, for the mismatched one, P + C' run in
    full, C' + 1 with the cache (with P = 3 C = 3 C': 16 C -> 13 C, a fifth less), or 3 C' if it
    were packed next to the training sequence in the forward with gradient (its prompt free, but
    its completion in backward too).
    """
    kl_policy = policy(batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_loss_mask"],
                       prompt_cache=prompt_cache)["sum"]
    if kl_reference is None:
        kl_reference = batch.get("kl_reference_logps")
    if kl_reference is None:
        kl_reference = reference_fn(batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_loss_mask"])
    # The mean runs over every process's mismatched pairs, so all processes share one z0.
    return losses.kto_reference_point(accelerator.gather(kl_policy), accelerator.gather(kl_reference))
