"""CSFT: the loss by hand, control tokens in the tokenized prompts, the tokenizer and embeddings of a
trained model, and generation conditioned on the desirable token without the caller asking."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import run_config
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from upo.baseline_losses import csft_loss
from upo.data.control import (
    DESIRABLE_TOKEN,
    UNDESIRABLE_TOKEN,
    add_control_tokens,
    control_token_ids,
    generation_suffix,
)
from upo.data.records import PreferencePair, UnpairedExample
from upo.data.tokenize import encode_prompt, tokenize_pairs, tokenize_unpaired
from upo.generation import _prompt_ids
from upo.metrics import read_metrics
from upo.trainer import train

PROMPT = [{"role": "user", "content": "Tell me about tea."}]


@pytest.fixture
def control_tokenizer(tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    add_control_tokens(tokenizer)
    return tokenizer


def test_csft_loss_is_the_nll_of_every_response():
    mean_logps = torch.tensor([-0.5, -2.0, -1.25], requires_grad=True)
    loss = csft_loss(mean_logps)
    assert loss.tolist() == [0.5, 2.0, 1.25]  # desirable and undesirable alike
    loss.mean().backward()
    assert torch.allclose(mean_logps.grad, torch.full((3,), -1 / 3))  # descent raises every likelihood


def test_control_tokens_are_added_once_and_found(tiny_tokenizer, control_tokenizer):
    assert control_token_ids(tiny_tokenizer) is None and generation_suffix(tiny_tokenizer) == []
    ids = control_token_ids(control_tokenizer)
    assert ids[True] != ids[False]
    assert control_tokenizer.convert_ids_to_tokens([ids[True], ids[False]]) == [DESIRABLE_TOKEN, UNDESIRABLE_TOKEN]
    assert add_control_tokens(control_tokenizer) == ids and len(control_tokenizer) == len(tiny_tokenizer) + 2
    # special tokens: a response mentioning the text is not turned into the control token
    assert control_tokenizer.decode([ids[True]], skip_special_tokens=True) == ""


def test_unpaired_prompts_end_with_their_labels_token(control_tokenizer):
    ids = control_token_ids(control_tokenizer)
    examples = [UnpairedExample(PROMPT, "Tea is nice.", True, "a:1"), UnpairedExample(PROMPT, "No.", False, "a:2")]
    items, _ = tokenize_unpaired(examples, control_tokenizer, max_length=64, max_prompt_length=32, seed=0, control=ids)
    base = encode_prompt(PROMPT, control_tokenizer)
    assert [it["prompt_ids"] for it in items] == [base + [ids[True]], base + [ids[False]]]
    plain, _ = tokenize_unpaired(examples, control_tokenizer, max_length=64, max_prompt_length=32, seed=0)
    assert plain[0]["prompt_ids"] == base


def test_held_out_pairs_are_scored_after_the_desirable_token(control_tokenizer):
    ids = control_token_ids(control_tokenizer)
    pairs = [PreferencePair(PROMPT, "Tea is nice.", "No.", "a:1")]
    items, _ = tokenize_pairs(pairs, control_tokenizer, max_length=64, max_prompt_length=32, control=ids)
    assert items[0]["prompt_ids"][-1] == ids[True]


def test_truncated_prompts_keep_the_control_token(control_tokenizer):
    ids = control_token_ids(control_tokenizer)
    long_prompt = "tea " * 100
    examples = [UnpairedExample(long_prompt, "Yes.", False, "a:1")]
    items, stats = tokenize_unpaired(examples, control_tokenizer, max_length=40, max_prompt_length=8, seed=0, control=ids)
    prompt_ids = items[0]["prompt_ids"]
    assert len(prompt_ids) == 8 and prompt_ids[-1] == ids[False] and stats.prompt_truncated == 1
    assert prompt_ids[:-1] == encode_prompt(long_prompt, control_tokenizer)[-7:]


def test_generation_prompts_end_with_the_desirable_token(tiny_tokenizer, control_tokenizer):
    ids = control_token_ids(control_tokenizer)
    assert _prompt_ids(control_tokenizer, PROMPT) == encode_prompt(PROMPT, control_tokenizer) + [ids[True]]
    assert _prompt_ids(tiny_tokenizer, PROMPT) == encode_prompt(PROMPT, tiny_tokenizer)


@pytest.mark.parametrize("lora", [False, True])
def test_csft_training_learns_the_control_tokens(lora, tiny_model_dir, pairs_file, tmp_path):
    cfg = run_config(tiny_model_dir, pairs_file, tmp_path, method="csft", rewards={}, lora=lora,
                     **({"lora_r": 4} if lora else {}), max_steps=3)
    final = train(cfg)
    tokenizer = AutoTokenizer.from_pretrained(final)
    ids = control_token_ids(tokenizer)
    assert ids is not None, "the saved tokenizer lost the control tokens"
    model = AutoModelForCausalLM.from_pretrained(final)  # a plain HF folder, LoRA merged
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == len(tokenizer)
    # The new rows start at the mean of the old embeddings; training must have moved them (with
    # LoRA too: peft trains just those rows), or the tokens would condition nothing.
    old = load_file(str(tiny_model_dir / "model.safetensors"))["model.embed_tokens.weight"]
    mean = old.mean(dim=0)
    for token_id in ids.values():
        assert not torch.allclose(embeddings[token_id], mean, atol=1e-4), "control-token embedding did not train"
    if lora:  # and nothing else of the embedding changed
        assert torch.equal(embeddings[: old.shape[0]], old)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert "train/logps/chosen" in rows[-1] and "train/logps/rejected" in rows[-1]
