"""Stopping and resuming: SIGTERM or SIGUSR1 during training saves a checkpoint at the end of the step
and stops (upo.stop); LoRA checkpoints hold the trained parameters only; resuming from either ends
where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch
from helpers import run_config
from safetensors.torch import load_file, save_file

import upo.trainer
from upo.checkpoint import checkpoint_dirs
from upo.cli import main
from upo.config import ConfigError
from upo.stop import TrainingStopped, stop_requests
from upo.trainer import train


def _signal_at_call(monkeypatch, call: int, signum: int) -> None:
    """Send `signum` to this process from inside the `call`-th micro-batch's forward (1-based)."""
    calls = []
    real = upo.trainer.step_inputs

    def step_inputs(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(upo.trainer, "step_inputs", step_inputs)


def test_a_stop_signal_saves_the_step_and_the_resumed_run_matches(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    common = dict(method="upo", pref_loss="kto", max_steps=4, save_steps=None)
    full = train(run_config(tiny_model_dir, pairs_file, tmp_path / "full", **common))
    # SIGUSR1 arrives during step 2: the step finishes, its checkpoint is saved (save_steps is not set),
    # and training stops
    _signal_at_call(monkeypatch, 2, signal.SIGUSR1)
    stopped = run_config(tiny_model_dir, pairs_file, tmp_path / "part", **common)
    with pytest.raises(TrainingStopped) as stop:
        train(stopped)
    assert stop.value.step == 2 and stop.value.signal_name == "SIGUSR1" and stop.value.exit_code == 128 + signal.SIGUSR1
    assert [p.name for p in checkpoint_dirs(stopped.output_dir)] == ["step-2"]
    assert not (tmp_path / "part" / "run" / "final").exists()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handlers are put back
    monkeypatch.undo()
    final = train(run_config(tiny_model_dir, pairs_file, tmp_path / "part", resume=True, **common))
    a, b = load_file(str(full / "model.safetensors")), load_file(str(final / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_upo_train_says_where_the_checkpoint_is_and_exits_128_plus_the_signal(tiny_model_dir, pairs_file, tmp_path,
                                                                              monkeypatch, capsys):
    _signal_at_call(monkeypatch, 1, signal.SIGTERM)
    cfg = run_config(tiny_model_dir, pairs_file, tmp_path, method="dpo", max_steps=3)
    code = main(["train", "--model", cfg.model, "--dataset", cfg.dataset, "--method", "dpo", "--max_steps", "3",
                 "--batch_size", "2", "--precision", "fp32", "--output_dir", cfg.output_dir, "--progress", "false",
                 "--cache_dir", cfg.cache_dir, "--max_length", "96", "--max_prompt_length", "32",
                 "--plot_curves", "false"])
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGTERM
    assert f"stopped by SIGTERM after step 1; checkpoint saved: {tmp_path / 'run' / 'checkpoints' / 'step-1'}" in err
    assert "rerun the same command with --resume true to continue from it" in err


def test_outside_the_loop_the_signals_keep_their_handlers():
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: seen.append("own"))
    try:
        with stop_requests() as requested:
            assert requested() is None
            os.kill(os.getpid(), signal.SIGUSR1)
            assert requested() == "SIGUSR1" and seen == []
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == ["own"]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_lora_checkpoint_holds_the_trained_parameters_only_and_resumes_exactly(tiny_model_dir, pairs_file,
                                                                                  tmp_path):
    """With LoRA the base model's weights stay as loaded: a checkpoint keeps the adapters (and the value
    head), and a run resumed from it ends bitwise where the uninterrupted one ends."""
    common = dict(method="upo", pref_loss="kto", lora=True, lora_r=4, merge_lora=False, save_steps=2)
    full = train(run_config(tiny_model_dir, pairs_file, tmp_path / "full", max_steps=4, **common))
    train(run_config(tiny_model_dir, pairs_file, tmp_path / "part", max_steps=2, **common))
    step = tmp_path / "part" / "run" / "checkpoints" / "step-2"
    saved = load_file(str(step / "model.safetensors"))
    assert saved and all("lora_" in k or k.startswith("value_head.") for k in saved), sorted(saved)[:5]
    assert any(k.startswith("value_head.") for k in saved)
    assert json.loads((step / "trainer_state.json").read_text())["weights"] == "trainable"
    final = train(run_config(tiny_model_dir, pairs_file, tmp_path / "part", max_steps=4, resume=True, **common))
    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        a, b = load_file(str(full / name)), load_file(str(final / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # a checkpoint that lost a trained parameter is refused, not loaded half
    save_file({k: v for k, v in saved.items() if not k.startswith("value_head.")}, str(step / "model.safetensors"))
    state = json.loads((step / "trainer_state.json").read_text())
    state["files"]["model.safetensors"] = (step / "model.safetensors").stat().st_size
    (step / "trainer_state.json").write_text(json.dumps(state))
    shutil.rmtree(tmp_path / "part" / "run" / "checkpoints" / "step-4", ignore_errors=True)
    shutil.rmtree(final)
    with pytest.raises(ConfigError, match="lacks trained parameters: value_head"):
        train(run_config(tiny_model_dir, pairs_file, tmp_path / "part", max_steps=4, resume=True, **common))
