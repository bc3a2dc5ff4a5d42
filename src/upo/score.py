"""`upo score`: score every response of a dataset or generations file with the auxiliary scorers.

Inputs: any preference data `upo train` reads (each pair's chosen and rejected responses are scored;
unpaired rows' completions), or a generations file of `{"prompt", "response"}` JSON lines. Output:
one JSON line per response with its scores, and a summary of the means per response role.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from upo.data.readers import load_records
from upo.data.records import DataError, PreferencePair, prompt_text
from upo.rewards.cache import ScoreCache, default_cache_dir
from upo.rewards.scoring import score_texts


def _read_generations(path: Path) -> list[tuple[str, str, str, str]] | None:
    """(source, role, prompt, response) rows if `path` is a generations file, else None."""
    if path.suffix not in (".jsonl", ".gz") or not path.exists():
        return None
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        if "response" not in json.loads(first):
            return None
    except json.JSONDecodeError:
        return None  # load_records reports the malformed line with its number
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: malformed JSON: {e.msg}") from None
            for field in ("prompt", "response"):
                if not isinstance(row.get(field), (str, list)):
                    raise DataError(f"{where}: field {field!r}: expected a string")
            rows.append((where, "generation", prompt_text(row["prompt"]), row["response"]))
    return rows


def _responses(path: str) -> list[tuple[str, str, str, str]]:
    rows = _read_generations(Path(path))
    if rows is not None:
        return rows
    out = []
    for r in load_records(path).records:
        p = prompt_text(r.prompt)
        if isinstance(r, PreferencePair):
            out += [(r.source, "chosen", p, r.chosen), (r.source, "rejected", p, r.rejected)]
        else:
            out.append((r.source, "desirable" if r.label else "undesirable", p, r.completion))
    return out


def score_file(path: str, names: list[str], *, cache_dir: str | None = None, progress: bool = True):
    """Returns (per-response rows, summary {role: {scorer: mean}})."""
    responses = _responses(path)
    with ScoreCache(cache_dir or default_cache_dir()) as cache:
        raw = score_texts([r[2] for r in responses], [r[3] for r in responses], names, cache=cache, progress=progress)
    rows = [
        {"source": source, "role": role, "scores": dict(zip(names, map(float, scores), strict=True))}
        for (source, role, _, _), scores in zip(responses, raw, strict=True)
    ]
    by_role: dict[str, list[np.ndarray]] = defaultdict(list)
    for (_, role, _, _), scores in zip(responses, raw, strict=True):
        by_role[role].append(scores)
    summary = {role: dict(zip(names, np.mean(v, axis=0).tolist(), strict=True)) for role, v in by_role.items()}
    for role, v in by_role.items():
        summary[role]["n"] = len(v)
    return rows, summary


def format_summary(summary: dict[str, dict[str, float]], names: list[str]) -> str:
    lines = ["| responses | n | " + " | ".join(f"mean {n}" for n in names) + " |", "|---|---|" + "---|" * len(names)]
    for role, stats in summary.items():
        lines.append(f"| {role} | {stats['n']} | " + " | ".join(f"{stats[n]:.4g}" for n in names) + " |")
    return "\n".join(lines)


def run_score(data: str, scorers: str, output: str | None, cache_dir: str | None, progress: bool = True) -> None:
    names = [s.strip() for s in scorers.split(",") if s.strip()]
    if not names:
        raise ValueError("no scorers given: --scorers readability,profanity,...")
    rows, summary = score_file(data, names, cache_dir=cache_dir, progress=progress)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        with open(output, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print(f"upo: {len(rows)} scored responses written to {output}")
    print(format_summary(summary, names))
