"""Tests of upo.losses: hand-worked values (arithmetic in each docstring), invariants, gradient signs."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import sigmoid, softplus, t
from hypothesis import given, settings
from hypothesis import strategies as st

from upo.losses import (
    awr_weights,
    dpo_loss,
    expectile_loss,
    ipo_loss,
    kto_loss,
    kto_reference_point,
    upo_loss,
)

# --------------------------------------------------------------------------------------------
# DPO


def test_dpo_hand_worked_values():
    """beta = 0.5.
    chosen logratios   = [-1 - -2, -2 - -2, -1 - -3] = [1, 0, 2]
    rejected logratios = [-3 - -2, -1 - -2, -3 - -3] = [-1, 1, 0]
    margins h = [2, -1, 2]; beta * h = [1, -0.5, 1]
    losses = -log sigmoid(beta * h) = log(1 + e^{-beta h}) = [log(1 + e^-1), log(1 + e^0.5), log(1 + e^-1)]
           = [0.31326, 0.97408, 0.31326]
    chosen rewards = 0.5 * [1, 0, 2] = [0.5, 0, 1]; rejected rewards = 0.5 * [-1, 1, 0] = [-0.5, 0.5, 0]
    """
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        t(-1.0, -2.0, -1.0), t(-3.0, -1.0, -3.0), t(-2.0, -2.0, -3.0), t(-2.0, -2.0, -3.0), beta=0.5
    )
    expected = t(softplus(-1.0), softplus(0.5), softplus(-1.0))
    torch.testing.assert_close(losses, expected)
    torch.testing.assert_close(chosen_rewards, t(0.5, 0.0, 1.0))
    torch.testing.assert_close(rejected_rewards, t(-0.5, 0.5, 0.0))


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_dpo_is_log2_when_policy_equals_reference(beta, label_smoothing):
    """Margin 0: -(1 - ls) log(1/2) - ls log(1/2) = log 2 for every beta and ls; rewards are 0."""
    chosen, rejected = t(-5.0, -1.5, -30.0), t(-2.0, -7.0, -0.25)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        chosen, rejected, chosen.clone(), rejected.clone(), beta=beta, label_smoothing=label_smoothing
    )
    torch.testing.assert_close(losses, torch.full((3,), math.log(2.0)))
    assert torch.count_nonzero(chosen_rewards) == 0 and torch.count_nonzero(rejected_rewards) == 0


def test_dpo_label_smoothing_hand_worked():
    """beta = 1, ls = 0.25; margins h = [2, -1] (reference logps all 0).
    loss = -0.75 log sigmoid(h) - 0.25 log sigmoid(-h) = 0.75 log(1 + e^-h) + 0.25 log(1 + e^h)
    h = 2:  0.75 * log(1 + e^-2) + 0.25 * log(1 + e^2) = 0.75 * 0.12693 + 0.25 * 2.12693 = 0.62693
    h = -1: 0.75 * log(1 + e^1)  + 0.25 * log(1 + e^-1) = 0.75 * 1.31326 + 0.25 * 0.31326 = 1.06326
    """
    zeros = torch.zeros(2)
    losses, _, _ = dpo_loss(t(2.0, 0.0), t(0.0, 1.0), zeros, zeros, beta=1.0, label_smoothing=0.25)
    expected = t(0.75 * softplus(-2.0) + 0.25 * softplus(2.0), 0.75 * softplus(1.0) + 0.25 * softplus(-1.0))
    torch.testing.assert_close(losses, expected)


def test_dpo_label_smoothing_half_ignores_which_response_is_chosen():
    """ls = 0.5 means labels are coin flips: loss(h) = loss(-h), so swapping chosen and rejected changes nothing,
    while plain DPO (ls = 0) does change."""
    a, b, zeros = t(-1.0, -4.0), t(-3.0, -2.0), torch.zeros(2)
    forward, _, _ = dpo_loss(a, b, zeros, zeros, beta=0.7, label_smoothing=0.5)
    swapped, _, _ = dpo_loss(b, a, zeros, zeros, beta=0.7, label_smoothing=0.5)
    torch.testing.assert_close(forward, swapped)
    plain, _, _ = dpo_loss(a, b, zeros, zeros, beta=0.7)
    plain_swapped, _, _ = dpo_loss(b, a, zeros, zeros, beta=0.7)
    assert not torch.allclose(plain, plain_swapped)


def test_dpo_label_smoothing_pushes_back_on_overconfident_margins():
    """d loss / d h = beta * (-(1 - ls) sigmoid(-beta h) + ls sigmoid(beta h)); at beta h = 10 that is
    about beta * (ls - 4.5e-5): positive for ls = 0.1 (descent shrinks the margin), negative for ls = 0."""
    for label_smoothing, sign in [(0.0, -1.0), (0.1, 1.0)]:
        chosen = t(10.0, requires_grad=True)
        losses, _, _ = dpo_loss(chosen, t(0.0), t(0.0), t(0.0), beta=1.0, label_smoothing=label_smoothing)
        losses.sum().backward()
        assert torch.sign(chosen.grad).item() == sign


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    """d(-log sigmoid(beta h)) / d pi_w = -beta sigmoid(-beta h) < 0 and d/d pi_l = +beta sigmoid(-beta h) > 0,
    so gradient descent increases chosen log-probs and decreases rejected ones. At h = 0, beta = 0.1: -+0.05."""
    chosen, rejected = t(-3.0, -1.0, requires_grad=True), t(-3.0, -1.0, requires_grad=True)
    losses, chosen_rewards, _ = dpo_loss(chosen, rejected, t(-3.0, -1.0), t(-3.0, -1.0), beta=0.1)
    losses.sum().backward()
    torch.testing.assert_close(chosen.grad, t(-0.05, -0.05))
    torch.testing.assert_close(rejected.grad, t(0.05, 0.05))
    assert not chosen_rewards.requires_grad


# --------------------------------------------------------------------------------------------
# IPO


def test_ipo_hand_worked_values():
    """beta = 0.25, target margin 1 / (2 * 0.25) = 2. Reference logps all 0.
    margins h = [-1 - -3, -2 - -1, -1 - -4] = [2, -1, 3]
    losses = (h - 2)^2 = [0, 9, 1]
    chosen rewards = 0.25 * [-1, -2, -1] = [-0.25, -0.5, -0.25]; rejected = 0.25 * [-3, -1, -4] = [-0.75, -0.25, -1]
    """
    zeros = torch.zeros(3)
    losses, chosen_rewards, rejected_rewards = ipo_loss(
        t(-1.0, -2.0, -1.0), t(-3.0, -1.0, -4.0), zeros, zeros, beta=0.25
    )
    torch.testing.assert_close(losses, t(0.0, 9.0, 1.0))
    torch.testing.assert_close(chosen_rewards, t(-0.25, -0.5, -0.25))
    torch.testing.assert_close(rejected_rewards, t(-0.75, -0.25, -1.0))
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_ipo_when_policy_equals_reference(beta):
    """Margin 0: loss = (0 - 1/(2 beta))^2 = (1/(2 beta))^2, e.g. 25 for beta = 0.1."""
    chosen, rejected = t(-5.0, -1.5), t(-2.0, -7.0)
    losses, _, _ = ipo_loss(chosen, rejected, chosen.clone(), rejected.clone(), beta=beta)
    torch.testing.assert_close(losses, torch.full((2,), (1.0 / (2.0 * beta)) ** 2))


def test_ipo_gradient_pulls_margin_towards_target():
    """d loss / d pi_w = 2 (h - 1/(2 beta)). beta = 0.5, target 1: h = 0 gives -2 (raise chosen),
    h = 3 gives +4 (IPO, unlike DPO, lowers an over-large margin)."""
    chosen = t(0.0, 3.0, requires_grad=True)
    losses, _, _ = ipo_loss(chosen, torch.zeros(2), torch.zeros(2), torch.zeros(2), beta=0.5)
    losses.sum().backward()
    torch.testing.assert_close(chosen.grad, t(-2.0, 4.0))


# --------------------------------------------------------------------------------------------
# KTO


def test_kto_reference_point_hand_worked():
    """logratios = [1 - 0, -0.5 - 0, 2.5 - 1] = [1, -0.5, 1.5]; mean = 2 / 3."""
    z0 = kto_reference_point(t(1.0, -0.5, 2.5), t(0.0, 0.0, 1.0))
    assert z0.dim() == 0
    torch.testing.assert_close(z0, torch.tensor(2.0 / 3.0))


def test_kto_reference_point_clamps_negative_mean_and_is_detached():
    """logratios = [-1, -2, 0.5], mean = -2.5 / 3 < 0, clamped to 0; no graph back to the policy."""
    policy = t(-1.0, -2.0, 0.5, requires_grad=True)
    z0 = kto_reference_point(policy, torch.zeros(3))
    assert z0.item() == 0.0
    assert not z0.requires_grad
    assert z0.dim() == 0


def test_kto_hand_worked_values():
    """beta = 0.5, z0 = 0.4, desirable_weight = 2, undesirable_weight = 1.5.
    logratios = [0.5 - -0.5, -2 - -1, 0.2 - 0] = [1, -1, 0.2]; desirable = [T, F, T]
    ex 0 (desirable):   2   * (1 - sigmoid(0.5 * (1 - 0.4)))    = 2   * (1 - sigmoid(0.3))  = 2   * 0.42556 = 0.85111
    ex 1 (undesirable): 1.5 * (1 - sigmoid(0.5 * (0.4 - -1)))   = 1.5 * (1 - sigmoid(0.7))  = 1.5 * 0.33181 = 0.49772
    ex 2 (desirable):   2   * (1 - sigmoid(0.5 * (0.2 - 0.4)))  = 2   * (1 - sigmoid(-0.1)) = 2   * 0.52498 = 1.04996
    rewards = 0.5 * [1, -1, 0.2] = [0.5, -0.5, 0.1]
    """
    losses, rewards = kto_loss(
        t(0.5, -2.0, 0.2),
        t(-0.5, -1.0, 0.0),
        torch.tensor([True, False, True]),
        torch.tensor(0.4),
        beta=0.5,
        desirable_weight=2.0,
        undesirable_weight=1.5,
    )
    expected = t(2.0 * (1 - sigmoid(0.3)), 1.5 * (1 - sigmoid(0.7)), 2.0 * (1 - sigmoid(-0.1)))
    torch.testing.assert_close(losses, expected)
    torch.testing.assert_close(rewards, t(0.5, -0.5, 0.1))
    assert not rewards.requires_grad


def test_kto_at_reference_point_is_half_the_weight():
    """logratio = z0 gives 1 - sigmoid(0) = 1/2 either way: [0.5 * 3, 0.5 * 0.25] = [1.5, 0.125]."""
    losses, _ = kto_loss(
        t(1.0, 1.0),
        t(0.0, 0.0),
        torch.tensor([True, False]),
        torch.tensor(1.0),
        beta=0.1,
        desirable_weight=3.0,
        undesirable_weight=0.25,
    )
    torch.testing.assert_close(losses, t(1.5, 0.125))


def test_kto_gradient_raises_desirable_and_lowers_undesirable():
    """d/d logp of lambda_D (1 - sigmoid(beta (r - z0))) = -lambda_D beta s (1 - s) < 0 (desirable);
    of lambda_U (1 - sigmoid(beta (z0 - r))) it is +lambda_U beta s (1 - s) > 0 (undesirable).
    At r = z0 = 0, beta = 1, weights 1: s (1 - s) = 1/4, so grads = [-0.25, +0.25]."""
    policy = t(0.0, 0.0, requires_grad=True)
    losses, _ = kto_loss(policy, torch.zeros(2), torch.tensor([True, False]), torch.tensor(0.0), beta=1.0)
    losses.sum().backward()
    torch.testing.assert_close(policy.grad, t(-0.25, 0.25))


# --------------------------------------------------------------------------------------------
# AWR weights and expectile loss


def test_awr_weights_hand_worked():
    """eta = 0.5, max_weight = 5: exp([0, 1, -2] / 0.5) = [e^0, e^2, e^-4] = [1, 7.389 -> clipped 5, 0.01832]."""
    advantages = t(0.0, 1.0, -2.0, requires_grad=True)
    weights = awr_weights(advantages, eta=0.5, max_weight=5.0)
    torch.testing.assert_close(weights, t(1.0, 5.0, math.exp(-4.0)))
    assert not weights.requires_grad


def test_awr_weights_huge_advantages_are_clipped_not_inf():
    """exp(1e6) overflows float32; the clipped weight must be exactly max_weight, also for inf."""
    weights = awr_weights(t(1e6, 1e30, math.inf, -1e6), eta=0.1, max_weight=20.0)
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights, t(20.0, 20.0, 20.0, 0.0))


def test_awr_weights_bound_is_exact_in_bfloat16():
    """In bfloat16, exp(log(20)) rounds to 20.125 > 20: the clip must still hold exactly at max_weight."""
    weights = awr_weights(torch.tensor([100.0], dtype=torch.bfloat16), eta=1.0, max_weight=20.0)
    assert weights.item() == 20.0


@settings(deadline=None, max_examples=200)
@given(
    advantages=st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=8),
    eta=st.floats(1e-3, 10.0),
    max_weight=st.floats(1.0, 100.0),
)
def test_awr_weights_bounded_finite_and_monotone(advantages, eta, max_weight):
    """For any advantages: 0 <= weight <= max_weight, finite, and a larger advantage never gets a smaller weight."""
    a = torch.tensor(sorted(advantages), dtype=torch.float32)
    weights = awr_weights(a, eta=eta, max_weight=max_weight)
    assert torch.isfinite(weights).all()
    assert (weights >= 0).all()
    assert (weights <= max_weight).all()
    assert (weights[1:] >= weights[:-1]).all()


def test_expectile_loss_is_asymmetric():
    """tau = 0.7: u = [2, -2, 0] -> [0.7 * 4, 0.3 * 4, 0] = [2.8, 1.2, 0]."""
    torch.testing.assert_close(expectile_loss(t(2.0, -2.0, 0.0), tau=0.7), t(2.8, 1.2, 0.0))


def test_expectile_loss_at_half_is_half_squared_error():
    """tau = 0.5 weighs both signs 0.5: u = [3, -1] -> [4.5, 0.5]."""
    torch.testing.assert_close(expectile_loss(t(3.0, -1.0), tau=0.5), t(4.5, 0.5))


# --------------------------------------------------------------------------------------------
# UPO


def test_upo_hand_worked_values():
    """pref_losses = [0.2, 0.4]; policy_logps = [-1, -2]; rewards = [1, 0]; values = [0.5, 0.5];
    aux_coef = 0.5, eta = 1, max_weight = 20, tau = 0.7.
    A = [0.5, -0.5]; weights = [e^0.5, e^-0.5] = [1.64872, 0.60653]
    aux = -mean(w * logp) = (1.64872 * 1 + 0.60653 * 2) / 2 = 1.43089
    value = mean([0.7 * 0.25, 0.3 * 0.25]) = 0.125
    pref = 0.3; policy = 0.3 + 0.5 * 1.43089 = 1.01545; loss = 1.01545 + 0.125 = 1.14045
    """
    out = upo_loss(
        t(0.2, 0.4), t(-1.0, -2.0), t(1.0, 0.0), t(0.5, 0.5), aux_coef=0.5, eta=1.0, max_weight=20.0, tau=0.7
    )
    aux = (math.exp(0.5) * 1.0 + math.exp(-0.5) * 2.0) / 2.0
    torch.testing.assert_close(out.pref_loss, torch.tensor(0.3))
    torch.testing.assert_close(out.aux_loss, torch.tensor(aux))
    torch.testing.assert_close(out.value_loss, torch.tensor(0.125))
    torch.testing.assert_close(out.policy_loss, torch.tensor(0.3 + 0.5 * aux))
    torch.testing.assert_close(out.loss, torch.tensor(0.3 + 0.5 * aux + 0.125))
    torch.testing.assert_close(out.weights, t(math.exp(0.5), math.exp(-0.5)))
    torch.testing.assert_close(out.advantages, t(0.5, -0.5))
    for scalar in (out.loss, out.policy_loss, out.pref_loss, out.aux_loss, out.value_loss):
        assert scalar.dim() == 0


def _dpo_then_upo(aux_coef: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO on 2 pairs composed with UPO; policy_logps = [chosen..., rejected...] is one leaf. Returns
    (policy_loss, pref_losses.mean(), policy_logps)."""
    policy_logps = t(-1.0, -2.5, -3.0, -1.5, requires_grad=True)
    pref_losses, _, _ = dpo_loss(policy_logps[:2], policy_logps[2:], t(-1.5, -2.0), t(-2.0, -2.0), beta=0.1)
    out = upo_loss(
        pref_losses,
        policy_logps,
        t(1.0, -0.5, 0.3, 2.0),
        t(0.2, 0.2, 0.2, 0.2),
        aux_coef=aux_coef,
        eta=1.0,
        max_weight=20.0,
        tau=0.7,
    )
    return out.policy_loss, pref_losses.mean(), policy_logps


