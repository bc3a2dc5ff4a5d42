"""From a config to tokenized training and evaluation items, auxiliary rewards attached.

Steps: load records -> shuffle (seeded) -> split off held-out pairs -> paired -> unpaired when the
method needs it -> score auxiliary rewards once (cached on disk) and standardize them with the
training set's statistics -> tokenize with explicit truncation. Every count that a user might
wonder about (skipped rows, truncated and dropped examples) is reported.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from upo.config import UPOConfig
from upo.data.checks import special_token_problem
from upo.data.control import control_token_ids
from upo.data.readers import load_records
from upo.data.records import DataError, PreferencePair, UnpairedExample, prompt_text, to_unpaired
from upo.data.relabel import relabel_pairs
from upo.data.split import drop_training_rows, split_heldout
from upo.data.steering import condition_length
from upo.data.tokenize import TruncationStats, tokenize_pairs, tokenize_unpaired
from upo.methods import METHODS, batch_format


@dataclass
class PreparedData:
    train_items: list[dict]
    eval_items: list[dict]  # paired when the source is paired (for reward accuracies), else unpaired
    train_format: str  # "paired" | "unpaired"
    eval_format: str
    standardizer: object | None = None  # upo.rewards.scoring.RewardStandardizer (RewardMixes with reward mixes)
    report: list[str] = field(default_factory=list)  # human lines: counts of skips, truncation, drops


def _is_paired(records) -> bool:
    return bool(records) and isinstance(records[0], PreferencePair)


def _completions(records) -> tuple[list[str], list[str], list[str]]:
    """(prompts, completions, sources) of every response: pairs give chosen then rejected per pair;
    a source names the row and field, e.g. "data.jsonl:17 field 'rejected'" (for scorer errors)."""
    prompts, completions, sources = [], [], []
    for r in records:
        if isinstance(r, PreferencePair):
            p = prompt_text(r.prompt)
            prompts += [p, p]
            completions += [r.chosen, r.rejected]
            sources += [f"{r.source} field 'chosen'", f"{r.source} field 'rejected'"]
        else:
            prompts.append(prompt_text(r.prompt))
            completions.append(r.completion)
            sources.append(f"{r.source} field 'completion'")
    return prompts, completions, sources


def _raw_scores(records, names: list[str], cfg: UPOConfig, progress: bool) -> np.ndarray:
    """Raw scores [n_responses, K] of every response, column k = reward names[k] (cached on disk)."""
    from upo.rewards.cache import ScoreCache, default_cache_dir
    from upo.rewards.scoring import score_texts

    prompts, completions, sources = _completions(records)
    with ScoreCache(cfg.cache_dir or default_cache_dir()) as cache:
        return score_texts(prompts, completions, names, cache=cache, progress=progress, sources=sources)


def score_records(records, cfg: UPOConfig, standardizer=None, progress: bool = True):
    """Return (r_a per response [n_responses], standardizer fitted on these records if none given)."""
    from upo.rewards.scoring import RewardStandardizer

    names = list(cfg.rewards)
    raw = _raw_scores(records, names, cfg, progress)
    if standardizer is None:
        standardizer = RewardStandardizer.fit(
            raw, names, [cfg.rewards[n] for n in names], standardize=cfg.standardize_rewards
        )
    return standardizer.combine(raw), standardizer


def score_mixes(records, cfg: UPOConfig, mixes=None, progress: bool = True):
    """Return ({mix: r_a per response [n_responses]}, `RewardMixes` fitted on these records if none
    given) for cfg.steer_reward_mixes: each scorer of their union runs once."""
    from upo.rewards.scoring import RewardMixes

    raw = _raw_scores(records, RewardMixes.union(cfg.steer_reward_mixes), cfg, progress)
    if mixes is None:
        mixes = RewardMixes.fit(raw, cfg.steer_reward_mixes, standardize=cfg.standardize_rewards)
    return mixes.combine(raw), mixes


def _item_rewards(paired: bool, i: int, r_a: np.ndarray) -> dict[str, float]:
    """Record i's rewards as an item carries them; responses were scored in `_completions` order."""
    if paired:
        return {"chosen_reward": float(r_a[2 * i]), "rejected_reward": float(r_a[2 * i + 1])}
    return {"reward": float(r_a[i])}


def _attach_rewards(items: list[dict], records, r_a: np.ndarray | dict[str, np.ndarray]) -> None:
    """Items keep `index` into `records`. One r_a: its rewards on each item; {mix: r_a} (reward mixes):
    each item's `mix_rewards` = {mix: its rewards}, which its condition picks (upo.data.steering)."""
    paired = _is_paired(records)
    for item in items:
        if isinstance(r_a, dict):
            item["mix_rewards"] = {mix: _item_rewards(paired, item["index"], r) for mix, r in r_a.items()}
        else:
            item.update(_item_rewards(paired, item["index"], r_a))


def _tokenize(records, tokenizer, cfg: UPOConfig) -> tuple[list[dict], TruncationStats]:
    # CSFT: the trainer added the control tokens to the tokenizer; prompts end with one.
    control = control_token_ids(tokenizer) if METHODS[cfg.method].control_tokens else None
    # Runs steered by token: the condition tokens are appended per epoch (upo.data.steering); leave room
    # for them. Steered by adapter, the prompts are left as they are (upo.steer_adapter).
    room = condition_length(cfg.steer_aux_coefs, cfg.steer_reward_mixes) if cfg.steer_by == "token" else 0
    lengths = {"max_length": cfg.max_length - room, "max_prompt_length": cfg.max_prompt_length - room,
               "control": control}
    if _is_paired(records):
        return tokenize_pairs(records, tokenizer, **lengths)
    return tokenize_unpaired(records, tokenizer, seed=cfg.seed, **lengths)


