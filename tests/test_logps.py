"""sequence_logps against a plain full-logits computation, with and without padding."""

from __future__ import annotations

import torch
from helpers import build_tiny_model

from upo.data.collate import collate_pairs
from upo.logps import _right_padded, sequence_logps


def _reference_logps(model, input_ids, attention_mask, loss_mask) -> torch.Tensor:
    """The textbook way: full forward with the mask, log-softmax over every position, gather."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    token_logps = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (token_logps * loss_mask[:, 1:]).sum(-1)


def _batch():
    items = [
        {"index": 0, "prompt_ids": [5, 6, 7], "chosen_ids": [8, 9, 10, 11, 2], "rejected_ids": [12, 2]},
        {"index": 1, "prompt_ids": [5, 13], "chosen_ids": [14, 2], "rejected_ids": [15, 16, 17, 2]},
    ]
    return collate_pairs(items, pad_token_id=0)


def test_matches_full_logits_on_right_padded_batches():
    model = build_tiny_model(64).eval()
    batch = _batch()
    assert _right_padded(batch["attention_mask"]) and not bool(batch["attention_mask"].all())
    out = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    expected = _reference_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    torch.testing.assert_close(out.sum, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.num_tokens, batch["loss_mask"][:, 1:].sum(-1))


def test_left_padded_batches_keep_their_mask():
    model = build_tiny_model(64).eval()
    batch = _batch()
    # Move each row's padding to the front: the mask is needed now, and must be used.
    n, t = batch["input_ids"].shape
    lengths = batch["attention_mask"].sum(-1)
    left = {k: torch.zeros_like(batch[k]) for k in ("input_ids", "attention_mask", "loss_mask")}
    for row in range(n):
        for k in left:
            left[k][row, t - lengths[row] :] = batch[k][row, : lengths[row]]
    assert not _right_padded(left["attention_mask"])
    out = sequence_logps(model, left["input_ids"], left["attention_mask"], left["loss_mask"])
    expected = _reference_logps(model, left["input_ids"], left["attention_mask"], left["loss_mask"])
    torch.testing.assert_close(out.sum, expected, rtol=1e-5, atol=1e-5)


def test_attention_kernel_defaults_to_eager_without_cuda_and_follows_the_config(tiny_model_dir, monkeypatch):
    from upo.modeling import load_causal_lm

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_causal_lm(str(tiny_model_dir)).config._attn_implementation == "eager"
    assert load_causal_lm(str(tiny_model_dir), attn_implementation="sdpa").config._attn_implementation == "sdpa"
