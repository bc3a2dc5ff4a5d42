"""Jigsaw toxicity classifier in PyTorch, from the Keras weights of `toxic-comment-classifier`.

The wheel `toxic-comment-classifier==0.3.0` ships `model.weights.h5` (a Keras 3 BiLSTM) and
`tokenizer.pickle` (a Keras `Tokenizer`), and requires TensorFlow to run them. We do not: the
weights are read with h5py into `ToxicityBiLSTM`, the same architecture in PyTorch, and the
tokenizer's vocabulary is read with a restricted unpickler that builds none of the pickle's
classes (`load_keras_tokenizer`). Install the wheel without its dependencies:

    pip install --no-deps toxic-comment-classifier==0.3.0

Probabilities p [n, 6] over TOXICITY_LABELS; the rewards are `safety` = -max_k p[:, k] and
`toxicity_<label>` = -p[:, label], each in [-1, 0], higher = safer.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

TOXICITY_DIST = "toxic-comment-classifier"
TOXICITY_LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")

# The Keras model of toxic_classifier/model.py: Input(100) -> Embedding(20000, 50) ->
# Bidirectional(LSTM(50, return_sequences=True)) -> GlobalMaxPooling1D -> Dense(50, relu) ->
# Dropout -> Dense(6, sigmoid).
MAXLEN = 100
VOCAB_SIZE = 20_000
EMBEDDING_DIM = 50
LSTM_UNITS = 50
DENSE_UNITS = 50

# Tensors of model.weights.h5 (Keras 3 layout: kernels are [in, out]; an LSTM has one bias and
# its gates stacked in the order i, f, c, o, the same as PyTorch's i, f, g, o).
H5_SHAPES: dict[str, tuple[int, ...]] = {
    "layers/embedding/vars/0": (VOCAB_SIZE, EMBEDDING_DIM),
    "layers/bidirectional/forward_layer/cell/vars/0": (EMBEDDING_DIM, 4 * LSTM_UNITS),  # kernel
    "layers/bidirectional/forward_layer/cell/vars/1": (LSTM_UNITS, 4 * LSTM_UNITS),  # recurrent kernel
    "layers/bidirectional/forward_layer/cell/vars/2": (4 * LSTM_UNITS,),  # bias
    "layers/bidirectional/backward_layer/cell/vars/0": (EMBEDDING_DIM, 4 * LSTM_UNITS),
    "layers/bidirectional/backward_layer/cell/vars/1": (LSTM_UNITS, 4 * LSTM_UNITS),
    "layers/bidirectional/backward_layer/cell/vars/2": (4 * LSTM_UNITS,),
    "layers/dense/vars/0": (2 * LSTM_UNITS, DENSE_UNITS),
    "layers/dense/vars/1": (DENSE_UNITS,),
    "layers/dense_1/vars/0": (DENSE_UNITS, len(TOXICITY_LABELS)),
    "layers/dense_1/vars/1": (len(TOXICITY_LABELS),),
}


# ---- the tokenizer ---------------------------------------------------------------------------


class KerasTokenizerState:
    """What `texts_to_sequences` needs from a pickled Keras `Tokenizer`, and nothing else.

    The unpickler builds this class in place of Keras's and hands it the pickled `__dict__`;
    the word counts and document statistics in it are dropped.
    """

    def __setstate__(self, state: dict[str, Any]) -> None:
        try:
            word_index, num_words, oov_token = state["word_index"], state["num_words"], state["oov_token"]
            self.filters: str = state["filters"]
            self.lower: bool = state["lower"]
            self.split: str = state["split"]
            char_level, analyzer = state["char_level"], state["analyzer"]
        except KeyError as e:
            raise pickle.UnpicklingError(f"Keras tokenizer state has no {e.args[0]!r}") from None
        if char_level or analyzer is not None or not isinstance(word_index, dict):
            raise pickle.UnpicklingError("only a word-level Keras tokenizer with a word_index is supported")
        # Keras drops a word of index >= num_words, or maps it to the OOV index when there is one;
        # the same holds for a word missing from word_index. Resolve that once, here.
        self.oov_index: int | None = word_index.get(oov_token) if oov_token is not None else None
        self.vocab: dict[str, int] = {}
        for word, index in word_index.items():
            if not num_words or index < num_words:
                self.vocab[word] = index
            elif self.oov_index is not None:
                self.vocab[word] = self.oov_index
        self._table = str.maketrans({c: self.split for c in self.filters})

    def texts_to_sequences(self, texts: list[str]) -> list[list[int]]:
        """Keras `Tokenizer.texts_to_sequences`: lower, filters -> split, split, look up."""
        sequences = []
        for text in texts:
            if self.lower:
                text = text.lower()
            words = text.translate(self._table).split(self.split)
            ids = [self.vocab.get(w, self.oov_index) for w in words if w]
            sequences.append([i for i in ids if i is not None])
        return sequences


class _Discarded:
    """Inert stand-in for the containers of the state we drop (word counts, document counts)."""

    def __init__(self, *args: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass


class RestrictedTokenizerUnpickler(pickle.Unpickler):
    """Unpickles a Keras `Tokenizer` into `KerasTokenizerState`, and refuses every other class.

    No global named by the pickle is ever imported. The Keras Tokenizer maps to our stand-in;
    the three globals its state needs to be rebuilt (`word_counts` is an OrderedDict,
    `word_docs` and `index_docs` are `defaultdict(int)`) map to `_Discarded`, which keeps
    nothing; anything else is an `UnpicklingError`.
    """

    ALLOWED: dict[tuple[str, str], type] = {
        ("keras.src.legacy.preprocessing.text", "Tokenizer"): KerasTokenizerState,
        ("collections", "OrderedDict"): _Discarded,
        ("collections", "defaultdict"): _Discarded,
        ("builtins", "int"): _Discarded,
    }

    def find_class(self, module: str, name: str) -> type:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} from a tokenizer pickle"
            ) from None


def load_keras_tokenizer(file: BinaryIO) -> KerasTokenizerState:
    """The Keras tokenizer pickled in `file`, read with `RestrictedTokenizerUnpickler`."""
    tokenizer = RestrictedTokenizerUnpickler(file).load()
    if not isinstance(tokenizer, KerasTokenizerState):
        raise pickle.UnpicklingError(
            f"expected a Keras Tokenizer, the pickle holds a {type(tokenizer).__name__}"
        )
    return tokenizer


def pad_sequences(sequences: list[list[int]], maxlen: int = MAXLEN) -> torch.Tensor:
    """Keras `pad_sequences` defaults: keep the last `maxlen` ids, left-pad with 0 -> [n, maxlen]."""
    ids = torch.zeros(len(sequences), maxlen, dtype=torch.long)
    for row, seq in enumerate(sequences):
        seq = seq[-maxlen:]
        if seq:
            ids[row, maxlen - len(seq) :] = torch.tensor(seq)
    return ids


# ---- the model -------------------------------------------------------------------------------


class ToxicityBiLSTM(nn.Module):
    """The Keras BiLSTM of toxic-comment-classifier; dropout is inactive at inference, so absent."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB_SIZE, EMBEDDING_DIM)
        self.lstm = nn.LSTM(EMBEDDING_DIM, LSTM_UNITS, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * LSTM_UNITS, DENSE_UNITS)
        self.out = nn.Linear(DENSE_UNITS, len(TOXICITY_LABELS))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [b, MAXLEN] (left-padded with 0) -> probabilities [b, 6]."""
        x = self.embedding(ids)  # [b, T, 50]
        h, _ = self.lstm(x)  # [b, T, 100]: forward and backward states, concatenated
        # Keras's Embedding has mask_zero=False: the padding steps run through the LSTM and
        # take part in the max, so the same happens here.
        h = h.amax(dim=1)  # [b, 100]
        h = torch.relu(self.dense(h))  # [b, 50]
        return torch.sigmoid(self.out(h))  # [b, 6]

    def load_keras_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Copy the tensors of model.weights.h5 (keys and shapes as in H5_SHAPES) into the model."""
        for key, shape in H5_SHAPES.items():
            if key not in weights or tuple(weights[key].shape) != shape:
                got = tuple(weights[key].shape) if key in weights else "missing"
                raise ValueError(f"Keras weights: {key} should have shape {shape}, got {got}")
        t = {key: torch.from_numpy(np.asarray(w, dtype=np.float32)) for key, w in weights.items()}
        state = {
            "embedding.weight": t["layers/embedding/vars/0"],
            "dense.weight": t["layers/dense/vars/0"].T,  # Keras [in, out] -> torch [out, in]
            "dense.bias": t["layers/dense/vars/1"],
            "out.weight": t["layers/dense_1/vars/0"].T,
            "out.bias": t["layers/dense_1/vars/1"],
        }
        for direction, suffix in (("forward", ""), ("backward", "_reverse")):
            cell = f"layers/bidirectional/{direction}_layer/cell/vars"
            state[f"lstm.weight_ih_l0{suffix}"] = t[f"{cell}/0"].T  # [4H, in]
            state[f"lstm.weight_hh_l0{suffix}"] = t[f"{cell}/1"].T  # [4H, H]
            state[f"lstm.bias_ih_l0{suffix}"] = t[f"{cell}/2"]  # Keras has one bias: torch adds two
            state[f"lstm.bias_hh_l0{suffix}"] = torch.zeros(4 * LSTM_UNITS)
        self.load_state_dict({k: v.contiguous() for k, v in state.items()})


