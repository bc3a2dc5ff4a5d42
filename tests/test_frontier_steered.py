"""`upo frontier` with a steered UPO point: one training run evaluated at each of its conditions
(group "steered"), the hypervolume ratio steered / grid by hand, and the training compute of each
group read back from metrics.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import save_tiny_reward_model, write_lines

from upo.cli import main
from upo.config import ConfigError
from upo.frontier.compute import group_compute, run_compute
from upo.frontier.summary import summarize_axes
from upo.frontier.sweep import expand_points, load_sweep
from upo.frontier.uncertainty import bootstrap_draws, steered_ratio_interval

AXES = ["judge/win_rate", "readability/fk_grade"]


def test_a_steered_point_becomes_one_point_per_condition_sharing_one_run():
    spec = {"methods": ["dpo"], "points": [{"name": "upo-steered", "method": "upo", "steer_aux_coefs": [0, 0.3, 1]}]}
    points = expand_points(spec, {})
    assert [(p.name, p.group, p.aux_coef, p.trained) for p in points] == [
        ("dpo", "preference", None, None), ("upo-steered-aux0", "steered", 0.0, "upo-steered"),
        ("upo-steered-aux0.3", "steered", 0.3, "upo-steered"), ("upo-steered-aux1", "steered", 1.0, "upo-steered")]
    assert all(p.overrides == {"method": "upo", "steer_aux_coefs": [0.0, 0.3, 1.0]} for p in points[1:])
    clash = {"points": [{"name": "s", "steer_aux_coefs": [1]}, {"name": "s", "method": "dpo"}]}
    with pytest.raises(ConfigError, match="steered point 's' trains in points/s/: another point has that name"):
        expand_points(clash, {})


def _rows():
    """(win rate, grade) as in test_frontier's hand-worked summary, plus two steered conditions."""
    points = [("base", "base", 0.3, 10.0), ("dpo", "preference", 0.6, 8.0), ("kto", "preference", 0.4, 9.0),
              ("upo1", "upo", 0.5, 6.0), ("upo2", "upo", 0.35, 9.5), ("s1", "steered", 0.5, 7.0),
              ("s2", "steered", 0.4, 6.5)]
    return [{"name": n, "group": g, "metrics": {"judge/win_rate": w, "readability/fk_grade": f}}
            for n, g, w, f in points]


def test_steered_hypervolume_ratio_hand_worked():
    """Worst (0.3, 10), best (0.6, 6): scaled upo1 = (2/3, 1), upo2 = (1/6, 1/8) inside it: HV UPO 2/3.
    s1 = (2/3, 3/4), s2 = (1/3, 7/8): HV = 1/2 + 7/24 - 1/3 * 3/4 = 13/24; ratio (13/24) / (2/3) = 13/16.
    The preference-only / UPO numbers are those without the steered points."""
    e = summarize_axes(_rows(), AXES)
    assert e["hv_upo"] == pytest.approx(2 / 3) and e["hv_steered"] == pytest.approx(13 / 24)
    assert e["hv_ratio_steered"] == pytest.approx(13 / 16) and e["steered_front"] == ["s1", "s2"]
    # on the UPO and steered points' own scale: worst (0.35, 9.5) = upo2, best (0.5, 6); upo1 = (1, 1), so
    # HV UPO = 1; s1 = (1, 5/7), s2 = (1/3, 6/7): HV = 5/7 + 1/3 * 1/7 = 16/21, the ratio
    assert e["reference_steered"] == pytest.approx([0.35, 9.5]) and e["best_steered"] == pytest.approx([0.5, 6.0])
    assert e["hv_ratio_steered_own"] == pytest.approx(16 / 21)
    assert e["hv_gain"] == pytest.approx(1 / 3) and e["upo_front"] == ["upo1"]
    plain = summarize_axes([r for r in _rows() if r["group"] != "steered"], AXES)
    assert plain["hv_steered"] is None and plain["hv_ratio_steered"] is None


def test_without_preference_only_points_there_is_no_gain_and_the_plot_names_the_steered_ratio():
    """The HH steered sweep has no preference-only point (KTO is its grid's aux_coef 0): no front to lie beyond,
    so no HV gain (not HV(UPO) itself), and the plot's title gives HV steered / grid instead."""
    from upo.frontier.plot import plot_title

    rows = [r for r in _rows() if r["group"] != "preference"]
    e = summarize_axes(rows, AXES)
    assert e["hv_gain"] is None and e["hv_ratio_steered"] is not None
    e["hv_ratio_steered_interval"] = [0.25, 0.75]
    ratio = f"{e['hv_ratio_steered']:.3f}"
    assert plot_title(e) == f"judge/win_rate vs readability/fk_grade\nhypervolume of UPO steered / UPO (grid): {ratio} " \
                            "(95% interval 0.250 to 0.750)"  # fmt: skip
    with_pref = summarize_axes(_rows(), AXES)
    assert plot_title(with_pref) == "judge/win_rate vs readability/fk_grade\nhypervolume gain of UPO over the " \
                                    "preference-only front: 0.333"  # fmt: skip


