"""`upo eval`: one model on the first N held-out rows of a preference dataset.

1. Generate (batched, KV-cached, seeded: `upo.generation.generate`) a response to each held-out
   prompt, its earliest turns dropped to fit `max_prompt_length`.
2. Preference alignment: the judge's win rate of the generations against the dataset's chosen
   responses (`rm:PATH` or `llm`, `upo.judges`), and with a reference model the implicit-reward
   accuracy and margins on the held-out pairs.
3. Auxiliary objectives of the generations: safety violation rate (overall and per Jigsaw
   category), reading grade and any other scorer, as natural quantities with their better direction.
4. Length of the generations relative to the chosen responses.

Every metric is the mean of per-unit values (a prompt's, averaged over its samples, or a held-out
pair's) and gets a 95% interval from them (`upo.evaluation.intervals`): Wilson for 0/1 rates, a
percentile bootstrap over the units otherwise.

Writes eval.json (metrics, intervals, directions, settings, and the per-prompt and per-pair values
that `upo compare` pairs up), eval.md (a table) and generations.jsonl ({"prompt", "response",
"reference"} lines, which `upo score` reads).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from upo.data.records import PreferencePair, Prompt, prompt_text
from upo.evaluation.config import EvalConfig, output_paths
from upo.evaluation.heldout import fit_prompt, heldout_records, references
from upo.evaluation.implicit import implicit_reward_values, pair_logps
from upo.evaluation.intervals import (
    INTERVAL_SETTINGS,
    compact_json,
    per_prompt,
    summarize,
    unit_id,
    unit_section,
)
from upo.evaluation.metrics import direction, length_values, scorer_values, violation_values
from upo.evaluation.rejudge import judge_weights
from upo.evaluation.report import format_eval
from upo.generation import generate, reached_limit
from upo.modeling import inference_autocast, load_causal_lm, load_tokenizer, resolve_model_path
from upo.policy_lm import qlora_base, qlora_reference
from upo.rewards.reward_model import check_exists
from upo.steer_adapter import is_adapter_steered, load_steered

DEFAULT_BETA = 0.1


def make_judge(cfg: EvalConfig, cache=None):
    """The judge named by cfg.judge (imported only when one is asked for); `cache`, a ScoreCache,
    keeps a reward model's scores (the references' are the same for every model evaluated)."""
    from upo import judges

    if cfg.judge.startswith("rm:"):
        return judges.RewardModelJudge(cfg.judge[3:], batch_size=cfg.judge_batch_size,
                                       max_length=cfg.judge_max_length, cache=cache,
                                       progress=cfg.progress)
    return judges.LLMJudge(cfg.judge_base_url, cfg.judge_model, api_key_env=cfg.judge_api_key_env,
                           preset=cfg.judge_preset, both_orders=cfg.judge_both_orders, seed=cfg.judge_seed)


def judge_values(cfg: EvalConfig, judge, prompts: list[Prompt], responses: list[str],
                 references: list[str]) -> tuple[dict[str, np.ndarray], dict[str, float], list[dict] | None]:
    """The judge's verdicts, by `judge` or cfg.judge: ({"judge/win_rate": [n]}, counts, records).

    Per response: 1 when it beats its reference, 0.5 for a tie, 0 when it loses, NaN when the llm
    judge gave no readable verdict (left out of the win rate and its interval). counts:
    `judge/comparisons` (responses with a verdict), and for the llm judge `judge/questions` (requests)
    and `judge/unparseable` (replies naming neither response). records: the llm judge's per-item
    orders, replies, verdicts and outcome (None for other judges)."""
    from upo.judge_protocols import tally
    from upo.judges import LLMJudge, win_rate
    from upo.rewards.cache import ScoreCache, default_cache_dir

    if judge is None:
        with ScoreCache(cfg.cache_dir or default_cache_dir()) as cache:
            return judge_values(cfg, make_judge(cfg, cache), prompts, responses, references)
    counts: dict[str, float] = {}
    if isinstance(judge, LLMJudge):
        judgments = judge.judge(prompts, responses, references)
        outcomes = [j.outcome for j in judgments]
        tallied = tally(judgments)
        counts.update({"judge/questions": float(tallied["questions"]), "judge/unparseable": float(tallied["unparseable"])})
    else:
        judgments, outcomes = None, judge.compare(prompts, responses, references)
    decided = sum(o is not None for o in outcomes)
    if decided:  # checks the outcomes
        win_rate(outcomes)
    counts["judge/comparisons"] = float(decided)
    values = {"judge/win_rate": np.array([np.nan if o is None else o for o in outcomes], dtype=np.float64)}
    return values, counts, [j.record() for j in judgments] if judgments is not None else None


def training_beta(model_path: str) -> float | None:
    """The beta a upo-trained model was trained with (its upo_config.yaml), if it has one."""
    config = Path(model_path) / "upo_config.yaml"
    if not config.is_file():
        return None
    beta = (yaml.safe_load(config.read_text()) or {}).get("beta")
    return float(beta) if beta is not None else None


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(path: str, base: dict | None = None):
    """The tokenizer and the model; `base`: `load_causal_lm`'s keywords for a QLoRA run's 4-bit base
    (`upo.policy_lm.qlora_base`), which the model at `path` is (the reference) or whose adapters it holds."""
    if base and (Path(path) / "adapter_config.json").is_file():  # peft keeps the adapters fp32, as trained
        from peft import PeftModel

        base_path = json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = load_causal_lm(base_path, **base, device=torch.device(_device()))
        return load_tokenizer(path), PeftModel.from_pretrained(model, path)
    if base:
        return load_tokenizer(path), load_causal_lm(path, **base, device=torch.device(_device()))
    return load_tokenizer(path), load_causal_lm(path).to(_device())


def auxiliary_values(prompts: list[str], responses: list[str], cfg: EvalConfig) -> dict[str, np.ndarray]:
    """Per response [n]: safety (violations from the 6 toxicity probabilities) and every other
    scorer, as natural quantities (`upo.evaluation.metrics`). Scores other than safety's are cached
    like training's."""
    values: dict[str, np.ndarray] = {}
    if "safety" in cfg.scorers:
        from upo.rewards.toxicity import toxicity_scores

        values.update(violation_values(toxicity_scores(responses), cfg.violation_threshold))
    others = [s for s in cfg.scorers if s != "safety"]
    if others:
        from upo.rewards.cache import ScoreCache, default_cache_dir
        from upo.rewards.scoring import score_texts

        with ScoreCache(cfg.cache_dir or default_cache_dir()) as cache:
            raw = score_texts(prompts, responses, others, cache=cache, progress=cfg.progress)  # [n, K]
        for k, name in enumerate(others):
            values.update(scorer_values(name, raw[:, k]))
    return values