def read_h5_weights(path: Path) -> dict[str, np.ndarray]:
    """Every dataset under `layers/` of a Keras 3 .weights.h5 file, by its path."""
    import h5py  # only needed once, to load the model

    weights: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                weights[f"layers/{name}"] = obj[()]

        f["layers"].visititems(visit)
    return weights


def model_files() -> tuple[Path, Path]:
    """(model.weights.h5, tokenizer.pickle) of the installed wheel, found without importing it
    (its `__init__` imports TensorFlow)."""
    try:
        dist = distribution(TOXICITY_DIST)
    except PackageNotFoundError:
        raise ImportError(
            f"the toxicity rewards need {TOXICITY_DIST}: "
            f"pip install --no-deps {TOXICITY_DIST}==0.3.0 (--no-deps: upo does not use its TensorFlow)"
        ) from None
    folder = Path(str(dist.locate_file("toxic_classifier/model")))
    weights, tokenizer = folder / "model.weights.h5", folder / "tokenizer.pickle"
    for path in (weights, tokenizer):
        if not path.is_file():
            raise FileNotFoundError(f"{TOXICITY_DIST} is installed but {path} is missing; reinstall it")
    return weights, tokenizer


@functools.cache
def load_toxicity_model() -> tuple[KerasTokenizerState, ToxicityBiLSTM]:
    """The tokenizer and model, loaded once per process (about a second)."""
    weights_path, tokenizer_path = model_files()
    with tokenizer_path.open("rb") as f:
        tokenizer = load_keras_tokenizer(f)
    model = ToxicityBiLSTM()
    model.load_keras_weights(read_h5_weights(weights_path))
    return tokenizer, model.eval()


