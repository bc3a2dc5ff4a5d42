"""Launches that would not do what they say are refused before anything loads.

Two ways a user asks for N processes and gets N separate single-process runs or just one, each
training alone on all the data, without a word from Accelerate:

- torchrun (or `accelerate launch --config_file` with a multi-GPU config) on a machine without GPUs
  and without ACCELERATE_USE_CPU: WORLD_SIZE says N, Accelerate sets up 1 per process;
- `accelerate launch --num_processes N` without a config file and without --multi_gpu: Accelerate's
  simple launcher starts one process. It sets no WORLD_SIZE, but it does set MASTER_ADDR (only when
  N > 1) next to its own ACCELERATE_DYNAMO_BACKEND.
"""

from __future__ import annotations

import os

from upo.config import ConfigError

CPU_HINT = "Without GPUs, launch with ACCELERATE_USE_CPU=1 and a multi-process config (examples/accelerate/ddp.yaml)."


def check_launch(num_processes: int, env: dict[str, str] | None = None) -> None:
    """Raise ConfigError when the launcher asked for another number of processes than Accelerate set up."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env:
        launched = int(env["WORLD_SIZE"])
        if launched != num_processes:
            raise ConfigError(
                f"launched as {launched} processes, but Accelerate set up {num_processes}: each process would "
                f"train alone on all the data. {CPU_HINT}"
            )
        return
    if num_processes == 1 and "ACCELERATE_DYNAMO_BACKEND" in env and "MASTER_ADDR" in env:
        raise ConfigError(
            "accelerate launch was asked for several processes (it set MASTER_ADDR) but started one: without a config "
            "file or --multi_gpu, its simple launcher runs a single process, which would train alone. Launch with "
            f"--multi_gpu (GPUs) or --config_file examples/accelerate/ddp.yaml. {CPU_HINT} "
            "(If you meant one process, unset MASTER_ADDR.)"
        )