def test_steered_ratio_interval_from_the_draws():
    """Every prompt scores each point's value: every draw is the point estimate, so the interval is
    13/16 at both ends (the hand-worked ratio above). Without steered points there is none."""
    rows = _rows()
    ids = ["p1", "p2", "p3"]
    units = {r["name"]: {"per_prompt": (ids, {m: np.full((1, 3), v) for m, v in r["metrics"].items()})} for r in rows}
    draws = bootstrap_draws(units, resamples=50)
    entry = summarize_axes(rows, AXES)
    assert steered_ratio_interval(entry, rows, draws) == pytest.approx([13 / 16, 13 / 16])
    assert steered_ratio_interval(entry, rows, draws, own=True) == pytest.approx([16 / 21, 16 / 21])
    plain = [r for r in rows if r["group"] != "steered"]
    assert steered_ratio_interval(summarize_axes(plain, AXES), plain, draws) is None


def test_steered_ratio_draws_keep_the_scale_of_the_point_estimates():
    """Draws made by hand: the base model's win rate (which sets the win axis's reference) moves to 0.2
    in half the draws, s1's to 0.45 in the other half. On the fixed scale the base model changes no
    group's hypervolume, and s1 at (1/2, 3/4) gives HV steered 3/8 + 1/3 * 1/8 = 5/12, ratio 5/8: the
    interval is [5/8, 13/16]. Rescaling each draw to its own worst value would move it."""
    rows = _rows()
    draws = {r["name"]: {m: np.full(100, v) for m, v in r["metrics"].items()} for r in rows}
    draws["base"]["judge/win_rate"] = np.where(np.arange(100) < 50, 0.2, 0.3)
    draws["s1"]["judge/win_rate"] = np.where(np.arange(100) < 50, 0.5, 0.45)
    low, high = steered_ratio_interval(summarize_axes(rows, AXES), rows, draws)
    assert low == pytest.approx(5 / 8, abs=0.01) and high == pytest.approx(13 / 16, abs=0.01)


def test_steered_ratio_draws_where_the_grid_has_no_hypervolume_count_as_infinite():
    """In 60 of 100 draws both grid points fall to the base model's win rate (the reference): the grid's
    HV is 0 there and the steered points' is not, so the ratio is infinite in 60% of the draws and the
    upper end is inf; the lower end is the estimate's 13/16 (the other 40%). Where the steered points
    fall to it as well, those draws have no ratio and are left out: the interval is 13/16 at both ends."""
    rows = _rows()
    draws = {r["name"]: {m: np.full(100, v) for m, v in r["metrics"].items()} for r in rows}
    for name in ("upo1", "upo2"):
        draws[name]["judge/win_rate"] = np.where(np.arange(100) < 60, 0.3, draws[name]["judge/win_rate"])
    entry = summarize_axes(rows, AXES)
    low, high = steered_ratio_interval(entry, rows, draws)
    assert low == pytest.approx(13 / 16) and high == math.inf
    for name in ("s1", "s2"):
        draws[name]["judge/win_rate"] = np.where(np.arange(100) < 60, 0.3, draws[name]["judge/win_rate"])
    assert steered_ratio_interval(entry, rows, draws) == pytest.approx([13 / 16, 13 / 16])


def test_the_conditions_of_one_steered_run_resample_their_seeds_alike():
    """Two conditions of one run, two seeds each (0.2 and 1 on every prompt): with runs naming their
    run, every draw picks the same seeds for both, so their draws are equal; apart, they differ."""
    ids = ["p1", "p2"]
    seeds = {"m": np.array([[0.2, 0.2], [1.0, 1.0]])}
    units = {"s-aux0": {"per_prompt": (ids, seeds)}, "s-aux1": {"per_prompt": (ids, seeds)}}
    shared = bootstrap_draws(units, resamples=200, runs={"s-aux0": "s", "s-aux1": "s"})
    assert np.array_equal(shared["s-aux0"]["m"], shared["s-aux1"]["m"])
    apart = bootstrap_draws(units, resamples=200)
    assert not np.array_equal(apart["s-aux0"]["m"], apart["s-aux1"]["m"])


