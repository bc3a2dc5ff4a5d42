"""Reading a dataset's rows into records: local JSON files with line numbers, anything else through
`datasets.load_dataset`.

load_records stops at the first malformed row; scan_records (for ``upo validate``) collects them all.
Row formats and their errors are in `upo.data.records`.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from upo.data.checks import row_key, row_problem
from upo.data.records import DataError, PreferencePair, UnpairedExample, UnusableRow, field_error, parse_row
from upo.hub_names import looks_local


@dataclass(frozen=True)
class LoadResult:
    """What load_records read: the usable records (all paired or all unpaired, never empty) and
    the number of rows skipped per reason ("identical responses", "empty response", "prompts differ",
    "duplicate row"), and each skipped row with the reason (file:line and field)."""

    records: list[PreferencePair] | list[UnpairedExample]
    skipped: dict[str, int]
    skipped_rows: dict[str, list[BadRow]] = dataclasses.field(default_factory=dict)  # reason -> the rows skipped for it


class BadRow(NamedTuple):
    """A malformed row found by scan_records: where it is, and the DataError's message."""

    source: str  # "data.jsonl:17" or "name[split] row 17"
    message: str  # the full message, which starts with the source


@dataclass(frozen=True)
class ScanResult:
    """What scan_records read: usable records (possibly none), skip counts, and every malformed row."""

    records: list[PreferencePair | UnpairedExample]
    skipped: dict[str, int]
    errors: list[BadRow]
    skipped_rows: dict[str, list[BadRow]] = dataclasses.field(default_factory=dict)  # reason -> the rows skipped for it


# ---- sources ---------------------------------------------------------------------------------

_JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".json")
_DATASETS_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}  # single local files


def _report(error: DataError, source: str, errors: list[BadRow] | None) -> None:
    """Raise `error`, or with an `errors` list (scan mode) record it and let the caller go on."""
    if errors is None:
        raise error
    errors.append(BadRow(source, str(error)))


