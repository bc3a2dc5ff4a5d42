"""Batched sampling from a causal LM: one function, used to build demo data and to evaluate.

Prompts are sorted by token length so each batch pads little, and left-padded so every prompt
ends at the same column and the KV-cached decode appends new tokens right after it. Padding is
done here, not by `tokenizer.pad`, so the tokenizer is never mutated (its `padding_side` stays as
the caller set it) and tokenizers without a pad token work too. Each batch is seeded from
`seed + batch_index`, so its samples do not depend on the batches run before it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from upo.data.control import generation_suffix
from upo.data.records import Prompt
from upo.data.tokenize import encode_prompt
from upo.modeling import eval_mode


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, aux_coef: float | None = None,
                reward_mix: str | None = None) -> list[int]:
    """Token ids of one prompt as training encodes it (`upo.data.tokenize.encode_prompt`); a model
    trained with CSFT gets its desirable control token appended (`upo.data.control`), a steered one
    the tokens of `aux_coef` and `reward_mix` (`upo.data.steering`)."""
    return encode_prompt(prompt, tokenizer) + generation_suffix(tokenizer, aux_coef, reward_mix)


def _left_pad(seqs: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-align token id lists: returns input_ids and attention_mask, both (len(seqs), longest)."""
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        input_ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        attention_mask[row, width - len(s) :] = 1
    return input_ids, attention_mask


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    *,
    max_new_tokens: int = 64,
    do_sample: bool = True,
    temperature: float = 0.7,
    top_p: float = 0.9,
    num_return_sequences: int = 1,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    aux_coef: float | None = None,
    reward_mix: str | None = None,
    partial: Path | None = None,
    partial_key: str = "",
) -> list[list[str]]:
    """Sample completions for each prompt.

    Args:
        model: any Hugging Face causal LM (or a peft model wrapping one).
        tokenizer: its tokenizer; needs a chat template for message-list prompts.
        prompts: strings (tokenized as-is) or chat message lists
            (`[{"role": "user", "content": ...}, ...]`, rendered with the generation prompt).
        max_new_tokens: new tokens per completion, at most.
        do_sample: sample (with `temperature`, `top_p`) or decode greedily.
        num_return_sequences: completions per prompt.
        batch_size: prompts per `model.generate` call (each yields `num_return_sequences` rows).
            32 was the faster of 16 and 32 for SmolLM2-135M on 2 CPU cores (64 prompts x 2
            samples x 64 new tokens: 36 s vs 39 s).
        seed: batch `i` runs after `torch.manual_seed(seed + i)`.
        progress: show a tqdm bar over batches.
        aux_coef: for a model trained steered by token (`steer_aux_coefs`), the auxiliary strength to
            generate with, one of the trained values (else a SteeringError lists them); None for other
            models, and for one steered by adapter, whose aux_coef is in its weights
            (`upo.steer_adapter.load_steered`).
        reward_mix: likewise for a model trained steered over reward mixes (`steer_reward_mixes`):
            the name of the mix to generate with.
        partial: a JSON-lines file that keeps each finished batch's completions, so a generation
            killed part-way resumes with the batches it lacks. Each batch is seeded on its own, so
            the result is the one an uninterrupted call gives. A batch is reused only under the same
            `partial_key` (the caller's digest of the model and settings) and the same prompt ids.

    Returns:
        `len(prompts)` lists, in the input order, each of `num_return_sequences` decoded
        completions (special tokens skipped, whitespace stripped).
    """
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_token_id is None:  # generate fills finished rows with it; the mask hides prompt padding
        raise ValueError("the tokenizer has neither a pad token nor an eos token to pad with")
    gen_kwargs: dict = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "num_return_sequences": num_return_sequences,
        "pad_token_id": pad_token_id,
    }
    if do_sample:  # greedy decoding warns about sampling parameters it ignores
        gen_kwargs |= {"temperature": temperature, "top_p": top_p}
    if model.generation_config.eos_token_id is None and tokenizer.eos_token_id is not None:
        gen_kwargs["eos_token_id"] = tokenizer.eos_token_id

    ids = [_prompt_ids(tokenizer, p, aux_coef, reward_mix) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # stable: ties keep input order
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    completions: list[list[str]] = [[] for _ in prompts]
    done = _finished_batches(partial)

    with eval_mode(model), torch.inference_mode():
        for batch_index, batch in enumerate(tqdm(batches, desc="generate", disable=not progress)):
            key = _batch_key(partial_key, seed + batch_index, [ids[i] for i in batch], gen_kwargs)
            texts = done.get(key)
            if texts is None:
                input_ids, attention_mask = _left_pad([ids[i] for i in batch], pad_token_id)
                torch.manual_seed(seed + batch_index)
                out = model.generate(
                    input_ids=input_ids.to(model.device),
                    attention_mask=attention_mask.to(model.device),
                    **gen_kwargs,
                )  # (len(batch) * num_return_sequences, prompt_len + new_len), rows grouped by prompt
                texts = tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)
                if partial is not None:
                    with partial.open("a", encoding="utf-8") as f:
                        f.write(json.dumps({"key": key, "texts": texts}) + "\n")
            for row, text in enumerate(texts):
                completions[batch[row // num_return_sequences]].append(text.strip())
    return completions


def reached_limit(tokenizer: PreTrainedTokenizerBase, completions: list[str], max_new_tokens: int) -> list[bool]:
    """Whether each decoded completion was cut by max_new_tokens: its re-tokenized length is at least
    max_new_tokens - 1 (decoding and re-encoding can merge one pair of tokens; a completion that ended
    with EOS just short of the limit counts too)."""
    lengths = [len(ids) for ids in tokenizer(completions, add_special_tokens=False)["input_ids"]] if completions else []
    return [n >= max_new_tokens - 1 for n in lengths]


def _batch_key(partial_key: str, seed: int, batch_ids: list[list[int]], gen_kwargs: dict) -> str:
    """What a batch's completions depend on, hashed: the caller's key, the batch's seed, its prompts' ids."""
    text = json.dumps([partial_key, seed, batch_ids, sorted(gen_kwargs.items())])
    return hashlib.sha256(text.encode()).hexdigest()


def _finished_batches(partial: Path | None) -> dict[str, list[str]]:
    """{batch key: completions} of a `partial` file; a line cut short by a kill is dropped from the
    file, so the next batch's line starts on a line of its own."""
    done = {}
    if partial is not None and partial.exists():
        text = partial.read_text(encoding="utf-8")
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
            partial.write_text(text, encoding="utf-8")
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[record["key"]] = record["texts"]
    return done
