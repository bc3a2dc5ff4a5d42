"""The step adapters through the method table: each method's loss equals its pure loss called with the
config's hyperparameters, and its metric names are pinned.

Fast: no model, one hand-made `StepInputs` of 4 sequences per batch format. A paired batch is 2 pairs
(rows 0-1 chosen, rows 2-3 rejected); an unpaired batch is 4 labelled examples.
"""

from __future__ import annotations

import math

import pytest
import torch

from upo import baseline_losses as bl
from upo import losses
from upo import pair_losses as pl
from upo import reference_free_losses as rf
from upo.config import UPOConfig
from upo.forward import StepInputs
from upo.methods import METHODS, batch_format, config_reads, needs_kto_reference_point
from upo.steps import upo_aux_metrics

PAIR = ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"]
UNPAIRED = ["rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"]
UPO = ["upo/pref_loss", "upo/aux_loss", "upo/value_loss", "upo/weight_mean", "upo/weight_max", "upo/advantage_mean",
       "upo/reward_mean"]
ACTOR_CRITIC = ["policy_loss", "value_loss", "weight_mean", "clip_fraction", "advantage_mean", "positive_fraction",
                "value_mean", "reward_mean"]

# DPO's relatives (upo.pair_losses): method -> (pure loss, the config keys it takes besides beta)
PAIR_LOSSES = {
    "hinge": (pl.hinge_loss, ()), "robust": (pl.robust_dpo_loss, ("label_smoothing",)),
    "nca_pair": (pl.nca_pair_loss, ()), "bco_pair": (pl.bco_pair_loss, ()), "sppo_hard": (pl.sppo_hard_loss, ()),
    "apo_zero": (pl.apo_zero_loss, ()), "apo_down": (pl.apo_down_loss, ()),
    "exo_pair": (pl.exo_pair_loss, ("exo_epsilon",)), "discopop": (pl.discopop_loss, ("discopop_tau",)),
    "aot": (pl.aot_loss, ("label_smoothing",)), "aot_unpaired": (pl.aot_unpaired_loss, ("label_smoothing",)),
}

METRIC_NAMES = {
    "dpo": ["loss", *PAIR, "nll_loss"],  # CFG's rpo_alpha > 0: RPO's NLL term
    "simpo": ["loss", *PAIR],
    **{name: ["loss", *PAIR] for name in PAIR_LOSSES},
    "cpo": ["loss", *PAIR, "nll_loss"],
    "orpo": ["loss", *PAIR, "nll_loss", "orpo/log_odds_ratio", "orpo/odds_ratio_loss"],
    "ipo": ["loss", *PAIR],
    "sigmoid_norm": ["loss", *PAIR],
    "mix": ["loss", *PAIR, "nll_loss", "mix/dpo", "mix/bco_pair", "mix/sft"],  # dpo's metrics first (RPO's nll_loss)
    "kto": ["loss", *UNPAIRED, "kto/kl"],
    "apo_zero_unpaired": ["loss", *UNPAIRED],
    "upo": ["loss", *UNPAIRED, "kto/kl", *UPO],  # pref_loss kto (the default)
    "sft": ["loss", "logps/chosen", "logps/rejected"],
    "csft": ["loss", "logps/chosen", "logps/rejected"],
    "oppo": ["loss", *UNPAIRED, *(f"ppo/{k}" for k in ACTOR_CRITIC)],
    "aoppo": ["loss", *UNPAIRED, *(f"ppo/{k}" for k in ACTOR_CRITIC)],
    "modpo": ["loss", *PAIR, "modpo/aux_margin"],
    "alol": ["loss", *UNPAIRED, *(f"alol/{k}" for k in ACTOR_CRITIC)],
    "drov": ["loss", *UNPAIRED, "dro/residual_mean", "dro/residual_abs_mean", "dro/value_mean", "dro/reward_mean"],
}

# Not the defaults, so a step that passed a default instead of the config's value would be caught.
CFG = dict(beta=0.3, label_smoothing=0.1, desirable_weight=1.5, undesirable_weight=0.7, aux_coef=0.4, eta=2.0,
           max_weight=3.0, tau=0.8, modpo_w0=2.0, ppo_clip=0.1, alol_clip=0.5, rpo_alpha=0.6, simpo_gamma=0.7,
           cpo_alpha=0.8, ipo_per_token=True, exo_epsilon=0.05, discopop_tau=0.3,
           loss_mix={"dpo": 0.8, "bco_pair": 0.2, "sft": 1.5}, f_divergence="alpha_divergence", f_alpha_divergence_coef=0.3,
           alphapo_alpha=-0.2)


