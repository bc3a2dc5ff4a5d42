"""Step adapters: a method's `StepInputs` + config -> `(loss, metrics)`, by calling its pure loss.

Here config becomes loss arguments and the metric names are made. Every step reports the standard
names (`rewards/*` are beta * logratio wherever a reference exists, `logps/*` summed) plus its own
under a method prefix. The preference steps (DPO, IPO, KTO, and `pair_step`'s for DPO's relatives),
the reference-free ones (SimPO, CPO, ORPO), `sft_step`, `csft_step` and `modpo_step` return per-example
losses (the method table averages them); the others return the batch loss. The pure losses are in
`upo.losses` (DPO, IPO, KTO, UPO), `upo.pair_losses` (hinge, robust, NCA, BCO, SPPO, APO, EXO,
DiscoPOP, AOT), `upo.reference_free_losses` (SimPO, CPO, ORPO: their `rewards/*` are beta * the policy's own
log-probs) and `upo.baseline_losses` (the baselines the paper compares against); which data each
method needs is in the table, `upo.methods.METHODS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from upo import baseline_losses, losses, pair_losses, reference_free_losses

if TYPE_CHECKING:
    from upo.forward import StepInputs

Metrics = dict[str, torch.Tensor]


# ---- the standard metric names ----------------------------------------------------------------


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


# ---- preference terms ---------------------------------------------------------------------------


def dpo_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    """DPO (f-DPO with another `f_divergence`); with `rpo_alpha` > 0, RPO (Pang et al. 2024): plus rpo_alpha times
    the chosen responses' per-token NLL."""
    pc, pr = split_pairs(x.policy_logps)
    rc, rr = split_pairs(x.reference_logps)
    per_pair, chosen_r, rejected_r = losses.dpo_loss(pc, pr, rc, rr, beta=cfg.beta, label_smoothing=cfg.label_smoothing,
                                                     f_divergence=cfg.f_divergence, f_alpha=cfg.f_alpha_divergence_coef)
    metrics = pair_metrics(chosen_r, rejected_r, pc, pr)
    if cfg.rpo_alpha > 0:
        nll = baseline_losses.sft_loss(split_pairs(x.policy_mean_logps)[0])  # [B]
        per_pair = per_pair + cfg.rpo_alpha * nll
        metrics["nll_loss"] = nll.detach().mean()
    return per_pair, metrics


def ipo_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    """IPO on summed log-ratios (the paper's equation), or with `ipo_per_token` on per-token means
    (each log-ratio over its response length: TRL 1.16's ipo)."""
    pc, pr = split_pairs(x.policy_logps)
    rc, rr = split_pairs(x.reference_logps)
    per_pair, chosen_r, rejected_r = losses.ipo_loss(pc, pr, rc, rr, beta=cfg.beta)
    if cfg.ipo_per_token:  # rewards/* stay beta * the summed log-ratios, as every method's (and held-out) are
        count = x.num_tokens.clamp(min=1)  # the summed log-probs (LD-DPO's, with ld_alpha) over the lengths
        means = (*split_pairs(x.policy_logps / count), *split_pairs(x.reference_logps / count))
        per_pair = losses.ipo_loss(*means, beta=cfg.beta)[0]
    return per_pair, pair_metrics(chosen_r, rejected_r, pc, pr)


def kto_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    per_example, rewards = losses.kto_loss(
        x.policy_logps,
        x.reference_logps,
        x.desirable,
        x.kto_reference_point,
        beta=cfg.beta,
        desirable_weight=cfg.desirable_weight,
        undesirable_weight=cfg.undesirable_weight,
    )
    metrics = unpaired_metrics(rewards, x.policy_logps, x.desirable)
    metrics["kto/kl"] = x.kto_reference_point
    return per_example, metrics


def apo_zero_unpaired_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    """APO-zero on unpaired examples (D'Oosterlinck et al. 2024; TRL's KTOTrainer loss_type apo_zero_unpaired):
    KTO's loss with its reference point fixed at 0, desirable 1 - s(beta logratio), undesirable s(beta logratio),
    so no mismatched sequences are needed."""
    zero = torch.zeros((), device=x.policy_logps.device)
    per_example, rewards = losses.kto_loss(x.policy_logps, x.reference_logps, x.desirable, zero, beta=cfg.beta,
                                           desirable_weight=cfg.desirable_weight,
                                           undesirable_weight=cfg.undesirable_weight)
    return per_example, unpaired_metrics(rewards, x.policy_logps, x.desirable)


