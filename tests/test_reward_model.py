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


def test_scores_are_batched_by_length_and_returned_in_input_order(tiny_tokenizer, tmp_path, monkeypatch):
    """Texts are scored shortest first in batches of similar lengths; each score is its text's alone."""
    from upo.rewards import reward_model

    save_tiny_reward_model(tiny_tokenizer, tmp_path / "rm")
    texts = ["a b c d e f g h i j k l", "a", "a b c d e f", "a b", "a b c d e f g h i j k l m n o p q", "a b c"]
    score = reward_model.reward_model_scorer(str(tmp_path / "rm"), batch_size=2)
    alone = [score(["Hi?"], [t])[0] for t in texts]
    widths = []
    tokenizer, model = reward_model._load(str(tmp_path / "rm"))
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda **kw: widths.append(kw["input_ids"].shape[1]) or original(**kw))
    assert score(["Hi?"] * len(texts), texts) == pytest.approx(alone, abs=1e-5)
    assert widths == sorted(widths) and len(widths) == 3  # 3 batches of 2, narrowest first
    lengths = sorted(len(tokenizer(reward_model.render(tokenizer, "Hi?", t))["input_ids"]) for t in texts)
    assert widths == [max(lengths[i : i + 2]) for i in range(0, 6, 2)]  # each batch pads to its own longest
