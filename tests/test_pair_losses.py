"""DPO's relatives (upo.pair_losses), each on hand-worked values.

Most cases use one pair with reference log-probs 0, policy log-probs -1 (chosen) and -2 (rejected),
beta 1: w = -1, l = -2, h = 1. softplus(1) = 1.313262, softplus(-1) = 0.313262, softplus(-2) =
0.126928; sigmoid(1) = 0.731059, sigmoid(-1) = 0.268941, sigmoid(-2) = 0.119203. TRL's own code
gives the same values (tests/test_against_trl.py, where TRL is installed).
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import t

from upo import pair_losses as pl
from upo.losses import dpo_loss

ONE_PAIR = (t(-1.0), t(-2.0), torch.zeros(1), torch.zeros(1))


def test_hinge_hand_worked():
    """beta 0.5; margins h = 1 and 3 (reference logps 0): 1 - 0.5 = 0.5, and 1 - 1.5 < 0 -> 0."""
    policy_c, policy_r = t(-2.0, -1.0, requires_grad=True), t(-3.0, -4.0)
    losses, chosen, _ = pl.hinge_loss(policy_c, policy_r, torch.zeros(2), torch.zeros(2), beta=0.5)
    assert losses.tolist() == pytest.approx([0.5, 0.0])
    losses.sum().backward()
    assert policy_c.grad.tolist() == pytest.approx([-0.5, 0.0])  # no gradient past the margin
    assert chosen.tolist() == pytest.approx([-1.0, -0.5])


def test_robust_dpo_hand_worked():
    """beta 1, eps 0.2, margin 1: ((0.8 * softplus(-1)) - 0.2 * softplus(1)) / 0.6
    = (0.250609 - 0.262652) / 0.6 = -0.020072; eps 0 is DPO."""
    assert pl.robust_dpo_loss(*ONE_PAIR, beta=1.0, label_smoothing=0.2)[0].item() == pytest.approx(-0.020072, abs=1e-6)
    torch.testing.assert_close(pl.robust_dpo_loss(*ONE_PAIR, beta=1.0, label_smoothing=0.0)[0],
                               dpo_loss(*ONE_PAIR, beta=1.0)[0])


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        # -log s(-1) - 1/2 log s(1) - 1/2 log s(-(-2)): 1.313262 + 0.156631 + 0.063464
        (pl.nca_pair_loss, 1.533357),
        # -log s(-1) - log s(2): 1.313262 + 0.126928
        (pl.bco_pair_loss, 1.440190),
        # (w - 1/2)^2 + (l + 1/2)^2 = 2.25 + 2.25
        (pl.sppo_hard_loss, 4.5),
        # 1 - s(-1) + s(-2) = 1 - 0.268941 + 0.119203
        (pl.apo_zero_loss, 0.850262),
        # s(-1) + 1 - s(1) = 0.268941 + 0.268941
        (pl.apo_down_loss, 0.537882),
    ],
)
def test_per_response_losses_hand_worked(loss, expected):
    assert loss(*ONE_PAIR, beta=1.0)[0].item() == pytest.approx(expected, abs=1e-6)


def test_sppo_hard_scales_its_targets_with_beta():
    """beta 0.25: targets +-2; (-1 - 2)^2 + (-2 + 2)^2 = 9."""
    assert pl.sppo_hard_loss(*ONE_PAIR, beta=0.25)[0].item() == pytest.approx(9.0)


def test_apo_zero_raises_the_chosen_and_lowers_the_rejected():
    pc, pr = t(-1.0, requires_grad=True), t(-2.0, requires_grad=True)
    pl.apo_zero_loss(pc, pr, torch.zeros(1), torch.zeros(1), beta=1.0)[0].sum().backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # descent: chosen up, rejected down


def test_exo_pair_hand_worked_and_zero_at_its_target():
    """e 0.1, z = 1: q = (0.731059, 0.268941); 0.731059 (-0.313262 - log 0.9) + 0.268941 (-1.313262 - log 0.1)
    = 0.731059 * -0.207901 + 0.268941 * 0.989323 = -0.151988 + 0.266070 = 0.114082; at z = log(0.9 / 0.1)
    the policy's choice is the labels' (0.9, 0.1): 0."""
    assert pl.exo_pair_loss(*ONE_PAIR, beta=1.0, exo_epsilon=0.1)[0].item() == pytest.approx(0.114082, abs=1e-6)
    at_target = (t(math.log(9.0)), torch.zeros(1), torch.zeros(1), torch.zeros(1))
    assert pl.exo_pair_loss(*at_target, beta=1.0, exo_epsilon=0.1)[0].item() == pytest.approx(0.0, abs=1e-6)


def test_discopop_hand_worked():
    """tau 1, z = 1: m = s(1); (1 - s(1)) softplus(-1) + s(1) e^-1 = 0.268941 * 0.313262 + 0.268941 = 0.353190.
    z = 0: m = 1/2 whatever tau: (log 2 + 1) / 2 = 0.846574."""
    assert pl.discopop_loss(*ONE_PAIR, beta=1.0, discopop_tau=1.0)[0].item() == pytest.approx(0.353190, abs=1e-6)
    zero = (torch.zeros(1),) * 4
    assert pl.discopop_loss(*zero, beta=1.0, discopop_tau=0.05)[0].item() == pytest.approx(0.846574, abs=1e-6)


# Two pairs: policy chosen -1, -3, rejected -2, -1; reference chosen -1, 0, rejected 0, -2.
TWO_PAIRS = (t(-1.0, -3.0), t(-2.0, -1.0), t(-1.0, 0.0), t(0.0, -2.0))


def test_aot_compares_the_sorted_margins():
    """Policy margins (1, -2) sorted (-2, 1); reference margins (-1, 2) sorted (-1, 2): d = (-1, -1), each
    softplus(1) = 1.313262. Pair by pair (2 and -4) it would be (0.126928, 4.018150)."""
    losses, chosen, rejected = pl.aot_loss(*TWO_PAIRS, beta=1.0, label_smoothing=0.0)
    assert losses.tolist() == pytest.approx([1.313262, 1.313262], abs=1e-6)
    assert chosen.tolist() == pytest.approx([0.0, -3.0]) and rejected.tolist() == pytest.approx([-2.0, 1.0])


def test_aot_unpaired_compares_the_sorted_log_ratios():
    """w = (0, -3) sorted (-3, 0); l = (-2, 1) sorted (-2, 1): d = (-1, -1), each softplus(1); with label
    smoothing 0.1: 0.9 softplus(1) + 0.1 softplus(-1) = 1.181936 + 0.031326 = 1.213262."""
    assert pl.aot_unpaired_loss(*TWO_PAIRS, beta=1.0, label_smoothing=0.0)[0].tolist() == pytest.approx(
        [1.313262, 1.313262], abs=1e-6)
    assert pl.aot_unpaired_loss(*TWO_PAIRS, beta=1.0, label_smoothing=0.1)[0].tolist() == pytest.approx(
        [1.213262, 1.213262], abs=1e-6)


@pytest.mark.parametrize("loss", [pl.nca_pair_loss, pl.bco_pair_loss, pl.sppo_hard_loss, pl.apo_zero_loss,
                                  pl.apo_down_loss, pl.hinge_loss])
def test_rewards_are_beta_times_each_logratio_detached(loss):
    pc = t(-1.0, -3.0, requires_grad=True)
    _, chosen, rejected = loss(pc, *TWO_PAIRS[1:], beta=0.5)
    assert chosen.tolist() == pytest.approx([0.0, -1.5]) and rejected.tolist() == pytest.approx([-1.0, 0.5])
    assert not chosen.requires_grad


def test_sigmoid_norm_hand_worked():
    """Chosen log-ratio -1 over 2 tokens, rejected -2 over 4: -0.5 - -0.5 = 0 -> log 2 = 0.693147; rejected over 1
    token: -0.5 - -2 = 1.5 -> softplus(-1.5) = 0.201413; with forward KL the scores 1 - e (=-1.718282) / 2 and
    1 - e^2 (=-6.389056) / 1: -0.859141 + 6.389056 = 5.529915 -> softplus(-5.529915) = 0.003958."""
    n = lambda *v: torch.tensor(v)  # noqa: E731
    assert pl.sigmoid_norm_loss(*ONE_PAIR, n(2), n(4), beta=1.0)[0].item() == pytest.approx(0.693147, abs=1e-6)
    assert pl.sigmoid_norm_loss(*ONE_PAIR, n(2), n(1), beta=1.0)[0].item() == pytest.approx(0.201413, abs=1e-6)
    assert pl.sigmoid_norm_loss(*ONE_PAIR, n(2), n(1), beta=1.0, f_divergence="forward_kl")[0].item() == pytest.approx(
        0.003958, abs=1e-6)