def test_upo_without_aux_is_exactly_the_preference_loss():
    """aux_coef = 0: policy_loss equals mean(pref_losses) bitwise and so do the gradients w.r.t. policy logps;
    with aux_coef = 1 both differ (the check can fail)."""
    policy_loss, pref_mean, policy_logps = _dpo_then_upo(aux_coef=0.0)
    assert torch.equal(policy_loss, pref_mean)
    (grad_upo,) = torch.autograd.grad(policy_loss, policy_logps, retain_graph=True)
    (grad_pref,) = torch.autograd.grad(pref_mean, policy_logps)
    assert torch.equal(grad_upo, grad_pref)

    policy_loss, pref_mean, policy_logps = _dpo_then_upo(aux_coef=1.0)
    assert not torch.equal(policy_loss, pref_mean)
    (grad_upo,) = torch.autograd.grad(policy_loss, policy_logps, retain_graph=True)
    (grad_pref,) = torch.autograd.grad(pref_mean, policy_logps)
    assert not torch.equal(grad_upo, grad_pref)


def test_upo_without_aux_ignores_a_non_finite_aux_term():
    """aux_coef = 0 must drop the term, not multiply it by 0: a policy logp of -inf (a token of probability 0)
    makes aux_loss = +inf, and 0 * inf = nan would poison the step. policy_loss stays mean([0.2, 0.4]) = 0.3."""
    pref_losses = t(0.2, 0.4)
    out = upo_loss(
        pref_losses,
        t(-1.0, -math.inf),
        t(0.0, 0.0),
        t(0.0, 0.0),
        aux_coef=0.0,
        eta=1.0,
        max_weight=20.0,
        tau=0.7,
    )
    assert out.aux_loss.item() == math.inf
    assert torch.equal(out.policy_loss, pref_losses.mean())
    assert torch.isfinite(out.loss)


