"""Records -> token ids, with explicit and counted truncation.

A sequence is ``prompt_ids + completion_ids``. Prompts in chat format go through the tokenizer's
chat template with the generation prompt, so the completion is exactly the assistant's reply;
every completion ends with eos so the model learns to stop. Truncation never happens silently:
prompts keep their last ``max_prompt_length`` tokens (the end of a dialogue is what the reply
answers), completions are cut to fit ``max_length``, and what cannot fit is dropped; all of it
is counted in TruncationStats.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from upo.data.records import PreferencePair, Prompt, UnpairedExample


@dataclass
class TruncationStats:
    total: int = 0  # examples seen (pairs count once)
    prompt_truncated: int = 0  # kept examples whose prompt lost its beginning
    completion_truncated: int = 0  # kept responses cut to fit max_length (a pair can count twice)
    dropped: int = 0  # examples with no room for even one completion token

    def summary(self) -> str:
        return (
            f"{self.total} examples: {self.prompt_truncated} prompts truncated, "
            f"{self.completion_truncated} responses truncated, {self.dropped} dropped (longer than max_length)"
        )


def encode_prompt(prompt: Prompt, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of a prompt: chat messages through the chat template (with the generation
    prompt, no extra special tokens); plain text with the tokenizer's special tokens (e.g. bos)."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if tokenizer.chat_template is None:
        raise ValueError(
            "the tokenizer has no chat template, so it cannot encode a prompt given as chat messages; "
            "set tokenizer.chat_template or use plain-text prompts"
        )
    text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_completion(text: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of a response followed by eos."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; completions must end with one")
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation ``perm`` of range(n) with ``perm[i] != i`` for all i (when n > 1).

    Sattolo's algorithm: a uniformly random single cycle, so no element maps to itself.
    """
    perm = list(range(n))
    rng = random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)  # j < i, never i itself: this is what makes it a cycle
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def _check_lengths(max_length: int, max_prompt_length: int) -> None:
    if max_length < 2 or max_prompt_length < 1:
        raise ValueError(
            f"need max_length >= 2 and max_prompt_length >= 1, got {max_length} and {max_prompt_length}"
        )


def _fit_prompt(ids: list[int], max_prompt_length: int, suffix: Sequence[int] = ()) -> tuple[list[int], bool]:
    """Keep the last tokens that fit max_prompt_length with `suffix` (a CSFT control token, never cut)
    appended; also report whether anything was cut."""
    room = max(max_prompt_length - len(suffix), 0)
    cut = len(ids) > room
    return ids[len(ids) - room :] + list(suffix) if cut else ids + list(suffix), cut


def tokenize_pairs(
    pairs: Sequence[PreferencePair],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    max_prompt_length: int,
    control: dict[bool, int] | None = None,
) -> tuple[list[dict], TruncationStats]:
    """Tokenize preference pairs.

    Returns items ``{"index": i, "prompt_ids", "chosen_ids", "rejected_ids"}`` (lists of int,
    ``index`` = position in `pairs`) and the truncation counts. A pair is dropped when either side
    would keep no completion token. With `control` (CSFT's {label: token id}), prompts end with the
    desirable token: held-out pairs are scored the way the model will generate.
    """
    _check_lengths(max_length, max_prompt_length)
    suffix = [control[True]] if control else []
    stats, items = TruncationStats(total=len(pairs)), []
    for i, pair in enumerate(pairs):
        prompt_ids, prompt_cut = _fit_prompt(encode_prompt(pair.prompt, tokenizer), max_prompt_length, suffix)
        room = max_length - len(prompt_ids)
        if room < 1:
            stats.dropped += 1
            continue
        sides = [encode_completion(text, tokenizer) for text in (pair.chosen, pair.rejected)]
        stats.prompt_truncated += prompt_cut
        stats.completion_truncated += sum(len(ids) > room for ids in sides)
        items.append(
            {
                "index": i,
                "prompt_ids": prompt_ids,
                "chosen_ids": sides[0][:room],
                "rejected_ids": sides[1][:room],
            }
        )
    return items, stats


def tokenize_unpaired(
    examples: Sequence[UnpairedExample],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    max_prompt_length: int,
    seed: int,
    control: dict[bool, int] | None = None,
) -> tuple[list[dict], TruncationStats]:
    """Tokenize unpaired examples, each with a mismatched completion for KTO's reference point.

    Returns items ``{"index", "prompt_ids", "completion_ids", "label": bool, "kl_completion_ids"}``
    and the truncation counts. ``kl_completion_ids`` of example i is the completion of example
    ``derangement(n, seed)[i]`` (never i itself when n > 1), cut to fit after i's prompt; with a
    single example it is its own completion. With `control` (CSFT's {label: token id}), each prompt
    ends with the control token of its example's label.
    """
    _check_lengths(max_length, max_prompt_length)
    completions = [encode_completion(e.completion, tokenizer) for e in examples]
    partner = derangement(len(examples), seed)
    stats, items = TruncationStats(total=len(examples)), []
    for i, example in enumerate(examples):
        suffix = [control[example.label]] if control else []
        prompt_ids, prompt_cut = _fit_prompt(encode_prompt(example.prompt, tokenizer), max_prompt_length, suffix)
        room = max_length - len(prompt_ids)
        if room < 1:
            stats.dropped += 1
            continue
        stats.prompt_truncated += prompt_cut
        stats.completion_truncated += len(completions[i]) > room
        items.append(
            {
                "index": i,
                "prompt_ids": prompt_ids,
                "completion_ids": completions[i][:room],
                "label": example.label,
                "kl_completion_ids": completions[partner[i]][:room],
            }
        )
    return items, stats
