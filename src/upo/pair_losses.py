"""DPO's relatives: pairwise losses of the same four summed log-probs as `upo.losses.dpo_loss`, as
pure functions. Each is one of TRL 1.16's DPOTrainer loss_types (same name, same formula:
tests/test_against_trl.py checks them against TRL's own code where TRL is installed).

Shapes: B = preference pairs; every input is [B], log-probs summed over the response tokens.
With w = logratio_w = log pi(y_w|x) - log pi_ref(y_w|x), l = logratio_l, h = w - l and s = sigmoid:

    hinge         max(0, 1 - beta h)                                     SLiC (Zhao et al. 2023)
    robust        ((1 - e) l(z) - e l(-z)) / (1 - 2e), l = -log s, z = beta h   (Chowdhury et al. 2024)
    nca_pair      -log s(beta w) - 1/2 log s(-beta w) - 1/2 log s(-beta l)          NCA (Chen et al. 2024)
    bco_pair      -log s(beta w) - log s(-beta l)                       BCO, pairwise (Jung et al. 2024)
    sppo_hard     (w - 1/(2 beta))^2 + (l + 1/(2 beta))^2       SPPO, hard labels (Wu et al. 2024)
    apo_zero      1 - s(beta w) + s(beta l)                              APO-zero (D'Oosterlinck et al. 2024)
    apo_down      s(beta w) + 1 - s(beta h)                              APO-down (same paper)
    exo_pair      KL(q || p), q = (s(beta h), s(-beta h)), p = (1 - e, e)   EXO (Ji et al. 2024)
    discopop      (1 - m) (-log s(beta h)) + m exp(-beta h), m = s(beta h / tau)   DiscoPOP (Lu et al. 2024)
    aot           DPO's loss on sort(logp_w - logp_l) - sort(logp_ref_w - logp_ref_l)   AOT (Melnyk et al. 2024)
    aot_unpaired  DPO's loss on sort(w) - sort(l)                        AOT, unpaired (same paper)
    sigmoid_norm  -log s(beta (w / n_w - l / n_l)), n = the response's tokens      TRL's length-normalized DPO

NCA, BCO, SPPO and APO look at each response's log-ratio alone, not only at the margin: they can
push the chosen response's likelihood up (DPO only separates the two). AOT's two variants sort
over the batch, so a pair's loss depends on the other pairs of its micro-batch (as in TRL: each
process's batch; upo: each micro-batch). Each function returns the per-pair losses and the
rewards the step logs as `rewards/*`, beta times each log-ratio, detached. In the code, pc, pr, rc, rr
are the policy's and the reference's chosen and rejected log-probs, and lw, ll are w and l.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from upo.losses import f_divergence_scores, smoothed_sigmoid_loss


def logratios(
    policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
) -> tuple[Tensor, Tensor]:
    """[B] each: (log pi(y_w|x) - log pi_ref(y_w|x), log pi(y_l|x) - log pi_ref(y_l|x))."""
    return policy_chosen_logps - reference_chosen_logps, policy_rejected_logps - reference_rejected_logps


def _with_rewards(losses: Tensor, lw: Tensor, ll: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    return losses, beta * lw.detach(), beta * ll.detach()


def hinge_loss(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, *, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """SLiC's hinge on DPO's margin (Zhao et al. 2023, arXiv 2305.10425): [B] max(0, 1 - beta h),
    zero once the margin reaches 1 / beta."""
    lw, ll = logratios(pc, pr, rc, rr)
    return _with_rewards(torch.relu(1.0 - beta * (lw - ll)), lw, ll, beta)


def robust_dpo_loss(
    pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, *, beta: float, label_smoothing: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Robust DPO (Chowdhury et al. 2024, arXiv 2403.00409): an unbiased DPO loss when each label is
    flipped with probability e = label_smoothing < 1/2. [B] ((1 - e) l(z) - e l(-z)) / (1 - 2e),
    l(z) = -log sigmoid(z), z = beta h; e = 0 is DPO. Unlike conservative DPO's it can go below 0
    (it is unbiased, not a bound)."""
    lw, ll = logratios(pc, pr, rc, rr)
    z, eps = beta * (lw - ll), label_smoothing
    losses = (-(1.0 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1.0 - 2.0 * eps)  # [B]
    return _with_rewards(losses, lw, ll, beta)


def nca_pair_loss(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, *, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """NCA for pairs (Chen et al. 2024, arXiv 2402.05369, "Noise Contrastive Alignment"): [B]
    -log s(beta w) - 1/2 log s(-beta w) - 1/2 log s(-beta l). The chosen reward settles where
    3/2 s(beta w) = 1 (beta w = log 2), the rejected one is pushed down: the chosen likelihood does not
    fall as DPO's can."""
    lw, ll = logratios(pc, pr, rc, rr)
    cw, cl = beta * lw, beta * ll
    losses = -F.logsigmoid(cw) - 0.5 * F.logsigmoid(-cw) - 0.5 * F.logsigmoid(-cl)  # [B]
    return _with_rewards(losses, lw, ll, beta)


def bco_pair_loss(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, *, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """BCO on pairs (Jung et al. 2024, arXiv 2404.04656), as TRL's DPO loss_type bco_pair: a binary
    classifier of chosen (reward > 0) against rejected (reward < 0), with no reward shift. [B]
    -log s(beta w) - log s(-beta l)."""
    lw, ll = logratios(pc, pr, rc, rr)
    return _with_rewards(-F.logsigmoid(beta * lw) - F.logsigmoid(-beta * ll), lw, ll, beta)


def sppo_hard_loss(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, *, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """SPPO with hard win probabilities (Wu et al. 2024, arXiv 2405.00675; P = 1 for the chosen, 0 for
    the rejected): [B] (w - 1/(2 beta))^2 + (l + 1/(2 beta))^2, each log-ratio regressed to +-1/(2 beta)."""
    lw, ll = logratios(pc, pr, rc, rr)
    target = 0.5 / beta
    return _with_rewards((lw - target) ** 2 + (ll + target) ** 2, lw, ll, beta)


def apo_zero_loss(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, *, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """APO-zero (D'Oosterlinck et al. 2024, arXiv 2408.06266, eq. 7), for chosen responses better than
    the model's own: [B] 1 - s(beta w) + s(beta l): the chosen likelihood up, the rejected down."""
    lw, ll = logratios(pc, pr, rc, rr)
    return _with_rewards(1.0 - torch.sigmoid(beta * lw) + torch.sigmoid(beta * ll), lw, ll, beta)


def apo_down_loss(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, *, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """APO-down (same paper, eq. 8), for chosen responses worse than the model's own: [B]
    s(beta w) + 1 - s(beta (w - l)): both likelihoods down, the rejected more."""
    lw, ll = logratios(pc, pr, rc, rr)
    return _with_rewards(torch.sigmoid(beta * lw) + 1.0 - torch.sigmoid(beta * (lw - ll)), lw, ll, beta)


def exo_pair_loss(
    pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, *, beta: float, exo_epsilon: float
) -> tuple[Tensor, Tensor, Tensor]:
    """EXO for pairs (Ji et al. 2024, arXiv 2402.00856, eq. 16): the reverse KL from the policy's
    choice q = softmax(beta w, beta l) = (s(beta h), s(-beta h)) to the labels' p = (1 - e, e),
    e = exo_epsilon in (0, 1/2): [B] q_w (log q_w - log(1 - e)) + q_l (log q_l - log e). Mode-seeking
    where DPO's forward KL is mean-seeking; its minimum, 0, is at beta h = log((1 - e) / e)."""
    lw, ll = logratios(pc, pr, rc, rr)
    z = beta * (lw - ll)
    log_qw, log_ql = F.logsigmoid(z), F.logsigmoid(-z)
    losses = log_qw.exp() * (log_qw - math.log1p(-exo_epsilon)) + log_ql.exp() * (log_ql - math.log(exo_epsilon))
    return _with_rewards(losses, lw, ll, beta)


def discopop_loss(
    pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, *, beta: float, discopop_tau: float
) -> tuple[Tensor, Tensor, Tensor]:
    """DiscoPOP, the log-ratio modulated loss (Lu et al. 2024, arXiv 2406.08414, eq. 5): [B]
    (1 - m) (-log s(z)) + m exp(-z), z = beta h, m = s(z / tau): DPO's logistic loss below a zero
    margin, blended into an exponential loss above it (tau = discopop_tau, its authors' 0.05)."""
    lw, ll = logratios(pc, pr, rc, rr)
    z = beta * (lw - ll)
    m = torch.sigmoid(z / discopop_tau)
    return _with_rewards((1.0 - m) * -F.logsigmoid(z) + m * torch.exp(-z), lw, ll, beta)


def aot_loss(
    pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, *, beta: float, label_smoothing: float
) -> tuple[Tensor, Tensor, Tensor]:
    """AOT, paired (Melnyk et al. 2024, arXiv 2406.05882): DPO's loss (conservative with
    label_smoothing) on d_i = sort(logp_w - logp_l)_i - sort(logp_ref_w - logp_ref_l)_i, the i-th
    smallest policy margin against the i-th smallest reference margin: first-order stochastic
    dominance of the policy's margins over the reference's. The batch is sorted: loss i is not pair i's."""
    lw, ll = logratios(pc, pr, rc, rr)
    d = torch.sort(pc - pr).values - torch.sort(rc - rr).values  # [B]
    return _with_rewards(smoothed_sigmoid_loss(beta * d, label_smoothing), lw, ll, beta)


def aot_unpaired_loss(
    pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, *, beta: float, label_smoothing: float
) -> tuple[Tensor, Tensor, Tensor]:
    """AOT, unpaired (same paper): DPO's loss on sort(w)_i - sort(l)_i, the chosen log-ratios'
    distribution made to dominate the rejected ones', whatever pair each came from."""
    lw, ll = logratios(pc, pr, rc, rr)
    d = torch.sort(lw).values - torch.sort(ll).values  # [B]
    return _with_rewards(smoothed_sigmoid_loss(beta * d, label_smoothing), lw, ll, beta)


def sigmoid_norm_loss(
    pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, chosen_tokens: Tensor, rejected_tokens: Tensor, *, beta: float,
    f_divergence: str = "reverse_kl", f_alpha: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """TRL's sigmoid_norm: DPO on each response's score over its length, [B] -log s(beta (f'(w) / n_w -
    f'(l) / n_l)), n = completion tokens (at least 1), f' the f-divergence's score (`f_divergence_scores`;
    reverse KL: the log-ratio itself, so each is a per-token mean log-ratio)."""
    lw, ll = logratios(pc, pr, rc, rr)
    sw = f_divergence_scores(lw, f_divergence, f_alpha) / chosen_tokens.clamp(min=1)
    sl = f_divergence_scores(ll, f_divergence, f_alpha) / rejected_tokens.clamp(min=1)
    return _with_rewards(-F.logsigmoid(beta * (sw - sl)), lw, ll, beta)
