"""A simulated user who labels response pairs offline, standing in for human preferences.

The user prefers answers that stay on topic and finish what they say:

    user_score(prompt, response) = coverage + 0.2 * complete - 0.3 * looping

- coverage: the share of the prompt's content words that the response uses. Words are lowercased
  runs of letters and digits; single characters, stopwords and instruction words ("explain",
  "tips", "how", ...) are dropped, since an answer need not repeat them; the rest are crudely stemmed by stripping one
  common suffix ("-ies" -> "-y", "-ing", "-es", "-ed", "-ly", "-s", "-e") when three letters
  remain, so "leaves" and "leave" match, as do "change", "changes" and "changing". A prompt with
  no content words gives coverage 0 to every response.
- complete: 1 if the response ends with terminal punctuation (. ! ?), ignoring trailing quotes,
  brackets and `*`; a response cut off mid-sentence (e.g. at the token limit) gets 0.
- looping: 1 if some 4-gram of words occurs three or more times, the signature of a degenerate
  repetition loop (twice is left alone: short stock phrases recur in fluent text).

The demo's designer objectives (Flesch-Kincaid readability, profanity, length in words) are not
in this rule, so the preference labels and the auxiliary objectives are separate signals.
They are not independent, though: longer answers tend to cover more prompt words, and shorter
ones are more likely to finish before the token limit.
"""

from __future__ import annotations

import re
from collections import Counter

COMPLETE_BONUS = 0.2
LOOP_PENALTY = 0.3
LOOP_NGRAM = 4  # words per n-gram checked for loops
LOOP_MIN_COUNT = 3  # occurrences of one n-gram that count as a loop

_WORD = re.compile(r"[a-z0-9]+")
_TRAILING_CLOSERS = "\"')]*”’ \n\t"
# (suffix, replacement), first match wins; longer suffixes first so "-ies" beats "-s"
_SUFFIXES = (("ies", "y"), ("ing", ""), ("es", ""), ("ed", ""), ("ly", ""), ("s", ""), ("e", ""))
_MIN_STEM = 3
_STOPWORDS = frozenset(
    # function words
    "a about after all also an and any are as at be because been before being between both but by "
    "can could did do does doing don during each every few for from had has have having he her here "
    "him his how i if in into is it its just me more most my no not now of off on once one only or "
    "other our out over own same she should so some such than that the their them then there these "
    "they this those through to too under until up very was we were what when where which while who "
    "whom why will with would you your someone something "
    # instruction words a good answer need not repeat
    "advice briefly compare describe explain give know list make please simple tell terms thing "
    "things three tip tips two way ways write".split()
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _stem(word: str) -> str:
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= _MIN_STEM:
            return word[: -len(suffix)] + replacement
    return word


def content_stems(text: str) -> set[str]:
    """Stems of the words in `text` longer than one character that are not stopwords."""
    return {_stem(w) for w in _words(text) if len(w) > 1 and w not in _STOPWORDS}


def coverage(prompt: str, response: str) -> float:
    """Share of the prompt's content stems that occur in the response, in [0, 1]."""
    wanted = content_stems(prompt)
    if not wanted:
        return 0.0
    return len(wanted & content_stems(response)) / len(wanted)


def is_complete(response: str) -> bool:
    """Whether the response ends with . ! or ? (after trailing quotes, brackets and `*`)."""
    return response.rstrip(_TRAILING_CLOSERS).endswith((".", "!", "?"))


def is_looping(response: str) -> bool:
    """Whether some word 4-gram occurs at least three times."""
    words = _words(response)
    ngrams = Counter(tuple(words[i : i + LOOP_NGRAM]) for i in range(len(words) - LOOP_NGRAM + 1))
    return any(count >= LOOP_MIN_COUNT for count in ngrams.values())


def user_score(prompt: str, response: str) -> float:
    """The simulated user's score of one response (see the module docstring); in [-0.3, 1.2]."""
    return (
        coverage(prompt, response)
        + COMPLETE_BONUS * is_complete(response)
        - LOOP_PENALTY * is_looping(response)
    )


def label_pair(prompt: str, a: str, b: str) -> tuple[str, str] | None:
    """(chosen, rejected) by `user_score`, or None when the two scores tie within 1e-9."""
    score_a, score_b = user_score(prompt, a), user_score(prompt, b)
    if abs(score_a - score_b) <= 1e-9:
        return None
    return (a, b) if score_a > score_b else (b, a)
