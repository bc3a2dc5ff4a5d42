"""Shared-prompt forwards (upo.packing.pack_pairs) give the log-probs and gradients of unshared ones."""

from __future__ import annotations

import pytest
import torch
from test_packing import _batch, _grads, _model, _textbook_logps, recorded_packings

from upo import packing
from upo.data.collate import collate_pairs
from upo.logps import sequence_logps, shared_prompt_lengths


@pytest.mark.parametrize(("name", "attention"), [
    ("llama", "eager"), ("llama", "sdpa"), ("mistral-window-3", "eager"), ("mistral-window-3", "sdpa"),
    ("gemma2-softcap", "eager"), ("gpt2", "eager"), ("qwen3", "sdpa"),
])
def test_shared_prompt_logps_and_gradients_match_the_unshared_forward(name, attention):
    """Both pairs' rejected responses see a window-3/4 model's prompt by position, not by packed
    offset; a rejected token that saw the chosen response, or missed the prompt, changes its log-prob."""
    model = _model(name, attention).train()
    batch = _batch()
    weights = torch.linspace(0.5, 2.0, batch["input_ids"].shape[0])  # a loss that weighs rows differently
    with recorded_packings() as seen:
        shared = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                                batch["prompt_last_index"], shared_prompt=True)
    shared_grads = _grads(model, (shared.sum * weights).sum())
    assert len(seen) == model.config.num_hidden_layers and all(p.shared for p in seen)
    prompts = batch["prompt_last_index"] + 1
    assert len(seen[0].source) == int(batch["attention_mask"].sum() - prompts[2:].sum())  # each prompt once
    expected = _textbook_logps(model, batch)
    expected_grads = _grads(model, (expected * weights).sum())
    torch.testing.assert_close(shared.sum, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared.num_tokens, batch["loss_mask"][:, 1:].sum(-1))
    unshared = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                              batch["prompt_last_index"], shared_prompt=False)
    torch.testing.assert_close(shared.prompt_hidden, unshared.prompt_hidden, rtol=1e-5, atol=1e-5)
    assert shared_grads.keys() == expected_grads.keys()
    for key, grad in expected_grads.items():
        torch.testing.assert_close(shared_grads[key], grad, rtol=1e-4, atol=1e-6, msg=key)


def test_pairs_share_their_prompt_only_when_it_is_the_same():
    batch = _batch()
    ids, mask, loss = batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
    assert shared_prompt_lengths(ids, mask, loss).tolist() == [6, 2]
    other = ids.clone()
    other[3, 1] = 40  # pair 1's rejected row has another prompt
    assert shared_prompt_lengths(other, mask, loss) is None
    assert shared_prompt_lengths(ids[:3], mask[:3], loss[:3]) is None  # odd rows: no pairs
    prompt_in_loss = loss.clone()
    prompt_in_loss[0, 0] = True
    assert shared_prompt_lengths(ids, mask, prompt_in_loss) is None


def test_unshareable_batches_take_the_unshared_packing():
    model = _model("llama", "eager")
    batch = _batch()
    batch["input_ids"][3, 1] = 40
    with recorded_packings() as seen:
        out = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"], shared_prompt=True)
    assert seen and not any(p.shared for p in seen)
    torch.testing.assert_close(out.sum, _textbook_logps(model, batch), rtol=1e-5, atol=1e-5)


def test_pack_pairs_layout():
    """Pair 0: prompt [a b], chosen [c], rejected [d e]; pair 1: prompt [f], chosen [g h], rejected [i]."""
    items = [
        {"index": 0, "prompt_ids": [10, 11], "chosen_ids": [12], "rejected_ids": [13, 14]},
        {"index": 1, "prompt_ids": [15], "chosen_ids": [16, 17], "rejected_ids": [18]},
    ]
    batch = collate_pairs(items, pad_token_id=0)  # width 4
    p = packing.pack_pairs(batch["attention_mask"], torch.tensor([2, 1]), "eager")
    ids = batch["input_ids"].flatten()[p.source]
    assert ids.tolist() == [10, 11, 12, 13, 14, 15, 16, 17, 18]
    assert p.position_ids.tolist() == [[0, 1, 2, 2, 3, 0, 1, 2, 1]]
    assert p.previous.tolist() == [-1, 0, 1, 1, 3, -1, 5, 6, 5]  # each rejected response starts from its prompt
    assert p.starts.tolist() == [0, 5] and p.row_starts.tolist() == [0, 5, 0, 5]
    assert p.cu_seqlens.tolist() == [0, 5, 9] and p.rows == 2 and p.width == 5
    allowed = p.allowed(torch.device("cpu"), None)
    assert allowed[0, 3].tolist() == [True, True, False, True, False]  # d sees a b, itself; not c
    assert allowed[1, 3].tolist() == [True, False, False, True, False]  # i sees f, itself; not g h
    assert allowed[0, 2].tolist() == [True, True, True, False, False]  # c: causal
    window = p.allowed(torch.device("cpu"), 2)
    assert window[0, 4].tolist() == [False, False, False, True, True]  # e at position 3 sees positions 2, 3: d, e
    assert window[0, 3].tolist() == [False, True, False, True, False]  # d at position 2 sees b (position 1), d


