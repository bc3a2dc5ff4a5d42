"""Auxiliary rewards r_k(x, y): designer objectives scored offline from the dataset text.

Every reward is a `RewardFn`, `(prompts, completions) -> one float per completion`, named in
the config as a built-in (see `BUILTIN_REWARDS`: readability, reading_ease, profanity, safety,
toxicity_*, sentiment, relevance, length, length_words, length_tokens) or as
`package.module:function`. `score_texts` computes raw scores once (cached in a `ScoreCache`);
`RewardStandardizer` turns them into r_a = sum_k w_k * standardized r_k with statistics from
the training set.
"""

from upo.rewards.builtin import (
    BUILTIN_REWARDS,
    BUILTIN_VERSIONS,
    RewardFn,
    length,
    length_words,
    profanity,
    readability,
    reading_ease,
    sentiment,
)
from upo.rewards.cache import ScoreCache, default_cache_dir
from upo.rewards.minilm import length_tokens, relevance
from upo.rewards.resolve import resolve_reward, reward_version
from upo.rewards.scoring import RewardMixes, RewardStandardizer, score_texts
from upo.rewards.toxicity import TOXICITY_LABELS, safety, toxicity_scores, violation_rate

__all__ = [
    "BUILTIN_REWARDS",
    "BUILTIN_VERSIONS",
    "TOXICITY_LABELS",
    "RewardFn",
    "RewardMixes",
    "RewardStandardizer",
    "ScoreCache",
    "default_cache_dir",
    "length",
    "length_tokens",
    "length_words",
    "profanity",
    "readability",
    "reading_ease",
    "relevance",
    "resolve_reward",
    "reward_version",
    "safety",
    "score_texts",
    "sentiment",
    "toxicity_scores",
    "violation_rate",
]
