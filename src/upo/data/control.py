"""Control tokens for conditional SFT (CSFT; Korbak et al. 2023, "Pretraining language models with
human preferences", conditional training).

Training: each response is preceded by a token saying whether it is desirable (chosen) or
undesirable (rejected); the tokens are appended to the prompt, right where the assistant's reply
begins, so the response is learned *given* its label. Generation: a model whose tokenizer holds
these tokens is conditioned on the desirable one automatically (`upo.generation`, `upo eval`), so
a CSFT model behaves like the good half of its data without the caller knowing about the tokens.
"""

from __future__ import annotations

from upo.data.steering import steering_suffix

DESIRABLE_TOKEN = "<|desirable|>"
UNDESIRABLE_TOKEN = "<|undesirable|>"


def add_control_tokens(tokenizer) -> dict[bool, int]:
    """Add both tokens as special tokens (no-op when present); returns {label: token id}.

    The model's embeddings must then be resized to `len(tokenizer)`.
    """
    tokenizer.add_special_tokens({"additional_special_tokens": [DESIRABLE_TOKEN, UNDESIRABLE_TOKEN]},
                                 replace_extra_special_tokens=False)
    ids = control_token_ids(tokenizer)
    assert ids is not None
    return ids


def control_token_ids(tokenizer) -> dict[bool, int] | None:
    """{True: desirable id, False: undesirable id} if the tokenizer has the control tokens, else None."""
    vocab = tokenizer.get_added_vocab()
    if DESIRABLE_TOKEN in vocab and UNDESIRABLE_TOKEN in vocab:
        return {True: vocab[DESIRABLE_TOKEN], False: vocab[UNDESIRABLE_TOKEN]}
    return None


def generation_suffix(tokenizer, aux_coef: float | None = None, reward_mix: str | None = None) -> list[int]:
    """Token ids to append to every prompt at generation and evaluation time: the desirable control
    token for a model trained with CSFT, the tokens of `aux_coef` and `reward_mix` for a steered model
    (`upo.data.steering.steering_suffix`: a SteeringError when one is missing or not a trained value,
    or given to a model that was not steered on it), nothing for any other model."""
    ids = control_token_ids(tokenizer)
    return ([ids[True]] if ids else []) + steering_suffix(tokenizer, aux_coef, reward_mix)
