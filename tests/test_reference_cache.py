"""The reference log-probs cache shared by runs (upo.reference_cache): runs whose reference forward
sees the same inputs with the same model and settings reuse one precompute, bit for bit; a change
in anything the forward sees misses; a damaged file is never used."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml
from helpers import build_tiny_model, run_config, write_pairs
from safetensors.torch import load_file

from upo.config import UPOConfig
from upo.frontier.folders import check_same_run
from upo.methods import METHODS
from upo.reference_cache import InputDigest
from upo.trainer import train

HIT = "upo: reference log-probs reused from the cache"


def _run(model_dir, data, tmp_path, name: str, capsys, **overrides) -> tuple[dict[str, torch.Tensor], bool]:
    """One 1-step bf16 run into tmp_path/name, its cache in tmp_path/cache (shared by the test's
    runs): (the run folder's reference log-probs, whether they came from the cache)."""
    keys = {"method": "kto", "precision": "bf16", "max_steps": 1, "output_dir": str(tmp_path / name), **overrides}
    train(run_config(model_dir, data, tmp_path, **keys))
    hit = HIT in capsys.readouterr().out
    return load_file(str(tmp_path / name / "reference_logps.safetensors")), hit


def _entries(tmp_path) -> list:
    return sorted((tmp_path / "cache" / "reference_logps").glob("*.safetensors"))


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _digest(*calls) -> tuple[str, list]:
    """InputDigest's hash after `calls` (each (input_ids, attention_mask, loss_mask[, kl])) and its answers."""
    digest = InputDigest()
    answers = [digest(*call[:3], kl=call[3] if len(call) > 3 else None) for call in calls]
    return digest.hash.hexdigest(), answers


def test_the_input_digest_sees_every_tensor_and_batch_boundary_and_numbers_every_row():
    """The key's inputs part: one element changed in any tensor a forward receives, KTO's mismatched
    ones included, or the same rows split into other calls (in bf16 a row's value depends on its
    batch), gives another hash. The answers number the rows, so a dry run's table says which forward
    row each item's value comes from."""
    ids, mask = torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss = torch.tensor([[0, 1, 1], [0, 1, 0]]).bool()
    kl = [ids.flip(0), mask.flip(0), loss.flip(0)]
    base, answers = _digest((ids, mask, loss), (ids, mask, loss, kl))
    assert [a.tolist() for a in (answers[0], *answers[1])] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    tensors = [ids, mask, loss, *kl]
    for i in range(len(tensors)):
        changed = [t.clone() for t in tensors]
        changed[i][1, 1] = ~changed[i][1, 1] if changed[i].dtype == torch.bool else changed[i][1, 1] + 1
        assert _digest((ids, mask, loss), (*changed[:3], changed[3:]))[0] != base, i
    split = _digest((ids[:1], mask[:1], loss[:1]), (ids[1:], mask[1:], loss[1:]), (ids, mask, loss, kl))[0]
    assert split != base and _digest((ids, mask, loss), (ids, mask, loss, kl))[0] == base
    # the mismatched sequences run from the batch's prompts' keys and values: not a forward of their own
    assert _digest((ids, mask, loss, kl))[0] != _digest((ids, mask, loss), kl)[0]


@pytest.mark.parametrize("lora", [False, True])
def test_runs_that_differ_outside_the_reference_forward_share_one_entry(lora, tiny_model_dir, pairs_file, tmp_path,
                                                                        capsys):
    """KTO, then UPO with a KTO term (rewards, aux_coef and learning rate: nothing the reference
    sees) on the same seed and data: the second loads the first's values, bitwise those that
    computing gives (a run with the cache off), train and held-out, KTO's mismatched ones included.
    With LoRA the reference is the policy with its adapters disabled."""
    kto, kto_hit = _run(tiny_model_dir, pairs_file, tmp_path, "kto", capsys, rewards={}, lora=lora)
    upo, upo_hit = _run(tiny_model_dir, pairs_file, tmp_path, "upo", capsys, method="upo", aux_coef=3.0,
                        learning_rate=1e-3, lora=lora)
    off, off_hit = _run(tiny_model_dir, pairs_file, tmp_path, "off", capsys, method="upo", cache_reference_logps=False,
                        lora=lora)
    assert (kto_hit, upo_hit, off_hit) == (False, True, False)
    assert len(_entries(tmp_path)) == 1
    assert {"train.reference_kl_logps", "eval.reference_chosen_logps"} <= upo.keys()
    assert _equal(upo, off) and _equal(kto, off)
    if lora:  # steered by adapter: a second adapter, disabled with the first, and the same batches
        steered, steered_hit = _run(tiny_model_dir, pairs_file, tmp_path, "adapter", capsys, method="upo",
                                    steer_aux_coefs=[0.0, 1.0], steer_by="adapter", lora=True)
        assert steered_hit and _equal(steered, off) and len(_entries(tmp_path)) == 1


@pytest.mark.parametrize("change", ["seed", "max_length", "precision", "model", "weights", "steered", "cpu"])
def test_a_change_the_reference_forward_sees_misses(change, tiny_model_dir, wide_model_dir, tiny_tokenizer, pairs_file,
                                                    tmp_path, capsys, monkeypatch):
    """Another seed batches the examples otherwise; max_length cuts them otherwise; fp32 is another
    autocast; another model (a wider one; the same one with other weights), or a steered run's
    vocabulary resized for its condition tokens (same batches: the reference never sees the
    condition), changes the reference; so does another CPU model (a cache folder shared by machines)."""
    base = {"method": "upo"}
    changed = {"seed": {"seed": 7}, "max_length": {"max_length": 64}, "precision": {"precision": "fp32"},
               "steered": {"steer_aux_coefs": [0.5, 2.0]}}.get(change, {})  # fmt: skip
    model = {"model": wide_model_dir, "weights": tmp_path / "reseeded"}.get(change, tiny_model_dir)
    if change == "weights":  # same config, other initial weights
        build_tiny_model(len(tiny_tokenizer), seed=1).save_pretrained(model)
        tiny_tokenizer.save_pretrained(model)
    _run(tiny_model_dir, pairs_file, tmp_path, "base", capsys, **base)
    if change == "cpu":
        monkeypatch.setattr("upo.reference_cache.cpu_model", lambda: "Another CPU")
    _, hit = _run(model, pairs_file, tmp_path, "changed", capsys, **base, **changed)
    assert not hit
    assert len(_entries(tmp_path)) == 2


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_entry_is_computed_again(damage, tiny_model_dir, pairs_file, tmp_path, capsys):
    """A file cut short (a killed writer on a filesystem without atomic renames, a full disk) or with
    one byte changed is named, not used, and replaced by the recomputed values."""
    first, _ = _run(tiny_model_dir, pairs_file, tmp_path, "first", capsys)
    (entry,) = _entries(tmp_path)
    raw = entry.read_bytes()
    entry.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else raw[:-1] + bytes([raw[-1] ^ 1]))
    keys = {"method": "kto", "precision": "bf16", "max_steps": 1, "output_dir": str(tmp_path / "second")}
    train(run_config(tiny_model_dir, pairs_file, tmp_path, **keys))
    out = capsys.readouterr().out
    assert str(entry) in out and HIT not in out
    assert ("unreadable" if damage == "truncated" else "damaged") in out
    assert _equal(load_file(str(tmp_path / "second" / "reference_logps.safetensors")), first)
    _, hit = _run(tiny_model_dir, pairs_file, tmp_path, "third", capsys)
    assert hit


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_bf16_step_zero_is_exact_with_cached_reference_log_probs(method, wide_model_dir, tmp_path, monkeypatch, capsys):
    """The bf16 step-0 exactness of test_trainer, with reference log-probs a previous run (another
    method with the same reference forward) cached: every first-step log-ratio is exactly 0, and
    KTO's z0. 13 pairs at batch 4, one optimizer step over the whole epoch."""
    data = write_pairs(tmp_path / "pairs-13.jsonl", 13)
    keys = {"batch_size": 4, "gradient_accumulation_steps": 4 if method == "dpo" else 7, "eval_fraction": 0.0}
    first = {"dpo": {"method": "upo", "pref_loss": "dpo"}, "kto": {"method": "upo"}}[method]
    _run(wide_model_dir, data, tmp_path, "first", capsys, **first, **keys)
    seen = []
    entry = METHODS[method]
    spy = lambda x, cfg: (seen.append((x.policy_logps.detach() - x.reference_logps, x.kto_reference_point)),  # noqa: E731
                          entry.loss(x, cfg))[1]
    monkeypatch.setitem(METHODS, method, dataclasses.replace(entry, loss=spy))
    _, hit = _run(wide_model_dir, data, tmp_path, "second", capsys, method=method, rewards={}, **keys)
    assert hit
    assert sum(len(d) for d, _ in seen) == 26
    for diff, z0 in seen:
        assert torch.equal(diff, torch.zeros_like(diff)), diff
        assert z0 is None or z0.item() == 0.0


def test_a_run_folder_from_before_the_cache_is_the_same_run(tmp_path):
    """config.yaml written before cache_reference_logps existed: the key counts as its default."""
    cfg = UPOConfig(dataset="d.jsonl", output_dir=str(tmp_path))
    old = {k: v for k, v in cfg.to_dict().items() if k != "cache_reference_logps"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    check_same_run(cfg, tmp_path)
    check_same_run(dataclasses.replace(cfg, cache_reference_logps=False), tmp_path)  # it changes no result
