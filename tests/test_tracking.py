"""Run tracking through Accelerate's trackers: TensorBoard offline, read back from its event files."""

from __future__ import annotations

import shutil

import pytest
from accelerate.tracking import MLflowTracker, TrackioTracker, WandBTracker
from helpers import run_config

from upo.config import ConfigError, UPOConfig
from upo.metrics import read_metrics
from upo.tracking import PROJECT, hparams, logging_dir, tracker_init_kwargs
from upo.trainer import train

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
plugin_data_pb2 = pytest.importorskip("tensorboard.plugins.hparams.plugin_data_pb2")


def _event_dirs(run_dir):
    """Folders under the run's TensorBoard project holding event files."""
    return sorted({p.parent for p in (logging_dir(run_dir) / PROJECT).rglob("events.out.tfevents.*")})


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard shows them (a resumed run appends a file to the same folder)."""
    found: dict[str, list[tuple[int, float]]] = {}
    for folder in _event_dirs(run_dir):
        acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return found


def _hparams(run_dir) -> dict[str, object]:
    """The hyperparameters of the run's session-start-info event (TensorBoard's HPARAMS tab)."""
    for folder in _event_dirs(run_dir):
        acc = event_accumulator.EventAccumulator(str(folder))
        acc.Reload()
        try:
            content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        except KeyError:  # Accelerate writes the hparams to a folder of their own
            continue
        info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        return {k: getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}
    raise AssertionError(f"no hparams event under {logging_dir(run_dir)}")


def test_tensorboard_receives_the_metrics_jsonl_rows_and_the_config(tiny_model_dir, pairs_file, tmp_path):
    cfg = run_config(tiny_model_dir, pairs_file, tmp_path, method="upo", pref_loss="dpo", max_steps=3,
                     report_to=["tensorboard"])
    train(cfg)
    run = tmp_path / "run"
    rows = read_metrics(run / "metrics.jsonl")
    scalars = _scalars(run)
    expected = {key: [(row["step"], row[key]) for row in rows if key in row] for row in rows for key in row}
    expected.pop("step")
    assert set(scalars) == set(expected)
    for tag, points in expected.items():
        assert [s for s, _ in scalars[tag]] == [s for s, _ in points], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag  # float32 events
    assert {"train/loss", "train/upo/aux_loss", "train/lr", "eval/rewards/accuracies"} <= set(scalars)
    params = _hparams(run)
    assert params["method"] == "upo" and params["pref_loss"] == "dpo"
    assert params["beta"] == pytest.approx(cfg.beta) and params["max_steps"] == 3
    assert params["rewards"] == "length=1.0" and params["ref_model"] == "null"
    assert params["report_to"] == "tensorboard"


def test_tensorboard_on_resume_drops_the_steps_after_the_checkpoint(tiny_model_dir, pairs_file, tmp_path):
    """A run killed after logging step 3 but checkpointed at step 2 resumes from 2: TensorBoard, like
    metrics.jsonl, then shows each step once, with the resumed run's values."""
    common = dict(method="dpo", save_steps=2, save_total_limit=5, report_to=["tensorboard"], eval_fraction=0.0)
    train(run_config(tiny_model_dir, pairs_file, tmp_path, max_steps=3, **common))
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-3")  # as if killed after logging step 3
    shutil.rmtree(tmp_path / "run" / "final")
    train(run_config(tiny_model_dir, pairs_file, tmp_path, max_steps=4, resume=True, **common))
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for tag in ("train/loss", "train/step_seconds"):  # step_seconds differs between the two step-3s
        assert _scalars(tmp_path / "run")[tag] == [(r["step"], pytest.approx(r[tag], rel=1e-6)) for r in rows]


def test_report_to_is_validated_and_missing_trackers_name_their_pip_package(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="report_to must be one of tensorboard, trackio, wandb, mlflow"):
        UPOConfig(report_to=["tensorbord"])
    import upo.tracking

    monkeypatch.setattr(upo.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(ConfigError, match="report_to: wandb, mlflow requested but not installed; pip install wandb mlflow"):
        upo.tracking.accelerator_kwargs(UPOConfig(report_to=["wandb", "mlflow"], output_dir=str(tmp_path)))
    assert upo.tracking.accelerator_kwargs(UPOConfig(output_dir=str(tmp_path)))["log_with"] is None


def test_hparams_are_flat_scalars_and_the_optional_trackers_accept_our_init_kwargs(tmp_path):
    cfg = UPOConfig(lora_target_modules=["q_proj", "v_proj"], rewards={"readability": 0.05, "profanity": 0.95})
    flat = hparams(cfg)
    assert set(flat) == set(cfg.to_dict())
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())
    assert flat["lora_target_modules"] == "q_proj,v_proj"
    assert flat["rewards"] == "readability=0.05,profanity=0.95" and flat["max_steps"] == "null"
    # The trackers not installed here are checked as far as their constructors (which import nothing).
    kwargs = tracker_init_kwargs(UPOConfig(output_dir=str(tmp_path / "run")), resume_step=None)
    assert kwargs["wandb"] == {"name": "run", "dir": str(tmp_path / "run" / "logs")}
    WandBTracker(PROJECT, **kwargs["wandb"])
    TrackioTracker(PROJECT, **kwargs["trackio"])
    MLflowTracker(PROJECT, **kwargs["mlflow"])
