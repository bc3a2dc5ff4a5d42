"""Auxiliary rewards r_k(x, y): designer objectives scored offline from the dataset text.

Every reward is a `RewardFn`, `(prompts, completions) -> one float per completion`, named in
the config as a built-in (`readability`, `profanity`, `length`) or as `package.module:function`.
`score_texts` computes raw scores once (cached in a `ScoreCache`); `RewardStandardizer` turns
them into r_a = sum_k w_k * standardized r_k with statistics from the training set.
"""

from upo.rewards.builtin import BUILTIN_REWARDS, BUILTIN_VERSIONS, RewardFn, length, profanity, readability
from upo.rewards.cache import ScoreCache, default_cache_dir
from upo.rewards.resolve import resolve_reward, reward_version
from upo.rewards.scoring import RewardStandardizer, score_texts

__all__ = [
    "BUILTIN_REWARDS",
    "BUILTIN_VERSIONS",
    "RewardFn",
    "RewardStandardizer",
    "ScoreCache",
    "default_cache_dir",
    "length",
    "profanity",
    "readability",
    "resolve_reward",
    "reward_version",
    "score_texts",
]
