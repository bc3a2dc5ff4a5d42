"""`upo from-trl`, what a TRL config trains: the upo method of its trainer and loss settings
(loss_type and loss_weights, f-divergence, AlphaPO, TR-DPO), each a handler of `upo.trl_config`'s
translation that reads TRL's effective values and sets upo's keys, with a note or a refusal where
TRL's run and upo's would differ."""

from __future__ import annotations

from typing import TYPE_CHECKING

from upo.trl_keys import TRAINERS, as_number

if TYPE_CHECKING:
    from upo.trl_config import Context


def method(ctx: Context) -> None:
    """The method from the trainer and its loss_type (loss_weights: RPO)."""
    out, trainer, effective = ctx.out, ctx.trainer, ctx.effective
    for key, trainers in (("loss_type", ("dpo", "kto", "cpo")), ("loss_weights", ("dpo",)), ("alpha", ("cpo",))):
        if key in ctx.given and trainer not in trainers:
            ctx.refuse(key, f"not a key of TRL 1.16's {TRAINERS[trainer]} config")
            effective.pop(key)
    types_ = ctx.words("loss_type")
    weights = effective.get("loss_weights")
    if types_ is None:
        return
    if weights is not None and (not isinstance(weights, list) or len(weights) != len(types_)):
        ctx.refuse("loss_weights", f"{weights!r}: one weight per loss_type ({types_})")
        return
    where = ctx.origin("loss_type") if "loss_type" in ctx.given else f"TRL's {TRAINERS[trainer]}"
    if trainer == "dpo":
        _dpo_loss(ctx, types_ or ["sigmoid"], weights, where)
    elif trainer == "kto":
        if types_ in ([], ["kto"], ["apo_zero_unpaired"]):
            out.set("method", (types_ or ["kto"])[0], where)
        else:
            ctx.refuse("loss_type", f"{effective.get('loss_type')!r}: upo translates KTOTrainer's kto and "
                       "apo_zero_unpaired")
    elif trainer == "cpo":
        alpha = ctx.number("alpha") if "alpha" in effective else 0.0
        if alpha not in (None, 0.0):  # AlphaPO's reward shape, on CPO's and SimPO's reward alike
            out.set("alphapo_alpha", alpha, ctx.origin("alpha") + " (AlphaPO)")
            if alpha > 0 and types_ in ([], ["sigmoid"], ["hinge"]):
                ctx.refuse("alpha", f"{alpha}: CPO's reward is the summed log-prob, and p^-alpha of a whole response "
                           "overflows (TRL computes p = exp(summed log-prob), 0 in fp32 below about -104, and its loss "
                           "is then inf); AlphaPO is SimPO's (loss_type alphapo or simpo), or use alpha < 0")
        cpo_alpha = ctx.number("cpo_alpha") if "cpo_alpha" in effective else 1.0
        if types_ == ["alphapo"]:  # TRL's sugar: simpo with cpo_alpha 0 (whatever cpo_alpha says)
            types_, cpo_alpha = ["simpo"], 0.0
            if effective.get("cpo_alpha") not in (None, 0, 0.0):
                out.notes.append("cpo_alpha not translated: TRL's loss_type alphapo sets it to 0")
        if types_ in ([], ["sigmoid"], ["hinge"], ["ipo"]):
            out.set("method", "cpo", where)
            if types_ in (["hinge"], ["ipo"]):
                out.set("cpo_loss_type", types_[0], where)
                if effective.pop("label_smoothing", None) not in (None, 0, 0.0):  # TRL warns and ignores it
                    out.values.pop("label_smoothing", None)
                    out.origins.pop("label_smoothing", None)
                    out.notes.append(f"label_smoothing not translated: TRL's CPOTrainer {types_[0]} loss ignores it")
            if cpo_alpha not in (None, 0.0):
                out.notes.append("the NLL term (cpo_alpha): TRL averages it over all chosen tokens of the batch; upo "
                                 "over each chosen response's tokens, then over the pairs")
        elif types_ == ["simpo"] and cpo_alpha == 0.0:
            out.set("method", "simpo", where)
            effective.pop("cpo_alpha", None)  # 0: upo's simpo has no NLL term to weigh
        elif types_ == ["simpo"] and cpo_alpha is not None:  # CPO-SimPO: SimPO plus cpo_alpha times the chosen NLL
            out.set("method", "mix", where + " with cpo_alpha > 0 (CPO-SimPO)")
            origin = ctx.origin("cpo_alpha") if "cpo_alpha" in ctx.given else "TRL's default cpo_alpha: 1.0"
            out.set("loss_mix", {"simpo": 1.0, "sft": cpo_alpha}, origin + " (the NLL term's weight)")
            effective.pop("cpo_alpha", None)
            out.notes.append("the NLL term (CPO-SimPO's): TRL averages it over all chosen tokens of the batch; upo "
                             "over each chosen response's tokens, then over the pairs")
        elif types_ != ["simpo"]:
            ctx.refuse("loss_type", f"{effective.get('loss_type')!r}: upo translates CPOTrainer's sigmoid (CPO), "
                       "hinge, ipo, simpo and alphapo")
    else:
        out.set("method", "orpo", f"TRL's {TRAINERS[trainer]}")
        out.notes.append("ORPO's NLL: TRL computes it over the prompt and the chosen response; upo over the chosen "
                         "response (each response's per-token mean)")


