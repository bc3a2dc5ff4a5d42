"""Auxiliary rewards: built-ins, name resolution, the score cache, scoring errors (standardization:
test_standardizer.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

from upo.rewards import (
    BUILTIN_REWARDS,
    BUILTIN_VERSIONS,
    ScoreCache,
    default_cache_dir,
    length,
    profanity,
    readability,
    resolve_reward,
    reward_version,
    score_texts,
)
from upo.rewards.builtin import GRADE_MAX

SIMPLE = "The cat sat on the mat. It was happy."
ACADEMIC = (
    "Researchers evaluated the relationship between economic development and educational "
    "attainment across several regions."
)
POLITE = "Thank you so much for your help, I really appreciate it."
PROFANE = "Shut the fuck up, you stupid piece of shit."


@pytest.fixture
def make_module(tmp_path, monkeypatch):
    """Write a module with the given source into a temporary sys.path entry; returns its name."""
    monkeypatch.syspath_prepend(tmp_path)
    created = []

    def make(source: str) -> str:
        name = f"upo_test_rewards_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        created.append(name)
        return name

    yield make
    for name in created:
        sys.modules.pop(name, None)


COUNTING_SOURCE = """
    CALLS = []

    def n_chars(prompts, completions):
        CALLS.append(list(completions))
        return [float(len(p) + len(c)) for p, c in zip(prompts, completions)]
