"""Text-level training records: the row formats, and errors that name the row and field.

Row formats, detected per row (extra fields are ignored):

- paired ``{"prompt", "chosen", "rejected"}``: the prompt is plain text, chat messages
  ``[{"role", "content"}, ...]`` or an HH dialogue string; each response is a string or (TRL
  conversational format) a list of messages ending with the assistant reply. Without a prompt,
  conversational responses share their leading messages as the prompt;
- HH-RLHF ``{"chosen", "rejected"}``: whole ``\\n\\nHuman: ... \\n\\nAssistant: ...`` dialogues;
- unpaired (KTO) ``{"prompt", "completion", "label"}`` with a bool or 0/1 label.

Malformed input raises DataError naming the row (``file:line`` or ``name[split] row N``) and the
field. A well-formed row that carries no training signal (identical responses, an empty response,
two dialogues whose prompts differ) raises UnusableRow, which load_records skips and counts; so
does a row equal to an earlier one. Text that would not train as written (lone surrogates, chat
markup, unknown roles, impossible turn orders) is malformed: see upo.data.checks.
Reading files and datasets into records is `upo.data.readers`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

Prompt = str | list[dict[str, str]]  # plain text, or chat messages [{"role", "content"}, ...]


class DataError(ValueError):
    """Bad input data. The message names the row and the field, e.g.
    ``data.jsonl:17: field 'chosen': expected a non-empty string, got int``."""


class UnusableRow(DataError):
    """A well-formed row with no training signal; load_records skips it and counts its `reason`."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PreferencePair:
    prompt: Prompt
    chosen: str
    rejected: str
    source: str  # where the row came from, e.g. "data.jsonl:17"


@dataclass(frozen=True)
class UnpairedExample:
    prompt: Prompt
    completion: str
    label: bool  # True = desirable
    source: str


_HH_ASSISTANT = "\n\nAssistant:"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_PAIRED_KEYS = ("chosen", "rejected")
_UNPAIRED_KEYS = ("completion", "label")
_FORMATS = "fields prompt/chosen/rejected (paired) or prompt/completion/label (unpaired)"
_HH_SHAPE = "an HH dialogue '\\n\\nHuman: ... \\n\\nAssistant: ...'"


# ---- errors ----------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _preview(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def field_error(source: str, field: str, problem: str) -> DataError:
    return DataError(f"{source}: field '{field}': {problem}")


def _missing(row: dict, field: str, source: str) -> DataError:
    """A missing field, suggesting the closest unknown key that is present (a likely misspelling)."""
    known = {"prompt", *_PAIRED_KEYS, *_UNPAIRED_KEYS}
    others = [str(k) for k in row if str(k) not in known]
    close = difflib.get_close_matches(field, others, n=1, cutoff=0.6)
    hint = f" (found '{close[0]}')" if close else ""
    return DataError(f"{source}: missing field '{field}'{hint}")


# ---- fields ----------------------------------------------------------------------------------


def _text(value: Any, source: str, field: str) -> str:
    """A response string: a non-string is an error, a blank one makes the row unusable."""
    if not isinstance(value, str):
        raise field_error(source, field, f"expected a non-empty string, got {_type_name(value)}")
    if not value.strip():
        raise UnusableRow(f"{source}: field '{field}': empty response", "empty response")
    return value