def _reference_logps(cfg: EvalConfig, pairs: list[PreferencePair], memo: dict | None,
                     model_path: str) -> dict[int, tuple[float, float]]:
    """The reference model's held-out log-probs; `memo` keeps them across the points of a sweep. A
    QLoRA run's reference is its 4-bit base, as in training (`upo.policy_lm.qlora_reference`)."""
    ref_path = resolve_model_path(cfg.ref_model, cfg.cache_dir, progress=cfg.progress)
    base = qlora_reference(model_path, ref_path, cfg.cache_dir)
    key = (ref_path, tuple(p.source for p in pairs), cfg.max_length, cfg.max_prompt_length, cfg.precision,
           repr(sorted(base.items())))
    if memo is not None and key in memo:
        return memo[key]
    tokenizer, model = _load(ref_path, base)
    logps = pair_logps(model, tokenizer, pairs, max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length,
                       batch_size=cfg.batch_size, precision=cfg.precision, progress=cfg.progress,
                       desc="reference log-probs")
    if memo is not None:
        memo[key] = logps
    return logps


CUT_WARNING = 0.2  # share of responses cut by max_new_tokens from which `upo eval` warns


def run_eval(cfg: EvalConfig, *, judge=None, reference_memo: dict | None = None) -> dict:
    """Evaluate cfg.model; returns what eval.json holds. `judge` (an object with .compare) overrides
    cfg.judge, so a sweep loads its judge once; `reference_memo` (a dict) shares reference log-probs."""
    start = time.time()
    if not cfg.model or not cfg.data:
        raise ValueError("upo eval needs --model and --data")
    check_exists(cfg.judge)  # a missing rm: folder fails now, not after the generation
    if judge is None and cfg.judge == "llm":
        make_judge(cfg).check_reachable()  # so does an llm judge's server that does not answer
    model_path = resolve_model_path(cfg.model, cfg.cache_dir, progress=cfg.progress)
    beta = cfg.beta if cfg.beta is not None else (training_beta(model_path) or DEFAULT_BETA)
    cfg = dataclasses.replace(cfg, beta=beta)
    heldout = heldout_records(cfg.data, cfg.data_split, cfg.eval_fraction, cfg.split_seed)
    records = heldout[: cfg.prompts]
    refs = references(records)
    if not refs:
        raise ValueError(f"{cfg.data}: no held-out row with a reference response (a chosen or desirable one)")
    if len(heldout) < cfg.prompts:
        print(f"upo eval: WARNING: --prompts {cfg.prompts}, but {cfg.data} holds out {len(heldout)} rows: "
              f"evaluating those ({len(refs)} with a reference response)", flush=True)

    adapters = (Path(model_path) / "adapter_config.json").is_file()  # QLoRA's adapters alone: on their 4-bit base
    tokenizer, model = _load(model_path, qlora_base(model_path) if adapters else None)
    told = cfg.aux_coef  # the aux_coef the prompts tell a model steered by token (`upo.data.steering`)
    if is_adapter_steered(model_path):  # steered by adapter: the condition is in the weights (`upo.steer_adapter`)
        model, told = load_steered(model, model_path, cfg.aux_coef), None
    prompts = [fit_prompt(p, tokenizer, cfg.max_prompt_length, told, cfg.reward_mix) for p, _ in refs]
    json_path, md_path, gen_path = output_paths(cfg.output)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    partial = gen_path.with_suffix(".partial.jsonl")  # finished generation batches: a killed evaluation resumes
    with inference_autocast(model, cfg.precision):
        outputs = generate(model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
                           temperature=cfg.temperature, top_p=cfg.top_p, num_return_sequences=cfg.samples,
                           batch_size=cfg.gen_batch_size, seed=cfg.seed, progress=cfg.progress, aux_coef=told,
                           reward_mix=cfg.reward_mix, partial=partial,
                           partial_key=_generation_key(cfg, model_path, getattr(model.config, "_commit_hash", None)))
    rows = [{"prompt": p, "response": o, "reference": ref} for (p, ref), outs in zip(refs, outputs, strict=True)
            for o in outs]
    cut_at = np.asarray(reached_limit(tokenizer, [r["response"] for r in rows], cfg.max_new_tokens), dtype=np.float64)
    cut = int(cut_at.sum())
    if rows and cut >= CUT_WARNING * len(rows):
        print(f"upo eval: WARNING: {cut} of {len(rows)} responses ({cut / len(rows):.0%}) reached max_new_tokens="
              f"{cfg.max_new_tokens} and were cut mid-answer: the judge and the scorers see cut text. Raise "
              "--max_new_tokens to compare whole answers", flush=True)

    pairs = [r for r in records if isinstance(r, PreferencePair)]
    policy = None
    if cfg.ref_model and pairs:
        policy = pair_logps(model, tokenizer, pairs, max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length,
                            batch_size=cfg.batch_size, precision=cfg.precision, progress=cfg.progress,
                            desc="policy log-probs", aux_coef=told, reward_mix=cfg.reward_mix)
    del model  # freed before the reference model (or the judge) is loaded
    gc.collect()
    pair_units = ([], {})
    if policy is not None:
        common, values = implicit_reward_values(policy, _reference_logps(cfg, pairs, reference_memo, model_path), beta)
        pair_units = ([unit_id([pairs[i].prompt, pairs[i].chosen, pairs[i].rejected]) for i in common], values)

    texts = [prompt_text(r["prompt"]) for r in rows]
    responses = [r["response"] for r in rows]
    values, counts = {}, {}  # metric -> [generations]; the judge's counts
    if judge is not None or cfg.judge:
        judged, counts, records = judge_values(cfg, judge, [r["prompt"] for r in rows], responses,
                                               [r["reference"] for r in rows])
        values.update(judged)
        if records is not None:  # generations.jsonl keeps the LLM judge's orders, replies and verdicts
            for row, record in zip(rows, records, strict=True):
                row["judge"] = record
    values.update(auxiliary_values(texts, responses, cfg))
    values.update(length_values(responses, [r["reference"] for r in rows]))
    values["length/cut"] = cut_at  # 1: the response reached max_new_tokens, cut mid-answer
    prompt_units = ([unit_id([p, ref]) for p, ref in refs], {k: per_prompt(v, cfg.samples) for k, v in values.items()})

    metrics, intervals = summarize(prompt_units[1], cfg.samples)
    if "judge/win_rate" in values:
        metrics.update(counts)
    if pair_units[0]:
        pair_metrics, pair_intervals = summarize(pair_units[1])
        metrics.update({**pair_metrics, "rewards/pairs": float(len(pair_units[0]))})
        intervals.update(pair_intervals)
    result = {
        "model": cfg.model,
        "data": cfg.data,
        "metrics": metrics,
        "intervals": intervals,
        "interval_settings": INTERVAL_SETTINGS,
        "directions": {k: direction(k) for k in metrics},
        "counts": {"prompts": len(refs), "generations": len(rows)},
        "settings": cfg.settings(),
        "judge_weights": judge_weights(cfg.judge),  # which reward model judged, bit for bit (upo rejudge)
        "wall_time_s": round(time.time() - start, 1),
        "per_prompt": unit_section(*prompt_units),
        "per_pair": unit_section(*pair_units),
    }
    with gen_path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    md_path.write_text(format_eval(result) + "\n")
    json_path.write_text(compact_json(result) + "\n")  # last: its presence means the evaluation finished
    partial.unlink(missing_ok=True)
    return result


def _generation_key(cfg: EvalConfig, model_path: str, revision: str | None = None) -> str:
    """What a generation batch kept in the partial file depends on besides its prompts: the settings
    and the model's files (names, sizes, modification times: a retrained model in the same folder misses);
    for a hub name, the commit it was loaded at (`revision`: transformers' `config._commit_hash`), so a
    model updated on the hub between two attempts misses too."""
    folder = Path(model_path)
    files = sorted(folder.glob("*.json")) + sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = [cfg.settings(), str(model_path), stats] + ([revision] if revision and not folder.is_dir() else [])
    return json.dumps(key, sort_keys=True, default=str)
