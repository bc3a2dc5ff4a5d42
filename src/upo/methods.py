"""The method table: one entry per training method, and nothing else.

Each entry says what a batch must hold (paired or unpaired sequences), which extra pieces the
training loop must provide (reference log-probs, KTO's reference point, the value head, auxiliary
rewards), its step: a function that turns a `StepInputs` (`upo.forward`) into `(loss, metrics)`
(`upo.steps`, which call the pure losses in `upo.losses` and `upo.baseline_losses`), and what the
held-out metrics and a frontier sweep need to know about it, and which config keys its step reads
(setting another method's hyperparameter is a config error). Adding a method is one loss function,
one step and one entry here; no other code branches on method names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from upo import pair_losses as pl
from upo import steps
from upo.steps import Metrics

if TYPE_CHECKING:
    from upo.forward import StepInputs


@dataclass(frozen=True)
class Method:
    name: str
    # "paired", "unpaired", or "pref" = follows cfg.pref_loss (kto -> unpaired, dpo/ipo -> paired)
    data: str
    loss: Callable[[StepInputs, object], tuple[torch.Tensor, Metrics]]
    uses_reference: bool = True  # (a mix: whether a term does; `uses_reference`)
    uses_value_head: bool = False
    uses_rewards: bool = False  # needs auxiliary rewards: configuring none is an error
    accepts_rewards: bool = False  # adds r_a to its reward when auxiliary rewards are configured (optional)
    needs_kto_reference_point: bool = False  # KTO's z0 from mismatched pairs (the "pref" methods: when kto)
    control_tokens: bool = False  # CSFT: prompts end with a desirable/undesirable token (upo.data.control)
    # steer_aux_coefs / steer_reward_mixes may train one policy conditioned on aux_coef or the reward
    # mix (upo.data.steering): its step reads each example's StepInputs.aux_coef in place of
    # cfg.aux_coef, and its rewards (each example's mix's r_a).
    steerable: bool = False
    # Held-out metrics when the loss cannot run: with a KTO term, held-out pairs lack the mismatched
    # sequences of its reference point (upo.heldout_metrics); None = only the implicit rewards.
    partial_eval: Callable[[StepInputs, object], Metrics] | None = None
    # What a frontier sweep (upo.frontier) needs: the config key that sets the auxiliary objective's
    # strength (None: the sweep scales the reward weights, the one knob of a baseline given r_a), and
    # the method's group (None: "auxiliary" when given r_a or relabelled pairs, else "preference").
    aux_strength_key: str | None = None
    frontier_group: str | None = None
    # The config keys its step reads (for the "pref" methods, with those of cfg.pref_loss's term:
    # `config_reads`). A key some method reads and this run's does not is refused when set (UPOConfig)
    # and dropped from a sweep's base (upo.frontier); tests/test_steps.py checks the list against the step.
    reads: tuple[str, ...] = ()
    # Sums other methods' batch losses, each times its weight in cfg.loss_mix (`mix`); it reads theirs
    # keys too (`config_reads`). Its terms: the `mixable` methods.
    mixes: bool = False
    # Its step returns one loss per pair, which WPO's pair weights can scale (wpo_weighting: TRL's
    # use_weighting, on its DPOTrainer's losses but AOT's, whose per-pair losses are of sorted margins).
    pair_weighting: bool = False
    # A reference-free loss of summed log-probs (CPO's reward): LD-DPO's weights, meant for log-ratios, would reach it.
    reference_free_sums: bool = False
    summary: str = ""


def _mean_loss(step):
    """Turn a per-example step (preference terms, SFT, MODPO) into a method: the loss is the batch mean."""

    def method_loss(x: StepInputs, cfg) -> tuple[torch.Tensor, Metrics]:
        per_example, metrics = step(x, cfg)
        if x.pair_weights is not None:  # WPO (validated: methods with pair_weighting only)
            per_example = per_example * x.pair_weights
            metrics["wpo/weights"] = x.pair_weights.mean()
        loss = per_example.mean()
        metrics["loss"] = loss.detach()
        return loss, metrics

    return method_loss


def _pair(name: str, loss, *keys: str, summary: str, pair_weighting: bool = True) -> dict[str, Method]:
    """The entry of a pairwise loss of `upo.pair_losses`: it reads beta and `keys`."""
    return {name: Method(name, "paired", _mean_loss(steps.pair_step(loss, *keys)), reads=("beta", *keys),
                         pair_weighting=pair_weighting, summary=summary)}


METHODS: dict[str, Method] = {
    "dpo": Method("dpo", "paired", _mean_loss(steps.dpo_step),
                  reads=("beta", "label_smoothing", "rpo_alpha", "f_divergence", "f_alpha_divergence_coef"),
                  pair_weighting=True,
                  summary="DPO, Rafailov et al. 2023 (RPO, Pang et al. 2024, with rpo_alpha; f-DPO, Wang et al. 2023, "
                          "with f_divergence)"),
    "ipo": Method("ipo", "paired", _mean_loss(steps.ipo_step), reads=("beta", "ipo_per_token"), pair_weighting=True,
                  summary="IPO, Azar et al. 2023"),
    # ---- DPO's relatives (upo.pair_losses; TRL's DPOTrainer loss_types of the same names) ----
    **_pair("hinge", pl.hinge_loss, summary="SLiC's hinge on DPO's margin, Zhao et al. 2023"),
    **_pair("robust", pl.robust_dpo_loss, "label_smoothing",
            summary="robust DPO under label noise (label_smoothing = flip rate), Chowdhury et al. 2024"),
    **_pair("nca_pair", pl.nca_pair_loss, summary="NCA on pairs, Chen et al. 2024: keeps the chosen likelihood up"),
    **_pair("bco_pair", pl.bco_pair_loss, summary="BCO on pairs, Jung et al. 2024: chosen vs rejected classifier"),
    **_pair("sppo_hard", pl.sppo_hard_loss, summary="SPPO with hard labels, Wu et al. 2024"),
    **_pair("apo_zero", pl.apo_zero_loss,
            summary="APO-zero, D'Oosterlinck et al. 2024: chosen up, rejected down (chosen better than the model)"),
    **_pair("apo_down", pl.apo_down_loss,
            summary="APO-down, D'Oosterlinck et al. 2024: both down, rejected more (chosen worse than the model)"),
    **_pair("exo_pair", pl.exo_pair_loss, "exo_epsilon", summary="EXO on pairs, Ji et al. 2024: reverse-KL DPO"),
    **_pair("discopop", pl.discopop_loss, "discopop_tau",
            summary="DiscoPOP, Lu et al. 2024: logistic below a zero margin, exponential above"),
    **_pair("aot", pl.aot_loss, "label_smoothing", pair_weighting=False,
            summary="AOT, Melnyk et al. 2024: DPO on the batch's sorted margins against the reference's"),
    **_pair("aot_unpaired", pl.aot_unpaired_loss, "label_smoothing", pair_weighting=False,
            summary="AOT unpaired, Melnyk et al. 2024: DPO on sorted chosen against sorted rejected log-ratios"),
    "sigmoid_norm": Method("sigmoid_norm", "paired", _mean_loss(steps.sigmoid_norm_step),
                           reads=("beta", "f_divergence", "f_alpha_divergence_coef"), pair_weighting=True,
                           summary="TRL's sigmoid_norm: DPO on per-token (length-normalized) log-ratios"),
    "kto": Method("kto", "unpaired", _mean_loss(steps.kto_step), needs_kto_reference_point=True,
                  reads=("beta", "desirable_weight", "undesirable_weight"), summary="KTO, Ethayarajh et al. 2024"),
    "apo_zero_unpaired": Method("apo_zero_unpaired", "unpaired", _mean_loss(steps.apo_zero_unpaired_step),
                                reads=("beta", "desirable_weight", "undesirable_weight"),
                                summary="APO-zero on unpaired examples: KTO with its reference point at 0"),
    "upo": Method(
        "upo",
        "pref",
        steps.upo_step,
        uses_value_head=True,
        uses_rewards=True,
        partial_eval=steps.upo_aux_metrics,
        steerable=True,
        aux_strength_key="aux_coef",
        frontier_group="upo",
        reads=("pref_loss", "aux_coef", "eta", "max_weight", "tau", "aux_logp"),
        summary="UPO, Badrinath et al. 2024: preference term + advantage-weighted auxiliary term",
    ),
    "mix": Method("mix", "paired", steps.mix_step, reads=("loss_mix",), mixes=True, uses_reference=False,  # its terms
                  summary="a weighted sum of paired methods' losses (loss_mix; TRL's loss_type list, e.g. MPO)"),
    # ---- reference-free preference losses (upo.reference_free_losses): no reference model ----
    "simpo": Method("simpo", "paired", _mean_loss(steps.simpo_step), uses_reference=False,
                    reads=("beta", "simpo_gamma", "label_smoothing", "alphapo_alpha"),
                    summary="SimPO, Meng et al. 2024: length-normalized reward with a target margin"),
    "cpo": Method("cpo", "paired", _mean_loss(steps.cpo_step), uses_reference=False, reference_free_sums=True,
                  reads=("beta", "cpo_alpha", "cpo_loss_type", "label_smoothing", "alphapo_alpha"),
                  summary="CPO, Xu et al. 2024: reference-free DPO plus the chosen responses' NLL"),
    "orpo": Method("orpo", "paired", _mean_loss(steps.orpo_step), uses_reference=False, reads=("beta",),
                   summary="ORPO, Hong et al. 2024: NLL plus beta (ORPO's lambda) times an odds-ratio loss"),
    # ---- baselines the paper compares against (pure losses in upo.baseline_losses) ----
    "sft": Method(
        "sft",
        "paired",
        _mean_loss(steps.sft_step),
        uses_reference=False,
        pair_weighting=True,
        summary="SFT: per-token NLL of the chosen responses",
    ),
    "csft": Method(
        "csft",
        "unpaired",
        _mean_loss(steps.csft_step),
        uses_reference=False,
        control_tokens=True,
        summary="conditional SFT: NLL of every response after its desirable/undesirable control token",
    ),
    "oppo": Method(
        "oppo",
        "unpaired",
        steps.oppo_step,
        uses_value_head=True,
        reads=("beta", "ppo_clip"),
        summary="one-step offline PPO, reward +1/-1 from the label",
    ),
    "aoppo": Method(
        "aoppo",
        "unpaired",
        steps.aoppo_step,
        uses_value_head=True,
        uses_rewards=True,
        reads=("beta", "ppo_clip"),
        summary="offline PPO with the label reward plus the auxiliary reward r_a",
    ),
    "modpo": Method(
        "modpo",
        "paired",
        _mean_loss(steps.modpo_step),
        uses_rewards=True,
        reads=("beta", "modpo_w0"),
        summary="MODPO, Zhou et al. 2023: DPO margin minus the auxiliary-reward margin",
    ),
    "alol": Method(
        "alol",
        "unpaired",
        steps.alol_step,
        uses_value_head=True,
        accepts_rewards=True,
        reads=("beta", "alol_clip"),
        summary="A-LoL, Baheti et al. 2023: positive-advantage offline policy gradient",
    ),
    "drov": Method(
        "drov",
        "unpaired",
        steps.drov_step,
        uses_value_head=True,
        accepts_rewards=True,
        reads=("beta",),
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


def config_reads(method: Method, pref_loss: str, loss_mix: dict[str, float] | None = None) -> tuple[str, ...]:
    """The config keys a run of `method` reads in its step: its own, for the "pref" methods those of
    the preference term `pref_loss`, and for a mix those of its terms (`loss_mix`'s methods)."""
    terms = [METHODS[pref_loss]] if method.data == "pref" and pref_loss in METHODS else []
    if method.mixes:
        terms = [METHODS[name] for name in loss_mix or {} if name in METHODS]
    return tuple(dict.fromkeys(method.reads + tuple(key for term in terms for key in term.reads)))


def uses_reference(method: Method, loss_mix: dict[str, float] | None = None) -> bool:
    """Whether a run of `method` needs the reference's log-probs: a mix if one of its terms does."""
    if method.mixes:
        return any(METHODS[name].uses_reference for name in loss_mix or {} if name in METHODS)
    return method.uses_reference


def unread_setting_keys(method: Method, pref_loss: str, loss_mix: dict[str, float] | None = None,
                        aux_logp: str = "mean", cpo_loss_type: str = "sigmoid") -> dict[str, str]:
    """Keys a run of `method` cannot take given its other settings -> why: LD-DPO's `ld_alpha`, WPO's
    `wpo_weighting`, and `label_smoothing` where only a CPO term of another loss_type than sigmoid reads it.

    ld_alpha weighs the summed log-probs of pairs, meant for their log-ratios: a paired run with a
    reference, none of whose summed log-probs serve anything else (a mix's CPO term, UPO's auxiliary
    term with aux_logp sum). wpo_weighting scales one loss per pair: methods with `pair_weighting`,
    a mix if every term has it."""
    terms = [METHODS[name] for name in loss_mix or {} if name in METHODS] if method.mixes else [method]
    unread = {}
    smoothing = [term for term in terms if "label_smoothing" in term.reads]
    if cpo_loss_type != "sigmoid" and smoothing and all("cpo_loss_type" in term.reads for term in smoothing):
        unread["label_smoothing"] = f"cpo_loss_type {cpo_loss_type} does not smooth labels (sigmoid does)"
    if batch_format(method, pref_loss) != "paired" or not uses_reference(method, loss_mix):
        unread["ld_alpha"] = (f"method {method.name!r} has no log-ratios of pairs: LD-DPO weighs the tokens past a "
                              "pair's shared length in the summed log-probs of paired methods with a reference")
    elif any(term.reference_free_sums for term in terms) or ("aux_logp" in method.reads and aux_logp == "sum"):
        unread["ld_alpha"] = ("LD-DPO's weights would reach summed log-probs that are not log-ratios (a CPO term's "
                              "reward, UPO's auxiliary term with aux_logp: sum)")
    if not (terms and all(term.pair_weighting for term in terms)):
        unread["wpo_weighting"] = (f"method {method.name!r} has no per-pair loss WPO's weights can scale (those that "
                                   "have one: DPO's family but aot and aot_unpaired, sft, a mix of them)")
    return unread


def mixable() -> tuple[str, ...]:
    """The methods a mix can sum: the paired ones computed from the batch alone (no value head, no
    auxiliary rewards), not a mix themselves."""
    return tuple(name for name, m in METHODS.items()
                 if m.data == "paired" and not (m.uses_value_head or m.uses_rewards or m.mixes))


def method_keys() -> tuple[str, ...]:
    """The method-specific config keys: those some method's step reads."""
    return tuple(sorted({key for m in METHODS.values() for key in m.reads}))


def unread_method_keys(method: str, pref_loss: str, loss_mix: dict[str, float] | None = None) -> tuple[str, ...]:
    """The method-specific keys that a run of `method` (with `pref_loss`, `loss_mix`) does not read;
    () for a method the table lacks (its config fails on the name)."""
    if method not in METHODS:
        return ()
    reads = config_reads(METHODS[method], pref_loss, loss_mix)
    return tuple(key for key in method_keys() if key not in reads)


def method_readers(key: str) -> list[str]:
    """Who reads config key `key`: method names, and e.g. "upo with pref_loss dpo" for a key of a
    preference term."""
    from upo.config import PREFERENCE_TERMS

    readers = []
    for name, m in METHODS.items():
        if key in m.reads:
            readers.append(name)
        elif m.data == "pref":
            terms = [t for t in PREFERENCE_TERMS if key in config_reads(m, t)]
            if len(terms) == len(PREFERENCE_TERMS):
                readers.append(name)
            elif terms:
                readers.append(f"{name} with pref_loss {' or '.join(terms)}")
    return readers
