"""Training invariants on the tiny model: how a step is split does not change it, a seed fixes a
run, extreme rewards stay finite and clipped, and a non-finite loss stops the run naming where.

Gradient accumulation: batch 4 x 1 micro-batch and batch 2 x 2 accumulated micro-batches see the
same examples per optimizer step (the sampler draws whole steps, see LengthGroupedBatchSampler),
and the loss is a per-example mean, so the parameters agree up to float summation order. KTO's
reference point z0 is the mean over one micro-batch's mismatched pairs (averaged over processes,
not over accumulated micro-batches), so KTO-based methods are not accumulation-invariant after
step 1; they are compared across processes in test_multiprocess.py instead. A short last step is
the mean over its examples however its micro-batches split it.
"""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch
from helpers import TOPICS, pair_rows, run_config
from safetensors.torch import load_file

from upo.data.collate import LengthGroupedBatchSampler
from upo.metrics import read_metrics
from upo.trainer import train

TIMING = ("train/step_seconds", "train/tokens_per_second")  # wall-clock: differs run to run


def _weights(final) -> dict[str, torch.Tensor]:
    return load_file(str(final / "model.safetensors"))


def _deterministic(rows: list[dict]) -> list[dict]:
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


# ---- the sampler: a step's examples depend only on its total size ----------------------------


@pytest.mark.parametrize("group_by_length", [True, False])
@pytest.mark.parametrize("n", [24, 23, 7])
def test_sampler_steps_do_not_depend_on_how_they_are_split(n, group_by_length):
    lengths = [(k * 37) % 29 + 1 for k in range(n)]
    whole = list(LengthGroupedBatchSampler(lengths, 4, seed=3, group_by_length=group_by_length, mega_batch_mult=2))
    halves = list(LengthGroupedBatchSampler(lengths, 2, seed=3, group_by_length=group_by_length, mega_batch_mult=2,
                                            per_step=2))  # fmt: skip
    quarters = list(LengthGroupedBatchSampler(lengths, 1, seed=3, group_by_length=group_by_length, mega_batch_mult=2,
                                              per_step=4))  # fmt: skip
    assert [sum(halves[2 * k : 2 * k + 2], []) for k in range(len(whole))] == whole
    assert [sum(quarters[4 * k : 4 * k + 4], []) for k in range(len(whole))] == whole
    assert len(halves) == len(LengthGroupedBatchSampler(lengths, 2, seed=3, per_step=2))
    # only the last batch may be short (Accelerate's multi-process sharding relies on it)
    assert all(len(b) == 4 for b in whole[:-1]) and sorted(sum(whole, [])) == list(range(n))
    other_seed = list(LengthGroupedBatchSampler(lengths, 4, seed=4, group_by_length=group_by_length, mega_batch_mult=2))
    assert other_seed != whole or n < 8  # 7 sorted lengths, one full step: nothing left to shuffle


# ---- gradient accumulation -------------------------------------------------------------------


@pytest.mark.parametrize(("method", "pref_loss"), [("dpo", "kto"), ("upo", "dpo")])
def test_gradient_accumulation_equals_the_larger_batch(method, pref_loss, tiny_model_dir, pairs_file, tmp_path):
    common = dict(method=method, pref_loss=pref_loss, eval_fraction=0.0, max_steps=3)
    big = train(run_config(tiny_model_dir, pairs_file, tmp_path / "big", batch_size=4, **common))
    acc = train(run_config(tiny_model_dir, pairs_file, tmp_path / "acc", batch_size=2, gradient_accumulation_steps=2,
                           **common))  # fmt: skip
    assert_same_updates(_weights(big), _weights(acc), _weights(tiny_model_dir), lr=1e-2)
    rows_big = read_metrics(big.parent / "metrics.jsonl")
    rows_acc = read_metrics(acc.parent / "metrics.jsonl")
    assert [r["step"] for r in rows_big] == [r["step"] for r in rows_acc] == [1, 2, 3]
    for r, s in zip(rows_big, rows_acc, strict=True):
        for key in ("train/loss", "train/grad_norm", "train/rewards/margins"):
            assert r[key] == pytest.approx(s[key], rel=1e-4, abs=1e-6), key
    if method == "upo":
        c, d = load_file(str(big / "value_head.safetensors")), load_file(str(acc / "value_head.safetensors"))
        assert max((c[k] - d[k]).abs().max().item() for k in c) < 1e-5


# ---- a short last step ------------------------------------------------------------------------