def _relabel(records, cfg: UPOConfig, report: list[str], progress: bool):
    if not _is_paired(records) or not cfg.rewards:
        raise ValueError("relabel needs paired data and auxiliary rewards (e.g. --rewards safety=0.95,readability=0.05)")
    r_a, _ = score_records(records, cfg, progress=progress)
    records, swapped = relabel_pairs(records, r_a, cfg.relabel_margin)
    report.append(f"relabelled {swapped} of {len(records)} pairs by the compound reward (margin {cfg.relabel_margin})")
    return records


def _load(source: str, split: str, report: list[str]) -> list[PreferencePair] | list[UnpairedExample]:
    result = load_records(source, split)
    for reason, rows in result.skipped_rows.items():
        lines = [r.source.removeprefix(f"{source}:") for r in rows]
        shown = ", ".join(lines[:20]) + (f" and {len(lines) - 20} more" if len(lines) > 20 else "")
        report.append(f"{source}: skipped {len(rows)} rows ({reason}): {shown} (upo validate names each)")
    return result.records


def prepare_data(cfg: UPOConfig, tokenizer, progress: bool = True) -> PreparedData:
    if not cfg.dataset:
        raise ValueError("no dataset given: set `dataset:` in the config or pass --dataset PATH")
    method = METHODS[cfg.method]
    report: list[str] = []
    records = _load(cfg.dataset, cfg.dataset_split, report)
    if cfg.eval_dataset:
        random.Random(cfg.heldout_seed).shuffle(records)
        eval_split = cfg.eval_split or cfg.dataset_split
        eval_records = drop_training_rows(_load(cfg.eval_dataset, eval_split, report), records, report)
    else:
        eval_records, records = split_heldout(records, cfg.eval_fraction, cfg.heldout_seed)
    if cfg.max_examples is not None:
        records = records[: cfg.max_examples]
    if not records:
        raise ValueError(f"{cfg.dataset}: no training examples left after splitting off evaluation data")
    for record in [*records, *eval_records]:  # the tokenizer's own control tokens, e.g. Llama's </s>
        problem = special_token_problem(record, tokenizer)
        if problem is not None:
            raise DataError(f"{record.source}: field '{problem[0]}': {problem[1]}")

    if eval_records and not cfg.heldout_eval:  # held out, never trained on, but not evaluated here
        report.append(f"held out: {len(eval_records)} examples, not evaluated during training (heldout_eval: false)")
        eval_records = []
    if cfg.relabel:
        records = _relabel(records, cfg, report, progress)

    weighted = [k for k, on in (("ld_alpha", cfg.ld_alpha is not None), ("wpo_weighting", cfg.wpo_weighting)) if on]
    if weighted and eval_records and not _is_paired(eval_records):  # the forward would pair unrelated rows
        raise ValueError(f"{' and '.join(weighted)} weigh pairs, and the held-out data of {cfg.eval_dataset} are "
                         "unpaired: give paired held-out data, or set heldout_eval: false")
    train_format = batch_format(method, cfg.pref_loss)
    if train_format == "paired" and not _is_paired(records):
        raise ValueError(f"method {cfg.method!r} needs paired data (prompt, chosen, rejected); {cfg.dataset} is unpaired")
    if train_format == "unpaired" and _is_paired(records):
        records = to_unpaired(records)
        report.append(f"paired data turned into {len(records)} unpaired examples (chosen desirable, rejected undesirable)")

    standardizer = None
    train_rewards = eval_rewards = None
    if cfg.steer_reward_mixes:  # steered over reward mixes (UPOConfig: in place of rewards)
        train_rewards, standardizer = score_mixes(records, cfg, progress=progress)
        if eval_records:
            eval_rewards, _ = score_mixes(eval_records, cfg, standardizer, progress=progress)
    elif method.uses_rewards or (method.accepts_rewards and cfg.rewards):
        if not cfg.rewards:
            raise ValueError(
                f"method {cfg.method!r} optimizes auxiliary rewards but none are configured; "
                "set e.g. `rewards: {readability: 0.05, profanity: 0.95}` or --rewards readability=1"
            )
        train_rewards, standardizer = score_records(records, cfg, progress=progress)
        if eval_records:
            eval_rewards, _ = score_records(eval_records, cfg, standardizer, progress=progress)

    train_items, stats = _tokenize(records, tokenizer, cfg)
    report.append(f"train: {stats.summary()}")
    eval_items: list[dict] = []
    if eval_records:
        eval_items, eval_stats = _tokenize(eval_records, tokenizer, cfg)
        report.append(f"eval: {eval_stats.summary()}")
    if not train_items:
        raise ValueError(f"{cfg.dataset}: every training example was dropped (longer than max_length={cfg.max_length})")
    if train_rewards is not None:
        _attach_rewards(train_items, records, train_rewards)
    if eval_rewards is not None:
        _attach_rewards(eval_items, eval_records, eval_rewards)
    return PreparedData(
        train_items=train_items,
        eval_items=eval_items,
        train_format=train_format,
        eval_format="paired" if _is_paired(eval_records) else "unpaired",
        standardizer=standardizer,
        report=report,
    )
