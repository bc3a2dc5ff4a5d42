"""Reference log-probs shared by runs: a file per distinct precompute, under the cache folder.

Runs that differ only in what the reference forward never sees (the method, its rewards, aux_coef,
the learning rate) compute the same reference log-probs: `upo frontier`'s KTO-like points of a seed
run the same first-epoch batches through the same model. The key is a sha256 of everything that
decides the values bit for bit:

- every tensor each reference forward receives, call by call, in order (`InputDigest`: the batches
  as `upo.reference` feeds them, KTO's mismatched `kl_*` sequences included; packing and shared
  prompts are derived from these), and which output row lands in which item's slot of the table;
- the reference module (`reference_identity`): the bytes of every parameter and buffer of the
  module the forward runs (with LoRA, the adapters too, though disabled: a superset, so a hit is
  never wrong), its class and config (a steered run's resized vocabulary changes both), which code
  path runs it (a frozen copy, the policy, the policy without its adapters), attn_implementation,
  padding_free, shared_prompt, logits_chunk_tokens, LD-DPO's ld_alpha (when set) and train/eval mode;
- the numerics: the autocast precision, the torch / transformers / peft / accelerate versions,
  the device (its name on CUDA; on CPU its model name and the kernels' instruction set: kernels
  block their loops by the cache sizes of the CPU they run on), torch's thread count and
  matmul settings, and the process's rank and the number of processes (each computes its share).

A hit loads the table the run folder would have saved; files are written to a temporary name and
renamed, and carry the sha256 of their contents, so a truncated or damaged file is never used.
Sharded engines (FSDP, DeepSpeed) are not cached: a process holds only a shard of the weights.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from itertools import chain
from pathlib import Path

import torch
from accelerate.utils import DistributedType
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

FORMAT = 2  # bump when the key or the file changes meaning: older files then simply miss (2: adapters left out)
SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED)


@dataclass(frozen=True)
class ReferenceCache:
    """Where the shared reference log-probs live (`<cache root>/reference_logps`) and this process's
    reference forward (`reference_identity`), the part of the key that is not the inputs: computed
    on first use, so a resumed run that reads its own table never hashes the weights."""

    folder: Path
    identify: Callable[[], dict]

    @functools.cached_property
    def identity(self) -> dict:
        return self.identify()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"


def hash_tensor(h, tensor: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and bytes to the hash `h`."""
    h.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


class InputDigest:
    """A stand-in for `make_reference_fn`'s function that runs no model: it hashes every tensor it
    receives, call by call, and returns each row's running number as its "log-prob", so the table
    a dry run of the precompute fills says which forward row each item's value comes from."""

    def __init__(self):
        self.hash = hashlib.sha256()
        self.rows = 0

    def __call__(self, input_ids, attention_mask, loss_mask, kl=None):
        """Tensors [N, T] (and `kl`: three [B, T']) -> row numbers [N] (and [B]), as float32."""
        self.hash.update(b"call" if kl is None else b"call+kl")
        for tensor in (input_ids, attention_mask, loss_mask, *(kl or ())):
            hash_tensor(self.hash, tensor)
        rows = self._rows(len(input_ids))
        return rows if kl is None else (rows, self._rows(len(kl[0])))

    def _rows(self, n: int) -> torch.Tensor:
        if self.rows + n > 2**24:  # float32 holds integers exactly up to 2^24
            raise ValueError("too many reference rows to number exactly in float32")
        rows = torch.arange(self.rows, self.rows + n, dtype=torch.float32)
        self.rows += n
        return rows


def weights_digest(module: torch.nn.Module, skip_adapters: bool = False) -> str:
    """sha256 of every parameter and buffer of `module` (names, dtypes, shapes, bytes), in order;
    tied weights count once. ~1 s for 135M fp32 parameters. `skip_adapters`: leave out peft's LoRA
    weights (names with a `lora_` part), which a forward with the adapters disabled does not use: runs
    with different adapters (a run steered by adapter has a second one) share their reference."""
    h = hashlib.sha256()
    for name, tensor in chain(module.named_parameters(), module.named_buffers()):
        if skip_adapters and any(part.startswith("lora_") for part in name.split(".")):
            continue
        h.update(name.encode())
        hash_tensor(h, tensor)
    return h.hexdigest()


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


