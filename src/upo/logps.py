"""The one place that computes sequence log-probs: shift, mask, gather, sum and mean.

Instead of running the model's full forward (which materializes logits for every position,
prompt included) we run its decoder, by default on the batch's real tokens only (`upo.packing`),
keep only the hidden states that predict completion tokens, and apply the LM head to those. `cross_entropy` then gives each token's log-prob without keeping a
separate log-softmax over the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from upo.packing import pack, packed_attention_for, supports_packing


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
    padding_free: bool = True,
) -> SequenceLogps:
    """Log-probs of the completion tokens of each sequence.

    input_ids, attention_mask: [N, T]; loss_mask: [N, T] bool, True where the token is a completion
    token (its log-prob counts); prompt_last_index: [N] or None, to return the value head's input.
    With `padding_free` (and a right-padded batch and a model `upo.packing` supports) the decoder
    runs on the real tokens only; the result is the same up to floating-point rounding.
    Works for any HF causal LM exposing get_decoder()/get_output_embeddings(), wrapped in peft or not.
    """
    decoder = model.get_decoder()
    lm_head = model.get_output_embeddings()
    n, width = input_ids.shape
    right_padded = _right_padded(attention_mask)
    if padding_free and right_padded and supports_packing(model):
        with packed_attention_for(model) as base:
            packing = pack(attention_mask, base)
            ids = input_ids.flatten().index_select(0, packing.index)  # [M]
            hidden = decoder(input_ids=ids.unsqueeze(0), position_ids=packing.position_ids, use_cache=False,
                             upo_packing=packing).last_hidden_state[0]  # [M, H]
        if packing.attention_calls == 0:
            raise RuntimeError(
                f"{type(model).__name__} does not run its attention through transformers' AttentionInterface, "
                "so its packed sequences would attend to each other; set padding_free: false"
            )
        completion = loss_mask.flatten().index_select(0, packing.index)  # [M]
        starts = packing.starts
    else:
        # Causal attention never lets a real token see the padding after it, so for a right-padded
        # batch the mask changes nothing we keep; without it attention takes its causal-only path.
        mask = None if right_padded else attention_mask
        hidden = decoder(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
        hidden, ids, completion = hidden.flatten(0, 1), input_ids.flatten(), loss_mask.flatten()  # [N*T, ...]
        starts = torch.arange(n, device=input_ids.device) * width
    # Both layouts are now one row of tokens where hidden[t] predicts ids[t + 1] unless t + 1 starts
    # a sequence (an empty prompt's first completion token has nothing before it to predict it).
    row = torch.zeros_like(ids).index_fill(0, starts[1:], 1).cumsum(0)  # [L] sequence of each token
    predicts = completion.clone()
    predicts[starts] = False
    predicts = predicts[1:]  # [L-1] hidden[t] predicts a completion token
    selected = hidden[:-1][predicts]  # [K, H]
    targets = ids[1:][predicts]  # [K]
    logits = _logit_postprocess(model.config, lm_head(selected))  # [K, V]
    token_logps = -F.cross_entropy(logits.float(), targets, reduction="none")  # [K]
    token_rows = row[1:][predicts]  # [K]
    sums = torch.zeros(n, device=ids.device, dtype=token_logps.dtype).index_add(0, token_rows, token_logps)
    counts = torch.zeros(n, device=ids.device, dtype=torch.long).index_add(0, token_rows, torch.ones_like(targets))
    prompt_hidden = None
    if prompt_last_index is not None:
        prompt_hidden = hidden[starts + prompt_last_index].detach()
    return SequenceLogps(sum=sums, mean=sums / counts.clamp(min=1), num_tokens=counts, prompt_hidden=prompt_hidden)


class CompletionLogps(torch.nn.Module):
    """The one trained module: a causal LM, and the value head of the methods that have one, whose
    forward returns completion log-probs (and the values V(x)).

    Accelerate wraps this module (DDP, FSDP, DeepSpeed), so gradient synchronisation hooks see the
    call; calling the LM's decoder directly from the loop would bypass them. Owning the value head
    makes every method one model for Accelerate (DeepSpeed accepts only one per run).
    """

    def __init__(self, lm, value_head: torch.nn.Module | None = None, padding_free: bool = True):
        super().__init__()
        self.lm = lm
        self.value_head = value_head
        self.padding_free = padding_free

    def forward(self, input_ids, attention_mask, loss_mask, prompt_last_index=None) -> dict[str, torch.Tensor]:
        """Tensors [N, T] as in `sequence_logps` -> {"sum", "mean", "num_tokens"} [N] each, and with
        `prompt_last_index` [N] also "values" [N]: the value head on the (detached) hidden state at
        the last prompt token."""
        out = sequence_logps(self.lm, input_ids, attention_mask, loss_mask, prompt_last_index, self.padding_free)
        result = {"sum": out.sum, "mean": out.mean, "num_tokens": out.num_tokens}
        if prompt_last_index is not None:
            result["values"] = self.value_head(out.prompt_hidden)
        return result

    def tie_weights(self) -> None:
        """Re-tie the LM's shared weights (input and output embeddings). Accelerate's FSDP2 set-up with
        cpu_ram_efficient_loading moves the module to the meta device and then calls this; without it
        the two embeddings would come back as separate parameters and train apart."""
        self.lm.tie_weights()
