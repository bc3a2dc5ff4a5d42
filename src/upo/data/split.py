"""The held-out split: which rows a model never trains on."""

from __future__ import annotations

import random


def split_heldout(records: list, eval_fraction: float, seed: int) -> tuple[list, list]:
    """(held-out, training) records: shuffled with `seed`, the first round(n * eval_fraction) held
    out. The one split rule of upo train, upo rm train and upo eval, so they agree on which rows a
    model never saw."""
    records = list(records)
    random.Random(seed).shuffle(records)
    n_eval = int(round(len(records) * eval_fraction))
    return records[:n_eval], records[n_eval:]