def test_upo_aux_gradient_is_minus_weights_over_n():
    """d aux / d logp_i = -w_i / N: negative (descent raises log-likelihood) and proportional to the weights.
    rewards = [2, 0, -1], values 0, eta = 1, max_weight = 5: w = [min(e^2, 5), 1, e^-1] = [5, 1, 0.36788];
    grads = -[5, 1, 0.36788] / 3."""
    policy_logps = t(-1.0, -2.0, -3.0, requires_grad=True)
    out = upo_loss(
        torch.zeros(1),
        policy_logps,
        t(2.0, 0.0, -1.0),
        torch.zeros(3),
        aux_coef=1.0,
        eta=1.0,
        max_weight=5.0,
        tau=0.7,
    )
    (grad,) = torch.autograd.grad(out.aux_loss, policy_logps)
    torch.testing.assert_close(grad, -t(5.0, 1.0, math.exp(-1.0)) / 3.0)
    assert (grad < 0).all()
    torch.testing.assert_close(grad, -out.weights / 3.0)


def test_upo_value_gradient_comes_from_value_loss_only():
    """values = [0, 0] leaf, rewards = [1, -2], tau = 0.7. u = [1, -2].
    d L_V / d V_i = -2 |tau - 1[u_i < 0]| u_i / N = [-2 * 0.7 * 1 / 2, -2 * 0.3 * -2 / 2] = [-0.7, 0.6].
    The aux loss has no path to the values (advantages detached); the policy logps get none from L_V."""
    values = t(0.0, 0.0, requires_grad=True)
    policy_logps = t(-1.0, -2.0, requires_grad=True)
    out = upo_loss(
        torch.zeros(2), policy_logps, t(1.0, -2.0), values, aux_coef=1.0, eta=1.0, max_weight=20.0, tau=0.7
    )
    assert not out.advantages.requires_grad and not out.weights.requires_grad
    (aux_to_values,) = torch.autograd.grad(out.aux_loss, values, allow_unused=True, retain_graph=True)
    assert aux_to_values is None
    value_to_policy, value_to_values = torch.autograd.grad(
        out.value_loss, (policy_logps, values), allow_unused=True, retain_graph=True
    )
    assert value_to_policy is None
    torch.testing.assert_close(value_to_values, t(-0.7, 0.6))
    out.loss.backward()
    torch.testing.assert_close(values.grad, t(-0.7, 0.6))


