"""Step functions of the baselines: `StepInputs` + config -> the pure losses in `upo.baselines`.

`sft_step` and `modpo_step` return per-pair losses, like the preference steps in `upo.methods`
(the table averages them); the others return the batch loss. Every step reports the standard
metric names (`rewards/*` are beta * logratio wherever a reference exists, `logps/*` summed) plus
its own under a method prefix. The entries of `upo.methods.METHODS` say which data each needs.
"""

from __future__ import annotations

import torch

from upo import baselines
from upo.step import Metrics, StepInputs, masked_mean, pair_metrics, split_pairs, unpaired_metrics


def _implicit_rewards(x: StepInputs, beta: float) -> torch.Tensor:
    """[N] beta * (log pi_theta - log pi_ref), detached: the reward every method logs."""
    return beta * (x.policy_logps - x.reference_logps).detach()


def sft_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    """NLL on the chosen half of a paired batch; the rejected half is only logged."""
    pc, pr = split_pairs(x.policy_logps)
    mean_chosen, _ = split_pairs(x.policy_mean_logps)
    per_pair = baselines.sft_loss(mean_chosen)  # [B]
    return per_pair, {"logps/chosen": pc.detach().mean(), "logps/rejected": pr.detach().mean()}


def csft_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    """NLL of every response of an unpaired batch; the control token in its prompt carries the label."""
    per_example = baselines.csft_loss(x.policy_mean_logps)  # [N]
    d, u = x.desirable.float(), (~x.desirable).float()
    logps = x.policy_logps.detach()
    return per_example, {"logps/chosen": masked_mean(logps, d), "logps/rejected": masked_mean(logps, u)}


def modpo_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    pc, pr = split_pairs(x.policy_logps)
    rc, rr = split_pairs(x.reference_logps)
    ac, ar = split_pairs(x.rewards)
    per_pair, chosen_r, rejected_r = baselines.modpo_loss(pc, pr, rc, rr, ac, ar, beta=cfg.beta, w0=cfg.modpo_w0)
    metrics = pair_metrics(chosen_r, rejected_r, pc, pr)
    metrics["modpo/aux_margin"] = (ac - ar).mean()
    return per_pair, metrics


def _actor_critic_metrics(prefix: str, x: StepInputs, out: baselines.ActorCriticLoss, rewards: torch.Tensor,
                          cfg) -> Metrics:
    metrics = unpaired_metrics(_implicit_rewards(x, cfg.beta), x.policy_logps, x.desirable)
    metrics.update(
        {
            "loss": out.loss.detach(),
            f"{prefix}/policy_loss": out.policy_loss.detach(),
            f"{prefix}/value_loss": out.value_loss.detach(),
            # the clipped ratio: A-LoL's unclipped sequence ratio can overflow to inf
            f"{prefix}/weight_mean": out.weights.mean(),
            f"{prefix}/clip_fraction": (out.weights != out.ratios).float().mean(),
            f"{prefix}/advantage_mean": out.advantages.mean(),
            f"{prefix}/positive_fraction": (out.advantages > 0).float().mean(),
            f"{prefix}/value_mean": x.values.detach().mean(),
            f"{prefix}/reward_mean": rewards.mean(),
        }
    )
    return metrics


def _ppo_step(with_aux_rewards: bool):
    """oPPO (label reward only) or aoPPO (label reward + r_a)."""

    def ppo_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
        rewards = baselines.label_rewards(x.desirable)  # [N] R = +1 / -1
        if with_aux_rewards:
            rewards = rewards + x.rewards  # aoPPO: R + r_a
        out = baselines.oppo_loss(x.policy_mean_logps, x.reference_mean_logps(), rewards, x.values, clip=cfg.ppo_clip)
        return out.loss, _actor_critic_metrics("ppo", x, out, rewards, cfg)

    return ppo_step


oppo_step = _ppo_step(with_aux_rewards=False)
aoppo_step = _ppo_step(with_aux_rewards=True)


def alol_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    # R = +1 / -1 plus r_a (x.rewards is all zeros when no auxiliary reward is configured).
    rewards = baselines.label_rewards(x.desirable) + x.rewards
    out = baselines.alol_loss(x.policy_logps, x.reference_logps, rewards, x.values, clip=cfg.alol_clip)
    return out.loss, _actor_critic_metrics("alol", x, out, rewards, cfg)


def drov_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    """DRO-V with tau = beta: the same KL strength as every other method's implicit reward."""
    rewards = baselines.label_rewards(x.desirable) + x.rewards  # r_a is zeros when none is configured
    per_example, residuals = baselines.drov_loss(x.policy_logps, x.reference_logps, rewards, x.values, tau=cfg.beta)
    loss = per_example.mean()
    metrics = unpaired_metrics(_implicit_rewards(x, cfg.beta), x.policy_logps, x.desirable)
    metrics.update(
        {
            "loss": loss.detach(),
            "dro/residual_mean": residuals.mean(),
            "dro/residual_abs_mean": residuals.abs().mean(),
            "dro/value_mean": x.values.detach().mean(),
            "dro/reward_mean": rewards.mean(),
        }
    )
    return loss, metrics
