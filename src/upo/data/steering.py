"""Steerable UPO: one policy conditioned on the auxiliary strength aux_coef (`steer_aux_coefs`).

In the spirit of Rewards-in-Context (Yang et al. 2024), Conditional Language Policy (Wang et al.
2024) and Panacea (Zhong et al. 2024), but offline: each training example is given one of the
configured aux_coef values, the model is told which by a control token appended to the prompt
(`<|aux_coef=0.3|>`, a special token, like CSFT's in `upo.data.control`), and the example's loss is
UPO's with that aux_coef (`StepInputs.aux_coef`). At generation the caller picks a value and its
token is appended (`steering_suffix`); a value the model was not trained on is an error that lists
the trained ones.

Which condition an example gets: example k of the training items (k counted in the items' order)
gets condition `(offset[k] + epoch) % K` of the K values, with `offset` a seeded permutation of the
items taken modulo K. So each epoch gives every condition to a share of the examples that differs by
at most one example, an example moves on to the next condition each epoch (K epochs show it with
every one), and the draw depends only on (seed, k, epoch): a resumed run, which restarts the epoch it
was in, gives every example the condition it had.

The reference log-probs do not depend on the condition: the reference is the unconditioned starting
model, pi_ref(y|x), so they are computed once per example from the prompt without the token (hence
`precompute_ref_logps: true`), and the condition changes only the policy's input. (With LoRA and no
`ref_model`, the reference is the policy with its adapters disabled, whose vocabulary holds the new
tokens: their rows start near the mean embedding and take a little of every softmax.) Prompts are
tokenized one token shorter (`upo.prepare`), so that prompt + condition still fits max_prompt_length.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

STEERING_FILE = "steering.json"  # in final/: the conditions the model was trained on
_TOKEN = re.compile(r"^<\|aux_coef=([0-9.e+-]+)\|>$")


class SteeringError(ValueError):
    """A steering condition that the model cannot take (unknown, missing, or given to an unsteered model)."""


def condition_token(aux_coef: float) -> str:
    """The control token of one aux_coef value: 0.3 -> '<|aux_coef=0.3|>'."""
    return f"<|aux_coef={aux_coef:g}|>"


def add_steering_tokens(tokenizer, aux_coefs: list[float]) -> dict[float, int]:
    """Add each value's token as a special token (a no-op for those present); returns {aux_coef: token id}.

    The model's embeddings must then be resized to `len(tokenizer)`.
    """
    tokenizer.add_special_tokens({"additional_special_tokens": [condition_token(c) for c in aux_coefs]},
                                 replace_extra_special_tokens=False)
    vocab = tokenizer.get_added_vocab()
    return {float(c): vocab[condition_token(c)] for c in aux_coefs}


def steering_token_ids(tokenizer) -> dict[float, int]:
    """{aux_coef: token id} of the conditions a tokenizer holds ({} for a model that was not steered)."""
    out = {}
    for token, token_id in tokenizer.get_added_vocab().items():
        match = _TOKEN.match(token)
        if match:
            out[float(match.group(1))] = token_id
    return dict(sorted(out.items()))


def _listed(values) -> str:
    return ", ".join(f"{v:g}" for v in values)


def steering_suffix(tokenizer, aux_coef: float | None) -> list[int]:
    """Token ids to append to a prompt at generation: the token of `aux_coef` for a steered model,
    nothing for another model given no aux_coef; SteeringError otherwise, listing the trained values."""
    ids = steering_token_ids(tokenizer)
    if not ids:
        if aux_coef is not None:
            raise SteeringError(f"aux_coef {aux_coef:g} was given, but this model was not trained steered "
                                "(steer_aux_coefs); it has one trade-off, set when it was trained")
        return []
    if aux_coef is None:
        raise SteeringError(f"this model was trained steered: choose its auxiliary strength with aux_coef "
                            f"(--aux_coef), one of {_listed(ids)}")
    value = float(f"{aux_coef:g}")  # as its token writes it
    if value not in ids:
        raise SteeringError(f"aux_coef {aux_coef:g} is not one this model was trained on; trained values: "
                            f"{_listed(ids)}")
    return [ids[value]]


def condition_offsets(n: int, k: int, seed: int) -> np.ndarray:
    """[n] each item's condition in epoch 0: a seeded permutation of range(n), modulo k."""
    return np.random.default_rng([seed, 0x57EE]).permutation(n) % k


def write_steering(folder: Path, aux_coefs: list[float]) -> None:
    """final/steering.json: the trained conditions, their tokens, and how to pick one."""
    record = {
        "aux_coefs": [float(c) for c in aux_coefs],
        "tokens": {f"{c:g}": condition_token(c) for c in aux_coefs},
        "usage": "append the token of the chosen aux_coef to the prompt (after the chat template's generation "
                 "prompt); upo eval --aux_coef VALUE does it",
    }
    (folder / STEERING_FILE).write_text(json.dumps(record, indent=2) + "\n")


def read_steering(folder: str | Path) -> list[float] | None:
    """The aux_coef values a model folder was trained on (its steering.json), or None when it has none."""
    path = Path(folder) / STEERING_FILE
    return json.loads(path.read_text())["aux_coefs"] if path.is_file() else None


class ConditionedItems(Dataset):
    """Tokenized items, each with its condition: the token appended to `prompt_ids` and `aux_coef` set.

    The wrapped items are not changed (their reference log-probs, computed without the token, are
    read from them when an item is fetched). `set_epoch` moves every example on to its next condition.
    """

    def __init__(self, items: list[dict], token_ids: dict[float, int], seed: int):
        self.items = items
        self.conditions = list(token_ids.items())  # [(aux_coef, token id)], K of them
        self.offsets = condition_offsets(len(items), len(self.conditions), seed)
        self.epoch = 0
        self.conditioned = True

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @contextlib.contextmanager
    def bare(self):
        """Within the block the items come without their conditions: the reference log-probs, which
        do not depend on them, are computed in training's own first-epoch batches."""
        self.conditioned = False
        try:
            yield
        finally:
            self.conditioned = True

    def condition(self, k: int) -> int:
        """Which of the K conditions item k has in the current epoch."""
        return int((self.offsets[k] + self.epoch) % len(self.conditions))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict:
        item = self.items[k]
        if not self.conditioned:
            return item
        aux_coef, token_id = self.conditions[self.condition(k)]
        return {**item, "prompt_ids": [*item["prompt_ids"], token_id], "aux_coef": aux_coef}
