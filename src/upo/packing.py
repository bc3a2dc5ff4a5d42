"""Padding-free forward passes: the decoder runs on a batch's real tokens only.

A right-padded batch [N, T] becomes one row of its real tokens [1, M] (M = attention_mask.sum()),
with position ids that restart at 0 for every sequence. Every per-token layer (projections, MLP,
norms, rotary embeddings) then does no work on padding. Only attention needs to know where one
sequence ends: `packed_attention`, registered with transformers' AttentionInterface, scatters the
packed queries, keys and values back into the padded [N, heads, T, d] layout, attends causally
within each sequence, and gathers the real rows again. Attention is the only part that still
sees padding; its T x T scores are a small share of the work at these lengths.

On CUDA, in bf16 or fp16, attention itself runs without padding too: torch's flash-attention
varlen kernel (`torch.nn.attention.varlen.varlen_attn`) takes the packed tokens and the sequences'
cumulative lengths directly (`use_varlen_kernel` says when). Elsewhere (CPU, fp32, soft-capping)
attention takes the padded layout above.

Paired batches can share their prompts (`pack_pairs`): each pair becomes one packed sequence
[prompt, chosen response, rejected response], the prompt computed once. The rejected response's
positions continue from the prompt's end, as the chosen one's do, and its tokens see the prompt
and their own earlier tokens, never the chosen response's (`Packing.allowed`). Every token then sees
exactly what it sees in its own unshared sequence, so log-probs and gradients are those of the
unshared forward. That mask is not causal within the packed sequence, so the varlen kernel cannot
take it as is: shared packings take the padded path with an explicit mask. (An exact CUDA route
would be one varlen call whose query sequences are [prompt, chosen] and [rejected] and whose key
sequences are [prompt, chosen] and [prompt, rejected]: flash-attention aligns a shorter query
sequence's causal mask to the end of its keys. It is not built, for want of a GPU to test it on;
`upo.logps` keeps shared prompts off where the varlen kernel would run.)

A forward can also keep its prompts' keys and values (`Packing.keep`, `PromptCache`) for a later
forward, without gradient, of other completions of the same prompts (KTO's mismatched sequences):
that one runs only from each prompt's last token on, its attention reading the earlier prompt
tokens' keys and values from the cache (`pack_after_prompts`).

This is transformers' own mechanism for custom attention kernels: the attention modules call the
function registered under `config._attn_implementation`, forwarding the extra keyword arguments
given to the decoder (here `upo_packing`). Models whose attention does not go through that
interface, or that run flash-attention kernels, keep the padded path (`supports_packing`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

try:  # torch >= 2.10
    from torch.nn.attention.varlen import varlen_attn
except ImportError:
    varlen_attn = None

ATTENTION_NAME = "upo_packed"
# The attention kernels packed_attention stands in for: the same math (sdpa: torch's fused kernel;
# eager: `_eager`, transformers' eager attention reorganised for speed), on the padded layout.
PACKABLE = ("eager", "sdpa")


@dataclass
class PromptCache:
    """Keys and values of every row's prompt but its last token, per attention layer, kept (detached)
    from a forward that computed them anyway.

    layers: one (keys, values) per attention layer, each [P, Hkv, d] with P = sum(lengths - 1), rows
    in order; lengths: [N] prompt tokens of each row; ids: [sum(lengths)] the prompts' token ids
    (a later batch may use the cache only for the very same prompts).
    """

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    lengths: torch.Tensor
    ids: torch.Tensor


@dataclass
class Packing:
    """Where the real tokens of a right-padded [N, T] input batch sit in the packed row [M], and
    where the packed sequences sit in attention's padded layout [rows, width].

    source: [M] flat positions (input row * T + column) of the packed tokens, in packed order;
    index: [M] flat positions (sequence * width + offset) of the packed tokens in attention's layout;
    position_ids: [1, M] each token's position within its own (unshared) sequence: its column;
    starts: [rows] index of each packed sequence's first token in the packed row;
    previous: [M] packed index of the token whose hidden state predicts this one, -1 for none;
    row_starts: [N] packed index of each input row's first token (a rejected row's: its pair's
      prompt, so row_starts + column finds any prompt token);
    cu_seqlens, max_length: the same boundaries as flash-attention's varlen kernels take them;
    prompt_lengths, chosen_ends: [rows] with shared prompts (else None): where each packed
      sequence's chosen response starts and ends (offsets within it);
    keep: [P] packed indices of the tokens whose keys and values attention appends to `kept`;
    prefix, prefix_index: a PromptCache whose keys and values attention places at these [P] flat
      positions of its padded layout, before each sequence's own tokens (`pack_after_prompts`);
    attention_calls: how many attention layers ran packed_attention (0 after a forward means the
    model bypassed transformers' AttentionInterface, and its sequences saw each other).

    Without shared prompts the packed sequences are the input rows, so rows = N and width = T.
    """

    source: torch.Tensor
    index: torch.Tensor
    position_ids: torch.Tensor
    starts: torch.Tensor
    previous: torch.Tensor
    row_starts: torch.Tensor
    cu_seqlens: torch.Tensor  # [rows + 1] int32: 0, then the cumulative sequence lengths (varlen kernels)
    max_length: int  # the longest sequence
    rows: int
    width: int
    base_attention: str  # the model's own kernel: "eager" or "sdpa"
    prompt_lengths: torch.Tensor | None = None
    chosen_ends: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    kept: list = field(default_factory=list, repr=False)
    prefix: PromptCache | None = None
    prefix_index: torch.Tensor | None = None
    attention_calls: int = 0
    _masks: dict = field(default_factory=dict, repr=False)  # masks, built once per forward

    @property
    def shared(self) -> bool:
        """True when pairs share their prompt (`pack_pairs`): attention needs `allowed`, not causality."""
        return self.prompt_lengths is not None

    def allowed(self, device, sliding_window: int | None) -> torch.Tensor:
        """[rows, width, width] bool, shared prompts only: query i may see key j. Causal, except that
        rejected tokens (offset >= chosen_end) never see chosen ones (prompt_length <= offset <
        chosen_end); a sliding window is measured in positions, as in the unshared sequences.
        Padding queries see at least themselves, so no row of scores is fully masked."""
        key = ("allowed", device, sliding_window)
        if key not in self._masks:
            i = torch.arange(self.width, device=device)
            query, keys = i[None, :, None], i[None, None, :]
            begin, end = self.prompt_lengths[:, None, None], self.chosen_ends[:, None, None]
            allowed = (keys <= query) & ~((query >= end) & (keys >= begin) & (keys < end))
            if sliding_window:
                position = self.scatter(self.position_ids[0])  # [rows, width], 0 at padding
                allowed &= position[:, :, None] - position[:, None, :] < sliding_window
            self._masks[key] = allowed
        return self._masks[key]

    def additive_mask(self, dtype: torch.dtype, device, sliding_window: int | None) -> torch.Tensor:
        """The mask `_eager` adds to the scores: 0 where allowed, else dtype's min. [width, width]
        causal (padding sits after every real token), or [rows, width, width] with shared prompts."""
        key = (dtype, device, sliding_window)
        if key not in self._masks:
            if self.shared:
                allowed = self.allowed(device, sliding_window)
            else:
                i = torch.arange(self.width, device=device)
                allowed = i[None, :] <= i[:, None]
                if sliding_window:
                    allowed &= i[:, None] - i[None, :] < sliding_window
            self._masks[key] = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(
                ~allowed, torch.finfo(dtype).min)
        return self._masks[key]

    def scatter(self, packed: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """[M, ...] -> [rows, width, ...], zeros at padding (differentiable); with `prefix` [P, ...]
        (cached keys or values), that at prefix_index."""
        out = packed.new_zeros((self.rows * self.width, *packed.shape[1:]))
        out = out.index_copy(0, self.index, packed)
        if prefix is not None:
            out = out.index_copy(0, self.prefix_index, prefix.to(packed.dtype))
        return out.view(self.rows, self.width, *packed.shape[1:])

    def gather(self, padded: torch.Tensor) -> torch.Tensor:
        """[rows, width, ...] -> [M, ...]."""
        return padded.reshape(self.rows * self.width, *padded.shape[2:]).index_select(0, self.index)


def pack(attention_mask: torch.Tensor, base_attention: str) -> Packing:
    """The packing of a right-padded attention_mask [N, T] (ones then zeros in every row)."""
    rows, width = attention_mask.shape
    mask = attention_mask.bool()
    index = mask.flatten().nonzero().squeeze(1)
    lengths = mask.sum(dim=1)
    starts = torch.cumsum(lengths, 0) - lengths
    previous = torch.arange(-1, len(index) - 1, device=mask.device).index_fill(0, starts, -1)
    return Packing(source=index, index=index, position_ids=(index % width).unsqueeze(0), starts=starts,
                   previous=previous, row_starts=starts, cu_seqlens=F.pad(starts + lengths, (1, 0)).to(torch.int32),
                   max_length=int(lengths.max()), rows=rows, width=width, base_attention=base_attention)


def pack_pairs(attention_mask: torch.Tensor, prompt_lengths: torch.Tensor, base_attention: str) -> Packing:
    """The shared-prompt packing of a right-padded paired batch: attention_mask [2B, T], rows i and
    B + i a pair whose first prompt_lengths[i] tokens (prompt_lengths [B], each >= 1) are the same
    prompt, each followed by a non-empty response. Packed sequence i is row i (prompt, chosen), then
    row B + i's response; the response's first token is predicted by the prompt's last."""
    n, width = attention_mask.shape
    b = n // 2
    device = attention_mask.device
    mask = attention_mask.bool()
    column = torch.arange(width, device=device)
    # [B, 2, T]: take row i whole, then row B + i after its prompt; flat order = packed order
    take = torch.stack([mask[:b], mask[b:] & (column >= prompt_lengths[:, None])], dim=1)
    flat = (torch.arange(b, device=device)[:, None, None] + torch.tensor([0, b], device=device)[None, :, None]) * width
    source = (flat + column)[take]  # [M]
    chosen_ends = mask[:b].sum(1)  # [B] prompt + chosen
    lengths = take.sum((1, 2))  # [B] prompt + chosen + rejected
    starts = torch.cumsum(lengths, 0) - lengths
    sequence = torch.repeat_interleave(torch.arange(b, device=device), lengths)  # [M]
    offset = torch.arange(len(source), device=device) - starts[sequence]
    rows_width = int(lengths.max())
    previous = torch.arange(-1, len(source) - 1, device=device).index_fill(0, starts, -1)
    previous[starts + chosen_ends] = starts + prompt_lengths - 1  # the rejected response's first token
    return Packing(source=source, index=sequence * rows_width + offset, position_ids=(source % width).unsqueeze(0),
                   starts=starts, previous=previous, row_starts=starts.repeat(2),
                   cu_seqlens=F.pad(starts + lengths, (1, 0)).to(torch.int32), max_length=rows_width, rows=b,
                   width=rows_width, base_attention=base_attention, prompt_lengths=prompt_lengths,
                   chosen_ends=chosen_ends)


def pack_after_prompts(attention_mask: torch.Tensor, prompt_lengths: torch.Tensor, cache: PromptCache,
                       base_attention: str) -> Packing:
    """The packing of a right-padded batch [N, T] whose rows start with the prompts of `cache`
    (prompt_lengths [N], each >= 1): only each row's tokens from its prompt's last on are packed;
    attention sees the earlier prompt tokens through the cache, at their own positions, so the
    padded layout is each row's full sequence (width = the longest) with the cache at its start."""
    rows, width = attention_mask.shape
    mask = attention_mask.bool()
    column = torch.arange(width, device=mask.device)
    own = mask & (column >= prompt_lengths[:, None] - 1)
    source = own.flatten().nonzero().squeeze(1)
    lengths = own.sum(1)
    starts = torch.cumsum(lengths, 0) - lengths
    full = int(mask.sum(1).max())
    prefix = torch.arange(full, device=mask.device) < prompt_lengths[:, None] - 1  # [N, full]
    previous = torch.arange(-1, len(source) - 1, device=mask.device).index_fill(0, starts, -1)
    return Packing(source=source, index=source // width * full + source % width,
                   position_ids=(source % width).unsqueeze(0), starts=starts, previous=previous,
                   row_starts=starts - prompt_lengths + 1, cu_seqlens=F.pad(starts + lengths, (1, 0)).to(torch.int32),
                   max_length=full, rows=rows, width=full, base_attention=base_attention, prefix=cache,
                   prefix_index=prefix.flatten().nonzero().squeeze(1))


def use_varlen_kernel(device: torch.device, dtype: torch.dtype, dropout: float, softcap: float | None) -> bool:
    """Whether attention runs torch's flash-attention varlen kernel on the packed tokens: torch >= 2.10,
    CUDA, bf16/fp16 (flash attention's dtypes), and neither dropout nor soft-capping (it has neither)."""
    half = dtype in (torch.bfloat16, torch.float16)
    return varlen_attn is not None and device.type == "cuda" and half and not dropout and not softcap


def supports_packing(model) -> bool:
    """True when `model`'s attention goes through transformers' AttentionInterface with a kernel
    packed_attention can stand in for (eager or sdpa)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) in PACKABLE


@contextlib.contextmanager
def packed_attention_for(model):
    """Within the block, `model`'s attention modules call packed_attention; yields the model's own kernel."""
    _register()
    config = model.config
    base = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield base
    finally:
        config._attn_implementation = base


def checkpoint_packed_layers(lm) -> list:
    """Make transformers' activation checkpointing (enabled on `lm`) exact under packed attention;
    returns the checkpointed layers. Its backward reruns each layer outside `packed_attention_for`,
    where the model's own kernel would take the packed tokens for one sequence: each layer's checkpoint
    function reruns it under the attention implementation its forward ran with, and from the
    attention-call count it started at (the layer index of `Packing.kept` and of a prompt cache)."""
    from torch.utils.checkpoint import checkpoint

    config = lm.config

    def run_checkpointed(function, *args):
        attention = config._attn_implementation
        packing = getattr(function, "keywords", {}).get("upo_packing")
        first = packing.attention_calls if packing is not None else 0

        def layer(*inputs):
            saved, config._attn_implementation = config._attn_implementation, attention
            calls = packing.attention_calls if packing is not None else 0
            if packing is not None:
                packing.attention_calls = first
            try:
                return function(*inputs)
            finally:
                config._attn_implementation = saved
                if packing is not None:
                    packing.attention_calls = max(calls, packing.attention_calls)

        return checkpoint(layer, *args, use_reentrant=False)

    layers = [m for m in lm.modules() if getattr(m, "gradient_checkpointing", False)
              and hasattr(m, "_gradient_checkpointing_func")]
    for layer in layers:
        layer._gradient_checkpointing_func = run_checkpointed
    return layers


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, *,
                     upo_packing: Packing | None = None, sliding_window=None, softcap=None, **kwargs):
    """Causal attention within each packed sequence. query [1, Hq, M, d], key/value [1, Hkv, M, d]
    -> (output [1, M, Hq, d], None), the contract of transformers' attention functions."""
    if upo_packing is None:
        raise RuntimeError("packed attention called without `upo_packing`: call the decoder through upo.logps")
    if kwargs.get("s_aux") is not None:
        raise NotImplementedError("attention sinks are not supported by padding-free training; set padding_free: false")
    p = upo_packing
    layer = p.attention_calls  # attention layers run in order
    p.attention_calls += 1
    heads, dim, kv_heads = query.shape[1], query.shape[3], key.shape[1]
    drop = dropout if module.training else 0.0
    scale = scaling if scaling is not None else dim**-0.5
    if p.keep is not None and len(p.kept) == layer:  # once a layer, not again when a checkpointed layer reruns:
        # detached before the select, which then saves nothing for backward (a rerun must save what the forward did)
        p.kept.append(tuple(x[0].detach().transpose(0, 1).index_select(0, p.keep) for x in (key, value)))
    if use_varlen_kernel(query.device, query.dtype, drop, softcap) and not p.shared and p.prefix is None:
        # [1, H, M, d] -> [M, H, d]: no padding anywhere; sliding_window w lets a query see w - 1 keys back
        out = varlen_attn(*(x[0].transpose(0, 1) for x in (query, key, value)), p.cu_seqlens, p.cu_seqlens,
                          p.max_length, p.max_length, scale=scale, enable_gqa=heads != kv_heads,
                          window_size=(sliding_window - 1 if sliding_window else -1, 0))  # fmt: skip
        return out.unsqueeze(0), None  # [1, M, H, d]
    # [1, H, M, d] -> [M, H, d] -> [N, T, H, d] -> [N, H, T, d]
    q = p.scatter(query[0].transpose(0, 1)).transpose(1, 2)
    cached = p.prefix.layers[layer] if p.prefix is not None else (None, None)
    k, v = (p.scatter(x[0].transpose(0, 1), c).transpose(1, 2) for x, c in zip((key, value), cached, strict=True))
    if p.base_attention == "sdpa" and not sliding_window and not softcap:
        mask = p.allowed(q.device, None)[:, None] if p.shared else None  # [rows, 1, width, width]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, is_causal=mask is None,
                                             scale=scale, enable_gqa=heads != kv_heads)
    else:
        out = _eager(q, k, v, p.additive_mask(q.dtype, q.device, sliding_window), scale, drop, softcap)
    # [N, H, T, d] -> [N, T, H, d] -> [M, H, d] -> [1, M, H, d]
    return p.gather(out.transpose(1, 2)).unsqueeze(0), None