# TRL 1.16's DPOTrainer loss_types -> upo's methods of the same losses (upo.pair_losses: the same names)
PAIR_LOSS_TYPES = frozenset({"hinge", "robust", "nca_pair", "bco_pair", "sppo_hard", "apo_zero", "apo_down", "exo_pair",
                             "discopop", "aot", "aot_unpaired", "sigmoid_norm"})
DPO_LOSS_TYPES = {"sigmoid": "dpo", "ipo": "ipo", "sft": "sft", **{t: t for t in sorted(PAIR_LOSS_TYPES)}}
SMOOTHING_READERS = ("robust", "aot", "aot_unpaired")  # TRL's losses that read label_smoothing (exo_pair: its epsilon)


def _dpo_loss(ctx: Context, types_: list[str], weights: list | None, where: str) -> None:
    """DPOTrainer's loss_type: one loss (its upo method), [sigmoid, sft] with weights [1, alpha] (RPO:
    dpo with rpo_alpha), or a weighted sum of several (upo's mix: MPO's [sigmoid, bco_pair, sft])."""
    out, effective = ctx.out, ctx.effective
    weights = [as_number(w) for w in weights or [1.0] * len(types_)]
    if None in weights or any(w < 0 for w in weights):
        ctx.refuse("loss_weights", f"{effective['loss_weights']!r}: the weights must be numbers >= 0")
        return
    unknown = [t for t in types_ if t not in DPO_LOSS_TYPES]
    if unknown:
        ctx.refuse("loss_type", f"{', '.join(unknown)}: upo translates {', '.join(DPO_LOSS_TYPES)}, alone or summed "
                   "with loss_weights (upo's method mix)")
        return
    mix: dict[str, float] = {}
    for loss_type, weight in zip(types_, weights, strict=True):
        if weight > 0:  # TRL's weight 0 turns its term off
            mix[DPO_LOSS_TYPES[loss_type]] = mix.get(DPO_LOSS_TYPES[loss_type], 0.0) + weight
    origin = where + (f", {ctx.origin('loss_weights')}" if "loss_weights" in ctx.given else "")
    if list(mix) == ["dpo", "sft"] and mix["dpo"] == 1.0:
        out.set("method", "dpo", where)
        out.set("rpo_alpha", mix["sft"], ctx.origin("loss_weights") + " (RPO: the sft loss's weight)")
    elif len(mix) == 1 and list(mix.values()) == [1.0]:
        out.set("method", next(iter(mix)), where)
    elif mix:
        out.set("method", "mix", where + " (several loss types)")
        out.set("loss_mix", mix, origin)
    else:
        ctx.refuse("loss_weights", f"{effective['loss_weights']!r}: every weight is 0")
        return
    if "ipo" in mix:  # TRL 1.16's ipo: per-token mean log-ratios
        out.set("ipo_per_token", True, ctx.origin("loss_type") + ": each log-ratio over its completion length")
    if "sft" in mix:
        out.notes.append("the sft term: TRL averages the NLL over all chosen tokens of the batch; upo over each "
                         "chosen response's tokens, then over the pairs")
        if str(effective.get("use_weighting")).lower() == "true":
            out.notes.append("use_weighting with sft in loss_type: TRL 1.16 raises on it (it scales its expanded sft "
                             "loss in place); upo scales each pair's NLL by the pair's WPO weight")
    if "rpo_alpha" in ctx.given and (len(types_) > 1 or "sft" in types_):
        ctx.refuse("rpo_alpha", "earlier TRL versions' RPO weight, beside loss_type's sft term or list: set the sft "
                   "weight in loss_weights alone")
    if "discopop" in mix and "discopop_tau" in ctx.given:
        out.set("discopop_tau", effective.pop("discopop_tau"), ctx.origin("discopop_tau"))
    if "exo_pair" in types_:  # with weight 0 too: TRL's term is then 0 * inf, NaN
        epsilon = ctx.number("label_smoothing") if "label_smoothing" in effective else 0.0
        if epsilon == 0.0:
            ctx.refuse("loss_type", "TRL 1.16's exo_pair takes its epsilon from label_smoothing, and with label_smoothing"
                       " 0 (its default) its loss is infinite (log 0); set label_smoothing: 1e-3 (the EXO paper's)")
        elif epsilon is not None and "exo_pair" in mix:
            out.set("exo_epsilon", epsilon, ctx.origin("label_smoothing") + " (exo_pair's epsilon)")
    smoothing = effective.get("label_smoothing") not in (None, 0, 0.0)
    readers = [t for t in mix if t in SMOOTHING_READERS]
    if smoothing and readers and "dpo" in mix:
        ctx.refuse("label_smoothing", f"TRL's sigmoid loss ignores it and its {', '.join(readers)} reads it; in upo's "
                   "mix the dpo term would read it too (conservative DPO)")
    elif smoothing and not readers and "exo_pair" not in mix:
        out.notes.append(f"label_smoothing not translated: TRL 1.16's {'/'.join(types_)} loss does not read it "
                         "(upo's dpo would: conservative DPO)")
    if not readers:
        effective.pop("label_smoothing", None)


