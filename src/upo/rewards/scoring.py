"""Score dataset texts with the auxiliary rewards, and turn raw scores into r_a.

Rewards depend on the text only, so they are computed once before training (and cached):

    raw  [n, K]  = score_texts(prompts, completions, names)      column k = reward names[k]
    z    [n, K]  = (raw - mean_k) / std_k                         mean, std over the TRAINING set
    r_a  [n]     = sum_k w_k * z[:, k]                            (UPO-METHOD.md, "reward scaling")

Standardizing first makes the weights w_k comparable across rewards of different scales.

Several named mixes of rewards (steered UPO's `steer_reward_mixes`) share one scoring and one
standardization of their scorers' union; each mix is then the weighted sum of its own columns
(`RewardMixes`), exactly as a run with that mix as its `rewards` forms its r_a.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from upo.rewards.builtin import RewardFn
from upo.rewards.cache import ScoreCache
from upo.rewards.resolve import resolve_reward, reward_version

# A training-set std below this is a constant reward: it is divided by 1 instead (no signal,
# and no blow-up of float noise into large standardized values).
MIN_STD = 1e-8


def score_texts(
    prompts: list[str],
    completions: list[str],
    names: list[str],
    *,
    cache: ScoreCache | None = None,
    batch_size: int = 512,
    progress: bool = True,
    sources: list[str] | None = None,
) -> np.ndarray:
    """Raw scores [n, K], column k = reward names[k].

    Only texts missing from the cache are scored (in batches, a tqdm bar over texts when
    `progress`), then stored, batch by batch, so an interrupted run keeps what it scored.
    A (prompt, completion) that occurs several times is scored once.

    Raises ValueError naming the reward (and the row and a snippet of its text where it
    applies) when a name does not resolve, or a reward raises (chained), returns the wrong
    number of values, returns a non-number (a bool too), or returns NaN/inf (the first bad row).
    A reward calling sys.exit() counts as raising. A row is
    named by `sources[i]` when given (e.g. "data.jsonl:17 field 'rejected'"), else "row i".
    """
    if len(prompts) != len(completions):
        raise ValueError(f"score_texts: {len(prompts)} prompts but {len(completions)} completions")
    if sources is not None and len(sources) != len(completions):
        raise ValueError(f"score_texts: {len(sources)} sources but {len(completions)} completions")
    if batch_size < 1:
        raise ValueError(f"score_texts: batch_size must be >= 1, got {batch_size}")
    fns = [resolve_reward(name) for name in names]  # a bad name fails before any scoring
    raw = np.empty((len(completions), len(names)), dtype=np.float64)  # [n, K]
    for k, (name, fn) in enumerate(zip(names, fns, strict=True)):
        raw[:, k] = _score_column(name, fn, prompts, completions, cache, batch_size, progress, sources)
    return raw


def _score_column(
    name: str,
    fn: RewardFn,
    prompts: list[str],
    completions: list[str],
    cache: ScoreCache | None,
    batch_size: int,
    progress: bool,
    sources: list[str] | None = None,
) -> np.ndarray:
    """Scores [n] of one reward: cached ones looked up, the rest computed and stored."""
    version = reward_version(name, fn)
    column = np.empty(len(completions), dtype=np.float64)  # [n]; every row is filled below
    cached = cache.get_many(name, version, prompts, completions) if cache is not None else None
    rows_of: dict[tuple[str, str], list[int]] = {}  # each text still to score -> its rows
    for i, text in enumerate(zip(prompts, completions, strict=True)):
        if cached is not None and cached[i] is not None:
            column[i] = cached[i]
        else:
            rows_of.setdefault(text, []).append(i)

    texts = list(rows_of)
    with tqdm(total=len(texts), desc=f"reward {name}", unit="text", disable=not (progress and texts)) as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            batch_prompts = [p for p, _ in batch]
            batch_completions = [c for _, c in batch]
            first_rows = [rows_of[t][0] for t in batch]  # for error messages
            where = [sources[i] if sources is not None else f"row {i}" for i in first_rows]
            scores = _checked_call(name, fn, batch_prompts, batch_completions, where)
            for text, score in zip(batch, scores, strict=True):
                column[rows_of[text]] = score
            if cache is not None:
                cache.put_many(name, version, batch_prompts, batch_completions, scores.tolist())
            bar.update(len(batch))
    return column


def _checked_call(
    name: str, fn: RewardFn, prompts: list[str], completions: list[str], where: list[str]
) -> np.ndarray:
    """fn(prompts, completions) as float64 [b], or a ValueError saying what was wrong and where
    (`where[j]` names the row of completion j)."""
    try:
        out = fn(prompts, completions)
    except (Exception, SystemExit) as e:  # sys.exit() in a reward must fail the run, not end it with exit 0
        raise ValueError(
            f"reward {name!r} raised {type(e).__name__}: {e} (batch of {len(completions)} texts from "
            f"{where[0]}, completion {_snippet(completions[0])})"
        ) from e

    n_out = len(out) if hasattr(out, "__len__") else None
    if n_out != len(completions):
        got = f"{n_out} values" if n_out is not None else f"a {type(out).__name__}"
        raise ValueError(
            f"reward {name!r} returned {got} for {len(completions)} completions (batch from "
            f"{where[0]}); a reward returns one float per completion"
        )
    for j, value in enumerate(out):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):  # True is an int: a label, not a score
            raise ValueError(
                f"reward {name!r} returned {value!r} ({type(value).__name__}), not a number, for "
                f"{where[j]} (completion {_snippet(completions[j])})"
            )
    scores = np.asarray([float(v) for v in out], dtype=np.float64)  # [b]
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        j = int(bad[0])
        raise ValueError(
            f"reward {name!r} returned {scores[j]} for {where[j]} (completion "
            f"{_snippet(completions[j])}); {bad.size} of {len(scores)} values in the batch are not finite"
        )
    return scores


def _snippet(text: str, width: int = 60) -> str:
    return repr(text if len(text) <= width else text[:width] + "...")


@dataclass
class RewardStandardizer:
    """Per-reward standardization fitted on the training set, and the weighted sum r_a.

    Saved with the run (`to_dict`) so that evaluation uses the training statistics.
    """

    names: list[str]
    weights: list[float]
    means: list[float]
    stds: list[float]
    standardize: bool = True

    def __post_init__(self) -> None:
        sizes = {len(self.names), len(self.weights), len(self.means), len(self.stds)}
        if len(sizes) != 1:
            raise ValueError(
                f"RewardStandardizer: {len(self.names)} names, {len(self.weights)} weights, "
                f"{len(self.means)} means, {len(self.stds)} stds; they must match"
            )
        values = np.asarray([*self.weights, *self.means, *self.stds], dtype=np.float64)
        if not np.isfinite(values).all() or any(s <= 0 for s in self.stds):
            raise ValueError("RewardStandardizer: weights, means and stds must be finite, stds > 0")

    @classmethod
    def fit(
        cls, raw: np.ndarray, names: list[str], weights: list[float], standardize: bool = True
    ) -> RewardStandardizer:
        """Means and (population) stds of each column of the training scores raw [n, K].

        A std below MIN_STD (a constant reward) is stored as 1.
        """
        raw = np.asarray(raw, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != len(names) or raw.shape[0] == 0:
            raise ValueError(f"fit: expected raw scores [n >= 1, {len(names)}], got shape {raw.shape}")
        if not np.isfinite(raw).all():
            raise ValueError("fit: raw scores contain NaN or inf")
        stds = raw.std(axis=0)  # [K]
        stds = np.where(stds < MIN_STD, 1.0, stds)
        return cls(
            names=list(names),
            weights=[float(w) for w in weights],
            means=raw.mean(axis=0).tolist(),
            stds=stds.tolist(),
            standardize=standardize,
        )

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Standardized scores [n, K] (a float copy of raw when standardize=False)."""
        raw = np.asarray(raw, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != len(self.names):
            raise ValueError(
                f"expected raw scores [n, {len(self.names)}] for {self.names}, got shape {raw.shape}"
            )
        if not self.standardize:
            return raw.copy()
        return (raw - np.asarray(self.means)) / np.asarray(self.stds)  # [n, K]

    def combine(self, raw: np.ndarray) -> np.ndarray:
        """r_a [n] = sum_k w_k * transform(raw)[:, k]."""
        return self.transform(raw) @ np.asarray(self.weights, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RewardStandardizer:
        fields = {f.name for f in dataclasses.fields(cls)}
        if set(d) - fields or {"names", "weights", "means", "stds"} - set(d):
            raise ValueError(f"RewardStandardizer.from_dict: expected keys {sorted(fields)}, got {sorted(d)}")
        return cls(**d)


@dataclass
class RewardMixes:
    """The r_a of several named reward mixes from one scoring of their scorers' union.

    Each mix has its own RewardStandardizer, fitted on its own columns in its own order
    (`raw[:, columns]`, a contiguous copy like the scores of an unsteered run with the mix as its
    rewards): a column's mean depends on the array's layout in its last bits (numpy sums a lone
    column pairwise, a column of a wider array in order), so only this makes a mix's r_a, bit for
    bit, that of an unsteered run with `rewards` = the mix.
    """

    names: list[str]  # union(mixes): the columns of the raw scores
    mixes: dict[str, dict[str, float]]  # name -> {reward: weight}
    standardizers: dict[str, RewardStandardizer]  # name -> fitted on the mix's columns

    @staticmethod
    def union(mixes: dict[str, dict[str, float]]) -> list[str]:
        """Every reward of the mixes once, in the order they first appear."""
        return list(dict.fromkeys(name for weights in mixes.values() for name in weights))

    def _columns(self, raw: np.ndarray, mix: str) -> np.ndarray:
        """The raw scores of a mix's rewards [n, K_mix], in its order."""
        raw = np.asarray(raw, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != len(self.names):
            raise ValueError(f"expected raw scores [n, {len(self.names)}] for {self.names}, got shape {raw.shape}")
        return raw[:, [self.names.index(n) for n in self.mixes[mix]]]

    @classmethod
    def fit(cls, raw: np.ndarray, mixes: dict[str, dict[str, float]], standardize: bool = True) -> RewardMixes:
        """Fit on the training scores raw [n, K], column k = reward `union(mixes)[k]`."""
        out = cls(cls.union(mixes), mixes, {})
        for mix, weights in mixes.items():
            out.standardizers[mix] = RewardStandardizer.fit(out._columns(raw, mix), list(weights),
                                                            list(weights.values()), standardize=standardize)
        return out

    def combine(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        """{mix: r_a [n] = sum_k w_k * z_k over the mix's rewards k}, z standardized by the mix's statistics."""
        return {mix: self.standardizers[mix].combine(self._columns(raw, mix)) for mix in self.mixes}

    def to_dict(self) -> dict[str, Any]:
        return {"names": self.names, "mixes": self.mixes,
                "standardizers": {mix: sd.to_dict() for mix, sd in self.standardizers.items()}}