def test_training_compute_from_metrics_hand_worked(tmp_path):
    """Rows at steps 2, 5 and 6 average 2, 3 and 1 steps: tokens 2 * 100 + 3 * 120 + 1 * 100 = 660;
    the steps' seconds 1.5, 1.5, 2, 2, 2 and 400 (a paused step) have median 2, so 6 steps take 12 s,
    not the 409 a sum would give; the evaluation-only row at step 3 counts nothing."""
    run = tmp_path / "run"
    run.mkdir()
    write_lines(run / "metrics.jsonl", [{"step": 2, "train/step_seconds": 1.5, "train/step_tokens": 100},
                                        {"step": 3, "eval/loss": 1.0},
                                        {"step": 5, "train/step_seconds": 2.0, "train/step_tokens": 120},
                                        {"step": 6, "train/step_seconds": 400.0, "train/step_tokens": 100}])
    assert run_compute(run) == {"steps": 6, "tokens": 660.0, "seconds": 12.0}
    assert run_compute(tmp_path / "missing") is None
    one = {"steps": 5, "tokens": 560.0, "seconds": 9.0}
    rows = [{"name": "upo-a", "group": "upo", "compute": one}, {"name": "upo-b", "group": "upo", "compute": one},
            {"name": "s-aux0", "group": "steered", "trained": "s", "compute": one},
            {"name": "s-aux1", "group": "steered", "trained": "s", "compute": one},
            {"name": "base", "group": "base", "compute": None}]
    assert group_compute(rows) == {"upo": {"runs": 2, "steps": 10, "tokens": 1120.0, "seconds": 18.0},
                                   "steered": {"runs": 1, "steps": 5, "tokens": 560.0, "seconds": 9.0}}


@pytest.mark.parametrize("steer_by", ["token", "adapter"])
def test_upo_frontier_with_a_steered_point_end_to_end(steer_by, tiny_model_dir, tiny_tokenizer, pairs_file, tmp_path,
                                                      capsys):
    out = tmp_path / "frontier"
    how = {"steer_by": "adapter", "lora": True, "lora_r": 4} if steer_by == "adapter" else {}
    spec = {
        "output_dir": str(out),
        "base": {"model": str(tiny_model_dir), "dataset": str(pairs_file), "eval_fraction": 0.25, "batch_size": 2,
                 "max_steps": 2, "learning_rate": 1e-2, "precision": "fp32", "progress": False,
                 "cache_dir": str(tmp_path / "cache"), "rewards": {"length": 1.0}, "max_length": 96,
                 "max_prompt_length": 32, "plot_curves": False},
        "eval": {"prompts": 2, "max_new_tokens": 4, "scorers": ["readability"],
                 "judge": f"rm:{save_tiny_reward_model(tiny_tokenizer, tmp_path / 'rm')}"},
        "methods": ["upo"],
        "aux_coef": [0.5, 2.0],
        "points": [{"name": "steered", "method": "upo", "steer_aux_coefs": [0.5, 2.0], "max_steps": 1, **how}],
    }
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(spec))
    # --points with the steered run's name: its one training and its evaluation at each condition
    assert main(["frontier", "--config", str(sweep), "--points", "steered"]) == 0, capsys.readouterr()
    log = capsys.readouterr().out
    assert log.count("training (upo) into") == 1 and "steered-aux2: evaluating" in log
    assert not (out / "frontier.json").exists()
    assert main(["frontier", "--config", str(sweep)]) == 0, capsys.readouterr()
    log = capsys.readouterr().out
    assert log.count("training (upo) into") == 2  # the two grid points; the steered run was trained above
    result = json.loads((out / "frontier.json").read_text())
    assert [(r["name"], r["group"], r["aux_coef"]) for r in result["points"]] == [
        ("base", "base", None), ("upo-aux0.5", "upo", 0.5), ("upo-aux2", "upo", 2.0),
        ("steered-aux0.5", "steered", 0.5), ("steered-aux2", "steered", 2.0)]
    steered = out / "points" / "steered"
    assert json.loads((steered / "final" / "steering.json").read_text())["aux_coefs"] == [0.5, 2.0]
    assert (steered / "final" / "steer_adapter").is_dir() == (steer_by == "adapter")
    for c in ("0.5", "2"):  # evaluated at each condition, with it
        assert json.loads((steered / f"aux-{c}" / "eval.json").read_text())["settings"]["aux_coef"] == float(c)
    assert result["compute"]["upo"]["runs"] == 2 and result["compute"]["upo"]["steps"] == 4
    assert result["compute"]["steered"]["runs"] == 1 and result["compute"]["steered"]["steps"] == 1
    assert result["compute"]["steered"]["tokens"] > 0
    entry = result["summary"][0]
    assert entry["hv_steered"] is not None and set(entry["steered_front"]) <= {"steered-aux0.5", "steered-aux2"}
    assert "hv_ratio_steered_interval" in entry
    report = (out / "report.md").read_text()
    assert "## UPO steered (one run) against UPO trained at each aux_coef" in report
    assert "| UPO steered | 1 | 1 |" in report and "| steered / grid | | 0.25 |" in report
    # a rerun skips every evaluation and trains nothing
    assert main(["frontier", "--config", str(sweep)]) == 0
    log = capsys.readouterr().out
    assert "steered-aux2: done earlier, skipping" in log and "training" not in log