def pair_step(loss, *keys):
    """The step of a pairwise loss of the four summed log-probs (`upo.pair_losses`): beta and the
    config keys `keys` (its keyword arguments of the same names) passed in; the standard pair metrics."""

    def step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
        pc, pr = split_pairs(x.policy_logps)
        rc, rr = split_pairs(x.reference_logps)
        per_pair, chosen_r, rejected_r = loss(pc, pr, rc, rr, beta=cfg.beta, **{k: getattr(cfg, k) for k in keys})
        return per_pair, pair_metrics(chosen_r, rejected_r, pc, pr)

    return step


def sigmoid_norm_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    """TRL's sigmoid_norm (`upo.pair_losses.sigmoid_norm_loss`): it needs each response's length too."""
    pc, pr = split_pairs(x.policy_logps)
    rc, rr = split_pairs(x.reference_logps)
    per_pair, chosen_r, rejected_r = pair_losses.sigmoid_norm_loss(
        pc, pr, rc, rr, *split_pairs(x.num_tokens), beta=cfg.beta, f_divergence=cfg.f_divergence,
        f_alpha=cfg.f_alpha_divergence_coef)
    return per_pair, pair_metrics(chosen_r, rejected_r, pc, pr)


def mix_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    """sum_k loss_mix[k] * (method k's batch loss), as TRL sums its loss_types with loss_weights. Each term's
    loss is `mix/<name>`; each standard metric is that of the first term that reports it, the terms with a
    reference first (their `rewards/*` are beta * log-ratios, as the held-out metrics' are)."""
    from upo.methods import METHODS  # the table imports this module

    total, metrics, terms = None, {}, {}
    for name, weight in cfg.loss_mix.items():
        loss, terms[name] = METHODS[name].loss(x, cfg)
        total = weight * loss if total is None else total + weight * loss
        metrics[f"mix/{name}"] = loss.detach()
    for name in sorted(terms, key=lambda name: not METHODS[name].uses_reference):  # stable: the mix's order
        metrics.update({key: value for key, value in terms[name].items() if key != "loss" and key not in metrics})
    metrics["loss"] = total.detach()
    return total, metrics


PREFERENCE_STEPS = {"dpo": dpo_step, "ipo": ipo_step, "kto": kto_step}


# ---- UPO ----------------------------------------------------------------------------------------


def upo_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    """Preference term (cfg.pref_loss) + aux_coef * advantage-weighted likelihood + value loss."""
    pref_losses, metrics = PREFERENCE_STEPS[cfg.pref_loss](x, cfg)
    out = _upo_loss(x, cfg, pref_losses)
    metrics.update(
        {
            "loss": out.loss.detach(),
            "upo/pref_loss": out.pref_loss.detach(),
            "upo/aux_loss": out.aux_loss.detach(),
            "upo/value_loss": out.value_loss.detach(),
            "upo/weight_mean": out.weights.mean(),
            "upo/weight_max": out.weights.max(),
            "upo/advantage_mean": out.advantages.mean(),
            "upo/reward_mean": x.rewards.mean(),
        }
    )
    if x.aux_coef is not None:  # a steered run: the batch's mean lambda
        metrics["upo/aux_coef_mean"] = x.aux_coef.mean()
    return out.loss, metrics


def upo_aux_metrics(x: StepInputs, cfg) -> Metrics:
    """UPO's auxiliary and value terms alone, for held-out pairs with a KTO preference term (pairs
    carry no mismatched sequences for KTO's reference point, so the preference term cannot run)."""
    out = _upo_loss(x, cfg, x.policy_logps.new_zeros(1))
    return {"upo/aux_loss": out.aux_loss, "upo/value_loss": out.value_loss, "upo/weight_mean": out.weights.mean()}


def _upo_loss(x: StepInputs, cfg, pref_losses: torch.Tensor) -> losses.UPOLoss:
    """UPO's loss at cfg.aux_coef, or at each example's own aux_coef in a steered run."""
    aux_logps = x.policy_mean_logps if cfg.aux_logp == "mean" else x.policy_logps
    aux_coef = x.aux_coef if x.aux_coef is not None else cfg.aux_coef
    return losses.upo_loss(pref_losses, aux_logps, x.rewards, x.values, aux_coef=aux_coef, eta=cfg.eta,
                           max_weight=cfg.max_weight, tau=cfg.tau)


# ---- baselines ----------------------------------------------------------------------------------


def _implicit_rewards(x: StepInputs, beta: float) -> torch.Tensor:
    """[N] beta * (log pi_theta - log pi_ref), detached: the reward every method logs."""
    return beta * (x.policy_logps - x.reference_logps).detach()


def sft_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    """NLL on the chosen half of a paired batch; the rejected half is only logged."""
    pc, pr = split_pairs(x.policy_logps)
    mean_chosen, _ = split_pairs(x.policy_mean_logps)
    per_pair = baseline_losses.sft_loss(mean_chosen)  # [B]
    return per_pair, {"logps/chosen": pc.detach().mean(), "logps/rejected": pr.detach().mean()}


