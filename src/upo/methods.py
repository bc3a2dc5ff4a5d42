"""The method table: one entry per training method.

Each entry says what a batch must hold (paired or unpaired sequences), which extra pieces the
training loop must provide (reference log-probs, KTO's reference point, the value head, auxiliary
rewards), and a function that turns a `StepInputs` into `(loss, metrics)` by calling the pure
losses in `upo.losses`. Adding a method is one loss function plus one entry here; the training
loop never branches on method names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from upo import losses

Metrics = dict[str, torch.Tensor]


@dataclass
class StepInputs:
    """Everything a method's loss may need, for N sequences of one micro-batch.

    Paired batches hold B pairs as N = 2B rows: rows [0, B) are chosen, rows [B, 2B) rejected.
    """

    policy_logps: torch.Tensor  # [N] summed completion log-probs (with grad)
    policy_mean_logps: torch.Tensor  # [N] per-token mean (with grad)
    reference_logps: torch.Tensor | None  # [N] (no grad)
    desirable: torch.Tensor  # [N] bool
    rewards: torch.Tensor  # [N] auxiliary reward r_a (standardized, weighted); zeros if none
    values: torch.Tensor | None = None  # [N] V_psi(x) (grad to the value head only)
    kto_reference_point: torch.Tensor | None = None  # 0-dim, detached, clamped, all-reduced by the loop


@dataclass(frozen=True)
class Method:
    name: str
    # "paired", "unpaired", or "pref" = follows cfg.pref_loss (kto -> unpaired, dpo/ipo -> paired)
    data: str
    loss: Callable[[StepInputs, object], tuple[torch.Tensor, Metrics]]
    uses_reference: bool = True
    uses_value_head: bool = False
    uses_rewards: bool = False
    needs_kto_reference_point: bool = False  # KTO's z0 from mismatched pairs (the "pref" methods: when kto)
    summary: str = ""


# ---- shared metric helpers ----------------------------------------------------------------------


def _split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    half = x.shape[0] // 2
    return x[:half], x[half:]


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
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
    chosen, rejected = _masked_mean(rewards, d), _masked_mean(rewards, u)
    return {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
        "logps/chosen": _masked_mean(policy_logps.detach(), d),
        "logps/rejected": _masked_mean(policy_logps.detach(), u),
    }


# ---- preference terms ---------------------------------------------------------------------------


def dpo_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    pc, pr = _split(x.policy_logps)
    rc, rr = _split(x.reference_logps)
    per_pair, chosen_r, rejected_r = losses.dpo_loss(pc, pr, rc, rr, beta=cfg.beta, label_smoothing=cfg.label_smoothing)
    return per_pair, pair_metrics(chosen_r, rejected_r, pc, pr)


def ipo_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    pc, pr = _split(x.policy_logps)
    rc, rr = _split(x.reference_logps)
    per_pair, chosen_r, rejected_r = losses.ipo_loss(pc, pr, rc, rr, beta=cfg.beta)
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


PREFERENCE_STEPS = {"dpo": dpo_step, "ipo": ipo_step, "kto": kto_step}


def _mean_loss(step):
    """Turn a per-example preference step into a method: the loss is the batch mean."""

    def method_loss(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
        per_example, metrics = step(x, cfg)
        loss = per_example.mean()
        metrics["loss"] = loss.detach()
        return loss, metrics

    return method_loss


# ---- UPO ----------------------------------------------------------------------------------------


def upo_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    """Preference term (cfg.pref_loss) + aux_coef * advantage-weighted likelihood + value loss."""
    pref_losses, metrics = PREFERENCE_STEPS[cfg.pref_loss](x, cfg)
    aux_logps = x.policy_mean_logps if cfg.aux_logp == "mean" else x.policy_logps
    out = losses.upo_loss(
        pref_losses,
        aux_logps,
        x.rewards,
        x.values,
        aux_coef=cfg.aux_coef,
        eta=cfg.eta,
        max_weight=cfg.max_weight,
        tau=cfg.tau,
    )
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
    return out.loss, metrics


METHODS: dict[str, Method] = {
    "dpo": Method("dpo", "paired", _mean_loss(dpo_step), summary="DPO, Rafailov et al. 2023"),
    "ipo": Method("ipo", "paired", _mean_loss(ipo_step), summary="IPO, Azar et al. 2023"),
    "kto": Method("kto", "unpaired", _mean_loss(kto_step), needs_kto_reference_point=True, summary="KTO, Ethayarajh et al. 2024"),
    "upo": Method(
        "upo",
        "pref",
        upo_step,
        uses_value_head=True,
        uses_rewards=True,
        summary="UPO, Badrinath et al. 2024: preference term + advantage-weighted auxiliary term",
    ),
}


def batch_format(method: Method, pref_loss: str) -> str:
    """'paired' or 'unpaired': what the method's training batches hold."""
    if method.data == "pref":
        return "unpaired" if pref_loss == "kto" else "paired"
    return method.data


def needs_kto_reference_point(method: Method, pref_loss: str) -> bool:
    return method.needs_kto_reference_point or (method.data == "pref" and pref_loss == "kto")