def _eager(q, k, v, mask: torch.Tensor, scale: float, dropout: float, softcap: float | None) -> torch.Tensor:
    """transformers' eager attention for right-padded [N, H, T, d] queries and [N, Hkv, T, d]
    keys/values, with `mask` the additive mask of `Packing.additive_mask`: [T, T] causal (padding sits
    after every real token, so it alone keeps padding out of every real token's view), or [N, T, T]
    per sequence (shared prompts). Two things make it about twice as fast on CPU: the query heads that
    share a key/value head are stacked into one matrix ([N * Hkv, groups * T, d]) instead of
    repeating the keys, and the mask is added inside the score matmul (baddbmm). The softmax runs
    in the activations' dtype; for bf16 and fp16 torch's kernels accumulate it in fp32, which gives
    the same probabilities as an fp32 softmax rounded to that dtype."""
    n, heads, width, dim = q.shape
    kv_heads = k.shape[1]
    groups = heads // kv_heads
    stacked = (q * scale).reshape(n * kv_heads, groups * width, dim)  # heads h*groups .. h*groups+groups-1 share kv head h
    keys_t = k.reshape(n * kv_heads, width, dim).transpose(1, 2)
    if softcap or mask.dim() == 3:
        scores = torch.bmm(stacked, keys_t).view(n, kv_heads, groups, width, width)
        if softcap:
            scores = torch.tanh(scores / softcap) * softcap
        scores = (scores + mask.view(-1, 1, 1, width, width)).view(n * kv_heads, groups * width, width)
    else:
        mask = mask.repeat(groups, 1).expand(n * kv_heads, groups * width, width)  # row g * T + i: query i
        scores = torch.baddbmm(mask, stacked, keys_t)
    weights = F.dropout(torch.softmax(scores, dim=-1), p=dropout, training=dropout > 0)
    return torch.bmm(weights, v.reshape(n * kv_heads, width, dim)).view(n, heads, width, dim)


def _register() -> None:
    from transformers import AttentionInterface

    if ATTENTION_NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION_NAME, packed_attention)
