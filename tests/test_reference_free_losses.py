"""SimPO, CPO and ORPO (upo.reference_free_losses): hand-worked values and gradients, the
reductions to DPO they must obey, and ORPO's odds near probability 1."""

from __future__ import annotations

import math

import pytest
import torch

from upo.losses import dpo_loss
from upo.reference_free_losses import cpo_loss, log_odds, orpo_loss, simpo_loss


def t(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=grad)


def softplus(z: float) -> float:
    return math.log1p(math.exp(z))


def test_simpo_hand_worked():
    """beta 2, gamma 0.5. Pair 1: means -1 and -1.5, rewards -2 and -3, logit 1 - 0.5 = 0.5, loss
    softplus(-0.5) = 0.474077. Pair 2: means -2 and -1, logit -2 - 0.5 = -2.5, loss softplus(2.5)."""
    losses, chosen, rejected = simpo_loss(t(-1.0, -2.0), t(-1.5, -1.0), beta=2.0, gamma=0.5)
    assert losses.tolist() == pytest.approx([softplus(-0.5), softplus(2.5)], rel=1e-6)
    assert losses[0].item() == pytest.approx(0.474077, abs=1e-6)
    assert chosen.tolist() == [-2.0, -4.0] and rejected.tolist() == [-3.0, -2.0]


def test_simpo_label_smoothing_hand_worked():
    """ls 0.2 on pair 1 above: 0.8 * softplus(-0.5) + 0.2 * softplus(0.5) = 0.379262 + 0.194815."""
    losses, _, _ = simpo_loss(t(-1.0), t(-1.5), beta=2.0, gamma=0.5, label_smoothing=0.2)
    assert losses.item() == pytest.approx(0.574077, abs=1e-6)


def test_simpo_without_margin_is_dpo_on_per_token_means_without_a_reference():
    mc, mr = t(-1.2, -0.4, -3.0), t(-0.9, -2.0, -1.1)
    losses, chosen, rejected = simpo_loss(mc, mr, beta=2.5, gamma=0.0, label_smoothing=0.1)
    zeros = torch.zeros(3)
    expected, exp_chosen, exp_rejected = dpo_loss(mc, mr, zeros, zeros, beta=2.5, label_smoothing=0.1)
    torch.testing.assert_close(losses, expected)
    torch.testing.assert_close(chosen, exp_chosen)
    torch.testing.assert_close(rejected, exp_rejected)


def test_simpo_gradient_hand_worked():
    """d/d mean_w of softplus(-(beta (m_w - m_l) - gamma)) = -beta sigmoid(-logit): at logit 0.5,
    -2 * sigmoid(-0.5) = -0.754915; the rejected mean gets the opposite."""
    mc, mr = t(-1.0, grad=True), t(-1.5, grad=True)
    simpo_loss(mc, mr, beta=2.0, gamma=0.5)[0].sum().backward()
    assert mc.grad.item() == pytest.approx(-2.0 / (1.0 + math.exp(0.5)), rel=1e-6)
    assert mr.grad.item() == pytest.approx(2.0 / (1.0 + math.exp(0.5)), rel=1e-6)


def test_cpo_hand_worked():
    """beta 0.5, alpha 1: logps -4 and -6, logit 0.5 * 2 = 1, softplus(-1) = 0.313262; the chosen
    per-token mean -2 adds an NLL of 2: 2.313262."""
    losses, chosen, rejected, nll = cpo_loss(t(-4.0), t(-6.0), t(-2.0), beta=0.5, alpha=1.0)
    assert losses.item() == pytest.approx(2.313262, abs=1e-6)
    assert (chosen.item(), rejected.item(), nll.item()) == (-2.0, -3.0, 2.0)


def test_cpo_without_its_nll_is_dpo_without_a_reference():
    pc, pr, mc = t(-4.0, -10.0, -3.0), t(-6.0, -2.0, -3.5), t(-1.0, -2.5, -0.3)
    zeros = torch.zeros(3)
    losses = cpo_loss(pc, pr, mc, beta=0.7, alpha=0.0, label_smoothing=0.2)[0]
    torch.testing.assert_close(losses, dpo_loss(pc, pr, zeros, zeros, beta=0.7, label_smoothing=0.2)[0])
    with_nll = cpo_loss(pc, pr, mc, beta=0.7, alpha=0.5, label_smoothing=0.2)[0]
    torch.testing.assert_close(with_nll - losses, -0.5 * mc)


