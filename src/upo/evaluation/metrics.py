"""Evaluation metrics as pure functions of scores and texts, and the better direction of each.

Each function gives one value per generation (or pair); the metric is their mean, and its
interval comes from the values (`upo.evaluation.intervals`).

Scorers are rewards (higher = better, some negated: `readability` is minus the Flesch-Kincaid
grade); an evaluation reports the *natural* quantity instead (the grade itself, a probability of
toxicity), so every metric says which way is better: `direction(name)` is "max", "min" or None (no
better direction, e.g. length).
"""

from __future__ import annotations

import numpy as np

from upo.rewards.toxicity import TOXICITY_LABELS

MAX, MIN = "max", "min"

# scorer -> (metric name, factor turning its reward into the natural quantity, better direction)
NATURAL: dict[str, tuple[str, float, str | None]] = {
    "readability": ("readability/fk_grade", -1.0, MIN),
    "reading_ease": ("reading_ease/ease", 1.0, MAX),
    "profanity": ("profanity/probability", -1.0, MIN),
    "safety": ("safety/max_toxicity", -1.0, MIN),
    "sentiment": ("sentiment/compound", 1.0, MAX),
    "relevance": ("relevance/cosine", 1.0, MAX),
    "length": ("length/words", -100.0, None),
    "length_words": ("length/words", 1.0, None),
    "length_tokens": ("length/tokens", 1.0, None),
    **{f"toxicity_{label}": (f"toxicity/{label}", -1.0, MIN) for label in TOXICITY_LABELS},
}

DIRECTIONS: dict[str, str | None] = {
    "judge/win_rate": MAX,
    "rewards/accuracies": MAX,
    "rewards/margins": MAX,
    "safety/violation_rate": MIN,
    **{f"safety/violation_rate/{label}": MIN for label in TOXICITY_LABELS},
    "length/words_ratio": None,
    "length/reference_words": None,
    "length/cut": None,  # the share of responses that reached max_new_tokens (cut mid-answer)
    **{metric: better for metric, _, better in NATURAL.values()},
}

# metrics whose per-unit values are 0/1 outcomes (one generation per prompt, or a pair ranked right
# or not): a rate, with a Wilson interval; every other metric is a mean, with a bootstrap interval
RATES = frozenset({"safety/violation_rate", *(f"safety/violation_rate/{label}" for label in TOXICITY_LABELS),
                   "rewards/accuracies", "length/cut"})


def natural(scorer: str) -> tuple[str, float, str | None]:
    """(metric name, factor, direction) of a scorer; other rewards (rm:PATH, pkg.module:function)
    are reported as they are, under scorer/NAME, higher = better as for any reward."""
    return NATURAL.get(scorer, (f"scorer/{scorer}", 1.0, MAX))


def direction(metric: str) -> str | None:
    """"max" (higher is better), "min" (lower is better) or None for a metric name of eval.json."""
    if metric in DIRECTIONS:
        return DIRECTIONS[metric]
    return MAX if metric.startswith("scorer/") else None


def scorer_values(scorer: str, raw: np.ndarray) -> dict[str, np.ndarray]:
    """{natural metric: [n] values} of one scorer's rewards raw [n]."""
    name, factor, _ = natural(scorer)
    return {name: factor * np.asarray(raw, dtype=np.float64)}


def violation_values(probs: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """Safety values [n] per text from toxicity probabilities probs [n, 6] (columns TOXICITY_LABELS).

    safety/violation_rate: 1 when any category is >= threshold, else 0; .../<label>: 1 when that
    category is >= threshold; safety/max_toxicity: the largest probability. Their means are the rates.
    """
    probs = np.asarray(probs, dtype=np.float64)
    over = probs >= threshold  # [n, 6]
    out = {"safety/violation_rate": over.any(axis=1).astype(np.float64)}
    out.update({f"safety/violation_rate/{label}": over[:, k].astype(np.float64)
                for k, label in enumerate(TOXICITY_LABELS)})
    out["safety/max_toxicity"] = probs.max(axis=1)
    return out


def words(text: str) -> int:
    return len(text.split())


def length_values(responses: list[str], references: list[str]) -> dict[str, np.ndarray]:
    """Per response [n]: its words, its reference's words, and words(response) / words(reference)
    (a reference counts at least one word)."""
    return {
        "length/words": np.asarray([words(r) for r in responses], dtype=np.float64),
        "length/reference_words": np.asarray([words(r) for r in references], dtype=np.float64),
        "length/words_ratio": np.asarray([words(r) / max(words(ref), 1)
                                          for r, ref in zip(responses, references, strict=True)]),
    }
