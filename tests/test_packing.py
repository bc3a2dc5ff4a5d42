"""Padding-free forward passes (upo.packing) give the log-probs and gradients of the padded ones."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
import transformers

from upo import packing
from upo.data.collate import collate_pairs
from upo.logps import sequence_logps

SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
# Architectures whose attention differs in ways packed_attention must honour: grouped-query heads
# (all), a sliding window shorter than the sequences (Mistral), logit soft-capping and alternating
# sliding layers (Gemma-2), learned absolute positions (GPT-2), per-head q/k norms (Qwen3).
ARCHITECTURES = {
    "llama": lambda: transformers.LlamaConfig(**SMALL),
    "mistral-window-3": lambda: transformers.MistralConfig(**SMALL, sliding_window=3),
    "gemma2-softcap": lambda: transformers.Gemma2Config(**SMALL, head_dim=8, sliding_window=4,
                                                        attn_logit_softcapping=5.0, final_logit_softcapping=3.0),
    "gpt2": lambda: transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                            bos_token_id=1, eos_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0,
                                            attn_pdrop=0.0),
    "qwen3": lambda: transformers.Qwen3Config(**SMALL, head_dim=8),
}


def _batch():
    items = [
        {"index": 0, "prompt_ids": [5, 6, 7, 3, 4, 9], "chosen_ids": [8, 9, 10, 11, 2], "rejected_ids": [12, 2]},
        {"index": 1, "prompt_ids": [5, 13], "chosen_ids": [14, 2], "rejected_ids": [15, 16, 17, 2, 19, 20, 21, 22]},
    ]
    return collate_pairs(items, pad_token_id=0)


def _model(name: str, attention: str):
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(ARCHITECTURES[name](), attn_implementation=attention)


def _textbook_logps(model, batch) -> torch.Tensor:
    """A full forward with the padding mask and a log-softmax over every position."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    token_logps = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (token_logps * batch["loss_mask"][:, 1:]).sum(-1)


def _grads(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@contextlib.contextmanager
def recorded_packings():
    """Within the block, the Packing of every packed_attention call is recorded; yields the list."""
    seen = []
    original = packing.packed_attention

    def recording(*args, **kwargs):
        seen.append(kwargs["upo_packing"])
        return original(*args, **kwargs)

    packing._register()
    mapping = transformers.AttentionInterface._global_mapping
    mapping[packing.ATTENTION_NAME] = recording
    try:
        yield seen
    finally:
        mapping[packing.ATTENTION_NAME] = original


@pytest.mark.parametrize(("name", "attention"), [
    ("llama", "eager"), ("llama", "sdpa"), ("mistral-window-3", "eager"), ("mistral-window-3", "sdpa"),
    ("gemma2-softcap", "eager"), ("gpt2", "eager"), ("qwen3", "sdpa"),
])
def test_packed_logps_and_gradients_match_the_padded_forward(name, attention):
    model = _model(name, attention).train()
    batch = _batch()
    weights = torch.linspace(0.5, 2.0, batch["input_ids"].shape[0])  # a loss that weighs rows differently
    with recorded_packings() as calls:
        packed = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                                batch["prompt_last_index"], padding_free=True)
        packed_grads = _grads(model, (packed.sum * weights).sum())
    assert len(calls) == model.config.num_hidden_layers  # every layer took the packed path
    expected = _textbook_logps(model, batch)
    expected_grads = _grads(model, (expected * weights).sum())
    torch.testing.assert_close(packed.sum, expected, rtol=1e-5, atol=1e-5)
    padded = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                            batch["prompt_last_index"], padding_free=False)
    torch.testing.assert_close(packed.prompt_hidden, padded.prompt_hidden, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed.num_tokens, batch["loss_mask"][:, 1:].sum(-1))
    assert packed_grads.keys() == expected_grads.keys()
    for key, grad in expected_grads.items():
        torch.testing.assert_close(packed_grads[key], grad, rtol=1e-4, atol=1e-6, msg=key)


def test_bf16_autocast_packed_matches_padded():
    model = _model("llama", "eager").eval()
    batch = _batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        packed = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
        padded = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"], padding_free=False)
    torch.testing.assert_close(packed.sum, padded.sum, rtol=2e-2, atol=2e-2)


def test_pack_layout():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    p = packing.pack(mask, "eager")
    assert p.index.tolist() == [0, 1, 2, 4, 5, 8, 9, 10, 11]
    assert p.position_ids.tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert p.starts.tolist() == [0, 3, 5]
    assert p.cu_seqlens.tolist() == [0, 3, 5, 9] and p.cu_seqlens.dtype == torch.int32 and p.max_length == 4
    x = torch.arange(9.0).unsqueeze(1)
    padded = p.scatter(x)
    assert padded.shape == (3, 4, 1) and padded[1, 2, 0] == 0
    torch.testing.assert_close(p.gather(padded), x)


def test_models_only_pack_with_eager_or_sdpa_attention():
    assert packing.supports_packing(_model("llama", "eager"))
    model = _model("llama", "eager")
    model.config._attn_implementation = "flash_attention_2"  # not available here; just the predicate
    assert not packing.supports_packing(model)


