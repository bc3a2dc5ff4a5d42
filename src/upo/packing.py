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
class Packing:
    """Where the real tokens of a right-padded [rows, width] batch sit.

    index: [M] flat positions (row * width + column) of the real tokens, in row order;
    position_ids: [1, M] each token's position within its own sequence;
    starts: [rows] index of each sequence's first token in the packed row;
    cu_seqlens, max_length: the same boundaries as flash-attention's varlen kernels take them;
    attention_calls: how many attention layers ran packed_attention (0 after a forward means the
    model bypassed transformers' AttentionInterface, and its sequences saw each other).
    """

    index: torch.Tensor
    position_ids: torch.Tensor
    starts: torch.Tensor
    cu_seqlens: torch.Tensor  # [rows + 1] int32: 0, then the cumulative sequence lengths (varlen kernels)
    max_length: int  # the longest sequence
    rows: int
    width: int
    base_attention: str  # the model's own kernel: "eager" or "sdpa"
    attention_calls: int = 0
    _masks: dict = field(default_factory=dict, repr=False)  # causal masks, built once per forward

    def causal_mask(self, dtype: torch.dtype, device, sliding_window: int | None) -> torch.Tensor:
        """[width, width] additive mask: 0 where key j <= query i (and within the window), else min."""
        key = (dtype, device, sliding_window)
        if key not in self._masks:
            i = torch.arange(self.width, device=device)
            allowed = i[None, :] <= i[:, None]  # padding sits after every real token
            if sliding_window:
                allowed &= i[:, None] - i[None, :] < sliding_window
            self._masks[key] = torch.zeros(self.width, self.width, dtype=dtype, device=device).masked_fill(
                ~allowed, torch.finfo(dtype).min)
        return self._masks[key]

    def scatter(self, packed: torch.Tensor) -> torch.Tensor:
        """[M, ...] -> [rows, width, ...], zeros at padding (differentiable)."""
        out = packed.new_zeros((self.rows * self.width, *packed.shape[1:]))
        out = out.index_copy(0, self.index, packed)
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
    positions = torch.arange(width, device=mask.device).expand(rows, width)[mask]
    ends = torch.cumsum(lengths, 0)
    cu_seqlens = F.pad(ends, (1, 0)).to(torch.int32)
    return Packing(index=index, position_ids=positions.unsqueeze(0), starts=ends - lengths, cu_seqlens=cu_seqlens,
                   max_length=int(lengths.max()), rows=rows, width=width, base_attention=base_attention)


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


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, *,
                     upo_packing: Packing | None = None, sliding_window=None, softcap=None, **kwargs):
    """Causal attention within each packed sequence. query [1, Hq, M, d], key/value [1, Hkv, M, d]
    -> (output [1, M, Hq, d], None), the contract of transformers' attention functions."""
    if upo_packing is None:
        raise RuntimeError("packed attention called without `upo_packing`: call the decoder through upo.logps")
    if kwargs.get("s_aux") is not None:
        raise NotImplementedError("attention sinks are not supported by padding-free training; set padding_free: false")
    p = upo_packing
    p.attention_calls += 1
    heads, dim, kv_heads = query.shape[1], query.shape[3], key.shape[1]
    drop = dropout if module.training else 0.0
    scale = scaling if scaling is not None else dim**-0.5
    if use_varlen_kernel(query.device, query.dtype, drop, softcap):
        # [1, H, M, d] -> [M, H, d]: no padding anywhere; sliding_window w lets a query see w - 1 keys back
        out = varlen_attn(*(x[0].transpose(0, 1) for x in (query, key, value)), p.cu_seqlens, p.cu_seqlens,
                          p.max_length, p.max_length, scale=scale, enable_gqa=heads != kv_heads,
                          window_size=(sliding_window - 1 if sliding_window else -1, 0))  # fmt: skip
        return out.unsqueeze(0), None  # [1, M, H, d]
    # [1, H, M, d] -> [M, H, d] -> [N, T, H, d] -> [N, H, T, d]
    q, k, v = (p.scatter(x[0].transpose(0, 1)).transpose(1, 2) for x in (query, key, value))
    if p.base_attention == "sdpa" and not sliding_window and not softcap:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True, scale=scale,
                                             enable_gqa=heads != kv_heads)
    else:
        out = _eager(q, k, v, p.causal_mask(q.dtype, q.device, sliding_window), scale, drop, softcap)
    # [N, H, T, d] -> [N, T, H, d] -> [M, H, d] -> [1, M, H, d]
    return p.gather(out.transpose(1, 2)).unsqueeze(0), None


def _eager(q, k, v, mask: torch.Tensor, scale: float, dropout: float, softcap: float | None) -> torch.Tensor:
    """transformers' eager attention, causal, for right-padded [N, H, T, d] queries and [N, Hkv, T, d]
    keys/values, with `mask` the [T, T] additive mask of `Packing.causal_mask`. Padding sits after every real token, so the causal mask alone keeps it out of
    every real token's view. Two things make it about twice as fast on CPU: the query heads that
    share a key/value head are stacked into one matrix ([N * Hkv, groups * T, d]) instead of
    repeating the keys, and the mask is added inside the score matmul (baddbmm). The softmax runs
    in the activations' dtype; for bf16 and fp16 torch's kernels accumulate it in fp32, which gives
    the same probabilities as an fp32 softmax rounded to that dtype."""
    n, heads, width, dim = q.shape
    kv_heads = k.shape[1]
    groups = heads // kv_heads
    mask = mask.repeat(groups, 1).expand(n * kv_heads, groups * width, width)
    stacked = (q * scale).reshape(n * kv_heads, groups * width, dim)  # heads h*groups .. h*groups+groups-1 share kv head h
    keys_t = k.reshape(n * kv_heads, width, dim).transpose(1, 2)
    if softcap:
        scores = torch.bmm(stacked, keys_t)
        scores = torch.tanh(scores / softcap) * softcap + mask
    else:
        scores = torch.baddbmm(mask, stacked, keys_t)
    weights = F.dropout(torch.softmax(scores, dim=-1), p=dropout, training=dropout > 0)
    return torch.bmm(weights, v.reshape(n * kv_heads, width, dim)).view(n, heads, width, dim)


def _register() -> None:
    from transformers import AttentionInterface

    if ATTENTION_NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION_NAME, packed_attention)