@pytest.mark.parametrize("shared", [True, False])
def test_training_shares_prompts_by_default(shared, tiny_model_dir, pairs_file, tmp_path):
    """A dpo run's forwards (policy and reference precompute) pack pairs with one prompt; a kto run's
    mismatched forwards, the policy's and the reference's (precomputed or each step; no held-out
    pairs here), reuse the prompts' keys and values; `shared_prompt: false` turns all of it off."""
    from helpers import run_config

    from upo.trainer import train

    with recorded_packings() as seen:
        train(run_config(tiny_model_dir, pairs_file, tmp_path / "dpo", method="dpo", shared_prompt=shared))
    assert seen and all(p.shared == shared for p in seen)
    for precompute in (True, False):
        with recorded_packings() as seen:
            train(run_config(tiny_model_dir, pairs_file, tmp_path / f"kto-{precompute}", method="kto",
                             shared_prompt=shared, precompute_ref_logps=precompute, eval_fraction=0.0))
        mismatched = sum(p.prefix is not None for p in seen)
        # the policy's 4 (2 steps of 2 micro-batches), then the reference's: each step's, or each
        # first-epoch batch's when precomputed
        assert mismatched > 4 if shared else mismatched == 0, (precompute, mismatched)


def _unpaired_batch():
    """Three examples and their mismatched sequences (KTO's): each prompt with another's completion."""
    from upo.data.collate import collate_unpaired

    completions = [[8, 9, 10, 11, 2], [14, 2], [15, 16, 17, 2, 19, 20]]
    prompts = [[5, 6, 7, 3, 4, 9], [5, 13], [21]]
    items = [{"index": i, "prompt_ids": prompts[i], "completion_ids": completions[i], "label": i != 1,
              "kl_completion_ids": completions[(i + 1) % 3]} for i in range(3)]
    return collate_unpaired(items, pad_token_id=0)


@pytest.mark.parametrize(("name", "attention"), [
    ("llama", "eager"), ("llama", "sdpa"), ("mistral-window-3", "eager"), ("mistral-window-3", "sdpa"),
    ("gemma2-softcap", "eager"), ("gpt2", "eager"), ("qwen3", "sdpa"),
])
def test_mismatched_sequences_reuse_the_prompts_keys_and_values(name, attention):
    """KTO's mismatched (x_i, y_j) forward, given the keys and values the training forward kept of
    each prompt, runs from the prompt's last token on and gives the log-probs of a full forward."""
    model = _model(name, attention).train()
    batch = _unpaired_batch()
    main = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"], keep_prompts=True)
    assert len(main.prompt_cache.layers) == model.config.num_hidden_layers
    kl = [batch[f"kl_{key}"] for key in ("input_ids", "attention_mask", "loss_mask")]
    with torch.no_grad(), recorded_packings() as seen:
        cached = sequence_logps(model, *kl, prompt_cache=main.prompt_cache)
    prompts = batch["prompt_last_index"] + 1
    assert all(p.prefix is main.prompt_cache for p in seen)
    assert len(seen[0].source) == int(kl[1].sum() - prompts.sum() + len(prompts))  # the prompts' last tokens on
    with torch.no_grad():
        full = _textbook_logps(model, {"input_ids": kl[0], "attention_mask": kl[1], "loss_mask": kl[2]})
    torch.testing.assert_close(cached.sum, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cached.num_tokens, kl[2].sum(-1))


def test_a_cache_of_other_prompts_is_not_used():
    model = _model("llama", "eager")
    batch = _unpaired_batch()
    main = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"], keep_prompts=True)
    kl = [batch[f"kl_{key}"].clone() for key in ("input_ids", "attention_mask", "loss_mask")]
    kl[0][1, 1] = 40  # the second prompt differs
    with recorded_packings() as seen:
        out = sequence_logps(model, *kl, prompt_cache=main.prompt_cache)
    assert seen and all(p.prefix is None for p in seen)
    expected = _textbook_logps(model, {"input_ids": kl[0], "attention_mask": kl[1], "loss_mask": kl[2]})
    torch.testing.assert_close(out.sum, expected, rtol=1e-5, atol=1e-5)


