"""Steerable UPO: one policy conditioned on the auxiliary strength aux_coef (`steer_aux_coefs`), on
the auxiliary reward's mix (`steer_reward_mixes`), or on both.

In the spirit of Rewards-in-Context (Yang et al. 2024), Conditional Language Policy (Wang et al.
2024) and Panacea (Zhong et al. 2024), but offline: each training example is given one of the
configured aux_coef values, the model is told which by a control token appended to the prompt
(`<|aux_coef=0.3|>`, a special token, like CSFT's in `upo.data.control`), and the example's loss is
UPO's with that aux_coef (`StepInputs.aux_coef`). At generation the caller picks a value and its
token is appended (`steering_suffix`); a value the model was not trained on is an error that lists
the trained ones. (`steer_by: adapter` tells the model its aux_coef through its weights instead:
`upo.steer_adapter`.)

Reward mixes are named `rewards` mappings (`{safe: {safety: 0.95, readability: 0.05}, ...}`, as a
sweep's reward_variants): an example under mix m gets m's r_a (`upo.prepare`: every scorer runs
once, each mix weights the same standardized scores) and the token `<|mix=m|>`. With both, the
conditions are the pairs (aux_coef, mix), aux_coef first (`steering_conditions`), and the prompt
ends with both tokens, aux_coef's first.

Which condition an example gets: example k of the training items (k counted in the items' order)
gets condition `(offset[k] + epoch) % K` of the K conditions, with `offset` a seeded permutation of the
items taken modulo K. So each epoch gives every condition to a share of the examples that differs by
at most one example, an example moves on to the next condition each epoch (K epochs show it with
every one), and the draw depends only on (seed, k, epoch): a resumed run, which restarts the epoch it
was in, gives every example the condition it had.

The reference log-probs do not depend on the condition: the reference is the unconditioned starting
model, pi_ref(y|x), so they are computed once per example from the prompt without the tokens (hence
`precompute_ref_logps: true`), and the condition changes only the policy's input (and, with mixes,
its reward). (With LoRA and no `ref_model`, the reference is the policy with its adapters disabled,
whose vocabulary holds the new tokens: their rows start near the mean embedding and take a little of
every softmax.) Prompts are tokenized one token shorter per condition token (`upo.prepare`), so that
prompt + condition still fits max_prompt_length.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

STEERING_FILE = "steering.json"  # in final/: the conditions the model was trained on
_TOKEN = re.compile(r"^<\|aux_coef=([0-9.e+-]+)\|>$")
MIX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a reward mix's name: in its token, point names, folders
_MIX_TOKEN = re.compile(r"^<\|mix=([A-Za-z0-9][A-Za-z0-9._-]*)\|>$")


class SteeringError(ValueError):
    """A steering condition that the model cannot take (unknown, missing, or given to an unsteered model)."""


def condition_token(aux_coef: float) -> str:
    """The control token of one aux_coef value: 0.3 -> '<|aux_coef=0.3|>'."""
    return f"<|aux_coef={aux_coef:g}|>"


def mix_token(name: str) -> str:
    """The control token of one reward mix: 'safe' -> '<|mix=safe|>'."""
    return f"<|mix={name}|>"


def condition_length(aux_coefs: list[float] | None, reward_mixes: dict | None) -> int:
    """Tokens a condition appends to the prompt: one per steered quantity (aux_coef, reward mix)."""
    return int(bool(aux_coefs)) + int(bool(reward_mixes))


@dataclass(frozen=True)
class Condition:
    """One steering condition: what an example is trained under, and the tokens that tell the model."""

    aux_coef: float | None  # UPO's aux_coef for the example; None: the config's (aux_coef not steered)
    reward_mix: str | None  # the mix whose r_a the example gets; None: the one `rewards` (mixes not steered)
    token_ids: tuple[int, ...]  # appended after the prompt: aux_coef's token, then the mix's


def steering_conditions(aux_ids: dict[float, int] | None, mix_ids: dict[str, int] | None) -> list[Condition]:
    """The K conditions of a steered run, aux_coef-major: every (aux_coef, mix) pair when both are
    steered, else every value of the one that is; [] when neither is.

    aux_ids: {aux_coef: token id} (`add_steering_tokens`); mix_ids: {mix: token id} (`add_mix_tokens`).
    """
    coefs = list((aux_ids or {}).items()) or [(None, None)]
    mixes = list((mix_ids or {}).items()) or [(None, None)]
    return [Condition(c, m, tuple(t for t in (c_id, m_id) if t is not None))
            for c, c_id in coefs for m, m_id in mixes if c is not None or m is not None]


def add_steering_tokens(tokenizer, aux_coefs: list[float]) -> dict[float, int]:
    """Add each value's token as a special token (a no-op for those present); returns {aux_coef: token id}.

    The model's embeddings must then be resized to `len(tokenizer)`.
    """
    return _add_special_tokens(tokenizer, {float(c): condition_token(c) for c in aux_coefs})


def add_mix_tokens(tokenizer, names: list[str]) -> dict[str, int]:
    """Add each reward mix's token as a special token (a no-op for those present); returns {name: token id}.

    The model's embeddings must then be resized to `len(tokenizer)`.
    """
    return _add_special_tokens(tokenizer, {n: mix_token(n) for n in names})


def _add_special_tokens(tokenizer, tokens: dict) -> dict:
    """Add `tokens` ({key: token text}) as special tokens, in order; returns {key: token id}."""
    tokenizer.add_special_tokens({"additional_special_tokens": list(tokens.values())},
                                 replace_extra_special_tokens=False)
    vocab = tokenizer.get_added_vocab()
    return {key: vocab[token] for key, token in tokens.items()}


def mix_token_ids(tokenizer) -> dict[str, int]:
    """{mix: token id} of the reward mixes a tokenizer holds, in the order they were added ({} for a
    model that was not steered over mixes)."""
    found = [(token_id, match.group(1)) for token, token_id in tokenizer.get_added_vocab().items()
             if (match := _MIX_TOKEN.match(token))]
    return {name: token_id for token_id, name in sorted(found)}


def steering_token_ids(tokenizer) -> dict[float, int]:
    """{aux_coef: token id} of the conditions a tokenizer holds ({} for a model that was not steered)."""
    out = {}
    for token, token_id in tokenizer.get_added_vocab().items():
        match = _TOKEN.match(token)
        if match:
            out[float(match.group(1))] = token_id
    return dict(sorted(out.items()))


def listed(values) -> str:
    return ", ".join(f"{v:g}" for v in values)


def steering_suffix(tokenizer, aux_coef: float | None, reward_mix: str | None = None) -> list[int]:
    """Token ids to append to a prompt at generation: the token of `aux_coef` for a model steered on
    it, then the token of `reward_mix` for one steered over reward mixes; nothing for what a model was
    not steered on and is not given; SteeringError otherwise, listing the trained values."""
    return _aux_suffix(tokenizer, aux_coef) + _mix_suffix(tokenizer, reward_mix)


def _aux_suffix(tokenizer, aux_coef: float | None) -> list[int]:
    ids = steering_token_ids(tokenizer)
    value = None if aux_coef is None else float(f"{aux_coef:g}")  # as its token writes it
    return _suffix(ids, value, listed(ids), given="" if aux_coef is None else f"aux_coef {aux_coef:g}",
                   steered="steered by token (steer_aux_coefs); its auxiliary strength was set",
                   hint=" (a model steered by adapter takes its aux_coef in its weights, from its folder: "
                        "`upo eval --aux_coef`, or upo.steer_adapter.load_steered(model, folder, aux_coef))",
                   choose="steered: choose its auxiliary strength with aux_coef (--aux_coef)", trained="values")


def _mix_suffix(tokenizer, reward_mix: str | None) -> list[int]:
    ids = mix_token_ids(tokenizer)
    return _suffix(ids, reward_mix, ", ".join(ids), given=f"reward mix {reward_mix!r}",
                   steered="steered over reward mixes (steer_reward_mixes); its rewards were set",
                   choose="steered over reward mixes: choose one with reward_mix (--reward_mix)", trained="mixes")


def _suffix(ids: dict, value, listed: str, *, given: str, steered: str, choose: str, trained: str,
            hint: str = "") -> list[int]:
    """The token of `value` among a model's trained conditions `ids` ({} for a model not steered on
    them, which takes none); a SteeringError for a value it lacks or a missing one, `listed` the trained."""
    if not ids:
        if value is not None:
            raise SteeringError(f"{given} was given, but this model was not trained {steered} when it was "
                                f"trained{hint}")
        return []
    if value is None:
        raise SteeringError(f"this model was trained {choose}, one of {listed}")
    if value not in ids:
        raise SteeringError(f"{given} is not one this model was trained on; trained {trained}: {listed}")
    return [ids[value]]


def condition_offsets(n: int, k: int, seed: int) -> np.ndarray:
    """[n] each item's condition in epoch 0: a seeded permutation of range(n), modulo k."""
    return np.random.default_rng([seed, 0x57EE]).permutation(n) % k


