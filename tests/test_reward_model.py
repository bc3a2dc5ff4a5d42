"""`rm:PATH`: a sequence-classification model as an auxiliary reward."""

from __future__ import annotations

import pytest
from helpers import save_tiny_reward_model

from upo.rewards.cache import ScoreCache
from upo.rewards.resolve import resolve_reward, reward_version
from upo.rewards.scoring import score_texts

PROMPTS = ["Tell me about tea.", "Tell me about snow.", "Hi?"]
RESPONSES = ["Tea is a drink made from leaves.", "No.", "Hello there, how can I help you today?"]


def test_reward_model_scores_each_response(tiny_tokenizer, tmp_path):
    save_tiny_reward_model(tiny_tokenizer, tmp_path / "rm")
    fn = resolve_reward(f"rm:{tmp_path / 'rm'}")
    scores = fn(PROMPTS, RESPONSES)
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    assert len(set(scores)) == 3  # different texts, different rewards
    assert fn(PROMPTS[:1], RESPONSES[:1]) == pytest.approx(scores[:1], abs=1e-5)  # batching does not change a score


def test_scores_come_from_the_model_head(tiny_tokenizer, tmp_path):
    """Negating the scoring head negates every reward: the scorer reads the model's logit."""
    save_tiny_reward_model(tiny_tokenizer, tmp_path / "a", sign=1.0)
    save_tiny_reward_model(tiny_tokenizer, tmp_path / "b", sign=-1.0)
    a = resolve_reward(f"rm:{tmp_path / 'a'}")(PROMPTS, RESPONSES)
    b = resolve_reward(f"rm:{tmp_path / 'b'}")(PROMPTS, RESPONSES)
    assert b == pytest.approx([-x for x in a], abs=1e-5)


def test_reward_model_is_cached_and_versioned(tiny_tokenizer, tmp_path):
    save_tiny_reward_model(tiny_tokenizer, tmp_path / "rm")
    name = f"rm:{tmp_path / 'rm'}"
    cache = ScoreCache(tmp_path / "cache")
    first = score_texts(PROMPTS, RESPONSES, [name], cache=cache, progress=False)
    version = reward_version(name, resolve_reward(name))
    assert cache.get_many(name, version, PROMPTS, RESPONSES) == pytest.approx(first[:, 0].tolist())
    save_tiny_reward_model(tiny_tokenizer, tmp_path / "rm", sign=-1.0)  # retrained model: new files, new version
    assert reward_version(name, resolve_reward(name)) != version


def test_missing_reward_model_path(tmp_path):
    with pytest.raises(ValueError, match="reward model path does not exist"):
        resolve_reward(f"rm:{tmp_path / 'nope'}")