def _messages(value: Any, source: str, field: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else _type_name(value)
        raise field_error(source, field, f"expected a non-empty list of messages, got {got}")
    messages = []
    for k, message in enumerate(value):
        role, content = (message.get("role"), message.get("content")) if isinstance(message, dict) else (0, 0)
        if not (isinstance(role, str) and role and isinstance(content, str)):
            expected = '{"role": str, "content": str}'
            raise field_error(source, f"{field}[{k}]", f"expected {expected}, got {_preview(message)}")
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def _assistant_reply(messages: list[dict[str, str]], source: str, field: str) -> str:
    last = messages[-1]
    if last["role"] != "assistant":
        problem = f"expected the last message to be the assistant reply, got role '{last['role']}'"
        raise field_error(source, field, problem)
    return _text(last["content"], source, field)


def _is_hh(text: str) -> bool:
    return text.lstrip().startswith("Human:") and _HH_ASSISTANT in text


def _hh_messages(text: str, source: str, field: str) -> list[dict[str, str]]:
    """Turn an HH prompt ``\\n\\nHuman: ... \\n\\nAssistant:`` into chat messages.

    Human -> user, Assistant -> assistant, contents stripped; the trailing empty ``Assistant:`` is
    dropped. Consecutive turns by one speaker are merged (joined by a blank line) because strict
    chat templates require alternating roles; a few real HH dialogues have two Assistant turns in a row.
    """
    body = "\n\n" + text.lstrip().rstrip()
    if body.endswith(_HH_ASSISTANT):
        body = body[: -len(_HH_ASSISTANT)]
    parts = _HH_TURN.split(body)
    if parts[0].strip() or len(parts) < 3:
        raise field_error(source, field, f"expected {_HH_SHAPE}, got {_preview(text)}")
    messages: list[dict[str, str]] = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if speaker == "Human" else "assistant"
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + content.strip()
        else:
            messages.append({"role": role, "content": content.strip()})
    return messages


def _prompt(value: Any, source: str) -> Prompt:
    """A plain-text prompt stays text; an HH dialogue string or a message list becomes messages."""
    if isinstance(value, list):
        return _messages(value, source, "prompt")
    if not isinstance(value, str) or not value.strip():
        got = "an empty string" if isinstance(value, str) else _type_name(value)
        raise field_error(source, "prompt", f"expected a non-empty string or a list of messages, got {got}")
    return _hh_messages(value, source, "prompt") if _is_hh(value) else value


def _response(value: Any, source: str, field: str, *, strip: bool) -> str:
    """A response next to a separate prompt: a string, or a one-message assistant list."""
    if isinstance(value, list):
        messages = _messages(value, source, field)
        if len(messages) != 1:
            problem = f"with a separate 'prompt', expected one assistant message, got {len(messages)}"
            raise field_error(source, field, problem)
        value = _assistant_reply(messages, source, field)
    text = _text(value, source, field)
    return text.strip() if strip else text


def _pair(prompt: Prompt, chosen: str, rejected: str, source: str) -> PreferencePair:
    if chosen == rejected:
        message = f"{source}: fields 'chosen' and 'rejected': identical responses"
        raise UnusableRow(message, "identical responses")
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, source=source)


# ---- rows ------------------------------------------------------------------------------------


def parse_hh(chosen: str, rejected: str, source: str) -> PreferencePair:
    """Split two HH-RLHF dialogues into a shared prompt (as messages) and the final replies.

    The prompt is everything up to and including the last ``\\n\\nAssistant:``; it must be the same
    text in both dialogues, else UnusableRow "prompts are not a shared prefix" (a DataError).
    """
    for field, dialogue in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(dialogue, str) or _HH_ASSISTANT not in dialogue:
            raise field_error(source, field, f"expected {_HH_SHAPE}, got {_preview(dialogue)}")
    cut_c = chosen.rfind(_HH_ASSISTANT) + len(_HH_ASSISTANT)
    cut_r = rejected.rfind(_HH_ASSISTANT) + len(_HH_ASSISTANT)
    if chosen[:cut_c] != rejected[:cut_r]:
        message = f"{source}: fields 'chosen' and 'rejected': prompts are not a shared prefix (the dialogues differ before their last '\\n\\nAssistant:')"
        raise UnusableRow(message, "prompts differ")
    replies = []
    for field, tail in (("chosen", chosen[cut_c:]), ("rejected", rejected[cut_r:])):
        if "\n\nHuman:" in tail:
            raise field_error(source, field, "the dialogue ends with a Human turn; expected a final Assistant reply")
        replies.append(_text(tail, source, field).strip())
    return _pair(_hh_messages(chosen[:cut_c], source, "chosen"), replies[0], replies[1], source)


