"""Reference-free preference losses: SimPO, CPO and ORPO, as pure functions of the policy's own
log-probs (no reference model, no precomputed reference log-probs), like `upo.losses`.

Shapes: B = preference pairs. Log-probs are summed over the response tokens unless a name says
`mean` (per-token mean, i.e. the summed log-prob over the response length).

    simpo   L = -log sigmoid(beta (mean_w - mean_l) - gamma)                   (Meng et al. 2024)
    cpo     L = -log sigmoid(beta (logp_w - logp_l)) - alpha mean_w            (Xu et al. 2024)
            (TRL's CPOTrainer hinge: max(0, 1 - beta (logp_w - logp_l)); ipo: (mean_w - mean_l - 1/(2 beta))^2)
    orpo    L = -mean_w - lambda log sigmoid(log odds(y_w) - log odds(y_l))    (Hong et al. 2024)
            odds(y) = P / (1 - P), P = exp(mean logp(y|x)) (the per-token geometric-mean probability)

with mean = mean_t log pi_theta(y_t | x, y_<t) and logp the summed log-prob. SimPO and CPO take
`label_smoothing` as DPO does (the expected loss when a label is flipped with that probability).
Each returns the per-pair losses and the rewards the step logs as `rewards/*`: beta times the
log-prob the loss compares (the reference-free methods' implicit reward), detached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from upo.losses import smoothed_sigmoid_loss


def simpo_loss(
    policy_chosen_mean_logps: Tensor,
    policy_rejected_mean_logps: Tensor,
    *,
    beta: float,
    gamma: float,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """SimPO (Meng et al. 2024, arXiv 2405.14734): a length-normalized reward with a target margin.

    Args:
        policy_chosen_mean_logps: [B] per-token mean log pi_theta(y_w|x).
        policy_rejected_mean_logps: [B] per-token mean log pi_theta(y_l|x).
        beta: scale of the reward beta * mean logp (the authors use 2 to 2.5).
        gamma: the target reward margin (absolute, in reward units; the authors' gamma / beta is 0.3 to 0.8).
        label_smoothing: assumed probability that a label is flipped (0 = plain SimPO).

    Returns:
        losses: [B] -log sigmoid(beta * (mean_w - mean_l) - gamma) (label-smoothed when ls > 0).
        chosen_rewards, rejected_rewards: [B] beta * mean logp, detached.
    """
    chosen_rewards = beta * policy_chosen_mean_logps  # [B]
    rejected_rewards = beta * policy_rejected_mean_logps  # [B]
    losses = smoothed_sigmoid_loss(chosen_rewards - rejected_rewards - gamma, label_smoothing)  # [B]
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def cpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    policy_chosen_mean_logps: Tensor,
    *,
    beta: float,
    alpha: float,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CPO (Xu et al. 2024, arXiv 2401.08417): DPO without the reference, plus NLL of the chosen response.

    Args:
        policy_chosen_logps, policy_rejected_logps: [B] summed log pi_theta(y|x) (TRL's ipo: per-token means).
        policy_chosen_mean_logps: [B] per-token mean log pi_theta(y_w|x) (the NLL term).
        beta: temperature of the reward beta * logp (ipo: its regularization tau).
        alpha: weight of the chosen responses' per-token NLL (the authors' behaviour-cloning term; 1).
        label_smoothing: assumed probability that a label is flipped (sigmoid only).
        loss_type: the preference term on h = logp_w - logp_l, as TRL's CPOTrainer: "sigmoid" -log sigmoid(beta h)
            (CPO's), "hinge" max(0, 1 - beta h), "ipo" (h - 1 / (2 beta))^2.

    Returns:
        losses: [B] the preference term + alpha * (-mean_w).
        chosen_rewards, rejected_rewards: [B] beta * logp, detached.
        nll: [B] -mean_w, detached (logged as `nll_loss`).
    """
    chosen_rewards = beta * policy_chosen_logps  # [B]
    rejected_rewards = beta * policy_rejected_logps  # [B]
    margin = policy_chosen_logps - policy_rejected_logps  # [B]
    if loss_type == "sigmoid":
        preference = smoothed_sigmoid_loss(beta * margin, label_smoothing)  # [B]
    elif loss_type == "hinge":
        preference = torch.relu(1 - beta * margin)
    elif loss_type == "ipo":
        preference = (margin - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown CPO loss_type {loss_type!r}: sigmoid, hinge or ipo")
    nll = -policy_chosen_mean_logps  # [B]
    return preference + alpha * nll, chosen_rewards.detach(), rejected_rewards.detach(), nll.detach()


def alphapo_reward(logps: Tensor, alpha: float) -> Tensor:
    """AlphaPO's reward shape (Gupta et al. 2025, arXiv 2501.03884; TRL's CPOConfig.alpha): [N]
    (1 - p^(-alpha)) / alpha with p = exp(logps), i.e. -expm1(-alpha logps) / alpha; alpha 0 is logps
    itself (SimPO's and CPO's reward). With alpha > 0 the reward falls faster than log p as p falls
    (-(e^(alpha |log p|) - 1) / alpha); with alpha < 0 it is bounded below by 1 / alpha, saturating."""
    if alpha == 0.0:
        return logps
    return -torch.expm1(-alpha * logps) / alpha


@dataclass
class ORPOLoss:
    losses: Tensor  # [B] nll + lambda * odds-ratio loss (with grad)
    chosen_rewards: Tensor  # [B] beta * mean_w, detached
    rejected_rewards: Tensor  # [B] beta * mean_l, detached
    nll: Tensor  # [B] -mean_w, detached
    log_odds_ratios: Tensor  # [B] log odds(y_w) - log odds(y_l), detached
    odds_ratio_losses: Tensor  # [B] -log sigmoid(log odds ratio), detached


def log_odds(mean_logps: Tensor) -> Tensor:
    """[N] log(P / (1 - P)) for P = exp(mean_logps) < 1: mean_logps - log(1 - exp(mean_logps)).

    `-expm1(m)` is 1 - exp(m) without the cancellation near m = 0 (P near 1), where
    `log1p(-exp(m))` loses every digit; a per-token mean of exactly 0 (P = 1) gives +inf.
    """
    return mean_logps - torch.log(-torch.expm1(mean_logps))


def orpo_loss(policy_chosen_mean_logps: Tensor, policy_rejected_mean_logps: Tensor, *, beta: float) -> ORPOLoss:
    """ORPO (Hong et al. 2024, arXiv 2403.07691): NLL of the chosen response plus an odds-ratio penalty.

    Args:
        policy_chosen_mean_logps, policy_rejected_mean_logps: [B] per-token mean log pi_theta(y|x).
        beta: ORPO's lambda, the weight of the odds-ratio term (the authors use 0.1 to 0.25; TRL
            calls it beta too).

    Returns:
        `ORPOLoss`: losses [B] = -mean_w - beta * log sigmoid(log odds(y_w) - log odds(y_l)), and its
        parts, detached.
    """
    log_odds_ratios = log_odds(policy_chosen_mean_logps) - log_odds(policy_rejected_mean_logps)  # [B]
    odds_ratio_losses = -F.logsigmoid(log_odds_ratios)  # [B]
    nll = -policy_chosen_mean_logps  # [B]
    return ORPOLoss(
        losses=nll + beta * odds_ratio_losses,
        chosen_rewards=beta * policy_chosen_mean_logps.detach(),
        rejected_rewards=beta * policy_rejected_mean_logps.detach(),
        nll=nll.detach(),
        log_odds_ratios=log_odds_ratios.detach(),
        odds_ratio_losses=odds_ratio_losses.detach(),
    )
