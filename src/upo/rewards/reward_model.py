"""Any Hugging Face sequence-classification model as a reward: `rm:PATH` (a local folder, or a Hub
name when online).

Each (prompt, response) is rendered as a user/assistant exchange with the model's chat template
when it has one (else `prompt + "\\n\\n" + response`), scored in batches of similar lengths (right-padded,
so a text's score does not depend on its batch beyond float rounding), on GPU when there is one.
The reward is the single logit of a 1-label model (Bradley-Terry reward models), or the logit of the
last label minus the first for classifiers with several labels (e.g. positive vs negative).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch
from tqdm.auto import tqdm

from upo.hub_names import looks_local

PREFIX = "rm:"


@functools.lru_cache(maxsize=4)
def _load(path: str):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    check_exists(PREFIX + path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Right padding: without explicit position ids, left padding would shift a text's positions by
    # its batch's padding, and so its score (`upo rm train` pads right too).
    tokenizer.padding_side = "right"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # needed to find each row's last token
    return tokenizer, model


def check_exists(spec: str | None) -> None:
    """A clear FileNotFoundError for `rm:PATH` whose PATH is a local folder that does not exist
    (transformers would take it for a Hub name and say that name is malformed); nothing otherwise."""
    if spec and spec.startswith(PREFIX) and looks_local(path := spec[len(PREFIX):]) \
            and not Path(path).expanduser().exists():
        raise FileNotFoundError(f"reward model {spec}: the folder {path} does not exist (train one with "
                                f"`upo rm train --output_dir ...`; its final/ is the reward model)")


def render(tokenizer, prompt: str, response: str) -> str:
    """The text a reward model reads for (prompt, response); `upo rm train` trains on the same."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return f"{prompt}\n\n{response}"


def adds_special_tokens(tokenizer) -> bool:
    """Whether to add the tokenizer's special tokens to a rendered text: not when a chat template
    already wrote them."""
    return not getattr(tokenizer, "chat_template", None)


def reward_model_scorer(path: str, batch_size: int = 16, max_length: int = 512, progress: bool = False,
                        desc: str = "reward model"):
    """A RewardFn backed by the sequence-classification model at `path`; `progress` shows a tqdm
    bar (`desc`) over the texts scored."""
    if path.startswith((".", "/", "~")) and not Path(path).expanduser().exists():
        raise ValueError(f"reward model path does not exist: {path}")

    @torch.inference_mode()
    def score(prompts: list[str], completions: list[str]) -> list[float]:
        tokenizer, model = _load(path)
        texts = [render(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
        ids = tokenizer(texts, truncation=True, max_length=max_length,
                        add_special_tokens=adds_special_tokens(tokenizer))["input_ids"]
        # Batches of similar lengths pad little: scored shortest first, returned in the input order.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [0.0] * len(ids)
        bar = tqdm(total=len(ids), desc=desc, unit="text", disable=not (progress and ids), leave=False)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            enc = tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt").to(model.device)
            logits = model(**enc).logits.float()  # [b, num_labels]
            values = logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - logits[:, 0]
            for i, v in zip(batch, values.cpu().tolist(), strict=True):
                out[i] = v
            bar.update(len(batch))
        bar.close()
        return out

    return score


def reward_model_version(path: str) -> str:
    """Changes when the model's config or weight files change (local folders); the name otherwise."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return f"rm-v1:{path}"
    digest = hashlib.sha256()
    for file in sorted(folder.glob("*.json")) + sorted(folder.glob("*.safetensors")):
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"rm-v1:{digest.hexdigest()[:16]}"
