"""`upo validate`: every problem of a dataset, found without training.

The data is read the way `upo train` reads it (`upo.data.readers`), except that every malformed
row is collected instead of stopping at the first, next to the counts of rows training would skip.
Given a model (only its tokenizer is loaded), token lengths are measured the way training
tokenizes, and the prompts and responses `max_length` / `max_prompt_length` would cut are counted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from upo.config import UPOConfig
from upo.data.checks import special_token_problem
from upo.data.readers import BadRow, empty_dataset_error, scan_records
from upo.data.records import PreferencePair
from upo.data.tokenize import (
    TruncationStats,
    encode_completion,
    encode_prompt,
    tokenize_pairs,
    tokenize_unpaired,
)

DEFAULT_MAX_LENGTH = UPOConfig.max_length
DEFAULT_MAX_PROMPT_LENGTH = UPOConfig.max_prompt_length


@dataclass
class ValidationReport:
    """What `validate_dataset` found in one source."""

    source: str
    usable: int  # rows training would use
    fmt: str | None  # "paired" | "unpaired"; None when no row is usable
    skipped: dict[str, int]  # rows training would skip, per reason
    errors: list[BadRow]  # every malformed row (and "empty dataset" when nothing is usable), in file order
    skipped_rows: list[BadRow] = field(default_factory=list)  # every row training would skip, with why
    lengths: dict[str, list[int]] = field(default_factory=dict)  # token counts "prompt", "response", "prompt + response"
    truncation: TruncationStats | None = None  # what max_length / max_prompt_length would cut
    max_length: int = DEFAULT_MAX_LENGTH
    max_prompt_length: int = DEFAULT_MAX_PROMPT_LENGTH

    @property
    def rows(self) -> int:
        """Rows read: usable, skipped or malformed (an "empty dataset" entry is not a row)."""
        return self.usable + sum(self.skipped.values()) + sum(e.source != self.source for e in self.errors)

    @property
    def ok(self) -> bool:
        return not self.errors


def default_prompt_length(max_length: int) -> int:
    """Training's default max_prompt_length, or half of a smaller max_length."""
    return min(DEFAULT_MAX_PROMPT_LENGTH, max_length // 2)


def validate_dataset(
    path_or_name: str,
    split: str = "train",
    tokenizer=None,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    max_prompt_length: int | None = None,
) -> ValidationReport:
    """Scan every row of a dataset; with a tokenizer, measure token lengths and truncation.

    Raises DataError only when the source cannot be read at all (missing file, not gzip), and
    ValueError for lengths training would refuse.
    """
    max_prompt_length = default_prompt_length(max_length) if max_prompt_length is None else max_prompt_length
    if not 0 < max_prompt_length < max_length:
        raise ValueError(
            f"need 0 < max_prompt_length < max_length, got max_prompt_length={max_prompt_length}, "
            f"max_length={max_length}"
        )
    scan = scan_records(path_or_name, split)
    errors = list(scan.errors)
    records = scan.records
    if tokenizer is not None:  # text holding the tokenizer's own control tokens: an error in training too
        problems = {id(r): special_token_problem(r, tokenizer) for r in records}
        errors += [BadRow(r.source, f"{r.source}: field '{p[0]}': {p[1]}") for r in records if (p := problems[id(r)])]
        records = [r for r in records if problems[id(r)] is None]
    if not records:
        errors.append(BadRow(path_or_name, str(empty_dataset_error(path_or_name, scan.skipped))))
    fmt = None
    if records:
        fmt = "paired" if isinstance(records[0], PreferencePair) else "unpaired"
    report = ValidationReport(
        source=path_or_name,
        usable=len(records),
        fmt=fmt,
        skipped=scan.skipped,
        errors=errors,
        skipped_rows=[row for rows in scan.skipped_rows.values() for row in rows],
        max_length=max_length,
        max_prompt_length=max_prompt_length,
    )
    if tokenizer is not None and records:
        try:
            report.lengths = token_lengths(records, tokenizer)
            tokenize = tokenize_pairs if fmt == "paired" else _tokenize_unpaired
            _, report.truncation = tokenize(
                records, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length
            )
        except ValueError as e:  # e.g. chat-message prompts and a tokenizer without a chat template
            errors.append(BadRow(path_or_name, f"{path_or_name}: cannot tokenize: {e}"))
    return report


def _tokenize_unpaired(records, tokenizer, **lengths):
    return tokenize_unpaired(records, tokenizer, seed=0, **lengths)  # the seed only picks KL partners


def token_lengths(records, tokenizer) -> dict[str, list[int]]:
    """Untruncated token counts as training builds sequences: the prompt (chat template applied),
    each response (with its eos), and prompt + response per response."""
    prompts, responses, sequences = [], [], []
    for record in records:
        n_prompt = len(encode_prompt(record.prompt, tokenizer))
        texts = (record.chosen, record.rejected) if isinstance(record, PreferencePair) else (record.completion,)
        prompts.append(n_prompt)
        for text in texts:
            n = len(encode_completion(text, tokenizer))
            responses.append(n)
            sequences.append(n_prompt + n)
    return {"prompt": prompts, "response": responses, "prompt + response": sequences}


# ---- the report ------------------------------------------------------------------------------


def error_kind(error: BadRow) -> str:
    """A short label that groups errors of one kind, e.g. "missing field 'rejected'" or
    "field 'chosen': expected a non-empty string" (the row and the details dropped)."""
    text = error.message.removeprefix(f"{error.source}: ")
    named = re.match(r"fields? '[^']*'(?: and '[^']*')?: ", text)
    if named:
        return named.group(0) + re.split(r", got | \(", text[named.end() :], maxsplit=1)[0]
    return re.split(r" at (?:column|byte) |: | \(|, ", text, maxsplit=1)[0]


def format_report(report: ValidationReport) -> str:
    """Every error line and every skipped row, then summary tables (rows, errors by kind, token lengths)."""
    lines = [e.message for e in report.errors] + [f"{r.message} (skipped)" for r in report.skipped_rows]
    if lines:
        lines.append("")
    lines += [f"| {report.source} | rows |", "|---|---|", f"| read | {report.rows} |"]
    lines.append(f"| usable ({report.fmt or 'none'}) | {report.usable} |")
    lines += [f"| skipped: {reason} | {n} |" for reason, n in report.skipped.items()]
    lines.append(f"| errors | {len(report.errors)} |")
    if report.errors:
        kinds: Counter[str] = Counter()
        first: dict[str, str] = {}
        for e in report.errors:
            kind = error_kind(e)
            kinds[kind] += 1
            first.setdefault(kind, e.source)
        lines += ["", "| error | rows | first at |", "|---|---|---|"]
        lines += [f"| {kind} | {n} | {first[kind]} |" for kind, n in kinds.most_common()]
    if report.lengths:
        limits = {"prompt": ("max_prompt_length", report.max_prompt_length),
                  "prompt + response": ("max_length", report.max_length)}  # fmt: skip
        lines += ["", "| tokens | n | min | median | p95 | max | over limit |", "|---|---|---|---|---|---|---|"]
        for name, values in report.lengths.items():
            v = np.asarray(values)
            over = ""
            if name in limits:
                key, limit = limits[name]
                over = f"{int((v > limit).sum())} > {key}={limit}"
            lines.append(
                f"| {name} | {v.size} | {v.min()} | {np.median(v):g} | {np.percentile(v, 95):.0f} | {v.max()} | {over} |"
            )
    if report.truncation is not None:
        lines += ["", f"training would see {report.truncation.summary()}"]
    return "\n".join(lines)


def run_validate(
    data: str,
    *,
    split: str = "train",
    model: str | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    max_prompt_length: int | None = None,
    cache_dir: str | None = None,
) -> int:
    """Print the report of `data`; returns the exit status: 1 when any row is malformed, else 0."""
    tokenizer = None
    if model is not None:
        from upo.modeling import load_tokenizer, resolve_model_path

        try:
            tokenizer = load_tokenizer(resolve_model_path(model, cache_dir, progress=False))
        except OSError as e:  # not a model folder, or a Hub name while offline
            raise FileNotFoundError(f"could not load a tokenizer from {model!r}: {e}") from None
    report = validate_dataset(
        data, split, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length
    )
    print(format_report(report))
    return 0 if report.ok else 1