def sync_reference(ctx: Context) -> None:
    """TR-DPO: TRL's sync_ref_model mixes the policy into a reference copy every ref_model_sync_steps
    steps, which upo's sync_ref_model does too, on reference log-probs computed every step."""
    keys = ("ref_model_mixup_alpha", "ref_model_sync_steps")
    if not ctx.effective.get("sync_ref_model"):
        ctx.out.not_translated += [f"{key} ({ctx.where(key)}: sync_ref_model is false)" for key in keys if key in ctx.given]
        return
    if ctx.effective.get("use_peft"):
        ctx.refuse("sync_ref_model", "with use_peft the reference is the base with the adapters off, not a copy that "
                   "can be mixed: upo's TR-DPO trains all weights")
        return
    if ctx.out.values.get("precompute_ref_logps"):
        ctx.refuse("precompute_ref_log_probs", "true with sync_ref_model: log-probs computed once cannot follow the "
                   "reference (TRL refuses it too)")
        return
    ctx.out.set("sync_ref_model", True, ctx.origin("sync_ref_model"))
    ctx.out.set("precompute_ref_logps", False, ctx.origin("sync_ref_model") + ": the reference changes as it trains")
    for key in keys:
        if key in ctx.given:
            ctx.out.set(key, ctx.effective[key], ctx.origin(key))


def f_divergence(ctx: Context) -> None:
    """f_divergence_type (f-DPO) on TRL's sigmoid (or sigmoid_norm) loss is upo's dpo (sigmoid_norm) with
    f_divergence; TRL applies it to every term of a mix too, upo's to its dpo term only: refused there."""
    kind = ctx.effective.get("f_divergence_type", "reverse_kl")
    if kind != "alpha_divergence" and "f_alpha_divergence_coef" in ctx.given:
        ctx.out.not_translated.append(f"f_alpha_divergence_coef ({ctx.where('f_alpha_divergence_coef')}: "
                                      "f_divergence_type is not alpha_divergence)")
    if kind == "reverse_kl":
        return
    chosen = ctx.out.values.get("method")
    terms = set(ctx.out.values.get("loss_mix") or {}) if chosen == "mix" else {chosen}
    if ctx.trainer != "dpo" or not terms or not terms <= {"dpo", "sigmoid_norm", "sft"}:
        ctx.refuse("f_divergence_type", f"{kind!r}: upo's f_divergence is read by its dpo and sigmoid_norm losses "
                   "(TRL's sigmoid and sigmoid_norm, with sft beside them or not); TRL applies it to hinge, ipo, "
                   "exo_pair, robust and discopop too (and refuses it with its other loss types)")
        return
    ctx.out.set("f_divergence", kind, ctx.origin("f_divergence_type"))
    if kind == "alpha_divergence" and "f_alpha_divergence_coef" in ctx.given:
        ctx.out.set("f_alpha_divergence_coef", ctx.effective["f_alpha_divergence_coef"],
                    ctx.origin("f_alpha_divergence_coef"))