def csft_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    """NLL of every response of an unpaired batch; the control token in its prompt carries the label."""
    per_example = baseline_losses.csft_loss(x.policy_mean_logps)  # [N]
    d, u = x.desirable.float(), (~x.desirable).float()
    logps = x.policy_logps.detach()
    return per_example, {"logps/chosen": masked_mean(logps, d), "logps/rejected": masked_mean(logps, u)}


# ---- reference-free preference losses (upo.reference_free_losses) ------------------------------


def simpo_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    pc, pr = split_pairs(x.policy_logps)
    mc, mr = (reference_free_losses.alphapo_reward(m, cfg.alphapo_alpha) for m in split_pairs(x.policy_mean_logps))
    per_pair, chosen_r, rejected_r = reference_free_losses.simpo_loss(
        mc, mr, beta=cfg.beta, gamma=cfg.simpo_gamma, label_smoothing=cfg.label_smoothing)
    return per_pair, pair_metrics(chosen_r, rejected_r, pc, pr)


def cpo_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    """CPO; with cpo_loss_type hinge or ipo, TRL's CPOTrainer's (ipo on per-token means, as TRL's)."""
    pc, pr = split_pairs(x.policy_logps)
    mc, mr = split_pairs(x.policy_mean_logps)
    compared = (mc, mr) if cfg.cpo_loss_type == "ipo" else (pc, pr)
    sc, sr = (reference_free_losses.alphapo_reward(p, cfg.alphapo_alpha) for p in compared)  # AlphaPO's shape
    per_pair, chosen_r, rejected_r, nll = reference_free_losses.cpo_loss(
        sc, sr, mc, beta=cfg.beta, alpha=cfg.cpo_alpha, label_smoothing=cfg.label_smoothing,
        loss_type=cfg.cpo_loss_type)
    metrics = pair_metrics(chosen_r, rejected_r, pc, pr)
    metrics["nll_loss"] = nll.mean()
    return per_pair, metrics


def orpo_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    pc, pr = split_pairs(x.policy_logps)
    out = reference_free_losses.orpo_loss(*split_pairs(x.policy_mean_logps), beta=cfg.beta)
    metrics = pair_metrics(out.chosen_rewards, out.rejected_rewards, pc, pr)
    metrics.update({"nll_loss": out.nll.mean(), "orpo/log_odds_ratio": out.log_odds_ratios.mean(),
                    "orpo/odds_ratio_loss": out.odds_ratio_losses.mean()})
    return out.losses, metrics


def modpo_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    pc, pr = split_pairs(x.policy_logps)
    rc, rr = split_pairs(x.reference_logps)
    ac, ar = split_pairs(x.rewards)
    per_pair, chosen_r, rejected_r = baseline_losses.modpo_loss(pc, pr, rc, rr, ac, ar, beta=cfg.beta, w0=cfg.modpo_w0)
    metrics = pair_metrics(chosen_r, rejected_r, pc, pr)
    metrics["modpo/aux_margin"] = (ac - ar).mean()
    return per_pair, metrics


def _actor_critic_metrics(prefix: str, x: StepInputs, out: baseline_losses.ActorCriticLoss, rewards: torch.Tensor,
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
        rewards = baseline_losses.label_rewards(x.desirable)  # [N] R = +1 / -1
        if with_aux_rewards:
            rewards = rewards + x.rewards  # aoPPO: R + r_a
        out = baseline_losses.oppo_loss(x.policy_mean_logps, x.reference_mean_logps(), rewards, x.values, clip=cfg.ppo_clip)
        return out.loss, _actor_critic_metrics("ppo", x, out, rewards, cfg)

    return ppo_step


oppo_step = _ppo_step(with_aux_rewards=False)
aoppo_step = _ppo_step(with_aux_rewards=True)


def alol_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    # R = +1 / -1 plus r_a (x.rewards is all zeros when no auxiliary reward is configured).
    rewards = baseline_losses.label_rewards(x.desirable) + x.rewards
    out = baseline_losses.alol_loss(x.policy_logps, x.reference_logps, rewards, x.values, clip=cfg.alol_clip)
    return out.loss, _actor_critic_metrics("alol", x, out, rewards, cfg)


def drov_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    """DRO-V with tau = beta: the same KL strength as every other method's implicit reward."""
    rewards = baseline_losses.label_rewards(x.desirable) + x.rewards  # r_a is zeros when none is configured
    per_example, residuals = baseline_losses.drov_loss(x.policy_logps, x.reference_logps, rewards, x.values, tau=cfg.beta)
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
