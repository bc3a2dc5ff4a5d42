"""Which rows an evaluation uses, and prompts fitted to the length the model was trained with.

`heldout_records` reproduces `upo train`'s split (`upo.data.split`: shuffle with the training seed,
the first round(n * eval_fraction) rows are held out), so a model is evaluated on rows it never
trained on; tests/test_eval.py checks the two agree.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from upo.data.control import generation_suffix
from upo.data.readers import load_records
from upo.data.records import PreferencePair, Prompt, UnpairedExample
from upo.data.split import split_heldout
from upo.data.tokenize import encode_prompt


def heldout_records(data: str, split: str = "train", eval_fraction: float | None = None,
                    seed: int = 42) -> list[PreferencePair] | list[UnpairedExample]:
    """Every record of `data` (eval_fraction None), or the ones `upo train` holds out of it."""
    records = load_records(data, split).records
    if eval_fraction is None:
        return records
    return split_heldout(records, eval_fraction, seed)[0]


def references(records: list[PreferencePair] | list[UnpairedExample]) -> list[tuple[Prompt, str]]:
    """(prompt, reference response) per record: a pair's chosen response, or a desirable completion
    (undesirable unpaired rows have no reference and are left out)."""
    out = []
    for r in records:
        if isinstance(r, PreferencePair):
            out.append((r.prompt, r.chosen))
        elif r.label:
            out.append((r.prompt, r.completion))
    return out


def fit_prompt(prompt: Prompt, tokenizer: PreTrainedTokenizerBase, max_tokens: int,
               aux_coef: float | None = None, reward_mix: str | None = None) -> Prompt:
    """The prompt shortened to `max_tokens` tokens as generation will encode it.

    Chat messages lose their earliest turns first (so that the rest starts with a user turn); the
    last message is always kept, and when it alone is too long its text keeps its last tokens. A plain-text prompt keeps its last tokens.
    (Text cut at a token boundary may re-encode a token longer or shorter.)
    (Training keeps the last `max_prompt_length` tokens too; cutting whole turns here gives the
    model a well-formed conversation to answer.)
    """
    # a CSFT model's control token, or a steered model's condition (aux_coef, reward_mix), is appended
    budget = max_tokens - len(generation_suffix(tokenizer, aux_coef, reward_mix))
    if isinstance(prompt, str):
        ids = tokenizer(prompt, add_special_tokens=False).input_ids
        specials = len(encode_prompt("", tokenizer))  # e.g. a BOS the tokenizer adds
        keep = max(budget - specials, 1)
        return prompt if len(ids) <= keep else tokenizer.decode(ids[-keep:])
    messages = list(prompt)
    while len(messages) > 1 and len(encode_prompt(messages, tokenizer)) > budget:
        messages = messages[1:]
        while len(messages) > 1 and messages[0]["role"] == "assistant":  # start with the user's turn
            messages = messages[1:]
    if len(encode_prompt(messages, tokenizer)) <= budget:
        return messages
    last = messages[-1]
    overhead = len(encode_prompt([{**last, "content": ""}], tokenizer))
    ids = tokenizer(last["content"], add_special_tokens=False).input_ids
    return [{**last, "content": tokenizer.decode(ids[-max(budget - overhead, 1) :])}]