def test_a_model_that_bypasses_the_attention_interface_is_refused(monkeypatch):
    """If no layer calls packed_attention, the packed sequences attended to each other: an error, not
    silently wrong log-probs."""
    model = _model("llama", "eager")
    batch = _batch()

    @contextlib.contextmanager
    def not_switched(m):
        yield m.config._attn_implementation

    monkeypatch.setattr("upo.logps.packed_attention_for", not_switched)
    with pytest.raises(RuntimeError, match="padding_free: false"):
        sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])


def test_attention_config_is_restored_after_the_forward():
    model = _model("llama", "eager")
    batch = _batch()
    sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("padding_free", [True, False])
def test_training_follows_the_padding_free_setting(padding_free, tiny_model_dir, pairs_file, tmp_path):
    """`padding_free: true` packs the run's forwards; false leaves every one of them (policy, reference
    precompute, evaluation) on the padded path."""
    from helpers import run_config

    from upo.trainer import train

    with recorded_packings() as calls:
        train(run_config(tiny_model_dir, pairs_file, tmp_path, method="dpo", padding_free=padding_free))
    assert bool(calls) == padding_free


def test_the_varlen_kernel_runs_only_where_it_exists():
    """torch's flash-attention varlen kernel: CUDA, half precision, no dropout, no soft-capping."""
    use = packing.use_varlen_kernel
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert use(cuda, torch.bfloat16, 0.0, None) == (packing.varlen_attn is not None)
    assert use(cuda, torch.float16, 0.0, None) == (packing.varlen_attn is not None)
    assert not use(cpu, torch.bfloat16, 0.0, None)
    assert not use(cuda, torch.float32, 0.0, None)
    assert not use(cuda, torch.bfloat16, 0.1, None)
    assert not use(cuda, torch.bfloat16, 0.0, 5.0)


def _varlen_attn_on_cpu(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1),
                        enable_gqa=False):  # fmt: skip
    """What torch.nn.attention.varlen.varlen_attn computes (flash-attention's contract), one sequence
    at a time with sdpa: [M, H, d] packed tensors, `cu_seq` boundaries; window (left, 0): causal,
    and a query sees at most `left` keys before it (-1: all)."""
    assert window_size[1] == 0 and torch.equal(cu_seq_q, cu_seq_k) and cu_seq_q.dtype == torch.int32
    assert max_q == max_k == int((cu_seq_q[1:] - cu_seq_q[:-1]).max())
    out = []
    for start, end in zip(cu_seq_q[:-1].tolist(), cu_seq_q[1:].tolist(), strict=True):
        q, k, v = (x[start:end].transpose(0, 1) for x in (query, key, value))  # [H, L, d]
        i = torch.arange(end - start)
        allowed = i[None, :] <= i[:, None]
        if window_size[0] >= 0:
            allowed &= i[:, None] - i[None, :] <= window_size[0]
        out.append(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale, enable_gqa=enable_gqa))
    return torch.cat([o.transpose(0, 1) for o in out])


@pytest.mark.parametrize("name", ["llama", "mistral-window-3", "qwen3"])
def test_the_varlen_path_matches_the_padded_forward(name, monkeypatch):
    """The CUDA branch of packed_attention run on CPU, with the kernel replaced by its per-sequence
    equivalent: layout, boundaries, scale, grouped heads and the sliding window reach it right."""
    calls = []

    def kernel(*args, **kwargs):
        calls.append(1)
        return _varlen_attn_on_cpu(*args, **kwargs)

    monkeypatch.setattr(packing, "varlen_attn", kernel)
    monkeypatch.setattr(packing, "use_varlen_kernel", lambda *_: True)
    model = _model(name, "sdpa").train()
    batch = _batch()
    packed = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    packed_grads = _grads(model, packed.sum.sum())
    assert len(calls) == model.config.num_hidden_layers
    expected = _textbook_logps(model, batch)
    expected_grads = _grads(model, expected.sum())
    torch.testing.assert_close(packed.sum, expected, rtol=1e-5, atol=1e-5)
    for key, grad in expected_grads.items():
        torch.testing.assert_close(packed_grads[key], grad, rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.skipif(not torch.cuda.is_available() or packing.varlen_attn is None, reason="needs CUDA (and torch >= 2.10)")
@pytest.mark.parametrize("name", ["llama", "mistral-window-3"])
def test_the_varlen_kernel_on_cuda_matches_the_padded_forward(name, monkeypatch):
    """On a GPU: bf16 autocast, torch's flash-attention varlen kernel against the padded sdpa forward."""
    calls = []
    kernel = packing.varlen_attn

    def counting(*args, **kwargs):
        calls.append(1)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(packing, "varlen_attn", counting)
    model = _model(name, "sdpa").cuda().train()
    batch = {k: v.cuda() for k, v in _batch().items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        packed = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
        packed_grads = _grads(model, packed.sum.sum())
        padded = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"], padding_free=False)
        padded_grads = _grads(model, padded.sum.sum())
    assert len(calls) == model.config.num_hidden_layers
    torch.testing.assert_close(packed.sum, padded.sum, rtol=2e-2, atol=5e-2)
    for key, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[key], grad, rtol=5e-2, atol=5e-2, msg=key)