# One epoch of the KTO term on the HH sweeps' 1343 training pairs: 2686 unpaired examples in batches of 4
HH_EPOCH_STEPS = 672


def test_example_steered_sweep_is_valid_and_within_its_compute_budget():
    """examples/frontier_hh_steered.yaml: every point's config builds; the steered run's optimizer
    steps are at most 40% of the grid UPO points' (one epoch each, the same batch size, so the same
    share of sequences)."""
    from conftest import HH_FILE

    from upo.frontier.run import point_config

    path = Path(__file__).resolve().parents[1] / "examples" / "frontier_hh_steered.yaml"
    for quick in (False, True):
        sweep = load_sweep(path, quick=quick)
        configs = {p.name: point_config(p, sweep) for p in sweep.points}
        grid = [p for p in sweep.points if p.group == "upo"]
        steered = [p for p in sweep.points if p.group == "steered"]
        # the grid's aux_coef 0 is KTO's run (UPO at aux_coef 0 with its KTO term trains KTO's policy)
        assert [configs[p.name].method for p in grid if p.aux_coef is None] == ["kto"]
        assert sorted(p.aux_coef or 0.0 for p in grid) == sorted(p.aux_coef for p in steered) == [0.0, 0.3, 1.0, 3.0]
        assert len({p.trained for p in steered}) == 1
        if not quick:
            assert all(configs[p.name].max_steps is None and configs[p.name].num_epochs == 1 for p in grid)
            assert configs[steered[0].name].max_steps <= 0.4 * len(grid) * HH_EPOCH_STEPS
            assert {c.batch_size for c in configs.values()} == {sweep.base["batch_size"]} == {4}
    if HH_FILE.exists():  # 1791 usable pairs, 448 held out: 1343 train, as 2686 unpaired examples
        from upo.data.readers import load_records
        from upo.evaluation.heldout import heldout_records

        pairs = len(load_records(str(HH_FILE)).records) - len(heldout_records(str(HH_FILE), eval_fraction=0.25, seed=42))
        assert math.ceil(2 * pairs / 4) == HH_EPOCH_STEPS


def test_a_steered_run_whose_training_fails_is_not_trained_again_for_each_condition(tmp_path, monkeypatch, capsys):
    """The conditions of one steered run share its training: when it fails, the first condition records
    the failure and the others are skipped, pointing to it (each used to train again, and fail again)."""
    from test_frontier_seeds import fake_eval, fake_train, sweep_file

    import upo.frontier.run as frontier_run

    trained = []

    def train(cfg):
        trained.append(cfg.steer_aux_coefs)
        if cfg.steer_aux_coefs:
            raise RuntimeError("out of memory")
        return fake_train(cfg)

    monkeypatch.setattr("upo.trainer.train", train)
    monkeypatch.setattr(frontier_run, "run_eval", fake_eval)
    spec = yaml.safe_load(sweep_file(tmp_path, [1]).read_text())
    spec.update(methods=["dpo"], aux_coef=[1.0],
                points=[{"name": "s", "method": "upo", "steer_aux_coefs": [0.0, 1.0, 3.0]}])
    sweep = tmp_path / "steered.yaml"
    sweep.write_text(yaml.safe_dump(spec))
    assert main(["frontier", "--config", str(sweep), "--points", "s"]) == 1
    assert trained == [[0.0, 1.0, 3.0]]  # once, for its three conditions
    log = capsys.readouterr().out
    assert "s-aux0 seed 1: FAILED: RuntimeError: out of memory" in log
    error = tmp_path / "frontier" / "points" / "s" / "seed-1" / "aux-0" / "error.txt"
    assert f"s-aux1 seed 1: skipped: its run's training failed ({error})" in log and "s-aux3 seed 1: skipped" in log
