"""Two ways of weighting a pair's log-probs or its loss, pure functions of the batch's tensors.

- LD-DPO (Liu et al. 2024, arXiv 2409.06411; TRL's `ld_alpha`): in each response's summed log-prob
  the tokens past the pair's shared length (the shorter response's) count `ld_alpha` times, so the
  longer response's extra tokens weigh less in the log-ratios (the policy's and the reference's).
- WPO (Zhou et al. 2024, arXiv 2406.11827, its eq. 2; TRL's `use_weighting`): each pair's loss is
  multiplied by w(chosen) * w(rejected), w(y) = exp(mean over y's tokens of log p(y_t) - log sum_v
  p(v)^2) under the policy, without gradient: pairs the policy itself is likely to produce weigh more.

A paired batch holds B pairs as 2B rows: rows [0, B) chosen, rows [B, 2B) rejected.
"""

from __future__ import annotations

import torch
from torch import Tensor


def ld_token_weights(loss_mask: Tensor, ld_alpha: float) -> Tensor:
    """[2B, T] fp32 weight of each completion token of a paired batch (`loss_mask` [2B, T], True at
    completion tokens): 1 for a response's first min(len chosen, len rejected) completion tokens,
    `ld_alpha` after them, 0 off the completion."""
    mask = loss_mask.bool()
    position = mask.long().cumsum(1)  # [2B, T] 1-based position within the completion
    lengths = mask.sum(1)
    half = lengths.shape[0] // 2
    shared = torch.minimum(lengths[:half], lengths[half:]).repeat(2)  # [2B]
    weights = torch.where(position > shared[:, None], ld_alpha, 1.0)
    return weights.float() * mask


def wpo_aligned_logps(log_probs: Tensor, token_logps: Tensor) -> Tensor:
    """[K] log p(y_t) - log sum_v p(v)^2 of each token, from the log-softmax [K, V] of its logits and
    its log-prob [K]: WPO's "aligned" log-prob, detached."""
    with torch.no_grad():
        return token_logps.detach() - torch.logsumexp(2 * log_probs, dim=-1)


def wpo_pair_weights(aligned_mean_logps: Tensor) -> Tensor:
    """[B] WPO's weight of each pair, exp(chosen's mean aligned log-prob) * exp(rejected's), from the
    [2B] per-response means (`wpo_aligned_logps` averaged over each response's tokens)."""
    weights = torch.exp(aligned_mean_logps.detach())
    half = weights.shape[0] // 2
    return weights[:half] * weights[half:]
