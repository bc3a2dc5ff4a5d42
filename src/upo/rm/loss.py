"""The Bradley-Terry reward-model loss and its pair metrics, as pure functions of the rewards."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Per-pair losses [B] = -log sigmoid(r_chosen - r_rejected).

    chosen_rewards, rejected_rewards: [B] scalar rewards r(x, y_w), r(x, y_l). The negative
    log-likelihood of the preference y_w > y_l under P(y_w > y_l) = sigmoid(r_w - r_l)
    (Bradley-Terry; Ouyang et al. 2022, eq. 1). logsigmoid is the stable form for large margins.
    """
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(f"reward shapes differ: {tuple(chosen_rewards.shape)} vs {tuple(rejected_rewards.shape)}")
    return -F.logsigmoid(chosen_rewards - rejected_rewards)


def pair_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, float]:
    """Means over the pairs, under the DPO metric names: rewards/chosen, rewards/rejected,
    rewards/margins (r_chosen - r_rejected) and rewards/accuracies (share with r_chosen > r_rejected;
    a tie counts as wrong)."""
    chosen, rejected = chosen_rewards.detach().float(), rejected_rewards.detach().float()  # [B]
    return {
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/margins": (chosen - rejected).mean().item(),
        "rewards/accuracies": (chosen > rejected).float().mean().item(),
    }
