"""Shared test helpers (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from upo.config import UPOConfig
from upo.methods import METHODS

TIMING = ("train/step_seconds", "train/tokens_per_second")  # wall-clock: differs run to run
TOPICS = ["bread", "rain", "cats", "trains", "music", "tea", "maps", "snow", "bees", "glass", "salt", "kites"]


CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "Human: What is the capital of France? Assistant: The capital of France is Paris.",
    "How do I bake bread? Mix flour, water, salt and yeast, then knead and bake it.",
    "I will not help with that. Please be kind to other people.",
    string.ascii_letters + string.digits + string.punctuation,
] * 20


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>", bos_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(vocab_size: int, seed: int = 0, hidden_size: int = 32, intermediate_size: int = 64
                     ) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=None,
    )
    return LlamaForCausalLM(config)


def pair_rows(topics: list[str] = TOPICS) -> list[dict]:
    """Small conversational pairs, one per topic (twelve by default): a kind answer chosen over a rude one."""
    return [
        {
            "prompt": [{"role": "user", "content": f"Tell me about {t}."}],
            "chosen": f"{t.capitalize()} are interesting. Here is a short, kind answer about {t}.",
            "rejected": f"No. I will not talk about {t}, it is a dumb and long and complicated question!",
        }
        for t in topics
    ]


def write_pairs(path, n: int):
    """n distinct pairs (helpers.pair_rows over n topics) as JSON lines at `path`."""
    topics = [*TOPICS, *(f"{t} {k}" for k in range(2, 2 + n // len(TOPICS)) for t in TOPICS)][:n]
    path.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(topics)))
    return path


def run_config(tiny_model_dir, pairs_file, tmp_path, **overrides) -> UPOConfig:
    """A 2-step fp32 run of the tiny model on `pairs_file`, writing under tmp_path/run."""
    base = dict(
        model=str(tiny_model_dir),
        dataset=str(pairs_file),
        eval_fraction=0.25,
        batch_size=2,
        max_steps=2,
        learning_rate=1e-2,
        precision="fp32",
        output_dir=str(tmp_path / "run"),
        progress=False,
        cache_dir=str(tmp_path / "cache"),
        rewards={"length": 1.0},
        max_length=96,
        max_prompt_length=32,
        plot_curves=False,  # seconds per run on this CPU; test_curves.py covers it
    )
    base.update(overrides)
    method = METHODS[base.get("method", "upo")]
    if "rewards" not in overrides and not (method.uses_rewards or method.accepts_rewards or base.get("relabel")):
        base["rewards"] = {}  # rewards given to a method that ignores them are an error
    return UPOConfig(**base)


def save_tiny_reward_model(tiny_tokenizer, path, sign: float = 1.0) -> str:
    """A 1-label tiny sequence-classification model + tokenizer at `path` (sign flips its scores)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1,
                         pad_token_id=tiny_tokenizer.pad_token_id)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.mul_(sign)
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return str(path)


def t(*values: float, requires_grad: bool = False) -> torch.Tensor:
    """A float32 1-d tensor of `values` (for hand-worked loss tests)."""
    return torch.tensor(values, dtype=torch.float32, requires_grad=requires_grad)


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x), by hand."""
    return math.log(1.0 + math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def write_lines(path: Path, lines: list) -> Path:
    """One line per entry: bytes and str as they are, anything else as JSON."""
    raw = b"".join((x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode()) + b"\n"
                   for x in lines)  # fmt: skip
    path.write_bytes(raw)
    return path


def deterministic(rows: list[dict]) -> list[dict]:
    """metrics.jsonl rows without the wall-clock metrics (which differ run to run)."""
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def assert_same_updates(a: dict, b: dict, start: dict, lr: float, slack: float = 1.0) -> None:
    """Two trainings from `start` made the same updates, up to float summation order.

    Tolerance: per tensor, |update_a - update_b| / |update_a| < slack * 1e-4 (Frobenius), and no
    coordinate off by more than slack * lr / 50. Adam divides each coordinate by its gradient's RMS,
    so a coordinate whose gradient is ~0 (the embedding row of a token that barely occurs) turns
    rounding noise into a visible step; 3 steps differ by up to ~3e-5 at lr 1e-2 here (4 steps, one
    of them split unevenly, by ~2e-4), while different examples per step move the weights apart by ~lr.
    """
    for k in a:
        da, db = a[k] - start[k], b[k] - start[k]
        assert da.norm() > 0, f"{k} did not move"
        assert (da - db).norm() / da.norm() < slack * 1e-4, (k, ((da - db).norm() / da.norm()).item())
        assert (da - db).abs().max() < slack * lr / 50, (k, (da - db).abs().max().item())