def _parse_conversational(chosen: list, rejected: list, source: str) -> PreferencePair:
    """TRL conversational rows without a prompt: the responses' shared leading messages are it."""
    c, r = _messages(chosen, source, "chosen"), _messages(rejected, source, "rejected")
    if len(c) < 2:
        raise DataError(f"{source}: missing field 'prompt' (field 'chosen' holds only the reply)")
    if c[:-1] != r[:-1]:
        message = f"{source}: fields 'chosen' and 'rejected': prompts are not a shared prefix (leading messages differ)"
        raise UnusableRow(message, "prompts differ")
    return _pair(
        c[:-1], _assistant_reply(c, source, "chosen"), _assistant_reply(r, source, "rejected"), source
    )


def _parse_paired(row: dict, source: str, present: set[str]) -> PreferencePair:
    for field in _PAIRED_KEYS:
        if field not in present:
            raise _missing(row, field, source)
    chosen, rejected = row["chosen"], row["rejected"]
    if "prompt" not in present:
        if isinstance(chosen, str) and _is_hh(chosen):
            return parse_hh(chosen, rejected, source)
        if isinstance(chosen, list) and isinstance(rejected, list):
            return _parse_conversational(chosen, rejected, source)
        raise _missing(row, "prompt", source)
    prompt = _prompt(row["prompt"], source)
    # an HH prompt string: strip the replies, as parse_hh does
    strip = isinstance(row["prompt"], str) and isinstance(prompt, list)
    return _pair(
        prompt,
        _response(chosen, source, "chosen", strip=strip),
        _response(rejected, source, "rejected", strip=strip),
        source,
    )


def _parse_unpaired(row: dict, source: str, present: set[str]) -> UnpairedExample:
    for field in ("prompt", *_UNPAIRED_KEYS):
        if field not in present:
            raise _missing(row, field, source)
    label = row["label"]
    if not (isinstance(label, bool) or (isinstance(label, int) and label in (0, 1))):
        raise field_error(source, "label", f"expected true/false or 1/0, got {_preview(label)}")
    prompt = _prompt(row["prompt"], source)
    strip = isinstance(row["prompt"], str) and isinstance(prompt, list)
    completion = _response(row["completion"], source, "completion", strip=strip)
    return UnpairedExample(prompt=prompt, completion=completion, label=bool(label), source=source)


def parse_row(row: Any, source: str) -> PreferencePair | UnpairedExample:
    """Parse one row of any accepted format (see the module docstring); raises DataError."""
    if not isinstance(row, dict):
        raise DataError(f"{source}: expected a JSON object with {_FORMATS}, got {_type_name(row)}")
    present = {str(k) for k, v in row.items() if v is not None}
    paired = [k for k in _PAIRED_KEYS if k in present]
    unpaired = [k for k in _UNPAIRED_KEYS if k in present]
    if paired and unpaired:
        raise DataError(
            f"{source}: fields '{paired[0]}' and '{unpaired[0]}': a row is paired (prompt/chosen/rejected) "
            "or unpaired (prompt/completion/label), not both"
        )
    if not paired and not unpaired:  # guess the format from misspelled keys, to report those
        known = _PAIRED_KEYS + _UNPAIRED_KEYS
        guesses = [g for k in present for g in difflib.get_close_matches(k, known, n=1)]
        if not guesses:
            found = ", ".join(f"'{k}'" for k in sorted(present)) or "none"
            raise DataError(
                f"{source}: missing field 'chosen' or 'completion': expected {_FORMATS}, found {found}"
            )
        unpaired = [g for g in guesses if g in _UNPAIRED_KEYS]
    if unpaired:
        return _parse_unpaired(row, source, present)
    return _parse_paired(row, source, present)


def to_unpaired(pairs: list[PreferencePair]) -> list[UnpairedExample]:
    """Each pair -> a desirable chosen and an undesirable rejected example: [c0, r0, c1, r1, ...]."""
    return [
        UnpairedExample(prompt=p.prompt, completion=completion, label=label, source=p.source)
        for p in pairs
        for completion, label in ((p.chosen, True), (p.rejected, False))
    ]


def prompt_text(prompt: Prompt) -> str:
    """Plain text of a prompt for scorers: a string unchanged, messages' contents joined by a blank line."""
    return prompt if isinstance(prompt, str) else "\n\n".join(m["content"] for m in prompt)
