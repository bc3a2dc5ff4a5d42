"""Per-unit values of an evaluation -> its metrics with 95% intervals, and eval.json's unit sections.

An evaluation has two kinds of units: the prompts (judge, scorers, length: with several samples per
prompt a prompt's value is the mean of its samples, so the bootstrap resamples prompts, not
generations) and the held-out pairs (implicit rewards). Rates of 0/1 outcomes (`RATES`, one
generation per prompt) get Wilson intervals, everything else a percentile bootstrap over the units
(`upo.stats`). Each unit has an id, a hash of its content, so that two evaluations of the same rows
can be compared unit by unit (`upo compare`, `upo frontier`).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets

import numpy as np

from upo.evaluation.metrics import RATES
from upo.stats import CONFIDENCE, RESAMPLES, SEED, mean_interval

UNIT_KINDS = ("per_prompt", "per_pair")  # eval.json keys: {"ids": [...], "values": {metric: [...]}}
INTERVAL_SETTINGS = {"confidence": CONFIDENCE, "bootstrap_resamples": RESAMPLES, "bootstrap_seed": SEED}


def unit_id(content) -> str:
    """A short stable id of a unit's content (a prompt and its reference, a pair): the same rows of
    the same data give the same ids in every evaluation, whatever the model."""
    return hashlib.sha1(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]


def per_prompt(values, samples: int) -> np.ndarray:
    """values [prompts * samples] (prompt-major, as generated) -> [prompts], each prompt's mean over
    its samples that have a value (NaN: no llm-judge verdict); NaN for a prompt with none."""
    v = np.asarray(values, dtype=np.float64).reshape(-1, samples)
    present = ~np.isnan(v)
    counts = present.sum(axis=1)
    return np.divide(np.where(present, v, 0.0).sum(axis=1), counts, out=np.full(len(v), np.nan), where=counts > 0)


def summarize(values: dict[str, np.ndarray], samples: int = 1) -> tuple[dict[str, float], dict[str, dict]]:
    """({metric: mean}, {metric: {"low", "high", "method"}}) of per-unit values {metric: [n]}, n >= 1,
    each unit's value the mean of `samples` generations: a rate is a count of independent 0/1
    outcomes (Wilson) only with one generation per unit."""
    metrics, intervals = {}, {}
    for name, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        v = v[~np.isnan(v)]  # units without a value (no llm-judge verdict) are left out
        if not len(v):
            continue
        metrics[name] = float(np.mean(v))
        (low, high), method = mean_interval(v, rate=name in RATES and samples == 1)
        intervals[name] = {"low": low, "high": high, "method": method}
    return metrics, intervals


def unit_section(ids: list[str], values: dict[str, np.ndarray]) -> dict:
    """eval.json's section of per-unit values; a unit without a value (NaN) is written as null."""
    return {"ids": list(ids),
            "values": {k: [None if np.isnan(x) else x for x in np.asarray(v, dtype=np.float64).tolist()]
                       for k, v in values.items()}}


def units_of(result: dict) -> dict[str, tuple[list[str], dict[str, np.ndarray]]]:
    """{kind: (ids, {metric: [n] values})} of an eval.json dict (empty for one written before upo
    kept per-unit values)."""
    out = {}
    for kind in UNIT_KINDS:
        section = result.get(kind)
        if section and section["ids"]:
            out[kind] = (section["ids"], {k: np.asarray(v, dtype=np.float64) for k, v in section["values"].items()})
    return out


def compact_json(obj) -> str:
    """JSON indented by 2, but every list of plain values on one line (per-unit values stay short):
    such lists are swapped for unique placeholder strings, dumped, then put back compact."""
    token, flat = secrets.token_hex(8), {}

    def swap(o):
        if isinstance(o, dict):
            return {k: swap(v) for k, v in o.items()}
        if isinstance(o, list) and any(isinstance(v, (list, dict)) for v in o):
            return [swap(v) for v in o]
        if isinstance(o, list):
            key = f"{token}-{len(flat)}"
            flat[json.dumps(key)] = json.dumps(o)
            return key
        return o

    return re.sub(f'"{token}-[0-9]+"', lambda m: flat[m.group()], json.dumps(swap(obj), indent=2))
