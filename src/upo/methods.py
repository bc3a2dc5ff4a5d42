"""The method table: one entry per training method.

Each entry says what a batch must hold (paired or unpaired sequences), which extra pieces the
training loop must provide (reference log-probs, KTO's reference point, the value head, auxiliary
rewards), and a function that turns a `StepInputs` (`upo.step`) into `(loss, metrics)` by calling
the pure losses in `upo.losses` (DPO, IPO, KTO, UPO) or `upo.baselines` (the baselines the paper
compares against; their step functions live in `upo.baseline_methods`). Adding a method is one loss
function plus one entry here; the training loop never branches on method names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from upo import baseline_methods, losses
from upo.step import Metrics, StepInputs, pair_metrics, split_pairs, unpaired_metrics


@dataclass(frozen=True)
class Method:
    name: str
    # "paired", "unpaired", or "pref" = follows cfg.pref_loss (kto -> unpaired, dpo/ipo -> paired)
    data: str
    loss: Callable[[StepInputs, object], tuple[torch.Tensor, Metrics]]
    uses_reference: bool = True
    uses_value_head: bool = False
    uses_rewards: bool = False  # needs auxiliary rewards: configuring none is an error
    accepts_rewards: bool = False  # adds r_a to its reward when auxiliary rewards are configured (optional)
    needs_kto_reference_point: bool = False  # KTO's z0 from mismatched pairs (the "pref" methods: when kto)
    control_tokens: bool = False  # CSFT: prompts end with a desirable/undesirable token (upo.data.control)
    summary: str = ""


# ---- preference terms ---------------------------------------------------------------------------


def dpo_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    pc, pr = split_pairs(x.policy_logps)
    rc, rr = split_pairs(x.reference_logps)
    per_pair, chosen_r, rejected_r = losses.dpo_loss(pc, pr, rc, rr, beta=cfg.beta, label_smoothing=cfg.label_smoothing)
    return per_pair, pair_metrics(chosen_r, rejected_r, pc, pr)


def ipo_step(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
    pc, pr = split_pairs(x.policy_logps)
    rc, rr = split_pairs(x.reference_logps)
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
    """Turn a per-example step (preference terms, SFT, MODPO) into a method: the loss is the batch mean."""

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
    # ---- baselines the paper compares against (pure losses in upo.baselines) ----
    "sft": Method(
        "sft",
        "paired",
        _mean_loss(baseline_methods.sft_step),
        uses_reference=False,
        summary="SFT: per-token NLL of the chosen responses",
    ),
    "csft": Method(
        "csft",
        "unpaired",
        _mean_loss(baseline_methods.csft_step),
        uses_reference=False,
        control_tokens=True,
        summary="conditional SFT: NLL of every response after its desirable/undesirable control token",
    ),
    "oppo": Method(
        "oppo",
        "unpaired",
        baseline_methods.oppo_step,
        uses_value_head=True,
        summary="one-step offline PPO, reward +1/-1 from the label",
    ),
    "aoppo": Method(
        "aoppo",
        "unpaired",
        baseline_methods.aoppo_step,
        uses_value_head=True,
        uses_rewards=True,
        summary="offline PPO with the label reward plus the auxiliary reward r_a",
    ),
    "modpo": Method(
        "modpo",
        "paired",
        _mean_loss(baseline_methods.modpo_step),
        uses_rewards=True,
        summary="MODPO, Zhou et al. 2023: DPO margin minus the auxiliary-reward margin",
    ),
    "alol": Method(
        "alol",
        "unpaired",
        baseline_methods.alol_step,
        uses_value_head=True,
        accepts_rewards=True,
        summary="A-LoL, Baheti et al. 2023: positive-advantage offline policy gradient",
    ),
    "drov": Method(
        "drov",
        "unpaired",
        baseline_methods.drov_step,
        uses_value_head=True,
        accepts_rewards=True,
        summary="DRO-V, Richemond et al. 2024: squared loss on r - V(x) - tau * logratio",
    ),
}


def batch_format(method: Method, pref_loss: str) -> str:
    """'paired' or 'unpaired': what the method's training batches hold."""
    if method.data == "pref":
        return "unpaired" if pref_loss == "kto" else "paired"
    return method.data


def needs_kto_reference_point(method: Method, pref_loss: str) -> bool:
    return method.needs_kto_reference_point or (method.data == "pref" and pref_loss == "kto")
