"""The one place that computes sequence log-probs: shift, mask, gather, sum and mean.

Instead of running the model's full forward (which materializes logits for every position,
prompt included) we run its decoder, by default on the batch's real tokens only (`upo.packing`),
keep only the hidden states that predict completion tokens, and apply the LM head to those, in
chunks (`completion_token_logps`). `cross_entropy` then gives each token's log-prob without keeping
a separate log-softmax over the vocabulary. The two responses of a pair can share one copy of their
prompt (`shared_prompt`, `upo.packing.pack_pairs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from upo.packing import (
    Packing,
    PromptCache,
    pack,
    pack_after_prompts,
    pack_pairs,
    packed_attention_for,
    supports_packing,
    varlen_attn,
)
from upo.pair_weighting import ld_token_weights, wpo_aligned_logps


@dataclass
class SequenceLogps:
    sum: torch.Tensor  # [N] summed log-prob of the completion tokens (fp32)
    mean: torch.Tensor  # [N] per-token mean
    num_tokens: torch.Tensor  # [N] completion tokens per sequence
    prompt_hidden: torch.Tensor | None  # [N, H] detached hidden state at the last prompt token
    prompt_cache: PromptCache | None = None  # with keep_prompts: the prompts' keys and values
    wpo_mean: torch.Tensor | None = None  # [N] with wpo: mean of WPO's aligned log-probs (detached)


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


def prompt_lengths(attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor | None:
    """[N] tokens before each row's first completion token, when every row of a right-padded batch
    is a non-empty prompt followed by a non-empty completion that runs to the row's end; else None."""
    prompt = loss_mask.int().argmax(1)
    completion = loss_mask.sum(1)
    ok = (prompt > 0) & (completion > 0) & (completion == attention_mask.sum(1) - prompt)
    return prompt if bool(ok.all()) else None


