"""Tests of the baselines: hand-worked loss values (arithmetic in each docstring), invariants,
gradient signs, and the config keys they add (every method's 2-step run is in test_trainer.py)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import run_config as _cfg
from helpers import softplus, t

from upo.baseline_losses import alol_loss, drov_loss, label_rewards, modpo_loss, oppo_loss, sft_loss
from upo.config import ConfigError, UPOConfig
from upo.forward import StepInputs
from upo.losses import dpo_loss
from upo.methods import METHODS
from upo.prepare import prepare_data

# --------------------------------------------------------------------------------------------
# label rewards, per-token reference means, SFT


def test_label_rewards_are_plus_and_minus_one():
    torch.testing.assert_close(label_rewards(torch.tensor([True, False, True])), t(1.0, -1.0, 1.0))


def test_reference_mean_logps_divides_by_completion_length():
    """[-6, -3] over [3, 0] tokens -> [-2, -3] (an empty completion counts as one token, as in logps)."""
    x = StepInputs(t(0.0, 0.0), t(0.0, 0.0), t(-6.0, -3.0), torch.tensor([True, False]), t(0.0, 0.0),
                   num_tokens=torch.tensor([3, 0]))
    torch.testing.assert_close(x.reference_mean_logps(), t(-2.0, -3.0))


def test_sft_is_negated_mean_logp_and_raises_likelihood():
    """losses = -[-0.5, -2.0] = [0.5, 2.0]; d(sum)/d(mean logp) = -1, so descent raises log-probs."""
    logps = t(-0.5, -2.0, requires_grad=True)
    losses = sft_loss(logps)
    torch.testing.assert_close(losses, t(0.5, 2.0))
    losses.sum().backward()
    torch.testing.assert_close(logps.grad, t(-1.0, -1.0))


# --------------------------------------------------------------------------------------------
# MODPO


def test_modpo_hand_worked_values():
    """beta = 0.5, w0 = 2.
    chosen logratios   = [-1 - -2, -2 - -2] = [1, 0];  rejected = [-3 - -2, -1 - -2] = [-1, 1]
    h = [2, -1];  beta * h = [1, -0.5];  aux margins r_a(y_w) - r_a(y_l) = [1 - 0.5, 0.25 - -0.25] = [0.5, 0.5]
    logits = (beta * h - margin) / w0 = [(1 - 0.5) / 2, (-0.5 - 0.5) / 2] = [0.25, -0.5]
    losses = log(1 + e^-logits) = [softplus(-0.25), softplus(0.5)] = [0.57593, 0.97408]
    rewards: chosen 0.5 * [1, 0] = [0.5, 0], rejected 0.5 * [-1, 1] = [-0.5, 0.5]
    """
    ref = t(-2.0, -2.0)
    losses, chosen_r, rejected_r = modpo_loss(
        t(-1.0, -2.0), t(-3.0, -1.0), ref, ref, t(1.0, 0.25), t(0.5, -0.25), beta=0.5, w0=2.0
    )
    torch.testing.assert_close(losses, t(softplus(-0.25), softplus(0.5)))
    torch.testing.assert_close(chosen_r, t(0.5, 0.0))
    torch.testing.assert_close(rejected_r, t(-0.5, 0.5))


@pytest.mark.parametrize("w0", [0.5, 1.0, 4.0])
def test_modpo_with_equal_aux_rewards_is_dpo_at_beta_over_w0(w0):
    """Margin 0: logits = (beta * h - 0) / w0 = (beta / w0) * h, DPO's logits at beta' = beta / w0."""
    pc, pr, rc, rr = t(-1.0, -4.0, -2.5), t(-3.0, -1.0, -2.0), t(-2.0, -2.0, -3.0), t(-2.0, -1.5, -1.0)
    same = t(0.3, -1.2, 2.0)
    modpo, _, _ = modpo_loss(pc, pr, rc, rr, same, same.clone(), beta=0.1, w0=w0)
    dpo, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.1 / w0)
    torch.testing.assert_close(modpo, dpo)


def test_modpo_aux_margin_shifts_the_chosen_logratio():
    """(beta * h - m) / w0 = (beta / w0) * (h - m / beta): the same as DPO at beta / w0 with the chosen
    policy log-probs lowered by m / beta. beta = 0.5, m = [1, -2] -> shifts [2, -4]."""
    pc, pr, ref = t(-1.0, -3.0), t(-2.0, -1.0), t(-2.0, -2.0)
    modpo, _, _ = modpo_loss(pc, pr, ref, ref, t(1.0, -2.0), t(0.0, 0.0), beta=0.5, w0=2.0)
    dpo, _, _ = dpo_loss(pc - t(2.0, -4.0), pr, ref, ref, beta=0.25)
    torch.testing.assert_close(modpo, dpo)


def test_modpo_gradient_signs_and_aux_margin_direction():
    """Descent raises the chosen and lowers the rejected log-probs; a larger auxiliary margin for the
    chosen response raises the loss (the preference term must then prefer y_w by even more)."""
    pc, pr = t(-2.0, -1.0, requires_grad=True), t(-2.0, -3.0, requires_grad=True)
    ref = t(-2.0, -2.0)
    losses, _, _ = modpo_loss(pc, pr, ref, ref, t(0.0, 0.0), t(0.0, 0.0), beta=0.1, w0=1.0)
    losses.sum().backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()
    small, _, _ = modpo_loss(pc, pr, ref, ref, t(0.0, 0.0), t(0.0, 0.0), beta=0.1, w0=1.0)
    large, _, _ = modpo_loss(pc, pr, ref, ref, t(1.0, 1.0), t(0.0, 0.0), beta=0.1, w0=1.0)
    assert (large > small).all()


# --------------------------------------------------------------------------------------------
# offline PPO


def test_oppo_with_unit_ratio_is_minus_advantage():
    """rho = 1 (policy = reference) never clips: policy loss = -mean(A).
    R = [1, -1, 1], V = [0.5, 0.25, 1.5] -> A = [0.5, -1.25, -0.5]
    policy loss = -(0.5 - 1.25 - 0.5) / 3 = 1.25 / 3 = 0.41667
    value loss  = (0.25 + 1.5625 + 0.25) / 3 = 0.6875
    """
    logps = t(-1.2, -0.7, -3.0)
    out = oppo_loss(logps, logps.clone(), t(1.0, -1.0, 1.0), t(0.5, 0.25, 1.5), clip=0.2)
    torch.testing.assert_close(out.policy_loss, torch.tensor(1.25 / 3))
    torch.testing.assert_close(out.value_loss, torch.tensor(0.6875))
    torch.testing.assert_close(out.loss, torch.tensor(1.25 / 3 + 0.6875))
    torch.testing.assert_close(out.advantages, t(0.5, -1.25, -0.5))


def test_oppo_hand_worked_clipping_and_gradients():
    """clip = 0.2; rho = [1.5, 0.5, 1.1]; R = [1, -1, 1], V = [0, 0, -1] -> A = [1, -1, 2].
    ex 1: min(1.5 * 1, 1.2 * 1) = 1.2 (clipped: no gradient)             -> loss -1.2
    ex 2: min(0.5 * -1, 0.8 * -1) = -0.8 (clipped: no gradient)          -> loss  0.8
    ex 3: min(1.1 * 2, 1.1 * 2) = 2.2 (inside the clip range)            -> loss -2.2
    policy loss = (-1.2 + 0.8 - 2.2) / 3 = -2.6 / 3;  value loss = (1 + 1 + 4) / 3 = 2
    d policy loss / d mean logp = [0, 0, -A * rho / 3] = [0, 0, -2.2 / 3]
    d loss / d V = -2 (R - V) / 3 = [-2/3, 2/3, -4/3]  (the policy term sends nothing to V)
    """
    logps = t(math.log(1.5), math.log(0.5), math.log(1.1), requires_grad=True)
    values = t(0.0, 0.0, -1.0, requires_grad=True)
    out = oppo_loss(logps, t(0.0, 0.0, 0.0), t(1.0, -1.0, 1.0), values, clip=0.2)
    torch.testing.assert_close(out.policy_loss, torch.tensor(-2.6 / 3))
    torch.testing.assert_close(out.value_loss, torch.tensor(2.0))
    torch.testing.assert_close(out.weights, t(1.2, 0.8, 1.1))
    out.loss.backward()
    torch.testing.assert_close(logps.grad, t(0.0, 0.0, -2.2 / 3))
    torch.testing.assert_close(values.grad, t(-2.0 / 3, 2.0 / 3, -4.0 / 3))


def test_oppo_keeps_the_gradient_on_the_pessimistic_side():
    """rho = [1.5, 0.5], A = [-1, 1]: min(-1.5, -1.2) = -1.5 and min(0.5, 0.8) = 0.5 are the unclipped
    terms, so both keep their gradient -A * rho / 2 = [0.75, -0.25] (pushing rho back towards 1)."""
    logps = t(math.log(1.5), math.log(0.5), requires_grad=True)
    out = oppo_loss(logps, t(0.0, 0.0), t(-1.0, 1.0), t(0.0, 0.0), clip=0.2)
    torch.testing.assert_close(out.policy_loss, torch.tensor((1.5 - 0.5) / 2))
    out.policy_loss.backward()
    torch.testing.assert_close(logps.grad, t(0.75, -0.25))


# --------------------------------------------------------------------------------------------
# A-LoL


def test_alol_hand_worked_values_and_gradients():
    """clip = 0.5; logratios = [0, ln 2, -ln 4] -> ratios [1, 2, 0.25] -> weights clipped to [0.5, 1.5]: [1, 1.5, 0.5]
    R = [1, 1, -1], V = [0.5, -1, 0] -> A = [0.5, 2, -1] -> max(A, 0) = [0.5, 2, 0]
    logp = [-2, -3, -1]: losses -max(A,0) * w * logp = [1, 9, 0] -> policy loss 10 / 3
    value loss = (0.25 + 4 + 1) / 3 = 1.75
    d policy loss / d logp = -max(A,0) * w / 3 = [-1/6, -1, 0]
    """
    logps = t(-2.0, -3.0, -1.0, requires_grad=True)
    reference = t(-2.0, -3.0 - math.log(2.0), -1.0 + math.log(4.0))
    out = alol_loss(logps, reference, t(1.0, 1.0, -1.0), t(0.5, -1.0, 0.0), clip=0.5)
    torch.testing.assert_close(out.weights, t(1.0, 1.5, 0.5))
    torch.testing.assert_close(out.policy_loss, torch.tensor(10.0 / 3))
    torch.testing.assert_close(out.value_loss, torch.tensor(1.75))
    out.policy_loss.backward()
    torch.testing.assert_close(logps.grad, t(-1.0 / 6, -1.0, 0.0))


def test_alol_is_zero_when_every_advantage_is_negative():
    """A = R - V = [1 - 2, -1 - 0, 0.5 - 0.5] = [-1, -1, 0]: no example is kept, the policy loss and its
    gradient are exactly 0; only the value loss (1 + 1 + 0) / 3 remains."""
    logps = t(-2.0, -3.0, -1.0, requires_grad=True)
    out = alol_loss(logps, t(-2.5, -2.0, -1.0), t(1.0, -1.0, 0.5), t(2.0, 0.0, 0.5), clip=0.9)
    assert out.policy_loss.item() == 0.0
    torch.testing.assert_close(out.loss, torch.tensor(2.0 / 3))
    out.loss.backward()
    assert torch.count_nonzero(logps.grad) == 0


def test_alol_weights_stay_finite_for_extreme_logratios():
    """exp(+-1000) overflows to inf / underflows to 0 in float32; the clip maps them to 1 +- clip."""
    logps = t(-1.0, -1.0, requires_grad=True)
    out = alol_loss(logps, t(-1001.0, 999.0), t(1.0, 1.0), t(0.0, 0.0), clip=0.2)
    torch.testing.assert_close(out.weights, t(1.2, 0.8))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert (logps.grad < 0).all()  # positive advantage: descent raises the log-probs


# --------------------------------------------------------------------------------------------
# DRO-V


def test_drov_hand_worked_values_and_gradients():
    """tau = 0.5; logratios = [-1 - -2, -4 - -2, -3 - -3] = [1, -2, 0]
    residuals r - V - tau * logratio = [1 - 0.25 - 0.5, -1 - 0 + 1, 1 + 0.5 - 0] = [0.25, 0, 1.5]
    losses = residual^2 / 2 = [0.03125, 0, 1.125]  (example 2 sits at the regularized optimum)
    d loss_i / d logp_i = -tau * residual_i = [-0.125, 0, -0.75];  d loss_i / d V_i = -residual_i
    """
    logps = t(-1.0, -4.0, -3.0, requires_grad=True)
    values = t(0.25, 0.0, -0.5, requires_grad=True)
    losses, residuals = drov_loss(logps, t(-2.0, -2.0, -3.0), t(1.0, -1.0, 1.0), values, tau=0.5)
    torch.testing.assert_close(losses, t(0.03125, 0.0, 1.125))
    torch.testing.assert_close(residuals, t(0.25, 0.0, 1.5))
    losses.sum().backward()
    torch.testing.assert_close(logps.grad, t(-0.125, 0.0, -0.75))
    torch.testing.assert_close(values.grad, t(-0.25, 0.0, -1.5))


def test_drov_pushes_rewarded_responses_up_and_penalized_down():
    """At policy = reference and V = 0 the residual is r: descent raises logp for r = +1, lowers it for -1."""
    logps = t(-2.0, -2.0, requires_grad=True)
    losses, _ = drov_loss(logps, t(-2.0, -2.0), t(1.0, -1.0), t(0.0, 0.0), tau=0.1)
    losses.sum().backward()
    assert logps.grad[0] < 0 < logps.grad[1]


# --------------------------------------------------------------------------------------------
# config keys


@pytest.mark.parametrize(("key", "value"), [("ppo_clip", 0.0), ("ppo_clip", 1.0), ("alol_clip", 1.5),
                                            ("modpo_w0", 0.0)])
def test_baseline_config_keys_are_validated(key, value):
    with pytest.raises(ConfigError, match=key):
        UPOConfig(**{key: value})


# --------------------------------------------------------------------------------------------
# end to end on the tiny model







@pytest.mark.parametrize(("method", "with_rewards"), [("alol", True), ("alol", False), ("drov", False), ("oppo", False)])
def test_optional_rewards_are_scored_only_when_configured(method, with_rewards, tiny_tokenizer, pairs_file, tmp_path):
    """alol / drov add r_a when rewards are configured; oppo never uses them (aoppo does; test_config:
    rewards given to oppo are refused)."""
    cfg = _cfg("unused", pairs_file, tmp_path, method=method, rewards={"length": 1.0} if with_rewards else {})
    data = prepare_data(cfg, tiny_tokenizer, progress=False)
    assert data.train_format == "unpaired"
    assert ("reward" in data.train_items[0]) == (with_rewards and METHODS[method].accepts_rewards)
