"""What one training step hands a method (`StepInputs`), and the metric names methods share.

A separate module so that the method table (`upo.methods`) and the baseline steps
(`upo.baseline_methods`) can both use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Metrics = dict[str, torch.Tensor]


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
    kto_reference_point: torch.Tensor | None = None  # 0-dim, detached, clamped, all-reduced by the loop
    num_tokens: torch.Tensor | None = None  # [N] completion tokens per sequence (for per-token means)

    def reference_mean_logps(self) -> torch.Tensor:
        """[N] per-token mean reference log-probs: the summed ones over the completion length."""
        return self.reference_logps / self.num_tokens.clamp(min=1)


def split_pairs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[2B, ...] rows of a paired batch -> (chosen [B, ...], rejected [B, ...])."""
    half = x.shape[0] // 2
    return x[:half], x[half:]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x[mask]; NaN-free 0 when the mask is empty (the logger skips nothing silently:
    an unpaired micro-batch may hold no undesirable example)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def pair_metrics(chosen_rewards, rejected_rewards, policy_chosen_logps, policy_rejected_logps) -> Metrics:
    """Standard DPO vocabulary for B pairs (all inputs [B])."""
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "logps/chosen": policy_chosen_logps.detach().mean(),
        "logps/rejected": policy_rejected_logps.detach().mean(),
    }


def unpaired_metrics(rewards, policy_logps, desirable) -> Metrics:
    """The same names for unpaired batches: chosen = desirable, rejected = undesirable."""
    d, u = desirable.float(), (~desirable).float()
    chosen, rejected = masked_mean(rewards, d), masked_mean(rewards, u)
    return {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
        "logps/chosen": masked_mean(policy_logps.detach(), d),
        "logps/rejected": masked_mean(policy_logps.detach(), u),
    }
