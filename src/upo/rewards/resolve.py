"""Turn reward names from the config into functions, and give each a version for the cache.

A name is a built-in (a key of `BUILTIN_REWARDS`), `rm:PATH` (a sequence-classification reward
model, see reward_model.py) or `package.module:function`.
A user module is imported only because the config names it.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import inspect

from upo.rewards.builtin import BUILTIN_REWARDS, BUILTIN_VERSIONS, RewardFn
from upo.rewards.reward_model import PREFIX as REWARD_MODEL_PREFIX
from upo.rewards.reward_model import reward_model_scorer, reward_model_version


def resolve_reward(name: str) -> RewardFn:
    """The reward function for `name`; a `ValueError` that says what to fix otherwise."""
    if name.startswith(REWARD_MODEL_PREFIX):
        return reward_model_scorer(name[len(REWARD_MODEL_PREFIX) :])
    if ":" not in name:
        if name in BUILTIN_REWARDS:
            return BUILTIN_REWARDS[name]
        close = difflib.get_close_matches(name, BUILTIN_REWARDS, n=3)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown built-in reward {name!r}.{hint} Built-ins: {', '.join(BUILTIN_REWARDS)}; "
            "a reward of your own is named 'package.module:function'."
        )

    module_name, _, attr = name.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ValueError(f"reward {name!r} is malformed: expected 'package.module:function'.")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as e:  # ImportError, or whatever the module raises (or exits with) while it runs
        raise ValueError(
            f"reward {name!r}: cannot import module {module_name!r} ({type(e).__name__}: {e})."
        ) from e
    if not hasattr(module, attr):
        raise ValueError(f"reward {name!r}: module {module_name!r} has no attribute {attr!r}.")
    fn = getattr(module, attr)
    if not callable(fn):
        raise ValueError(
            f"reward {name!r}: {module_name}.{attr} is a {type(fn).__name__}, not a callable "
            "(prompts, completions) -> list[float]."
        )
    return fn


def reward_version(name: str, fn: RewardFn) -> str:
    """The version of a reward, part of its score-cache key.

    Built-ins: `BUILTIN_VERSIONS`. User functions: their `__version__` attribute if set, else a
    hash of their source (editing the function invalidates its cached scores; helpers it calls
    are not hashed, so set `__version__` when those change), else their qualified name.
    """
    if name.startswith(REWARD_MODEL_PREFIX):
        return reward_model_version(name[len(REWARD_MODEL_PREFIX) :])
    if BUILTIN_REWARDS.get(name) is fn:
        return BUILTIN_VERSIONS[name]
    explicit = getattr(fn, "__version__", None)
    if explicit is not None:
        return str(explicit)
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):  # defined in a REPL / exec, a callable object, a C function
        qualname = getattr(fn, "__qualname__", type(fn).__qualname__)
        return f"{getattr(fn, '__module__', None) or type(fn).__module__}.{qualname}"
    return "sha256:" + hashlib.sha256(source.encode()).hexdigest()
