"""`upo rejudge`: an evaluation's generations judged again by a reward-model judge, no policy model loaded.

A reward-model judge retrained on another machine is not the same model, bit for bit: bf16 matmul
kernels differ between CPUs, so the same data, seed and code give other weights. Evaluations judged
by two such judges cannot be mixed in one comparison. Rejudging reads an evaluation's
generations.jsonl, asks the judge for each response's verdict against its reference again, and
rewrites the judge's metrics, intervals and per-prompt values in eval.json and eval.md; everything
else (the generations, the auxiliary scores, the implicit rewards) stays as it was.

Every evaluation records the judge's weights it was judged by (`judge_weights`: the sha256 of the
reward model's weight files), so `only_if_changed` rejudges only those a different judge judged.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections import Counter
from pathlib import Path

from upo.atomic import atomic_write_text
from upo.config_values import ConfigError
from upo.evaluation.config import EvalConfig, output_paths
from upo.evaluation.intervals import compact_json, per_prompt, summarize, unit_section
from upo.evaluation.metrics import direction
from upo.evaluation.report import format_eval


def judge_weights(judge: str) -> str | None:
    """sha256 of an `rm:PATH` judge's weight files (*.safetensors, sorted by name); None for another judge."""
    if not judge or not judge.startswith("rm:"):
        return None
    files = sorted(Path(judge[3:]).expanduser().glob("*.safetensors"))
    if not files:
        return None
    # hashed once per process and version of the files (a sweep evaluates dozens of runs with one judge)
    return _weights_digest(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=8)
def _weights_digest(files: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 of the files' contents in order; `files` holds (path, size, mtime) so a rewritten file misses."""
    digest = hashlib.sha256()
    for file, _, _ in files:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def mixed_judges_warning(results: list[dict]) -> str | None:
    """A warning when eval.json dicts that a comparison puts together were judged by reward models of
    different weights (or some record none: evaluated before upo recorded them); None when one judged all."""
    judged = [r for r in results if ((r.get("settings") or {}).get("judge") or "").startswith("rm:")]
    weights = Counter(r.get("judge_weights") for r in judged)
    if len(weights) <= 1:
        return None
    parts = [f"{w[:8]}...: {n}" if w else f"no record: {n}" for w, n in weights.most_common()]
    return (f"the evaluations were judged by reward models of different weights ({', '.join(parts)} evaluations): "
            "their judge metrics do not compare; `upo rejudge EVAL... --if_changed` judges them again with one")


def rejudge(evaluation: str, judge: str | None = None, only_if_changed: bool = False) -> dict | None:
    """Judge EVALUATION's generations again (EVALUATION: its folder, or its .json file) with `judge`
    (rm:PATH; default: the judge it was evaluated with, as that folder's weights are now). Returns the
    new eval.json dict, or None when `only_if_changed` and it was judged by these weights already."""
    from upo.evaluation.eval import judge_values

    if Path(evaluation).name == "eval.json":  # a folder's eval.json: its generations are the folder's
        evaluation = str(Path(evaluation).parent)
    json_path, md_path, gen_path = output_paths(evaluation)
    for path in (json_path, gen_path):
        if not path.is_file():
            raise FileNotFoundError(f"{evaluation}: no {path.name} (rejudging reads a finished evaluation)")
    result = json.loads(json_path.read_text())
    fields = {f.name for f in dataclasses.fields(EvalConfig)}
    settings = {k: v for k, v in result["settings"].items() if k in fields}
    if settings.get("judge") == "llm":
        raise ConfigError(f"{evaluation}: an llm judge judged it; rejudging takes reward-model judges only (its "
                          "records, orders and protocol settings would go stale): run upo eval again")
    judge = _same_judge_name(judge, settings.get("judge")) if judge else settings.get("judge")
    if not judge or not judge.startswith("rm:"):
        raise ConfigError(f"{evaluation}: rejudging takes a reward-model judge (rm:PATH), got {judge!r}")
    cfg = dataclasses.replace(EvalConfig(**settings), judge=judge, progress=False)
    weights = judge_weights(cfg.judge)
    if only_if_changed and weights is not None and result.get("judge_weights") == weights:
        return None
    rows = [json.loads(line) for line in gen_path.read_text().splitlines() if line.strip()]
    if not (result.get("per_prompt") or {}).get("ids"):
        raise ValueError(f"{json_path}: no per-prompt values (written before upo kept them): evaluate it again")
    ids = result["per_prompt"]["ids"]
    if len(rows) != len(ids) * cfg.samples:
        raise ValueError(f"{gen_path}: {len(rows)} generations, but eval.json has {len(ids)} prompts x "
                         f"{cfg.samples} samples")
    values, counts, _ = judge_values(cfg, None, [r["prompt"] for r in rows], [r["response"] for r in rows],
                                     [r["reference"] for r in rows])
    judged = {name: per_prompt(v, cfg.samples) for name, v in values.items()}  # [prompts], as run_eval keeps them
    metrics, intervals = summarize(judged, cfg.samples)
    result["per_prompt"]["values"].update(unit_section(ids, judged)["values"])
    result["metrics"].update({**metrics, **counts})
    result["intervals"].update(intervals)
    result["directions"].update({name: direction(name) for name in {**metrics, **counts}})
    result["settings"]["judge"] = cfg.judge
    result["judge_weights"] = weights
    atomic_write_text(md_path, format_eval(result) + "\n")
    atomic_write_text(json_path, compact_json(result) + "\n")  # a kill mid-write leaves the old one whole
    return result


def _same_judge_name(judge: str, recorded: str | None) -> str:
    """`judge`, or the name the evaluation recorded when both name the same folder (rm:x/ and
    rm:./x): the frontier reads a changed judge setting as another evaluation, and evaluates again."""
    if recorded and judge.startswith("rm:") and recorded.startswith("rm:"):
        a, b = Path(judge[3:]).expanduser(), Path(recorded[3:]).expanduser()
        if a.exists() and b.exists() and os.path.samefile(a, b):
            return recorded
    return judge