def config(method: str, **overrides) -> UPOConfig:
    """A config of `method` with CFG's values of the keys it reads (setting the others is an error)."""
    reads = config_reads(METHODS[method], overrides.get("pref_loss", UPOConfig.pref_loss), CFG["loss_mix"])
    return UPOConfig(method=method, **{k: v for k, v in CFG.items() if k in reads}, **overrides)


class ReadRecorder:
    """Stands in for a config and records the names of the attributes read from it."""

    def __init__(self, cfg: UPOConfig):
        object.__setattr__(self, "cfg", cfg)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self.cfg, name)


def make_inputs(fmt: str) -> StepInputs:
    logps = torch.tensor([-3.0, -5.0, -6.0, -4.0], requires_grad=True)  # [4]
    num_tokens = torch.tensor([3, 5, 4, 2])
    return StepInputs(
        policy_logps=logps,
        policy_mean_logps=logps / num_tokens,
        reference_logps=torch.tensor([-4.0, -5.5, -5.0, -4.5]),
        desirable=torch.tensor([True, True, False, False] if fmt == "paired" else [True, False, False, True]),
        rewards=torch.tensor([0.5, -1.0, 0.2, 1.5]),
        values=torch.tensor([0.1, -0.2, 0.3, 0.0], requires_grad=True),
        kto_reference_point=torch.tensor(0.3),
        num_tokens=num_tokens,
    )