def write_steering(folder: Path, aux_coefs: list[float] | None, reward_mixes: dict | None = None,
                   by: str = "token") -> None:
    """final/steering.json: the trained conditions, how the model is told one (`by`: "token", their
    tokens; "adapter", the scaled steering adapter of `upo.steer_adapter`), and how to pick one (a run
    steered by token on aux_coef alone writes only its aux_coefs and tokens, as before mixes existed)."""
    record: dict = {}
    how, flags = [], []
    if by == "adapter":
        from upo.steer_adapter import ADAPTER_FOLDER

        record = {"aux_coefs": [float(c) for c in aux_coefs], "steer_by": "adapter", "adapter": ADAPTER_FOLDER,
                  "usage": f"load this folder with transformers, then peft's PeftModel.from_pretrained(model, "
                           f"'{ADAPTER_FOLDER}'); scale its adapter by aux_coef / {max(aux_coefs):g} on every LoRA "
                           "layer (set_scale) and merge_and_unload(); upo eval --aux_coef VALUE does it"}
        (folder / STEERING_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return
    if aux_coefs:
        record["aux_coefs"] = [float(c) for c in aux_coefs]
        record["tokens"] = {f"{c:g}": condition_token(c) for c in aux_coefs}
        how.append("the token of the chosen aux_coef")
        flags.append("--aux_coef VALUE")
    if reward_mixes:
        record["reward_mixes"] = reward_mixes
        record["mix_tokens"] = {name: mix_token(name) for name in reward_mixes}
        how.append("the token of the chosen reward mix")
        flags.append("--reward_mix NAME")
    record["usage"] = (f"append {', then '.join(how)} to the prompt (after the chat template's generation "
                       f"prompt); upo eval {' '.join(flags)} does it")
    (folder / STEERING_FILE).write_text(json.dumps(record, indent=2) + "\n")


def steering_record(folder: str | Path) -> dict:
    path = Path(folder) / STEERING_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def read_steering(folder: str | Path) -> list[float] | None:
    """The aux_coef values a model folder was trained on (its steering.json), or None when it has none."""
    return steering_record(folder).get("aux_coefs")


def read_reward_mixes(folder: str | Path) -> dict[str, dict[str, float]] | None:
    """The reward mixes (name -> reward weights) a model folder was trained on, or None when it has none."""
    return steering_record(folder).get("reward_mixes")


class ConditionedItems(Dataset):
    """Tokenized items, each with its condition: the condition's tokens appended to `prompt_ids`,
    `aux_coef` set when aux_coef is steered, and the mix's rewards (`chosen_reward` / `rejected_reward`,
    or `reward`, from the item's `mix_rewards[mix]`, `upo.prepare`) when reward mixes are.

    The wrapped items are not changed (their reference log-probs, computed without the tokens, are
    read from them when an item is fetched). `set_epoch` moves every example on to its next condition.
    """

    def __init__(self, items: list[dict], conditions: list[Condition], seed: int):
        self.items = items
        self.conditions = conditions  # K of them (`steering_conditions`)
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
        condition = self.conditions[self.condition(k)]
        out = {**item, "prompt_ids": [*item["prompt_ids"], *condition.token_ids]}
        if condition.aux_coef is not None:
            out["aux_coef"] = condition.aux_coef
        if condition.reward_mix is not None:
            out.update(item["mix_rewards"][condition.reward_mix])
        return out
