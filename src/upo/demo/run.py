"""`upo demo`: the whole pipeline offline on the embedded SmolLM2-135M-Instruct, in minutes.

1. Convert the embedded GGUF model to a Hugging Face folder (once, cached).
2. Sample four responses per prompt (prompts written in this project, `prompts.py`) and pair the
   best with the worst by the simulated user (`simulated_user.py`: on-topic, complete, no loops).
   This user knows nothing of the designer's objective.
3. The designer's auxiliary objective is readability (minus the Flesch-Kincaid grade).
4. Train DPO (preferences only) and UPO (DPO term + the readability term), LoRA, bf16.
5. On held-out prompts: preference accuracy of the implicit reward on held-out pairs, and the
   simulated-user score, reading grade, profanity and length of fresh generations, per model.

Every stage is cached in the output folder, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from upo.config import EMBEDDED_MODEL, UPOConfig
from upo.data.readers import load_records
from upo.demo.dataset import build_demo_pairs, write_jsonl
from upo.demo.prompts import EVAL_PROMPTS, TRAIN_PROMPTS
from upo.demo.simulated_user import user_score
from upo.embedded import embedded_model_dir
from upo.generation import generate
from upo.metrics import read_metrics
from upo.modeling import inference_autocast, load_causal_lm, load_tokenizer
from upo.rewards.builtin import BUILTIN_REWARDS

AUX_REWARDS = {"readability": 1.0}


def _stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _make_data(model_dir: Path, data_dir: Path, n_train: int, n_eval: int, seed: int) -> tuple[Path, Path]:
    train_path, eval_path = data_dir / "train.jsonl", data_dir / "eval.jsonl"
    if train_path.exists() and eval_path.exists():
        print(f"reusing {train_path} and {eval_path}")
        return train_path, eval_path
    tokenizer = load_tokenizer(str(model_dir))
    model = load_causal_lm(str(model_dir))
    data_dir.mkdir(parents=True, exist_ok=True)
    with inference_autocast(model, "bf16"):
        # Four samples a prompt, best vs worst by the simulated user: two samples tie too often.
        eval_rows = build_demo_pairs(model, tokenizer, EVAL_PROMPTS[:n_eval], samples_per_prompt=4, seed=seed + 1)
        train_rows = build_demo_pairs(model, tokenizer, TRAIN_PROMPTS[:n_train], samples_per_prompt=4, seed=seed)
    write_jsonl(eval_rows, eval_path)
    write_jsonl(train_rows, train_path)
    print(f"{len(train_rows)} training pairs, {len(eval_rows)} held-out pairs (ties skipped)")
    return train_path, eval_path


def _config(method: str, train_path: Path, eval_path: Path, out: Path, steps: int | None, seed: int) -> UPOConfig:
    return UPOConfig(
        model=EMBEDDED_MODEL,
        dataset=str(train_path),
        eval_dataset=str(eval_path),
        method=method,
        pref_loss="dpo" if method == "upo" else "kto",  # UPO's preference term is DPO: its only difference is the aux term
        beta=0.1,
        rewards=dict(AUX_REWARDS) if method == "upo" else {},  # DPO does not use them
        aux_coef=1.0,
        lora=True,
        lora_r=16,
        lora_alpha=32,
        learning_rate=2e-4,
        batch_size=4,
        num_epochs=4,
        max_steps=steps,
        max_length=256,
        max_prompt_length=128,
        precision="bf16",
        output_dir=str(out / method),
        seed=seed,
    )


def _evaluate_generations(model_dir: Path, prompts: list[str], seed: int) -> dict[str, float]:
    tokenizer = load_tokenizer(str(model_dir))
    model = load_causal_lm(str(model_dir))
    messages = [[{"role": "user", "content": p}] for p in prompts]
    with inference_autocast(model, "bf16"):
        outputs = generate(model, tokenizer, messages, max_new_tokens=64, num_return_sequences=2, seed=seed)
    flat_prompts = [p for p, outs in zip(prompts, outputs, strict=True) for _ in outs]
    flat = [o for outs in outputs for o in outs]
    grade = [-r for r in BUILTIN_REWARDS["readability"](flat_prompts, flat)]
    profanity = [-r for r in BUILTIN_REWARDS["profanity"](flat_prompts, flat)]
    return {
        "user_score": sum(user_score(p, o) for p, o in zip(flat_prompts, flat, strict=True)) / len(flat),
        "fk_grade": sum(grade) / len(grade),
        "profanity": sum(profanity) / len(profanity),
        "words": sum(len(o.split()) for o in flat) / len(flat),
        "samples": [{"prompt": p, "response": o} for p, o in zip(flat_prompts[:4], flat[:4], strict=True)],
    }


def _final_eval_metrics(run_dir: Path) -> dict[str, float]:
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval/rewards/accuracies" in r]
    return rows[-1] if rows else {}


def format_table(results: dict[str, dict]) -> str:
    header = ("| model | held-out pref. accuracy | held-out margin | sim-user score (gen) ↑ "
              "| FK grade (gen) ↓ | profanity (gen) ↓ | words (gen) |")
    lines = [header, "|" + "---|" * 7]
    for name, r in results.items():
        acc = f"{r['accuracy']:.3f}" if r.get("accuracy") is not None else "n/a"
        margin = f"{r['margin']:.3f}" if r.get("margin") is not None else "n/a"
        lines.append(f"| {name} | {acc} | {margin} | {r['user_score']:.3f} | {r['fk_grade']:.2f} "
                     f"| {r['profanity']:.3f} | {r['words']:.1f} |")
    return "\n".join(lines)


def run_demo(output_dir: str = "runs/demo", steps: int | None = None, quick: bool = False, seed: int = 0) -> dict:
    from upo.trainer import train

    start = time.time()
    out = Path(output_dir)
    n_train, n_eval = (12, 6) if quick else (len(TRAIN_PROMPTS), len(EVAL_PROMPTS))
    if quick and steps is None:
        steps = 3

    _stage("1/4 embedded model: SmolLM2-135M-Instruct")
    model_dir = embedded_model_dir()
    print(model_dir)

    _stage("2/4 preference data: sampled responses, labelled by the simulated user")
    train_path, eval_path = _make_data(model_dir, out / "data", n_train, n_eval, seed)
    eval_prompts = [r.prompt[-1]["content"] for r in load_records(str(eval_path)).records]

    results: dict[str, dict] = {}
    _stage("3/4 training DPO (preferences only) and UPO (preferences + readability), LoRA, bf16")
    for method in ("dpo", "upo"):
        cfg = _config(method, train_path, eval_path, out, steps, seed)
        final = out / method / "final"
        if final.exists():  # finished in an earlier, interrupted demo
            print(f"{method}: reusing {final}")
        else:
            t0 = time.time()
            final = train(cfg)
            print(f"{method}: trained in {time.time() - t0:.0f} s -> {final}")
        metrics = _final_eval_metrics(out / method)
        results[method] = {
            "final": final,
            "accuracy": metrics.get("eval/rewards/accuracies"),
            "margin": metrics.get("eval/rewards/margins"),
        }

    _stage("4/4 fresh generations on held-out prompts")
    table_rows: dict[str, dict] = {"base (SmolLM2)": {"final": model_dir, "accuracy": None, "margin": None}}
    table_rows.update(results)
    for name, row in table_rows.items():
        row.update(_evaluate_generations(Path(row["final"]), eval_prompts, seed))
        print(f"{name}: generated and scored")

    table = format_table(table_rows)
    elapsed = time.time() - start
    print("\n" + table)
    print(f"\nheld-out pairs: {len(eval_prompts)}; generations: 2 per held-out prompt; wall time {elapsed:.0f} s")
    summary = {name: {k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()} for name, r in table_rows.items()}
    (out / "demo_results.json").write_text(json.dumps({"results": summary, "wall_time_s": elapsed}, indent=2))
    (out / "demo_results.md").write_text(table + "\n")
    return summary