def test_cpo_hinge_and_ipo_hand_worked():
    """beta 0.5, h = -4 - (-6) = 2: hinge max(0, 1 - 1) = 0; h = 1: 1 - 0.5 = 0.5. ipo: (h - 1/(2 * 0.5))^2 = (2 - 1)^2
    = 1 and (1 - 1)^2 = 0; alpha 0 (no NLL). An unknown loss_type is an error."""
    pc, pr, mc = t(-4.0, -5.0), t(-6.0, -6.0), t(-1.0, -1.0)
    torch.testing.assert_close(cpo_loss(pc, pr, mc, beta=0.5, alpha=0.0, loss_type="hinge")[0], t(0.0, 0.5))
    torch.testing.assert_close(cpo_loss(pc, pr, mc, beta=0.5, alpha=0.0, loss_type="ipo")[0], t(1.0, 0.0))
    assert cpo_loss(pc, pr, mc, beta=0.5, alpha=2.0, loss_type="hinge")[0][1].item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="unknown CPO loss_type 'simpo'"):
        cpo_loss(pc, pr, mc, beta=0.5, alpha=0.0, loss_type="simpo")


def test_orpo_hand_worked():
    """P_w = 0.5 (odds 1, log odds 0), P_l = 0.25 (odds 1/3, log odds -log 3): log odds ratio log 3,
    odds-ratio loss -log sigmoid(log 3) = log(4/3); NLL -log 0.5; beta 0.1:
    0.693147 + 0.1 * 0.287682 = 0.721915."""
    out = orpo_loss(t(math.log(0.5)), t(math.log(0.25)), beta=0.1)
    assert out.log_odds_ratios.item() == pytest.approx(math.log(3.0), rel=1e-6)
    assert out.odds_ratio_losses.item() == pytest.approx(math.log(4.0 / 3.0), rel=1e-6)
    assert out.nll.item() == pytest.approx(math.log(2.0), rel=1e-6)
    assert out.losses.item() == pytest.approx(0.721915, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(0.1 * math.log(0.5))


def test_orpo_gradients_hand_worked():
    """d log odds / d m = 1 / (1 - P): 2 at P_w = 0.5, 4/3 at P_l = 0.25. d(-log sigmoid(r))/dr =
    -(1 - sigmoid(log 3)) = -0.25. Chosen: -1 (NLL) + 0.1 * -0.25 * 2 = -1.05; rejected:
    0.1 * -0.25 * -(4/3) = 0.033333."""
    mc, mr = t(math.log(0.5), grad=True), t(math.log(0.25), grad=True)
    orpo_loss(mc, mr, beta=0.1).losses.sum().backward()
    assert mc.grad.item() == pytest.approx(-1.05, rel=1e-5)
    assert mr.grad.item() == pytest.approx(0.1 / 3.0, rel=1e-5)


def test_log_odds_stays_finite_near_probability_one_in_float32():
    """A per-token mean of -1e-9 (P = 1 - 1e-9): log(1 - exp(m)) computed as log1p(-exp(m)) is
    log1p(-1) = -inf in float32; through expm1 it is log(1e-9), so log odds = -1e-9 + 20.723."""
    m = t(-1e-9, -20.0)
    value = log_odds(m)
    assert torch.isinf(torch.log1p(-torch.exp(m[:1]))).all()  # the naive form fails here
    assert value[0].item() == pytest.approx(-math.log(1e-9), rel=1e-6)
    assert value[1].item() == pytest.approx(-20.0 - math.log1p(-math.exp(-20.0)), rel=1e-6)



def test_alphapo_reward_hand_worked():
    """alpha 0.5 at log p = -2: (1 - e^(0.5 * 2)) / 0.5 = (1 - e) / 0.5 = -3.436564 (below log p); alpha 0 is log p;
    alpha -0.5: (1 - e^(-1)) / -0.5 = -1.264241 (above log p: bounded below by 1 / alpha = -2)."""
    from upo.reference_free_losses import alphapo_reward

    logps = torch.tensor([-2.0])
    assert alphapo_reward(logps, 0.5).item() == pytest.approx(-3.436564, abs=1e-6)
    assert alphapo_reward(logps, 0.0).item() == -2.0
    assert alphapo_reward(logps, -0.5).item() == pytest.approx(-1.264241, abs=1e-6)