def test_upo_larger_reward_gives_larger_weight():
    """Same value, rewards [-1, 0, 1, 2] at eta = 2: weights e^{A/2} = [0.60653, 1, 1.64872, 2.71828], increasing."""
    out = upo_loss(
        torch.zeros(1),
        t(-1.0, -1.0, -1.0, -1.0),
        t(-1.0, 0.0, 1.0, 2.0),
        torch.zeros(4),
        aux_coef=1.0,
        eta=2.0,
        max_weight=20.0,
        tau=0.7,
    )
    torch.testing.assert_close(out.weights, t(math.exp(-0.5), 1.0, math.exp(0.5), math.exp(1.0)))
    assert (out.weights[1:] > out.weights[:-1]).all()



def test_f_divergence_scores_hand_worked():
    """At logratio log 2 (u = 2): reverse KL log 2; forward KL 1 - 1/2 = 0.5; JS log(4/3) = 0.287682;
    alpha 0.5: (2^-0.5 - 1) / -0.5 = 0.585786; alpha 1 is the reverse KL."""
    from upo.losses import f_divergence_scores

    lr = t(math.log(2.0))
    assert f_divergence_scores(lr, "reverse_kl").item() == pytest.approx(math.log(2.0))
    assert f_divergence_scores(lr, "forward_kl").item() == pytest.approx(0.5)
    assert f_divergence_scores(lr, "js_divergence").item() == pytest.approx(0.287682, abs=1e-6)
    assert f_divergence_scores(lr, "alpha_divergence", 0.5).item() == pytest.approx(0.585786, abs=1e-6)
    assert f_divergence_scores(lr, "alpha_divergence", 1.0).item() == pytest.approx(math.log(2.0))


def test_dpo_with_an_f_divergence_compares_the_scores():
    """Forward KL, beta 1: chosen logratio log 2 -> 0.5, rejected 0 -> 0; loss softplus(-0.5) = 0.474077;
    the rewards stay beta * logratio."""
    losses, chosen, rejected = dpo_loss(t(math.log(2.0)), t(0.0), t(0.0), t(0.0), beta=1.0, f_divergence="forward_kl")
    assert losses.item() == pytest.approx(0.474077, abs=1e-6)
    assert chosen.item() == pytest.approx(math.log(2.0)) and rejected.item() == 0.0
