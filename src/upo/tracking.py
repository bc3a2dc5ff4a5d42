"""Run tracking through Accelerate's trackers (`report_to`: tensorboard, trackio, wandb, mlflow).

metrics.jsonl (`upo.metrics`) stays the source of truth; the trackers receive the same rows at the
same steps, and the resolved config as hyperparameters. Only the main process logs (Accelerate's
`init_trackers` and `log` run there alone). TensorBoard writes under OUTPUT_DIR/logs/; W&B keeps
its local files there too; Trackio and MLflow store runs where their own settings say
(TRACKIO_DIR, MLFLOW_TRACKING_URI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accelerate.tracking import get_available_trackers
from accelerate.utils import ProjectConfiguration

from upo.config import ConfigError, UPOConfig

PROJECT = "upo"  # the TensorBoard folder under logs/, the W&B / Trackio project, the MLflow experiment


def logging_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "logs"


def accelerator_kwargs(cfg: UPOConfig) -> dict[str, Any]:
    """The `Accelerator(...)` arguments that set up `cfg.report_to`; a ConfigError naming the pip
    package when a requested tracker is not installed (Accelerate would skip it silently)."""
    available = {str(t) for t in get_available_trackers()}
    missing = [name for name in cfg.report_to if name not in available]
    if missing:
        raise ConfigError(
            f"report_to: {', '.join(missing)} requested but not installed; pip install {' '.join(missing)}"
        )
    out = Path(cfg.output_dir)
    return {
        "log_with": list(cfg.report_to) or None,
        "project_config": ProjectConfiguration(project_dir=str(out), logging_dir=str(logging_dir(out))),
    }


def start_tracking(accelerator, cfg: UPOConfig, resume_step: int | None) -> None:
    """Open a tracked run with the resolved config as hyperparameters."""
    if not cfg.report_to:
        return
    if accelerator.is_main_process and "wandb" in cfg.report_to:
        logging_dir(cfg.output_dir).mkdir(parents=True, exist_ok=True)  # wandb does not create its dir
    accelerator.init_trackers(PROJECT, config=hparams(cfg), init_kwargs=tracker_init_kwargs(cfg, resume_step))


def tracker_init_kwargs(cfg: UPOConfig, resume_step: int | None) -> dict[str, dict[str, Any]]:
    """Each tracker's constructor arguments: the run is named after its folder. On resume, TensorBoard
    drops what an interrupted run logged after `resume_step` (as metrics.jsonl does) and appends."""
    run_name = Path(cfg.output_dir).resolve().name
    return {
        "tensorboard": {"purge_step": resume_step + 1} if resume_step is not None else {},
        "wandb": {"name": run_name, "dir": str(logging_dir(cfg.output_dir))},
        "trackio": {"name": run_name},
        "mlflow": {"run_name": run_name},
    }


def finish_tracking(accelerator) -> None:
    """Close the trackers. Not `accelerator.end_training()`: that also destroys the process group,
    which later runs in the same launch (multi-run workers, sweeps) still need."""
    for tracker in accelerator.trackers:
        tracker.finish()


def hparams(cfg: UPOConfig) -> dict[str, bool | int | float | str]:
    """The resolved config as flat scalars (TensorBoard's hparams take no lists, dicts or None):
    lists and dicts as their command-line spelling (`q_proj,v_proj`, `length=1.0`), None as null."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in cfg.to_dict().items():
        if value is None:
            value = "null"
        elif isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in value.items())
        flat[key] = value
    return flat
