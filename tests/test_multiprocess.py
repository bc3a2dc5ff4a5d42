"""Two processes (Accelerate, gloo on CPU) train like one process with twice the batch.

`accelerate launch --config_file examples/accelerate/ddp.yaml` (2 processes) with ACCELERATE_USE_CPU=1
(torchrun + gloo; `--cpu` would start a single process, Accelerate's multi-CPU launcher needs MPI) trains DPO, KTO
(its reference point z0 is all-gathered over both processes) and UPO with batch_size b per process;
one process trains the same configs with batch_size 2b. Each loader batch of 2b is split between
the processes (Accelerate's split_batches), so both see the same examples per step and the
parameters agree up to float summation order (tolerance in helpers.assert_same_updates).
Checkpoint + resume under 2 processes ends bitwise where the uninterrupted 2-process run does. An
epoch whose last step is short and uneven (one process holding only Accelerate's top-up copies)
makes the same updates as one process with one batch per step; so do QLoRA and TR-DPO. In bf16 the first step's log-ratios
are exactly 0: each process precomputes the reference log-probs of its first-epoch micro-batches.

All 2-process runs share one launch (the process start and gloo set-up dominate the time).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import assert_same_updates, run_config, write_pairs
from safetensors.torch import load_file

from upo.config import ConfigError
from upo.metrics import read_metrics
from upo.trainer import train

pytest.importorskip("accelerate")
QLORA = importlib.util.find_spec("bitsandbytes") is not None  # the test extra installs it

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "accelerate"
METHODS = {"dpo": dict(method="dpo"), "kto": dict(method="kto"), "upo": dict(method="upo")}
COMMON = dict(eval_fraction=0.0, max_steps=3, learning_rate=1e-2)
TAIL = dict(method="upo", pref_loss="dpo", eval_fraction=0.0, max_steps=None, learning_rate=1e-2)
RESUME = dict(method="upo", pref_loss="dpo", eval_fraction=0.0, save_steps=2, learning_rate=1e-2)

# Runs inside each launched process: every config in turn, in one process group.
WORKER = """
    import json, sys
    from upo.config import UPOConfig
    from upo.trainer import train

    for kwargs in json.loads(open(sys.argv[1]).read()):
        train(UPOConfig(**kwargs))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(configs: list, tmp_path: Path, config_file: str = "ddp.yaml", preamble: str = "",
            env: dict | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """Launch WORKER (after `preamble`, code run first in each process) on 2 processes for `configs`."""
    (tmp_path / "worker.py").write_text(textwrap.dedent(preamble) + textwrap.dedent(WORKER))
    (tmp_path / "configs.json").write_text(json.dumps([c.to_dict() for c in configs]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {"ACCELERATE_USE_CPU": "1"})}
    # A config the README points to (2 processes); ACCELERATE_USE_CPU=1 makes it gloo on CPU.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(EXAMPLES / config_file),
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
               str(tmp_path / "worker.py"), str(tmp_path / "configs.json")]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_match_one_process_with_twice_the_batch(tiny_model_dir, wide_model_dir, pairs_file, tmp_path):
    two = {name: run_config(tiny_model_dir, pairs_file, tmp_path / f"two-{name}", batch_size=2, **COMMON, **kw)
           for name, kw in METHODS.items()}  # fmt: skip
    full = run_config(tiny_model_dir, pairs_file, tmp_path / "two-full", max_steps=4, **RESUME)
    part = run_config(tiny_model_dir, pairs_file, tmp_path / "two-part", max_steps=2, **RESUME)
    resumed = run_config(tiny_model_dir, pairs_file, tmp_path / "two-part", max_steps=4, resume=True, **RESUME)
    # the same with LoRA, whose checkpoints hold the trained parameters only (the frozen base is the model's own)
    lora = dict(lora=True, lora_r=4, merge_lora=False, **RESUME)
    lora_runs = [run_config(tiny_model_dir, pairs_file, tmp_path / "two-lora-full", max_steps=4, **lora),
                 run_config(tiny_model_dir, pairs_file, tmp_path / "two-lora-part", max_steps=2, **lora),
                 run_config(tiny_model_dir, pairs_file, tmp_path / "two-lora-part", max_steps=4, resume=True, **lora)]
    # 13 pairs in steps of 8 (2 per process x 2 processes x 2 accumulation steps): one full step, then
    # batches of 4 and 1. Accelerate tops the batch of 1 up to 4 with copies: process 0 keeps its one
    # pair, process 1 holds copies only.
    tail_data = write_pairs(tmp_path / "pairs-13.jsonl", 13)
    tail = run_config(tiny_model_dir, tail_data, tmp_path / "two-tail", batch_size=2, gradient_accumulation_steps=2,
                      **TAIL)  # fmt: skip
    # bf16 on the wide model (its log-probs depend on the batch), the whole first epoch in step 1:
    # each process precomputes the reference log-probs of its share of each batch as it trains on it
    # (the last: process 0 keeps its one real pair, process 1 holds copies only), and every process
    # gets them all. Batched otherwise, or with the copies left in, a log-ratio is off by ~4e-7.
    # Their reference log-probs come from the cache shared by runs, filled by a UPO run with the same
    # preference term first: every process's share, loaded by both processes.
    shared = dict(batch_size=2, precision="bf16", max_steps=1, eval_fraction=0.0, cache_dir=str(tmp_path / "shared"))
    accumulation = {"dpo": 4, "kto": 7}
    warm = [run_config(wide_model_dir, tail_data, tmp_path / f"two-warm-{name}", method="upo", pref_loss=name,
                       gradient_accumulation_steps=steps, **shared) for name, steps in accumulation.items()]
    step0 = {name: run_config(wide_model_dir, tail_data, tmp_path / f"two-step0-{name}", method=name,
                              gradient_accumulation_steps=steps, rewards={}, **shared)
             for name, steps in accumulation.items()}  # fmt: skip
    # QLoRA under DDP (with bitsandbytes): each process loads its own 4-bit base; the adapters' gradients averaged
    qlora = dict(method="dpo", lora=True, load_in_4bit=True, lora_target_modules=["q_proj", "v_proj"], merge_lora=False,
                 rewards={}, **COMMON)
    qlora_two = [run_config(wide_model_dir, pairs_file, tmp_path / "two-qlora", batch_size=2, **qlora)] if QLORA else []
    # TR-DPO under DDP: each process mixes the (same) policy into its reference copy
    tr_dpo = dict(method="dpo", precompute_ref_logps=False, sync_ref_model=True, ref_model_sync_steps=1,
                  ref_model_mixup_alpha=0.5, **COMMON)
    tr_two = run_config(tiny_model_dir, pairs_file, tmp_path / "two-tr-dpo", batch_size=2, **tr_dpo)
    # LD-DPO and WPO under DDP: each process weighs its own pairs (its pairs' shared lengths, its policy's weights)
    weighted = dict(method="dpo", ld_alpha=0.5, wpo_weighting=True, **COMMON)
    weighted_two = run_config(tiny_model_dir, pairs_file, tmp_path / "two-weighted", batch_size=2, **weighted)
    result = _launch([*two.values(), full, part, resumed, *lora_runs, tail, *warm, *step0.values(), *qlora_two,
                      tr_two, weighted_two], tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert (result.stdout + result.stderr).count("reference log-probs reused from the cache") == 2
    assert f"resumed from {Path(part.output_dir) / 'checkpoints' / 'step-2'}" in result.stdout + result.stderr

    start = load_file(str(tiny_model_dir / "model.safetensors"))
    for name, kw in METHODS.items():
        one = train(run_config(tiny_model_dir, pairs_file, tmp_path / f"one-{name}", batch_size=4, **COMMON, **kw))
        final_two = Path(two[name].output_dir) / "final"
        assert_same_updates(load_file(str(one / "model.safetensors")), load_file(str(final_two / "model.safetensors")),
                            start, lr=COMMON["learning_rate"])  # fmt: skip
        rows_one, rows_two = read_metrics(one.parent / "metrics.jsonl"), read_metrics(final_two.parent / "metrics.jsonl")
        assert [r["step"] for r in rows_one] == [r["step"] for r in rows_two] == [1, 2, 3]
        for r, s in zip(rows_one, rows_two, strict=True):
            for key in ("train/loss", "train/grad_norm", "train/rewards/chosen", *(["train/kto/kl"] if name != "dpo" else [])):
                assert r[key] == pytest.approx(s[key], rel=1e-3, abs=1e-5), (name, r["step"], key)

    # an uneven last step: the same updates as one process with one batch of 8 (5 at the end)
    one = train(run_config(tiny_model_dir, tail_data, tmp_path / "one-tail", batch_size=8, **TAIL))
    final_two = Path(tail.output_dir) / "final"
    rows_one, rows_two = read_metrics(one.parent / "metrics.jsonl"), read_metrics(final_two.parent / "metrics.jsonl")
    assert [r["step"] for r in rows_one] == [r["step"] for r in rows_two] == [1, 2]
    for r, s in zip(rows_one, rows_two, strict=True):
        for key in ("train/grad_norm", "train/value_head/grad_norm"):
            assert r[key] == pytest.approx(s[key], rel=1e-4), (r["step"], key)
    assert_same_updates(load_file(str(one / "model.safetensors")), load_file(str(final_two / "model.safetensors")),
                        start, lr=COMMON["learning_rate"], slack=10)  # fmt: skip

    one = train(run_config(tiny_model_dir, pairs_file, tmp_path / "one-weighted", batch_size=4, **weighted))
    final_two = Path(weighted_two.output_dir) / "final"
    assert_same_updates(load_file(str(one / "model.safetensors")), load_file(str(final_two / "model.safetensors")),
                        start, lr=COMMON["learning_rate"])
    rows_one, rows_two = read_metrics(one.parent / "metrics.jsonl"), read_metrics(final_two.parent / "metrics.jsonl")
    for r, s in zip(rows_one, rows_two, strict=True):
        for key in ("train/loss", "train/wpo/weights", "train/logps/chosen"):
            assert r[key] == pytest.approx(s[key], rel=1e-3, abs=1e-5), (r["step"], key)

    one = train(run_config(tiny_model_dir, pairs_file, tmp_path / "one-tr-dpo", batch_size=4, **tr_dpo))
    assert_same_updates(load_file(str(one / "model.safetensors")),
                        load_file(str(Path(tr_two.output_dir) / "final" / "model.safetensors")), start,
                        lr=COMMON["learning_rate"])
    if QLORA:
        one = train(run_config(wide_model_dir, pairs_file, tmp_path / "one-qlora", batch_size=4, **qlora))
        a = load_file(str(one / "adapter_model.safetensors"))
        b = load_file(str(Path(qlora_two[0].output_dir) / "final" / "adapter_model.safetensors"))
        assert a.keys() == b.keys() and any(a[k].abs().max() > 0 for k in a if "lora_B" in k)  # trained
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5)

    # the first step's log-ratios are exactly 0 on both processes (and so KTO's z0)
    for name, cfg in step0.items():
        row = read_metrics(Path(cfg.output_dir) / "metrics.jsonl")[0]
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", *(["kto/kl"] if name == "kto" else [])):
            assert row[f"train/{key}"] == 0.0, (name, key)

    # checkpoint + resume with two processes: bitwise the uninterrupted two-process run
    a = load_file(str(Path(full.output_dir) / "final" / "model.safetensors"))
    b = load_file(str(Path(resumed.output_dir) / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    timing = ("train/step_seconds", "train/tokens_per_second")
    rows_a, rows_b = (
        [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(Path(c.output_dir) / "metrics.jsonl")]
        for c in (full, resumed)
    )
    assert rows_a == rows_b and [r["step"] for r in rows_a] == [1, 2, 3, 4]
    lora_step = Path(lora_runs[1].output_dir) / "checkpoints" / "step-2" / "model.safetensors"
    saved = load_file(str(lora_step))
    assert any("lora_" in k for k in saved) and all("lora_" in k or "value_head." in k for k in saved)
    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        a, b = (load_file(str(Path(c.output_dir) / "final" / name)) for c in (lora_runs[0], lora_runs[2]))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_launch_that_accelerate_did_not_set_up_is_refused(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    """torchrun on a machine without GPUs and without ACCELERATE_USE_CPU starts N processes that
    Accelerate takes for N separate single-process runs; each would train alone on all the data."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="launched as 2 processes, but Accelerate set up 1"):
        train(run_config(tiny_model_dir, pairs_file, tmp_path, method="dpo", max_steps=1))
    assert not (tmp_path / "run").exists()


def test_accelerates_simple_launcher_asked_for_two_processes_is_refused(tiny_model_dir, pairs_file, tmp_path,
                                                                        monkeypatch):
    """`accelerate launch --num_processes 2` without a config file starts one process with no WORLD_SIZE,
    only MASTER_ADDR/MASTER_PORT (set for N > 1) next to its ACCELERATE_* variables."""
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")
    with pytest.raises(ConfigError, match="accelerate launch was asked for several processes .* but started one"):
        train(run_config(tiny_model_dir, pairs_file, tmp_path, method="dpo", max_steps=1))
    assert not (tmp_path / "run").exists()


def test_what_a_launch_sets_decides_the_check():
    from upo.launch import check_launch

    check_launch(1, {})  # python -m upo.cli / upo train
    check_launch(1, {"ACCELERATE_DYNAMO_BACKEND": "NO"})  # accelerate launch, one process
    check_launch(2, {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "ACCELERATE_DYNAMO_BACKEND": "NO"})  # torchrun
    with pytest.raises(ConfigError, match="launched as 2 processes, but Accelerate set up 1"):
        check_launch(1, {"WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="but started one"):
        check_launch(1, {"MASTER_ADDR": "127.0.0.1", "ACCELERATE_DYNAMO_BACKEND": "NO"})


@pytest.mark.slow
def test_accelerate_launch_num_processes_2_without_a_config_fails_the_run(tiny_model_dir, tmp_path):
    """The real launcher, end to end: a non-zero exit and the one-line reason, no run folder."""
    from helpers import pair_rows

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in pair_rows()))
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "-m", "upo.cli", "train",
               "--model", str(tiny_model_dir), "--dataset", str(data), "--method", "dpo", "--max_steps", "1",
               "--output_dir", str(tmp_path / "run"), "--progress", "false"]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "but started one" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("name", "kind"), [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero2", "DEEPSPEED"),
                                           ("deepspeed_zero3", "DEEPSPEED")])  # fmt: skip
def test_example_accelerate_configs_load(name, kind):
    """Accelerate reads every shipped file (test_engines.py trains with the FSDP and DeepSpeed ones)."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(EXAMPLES / f"{name}.yaml"))
    assert config.distributed_type.name == kind and config.num_processes == 2
