"""The scorers behind the newer built-in rewards: MiniLM relevance and token counts, VADER sentiment,
Flesch reading ease, word counts; every built-in through score_texts (toxicity: test_toxicity.py).

Tests that need a model shipped in a package skip, saying which, when it is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from upo.rewards import (
    BUILTIN_REWARDS,
    BUILTIN_VERSIONS,
    TOXICITY_LABELS,
    length_tokens,
    length_words,
    minilm,
    reading_ease,
    relevance,
    reward_version,
    score_texts,
    sentiment,
)
from upo.rewards.builtin import EASE_MAX, EASE_MIN

SIMPLE = "The cat sat on the mat. It was happy."
ACADEMIC = (
    "Researchers evaluated the relationship between economic development and educational "
    "attainment across several regions."
)
# ---- every built-in --------------------------------------------------------------------------


def test_builtin_names_and_versions():
    assert set(BUILTIN_REWARDS) == set(BUILTIN_VERSIONS)
    assert {f"toxicity_{label}" for label in TOXICITY_LABELS} <= set(BUILTIN_REWARDS)
    assert {"reading_ease", "sentiment", "relevance", "length_words", "length_tokens", "safety"} <= set(
        BUILTIN_REWARDS
    )
    for name, fn in BUILTIN_REWARDS.items():
        assert reward_version(name, fn) == BUILTIN_VERSIONS[name]
        assert fn.__doc__, name


def test_every_builtin_scores_through_score_texts(toxicity_model, minilm_model):
    """One finite float per completion, empty texts included, through the checked path."""
    prompts = ["What is the capital of France?", "Say something nice.", "Hi", ""]
    completions = ["The capital of France is Paris.", "You are wonderful!", "", "   "]
    raw = score_texts(prompts, completions, list(BUILTIN_REWARDS), progress=False)
    assert raw.shape == (4, len(BUILTIN_REWARDS)) and np.isfinite(raw).all()
    for name, fn in BUILTIN_REWARDS.items():
        assert fn([], []) == [], name


# ---- reading ease, sentiment, word counts ----------------------------------------------------


def test_reading_ease_prefers_simple_text():
    simple, academic = reading_ease(["", ""], [SIMPLE, ACADEMIC])
    assert simple > 90 and academic < 10  # Flesch: 90-100 very easy, below 30 graduate level
    assert EASE_MIN < academic < simple <= EASE_MAX


def test_reading_ease_clamp_and_empty_text():
    # 14 syllables in one word: 206.835 - 1.015 - 84.6 * 14 = -978.6, clamped
    assert reading_ease([""], ["Supercalifragilisticexpialidocious"]) == [EASE_MIN]
    assert reading_ease(["", ""], ["", " \n"]) == [0.0, 0.0]
    # textstat counts no syllable in "Hmm": 3 syllables for 4 words gives 139.3, clamped
    assert reading_ease([""], ["Hmm, let me see."]) == [EASE_MAX]


def test_sentiment_vader_compound():
    happy, sad, neutral = sentiment(
        ["", "", ""],
        ["I love this, it is wonderful and great!", "This is terrible, I hate it.", "The box is red."],
    )
    assert happy > 0.8 and sad < -0.7 and neutral == 0.0


def test_length_words_is_a_positive_count():
    assert length_words(["", "", ""], ["one two three", "", "  a\tb\n c  "]) == [3.0, 0.0, 3.0]


# ---- MiniLM: length_tokens, relevance --------------------------------------------------------


def test_length_tokens_counts_wordpieces(minilm_model):
    short, empty, long_word = length_tokens(["", "", ""], ["Hello world", "", "unbelievably"])
    assert (short, empty) == (2.0, 0.0)
    assert long_word > 1  # split into subwords: more tokens than words
    many = " ".join(["word"] * 1000)
    assert length_tokens([""], [many]) == [1000.0]  # not truncated at MAX_TOKENS


def test_relevance_prefers_the_on_topic_answer(minilm_model):
    prompt = "How do I bake bread at home?"
    on_topic = "Mix flour, water, salt and yeast, knead the dough, let it rise, then bake it in a hot oven."
    off_topic = "The stock market fell sharply today after the central bank raised interest rates."
    scores = relevance([prompt, prompt], [on_topic, off_topic])
    assert scores[0] > 0.4 > 0.1 > scores[1]
    assert relevance(["same text"], ["same text"]) == [pytest.approx(1.0, abs=1e-5)]
    assert all(-1.0 <= s <= 1.0 for s in scores)


def test_relevance_batching_does_not_change_scores(minilm_model):
    """Sorting by length and padding within a batch leave each score as if scored alone
    (to float32 rounding in fp32; bf16 rounding depends a little on the batch's shapes)."""
    atol = 2e-3 if minilm.PRECISION == "bf16" else 1e-5
    prompts = ["How do I bake bread?", "What is 2 + 2?", "How do I bake bread?", "Tell me a long story " * 20]
    completions = [
        "Knead and bake.",
        "Four.",
        "Use a hot oven and good flour, and be patient.",
        "Once upon a time.",
    ]
    together = relevance(prompts, completions)
    alone = [relevance([p], [c])[0] for p, c in zip(prompts, completions, strict=True)]
    np.testing.assert_allclose(together, alone, atol=atol)
    texts = ["a b", "a much longer text with many words"]
    for precision in ("fp32", minilm.PRECISION):
        np.testing.assert_allclose(
            minilm.embed(texts, batch_size=1, precision=precision),
            minilm.embed(texts, batch_size=2, precision=precision),
            atol=1e-5 if precision == "fp32" else atol,
        )


def test_embeddings_match_sentence_transformers(minilm_model):
    """Our mean pooling + normalization is what sentence-transformers computes for this model
    (truncating at our MAX_TOKENS rather than its 256)."""
    st = pytest.importorskip("sentence_transformers")
    texts = ["The cat sat on the mat.", "Mix flour, water and yeast.", "word " * 300]
    model = st.SentenceTransformer(str(minilm.model_dir()), device="cpu")
    model.max_seq_length = minilm.MAX_TOKENS
    reference = model.encode(texts)
    np.testing.assert_allclose(minilm.embed(texts, precision="fp32"), reference, atol=1e-5)


def test_bf16_embeddings_stay_close_to_fp32(minilm_model):
    """bf16 autocast (the default where the CPU has native bf16) barely moves relevance."""
    prompts = ["How do I bake bread?", "What is the capital of France?", "Tell me a joke " * 40]
    completions = ["Knead the dough and bake it.", "Paris is the capital.", "Why did the chicken cross?"]
    cosines = {
        precision: (
            minilm.embed(prompts, keep="end", precision=precision)
            * minilm.embed(completions, precision=precision)
        ).sum(axis=1)
        for precision in ("fp32", "bf16")
    }
    np.testing.assert_allclose(cosines["bf16"], cosines["fp32"], atol=0.01)
    assert relevance(prompts, completions) == pytest.approx(cosines[minilm.PRECISION].tolist(), abs=1e-5)
