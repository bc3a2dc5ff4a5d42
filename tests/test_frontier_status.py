"""`upo frontier --status`: each run's state read from its folders, on a synthetic sweep."""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path

import pytest
from test_frontier_seeds import N_PROMPTS, fake_eval, fake_train, sweep_file

import upo.frontier.run as frontier_run
from upo.cli import main
from upo.frontier.status import held_locks


@pytest.mark.skipif(not Path("/proc/locks").is_file(), reason="no /proc/locks to read held locks from")
def test_status_of_each_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("upo.trainer.train", fake_train)
    monkeypatch.setattr(frontier_run, "run_eval", fake_eval)
    sweep = sweep_file(tmp_path, [1, 2])
    assert main(["frontier", "--config", str(sweep), "--seeds", "1"]) == 0
    points = tmp_path / "frontier" / "points"
    # dpo seed 1: trained, not evaluated; kto seed 1: training, step 3 of 6 (epoch 0.5 of 1), checkpoint 2;
    # upo-aux1 seed 1: its last attempt failed; upo-aux3 seed 1: generating, 1 batch of 2 done, while a
    # process holds its lock
    (points / "dpo" / "seed-1" / "eval.json").unlink()
    kto = points / "kto" / "seed-1"
    shutil.rmtree(kto / "final")
    (kto / "eval.json").unlink()
    (kto / "checkpoints" / "step-2").mkdir(parents=True)
    (kto / "checkpoints" / "step-2" / "trainer_state.json").write_text("{}")  # a complete checkpoint
    (kto / "checkpoints" / "step-3").mkdir()  # one being written: not resumable
    (kto / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "train/loss": 1.0, "train/epoch": s / 6,
                                                           "train/step_seconds": {1: 60.0, 2: 120.0, 3: 600.0}[s]}) + "\n"
                                               for s in (1, 2, 3)) + '{"step": 4, "train/lo')  # a line being written
    upo1 = points / "upo-aux1" / "seed-1"
    (upo1 / "eval.json").unlink()
    (upo1 / "error.txt").write_text("Traceback ...")
    upo3 = points / "upo-aux3" / "seed-1"
    (upo3 / "eval.json").unlink()
    (upo3 / "generations.partial.jsonl").write_text('{"key": "k", "completions": ["a"]}\n')
    # upo-aux0.3 seed 1: its evaluation failed after generating a batch; dpo seed 2: a folder holding a run
    # of another config; base seed 1: an eval.json of other settings (evaluated again by a rerun, said quietly)
    upo03 = points / "upo-aux0.3" / "seed-1"
    (upo03 / "eval.json").unlink()
    (upo03 / "generations.partial.jsonl").write_text('{"key": "k", "completions": ["a"]}\n')
    (upo03 / "error.txt").write_text("Traceback ...")
    (points / "dpo" / "seed-2").mkdir()
    (points / "dpo" / "seed-2" / "config.yaml").write_text("method: kto\n")
    base = points / "base" / "seed-1" / "eval.json"
    base.write_text(json.dumps({**json.loads(base.read_text()), "settings": {"max_new_tokens": 1}}))
    capsys.readouterr()
    with (upo3 / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["frontier", "--config", str(sweep), "--status"]) == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ")[1:] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| point")}
    batches = -(-N_PROMPTS // 32)
    assert rows["dpo"][1].startswith("refused: ") and "holds a run with a different config" in rows["dpo"][1]
    rows["dpo"][1] = "refused"
    assert rows == {
        "base": ["not started", "not started"],
        "dpo": ["trained", "refused"],
        "kto": ["training 3/6 (checkpoint 2), ~6 min left", "not started"],  # 3 steps at the median 2 min (a slow one aside)
        "upo-aux0.3": ["last attempt failed (error.txt)", "not started"],
        "upo-aux1": ["last attempt failed (error.txt)", "not started"],
        "upo-aux3": [f"evaluating (1 of at most {batches} batches generated), running", "not started"],
    }
    assert "0 of 12 runs done." in out and "evaluating again" not in out
    # --status trains and evaluates nothing
    assert not (points / "dpo" / "seed-1" / "eval.json").exists() and not (points / "kto" / "seed-2").exists()


def test_held_locks_reads_proc_locks(tmp_path):
    locks = tmp_path / "locks"
    locks.write_text("1: FLOCK  ADVISORY  WRITE 12184 fe:00:6072196 0 EOF\n"
                     "2: POSIX  ADVISORY  READ 12184 fe:00:16040846 128 128\n"
                     "3: -> FLOCK  ADVISORY  WRITE 12190 fe:00:77 0 EOF\n")
    assert held_locks(locks) == {6072196, 16040846}  # not 77: a process waiting for it
    assert held_locks(tmp_path / "missing") == set()


def test_time_left_only_while_steps_are_left_and_from_finite_paces(tmp_path):
    from upo.frontier.status import training_progress

    (tmp_path / "config.yaml").write_text("max_steps: 4\n")
    rows = [{"step": 1, "train/epoch": 0.25, "train/step_seconds": float("nan")},
            {"step": 2, "train/epoch": 0.5, "train/step_seconds": 120.0},
            {"step": 3, "train/epoch": 0.75, "train/step_seconds": None}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert training_progress(tmp_path) == "training 3/4 (no checkpoint yet), ~2 min left"  # 1 step at 120 s
    rows.append({"step": 4, "train/epoch": 1.0, "train/step_seconds": 120.0})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert training_progress(tmp_path) == "training 4/4 (no checkpoint yet)"  # the final save: no time left shown