def halves(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return v[:2], v[2:]


def kto_losses(x: StepInputs, c: UPOConfig) -> torch.Tensor:
    return losses.kto_loss(x.policy_logps, x.reference_logps, x.desirable, x.kto_reference_point, beta=c.beta,
                           desirable_weight=c.desirable_weight, undesirable_weight=c.undesirable_weight)[0]


def dpo_losses(x: StepInputs, c: UPOConfig) -> torch.Tensor:
    """[B] DPO's losses, plus rpo_alpha times the chosen responses' per-token NLL (RPO)."""
    dpo = losses.dpo_loss(*halves(x.policy_logps), *halves(x.reference_logps), beta=c.beta,
                          label_smoothing=c.label_smoothing, f_divergence=c.f_divergence, f_alpha=c.f_alpha_divergence_coef)[0]
    return dpo - c.rpo_alpha * x.policy_mean_logps[:2]


def upo_expected(x: StepInputs, c: UPOConfig) -> torch.Tensor:
    pref = kto_losses(x, c) if c.pref_loss == "kto" else dpo_losses(x, c)
    aux_logps = x.policy_mean_logps if c.aux_logp == "mean" else x.policy_logps
    return losses.upo_loss(pref, aux_logps, x.rewards, x.values, aux_coef=c.aux_coef, eta=c.eta,
                           max_weight=c.max_weight, tau=c.tau).loss


def label_and_aux(x: StepInputs) -> torch.Tensor:
    return bl.label_rewards(x.desirable) + x.rewards


EXPECTED_LOSS = {
    "dpo": lambda x, c: dpo_losses(x, c).mean(),
    **{name: (lambda x, c, loss=loss, keys=keys: loss(*halves(x.policy_logps), *halves(x.reference_logps),
                                                      beta=c.beta, **{k: getattr(c, k) for k in keys})[0].mean())
       for name, (loss, keys) in PAIR_LOSSES.items()},
    "simpo": lambda x, c: rf.simpo_loss(*halves(rf.alphapo_reward(x.policy_mean_logps, c.alphapo_alpha)), beta=c.beta,
                                        gamma=c.simpo_gamma,
                                        label_smoothing=c.label_smoothing)[0].mean(),
    "cpo": lambda x, c: rf.cpo_loss(*halves(rf.alphapo_reward(x.policy_logps, c.alphapo_alpha)), x.policy_mean_logps[:2],
                                    beta=c.beta, alpha=c.cpo_alpha,
                                    label_smoothing=c.label_smoothing)[0].mean(),
    "orpo": lambda x, c: rf.orpo_loss(*halves(x.policy_mean_logps), beta=c.beta).losses.mean(),
    "ipo": lambda x, c: (losses.ipo_loss(*halves(x.policy_mean_logps), *halves(x.reference_mean_logps()), beta=c.beta)
                         if c.ipo_per_token else
                         losses.ipo_loss(*halves(x.policy_logps), *halves(x.reference_logps), beta=c.beta))[0].mean(),
    "kto": lambda x, c: kto_losses(x, c).mean(),
    "apo_zero_unpaired": lambda x, c: losses.kto_loss(x.policy_logps, x.reference_logps, x.desirable, torch.tensor(0.0),
                                                      beta=c.beta, desirable_weight=c.desirable_weight,
                                                      undesirable_weight=c.undesirable_weight)[0].mean(),
    "sigmoid_norm": lambda x, c: pl.sigmoid_norm_loss(*halves(x.policy_logps), *halves(x.reference_logps),
                                                      *halves(x.num_tokens), beta=c.beta, f_divergence=c.f_divergence,
                                                      f_alpha=c.f_alpha_divergence_coef)[0].mean(),
    "mix": lambda x, c: (0.8 * dpo_losses(x, c).mean() + 1.5 * bl.sft_loss(x.policy_mean_logps[:2]).mean()
                         + 0.2 * pl.bco_pair_loss(*halves(x.policy_logps), *halves(x.reference_logps), beta=c.beta)[0].mean()),
    "upo": upo_expected,
    "sft": lambda x, c: bl.sft_loss(x.policy_mean_logps[:2]).mean(),
    "csft": lambda x, c: bl.csft_loss(x.policy_mean_logps).mean(),
    "oppo": lambda x, c: bl.oppo_loss(x.policy_mean_logps, x.reference_mean_logps(), bl.label_rewards(x.desirable),
                                      x.values, clip=c.ppo_clip).loss,
    "aoppo": lambda x, c: bl.oppo_loss(x.policy_mean_logps, x.reference_mean_logps(), label_and_aux(x), x.values,
                                       clip=c.ppo_clip).loss,
    "modpo": lambda x, c: bl.modpo_loss(*halves(x.policy_logps), *halves(x.reference_logps), *halves(x.rewards),
                                        beta=c.beta, w0=c.modpo_w0)[0].mean(),
    "alol": lambda x, c: bl.alol_loss(x.policy_logps, x.reference_logps, label_and_aux(x), x.values,
                                      clip=c.alol_clip).loss,
    "drov": lambda x, c: bl.drov_loss(x.policy_logps, x.reference_logps, label_and_aux(x), x.values, tau=c.beta)[0].mean(),
}


def test_every_method_in_the_table_is_pinned_here():
    assert sorted(METRIC_NAMES) == sorted(EXPECTED_LOSS) == sorted(METHODS)


@pytest.mark.parametrize(
    ("method", "overrides"),
    [(m, {}) for m in sorted(METHODS)] + [("upo", {"pref_loss": "dpo"}), ("upo", {"pref_loss": "ipo", "aux_logp": "sum"})],
)
def test_step_loss_is_the_pure_loss_and_metric_names_are_pinned(method, overrides):
    cfg = config(method, **overrides)
    m = METHODS[method]
    x = make_inputs(batch_format(m, cfg.pref_loss))
    if not needs_kto_reference_point(m, cfg.pref_loss):
        x.kto_reference_point = None  # as step_inputs builds it
    loss, metrics = m.loss(x, cfg)
    assert loss.dim() == 0 and loss.requires_grad
    if method == "upo" and cfg.pref_loss == "ipo":  # CFG's ipo_per_token: per-token mean log-ratios
        pref = losses.ipo_loss(*halves(x.policy_mean_logps), *halves(x.reference_mean_logps()), beta=cfg.beta)[0]
        expected = losses.upo_loss(pref, x.policy_logps, x.rewards, x.values, aux_coef=cfg.aux_coef, eta=cfg.eta,
                                   max_weight=cfg.max_weight, tau=cfg.tau).loss
    else:
        expected = EXPECTED_LOSS[method](x, cfg)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    names = METRIC_NAMES[method]
    if method == "upo" and cfg.pref_loss != "kto":
        names = ["loss", *PAIR, *UPO] + (["nll_loss"] if cfg.pref_loss == "dpo" else [])  # RPO's term
    assert sorted(metrics) == sorted(names)
    assert metrics["loss"].item() == pytest.approx(loss.item())
    assert all(math.isfinite(float(v)) and not v.requires_grad for v in metrics.values())


def test_dpo_step_metrics_are_the_implicit_rewards_hand_worked():
    """beta 0.3; chosen logratios -3 - -4 = 1, -5 - -5.5 = 0.5; rejected -6 - -5 = -1, -4 - -4.5 = 0.5.
    rewards/chosen = 0.3 * mean(1, 0.5) = 0.225; rejected = 0.3 * mean(-1, 0.5) = -0.075; margins 0.3;
    accuracies: pair 1 (0.3 > -0.3) yes, pair 2 (0.15 > 0.15) no -> 0.5."""
    _, metrics = METHODS["dpo"].loss(make_inputs("paired"), config("dpo"))
    assert metrics["rewards/chosen"].item() == pytest.approx(0.225)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.075)
    assert metrics["rewards/margins"].item() == pytest.approx(0.3)
    assert metrics["rewards/accuracies"].item() == pytest.approx(0.5)
    assert metrics["logps/chosen"].item() == pytest.approx(-4.0)