def test_a_short_kto_batch_gets_its_reference_and_reference_point():
    """The last batch of a multi-process run keeps only this process's examples (`first_items`) but
    all the mismatched sequences: the stacked reference forward still splits right, and the prompt
    cache (kept for fewer rows than there are mismatched sequences) is not used."""
    from accelerate import Accelerator

    from upo import losses
    from upo.config import UPOConfig
    from upo.data.collate import first_items
    from upo.forward import step_inputs
    from upo.logps import CompletionLogps
    from upo.methods import METHODS
    from upo.reference import make_reference_fn

    model, reference = _model("llama", "eager"), _model("llama", "eager").eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.mul_(1.5)
    accelerator = Accelerator(cpu=True)
    policy = CompletionLogps(model)
    batch = first_items(_unpaired_batch(), 2)  # 2 examples, 3 mismatched sequences
    x = step_inputs(batch, policy, make_reference_fn(accelerator, policy, reference, lora=False), METHODS["kto"],
                    UPOConfig(method="kto"), accelerator)
    with torch.no_grad():
        torch.testing.assert_close(x.reference_logps, _textbook_logps(reference, batch), rtol=1e-5, atol=1e-5)
        kl = {key: batch[f"kl_{key}"] for key in ("input_ids", "attention_mask", "loss_mask")}
        z0 = losses.kto_reference_point(_textbook_logps(model, kl), _textbook_logps(reference, kl))
    torch.testing.assert_close(x.kto_reference_point, z0, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_shared_prompts_and_prompt_cache_match_unshared():
    """Under bf16 autocast the shared and cached forwards round differently from the unshared ones
    (a batch's bf16 matmuls depend on its shapes), within the tolerance packing itself gets."""
    model = _model("llama", "eager").eval()
    pairs, unpaired = _batch(), _unpaired_batch()
    kl = [unpaired[f"kl_{key}"] for key in ("input_ids", "attention_mask", "loss_mask")]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        shared = sequence_logps(model, pairs["input_ids"], pairs["attention_mask"], pairs["loss_mask"], shared_prompt=True)
        unshared = sequence_logps(model, pairs["input_ids"], pairs["attention_mask"], pairs["loss_mask"])
        main = sequence_logps(model, unpaired["input_ids"], unpaired["attention_mask"], unpaired["loss_mask"],
                              keep_prompts=True)
        cached = sequence_logps(model, *kl, prompt_cache=main.prompt_cache)
        full = sequence_logps(model, *kl)
    torch.testing.assert_close(shared.sum, unshared.sum, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(cached.sum, full.sum, rtol=2e-2, atol=2e-2)


def test_shared_prompts_stay_off_where_the_varlen_kernel_runs(monkeypatch):
    from upo import logps

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert logps._shares_exactly(cpu)
    monkeypatch.setattr(logps, "varlen_attn", object())
    assert not logps._shares_exactly(cuda)
    monkeypatch.setattr(logps, "varlen_attn", None)
    assert logps._shares_exactly(cuda)  # torch < 2.10: CUDA's padded path takes the explicit mask


def test_checkpointed_layers_rerun_the_prompt_cache_exactly():
    """Under gradient_checkpointing, a layer rerun in backward reads the prompt cache of its own
    layer and keeps its prompts' keys and values once: a forward with gradient from a prompt cache
    (none in training today: KTO's mismatched pairs run without) gets a plain forward's gradients."""
    from upo.modeling import enable_gradient_checkpointing

    batch = _unpaired_batch()
    kl = [batch[f"kl_{key}"] for key in ("input_ids", "attention_mask", "loss_mask")]
    grads = {}
    for checkpointed in (False, True):
        model = _model("llama", "eager")
        if checkpointed:
            enable_gradient_checkpointing(model)
        main = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"], keep_prompts=True)
        main.sum.sum().backward()
        assert len(main.prompt_cache.layers) == model.config.num_hidden_layers  # not again in the rerun
        cached = sequence_logps(model, *kl, prompt_cache=main.prompt_cache)
        grads[checkpointed] = _grads(model, cached.sum.sum())
    assert grads[True].keys() == grads[False].keys()
    for name in grads[False]:
        torch.testing.assert_close(grads[True][name], grads[False][name], rtol=1e-5, atol=1e-7, msg=name)
