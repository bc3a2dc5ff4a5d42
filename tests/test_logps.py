"""sequence_logps against a plain full-logits computation, with and without padding."""

from __future__ import annotations

import pytest
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


def _logps_and_grads(model, batch, chunk: int | None):
    model.zero_grad()
    out = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                         logits_chunk_tokens=chunk).sum
    (out * torch.linspace(0.5, 2.0, len(out))).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["llama-logit-scale", "gemma2-softcap"])
def test_chunked_lm_head_gives_the_log_probs_and_gradients_of_one_chunk(name):
    """Chunks of 3 of the batch's 13 completion tokens (the last one short), with the LM head's
    post-processing (Cohere's logit scale, Gemma-2's soft-capping) applied to every chunk, in fp32."""
    from test_packing import _model

    model = _model("llama" if name == "llama-logit-scale" else name, "eager").train()
    if name == "llama-logit-scale":
        model.config.logit_scale = 0.5
    batch = _batch()
    expected, expected_grads = _logps_and_grads(model, batch, None)
    chunked, chunked_grads = _logps_and_grads(model, batch, 3)
    torch.testing.assert_close(chunked, expected, rtol=1e-6, atol=1e-6)
    assert chunked_grads.keys() == expected_grads.keys()
    for key, grad in expected_grads.items():
        torch.testing.assert_close(chunked_grads[key], grad, rtol=1e-5, atol=1e-5, msg=key)  # summation order
    setattr(model.config, "logit_scale" if name == "llama-logit-scale" else "final_logit_softcapping", None)
    unscaled, _ = _logps_and_grads(model, batch, 3)
    assert not torch.allclose(unscaled, chunked)  # the post-processing did change them


@pytest.mark.parametrize(("chunk", "rows"), [(None, 13), (4, 0)])
def test_chunked_lm_head_keeps_no_batch_of_logits_for_backward(chunk, rows):
    """What autograd keeps from the forward for backward, in rows of the vocabulary's width: the
    batch's 13 completion tokens' logits in one chunk; nothing at all in chunks, which are
    checkpointed and compute their logits again in backward, one chunk at a time."""
    model = build_tiny_model(96).train()  # no other width of the model is 96
    batch = _batch()
    vocab_wide = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 2 and t.shape[-1] == model.config.vocab_size and t.shape[0] != model.config.hidden_size:
            vocab_wide.append(t.shape[0])
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                             logits_chunk_tokens=chunk)
    out.sum.sum().backward()
    assert int(out.num_tokens.sum()) == 13
    assert max(vocab_wide, default=0) == rows
