"""upo.generation.generate on the tiny in-process model: order, counts, seeding, padding, chat prompts."""

from __future__ import annotations

import copy

import torch

from upo.generation import generate

# different token lengths, so the internal sort by length really reorders them
PROMPTS = [
    "How do I bake bread? Mix flour, water, salt and yeast",
    "Hi",
    "What is the capital of France?",
    "I will not help",
    "Paris",
]


def test_counts_and_types(tiny_model, tiny_tokenizer):
    out = generate(
        tiny_model,
        tiny_tokenizer,
        PROMPTS,
        max_new_tokens=5,
        num_return_sequences=3,
        batch_size=2,
        progress=False,
    )
    assert len(out) == len(PROMPTS)
    assert all(len(completions) == 3 for completions in out)
    assert all(isinstance(c, str) and c == c.strip() for completions in out for c in completions)


def test_order_matches_prompts(tiny_model, tiny_tokenizer):
    """Each prompt's completion is the one it gets alone: the length sort is undone."""
    kwargs = dict(max_new_tokens=6, do_sample=False, progress=False)
    together = generate(tiny_model, tiny_tokenizer, PROMPTS, batch_size=2, **kwargs)
    alone = [generate(tiny_model, tiny_tokenizer, [p], **kwargs)[0] for p in PROMPTS]
    assert together == alone
    assert len(set(map(tuple, alone))) > 1  # otherwise the comparison could not detect a shuffle


def test_sampling_is_seeded(tiny_model, tiny_tokenizer):
    kwargs = dict(max_new_tokens=8, temperature=1.0, top_p=1.0, num_return_sequences=2, progress=False)
    first = generate(tiny_model, tiny_tokenizer, PROMPTS, seed=3, **kwargs)
    assert generate(tiny_model, tiny_tokenizer, PROMPTS, seed=3, **kwargs) == first
    assert generate(tiny_model, tiny_tokenizer, PROMPTS, seed=4, **kwargs) != first


def test_batch_size_does_not_change_results(tiny_model, tiny_tokenizer):
    """Greedy outputs are the same whether prompts share a padded batch or not.

    (Sampled outputs depend on batch_size: the random stream is drawn over the whole batch.)
    """
    kwargs = dict(max_new_tokens=6, do_sample=False, seed=0, progress=False)
    by_size = [generate(tiny_model, tiny_tokenizer, PROMPTS, batch_size=b, **kwargs) for b in (1, 2, 16)]
    assert by_size[0] == by_size[1] == by_size[2]


def test_sampled_batch_does_not_depend_on_earlier_batches(tiny_model, tiny_tokenizer):
    """Batch i is seeded from seed + i: reseeding the global RNG in between changes nothing."""
    kwargs = dict(max_new_tokens=6, temperature=1.0, top_p=1.0, batch_size=2, seed=7, progress=False)
    torch.manual_seed(123)
    first = generate(tiny_model, tiny_tokenizer, PROMPTS, **kwargs)
    torch.manual_seed(456)
    assert generate(tiny_model, tiny_tokenizer, PROMPTS, **kwargs) == first


def test_leaves_tokenizer_and_model_mode_alone(tiny_model, tiny_tokenizer):
    tiny_tokenizer.padding_side = "right"
    tiny_model.train()
    try:
        generate(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=2, batch_size=3, progress=False)
        assert tiny_tokenizer.padding_side == "right"
        assert tiny_model.training
    finally:
        tiny_model.eval()


def test_message_prompts_use_the_chat_template(tiny_model, tiny_tokenizer):
    """A message list gives what its rendered chat-template string gives."""
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    rendered = tiny_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered.endswith("<|im_start|>assistant\n")
    kwargs = dict(max_new_tokens=6, do_sample=False, progress=False)
    assert generate(tiny_model, tiny_tokenizer, [messages, "Hi"], **kwargs) == generate(
        tiny_model, tiny_tokenizer, [rendered, "Hi"], **kwargs
    )
    assert generate(tiny_model, tiny_tokenizer, [messages], **kwargs) != generate(
        tiny_model, tiny_tokenizer, [messages[0]["content"]], **kwargs
    )