"""


# ---- built-ins -------------------------------------------------------------------------------


def test_readability_prefers_simple_text():
    simple, academic = readability(["", ""], [SIMPLE, ACADEMIC])
    assert simple > academic
    assert academic < -15  # a college-level grade, not clamped
    assert academic > -GRADE_MAX


def test_readability_empty_text_and_clamp():
    assert readability(["", ""], ["", "   \n"]) == [0.0, 0.0]
    # one very long word has a Flesch-Kincaid grade above 100: clamped
    assert readability([""], ["Supercalifragilisticexpialidocious"]) == [-GRADE_MAX]


def test_profanity_penalizes_profane_text():
    polite, profane = profanity(["", ""], [POLITE, PROFANE])
    assert profane < polite
    assert -1.0 <= profane <= 0.0 and -1.0 <= polite <= 0.0
    assert profane < -0.5 < polite
    assert profanity([], []) == []


def test_length_counts_words():
    assert length(["", "", ""], ["one two three", "", "  a\tb\n c  "]) == [-0.03, 0.0, -0.03]


def test_builtins_have_versions():
    assert set(BUILTIN_VERSIONS) == set(BUILTIN_REWARDS)
    assert {"readability", "profanity", "length"} <= set(BUILTIN_REWARDS)  # the newer ones: test_scorers.py
    assert "textstat-0.7.8" in BUILTIN_VERSIONS["readability"]
    for name, fn in BUILTIN_REWARDS.items():
        assert reward_version(name, fn) == BUILTIN_VERSIONS[name]


# ---- resolve ---------------------------------------------------------------------------------


def test_resolve_builtin():
    assert resolve_reward("readability") is readability
    assert resolve_reward("length") is length


def test_resolve_user_function(make_module):
    module = make_module(COUNTING_SOURCE)
    fn = resolve_reward(f"{module}:n_chars")
    assert fn(["ab"], ["cde"]) == [5.0]


def test_resolve_unknown_builtin_suggests_close_names():
    with pytest.raises(ValueError, match="readabilty") as info:
        resolve_reward("readabilty")
    message = str(info.value)
    assert "Did you mean 'readability'" in message
    assert "readability, profanity, length" in message


def test_resolve_module_not_importable():
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'.*No module named"):
        resolve_reward("no_such_module_xyz:score")


def test_resolve_module_that_raises_on_import(make_module):
    module = make_module("raise RuntimeError('boom at import')\n")
    with pytest.raises(ValueError, match="RuntimeError: boom at import") as info:
        resolve_reward(f"{module}:score")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_resolve_missing_attribute(make_module):
    module = make_module(COUNTING_SOURCE)
    with pytest.raises(ValueError, match=f"module '{module}' has no attribute 'nope'"):
        resolve_reward(f"{module}:nope")


def test_resolve_not_callable(make_module):
    module = make_module(COUNTING_SOURCE)
    with pytest.raises(ValueError, match="is a list, not a callable"):
        resolve_reward(f"{module}:CALLS")


@pytest.mark.parametrize("name", ["mod:", ":fn", "a:b:c"])
def test_resolve_malformed(name):
    with pytest.raises(ValueError, match="malformed"):
        resolve_reward(name)


# ---- reward_version --------------------------------------------------------------------------


def test_version_hashes_source_and_changes_when_edited(make_module, tmp_path):
    module = make_module("def score(prompts, completions):\n    return [1.0 for _ in completions]\n")
    v1 = reward_version(f"{module}:score", resolve_reward(f"{module}:score"))
    assert v1.startswith("sha256:")
    assert reward_version(f"{module}:score", resolve_reward(f"{module}:score")) == v1  # stable

    (tmp_path / f"{module}.py").write_text(
        "def score(prompts, completions):\n    return [2.0 for _ in completions]  # edited\n"
    )
    importlib.reload(sys.modules[module])
    v2 = reward_version(f"{module}:score", resolve_reward(f"{module}:score"))
    assert v2.startswith("sha256:") and v2 != v1


def test_version_attribute_wins_and_qualname_fallback():
    def score(prompts, completions):
        return [0.0] * len(completions)

    score.__version__ = 3
    assert reward_version("m:score", score) == "3"

    class Scorer:  # a callable object has no source of its own: its qualified name is used
        def __call__(self, prompts, completions):
            return [0.0] * len(completions)

    assert reward_version("m:scorer", Scorer()) == f"{__name__}.{Scorer.__qualname__}"


# ---- cache -----------------------------------------------------------------------------------


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("UPO_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("UPO_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "upo")


def test_cache_round_trip(tmp_path):
    with ScoreCache(tmp_path) as cache:
        cache.put_many("r", "v1", ["p", "p"], ["a", "b"], [1.5, -2.0])
    assert (tmp_path / "scores.sqlite").exists()
    with ScoreCache(tmp_path) as cache:  # reopened: scores persist
        assert cache.get_many("r", "v1", ["p", "p", "p"], ["b", "a", "c"]) == [-2.0, 1.5, None]
        assert cache.get_many("r", "v2", ["p"], ["a"]) == [None]  # other version
        assert cache.get_many("other", "v1", ["p"], ["a"]) == [None]  # other scorer
        assert cache.get_many("r", "v1", ["q"], ["a"]) == [None]  # the prompt is part of the key
        cache.put_many("r", "v1", ["pa"], ["b"], [7.0])  # NUL separator: ("pa","b") != ("p","ab")
        assert cache.get_many("r", "v1", ["p"], ["ab"]) == [None]
        cache.put_many("r", "v1", ["p"], ["a"], [9.0])  # overwrite
        assert cache.get_many("r", "v1", ["p"], ["a"]) == [9.0]


def test_cache_many_texts(tmp_path):
    """More texts than one SQL statement binds (chunked lookups)."""
    completions = [f"text {i}" for i in range(2500)]
    prompts = [""] * len(completions)
    with ScoreCache(tmp_path) as cache:
        cache.put_many("r", "v", prompts, completions, [float(i) for i in range(2500)])
        assert cache.get_many("r", "v", prompts, completions) == [float(i) for i in range(2500)]


def test_cache_concurrent_writers(tmp_path):
    """Two processes writing to one cache file at once: WAL + timeout, no 'database is locked'."""
    script = textwrap.dedent(
        """
        import sys
        from upo.rewards import ScoreCache
        worker, cache_dir = sys.argv[1], sys.argv[2]
        with ScoreCache(cache_dir) as cache:
            for i in range(50):
                cache.put_many("r", "v", [worker] * 20, [f"{i}-{j}" for j in range(20)], [float(i)] * 20)
        """
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", script, str(w), str(tmp_path)], stderr=subprocess.PIPE)
        for w in range(2)
    ]
    for proc in workers:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    with ScoreCache(tmp_path) as cache:
        completions = [f"{i}-{j}" for i in range(50) for j in range(20)]
        for w in range(2):
            scores = cache.get_many("r", "v", [str(w)] * 1000, completions)
            assert scores == [float(i) for i in range(50) for _ in range(20)]


# ---- score_texts -----------------------------------------------------------------------------


def test_score_texts_columns_follow_names():
    raw = score_texts(["", ""], ["one two", "one two three four"], ["length", "readability"], progress=False)
    assert raw.shape == (2, 2) and raw.dtype == np.float64
    np.testing.assert_allclose(raw[:, 0], [-0.02, -0.04])
    np.testing.assert_allclose(raw[:, 1], readability(["", ""], ["one two", "one two three four"]))
    assert score_texts([], [], ["length"], progress=False).shape == (0, 1)


def test_score_texts_uses_the_cache(make_module, tmp_path):
    module = importlib.import_module(make_module(COUNTING_SOURCE))
    name = f"{module.__name__}:n_chars"
    prompts, completions = ["p", "p", "q"], ["a", "bb", "a"]
    with ScoreCache(tmp_path) as cache:
        first = score_texts(prompts, completions, [name], cache=cache, progress=False)
        np.testing.assert_array_equal(first[:, 0], [2.0, 3.0, 2.0])
        assert module.CALLS == [["a", "bb", "a"]]

        second = score_texts(prompts, completions, [name], cache=cache, progress=False)
        np.testing.assert_array_equal(second, first)
        assert len(module.CALLS) == 1  # nothing rescored

        third = score_texts([*prompts, "r"], [*completions, "new"], [name], cache=cache, progress=False)
        assert module.CALLS[1:] == [["new"]]  # only the missing text
        assert third[3, 0] == 4.0


def test_score_texts_batches_and_deduplicates(make_module):
    module = importlib.import_module(make_module(COUNTING_SOURCE))
    completions = ["a", "b", "a", "c", "d", "e", "b"]
    raw = score_texts([""] * 7, completions, [f"{module.__name__}:n_chars"], batch_size=2, progress=False)
    assert module.CALLS == [["a", "b"], ["c", "d"], ["e"]]  # each distinct text once, in batches of 2
    np.testing.assert_array_equal(raw[:, 0], [1.0] * 7)


def test_score_texts_rescores_when_version_changes(make_module, tmp_path):
    module = importlib.import_module(make_module(COUNTING_SOURCE))
    module.n_chars.__version__ = "1"
    name = f"{module.__name__}:n_chars"
    with ScoreCache(tmp_path) as cache:
        score_texts(["p"], ["a"], [name], cache=cache, progress=False)
        score_texts(["p"], ["a"], [name], cache=cache, progress=False)
        assert len(module.CALLS) == 1
        module.n_chars.__version__ = "2"
        score_texts(["p"], ["a"], [name], cache=cache, progress=False)
        assert len(module.CALLS) == 2


BAD_SCORERS = """
    import math

    def wrong_count(prompts, completions):
        return [0.0] * (len(completions) + 1)

    def raises(prompts, completions):
        raise KeyError("missing field")

    def nan_at_2(prompts, completions):
        return [math.nan if c == "bad" else 0.0 for c in completions]

    def inf(prompts, completions):
        return [math.inf for c in completions]

    def strings(prompts, completions):
        return ["0.5" for c in completions]

    def scalar(prompts, completions):
        return 0.5