def _decode_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{source}: malformed JSON at column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise DataError(f"{source}: malformed JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise DataError(f"{source}: malformed JSON: {e}") from None


def _json_lines(lines: Iterable[bytes], name: str, errors: list[BadRow] | None = None) -> Iterator[tuple[Any, str]]:
    for n, raw in enumerate(lines, 1):
        source = f"{name}:{n}"
        try:
            text = raw.decode("utf-8")
            if n == 1:
                text = text.removeprefix("\ufeff")
            if not text.strip():
                continue
            row = _decode_json(text, source)
        except UnicodeDecodeError as e:
            bad = DataError(f"{source}: invalid UTF-8 at byte {e.start} of the line: {raw[e.start : e.start + 4]!r}")
            _report(bad, source, errors)
            continue
        except DataError as e:
            _report(e, source, errors)
            continue
        yield row, source


def _json_array(text: str, name: str, errors: list[BadRow] | None = None) -> Iterator[tuple[Any, str]]:
    """Elements of a JSON array, each located by the line on which it starts. The first malformed
    element ends the array (raised, or recorded in `errors`): nothing after it can be located."""
    decoder, ws = json.JSONDecoder(), re.compile(r"\s*")
    pos, line = ws.match(text, text.index("[") + 1).end(), 1
    line += text.count("\n", 0, pos)
    while not text.startswith("]", pos):
        source = f"{name}:{line}"
        try:
            row, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            source = f"{name}:{e.lineno}"
            _report(DataError(f"{source}: malformed JSON at column {e.colno}: {e.msg}"), source, errors)
            return
        except RecursionError:
            _report(DataError(f"{source}: malformed JSON: nested too deeply"), source, errors)
            return
        except ValueError as e:  # e.g. an integer of more than 4300 digits
            _report(DataError(f"{source}: malformed JSON: {e}"), source, errors)
            return
        yield row, source
        after = ws.match(text, end).end()
        if text.startswith(",", after):
            after = ws.match(text, after + 1).end()
        elif not text.startswith("]", after):
            at_line = line + text.count("\n", pos, after)
            at = f"{name}:{at_line}"
            _report(DataError(f"{at}: malformed JSON: expected ',' or ']' after an array element"), at, errors)
            return
        line += text.count("\n", pos, after)
        pos = after


def _json_rows(path: Path, name: str, errors: list[BadRow] | None = None) -> Iterator[tuple[Any, str]]:
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                yield from _json_lines(f, name, errors)
            return
        raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; corrupt data a zlib.error
        raise DataError(f"{name}: cannot read: {e}") from e
    if name.endswith(".json") and raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            source = f"{name}:{line}"
            _report(DataError(f"{source}: invalid UTF-8: {raw[e.start : e.start + 4]!r}"), source, errors)
            return
        yield from _json_array(text.removeprefix("\ufeff"), name, errors)
    else:
        yield from _json_lines(raw.split(b"\n"), name, errors)


def _looks_local(name: str) -> bool:
    """Whether a name that does not exist was meant as a local path (so the Hub is not asked): a
    path by its form (`looks_local`) or a data file by its suffix."""
    return looks_local(name) or Path(name).suffix in _DATASETS_BUILDERS


def _dataset_rows(name: str, split: str) -> Iterator[tuple[Any, str]]:
    import datasets  # slow to import; only needed for sources this module does not read itself

    path = Path(name).expanduser()
    builder = _DATASETS_BUILDERS.get(path.suffix) if path.is_file() else None
    try:
        if builder:
            ds = datasets.load_dataset(builder, data_files={split: str(path)}, split=split)
        else:
            ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # translate datasets' many failure types into one user-facing error
        if not path.exists():
            raise DataError(
                f"{name}: not found: no such file or folder, and datasets.load_dataset cannot load it "
                f"({type(e).__name__}: {e})"
            ) from e
        raise DataError(f"{name}[{split}]: datasets.load_dataset failed: {type(e).__name__}: {e}") from e
    for n, row in enumerate(ds, 1):
        yield row, f"{name}[{split}] row {n}"


def _rows(path_or_name: str, split: str, errors: list[BadRow] | None = None) -> Iterator[tuple[Any, str]]:
    path = Path(path_or_name).expanduser()
    if path_or_name.endswith(_JSON_SUFFIXES):
        if not path.is_file():
            raise DataError(f"{path_or_name}: not found: no such file")
        return _json_rows(path, path_or_name, errors)
    if not path.exists() and _looks_local(path_or_name):
        raise DataError(f"{path_or_name}: not found: no such file or folder")
    return _dataset_rows(path_or_name, split)


def _read(path_or_name: str, split: str, errors: list[BadRow] | None) -> tuple[list, Counter[str], dict]:
    """Parse and check (upo.data.checks) every row; a malformed one raises, or with an `errors` list is
    recorded there. Returns the records, the skip counts per reason, and the skipped rows."""
    records: list = []
    skipped: Counter[str] = Counter()
    skipped_rows: dict[str, list[BadRow]] = {}
    seen: dict[str, str] = {}  # row_key -> the source of its first row
    first: tuple[type, str] | None = None
    for row, source in _rows(path_or_name, split, errors):
        try:
            record = parse_row(row, source)
            problem = row_problem(record)
            if problem is not None:
                raise field_error(source, *problem)
            if first is not None and type(record) is not first[0]:
                kinds = {PreferencePair: "paired", UnpairedExample: "unpaired"}
                raise DataError(
                    f"{source}: row is {kinds[type(record)]}, but the first row ({first[1]}) is {kinds[first[0]]}; "
                    "paired (prompt/chosen/rejected) and unpaired (prompt/completion/label) rows cannot be mixed"
                )
            earlier = seen.setdefault(row_key(record), source)
            if earlier != source:
                raise UnusableRow(f"{source}: duplicate of {earlier} (same prompt and responses)", "duplicate row")
        except UnusableRow as e:
            skipped[e.reason] += 1
            skipped_rows.setdefault(e.reason, []).append(BadRow(source, str(e)))
            continue
        except DataError as e:
            _report(e, source, errors)
            continue
        if first is None:
            first = (type(record), source)
        records.append(record)
    return records, skipped, skipped_rows


def empty_dataset_error(path_or_name: str, skipped: dict[str, int]) -> DataError:
    detail = ", ".join(f"{n} {reason}" for reason, n in skipped.items())
    return DataError(f"{path_or_name}: empty dataset: no usable rows" + (f" (skipped: {detail})" if detail else ""))


def load_records(path_or_name: str, split: str = "train") -> LoadResult:
    """Read every row of a dataset into records.

    Local ``.jsonl``, ``.jsonl.gz`` and ``.json`` (an array, or JSON lines) are read here so errors
    carry line numbers (``file:line``); anything else goes through ``datasets.load_dataset`` (a
    folder, a ``.parquet``/``.csv``/``.arrow`` file, a Hub name) with rows located as
    ``name[split] row N``. Unusable rows are skipped and counted in ``LoadResult.skipped``.
    Raises DataError on the first malformed row, on paired and unpaired rows mixed in one
    dataset, and when no usable row is left.
    """
    records, skipped, skipped_rows = _read(path_or_name, split, errors=None)
    if not records:
        raise empty_dataset_error(path_or_name, skipped)
    return LoadResult(records=records, skipped=dict(skipped), skipped_rows=skipped_rows)


def scan_records(path_or_name: str, split: str = "train") -> ScanResult:
    """Read every row like load_records, but record each malformed row and go on to the next.

    Every problem of a JSON-lines file is found in one pass; a JSON array stops at its first
    malformed element (nothing after it can be located). A source that cannot be read at all
    (missing, not gzip) still raises DataError. An empty result is not an error here.
    """
    errors: list[BadRow] = []
    records, skipped, skipped_rows = _read(path_or_name, split, errors)
    return ScanResult(records=records, skipped=dict(skipped), errors=errors, skipped_rows=skipped_rows)
