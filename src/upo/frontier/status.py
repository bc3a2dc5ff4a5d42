"""`upo frontier --status`: where each run of a sweep stands, read from its folders alone.

Nothing is trained, evaluated or locked: a sweep's processes keep running undisturbed. Per point and
seed, one of

- `done`: its eval.json holds the sweep's evaluation settings;
- `last attempt failed (error.txt)`: the traceback of its last attempt, in its evaluation folder (a
  rerun tries again);
- `evaluating (N of at most M batches generated)`: its generation batches finished so far (the file
  stays until the evaluation succeeds, so it also covers the judge and scorers that follow);
- `trained`: final/ saved, not evaluated (yet);
- `training S/T (checkpoint C), ~M min left`: the last optimizer step logged in metrics.jsonl, of T
  steps, the last complete checkpoint a restart resumes from, and the time the other steps take at
  the median pace of the last 20 logged (held-out evaluations and checkpoint saves not counted);
- `not started`; `refused: ...` for a folder holding a run of another config;

with `, running` when a process holds the run folder's lock (Linux: read from /proc/locks, never
taken; by inode, which a lock on another file system could share). The conditions of a steered run
share its folder and lock: while one is evaluated, the others show `trained, running`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import yaml

from upo.checkpoint import latest_checkpoint
from upo.config import ConfigError
from upo.evaluation.config import output_paths
from upo.frontier.folders import error_file, eval_folder, run_folder
from upo.frontier.run import eval_template, finished_result
from upo.frontier.sweep import Point, load_sweep


def held_locks(proc_locks: Path = Path("/proc/locks")) -> set[int]:
    """Inodes of the files some process holds a lock on (empty where /proc/locks cannot be read)."""
    try:
        lines = proc_locks.read_text().splitlines()
    except OSError:
        return set()
    inodes = set()
    for line in lines:
        fields = line.split()
        if "->" in fields:  # a process waiting for a lock, not holding one
            continue
        if len(fields) > 5 and fields[-3].count(":") == 2:  # N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END
            inodes.add(int(fields[-3].rsplit(":", 1)[1]))
    return inodes


def training_progress(folder: Path) -> str | None:
    """"training S/T (checkpoint C), ~M min left" from a run folder's metrics.jsonl and checkpoints; None
    before step 1."""
    metrics = folder / "metrics.jsonl"
    last, seconds = None, []
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # the line being written
                continue
            if "train/epoch" in row and "step" in row:
                last = row
                pace = row.get("train/step_seconds")
                seconds += [pace] if isinstance(pace, int | float) and math.isfinite(pace) else []
    if last is None:
        return None
    config = yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").exists() else {}
    step, epoch = int(last["step"]), float(last["train/epoch"])
    total = config.get("max_steps") or (round(step / epoch * config.get("num_epochs", 1)) if epoch > 0 else None)
    checkpoint = latest_checkpoint(folder)
    left = ""
    if total and total > step and seconds:  # at the pace of its last (up to) 20 logged steps
        left = f", ~{max(1, round((total - step) * statistics.median(seconds[-20:]) / 60))} min left"
    return (f"training {step}/{total if total else '?'}"
            + (f" (checkpoint {checkpoint.name.removeprefix('step-')})" if checkpoint else " (no checkpoint yet)") + left)


def run_state(point: Point, sweep, template, seed: int | None, locks: set[int]) -> str:
    """One run's state (see the module docstring)."""
    try:
        if finished_result(point, sweep, template, seed, quiet=True) is not None:
            return "done"
    except ConfigError as e:  # a folder holding a run of another config: what a rerun would refuse
        return f"refused: {e}".replace("|", "/")
    folder = run_folder(sweep, point, seed)
    lock = folder / ".lock"
    running = lock.exists() and os.stat(lock).st_ino in locks
    if error_file(sweep, point, seed).exists() and not running:
        return "last attempt failed (error.txt)"
    partial = output_paths(str(eval_folder(sweep, point, seed)))[2].with_suffix(".partial.jsonl")
    suffix = ", running" if running else ""
    if partial.exists():  # a line per finished generation batch (kept until the evaluation succeeds)
        most = f" of at most {math.ceil(template.prompts / template.gen_batch_size)}" if template.prompts else ""
        return f"evaluating ({sum(1 for _ in partial.open())}{most} batches generated){suffix}"
    if point.group == "base":
        return "starting, running" if running else "not started"
    if (folder / "final").is_dir():
        return "trained" + suffix  # running: its evaluation starting, or (steered) another condition's
    return (training_progress(folder) or ("starting" if running else "not started")) + suffix


def sweep_status(config: str, quick: bool = False, output_dir: str | None = None) -> str:
    """The Markdown table of every run's state: a row per point, a column per seed."""
    sweep = load_sweep(config, quick=quick, output_dir=output_dir)
    template = eval_template(sweep, sweep.base_config())
    seeds = sweep.seeds or [None]
    locks = held_locks()
    header = " | ".join("state" if s is None else f"seed {s}" for s in seeds)
    lines = [f"{sweep.source}: runs in {sweep.points_dir}", "", f"| point | {header} |",
             "|---|" + "---|" * len(seeds)]
    states = []
    for point in [Point("base", "base"), *sweep.points]:
        row = [run_state(point, sweep, template, seed, locks) for seed in seeds]
        states += row
        lines.append(f"| {point.name} | " + " | ".join(row) + " |")
    lines += ["", f"{states.count('done')} of {len(states)} runs done."]
    return "\n".join(lines)
