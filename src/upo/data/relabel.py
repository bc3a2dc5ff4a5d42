"""Relabelling preference pairs by the compound reward: how the preference baselines see the
auxiliary objectives (config `relabel`)."""

from __future__ import annotations

import numpy as np

from upo.data.records import PreferencePair


def relabel_pairs(pairs: list[PreferencePair], r_a: np.ndarray, margin: float) -> tuple[list[PreferencePair], int]:
    """Re-rank each pair by the compound reward r_p + r_a, the preference baselines' way of seeing the
    auxiliary objectives. r_p is a proxy of the user's preference: +margin/2 for the labelled chosen
    response, -margin/2 for the rejected one; r_a is the standardized, weighted auxiliary reward
    (`r_a[2i]` chosen, `r_a[2i+1]` rejected). A pair is swapped iff r_a(rejected) - r_a(chosen) > margin.
    Returns the pairs and the number swapped."""
    out, swapped = [], 0
    for i, pair in enumerate(pairs):
        if r_a[2 * i + 1] - r_a[2 * i] > margin:
            pair = PreferencePair(pair.prompt, pair.rejected, pair.chosen, pair.source)
            swapped += 1
        out.append(pair)
    return out, swapped