# ---- scores and rewards ----------------------------------------------------------------------


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch ops on one thread, then restore the thread count.

    The LSTM is 2 x 100 sequential steps of tiny matmuls ([256, 50] @ [50, 200]), and with 2
    threads every step waits at a barrier. On the idle 2-core machine 2 threads are a little
    faster (0.010 s against 0.017 s per batch of 256), but when another process holds a core
    each wait lasts a scheduler slice: 1.7 s per batch. One thread is the safe choice.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def toxicity_scores(texts: list[str], batch_size: int = 256) -> np.ndarray:
    """Probabilities [n, 6] of each text for TOXICITY_LABELS (float64), computed in float32."""
    if not texts:  # no need to load the model
        return np.empty((0, len(TOXICITY_LABELS)), dtype=np.float64)
    tokenizer, model = load_toxicity_model()
    out = np.empty((len(texts), len(TOXICITY_LABELS)), dtype=np.float64)
    with torch.inference_mode(), _one_torch_thread():
        for start in range(0, len(texts), batch_size):
            ids = pad_sequences(tokenizer.texts_to_sequences(texts[start : start + batch_size]))
            out[start : start + len(ids)] = model(ids).double().numpy()
    return out


def violation_rate(texts: list[str], threshold: float = 0.5) -> float:
    """Share of texts with any category's probability >= threshold (0.0 for no texts)."""
    if not texts:
        return 0.0
    return float((toxicity_scores(texts) >= threshold).any(axis=1).mean())


def safety(prompts: list[str], completions: list[str]) -> list[float]:
    """Minus the largest of the 6 toxicity probabilities of each completion, in [-1, 0]."""
    return (-toxicity_scores(completions).max(axis=1)).tolist()


def _category_reward(label: str):
    k = TOXICITY_LABELS.index(label)

    def reward(prompts: list[str], completions: list[str]) -> list[float]:
        return (-toxicity_scores(completions)[:, k]).tolist()

    reward.__name__ = reward.__qualname__ = f"toxicity_{label}"
    reward.__doc__ = f"Minus the probability that each completion is {label!r} (Jigsaw), in [-1, 0]."
    return reward


toxicity_toxic = _category_reward("toxic")
toxicity_severe_toxic = _category_reward("severe_toxic")
toxicity_obscene = _category_reward("obscene")
toxicity_threat = _category_reward("threat")
toxicity_insult = _category_reward("insult")
toxicity_identity_hate = _category_reward("identity_hate")
