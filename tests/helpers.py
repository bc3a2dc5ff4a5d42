"""Shared test helpers (fixtures live in conftest.py)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from upo.config import UPOConfig

TOPICS = ["bread", "rain", "cats", "trains", "music", "tea", "maps", "snow", "bees", "glass", "salt", "kites"]


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
    )
    base.update(overrides)
    return UPOConfig(**base)


def save_tiny_reward_model(tiny_tokenizer, path, sign: float = 1.0):
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
