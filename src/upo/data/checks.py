"""Row checks beyond the format, shared by `upo train` and `upo validate` (through `upo.data.readers`).

A parsed row is still refused (a DataError naming the row and field) when its text would not train
as written:

- a lone UTF-16 surrogate (JSON "\\ud800"): not Unicode text; tokenizers fail on it;
- chat-template markup (`<|im_end|>`, `[INST]`, or, given a tokenizer, any of its special tokens):
  it would become a real control token, so the data could end a turn or forge a role;
- a chat role other than system / user / assistant, or turns no chat template can render: a system
  message after the first turn, two user or two assistant turns in a row, or a prompt that does
  not end with the user's turn (the response is the assistant's).

A row equal to an earlier one (same prompt and responses) is skipped, naming the earlier row: it
would count twice, and after the shuffle it could land in the held-out split as well as in training.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

ROLES = ("system", "user", "assistant")
# Markup of the common chat templates: ChatML / Llama 3 / Phi (<|...|>), Llama 2 / Mistral ([INST], <<SYS>>).
_MARKUP = re.compile(r"<\|[^|<>\s]{1,40}\|>|\[/?INST\]|<</?SYS>>")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _texts(record: Any) -> Iterator[tuple[str, str]]:
    """(field, text) of every text of a PreferencePair or UnpairedExample."""
    if isinstance(record.prompt, str):
        yield "prompt", record.prompt
    else:
        for k, message in enumerate(record.prompt):
            yield f"prompt[{k}].role", message["role"]
            yield f"prompt[{k}].content", message["content"]
    for field in ("chosen", "rejected", "completion"):
        if hasattr(record, field):
            yield field, getattr(record, field)


def row_problem(record: Any) -> tuple[str, str] | None:
    """(field, problem) of the first thing wrong with a parsed record's text, or None."""
    for field, text in _texts(record):
        bad = _SURROGATE.search(text)
        if bad:
            return field, f"lone UTF-16 surrogate ({bad.group()!r} at character {bad.start()}): not valid Unicode text"
        markup = _MARKUP.search(text)
        if markup:
            return field, _markup_problem(markup.group(), markup.start())
    if not isinstance(record.prompt, str):
        return _turn_problem(record.prompt)
    return None


def _markup_problem(token: str, at: int) -> str:
    return (
        f"chat-template markup ({token!r} at character {at}): it would become a control token in training; "
        "remove or escape it"
    )


def _turn_problem(messages: list[dict[str, str]]) -> tuple[str, str] | None:
    """System first (optional), then user and assistant alternating, ending with user."""
    expected = "user"
    for k, message in enumerate(messages):
        role = message["role"]
        if role not in ROLES:
            return f"prompt[{k}].role", f"unknown role ({role!r}); expected one of {', '.join(ROLES)}"
        if role == "system" and k == 0:
            continue
        if role != expected:
            previous = f"after {messages[k - 1]['role']!r}" if k else "first"
            return f"prompt[{k}].role", (
                f"turns must alternate user/assistant, starting with user after an optional first system message "
                f"(got {role!r} {previous})"
            )
        expected = "assistant" if role == "user" else "user"
    if expected != "assistant":
        return f"prompt[{len(messages) - 1}].role", "the prompt must end with a user turn (the response is the assistant's)"
    return None


def special_token_problem(record: Any, tokenizer) -> tuple[str, str] | None:
    """(field, problem) when a text holds one of `tokenizer`'s special tokens (e.g. Llama's `</s>`)."""
    tokens = [t for t in tokenizer.all_special_tokens if len(t) > 1]
    for field, text in _texts(record):
        for token in tokens:
            at = text.find(token)
            if at >= 0:
                return field, _markup_problem(token, at)
    return None


def row_key(record: Any) -> str:
    """Equal for two records with the same prompt and responses (and label)."""
    values = [getattr(record, f) for f in ("prompt", "chosen", "rejected", "completion", "label") if hasattr(record, f)]
    return json.dumps(values, sort_keys=True)
