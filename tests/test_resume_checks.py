"""`--resume true` continues one run or says why not: a changed config, another number of processes,
other data; a broken latest checkpoint is named and the previous intact one taken; a truncated
reference-log-prob cache is recomputed; a hidden copy left by a kill during the final save is removed.

One 2-step DPO run with a checkpoint after each step is trained once; every test resumes a copy of it.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from helpers import run_config
from safetensors.torch import load_file

from upo.config import ConfigError
from upo.trainer import train

RUN = dict(method="dpo", rewards={}, max_steps=2, save_steps=1, save_total_limit=2)


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, pairs_file, tmp_path_factory):
    """(config, run folder) of the uninterrupted run: checkpoints step-1 and step-2, final/."""
    root = tmp_path_factory.mktemp("finished")
    cfg = run_config(tiny_model_dir, pairs_file, root, **RUN)
    train(cfg)
    return cfg, root / "run"


def _copy(finished_run, tmp_path, keep_final: bool = False):
    """A copy of the finished run in tmp_path/run, as if killed after its last checkpoint."""
    _, src = finished_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    if not keep_final:
        shutil.rmtree(out / "final")
    return out


def _resume(tiny_model_dir, pairs_file, tmp_path, **changes):
    return train(run_config(tiny_model_dir, pairs_file, tmp_path, **{**RUN, "resume": True, **changes}))


def _log(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


def _same_weights(a, b) -> bool:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        (dict(learning_rate=2e-2), "learning_rate 0.01 -> 0.02"),  # the optimizer state would keep the old one
        (dict(method="ipo"), "method 'dpo' -> 'ipo'"),
        (dict(beta=0.2, seed=3), "beta 0.1 -> 0.2, seed 42 -> 3"),
    ],
)
def test_a_resume_with_a_changed_training_config_is_refused(changes, named, finished_run, tiny_model_dir, pairs_file,
                                                            tmp_path):
    out = _copy(finished_run, tmp_path)
    config_before = (out / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="keys that change what is trained: " + named.replace("(", r"\(")):
        _resume(tiny_model_dir, pairs_file, tmp_path, **changes)
    assert (out / "config.yaml").read_text() == config_before  # the record of the run is untouched


def test_a_checkpoint_of_an_older_upo_resumes(finished_run, tiny_model_dir, pairs_file, tmp_path):
    """Its config.yaml lacks keys added since (their defaults count) and records a key its method never
    read (a sweep base's aux_coef in a DPO point): neither changes what is trained."""
    out = _copy(finished_run, tmp_path)
    for saved in out.glob("**/config.yaml"):
        old = yaml.safe_load(saved.read_text())
        del old["logits_chunk_tokens"]
        saved.write_text(yaml.safe_dump({**old, "aux_coef": 0.5}))
    final = _resume(tiny_model_dir, pairs_file, tmp_path)
    assert _same_weights(final, finished_run[1] / "final")


def test_a_resume_on_changed_data_is_refused(finished_run, tiny_model_dir, pairs_file, tmp_path):
    """Same dataset path, other content: the checkpoint's data fingerprint differs."""
    out = _copy(finished_run, tmp_path)
    data = tmp_path / "pairs.jsonl"
    rows = pairs_file.read_text().splitlines()
    data.write_text("\n".join(rows[1:]) + "\n")
    for ckpt in (out / "checkpoints").iterdir():  # as if the checkpoint had been trained on `data`
        text = (ckpt / "config.yaml").read_text().replace(str(pairs_file), str(data))
        (ckpt / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match="the training data differ"):
        _resume(tiny_model_dir, data, tmp_path)


def test_a_checkpoint_of_two_processes_is_not_resumed_by_one(finished_run, tiny_model_dir, pairs_file, tmp_path):
    out = _copy(finished_run, tmp_path)
    state_file = out / "checkpoints" / "step-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "num_processes": 2}))
    with pytest.raises(ConfigError, match=r"written by 2 process\(es\), this run has 1"):
        _resume(tiny_model_dir, pairs_file, tmp_path)


def test_keys_that_may_change_are_logged_and_recorded(finished_run, tiny_model_dir, pairs_file, tmp_path, capsys):
    out = _copy(finished_run, tmp_path)
    shutil.rmtree(out / "checkpoints" / "step-2")
    final = _resume(tiny_model_dir, pairs_file, tmp_path, logging_steps=2, save_steps=5)
    log, recorded = _log(capsys), (out / "config.yaml").read_text()
    assert "resuming with logging_steps changed: 1 -> 2" in log and "logging_steps: 2" in recorded
    assert "resuming with save_steps changed: 1 -> 5" in log and "save_steps: 5" in recorded
    assert _same_weights(final, finished_run[1] / "final")


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_broken_latest_checkpoint_is_named_and_the_previous_one_taken(damage, finished_run, tiny_model_dir,
                                                                        pairs_file, tmp_path, capsys):
    out = _copy(finished_run, tmp_path)
    broken = out / "checkpoints" / "step-2" / "model.safetensors"
    if damage == "truncate":
        with broken.open("r+b") as f:
            f.truncate(broken.stat().st_size // 2)
    else:
        broken.unlink()
    final = _resume(tiny_model_dir, pairs_file, tmp_path)
    err = _log(capsys)
    assert "resuming from the previous intact checkpoint step-1" in err and str(broken) in err
    assert f"resumed from {out / 'checkpoints' / 'step-1'}" in err
    assert _same_weights(final, finished_run[1] / "final")  # step 2 retrained: the uninterrupted result


def test_no_intact_checkpoint_is_an_error_naming_the_files(finished_run, tiny_model_dir, pairs_file, tmp_path):
    out = _copy(finished_run, tmp_path)
    for step in ("step-1", "step-2"):
        (out / "checkpoints" / step / "optimizer.bin").unlink()
    with pytest.raises(ConfigError, match=r"no intact checkpoint.*step-2/optimizer\.bin is missing.*step-1/optimizer"):
        _resume(tiny_model_dir, pairs_file, tmp_path)


def test_a_truncated_reference_cache_is_recomputed(finished_run, tiny_model_dir, pairs_file, tmp_path, capsys):
    out = _copy(finished_run, tmp_path)
    shutil.rmtree(out / "checkpoints" / "step-2")
    cache = out / "reference_logps.safetensors"
    with cache.open("r+b") as f:
        f.truncate(cache.stat().st_size // 2)
    final = _resume(tiny_model_dir, pairs_file, tmp_path)
    assert "computing the reference log-probs again" in _log(capsys)
    assert _same_weights(final, finished_run[1] / "final")
    load_file(str(cache))  # rewritten whole


def test_a_hidden_copy_left_by_a_kill_during_the_final_save_is_removed(finished_run, tiny_model_dir, pairs_file,
                                                                       tmp_path):
    out = _copy(finished_run, tmp_path)
    stale = out / ".final-k1ll3d"
    shutil.copytree(finished_run[1] / "final", stale)
    (out / "checkpoints" / ".tmp-step-3").mkdir()
    _resume(tiny_model_dir, pairs_file, tmp_path)
    assert not stale.exists() and not (out / "checkpoints" / ".tmp-step-3").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
