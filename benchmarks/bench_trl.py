"""upo's DPO, KTO and UPO against TRL's DPOTrainer and KTOTrainer at equal settings (and, with
--variants upo_simpo,trl_simpo,upo_cpo,trl_cpo,upo_orpo,trl_orpo, the reference-free SimPO, CPO and
ORPO against TRL's CPOTrainer and ORPOTrainer).

Same model (SmolLM2-135M-Instruct), same HH-RLHF pairs and the very same token ids (both sides get
the items upo's data pipeline makes: same prompts, truncation, eos), same max_length, batch size,
precision (autocast; fp32 weights and optimizer state on both sides), AdamW with the same lr,
constant schedule, grad-norm clip 1.0, dropout off, reference log-probs precomputed before training,
full fine-tuning (or LoRA r=16 on all linear layers with --lora). Where upo has no counterpart TRL gets
its fastest setting: gradient checkpointing off, its default fused AdamW, and the attention kernel upo
uses by default (eager without CUDA; on this CPU it gave TRL 7% more tokens/s for DPO and 12% for KTO
than sdpa, at 0.5-1 GB more memory; --trl_attn sdpa for the leaner one). Each run is its own subprocess, so
its peak resident memory is its own; the runs alternate in rotated order over rounds so drift on a
shared machine hits every run alike, and upo/TRL ratios are taken within each round.

TRL is a benchmark baseline, not a dependency of upo; run this in the bench environment:

    make bench-env
    .venv-bench/bin/python benchmarks/bench_trl.py            # 3 rounds x (2 warm-up + 6 measured steps)
    .venv-bench/bin/python benchmarks/bench_trl.py --quick    # smoke run: 1 round x (1 + 2 steps)
    .venv-bench/bin/python benchmarks/bench_trl.py --quick --model /path/to/tiny-model   # plumbing only
    .venv-bench/bin/python benchmarks/bench_trl.py --rounds 1 --variants upo_dpo,upo_kto --profile   # where time goes
    .venv/bin/python benchmarks/bench_trl.py --lora --variants upo_dpo,upo_dpo_qlora   # QLoRA against LoRA (bitsandbytes)

What is measured, per run, over the measured steps (after the warm-up steps):
  s/step     wall time of each optimizer step, including fetching and collating its batch (upo: its
             own train/step_seconds; TRL: the time between consecutive on_step_end callbacks)
  tokens/s   real (non-padding) tokens of the sequences the policy trains on per second: prompt +
             completion of every sequence in the batch, both sides of a pair. This is what upo's
             train/tokens_per_second and TRL's num_tokens both count (attention_mask.sum() of the
             training batch). KTO's mismatched KL sequences (a forward pass without gradient) are
             not in it, on either side; they are in the FLOPs.
  peak RSS   ru_maxrss of the run's process (whole run: load, data, reference precompute, training)
  prompt share  of the real tokens of the trained sequences, the prompts' (a pair's prompt twice)
  MFU        model FLOPs per second / this machine's bf16 matmul peak. Model FLOPs per step =
             6N per trained token (full fine-tuning; with LoRA 4N + 6 N_lora: the frozen weights get
             no weight gradient) + 2N per token of forward passes without gradient (KTO's KL
             sequences; reference forwards do not happen during steps, they are precomputed),
             counting only the tokens a step needs, whoever runs it: a pair's prompt once (upo
             shares it, TRL runs it twice), and of the KL sequences only their completions (their
             prompts are the batch's own; upo reuses their keys and values, TRL runs them again).
             Two counts of N, both from the same token counts for upo and TRL:
               MFU        N = the model's parameters (SmolLM2-135M: 134.5M, the tied embedding/LM head
                          counted once): the issue's convention (its "TRL reaches about 18%" at 92
                          tokens/s and 425 GFLOP/s implies N = 135M) and PaLM's 6N, without the
                          attention T^2 term.
               MFU non-emb  N = parameters less the embedding matrix (106.2M): stricter, it credits no
                          LM-head FLOPs at all, though the LM head does run on completion tokens (upo)
                          or on every token (TRL).
  setup      (JSON only) seconds from the run's start to its first training forward: imports, model
             load, data, reference precompute
  matmul peak  best GFLOP/s of a square torch.matmul (fp32 and bf16) at this process's thread count,
             measured before and after the runs.

Results are printed as a table and written to benchmarks/results/trl.json (--quick: trl-quick.json.tmp).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import HH, LORA, cpu_model, machine_info, upo_config, versions, write_record
from _flops import matmul_peak, model_counts, new_step, profile_text, step_columns, step_flops, token_counts
from _trl_runner import run_trl
from torch.optim.optimizer import register_optimizer_step_post_hook

from upo.config import EMBEDDED_MODEL
from upo.methods import METHODS, batch_format
from upo.modeling import default_attention

# name -> (library, method, preference term)
VARIANTS = {
    "upo_dpo": ("upo", "dpo", "dpo"),
    "trl_dpo": ("trl", "dpo", "dpo"),
    "upo_kto": ("upo", "kto", "kto"),
    "trl_kto": ("trl", "kto", "kto"),
    "upo_upo": ("upo", "upo", "kto"),  # UPO with its default KTO preference term
    "upo_upo_dpo": ("upo", "upo", "dpo"),  # UPO with the DPO preference term (not run by default)
    "upo_dpo_padded": ("upo", "dpo", "dpo"),  # upo DPO with padding_free: false (what packing gains)
    "upo_dpo_unshared": ("upo", "dpo", "dpo"),  # upo DPO with shared_prompt: false (what sharing gains)
    "upo_kto_unshared": ("upo", "kto", "kto"),  # upo KTO with shared_prompt: false (no prompt cache)
    # reference-free (not run by default): TRL's CPOTrainer (sigmoid; simpo with cpo_alpha 0) and ORPOTrainer
    "upo_simpo": ("upo", "simpo", "simpo"),
    "trl_simpo": ("trl", "simpo", "simpo"),
    "upo_cpo": ("upo", "cpo", "cpo"),
    "trl_cpo": ("trl", "cpo", "cpo"),
    "upo_orpo": ("upo", "orpo", "orpo"),
    "trl_orpo": ("trl", "orpo", "orpo"),
    # QLoRA (needs --lora and bitsandbytes; not run by default): upo DPO on a 4-bit NF4 base, against upo_dpo
    "upo_dpo_qlora": ("upo", "dpo", "dpo"),
}
DEFAULT_VARIANTS = "upo_dpo,trl_dpo,upo_kto,trl_kto,upo_upo,upo_dpo_padded"
PADDED = {"upo_dpo_padded"}
UNSHARED = {"upo_dpo_unshared", "upo_kto_unshared"}
TRL_COUNTERPART = {"upo_dpo": "trl_dpo", "upo_kto": "trl_kto", "upo_simpo": "trl_simpo", "upo_cpo": "trl_cpo",
                   "upo_orpo": "trl_orpo"}
QLORA = {"upo_dpo_qlora": "upo_dpo"}  # -> the same run on the unquantized base (what 4 bits cost or save)
# UPO and its preference-only method see exactly the same batches (same data, seed and sampler).
PREFERENCE_ONLY = {"upo_upo": "upo_kto", "upo_upo_dpo": "upo_dpo"}
RESULTS = Path(__file__).parent / "results"


# ---- one run, in a child process ---------------------------------------------------------------


def run_upo(name: str, args, workdir: Path, t0: float) -> dict:
    """upo.trainer.train; s/step and tokens/s from its metrics.jsonl, FLOP token counts from a wrapper."""
    from upo.logps import CompletionLogps
    from upo.metrics import read_metrics
    from upo.trainer import train

    _, method, pref = VARIANTS[name]
    # Every policy forward goes through CompletionLogps.forward. After the reference precompute, each
    # step makes exactly one call with gradient (the training batch) and, for KTO, one without (the
    # mismatched KL batch): a call with gradient starts a new step. Calls before the first one with
    # gradient are the precompute (LoRA) and are dropped.
    steps: list[dict[str, int]] = []
    info: dict = {}
    forward = CompletionLogps.forward

    # --profile: torch's profiler over the measured steps; a step ends when the optimizer's step does,
    # so the window closes with the last step, before the final save
    profiler, hook = None, None
    if args.profile:
        profiler = torch.profiler.profile(schedule=torch.profiler.schedule(wait=args.warmup - 1, warmup=1,
                                                                           active=args.steps))
        hook = register_optimizer_step_post_hook(lambda *_: profiler.step())

    def counting_forward(self, input_ids, attention_mask, loss_mask, *rest, **kwargs):
        tokens = token_counts(attention_mask, loss_mask, paired=batch_format(METHODS[method], pref) == "paired")
        if torch.is_grad_enabled():
            if not steps:
                info["setup_seconds"] = time.perf_counter() - t0
                info["params"] = model_counts(self.lm, args.lora)
                info["model_bytes"] = self.lm.get_memory_footprint()  # weights and buffers (4-bit ones packed)
                if profiler is not None:
                    profiler.start()
            steps.append(new_step(tokens))
        elif steps:
            steps[-1]["forward"] += tokens["real"]
            steps[-1]["forward_needed"] += tokens["real"] - tokens["prompt"]
        phase = "upo: forward with gradient" if torch.is_grad_enabled() else "upo: forward without gradient"
        with torch.profiler.record_function(phase):  # the profile's phases (a no-op without --profile)
            return forward(self, input_ids, attention_mask, loss_mask, *rest, **kwargs)

    CompletionLogps.forward = counting_forward
    cfg = upo_config(method, pref, data=args.data, output_dir=workdir / name, batch_size=args.batch_size,
                     steps=args.warmup + args.steps, max_length=args.max_length, precision=args.precision,
                     lora=args.lora, model=args.model)
    if args.lora:
        cfg.lora_r, cfg.lora_alpha = LORA["r"], LORA["alpha"]
    if name in QLORA:
        if not args.lora:
            raise SystemExit(f"{name}: QLoRA trains adapters: run with --lora")
        cfg.load_in_4bit = True
    cfg.padding_free = name not in PADDED
    cfg.shared_prompt = name not in UNSHARED
    if args.logits_chunk_tokens is not None:
        cfg.logits_chunk_tokens = args.logits_chunk_tokens or None
    cfg.gradient_checkpointing = args.gradient_checkpointing
    try:
        final = train(cfg)
    finally:
        CompletionLogps.forward = forward
        if hook is not None:
            hook.remove()
    if profiler is not None:
        profiler.stop()
        info["profile"] = profile_text(profiler.key_averages())

    rows = read_metrics(final.parent / "metrics.jsonl")
    seconds = [r["train/step_seconds"] for r in rows]
    trained = [r["train/tokens_per_second"] * r["train/step_seconds"] for r in rows]  # upo's own count
    if len(steps) != len(rows) or any(abs(t - s["trained"]) > 0.5 for t, s in zip(trained, steps, strict=False)):
        raise RuntimeError(f"token counts disagree with upo's metrics: {steps} vs {trained}")
    return {"step_seconds": seconds, **step_columns(steps), **info}


def child(name: str, args, result: Path) -> None:
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = run_upo if VARIANTS[name][0] == "upo" else run_trl  # TRL's variants are named trl_<method>
        out = run(name, args, Path(tmp), t0)
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    result.write_text(json.dumps(out))


# ---- the parent: rounds, aggregation, table ----------------------------------------------------


def spawn(name: str, argv: list[str], logdir: Path) -> dict:
    result, log = logdir / f"{name}.json", logdir / f"{name}.log"
    env = dict(os.environ, TQDM_DISABLE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--child", name, "--result", str(result)],
                              stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"{name} failed (exit {proc.returncode}); log above")
    return json.loads(result.read_text())


def measured(run: dict, warmup: int) -> dict:
    """Per measured step: seconds, token counts (`new_step`), tokens/s, model FLOP/s (needed tokens only)."""
    n, n_lora, n_ne = run["params"]["n"], run["params"]["n_lora"], run["params"]["n_non_embedding"]
    sec = run["step_seconds"][warmup:]
    tokens = {key: v[warmup:] for key, v in run.items() if key.endswith("_tokens")}
    needed = list(zip(tokens["trained_needed_tokens"], tokens["forward_needed_tokens"], sec, strict=True))
    return {"step_seconds": sec, **tokens,
            "tokens_per_second": [t / s for t, s in zip(tokens["trained_tokens"], sec, strict=True)],
            "flops_per_second": [step_flops(t, f, n, n_lora) / s for t, f, s in needed],
            "flops_per_second_non_embedding": [step_flops(t, f, n_ne, n_lora) / s for t, f, s in needed]}


def summarize(runs: list[dict], peak_bf16: float, peak_fp32: float) -> dict:
    """One variant over all rounds. s/step, tokens/s and FLOP/s are the median over rounds of each
    round's median step, so one round slowed by another tenant of this shared machine moves the
    figure less than it would move the median of all steps pooled (kept as *_all_steps)."""
    med = statistics.median

    def by_round(key: str) -> float:
        return med(med(r["measured"][key]) for r in runs)

    def all_steps(key: str) -> float:
        return med(v for r in runs for v in r["measured"][key])

    flops, flops_ne = by_round("flops_per_second"), by_round("flops_per_second_non_embedding")
    trained = sum(sum(r["measured"]["trained_tokens"]) for r in runs)
    prompt = sum(sum(r["measured"]["prompt_tokens"]) for r in runs)
    return {
        "prompt_share": prompt / trained,
        "seconds_per_step": by_round("step_seconds"),
        "tokens_per_second": by_round("tokens_per_second"),
        "model_gflops_per_second": flops / 1e9,
        "mfu_bf16": flops / 1e9 / peak_bf16,
        "mfu_fp32": flops / 1e9 / peak_fp32,
        "mfu_bf16_non_embedding": flops_ne / 1e9 / peak_bf16,
        "per_round_tokens_per_second": [med(r["measured"]["tokens_per_second"]) for r in runs],
        "seconds_per_step_all_steps": all_steps("step_seconds"),
        "tokens_per_second_all_steps": all_steps("tokens_per_second"),
        "mfu_bf16_all_steps": all_steps("flops_per_second") / 1e9 / peak_bf16,
        "tokens_per_second_pooled": trained / sum(sum(r["measured"]["step_seconds"]) for r in runs),
        "peak_rss_gb": max(r["peak_rss_bytes"] for r in runs) / 1e9,
        "model_gb": runs[0]["model_bytes"] / 1e9 if "model_bytes" in runs[0] else None,  # upo runs
        "setup_seconds": med(r["setup_seconds"] for r in runs),
        "n_steps": sum(len(r["measured"]["step_seconds"]) for r in runs),
        "params": runs[0]["params"],
    }


def round_ratio(rounds: list[dict], a: str, b: str, key: str) -> float:
    """Median over rounds of (a's median / b's median) within the round: drift between rounds cancels."""
    med = statistics.median
    return med(med(r[a]["measured"][key]) / med(r[b]["measured"][key]) for r in rounds)


def ratios(rounds: list[dict], names: list[str]) -> dict:
    """upo/TRL per round (median over rounds), and UPO / preference-only per paired step."""
    out = {}
    for upo, trl in {**TRL_COUNTERPART, **QLORA}.items():
        if upo in names and trl in names:
            out[f"{upo}/{trl}"] = {
                "tokens_per_second": round_ratio(rounds, upo, trl, "tokens_per_second"),
                "seconds_per_step": round_ratio(rounds, upo, trl, "step_seconds"),
                "peak_rss": statistics.median(r[upo]["peak_rss_bytes"] / r[trl]["peak_rss_bytes"] for r in rounds),
            }
    for upo, base in PREFERENCE_ONLY.items():
        if upo in names and base in names:
            per_round = [[u / b for u, b in zip(r[upo]["measured"]["step_seconds"], r[base]["measured"]["step_seconds"],
                                                strict=True)] for r in rounds]
            out[f"{upo}/{base}"] = {"seconds_per_step_paired": statistics.median(v for rr in per_round for v in rr),
                                    "per_round": [statistics.median(rr) for rr in per_round]}
    return out


def table(results: dict, ratio: dict, args, peaks: dict) -> str:
    mode = f"LoRA r={LORA['r']}" if args.lora else "full fine-tuning"
    lines = [
        f"{Path(args.model).name if args.model != EMBEDDED_MODEL else 'SmolLM2-135M-Instruct'}, {mode}, {args.precision}, batch {args.batch_size}, "
        f"max_length {args.max_length}, {args.rounds} rounds x {args.steps} measured steps (after {args.warmup} warm-up), "
        f"{args.threads} threads, {cpu_model()}",
        f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s",
        "",
        "| run | s/step | real tokens/s | prompt share | peak RSS GB | model GFLOP/s | MFU | MFU non-emb | vs TRL: tokens/s | s/step | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        r = ratio.get(f"{name}/{TRL_COUNTERPART.get(name)}")
        vs = f"{r['tokens_per_second']:.2f}x | {r['seconds_per_step']:.2f}x | {r['peak_rss']:.2f}x" if r else " | | "
        lines.append(f"| {name} | {row['seconds_per_step']:.2f} | {row['tokens_per_second']:.0f} | {row['prompt_share']:.0%} | "
                     f"{row['peak_rss_gb']:.2f} | "
                     f"{row['model_gflops_per_second']:.0f} | {row['mfu_bf16']:.1%} | {row['mfu_bf16_non_embedding']:.1%} | {vs} |")
    for name, base in QLORA.items():
        if (r := ratio.get(f"{name}/{base}")) is not None:
            lines.append(f"\n{name}/{base}: tokens/s {r['tokens_per_second']:.2f}x, s/step {r['seconds_per_step']:.2f}x, "
                         f"peak RSS {r['peak_rss']:.2f}x; the model's weights in memory "
                         f"{results[name]['model_gb']:.3f} GB against {results[base]['model_gb']:.3f} GB")
    for key, r in ratio.items():
        if "seconds_per_step_paired" in r:
            lines.append(f"\n{key} step time (median of paired steps, same batches): {r['seconds_per_step_paired']:.3f}x")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HH)
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="model folder (e.g. a tiny test model) or the embedded default")
    parser.add_argument("--steps", type=int, default=6, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps at the start of each run (>= 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=4, help="pairs (DPO) or examples (KTO, UPO-kto) per step")
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32", "fp16"))
    parser.add_argument("--lora", action="store_true", help="LoRA r=16 on all linear layers instead of full fine-tuning")
    parser.add_argument("--gradient_checkpointing", action="store_true",
                        help="activation checkpointing in both libraries (upo's gradient_checkpointing, TRL's own)")
    parser.add_argument("--trl_gradient_checkpointing", action="store_true",
                        help="keep TRL's default gradient checkpointing alone (off by default, as upo's is)")
    parser.add_argument("--trl_optim", default="adamw_torch_fused", choices=("adamw_torch_fused", "adamw_torch"),
                        help="TRL's AdamW implementation (default: TRL's default, fused)")
    parser.add_argument("--trl_attn", default=default_attention() or "sdpa", choices=("eager", "sdpa"),
                        help="TRL's attention kernel (default: upo's default, eager without CUDA)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 1 warm-up + 2 measured steps")
    parser.add_argument("--logits_chunk_tokens", type=int, default=None,
                        help="upo runs: completion tokens per LM-head chunk (0: all at once; default: upo's default)")
    parser.add_argument("--profile", action="store_true",
                        help="upo runs: torch profiler over the measured steps, its op table written next to --output "
                             "(profile-<run>-round<r>.txt); it slows the steps, so not for timings")
    parser.add_argument("--output", type=Path, default=None, help="default results/trl.json (--quick: trl-quick.json.tmp)")
    parser.add_argument("--child", choices=tuple(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup, args.steps = 1, 1, 2
    args.trl_gradient_checkpointing = args.trl_gradient_checkpointing or args.gradient_checkpointing
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first step's time has no previous step end to start from)")
    if args.output is None:
        args.output = RESULTS / ("trl-quick.json.tmp" if args.quick else "trl.json")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        child(args.child, args, args.result)
        return 0
    if not args.data.exists():
        print(f"skipping: {args.data} not found (the shared HH-RLHF pairs)")
        return 0
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if any(VARIANTS[n][0] == "trl" for n in names):
        try:
            import trl  # noqa: F401
        except ImportError:
            raise SystemExit("TRL is not installed here: `make bench-env`, then run with .venv-bench/bin/python") from None
    torch.set_num_threads(args.threads)
    size, reps = (1024, 3) if args.quick else (2048, 10)
    peaks = {"fp32": matmul_peak(torch.float32, size, reps), "bf16": matmul_peak(torch.bfloat16, size, reps)}
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
            this = {}
            for name in order:
                logdir = Path(tmp) / f"round{r}"
                logdir.mkdir(exist_ok=True)
                run = spawn(name, argv, logdir)
                run["measured"] = measured(run, args.warmup)
                if "profile" in run:
                    path = args.output.with_name(f"profile-{name}-round{r + 1}.txt")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(run.pop("profile"))
                    print(f"profile of {name}'s measured steps: {path}")
                this[name] = run
                print(f"round {r + 1}: {name}: {statistics.median(run['measured']['step_seconds']):.2f} s/step, "
                      f"{statistics.median(run['measured']['tokens_per_second']):.0f} tokens/s, "
                      f"peak RSS {run['peak_rss_bytes'] / 1e9:.2f} GB", flush=True)
            rounds.append(this)
    # A second look at the peaks, after the runs: take the better of the two.
    peaks = {"fp32": max(peaks["fp32"], matmul_peak(torch.float32, size, reps)),
             "bf16": max(peaks["bf16"], matmul_peak(torch.bfloat16, size, reps))}
    results = {n: summarize([r[n] for r in rounds], peaks["bf16"], peaks["fp32"]) for n in names}
    ratio = ratios(rounds, names)
    text = table(results, ratio, args, peaks)
    print("\n" + text)
    record = {
        "settings": {k: str(v) for k, v in vars(args).items() if k not in ("child", "result")},
        "machine": machine_info(),
        "versions": versions("torch", "transformers", "trl", "accelerate", "peft", "upo"),
        "matmul_peak_gflops": peaks,
        "flops_convention": "6N per trained token (LoRA: 4N + 6 N_lora) + 2N per forward-only token, counting "
                            "the tokens a step needs (a pair's prompt once; of KTO's KL sequences the completions); "
                            "mfu_bf16: N = all parameters (tied embedding counted once); mfu_bf16_non_embedding: "
                            "N = parameters less the input embedding matrix",
        "results": results,
        "ratios": ratio,
        "samples": {n: [r[n]["measured"] for r in rounds] for n in names},
        "table": text,
    }
    write_record(args.output, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