def test_rpo_alpha_adds_the_chosen_nll_to_dpo_hand_worked():
    """rpo_alpha 0.5 on make_inputs: chosen per-token means -3/3 = -1 and -5/5 = -1, so the NLL is 1
    for both pairs and the loss is DPO's + 0.5; rpo_alpha 0 is plain DPO, without an nll_loss metric."""
    x = make_inputs("paired")
    plain, plain_metrics = METHODS["dpo"].loss(x, UPOConfig(method="dpo", beta=0.3))
    rpo, rpo_metrics = METHODS["dpo"].loss(x, UPOConfig(method="dpo", beta=0.3, rpo_alpha=0.5))
    expected = losses.dpo_loss(*halves(x.policy_logps), *halves(x.reference_logps), beta=0.3)[0].mean()
    assert plain.item() == pytest.approx(expected.item())
    assert "nll_loss" not in plain_metrics
    assert rpo.item() == pytest.approx(expected.item() + 0.5)
    assert rpo_metrics["nll_loss"].item() == pytest.approx(1.0)


def test_ipo_per_token_hand_worked():
    """beta 0.3 (target margin 1/0.6 = 1.666667). Per-token mean log-ratios: chosen (-3+4)/3 = 1/3 and
    (-5+5.5)/5 = 0.1, rejected (-6+5)/4 = -0.25 and (-4+4.5)/2 = 0.25; margins 0.583333 and -0.15;
    losses 1.173611 and 3.300278, mean 2.236944. Summed (the paper's): margins 2 and 0, mean
    ((2 - 1.666667)^2 + 1.666667^2) / 2 = 1.444444."""
    x = make_inputs("paired")
    per_token, _ = METHODS["ipo"].loss(x, UPOConfig(method="ipo", beta=0.3, ipo_per_token=True))
    summed, _ = METHODS["ipo"].loss(x, UPOConfig(method="ipo", beta=0.3))
    assert per_token.item() == pytest.approx(2.236944, abs=1e-5)
    assert summed.item() == pytest.approx(1.444444, abs=1e-5)


def test_upo_partial_eval_is_its_aux_and_value_terms():
    """UPO with a KTO term on held-out pairs: no reference point, so the table's partial_eval gives the
    aux and value losses alone (what upo_loss gives with a zero preference term)."""
    cfg = config("upo")
    assert METHODS["upo"].partial_eval is upo_aux_metrics
    assert all(m.partial_eval is None for name, m in METHODS.items() if name != "upo")
    x = make_inputs("paired")
    x.kto_reference_point = None
    metrics = METHODS["upo"].partial_eval(x, cfg)
    out = losses.upo_loss(torch.zeros(1), x.policy_mean_logps, x.rewards, x.values, aux_coef=cfg.aux_coef, eta=cfg.eta,
                          max_weight=cfg.max_weight, tau=cfg.tau)
    assert sorted(metrics) == ["upo/aux_loss", "upo/value_loss", "upo/weight_mean"]
    assert metrics["upo/aux_loss"].item() == pytest.approx(out.aux_loss.item())
    assert metrics["upo/value_loss"].item() == pytest.approx(out.value_loss.item())


