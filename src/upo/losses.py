"""UPO losses as pure functions of per-sequence log-probs (see UPO-METHOD.md, "The loss").

Every function here takes tensors and flat hyperparameters and returns tensors: no config
objects, no accelerator, no collectives. Reductions that span processes (KTO's reference point)
are done by the caller, which passes the result in.

Shapes: B = preference pairs, N = responses (chosen and rejected alike), M = mismatched
(prompt_i, completion_j) pairs used for KTO's reference point.

    L = L_pref + aux_coef * L_aux + L_V

L_pref is one of `dpo_loss`, `ipo_loss`, `kto_loss` (composition, not dispatch), and `upo_loss`
adds the advantage-weighted likelihood term L_aux and the expectile value term L_V.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def smoothed_sigmoid_loss(logits: Tensor, label_smoothing: float) -> Tensor:
    """[B] -(1 - ls) log sigmoid(z) - ls log sigmoid(-z): -log sigmoid(z), in expectation over a label
    flipped with probability ls (conservative DPO, Mitchell 2023; also SimPO's and CPO's)."""
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


def f_divergence_scores(logratios: Tensor, f_divergence: str, alpha: float = 0.5) -> Tensor:
    """[N] f'(u) at u = pi_theta / pi_ref = exp(logratio): DPO's implicit reward when the KL regularizer
    is another f-divergence (f-DPO, Wang et al. 2023, arXiv 2309.16240), as TRL 1.16's f_divergence_type:

        reverse_kl        log u                        (DPO)
        forward_kl        1 - 1/u
        js_divergence     log(2u / (1 + u)) = log 2 + log sigmoid(log u)
        alpha_divergence  (u^(alpha - 1) - 1) / (alpha - 1)   (TRL's alpha; alpha -> 1 is reverse_kl)

    The alpha-divergence's exponent is clamped at 80 (as TRL's, in fp32) so that exp stays finite."""
    if f_divergence == "reverse_kl" or (f_divergence == "alpha_divergence" and abs(alpha - 1.0) < 1e-6):
        return logratios
    if f_divergence == "forward_kl":
        return 1.0 - torch.exp(-logratios)
    if f_divergence == "js_divergence":
        return math.log(2.0) + F.logsigmoid(logratios)
    if f_divergence == "alpha_divergence":
        return torch.expm1(((alpha - 1.0) * logratios).clamp(max=80.0)) / (alpha - 1.0)
    raise ValueError(f"f_divergence must be one of {', '.join(F_DIVERGENCES)}, got {f_divergence!r}")


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
    f_divergence: str = "reverse_kl",
    f_alpha: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """DPO loss (Rafailov et al. 2023), conservative DPO when `label_smoothing > 0`, f-DPO with another
    `f_divergence` (`f_divergence_scores`: h is then f'(u_w) - f'(u_l)).

    Args:
        policy_chosen_logps: [B] log pi_theta(y_w|x), summed over response tokens.
        policy_rejected_logps: [B] log pi_theta(y_l|x).
        reference_chosen_logps: [B] log pi_ref(y_w|x).
        reference_rejected_logps: [B] log pi_ref(y_l|x).
        beta: temperature of the implicit reward.
        label_smoothing: assumed probability that a label is flipped (0 = plain DPO).

    Returns:
        losses: [B] -(1-ls) * logsigmoid(beta * h) - ls * logsigmoid(-beta * h),
            with h = logratio_w - logratio_l.
        chosen_rewards: [B] beta * (policy - reference) chosen logps, detached.
        rejected_rewards: [B] beta * (policy - reference) rejected logps, detached.
    """
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # [B]
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # [B]
    logits = (f_divergence_scores(chosen_logratios, f_divergence, f_alpha)
              - f_divergence_scores(rejected_logratios, f_divergence, f_alpha))  # [B] h(x, y_w, y_l)

    # L_DPO = -log sigmoid(beta * h); with label smoothing, the expected loss under flipped labels.
    losses = smoothed_sigmoid_loss(beta * logits, label_smoothing)  # [B]
    chosen_rewards = beta * chosen_logratios.detach()  # [B]
    rejected_rewards = beta * rejected_logratios.detach()  # [B]
    return losses, chosen_rewards, rejected_rewards


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    *,
    beta: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """IPO loss (Azar et al. 2023, arXiv 2310.12036): regress the margin to 1 / (2 * beta).

    Args:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
        reference_rejected_logps: [B] each, as in `dpo_loss`.
        beta: regularization strength (the target margin is 1 / (2 * beta)).

    Returns:
        losses: [B] (h - 1 / (2 * beta)) ** 2 with h = logratio_w - logratio_l.
        chosen_rewards, rejected_rewards: [B] each, as in `dpo_loss` (detached).
    """
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # [B]
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # [B]
    logits = chosen_logratios - rejected_logratios  # [B]

    # Sampled IPO loss (Azar et al. 2023): squared distance of the margin from 1 / (2 * beta).
    losses = (logits - 1.0 / (2.0 * beta)) ** 2  # [B]
    chosen_rewards = beta * chosen_logratios.detach()  # [B]
    rejected_rewards = beta * rejected_logratios.detach()  # [B]
    return losses, chosen_rewards, rejected_rewards


def kto_reference_point(policy_kl_logps: Tensor, reference_kl_logps: Tensor) -> Tensor:
    """KTO's reference point z0 from mismatched (prompt_i, completion_j), j != i, pairs.

    z0 = max(0, mean(logratio)), detached: it shifts the loss but is not trained through.
    With several processes, the caller gathers the logratios of all processes first and passes
    them all here; this function never communicates.

    Args:
        policy_kl_logps: [M] log pi_theta(y_j|x_i) of the mismatched pairs (M >= 1).
        reference_kl_logps: [M] log pi_ref(y_j|x_i).

    Returns:
        0-dim tensor z0 >= 0, with requires_grad False.
    """
    kl = (policy_kl_logps - reference_kl_logps).mean()  # 0-dim estimate of KL(pi_theta || pi_ref)
    return kl.clamp(min=0).detach()  # a KL estimate below zero is noise: clamp it


def kto_loss(
    policy_logps: Tensor,
    reference_logps: Tensor,
    desirable: Tensor,
    reference_point: Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """KTO loss (Ethayarajh et al. 2024) in the HALOs form, on unpaired examples.

    Args:
        policy_logps: [N] log pi_theta(y|x), summed over response tokens.
        reference_logps: [N] log pi_ref(y|x).
        desirable: [N] bool, True where y is a desirable response.
        reference_point: 0-dim z0 from `kto_reference_point` (already detached and clamped).
        beta: temperature of the implicit reward.
        desirable_weight: lambda_D, scales the loss of desirable examples.
        undesirable_weight: lambda_U, scales the loss of undesirable examples.

    Returns:
        losses: [N] per-example loss,
            desirable:   lambda_D * (1 - sigmoid(beta * (logratio - z0)))
            undesirable: lambda_U * (1 - sigmoid(beta * (z0 - logratio)))
        rewards: [N] beta * logratio, detached.
    """
    logratios = policy_logps - reference_logps  # [N]
    desirable_losses = desirable_weight * (1.0 - torch.sigmoid(beta * (logratios - reference_point)))
    undesirable_losses = undesirable_weight * (1.0 - torch.sigmoid(beta * (reference_point - logratios)))
    losses = torch.where(desirable, desirable_losses, undesirable_losses)  # [N]
    rewards = beta * logratios.detach()  # [N]
    return losses, rewards


def awr_weights(advantages: Tensor, *, eta: float, max_weight: float) -> Tensor:
    """AWR weights min(exp(A / eta), max_weight), detached.

    The exponent is clamped at log(max_weight) before exp, so a huge advantage gives exactly
    max_weight instead of inf (and inf * 0 = nan downstream).

    Args:
        advantages: [N] sequence-level advantages A = r_a - V_psi(x).
        eta: AWR temperature (> 0).
        max_weight: upper clip of the weights (> 0).

    Returns:
        [N] weights in [0, max_weight], requires_grad False.
    """
    exponents = (advantages.detach() / eta).clamp(max=math.log(max_weight))  # [N]
    # exp(log(w)) can round one ulp above w; the final clamp keeps the bound exact.
    return exponents.exp().clamp(max=max_weight)


def expectile_loss(diff: Tensor, *, tau: float) -> Tensor:
    """Expectile regression loss of IQL (Kostrikov et al. 2021), elementwise.

    Args:
        diff: [N] u = r_a - V_psi(x).
        tau: expectile in (0, 1); tau > 0.5 weighs under-estimates of V (u > 0) more.

    Returns:
        [N] |tau - 1[u < 0]| * u ** 2.
    """
    weight = (tau - (diff < 0).to(diff.dtype)).abs()  # [N] tau where u >= 0, 1 - tau where u < 0
    return weight * diff**2


@dataclass
class UPOLoss:
    """The terms of one UPO step; every 0-dim field keeps its graph."""

    loss: Tensor  # 0-dim: policy_loss + value_loss (what the optimizer backpropagates)
    policy_loss: Tensor  # 0-dim: pref_loss + aux_coef * aux_loss (exactly pref_loss when aux_coef == 0);
    # with per-example aux_coef [N]: pref_loss - mean(aux_coef * weights * policy_logps)
    pref_loss: Tensor  # 0-dim mean of the preference losses
    aux_loss: Tensor  # 0-dim: -mean(weights * policy_logps)
    value_loss: Tensor  # 0-dim mean expectile loss of (rewards - values)
    weights: Tensor  # [N] detached AWR weights
    advantages: Tensor  # [N] detached rewards - values


def upo_loss(
    pref_losses: Tensor,
    policy_logps: Tensor,
    rewards: Tensor,
    values: Tensor,
    *,
    aux_coef: float | Tensor,
    eta: float,
    max_weight: float,
    tau: float,
) -> UPOLoss:
    """UPO: L = L_pref + aux_coef * L_aux + L_V (UPO-METHOD.md, "The loss").

    Args:
        pref_losses: [M] per-example losses of the preference term (from `kto_loss`,
            `dpo_loss` or `ipo_loss`).
        policy_logps: [N] log pi_theta(y|x) of every response in the batch, chosen and rejected
            alike (per-token mean or sum, as the caller chooses).
        rewards: [N] auxiliary reward r_a(x, y), already standardized and weighted; no grad.
        values: [N] V_psi(x) from the value head; trained only by the value loss.
        aux_coef: lambda, weight of the auxiliary term: a number, or [N] one per response (a
            steered run, `upo.data.steering`: each example's own lambda, so the term is
            -mean(aux_coef * weight * logp) and every example's loss is UPO's at its lambda).
        eta: AWR temperature.
        max_weight: clip of the AWR weights.
        tau: expectile of the value regression.

    Returns:
        `UPOLoss` with the total loss, each term, and the detached weights and advantages.
    """
    pref_loss = pref_losses.mean()  # 0-dim L_pref

    # A = r_a - V_psi(x), detached: the auxiliary term must not train the value head.
    advantages = (rewards - values).detach()  # [N]
    weights = awr_weights(advantages, eta=eta, max_weight=max_weight)  # [N]
    aux_losses = -weights * policy_logps  # [N] per-response -weight * logp
    aux_loss = aux_losses.mean()  # 0-dim L_aux = -mean(weight * logp)

    # L_V = mean(|tau - 1[u < 0]| * u^2), u = r_a - V_psi(x); gradient reaches the head only.
    value_loss = expectile_loss(rewards.detach() - values, tau=tau).mean()  # 0-dim

    if isinstance(aux_coef, Tensor):  # [N] per-example lambda (steered): mean(lambda_n * aux_n)
        policy_loss = pref_loss + (aux_coef * aux_losses).mean()
    else:  # with aux_coef == 0 skip the term entirely, so UPO reduces to its preference loss bitwise
        policy_loss = pref_loss if aux_coef == 0 else pref_loss + aux_coef * aux_loss
    return UPOLoss(
        loss=policy_loss + value_loss,
        policy_loss=policy_loss,
        pref_loss=pref_loss,
        aux_loss=aux_loss,
        value_loss=value_loss,
        weights=weights,
        advantages=advantages,
    )