def test_tokenizer_without_pad_token_pads_with_eos(tiny_model, tiny_tokenizer):
    no_pad = copy.deepcopy(tiny_tokenizer)
    no_pad.pad_token = None
    assert no_pad.pad_token_id is None
    kwargs = dict(max_new_tokens=6, do_sample=False, batch_size=16, progress=False)
    assert generate(tiny_model, no_pad, PROMPTS, **kwargs) == generate(
        tiny_model, tiny_tokenizer, PROMPTS, **kwargs
    )


def test_a_generation_killed_part_way_resumes_from_its_partial_file(tiny_model, tiny_tokenizer, tmp_path,
                                                                      monkeypatch):
    """Finished batches are kept in `partial` as they end; a rerun (after a kill that cut the last
    line short) generates only the missing batches and returns what an uninterrupted call returns,
    and a third finds every batch; another partial_key reuses nothing."""
    kwargs = dict(max_new_tokens=6, temperature=1.0, top_p=1.0, batch_size=2, seed=7, progress=False)
    partial = tmp_path / "generations.partial.jsonl"
    whole = generate(tiny_model, tiny_tokenizer, PROMPTS, partial=partial, partial_key="run a", **kwargs)
    lines = partial.read_text().splitlines()
    assert len(lines) == 3  # 5 prompts in batches of 2
    partial.write_text(lines[0] + "\n" + lines[1][:20])  # killed while writing the second batch
    calls = []
    original = tiny_model.generate
    monkeypatch.setattr(tiny_model, "generate", lambda **kw: calls.append(1) or original(**kw))
    assert generate(tiny_model, tiny_tokenizer, PROMPTS, partial=partial, partial_key="run a", **kwargs) == whole
    assert len(calls) == 2
    calls.clear()
    assert generate(tiny_model, tiny_tokenizer, PROMPTS, partial=partial, partial_key="run a", **kwargs) == whole
    assert calls == []  # the batches written after the cut line are whole lines, found again
    assert generate(tiny_model, tiny_tokenizer, PROMPTS, partial=partial, partial_key="run b", **kwargs) == whole
    assert len(calls) == 3


def test_inference_autocast_gives_autocasts_numbers_without_a_cast_per_call(wide_model_dir, tiny_tokenizer):
    """`inference_autocast` holds the linear weights in bf16 for the block: the same tokens and
    log-probs as plain autocast, bitwise; the tied LM head / embedding stays fp32; everything is
    restored after. The width-256 model is wide enough for bf16 to show (a bf16 model differs)."""
    from transformers import AutoModelForCausalLM

    from upo.logps import sequence_logps
    from upo.modeling import inference_autocast

    model = AutoModelForCausalLM.from_pretrained(wide_model_dir).eval()
    before = {name: (p, p.detach().clone()) for name, p in model.named_parameters()}
    ids = torch.randint(3, len(tiny_tokenizer), (4, 24), generator=torch.Generator().manual_seed(0))
    mask, loss_mask = torch.ones_like(ids), torch.arange(24).expand(4, 24) >= 8
    kwargs = dict(max_new_tokens=8, batch_size=2, seed=3, progress=False)

    def run():
        with torch.no_grad():
            return sequence_logps(model, ids, mask, loss_mask).sum, generate(model, tiny_tokenizer, PROMPTS, **kwargs)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = run()
    with inference_autocast(model, "bf16"):
        assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
        assert model.lm_head.weight.dtype == model.model.embed_tokens.weight.dtype == torch.float32  # tied
        held = run()
    assert torch.equal(held[0], plain[0]) and held[1] == plain[1]
    for name, p in model.named_parameters():  # the same parameters, dtype and values
        assert p is before[name][0] and torch.equal(p, before[name][1]), name
    with torch.no_grad():
        bf16_model = sequence_logps(model.to(torch.bfloat16), ids, mask, loss_mask).sum
    assert not torch.equal(bf16_model.float(), plain[0].float())  # the check above could fail
