"""Stopping a training run on request, with its progress kept: SIGTERM or SIGUSR1.

A job scheduler's preemption notice (SLURM sends SIGTERM, or a chosen signal with `--signal`), a
`kill -USR1 PID`, or a session about to end: while the training loop runs, these signals no longer
kill the process mid-step. The loop finishes its optimizer step, saves a checkpoint (also when
`save_steps` is not set) and raises `TrainingStopped`; `upo train` says where the checkpoint is and
exits with 128 + the signal's number, and the same command with `--resume true` (`upo frontier`:
a rerun) continues from it exactly as an uninterrupted run would. Outside the loop (loading, the
reference precompute, saving final/) the signals keep their usual effect.

With several processes (`accelerate launch`) a signal may reach some of them only, or at different
steps: each step the processes sum their requests (one all-reduce of one number), so all of them
save the same step and stop together.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on a signal after saving `checkpoint` at `step`: a KeyboardInterrupt, so that
    what runs trainings one after another (`upo frontier`) stops too instead of going on."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path):
        super().__init__(f"stopped by {signal_name} after step {step}; checkpoint saved: {checkpoint}")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint

    @property
    def exit_code(self) -> int:
        return 128 + int(getattr(signal.Signals, self.signal_name, signal.SIGTERM))


@contextlib.contextmanager
def stop_requests() -> Iterator[Callable[[], str | None]]:
    """Within the block, STOP_SIGNALS are recorded instead of acted on; yields a function that gives
    the name of the first one received (None before). The previous handlers come back on exit. Only
    the main thread can install handlers: elsewhere nothing changes and no request is ever seen."""
    received: list[str] = []

    def record(signum, _frame) -> None:
        received.append(signal.Signals(signum).name)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, record) for s in STOP_SIGNALS}
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def agreed_stop(accelerator, request: str | None) -> str | None:
    """The stop request every process acts on at this step: this process's own; with several processes,
    when any of them received one, all of them stop (one that received none names SIGTERM)."""
    if accelerator.num_processes == 1:
        return request
    import torch  # here, so that the command line imports this module without torch

    anyone = accelerator.reduce(torch.tensor([1.0 if request else 0.0], device=accelerator.device), reduction="sum")
    return (request or "SIGTERM") if float(anyone.item()) > 0 else None
