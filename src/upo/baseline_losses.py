"""Losses of the baselines UPO is compared against (UPO-METHOD.md, "Baselines the paper compares
against"), as pure functions of per-sequence log-probs, rewards and values, like `upo.losses`.

Shapes: B = preference pairs, N = sequences (responses). Log-probs are summed over the response
tokens unless a name says `mean` (per-token mean). Rewards arrive detached; values V_psi(x) come
from the value head, whose input is detached, so a value loss trains only the head.

    sft     L = -mean logp_theta(y_w|x)                                    (per token, chosen only)
    csft    L = -mean logp_theta(y|x, c_label)              (per token, every response, c = control token)
    oppo    L = -min(rho * A, clip(rho, 1-eps, 1+eps) * A) + (R - V)^2
            rho = exp(per-token mean logratio), A = R - V (detached)
    modpo   L = -log sigmoid((beta * h - (r_a(y_w) - r_a(y_l))) / w0)
    alol    L = -max(A, 0) * clip(pi_theta / pi_ref, 1-eps, 1+eps) * logp_theta  + (R - V)^2
    drov    L = (R - V - tau * logratio)^2 / 2

Label rewards R are +1 for desirable (chosen) and -1 for undesirable (rejected) responses
(`label_rewards`); methods that also optimize the auxiliary objectives add r_a to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def label_rewards(desirable: Tensor) -> Tensor:
    """The reward a binary label implies: desirable [N] bool -> [N] float32, +1 where True, -1 where False."""
    return desirable.float() * 2.0 - 1.0


def sft_loss(policy_chosen_mean_logps: Tensor) -> Tensor:
    """SFT on the chosen responses: per-example negative log-likelihood, per token.

    Args:
        policy_chosen_mean_logps: [B] per-token mean log pi_theta(y_w|x).

    Returns:
        [B] -mean_t log pi_theta(y_w,t | x, y_w,<t). The per-token mean keeps long and short
        responses on one scale, as UPO's auxiliary term does by default.
    """
    return -policy_chosen_mean_logps


def csft_loss(policy_mean_logps: Tensor) -> Tensor:
    """Conditional SFT (Korbak et al. 2023): NLL of every response, desirable and undesirable alike.

    Args:
        policy_mean_logps: [N] per-token mean log pi_theta(y|x, c), where the prompt x ends with the
            response's control token c (desirable or undesirable; `upo.data.control`).

    Returns:
        [N] -mean_t log pi_theta(y_t | x, c, y_<t). The label enters only through c: the model
        learns both behaviours and which token asks for which, and is sampled after c = desirable.
    """
    return -policy_mean_logps


def modpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    chosen_aux_rewards: Tensor,
    rejected_aux_rewards: Tensor,
    *,
    beta: float,
    w0: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """MODPO (Zhou et al. 2023, arXiv 2310.03708): DPO whose margin subtracts the auxiliary-reward gap.

    Args:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
        reference_rejected_logps: [B] each, summed log-probs as in `upo.losses.dpo_loss`.
        chosen_aux_rewards, rejected_aux_rewards: [B] r_a(x, y_w), r_a(x, y_l): the weighted sum of
            the auxiliary rewards, sum_k w_k r_k (MODPO's w_{-k}^T r_{-k}); no grad.
        beta: temperature of the implicit reward.
        w0: weight of the preference objective (MODPO's w_k, > 0).

    Returns:
        losses: [B] -log sigmoid((beta / w0) * h - (1 / w0) * (r_a(x,y_w) - r_a(x,y_l))),
            with h = logratio_w - logratio_l. With equal auxiliary rewards this is DPO at beta / w0.
        chosen_rewards, rejected_rewards: [B] beta * logratio, detached (DPO's implicit rewards, so
            `rewards/accuracies` means the same for every method).
    """
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # [B]
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # [B]
    aux_margins = chosen_aux_rewards - rejected_aux_rewards  # [B] sum_k w_k (r_k(x,y_w) - r_k(x,y_l))
    # MODPO's loss: the preference margin, minus the other objectives' margin, over w0.
    logits = (beta * (chosen_logratios - rejected_logratios) - aux_margins) / w0  # [B]
    losses = -F.logsigmoid(logits)  # [B]
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


@dataclass
class ActorCriticLoss:
    """The terms of one oPPO or A-LoL step; the 0-dim fields keep their graphs."""

    loss: Tensor  # 0-dim: policy_loss + value_loss (what the optimizer backpropagates)
    policy_loss: Tensor  # 0-dim mean of the per-example policy losses
    value_loss: Tensor  # 0-dim mean squared error (R - V)^2; gradient to the values only
    ratios: Tensor  # [N] detached policy / reference ratio before clipping (A-LoL's may be inf)
    weights: Tensor  # [N] detached ratio after clipping to [1 - clip, 1 + clip]
    advantages: Tensor  # [N] detached R - V


def oppo_loss(
    policy_mean_logps: Tensor,
    reference_mean_logps: Tensor,
    rewards: Tensor,
    values: Tensor,
    *,
    clip: float,
) -> ActorCriticLoss:
    """One-step offline PPO (oPPO; aoPPO when `rewards` include r_a), the UPO paper's baseline after
    the offline PPO with +1/-1 rewards of Ethayarajh et al. 2024 (arXiv 2402.01306).

    Every response is one action with a terminal reward R, so PPO's clipped surrogate (Schulman
    et al. 2017, eq. 7) is applied once per sequence, with the reference model standing in for the
    behaviour policy that produced the data:

        rho = exp(mean_t log pi_theta - mean_t log pi_ref)      # per-token mean log-ratio, see below
        A   = R - V(x)                                          # detached
        L   = -min(rho * A, clip(rho, 1 - clip, 1 + clip) * A) + (R - V(x))^2

    The ratio uses the *per-token mean* log-ratio (the geometric mean of the token ratios): the
    sequence ratio exp(sum_t ...) overflows, or clips on every example, after a few steps, since
    summed log-ratios of long responses reach tens of nats.

    Args:
        policy_mean_logps: [N] per-token mean log pi_theta(y|x) (with grad).
        reference_mean_logps: [N] per-token mean log pi_ref(y|x).
        rewards: [N] R: +1 / -1 from the label (oPPO), plus r_a for aoPPO; no grad.
        values: [N] V_psi(x) from the value head.
        clip: PPO's epsilon (0 < clip < 1).

    Returns:
        `ActorCriticLoss`. Where rho is 1 (policy = reference) the policy loss is exactly -A.
    """
    ratios = torch.exp(policy_mean_logps - reference_mean_logps)  # [N] rho, with grad
    advantages = (rewards - values).detach()  # [N] A = R - V(x)
    unclipped = ratios * advantages  # [N]
    clipped = ratios.clamp(1.0 - clip, 1.0 + clip) * advantages  # [N]
    # PPO eq. (7): the pessimistic (smaller) of the two surrogates, negated to a loss.
    policy_loss = -torch.min(unclipped, clipped).mean()
    value_loss = ((rewards.detach() - values) ** 2).mean()  # squared error to R: trains the head only
    return ActorCriticLoss(
        loss=policy_loss + value_loss,
        policy_loss=policy_loss,
        value_loss=value_loss,
        ratios=ratios.detach(),
        weights=ratios.detach().clamp(1.0 - clip, 1.0 + clip),
        advantages=advantages,
    )


def alol_loss(
    policy_logps: Tensor,
    reference_logps: Tensor,
    rewards: Tensor,
    values: Tensor,
    *,
    clip: float,
) -> ActorCriticLoss:
    """A-LoL (Baheti et al. 2023, arXiv 2305.14718): offline policy gradient on positive advantages.

    The whole response is one action. A-LoL's offline policy gradient, with its clipped sequence
    importance weight, is  E_{y ~ data}[ A * clip(pi_theta/pi_ref, 1-eps, 1+eps) * grad log pi_theta(y|x) ]
    over the examples with A > 0; as in the authors' code (github.com/abaheti95/LoL-RL) the weight
    is detached and the log-prob is the sequence sum:

        A   = R - V(x)                                                     # detached
        w   = clip(exp(logp_theta - logp_ref), 1 - clip, 1 + clip)         # detached, summed log-ratio
        L   = -mean( max(A, 0) * w * logp_theta(y|x) ) + mean( (R - V(x))^2 )

    Examples with A <= 0 contribute zero (A-LoL trains only on "leftover" positive-advantage data);
    the mean runs over all N, so a batch with few positive examples takes a smaller step.
    Differences from the paper: V is trained jointly here (on the policy's detached hidden state)
    instead of fitted once on the frozen reference beforehand, and positive-advantage examples are
    kept by masking rather than by priority sampling.

    Args:
        policy_logps: [N] summed log pi_theta(y|x) (with grad).
        reference_logps: [N] summed log pi_ref(y|x).
        rewards: [N] R: +1 / -1 from the label, plus r_a when auxiliary rewards are configured.
        values: [N] V_psi(x) from the value head.
        clip: epsilon of the importance-weight clip (0 < clip < 1; the authors' code uses 0.9).

    Returns:
        `ActorCriticLoss`; its policy loss is exactly 0 when every advantage is <= 0.
    """
    advantages = (rewards - values).detach()  # [N] A = R - V(x)
    ratios = torch.exp((policy_logps - reference_logps).detach())  # [N] may be 0 or inf: clipped next
    weights = ratios.clamp(1.0 - clip, 1.0 + clip)  # [N] clipped importance weight, no grad
    policy_loss = -(advantages.clamp(min=0) * weights * policy_logps).mean()  # only A > 0 contributes
    value_loss = ((rewards.detach() - values) ** 2).mean()
    return ActorCriticLoss(
        loss=policy_loss + value_loss,
        policy_loss=policy_loss,
        value_loss=value_loss,
        ratios=ratios,
        weights=weights,
        advantages=advantages,
    )


def drov_loss(
    policy_logps: Tensor,
    reference_logps: Tensor,
    rewards: Tensor,
    values: Tensor,
    *,
    tau: float,
) -> tuple[Tensor, Tensor]:
    """DRO-V (Richemond et al. 2024, arXiv 2405.19107): direct reward optimisation with a value net.

    The KL-regularized optimum satisfies r(x,y) = V(x) + tau * log(pi*(y|x) / pi_ref(y|x)) for
    every (x, y), V being the soft value; DRO fits policy and value to that identity on single
    (x, y, r) examples by least squares:

        L = 1/2 * (r(x,y) - V(x) - tau * (logp_theta(y|x) - logp_ref(y|x)))^2

    with the gradient going to both the policy and V. Autodiff of this loss gives the policy the
    paper's update scaled by tau; Adam and RMSprop are invariant to that constant factor.

    Args:
        policy_logps: [N] summed log pi_theta(y|x) (with grad).
        reference_logps: [N] summed log pi_ref(y|x).
        rewards: [N] r(x, y): +1 / -1 from the label, plus r_a when auxiliary rewards are configured.
        values: [N] V(x) from the value head (with grad).
        tau: KL regularization strength (> 0).

    Returns:
        losses: [N] 1/2 * residual^2.
        residuals: [N] r - V - tau * logratio, detached.
    """
    residuals = rewards - values - tau * (policy_logps - reference_logps)  # [N]
    return 0.5 * residuals**2, residuals.detach()
