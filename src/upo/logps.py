"""The one place that computes sequence log-probs: shift, mask, gather, sum and mean.

Instead of running the model's full forward (which materializes logits for every position,
prompt included) we run its decoder, keep only the hidden states that predict completion tokens,
and apply the LM head to those. `cross_entropy` then gives each token's log-prob without keeping a
separate log-softmax over the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class SequenceLogps:
    sum: torch.Tensor  # [N] summed log-prob of the completion tokens (fp32)
    mean: torch.Tensor  # [N] per-token mean
    num_tokens: torch.Tensor  # [N] completion tokens per sequence
    prompt_hidden: torch.Tensor | None  # [N, H] detached hidden state at the last prompt token


def _logit_postprocess(config, logits: torch.Tensor) -> torch.Tensor:
    """Apply what some architectures do after the LM head (Gemma-2 soft-capping, Cohere scale)."""
    scale = getattr(config, "logit_scale", None)
    if isinstance(scale, (int, float)):
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _right_padded(attention_mask: torch.Tensor) -> bool:
    """True when every row is ones followed by zeros (padding only at the end)."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


def sequence_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_mask: torch.Tensor,
    prompt_last_index: torch.Tensor | None = None,
) -> SequenceLogps:
    """Log-probs of the completion tokens of each sequence.

    input_ids, attention_mask: [N, T]; loss_mask: [N, T] bool, True where the token is a completion
    token (its log-prob counts); prompt_last_index: [N] or None, to return the value head's input.
    Works for any HF causal LM exposing get_decoder()/get_output_embeddings(), wrapped in peft or not.
    """
    decoder = model.get_decoder()
    lm_head = model.get_output_embeddings()
    if _right_padded(attention_mask):
        # Causal attention never lets a real token see the padding after it, so the mask changes
        # nothing we keep; without it attention takes its faster causal-only path.
        attention_mask = None
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    # hidden[:, t] predicts input_ids[:, t + 1]
    target_mask = loss_mask[:, 1:]  # [N, T-1]
    selected = hidden[:, :-1][target_mask]  # [M, H] only positions that predict completion tokens
    targets = input_ids[:, 1:][target_mask]  # [M]
    logits = _logit_postprocess(model.config, lm_head(selected))  # [M, V]
    token_logps = -F.cross_entropy(logits.float(), targets, reduction="none")  # [M]
    n = input_ids.shape[0]
    rows = torch.arange(n, device=input_ids.device).unsqueeze(1).expand_as(target_mask)[target_mask]  # [M]
    sums = torch.zeros(n, device=input_ids.device, dtype=token_logps.dtype).index_add(0, rows, token_logps)
    counts = target_mask.sum(dim=1)  # [N]
    prompt_hidden = None
    if prompt_last_index is not None:
        prompt_hidden = hidden[torch.arange(n, device=hidden.device), prompt_last_index].detach()
    return SequenceLogps(sum=sums, mean=sums / counts.clamp(min=1), num_tokens=counts, prompt_hidden=prompt_hidden)


class CompletionLogps(torch.nn.Module):
    """Wraps a causal LM so that *its* forward returns completion log-probs.

    Accelerate wraps this module (DDP, FSDP, ...), so gradient synchronisation hooks see the call;
    calling the LM's decoder directly from the loop would bypass them.
    """

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask, loss_mask, prompt_last_index=None) -> dict[str, torch.Tensor]:
        out = sequence_logps(self.lm, input_ids, attention_mask, loss_mask, prompt_last_index)
        result = {"sum": out.sum, "mean": out.mean, "num_tokens": out.num_tokens}
        if out.prompt_hidden is not None:
            result["prompt_hidden"] = out.prompt_hidden
        return result
