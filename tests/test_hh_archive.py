"""examples/hh_experiments.sh archive / restore: the finished runs' small files survive a new machine."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(tmp_path: Path) -> Path:
    (tmp_path / "examples").mkdir()
    return Path(shutil.copy(ROOT / "examples" / "hh_experiments.sh", tmp_path / "examples"))


def _write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _run(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, check=True)


def test_archive_keeps_finished_runs_small_files_and_restore_puts_them_back(tmp_path):
    script = _script(tmp_path)
    points = tmp_path / "runs" / "frontier-hh-seeds" / "points"
    done = points / "dpo" / "seed-1"
    for name in ("config.yaml", "metrics.jsonl", "eval.json", "eval.md", "generations.jsonl"):
        _write(done / name, name)
    _write(done / "final" / "model.safetensors")  # weights and checkpoints stay behind
    _write(done / "checkpoints" / "step-100" / "model.safetensors")
    _write(done / "checkpoints" / "step-100" / "config.yaml")  # a checkpoint's own config: not the run's
    _write(done / "reference_logps.safetensors")
    _write(points / "base" / "seed-1" / "eval.json", "base")  # the base model: no run folder, no config
    steered = points / "upo-steered" / "seed-1"
    _write(steered / "config.yaml", "steered")
    _write(steered / "aux-0.3" / "eval.json", "cond")  # a condition's evaluation, inside its run folder
    unfinished = points / "kto" / "seed-1"  # training: no evaluation yet
    _write(unfinished / "config.yaml")
    _write(unfinished / "metrics.jsonl")
    _write(tmp_path / "runs" / "rm-hh-025" / "final" / "model.safetensors", "judge")

    out = _run(script, "archive").stdout
    assert "archived 3 finished evaluations" in out
    archive = tmp_path / "results" / "hh"
    kept = sorted(str(p.relative_to(archive)) for p in archive.rglob("*") if p.is_file())
    prefix = "runs/frontier-hh-seeds/points/"
    assert kept == ["judge.sha256"] + sorted(
        [prefix + f"dpo/seed-1/{n}" for n in ("config.yaml", "eval.json", "eval.md", "generations.jsonl.gz",
                                                 "metrics.jsonl.gz")]
        + [prefix + "base/seed-1/eval.json", prefix + "upo-steered/seed-1/config.yaml",
           prefix + "upo-steered/seed-1/aux-0.3/eval.json"])
    assert (archive / "judge.sha256").read_text().strip() == hashlib.sha256(b"judge").hexdigest()

    # a new machine: runs/ gone but for a run evaluated again there, which restore leaves alone
    shutil.rmtree(tmp_path / "runs")
    _write(done / "eval.md", "newer")
    _run(script, "restore")
    assert (done / "eval.json").read_text() == "eval.json" and (done / "eval.md").read_text() == "newer"
    assert (done / "metrics.jsonl").read_text() == "metrics.jsonl"  # gunzipped back
    assert (points / "base" / "seed-1" / "eval.json").read_text() == "base"
    assert not (done / "final").exists() and not unfinished.exists()


def test_a_judge_with_other_weights_is_reported(tmp_path):
    script = _script(tmp_path)
    _write(tmp_path / "results" / "hh" / "judge.sha256", hashlib.sha256(b"old judge").hexdigest())
    _write(tmp_path / "runs" / "rm-hh-025" / "final" / "model.safetensors", "new judge")
    _write(tmp_path / "runs" / "frontier-hh-seeds" / "points" / "base" / "seed-1" / "eval.json")
    result = _run(script, "archive")
    assert "is not the judge of the archived evaluations" in result.stderr
    assert (tmp_path / "results" / "hh" / "judge.sha256").read_text().strip() == hashlib.sha256(b"old judge").hexdigest()


def test_git_keeps_the_archive_and_ignores_runs():
    """The archive mirrors runs/ inside results/hh/: the .gitignore's `runs/` must not swallow it
    (it did, and the first archive commit held only judge.sha256)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", "results/hh/runs/frontier-hh-seeds/points/dpo/seed-1/eval.json"],
                             cwd=ROOT, capture_output=True)
    assert ignored.returncode == 1, "results/hh/runs/ is ignored by git: the archive would not be committed"
    assert subprocess.run(["git", "check-ignore", "-q", "runs/frontier-hh-seeds/points/dpo/seed-1/eval.json"],
                          cwd=ROOT).returncode == 0