def shared_prompt_lengths(input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor | None:
    """[B] prompt lengths when rows i and B + i of a right-padded batch [2B, T] are pairs that can
    share their prompt (`prompt_lengths`, the same prompt tokens in both), else None: a paired batch
    from `collate_pairs`, or any batch that happens to have that shape."""
    n = input_ids.shape[0]
    prompt = prompt_lengths(attention_mask, loss_mask) if n % 2 == 0 else None
    if prompt is None:
        return None
    b = n // 2
    in_prompt = torch.arange(input_ids.shape[1], device=input_ids.device) < prompt[:b, None]  # [B, T]
    same = bool((prompt[:b] == prompt[b:]).all() and ((input_ids[:b] == input_ids[b:]) | ~in_prompt).all())
    return prompt[:b] if same else None


def _prompt_ids(input_ids: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """[sum(prompt)] the prompt tokens of every row, rows in order."""
    return input_ids[torch.arange(input_ids.shape[1], device=input_ids.device) < prompt[:, None]]


def _cached_prompt_lengths(input_ids, attention_mask, loss_mask, cache: PromptCache) -> torch.Tensor | None:
    """[N] prompt lengths when the batch's rows start with exactly the prompts `cache` holds, else None."""
    prompt = prompt_lengths(attention_mask, loss_mask)
    if prompt is None or prompt.shape != cache.lengths.shape or not bool((prompt == cache.lengths).all()):
        return None
    return prompt if torch.equal(_prompt_ids(input_ids, prompt), cache.ids) else None


def _shares_exactly(device: torch.device) -> bool:
    """Shared prompts and prompt caches need attention with an explicit mask or a cached prefix: the
    padded path of `packed_attention`. Where the varlen kernel would run instead (CUDA, torch >=
    2.10), sharing would trade it for the padded path, so it stays off there (`upo.packing` says
    what an exact CUDA route would be)."""
    return not (device.type == "cuda" and varlen_attn is not None)


def _packing(input_ids, attention_mask, loss_mask, base: str, shared_prompt: bool, keep_prompts: bool,
             prompt_cache: PromptCache | None) -> tuple[Packing, torch.Tensor | None]:
    """How `sequence_logps` packs a right-padded batch: pairs with one prompt (`shared_prompt`), rows
    after the prompts of `prompt_cache`, or every row whole; and with `keep_prompts` (whole rows
    only) the [N] prompt lengths whose keys and values attention keeps, else None."""
    exact = _shares_exactly(input_ids.device)
    pairs = shared_prompt_lengths(input_ids, attention_mask, loss_mask) if shared_prompt and exact else None
    if pairs is not None:
        return pack_pairs(attention_mask, pairs, base), None
    cached = None
    if prompt_cache is not None and exact:
        cached = _cached_prompt_lengths(input_ids, attention_mask, loss_mask, prompt_cache)
    if cached is not None:
        return pack_after_prompts(attention_mask, cached, prompt_cache, base), None
    packing = pack(attention_mask, base)
    kept = prompt_lengths(attention_mask, loss_mask) if keep_prompts and exact else None
    if kept is not None:  # every prompt token but the last, which the later forward runs again
        columns = torch.arange(input_ids.shape[1], device=input_ids.device)
        packing.keep = (packing.row_starts[:, None] + columns)[columns < kept[:, None] - 1]
    return packing, kept


def completion_token_logps(model, hidden: torch.Tensor, targets: torch.Tensor, chunk_tokens: int | None,
                           wpo: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probs [K] (fp32) of targets [K] given the hidden states [K, H] that predict them: the LM
    head, its post-processing and a cross-entropy, `chunk_tokens` rows at a time; with `wpo` also
    WPO's aligned log-probs [K] (`upo.pair_weighting.wpo_aligned_logps`, detached).

    Only one chunk's logits [chunk, V] exist at once. With gradient each chunk is checkpointed: its
    logits are not kept for backward but computed again there, one chunk at a time, for one more LM
    head matmul on the chunk (2 K H V FLOPs in all, against the 6 K H V of its forward and backward).
    None or a chunk as large as K: one chunk, nothing recomputed.
    """
    lm_head = model.get_output_embeddings()

    def chunk(h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = _logit_postprocess(model.config, lm_head(h)).float()  # [k, V]
        if not wpo:
            return (-F.cross_entropy(logits, t, reduction="none"),)  # [k]
        log_probs = logits.log_softmax(-1)  # [k, V], once for both
        logps = log_probs.gather(-1, t[:, None]).squeeze(-1)
        return logps, wpo_aligned_logps(log_probs, logps)

    if not chunk_tokens or hidden.shape[0] <= chunk_tokens:
        out = chunk(hidden, targets)
    else:
        pieces = zip(hidden.split(chunk_tokens), targets.split(chunk_tokens), strict=True)
        if torch.is_grad_enabled():
            parts = [checkpoint(chunk, h, t, use_reentrant=False, preserve_rng_state=False) for h, t in pieces]
        else:
            parts = [chunk(h, t) for h, t in pieces]
        out = tuple(torch.cat(column) for column in zip(*parts, strict=True))
    return out if wpo else out[0]


def sequence_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_mask: torch.Tensor,
    prompt_last_index: torch.Tensor | None = None,
    padding_free: bool = True,
    shared_prompt: bool = False,
    logits_chunk_tokens: int | None = None,
    keep_prompts: bool = False,
    prompt_cache: PromptCache | None = None,
    ld_alpha: float | None = None,
    wpo: bool = False,
) -> SequenceLogps:
    """Log-probs of the completion tokens of each sequence.

    input_ids, attention_mask: [N, T]; loss_mask: [N, T] bool, True where the token is a completion
    token (its log-prob counts); prompt_last_index: [N] or None, to return the value head's input.
    With `padding_free` (and a right-padded batch and a model `upo.packing` supports) the decoder
    runs on the real tokens only; with `shared_prompt` too, and rows i and N/2 + i pairs with one
    prompt (`shared_prompt_lengths`), each pair's prompt runs once (`upo.packing.pack_pairs`). The
    result is the same up to floating-point rounding. `logits_chunk_tokens`: see
    `completion_token_logps`. With `keep_prompts` the result carries the prompts' keys and values
    (`prompt_cache`, see `upo.packing.PromptCache`); given a `prompt_cache` whose prompts the rows
    start with, the forward runs from each prompt's last token on only (both only where shared
    prompts run). `ld_alpha` (rows i and N/2 + i pairs): LD-DPO's sums, each token past the pair's
    shared length counted ld_alpha times (the per-token means stay plain, as TRL's NLL); `wpo`: also
    WPO's per-sequence mean aligned log-probs (`upo.pair_weighting`). Works for any HF causal LM
    exposing get_decoder()/get_output_embeddings(), wrapped in peft or not.
    """
    decoder = model.get_decoder()
    n, width = input_ids.shape
    right_padded = _right_padded(attention_mask)
    cache = None
    if padding_free and right_padded and supports_packing(model):
        with packed_attention_for(model) as base:
            packing, kept = _packing(input_ids, attention_mask, loss_mask, base, shared_prompt, keep_prompts,
                                     prompt_cache)
            ids = input_ids.flatten().index_select(0, packing.source)  # [M]
            hidden = decoder(input_ids=ids.unsqueeze(0), position_ids=packing.position_ids, use_cache=False,
                             upo_packing=packing).last_hidden_state[0]  # [M, H]
        if packing.attention_calls == 0:
            raise RuntimeError(
                f"{type(model).__name__} does not run its attention through transformers' AttentionInterface, "
                "so its packed sequences would attend to each other; set padding_free: false"
            )
        source, previous, row_starts = packing.source, packing.previous, packing.row_starts
        if kept is not None:
            cache = PromptCache(packing.kept, kept, _prompt_ids(input_ids, kept))
    else:
        # Causal attention never lets a real token see the padding after it, so for a right-padded
        # batch the mask changes nothing we keep; without it attention takes its causal-only path.
        mask = None if right_padded else attention_mask
        hidden = decoder(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
        hidden, ids = hidden.flatten(0, 1), input_ids.flatten()  # [N*T, ...]
        source = torch.arange(n * width, device=ids.device)
        previous = torch.where(source % width == 0, -1, source - 1)
        row_starts = torch.arange(n, device=ids.device) * width
    # Both layouts are now one row of tokens [L] where hidden[previous[t]] predicts ids[t]; previous
    # is -1 where nothing does (an empty prompt's first completion token has nothing before it).
    predicts = loss_mask.flatten().index_select(0, source) & (previous >= 0)  # [L]
    targets = ids[predicts]  # [K]
    token_logps = completion_token_logps(model, hidden.index_select(0, previous[predicts]), targets,
                                         logits_chunk_tokens, wpo)  # [K]
    aligned = None
    if wpo:
        token_logps, aligned = token_logps
    token_rows = source[predicts] // width  # [K] input row of each token
    counts = torch.zeros(n, device=ids.device, dtype=torch.long).index_add(0, token_rows, torch.ones_like(targets))
    wpo_mean = None
    if aligned is not None:
        wpo_mean = torch.zeros(n, device=ids.device, dtype=aligned.dtype).index_add(0, token_rows, aligned)
        wpo_mean = wpo_mean / counts.clamp(min=1)
    sums = torch.zeros(n, device=ids.device, dtype=token_logps.dtype).index_add(0, token_rows, token_logps)
    means = sums / counts.clamp(min=1)
    if ld_alpha is not None:  # the sums weighted, the per-token means plain
        weights = ld_token_weights(loss_mask, ld_alpha).flatten().index_select(0, source)[predicts]
        sums = torch.zeros_like(sums).index_add(0, token_rows, token_logps * weights)
    prompt_hidden = None
    if prompt_last_index is not None:
        prompt_hidden = hidden[row_starts + prompt_last_index].detach()
    return SequenceLogps(sum=sums, mean=means, num_tokens=counts, prompt_hidden=prompt_hidden,
                         prompt_cache=cache, wpo_mean=wpo_mean)


class CompletionLogps(torch.nn.Module):
    """The one trained module: a causal LM, and the value head of the methods that have one, whose
    forward returns completion log-probs (and the values V(x)).

    Accelerate wraps this module (DDP, FSDP, DeepSpeed), so gradient synchronisation hooks see the
    call; calling the LM's decoder directly from the loop would bypass them. Owning the value head
    makes every method one model for Accelerate (DeepSpeed accepts only one per run).
    """

    def __init__(self, lm, value_head: torch.nn.Module | None = None, padding_free: bool = True,
                 shared_prompt: bool = True, logits_chunk_tokens: int | None = 1024, ld_alpha: float | None = None):
        super().__init__()
        self.lm = lm
        self.value_head = value_head
        self.padding_free = padding_free
        self.shared_prompt = shared_prompt
        self.logits_chunk_tokens = logits_chunk_tokens
        self.ld_alpha = ld_alpha  # LD-DPO: every forward's batches are pairs (validated: paired methods only)

    def forward(self, input_ids, attention_mask, loss_mask, prompt_last_index=None, keep_prompts: bool = False,
                prompt_cache: PromptCache | None = None, wpo: bool = False) -> dict:
        """Tensors [N, T] as in `sequence_logps` -> {"sum", "mean", "num_tokens"} [N] each, and with
        `prompt_last_index` [N] also "values" [N]: the value head on the (detached) hidden state at
        the last prompt token; with `keep_prompts`, "prompt_cache" where one was kept (with shared
        prompts on: the two go together), for a later forward's `prompt_cache`; with `wpo`, "wpo_mean"
        [N] (`sequence_logps`)."""
        out = sequence_logps(self.lm, input_ids, attention_mask, loss_mask, prompt_last_index, self.padding_free,
                             self.shared_prompt, self.logits_chunk_tokens, keep_prompts and self.shared_prompt,
                             prompt_cache, self.ld_alpha, wpo)
        result = {"sum": out.sum, "mean": out.mean, "num_tokens": out.num_tokens}
        if prompt_last_index is not None:
            result["values"] = self.value_head(out.prompt_hidden)
        if out.prompt_cache is not None:
            result["prompt_cache"] = out.prompt_cache
        if out.wpo_mean is not None:
            result["wpo_mean"] = out.wpo_mean
        return result

    def tie_weights(self) -> None:
        """Re-tie the LM's shared weights (input and output embeddings). Accelerate's FSDP2 set-up with
        cpu_ram_efficient_loading moves the module to the meta device and then calls this; without it
        the two embeddings would come back as separate parameters and train apart."""
        self.lm.tie_weights()
