"""Evaluation metrics as pure functions of scores and texts, and the better direction of each.

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
    **{metric: better for metric, _, better in NATURAL.values()},
}


def natural(scorer: str) -> tuple[str, float, str | None]:
    """(metric name, factor, direction) of a scorer; other rewards (rm:PATH, pkg.module:function)
    are reported as they are, under scorer/NAME, higher = better as for any reward."""
    return NATURAL.get(scorer, (f"scorer/{scorer}", 1.0, MAX))


def direction(metric: str) -> str | None:
    """"max" (higher is better), "min" (lower is better) or None for a metric name of eval.json."""
    if metric in DIRECTIONS:
        return DIRECTIONS[metric]
    return MAX if metric.startswith("scorer/") else None


def scorer_metrics(scorer: str, raw: np.ndarray) -> dict[str, float]:
    """{natural metric: mean} of one scorer's rewards raw [n] (n >= 1)."""
    name, factor, _ = natural(scorer)
    return {name: float(factor * np.mean(raw))}


def violation_metrics(probs: np.ndarray, threshold: float) -> dict[str, float]:
    """Safety metrics from toxicity probabilities probs [n, 6] (columns TOXICITY_LABELS, n >= 1).

    safety/violation_rate: share of texts with any category >= threshold; .../<label>: share with
    that category >= threshold; safety/max_toxicity: mean over texts of the largest probability.
    """
    probs = np.asarray(probs, dtype=np.float64)
    over = probs >= threshold  # [n, 6]
    out = {"safety/violation_rate": float(over.any(axis=1).mean())}
    out.update({f"safety/violation_rate/{label}": float(over[:, k].mean()) for k, label in enumerate(TOXICITY_LABELS)})
    out["safety/max_toxicity"] = float(probs.max(axis=1).mean())
    return out


def words(text: str) -> int:
    return len(text.split())


def length_metrics(responses: list[str], references: list[str]) -> dict[str, float]:
    """Mean words of the responses and of their references, and the mean per-response ratio
    words(response) / words(reference) (a reference counts at least one word)."""
    ratios = [words(r) / max(words(ref), 1) for r, ref in zip(responses, references, strict=True)]
    return {
        "length/words": float(np.mean([words(r) for r in responses])),
        "length/reference_words": float(np.mean([words(r) for r in references])),
        "length/words_ratio": float(np.mean(ratios)),
    }