@pytest.mark.parametrize(
    ("method", "pref_loss"),
    [(m, "kto") for m in sorted(METHODS)] + [("upo", "dpo"), ("upo", "ipo")],
)
def test_a_step_reads_exactly_the_config_keys_the_table_declares(method, pref_loss):
    """`Method.reads` (with the preference term's keys for UPO) is what the step reads from the
    config: the config refuses the other method-specific keys, so a key missing here would be
    refused although read, and an extra one accepted although ignored."""
    m = METHODS[method]
    mix = {"loss_mix": CFG["loss_mix"]} if m.mixes else {}
    cfg = ReadRecorder(UPOConfig(method=method, pref_loss=pref_loss) if m.data == "pref" else UPOConfig(method=method, **mix))
    x = make_inputs(batch_format(m, pref_loss))
    if not needs_kto_reference_point(m, pref_loss):
        x.kto_reference_point = None
    m.loss(x, cfg)
    assert cfg.read == set(config_reads(m, pref_loss, mix.get("loss_mix")))
    if m.partial_eval is not None:
        partial = ReadRecorder(cfg.cfg)
        m.partial_eval(x, partial)
        assert partial.read <= set(config_reads(m, pref_loss))
    # The held-out metrics log beta * logratio of every method with a reference (upo.heldout_metrics);
    # a reference-free method reads beta only to log its own rewards (SimPO, CPO, ORPO).
    assert ("beta" in config_reads(m, pref_loss, mix.get("loss_mix"))) == (m.uses_reference or "rewards/accuracies" in METRIC_NAMES[method])


def test_mix_hand_worked():
    """loss_mix {hinge: 2, sft: 0.5} at beta 0.3 on make_inputs: hinge margins h = 1 - (-1) = 2 and 0.5 - 0.5 = 0,
    max(0, 1 - 0.6) = 0.4 and 1 -> mean 0.7; sft = -mean(-1, -1) = 1. Loss 2 * 0.7 + 0.5 * 1 = 1.9; the standard
    metrics are hinge's (the first term), each term's loss under mix/."""
    cfg = UPOConfig(method="mix", beta=0.3, loss_mix={"hinge": 2.0, "sft": 0.5})
    loss, metrics = METHODS["mix"].loss(make_inputs("paired"), cfg)
    assert loss.item() == pytest.approx(1.9)
    assert metrics["mix/hinge"].item() == pytest.approx(0.7) and metrics["mix/sft"].item() == pytest.approx(1.0)
    assert metrics["rewards/margins"].item() == pytest.approx(0.3)  # hinge's: 0.3 * mean(2, 0)


def test_a_mixs_standard_metrics_come_from_a_term_with_a_reference_first():
    """{simpo, dpo}: rewards/* are DPO's beta * log-ratios (as held-out ones are), not SimPO's beta * mean log-probs;
    {simpo, sft} has no reference at all (the trainer computes none): SimPO's."""
    x = make_inputs("paired")
    _, metrics = METHODS["mix"].loss(x, UPOConfig(method="mix", beta=0.3, loss_mix={"simpo": 1.0, "dpo": 1.0}))
    assert metrics["rewards/margins"].item() == pytest.approx(0.3)  # DPO's: 0.3 * mean(2, 0)
    x.reference_logps = None
    _, metrics = METHODS["mix"].loss(x, UPOConfig(method="mix", beta=0.3, loss_mix={"simpo": 1.0, "sft": 1.0}))
    assert metrics["rewards/chosen"].item() == pytest.approx(-0.3)  # SimPO's: 0.3 * mean(-1, -1)


def test_apo_zero_unpaired_hand_worked():
    """beta 1, weights 1, unpaired make_inputs: logratios 1, 0.5, -1, 0.5 with desirable T, F, F, T:
    1 - s(1) = 0.268941; s(0.5) = 0.622459; s(-1) = 0.268941; 1 - s(0.5) = 0.377541; mean 0.384471."""
    loss, _ = METHODS["apo_zero_unpaired"].loss(make_inputs("unpaired"), UPOConfig(method="apo_zero_unpaired", beta=1.0))
    assert loss.item() == pytest.approx(0.384471, abs=1e-6)
