"""Crashes lose nothing: `upo train` killed with SIGKILL mid-run and restarted with --resume true
ends with bitwise the same weights and metrics.jsonl rows as an uninterrupted run (CPU, fp32, same
seed and thread count). Also the debris a kill can leave: a half-written checkpoint folder and a
metrics line cut short.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import deterministic, run_config
from safetensors.torch import load_file

from upo.checkpoint import checkpoint_dirs
from upo.metrics import read_metrics
from upo.trainer import train

ARGS = dict(method="upo", max_steps=60, save_steps=4, save_total_limit=2, batch_size=2, eval_steps=20)


def _same_run(final_a: Path, final_b: Path) -> None:
    for name in ("model.safetensors", "value_head.safetensors"):
        a, b = load_file(str(final_a / name)), load_file(str(final_b / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rows_a = read_metrics(final_a.parent / "metrics.jsonl")
    rows_b = read_metrics(final_b.parent / "metrics.jsonl")
    assert [r["step"] for r in rows_a] == list(range(1, ARGS["max_steps"] + 1))
    assert deterministic(rows_a) == deterministic(rows_b)


def _cli_args(cfg) -> list[str]:
    keys = ("model", "dataset", "method", "max_steps", "save_steps", "save_total_limit", "batch_size", "eval_steps",
            "eval_fraction", "learning_rate", "precision", "output_dir", "cache_dir", "max_length", "max_prompt_length")
    args = [sys.executable, "-m", "upo.cli", "train", "--progress", "false", "--rewards", "length=1.0"]
    for key in keys:
        args += [f"--{key}", str(getattr(cfg, key))]
    return args


# Slow tier: two 60-step runs, one of them a subprocess killed and restarted (a quarter of the whole
# suite's time); the in-process resume tests (below, test_trainer.py) stay in the default tier.
@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tiny_model_dir, pairs_file, tmp_path):
    reference = train(run_config(tiny_model_dir, pairs_file, tmp_path / "ref", **ARGS))

    cfg = run_config(tiny_model_dir, pairs_file, tmp_path / "killed", **ARGS)
    out = Path(cfg.output_dir)
    # Same intra-op thread count as this process, so float reductions run in the same order.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "MKL_NUM_THREADS": str(torch.get_num_threads())}
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(_cli_args(cfg), env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while proc.poll() is None and not checkpoint_dirs(out) and time.monotonic() < deadline:
        time.sleep(0.005)
    # A checkpoint exists: kill while the next one is being written if we catch it, else soon after.
    caught_mid_save, until = False, time.monotonic() + 0.3
    while proc.poll() is None and time.monotonic() < until:
        if any(p.name.startswith(".tmp-step-") for p in (out / "checkpoints").iterdir()):
            caught_mid_save = True
            break
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed:\n" + (tmp_path / "killed.log").read_text()[-2000:]
    assert not (out / "final").exists()
    killed_at = [int(p.name.split("-")[1]) for p in checkpoint_dirs(out)]
    assert killed_at and killed_at[-1] < ARGS["max_steps"]

    resumed = subprocess.run([*_cli_args(cfg), "--resume", "true"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert f"resumed from {out / 'checkpoints' / f'step-{killed_at[-1]}'}" in resumed.stdout + resumed.stderr
    _same_run(reference, out / "final")
    print(f"killed after checkpoint step-{killed_at[-1]}{' while writing the next one' if caught_mid_save else ''}")


def test_resume_ignores_a_half_written_checkpoint_and_a_cut_metrics_line(tiny_model_dir, pairs_file, tmp_path):
    """What a kill at the worst moment leaves, made on purpose: checkpoints/.tmp-step-N with partial
    files (never taken for a checkpoint) and a last metrics line without its end."""
    reference = train(run_config(tiny_model_dir, pairs_file, tmp_path / "ref", **ARGS))
    train(run_config(tiny_model_dir, pairs_file, tmp_path / "cut", **{**ARGS, "max_steps": 8}))
    out = tmp_path / "cut" / "run"
    # As if killed before the end: no final/, and no evaluation at step 8 (the short run's last step).
    os.replace(out / "final", tmp_path / "cut" / "final-of-the-8-step-run")
    rows = [{k: v for k, v in r.items() if not k.startswith("eval/")} for r in read_metrics(out / "metrics.jsonl")]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    partial = out / "checkpoints" / ".tmp-step-12"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00" * 10)
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 9, "train/loss": 0.6')
    assert [p.name for p in checkpoint_dirs(out)] == ["step-4", "step-8"]
    final = train(run_config(tiny_model_dir, pairs_file, tmp_path / "cut", **ARGS, resume=True))
    _same_run(reference, final)
    assert [p.name for p in checkpoint_dirs(out)] == ["step-56", "step-60"]


@pytest.mark.slow
def test_ctrl_c_mid_run_is_one_line_and_the_run_resumes(tiny_model_dir, pairs_file, tmp_path):
    """SIGINT (Ctrl-C) after a checkpoint: exit 130 and one line naming the kept checkpoint, no
    traceback; --resume true then finishes the run."""
    cfg = run_config(tiny_model_dir, pairs_file, tmp_path, **ARGS)
    out = Path(cfg.output_dir)
    proc = subprocess.Popen(_cli_args(cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and not checkpoint_dirs(out) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert "upo: interrupted; nothing is lost up to" in err.strip().splitlines()[-1] and "--resume true" in err
    resumed = subprocess.run([*_cli_args(cfg), "--resume", "true"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "final" / "model.safetensors").exists()