def write_pairs(path, n: int):
    """n distinct pairs (helpers.pair_rows over n topics) as JSON lines at `path`."""
    topics = [*TOPICS, *(f"{t} {k}" for k in range(2, 2 + n // len(TOPICS)) for t in TOPICS)][:n]
    path.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(topics)))
    return path


@pytest.mark.parametrize(("batch_size", "accumulation"), [(2, 2), (1, 4)])
def test_a_short_last_step_is_the_mean_over_its_examples(batch_size, accumulation, tiny_model_dir, tmp_path):
    """15 pairs in steps of 4: three full steps, then one of 3. Split into micro-batches of 2 + 1 or
    1 + 1 + 1, every step's gradient (its norm, logged before clipping, for the policy and the value
    head) and the parameters match one batch of 4 (3 at the end). Each micro-batch's mean loss
    divided by the accumulation steps would give the last step's pairs weights 1/4, 1/4, 1/2 (or 1/4
    each: 3/4 of the gradient) instead of 1/3: measured, the last grad_norm off by 0.8% (33%) and the
    updates by 3e-2 relative (the 3/4 gradient leaves no trace in them: clipped to the same norm).
    Fixed, they agree to 1e-5 and 2e-4 (Adam turns rounding into steps of rare coordinates: slack 10)."""
    data = write_pairs(tmp_path / "pairs.jsonl", 15)
    common = dict(method="upo", pref_loss="dpo", eval_fraction=0.0, max_steps=None, num_epochs=1)
    big = train(run_config(tiny_model_dir, data, tmp_path / "big", batch_size=4, **common))
    split = train(run_config(tiny_model_dir, data, tmp_path / "split", batch_size=batch_size,
                             gradient_accumulation_steps=accumulation, **common))  # fmt: skip
    rows_big, rows_split = read_metrics(big.parent / "metrics.jsonl"), read_metrics(split.parent / "metrics.jsonl")
    assert [r["step"] for r in rows_big] == [r["step"] for r in rows_split] == [1, 2, 3, 4]
    for r, s in zip(rows_big, rows_split, strict=True):
        for key in ("train/grad_norm", "train/value_head/grad_norm"):
            assert r[key] == pytest.approx(s[key], rel=1e-4), (r["step"], key)
    assert_same_updates(_weights(big), _weights(split), _weights(tiny_model_dir), lr=1e-2, slack=10)
    c, d = load_file(str(big / "value_head.safetensors")), load_file(str(split / "value_head.safetensors"))
    assert max((c[k] - d[k]).abs().max().item() for k in c) < 1e-4  # value_lr 1e-3


# ---- seeds -----------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_run_and_another_seed_does_not(tiny_model_dir, pairs_file, tmp_path):
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        final = train(run_config(tiny_model_dir, pairs_file, tmp_path / name, method="upo", seed=seed, max_steps=3))
        runs[name] = (_deterministic(read_metrics(final.parent / "metrics.jsonl")), _weights(final))
    (rows_a, w_a), (rows_b, w_b), (rows_c, w_c) = runs["a"], runs["b"], runs["c"]
    assert rows_a == rows_b and all(torch.equal(w_a[k], w_b[k]) for k in w_a)  # bitwise on CPU
    assert rows_a != rows_c and any(not torch.equal(w_a[k], w_c[k]) for k in w_a)


# ---- extreme rewards -------------------------------------------------------------------------

EXTREME = """
    def extreme(prompts, completions):
        # +-1e6 by response parity: advantages far beyond exp's range, unstandardized
        return [1e6 if len(c) % 2 else -1e6 for c in completions]
"""


def test_extreme_advantages_stay_finite_and_weights_stay_clipped(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    (tmp_path / "upo_extreme_reward.py").write_text(textwrap.dedent(EXTREME))
    monkeypatch.syspath_prepend(str(tmp_path))
    max_weight = 5.0
    cfg = run_config(tiny_model_dir, pairs_file, tmp_path, method="upo", max_steps=30, batch_size=2,
                     rewards={"upo_extreme_reward:extreme": 1.0}, standardize_rewards=False, max_weight=max_weight,
                     eta=0.5, learning_rate=1e-3, eval_steps=10)  # fmt: skip
    final = train(cfg)
    rows = read_metrics(final.parent / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 31))
    for row in rows:
        for key, value in row.items():
            assert isinstance(value, (int, float)) and math.isfinite(value), (row["step"], key, value)
        assert 0.0 <= row["train/upo/weight_max"] <= max_weight
    assert abs(rows[0]["train/upo/reward_mean"]) <= 1e6 and max(abs(r["train/upo/advantage_mean"]) for r in rows) > 1e4
    assert max(r["train/upo/weight_max"] for r in rows) == pytest.approx(max_weight)  # the clip is reached
    assert all(math.isfinite(r["eval/upo/aux_loss"]) for r in rows if "eval/upo/aux_loss" in r)
    # The value head's regression on +-1e6 rewards has huge gradients; clipped apart from the
    # policy's, they leave the policy's gradient (and so its step) at its usual scale.
    assert max(r["train/value_head/grad_norm"] for r in rows) > 1e3
    assert max(r["train/grad_norm"] for r in rows) < 1e3
    weights = _weights(final)
    assert all(torch.isfinite(w).all() for w in weights.values())
    head = load_file(str(final / "value_head.safetensors"))
    assert all(torch.isfinite(w).all() for w in head.values())


# ---- a non-finite loss stops the run and says where --------------------------------------------


def test_non_finite_loss_stops_naming_step_epoch_batch_and_rows(tiny_model_dir, pairs_file, tmp_path):
    # An absurd learning rate overflows the weights after step 1; step 2's loss is NaN.
    cfg = run_config(tiny_model_dir, pairs_file, tmp_path, method="dpo", max_steps=5, learning_rate=1e38,
                     max_grad_norm=None, save_steps=1)  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at step 2, epoch 0, batch 2 "
                                                 r"\(dataset rows \[\d+, \d+\]\); metrics: .*loss=nan"):  # fmt: skip
        train(cfg)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1] and not (tmp_path / "run" / "final").exists()
    assert (tmp_path / "run" / "checkpoints" / "step-1").is_dir()  # the last good state is kept