@functools.cache
def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo's `model name` on Linux, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor()


def numerics(accelerator) -> dict:
    """What else changes a forward's floating-point results on this process."""
    device = accelerator.device
    return {
        "mixed_precision": str(accelerator.mixed_precision),
        "versions": {p: _version(p) for p in ("torch", "transformers", "peft", "accelerate")},
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_model": cpu_model() if device.type == "cpu" else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul": [torch.backends.cuda.matmul.allow_tf32,
                        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
                        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
                        torch.backends.cudnn.allow_tf32],
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "process": [accelerator.process_index, accelerator.num_processes],
        "distributed_type": str(accelerator.distributed_type),
    }


def reference_identity(accelerator, policy, ref_model, lora: bool) -> dict:
    """The reference forward of `make_reference_fn(accelerator, policy, ref_model, lora)`, as the
    key sees it: the module it runs and how, and `numerics`."""
    settings = accelerator.unwrap_model(policy)
    module = ref_model if ref_model is not None else settings.lm
    return {
        "format": FORMAT,
        "runs": "ref_model" if ref_model is not None else "policy without adapters" if lora else "policy",
        "class": f"{type(module).__module__}.{type(module).__qualname__}",
        "config": _config(module),
        "attn_implementation": getattr(module.config, "_attn_implementation", None),
        "training": module.training,
        "options": [settings.padding_free, settings.shared_prompt, settings.logits_chunk_tokens]
        + ([settings.ld_alpha] if settings.ld_alpha is not None else []),  # keys made before ld_alpha existed hold
        "weights": weights_digest(module, skip_adapters=ref_model is None and lora),
        **numerics(accelerator),
    }


def _config(module) -> dict:
    """The module's transformers config as JSON values, less the folder it was read from."""
    config = json.loads(module.config.to_json_string(use_diff=False))
    config.pop("_name_or_path", None)
    return config


def reference_cache(accelerator, policy, ref_model, lora: bool, root: Path, log) -> ReferenceCache | None:
    """The shared cache for this run's reference forward, or None (with a line to `log`) where a
    process holds only a shard of the weights, which cannot identify the model."""
    if accelerator.distributed_type in SHARDED:
        log(f"upo: reference log-probs are not cached across runs under {accelerator.distributed_type}")
        return None
    return ReferenceCache(root / "reference_logps",
                          functools.partial(reference_identity, accelerator, policy, ref_model, lora))


def cache_key(parts: list[dict]) -> str:
    """One key from every process's part (its identity, inputs digest and row map), in rank order."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def table_digest(table: dict[str, torch.Tensor]) -> str:
    """sha256 of a table's names and tensors, stored in the file to catch damaged contents."""
    h = hashlib.sha256()
    for name in sorted(table):
        h.update(name.encode())
        hash_tensor(h, table[name])
    return h.hexdigest()


def read_table(path: Path, key: str, log) -> dict[str, torch.Tensor] | None:
    """The table stored under `key` at `path`; None if there is none, or (with a line to `log`) if
    the file is unreadable, truncated, damaged or not this key's."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            table = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    except (SafetensorError, OSError, ValueError) as e:
        log(f"upo: cached reference log-probs {path} are unreadable ({e}); computing them again")
        return None
    if meta.get("key") != key or meta.get("sha256") != table_digest(table):
        log(f"upo: cached reference log-probs {path} are damaged (their checksum or key differs); computing them again")
        return None
    return table


def write_table(path: Path, key: str, table: dict[str, torch.Tensor]) -> None:
    """Store `table` under `key` at `path`, atomically: a temporary file in the same folder, renamed
    when complete, so a killed process leaves no partial file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(table, tmp, metadata={"key": key, "sha256": table_digest(table)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