"""


@pytest.mark.parametrize(
    ("fn", "pattern"),
    [
        ("wrong_count", r"returned 4 values for 3 completions"),
        ("raises", r"raised KeyError: 'missing field' \(batch of 3 texts from row 0"),
        ("nan_at_2", r"returned nan for row 2 \(completion 'bad'\)"),
        ("inf", r"returned inf for row 0 \(completion 'ok'\)"),
        ("strings", r"returned '0.5' \(str\), not a number, for row 0"),
        ("scalar", r"returned a float for 3 completions"),
    ],
)
def test_score_texts_bad_scorers(make_module, tmp_path, fn, pattern):
    name = f"{make_module(BAD_SCORERS)}:{fn}"
    with ScoreCache(tmp_path) as cache:
        with pytest.raises(ValueError, match=pattern) as info:
            score_texts(["", "", ""], ["ok", "fine", "bad"], [name], cache=cache, progress=False)
        assert name in str(info.value)
        assert cache.get_many(name, reward_version(name, resolve_reward(name)), [""], ["ok"]) == [None]
    if fn == "raises":
        assert isinstance(info.value.__cause__, KeyError)


def test_score_texts_bad_name_fails_before_scoring(make_module):
    module = importlib.import_module(make_module(COUNTING_SOURCE))
    with pytest.raises(ValueError, match="unknown built-in reward 'lenght'"):
        score_texts([""], ["a"], [f"{module.__name__}:n_chars", "lenght"], progress=False)
    assert module.CALLS == []
