"""`upo eval`: one model on the first N held-out rows of a preference dataset.

1. Generate (batched, KV-cached, seeded: `upo.generation.generate`) a response to each held-out
   prompt, its earliest turns dropped to fit `max_prompt_length`.
2. Preference alignment: the judge's win rate of the generations against the dataset's chosen
   responses (`rm:PATH` or `llm`, `upo.judges`), and with a reference model the implicit-reward
   accuracy and margins on the held-out pairs.
3. Auxiliary objectives of the generations: safety violation rate (overall and per Jigsaw
   category), reading grade and any other scorer, as natural quantities with their better direction.
4. Length of the generations relative to the chosen responses.

Writes eval.json (metrics, directions, settings), eval.md (a table) and generations.jsonl
({"prompt", "response", "reference"} lines, which `upo score` reads).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import time
from pathlib import Path

import torch
import yaml

from upo.data.records import PreferencePair, Prompt, prompt_text
from upo.evaluation.config import EvalConfig
from upo.evaluation.heldout import fit_prompt, heldout_records, references
from upo.evaluation.implicit import autocast, implicit_reward_metrics, pair_logps
from upo.evaluation.metrics import direction, length_metrics, scorer_metrics, violation_metrics
from upo.evaluation.report import format_eval
from upo.generation import generate
from upo.modeling import load_causal_lm, load_tokenizer, resolve_model_path

DEFAULT_BETA = 0.1


def output_paths(output: str) -> tuple[Path, Path, Path]:
    """(eval.json, eval.md, generations.jsonl): in the folder `output`, or beside `output` when it
    names a .json file (X.json, X.md, X.generations.jsonl)."""
    path = Path(output)
    if path.suffix == ".json":
        return path, path.with_suffix(".md"), path.with_name(path.stem + ".generations.jsonl")
    return path / "eval.json", path / "eval.md", path / "generations.jsonl"


def make_judge(cfg: EvalConfig, cache=None):
    """The judge named by cfg.judge (imported only when one is asked for); `cache`, a ScoreCache,
    keeps a reward model's scores (the references' are the same for every model evaluated)."""
    from upo import judges

    if cfg.judge.startswith("rm:"):
        return judges.RewardModelJudge(cfg.judge[3:], batch_size=cfg.judge_batch_size,
                                       max_length=cfg.judge_max_length, cache=cache)
    return judges.LLMJudge(cfg.judge_base_url, cfg.judge_model, api_key_env=cfg.judge_api_key_env,
                           preset=cfg.judge_preset, both_orders=cfg.judge_both_orders, seed=cfg.judge_seed)


def judge_metrics(cfg: EvalConfig, judge, prompts: list[Prompt], responses: list[str],
                  references: list[str]) -> tuple[dict[str, float], list[dict] | None]:
    """Win rate of the responses against the references (ties count half, items without a verdict
    left out), by `judge` or cfg.judge, and the LLM judge's per-item records (orders, replies,
    verdicts, outcome; None for other judges). `judge/comparisons` counts the items with a verdict;
    the LLM judge adds `judge/questions` asked and `judge/unparseable` replies naming neither response."""
    from upo.judge_protocols import tally
    from upo.judges import LLMJudge, win_rate
    from upo.rewards.cache import ScoreCache, default_cache_dir

    if judge is None:
        with ScoreCache(cfg.cache_dir or default_cache_dir()) as cache:
            return judge_metrics(cfg, make_judge(cfg, cache), prompts, responses, references)
    metrics: dict[str, float] = {}
    if isinstance(judge, LLMJudge):
        judgments = judge.judge(prompts, responses, references)
        outcomes = [j.outcome for j in judgments]
        counts = tally(judgments)
        metrics.update({"judge/questions": float(counts["questions"]), "judge/unparseable": float(counts["unparseable"])})
    else:
        judgments, outcomes = None, judge.compare(prompts, responses, references)
    decided = sum(o is not None for o in outcomes)
    if decided:  # with no verdict at all there is no win rate
        metrics["judge/win_rate"] = win_rate(outcomes)
    metrics["judge/comparisons"] = float(decided)
    return metrics, [j.record() for j in judgments] if judgments is not None else None


def training_beta(model_path: str) -> float | None:
    """The beta a upo-trained model was trained with (its upo_config.yaml), if it has one."""
    config = Path(model_path) / "upo_config.yaml"
    if not config.is_file():
        return None
    beta = (yaml.safe_load(config.read_text()) or {}).get("beta")
    return float(beta) if beta is not None else None


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(path: str):
    return load_tokenizer(path), load_causal_lm(path).to(_device())


def auxiliary_metrics(prompts: list[str], responses: list[str], cfg: EvalConfig) -> dict[str, float]:
    """Safety (violation rates from the 6 toxicity probabilities) and every other scorer's mean, as
    natural quantities (`upo.evaluation.metrics`). Scores other than safety's are cached like training's."""
    metrics: dict[str, float] = {}
    if "safety" in cfg.scorers:
        from upo.rewards.toxicity import toxicity_scores

        metrics.update(violation_metrics(toxicity_scores(responses), cfg.violation_threshold))
    others = [s for s in cfg.scorers if s != "safety"]
    if others:
        from upo.rewards.cache import ScoreCache, default_cache_dir
        from upo.rewards.scoring import score_texts

        with ScoreCache(cfg.cache_dir or default_cache_dir()) as cache:
            raw = score_texts(prompts, responses, others, cache=cache, progress=cfg.progress)  # [n, K]
        for k, name in enumerate(others):
            metrics.update(scorer_metrics(name, raw[:, k]))
    return metrics


def _reference_logps(cfg: EvalConfig, pairs: list[PreferencePair], memo: dict | None) -> dict[int, tuple[float, float]]:
    """The reference model's held-out log-probs; `memo` keeps them across the points of a sweep."""
    ref_path = resolve_model_path(cfg.ref_model, cfg.cache_dir, progress=cfg.progress)
    key = (ref_path, tuple(p.source for p in pairs), cfg.max_length, cfg.max_prompt_length, cfg.precision)
    if memo is not None and key in memo:
        return memo[key]
    tokenizer, model = _load(ref_path)
    logps = pair_logps(model, tokenizer, pairs, max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length,
                       batch_size=cfg.batch_size, precision=cfg.precision, progress=cfg.progress,
                       desc="reference log-probs")
    if memo is not None:
        memo[key] = logps
    return logps


