"""Build the demo's preference pairs offline: sample the model, let the simulated user label them.

For each prompt the model samples `samples_per_prompt` responses at temperature 1.0 (for
diversity); the best- and worst-scored non-empty responses become `chosen` and `rejected`.
Prompts whose candidates all tie, or that have fewer than two non-empty responses, are skipped,
so the result can have fewer rows than prompts.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from upo.demo.simulated_user import label_pair, user_score
from upo.generation import generate


def build_demo_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    samples_per_prompt: int = 2,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Sample, score and pair responses to single-turn user prompts.

    Returns:
        Rows `{"prompt": [{"role": "user", "content": prompt}], "chosen": str, "rejected": str}`
        in prompt order (a paired preference dataset in the conversational format).
    """
    if samples_per_prompt < 2:
        raise ValueError(f"samples_per_prompt must be at least 2 to make a pair, got {samples_per_prompt}")
    messages = [[{"role": "user", "content": prompt}] for prompt in prompts]
    samples = generate(
        model,
        tokenizer,
        messages,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=1.0,
        num_return_sequences=samples_per_prompt,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    rows = []
    for prompt, message, responses in zip(prompts, messages, samples, strict=True):
        ranked = sorted((r for r in responses if r), key=lambda r: user_score(prompt, r), reverse=True)
        if len(ranked) < 2:
            continue
        pair = label_pair(prompt, ranked[0], ranked[-1])  # None if even best and worst tie
        if pair is not None:
            rows.append({"prompt": message, "chosen": pair[0], "rejected": pair[1]})
    return rows


def write_jsonl(rows: list[dict], path: str | Path) -> None:
    """Write one JSON object per line (UTF-8), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
