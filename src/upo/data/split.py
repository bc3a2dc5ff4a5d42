"""The held-out split: which rows a model never trains on."""

from __future__ import annotations

import random

from upo.data.checks import row_key


def split_heldout(records: list, eval_fraction: float, seed: int) -> tuple[list, list]:
    """(held-out, training) records: shuffled with `seed`, the first round(n * eval_fraction) held
    out. The one split rule of upo train, upo rm train and upo eval, so they agree on which rows a
    model never saw."""
    records = list(records)
    random.Random(seed).shuffle(records)
    n_eval = int(round(len(records) * eval_fraction))
    return records[:n_eval], records[n_eval:]


def drop_training_rows(eval_records: list, records: list, report: list[str]) -> list:
    """Held-out rows that are also training rows would leak: they are dropped, and named in `report`."""
    train_keys = {row_key(r) for r in records}
    leaked = [r.source for r in eval_records if row_key(r) in train_keys]
    if leaked:
        report.append(f"warning: dropped {len(leaked)} held-out rows that are also training rows: "
                      + ", ".join(leaked[:20]) + (" ..." if len(leaked) > 20 else ""))
    return [r for r in eval_records if row_key(r) not in train_keys]