def run_eval(cfg: EvalConfig, *, judge=None, reference_memo: dict | None = None) -> dict:
    """Evaluate cfg.model; returns what eval.json holds. `judge` (an object with .compare) overrides
    cfg.judge, so a sweep loads its judge once; `reference_memo` (a dict) shares reference log-probs."""
    start = time.time()
    if not cfg.model or not cfg.data:
        raise ValueError("upo eval needs --model and --data")
    model_path = resolve_model_path(cfg.model, cfg.cache_dir, progress=cfg.progress)
    beta = cfg.beta if cfg.beta is not None else (training_beta(model_path) or DEFAULT_BETA)
    cfg = dataclasses.replace(cfg, beta=beta)
    records = heldout_records(cfg.data, cfg.data_split, cfg.eval_fraction, cfg.split_seed)[: cfg.prompts]
    refs = references(records)
    if not refs:
        raise ValueError(f"{cfg.data}: no held-out row with a reference response (a chosen or desirable one)")

    tokenizer, model = _load(model_path)
    prompts = [fit_prompt(p, tokenizer, cfg.max_prompt_length) for p, _ in refs]
    with autocast(model, cfg.precision):
        outputs = generate(model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
                           temperature=cfg.temperature, top_p=cfg.top_p, num_return_sequences=cfg.samples,
                           batch_size=cfg.gen_batch_size, seed=cfg.seed, progress=cfg.progress)
    rows = [{"prompt": p, "response": o, "reference": ref} for (p, ref), outs in zip(refs, outputs, strict=True)
            for o in outs]

    metrics: dict[str, float] = {}
    pairs = [r for r in records if isinstance(r, PreferencePair)]
    policy = None
    if cfg.ref_model and pairs:
        policy = pair_logps(model, tokenizer, pairs, max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length,
                            batch_size=cfg.batch_size, precision=cfg.precision, progress=cfg.progress,
                            desc="policy log-probs")
    del model  # freed before the reference model (or the judge) is loaded
    gc.collect()
    if policy is not None:
        metrics.update(implicit_reward_metrics(policy, _reference_logps(cfg, pairs, reference_memo), beta))

    texts = [prompt_text(r["prompt"]) for r in rows]
    responses = [r["response"] for r in rows]
    if judge is not None or cfg.judge:
        judged, records = judge_metrics(cfg, judge, [r["prompt"] for r in rows], responses,
                                        [r["reference"] for r in rows])
        metrics.update(judged)
        if records is not None:  # generations.jsonl keeps the LLM judge's orders, replies and verdicts
            for row, record in zip(rows, records, strict=True):
                row["judge"] = record
    metrics.update(auxiliary_metrics(texts, responses, cfg))
    metrics.update(length_metrics(responses, [r["reference"] for r in rows]))

    result = {
        "model": cfg.model,
        "data": cfg.data,
        "metrics": metrics,
        "directions": {k: direction(k) for k in metrics},
        "counts": {"prompts": len(refs), "generations": len(rows)},
        "settings": cfg.settings(),
        "wall_time_s": round(time.time() - start, 1),
    }
    json_path, md_path, gen_path = output_paths(cfg.output)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    with gen_path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    md_path.write_text(format_eval(result) + "\n")
    json_path.write_text(json.dumps(result, indent=2) + "\n")  # last: its presence means the evaluation finished
    return result
