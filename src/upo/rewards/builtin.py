"""Built-in auxiliary rewards: readability, profanity, length.

Every reward shares one signature, `RewardFn`: `(prompts, completions) -> one float per
completion`, higher is better. The built-ins look at the completion only; the prompt is
part of the signature so that user rewards can condition on it.

Each built-in has a version string in `BUILTIN_VERSIONS` that goes into the score-cache key,
so a change of formula or of the scoring library's version invalidates cached scores.
Bump the `vN` part whenever a formula below changes.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from textstat.textstat import textstatistics

RewardFn = Callable[[list[str], list[str]], list[float]]

# Flesch-Kincaid grades are clamped to this range. The formula is unbounded: one long word
# ("Supercalifragilisticexpialidocious" -> grade 114.6) or a run-on text without sentence
# punctuation gives absurd grades that would dominate the reward's mean and std. Real
# responses sit well inside it (HH-RLHF responses: 1st-99th percentile about -3 to 17.5).
GRADE_MIN, GRADE_MAX = -5.0, 30.0

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


def profanity(prompts: list[str], completions: list[str]) -> list[float]:
    """Minus the probability that each completion is profane (alt-profanity-check), in [-1, 0]."""
    if not completions:  # the classifier's vectorizer rejects an empty batch
        return []
    # Imported here: loading the scikit-learn model takes about a second, paid only when used.
    from profanity_check import predict_prob

    return [-float(p) for p in predict_prob(completions)]


def length(prompts: list[str], completions: list[str]) -> list[float]:
    """Minus the number of whitespace-separated words / 100: rewards conciseness.

    Give it a negative weight to reward longer responses instead.
    """
    return [-len(text.split()) / 100 for text in completions]


BUILTIN_REWARDS: dict[str, RewardFn] = {
    "readability": readability,
    "profanity": profanity,
    "length": length,
}

BUILTIN_VERSIONS: dict[str, str] = {
    "readability": f"v1-fk-clamp[{GRADE_MIN:g},{GRADE_MAX:g}]-textstat-{_dist_version('textstat')}",
    "profanity": (
        f"v1-alt-profanity-check-{_dist_version('alt-profanity-check')}"
        f"-scikit-learn-{_dist_version('scikit-learn')}"
    ),
    "length": "v1-words/100",
}
