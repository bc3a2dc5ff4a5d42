"""`points_dir`: sweeps that share their run folders share the runs they have in common (same point
name, same config), each writing its own report; --quick never writes into the full sweep's; a
failed run's traceback is kept per seed. Training and evaluation are replaced by the synthetic
results of test_frontier_seeds (no model is trained or loaded)."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest
import yaml
from test_frontier_seeds import fake_eval, fake_train, sweep_file

import upo.frontier.run as frontier_run
from upo.cli import main
from upo.config import ConfigError
from upo.frontier.run import eval_template, point_config, run_eval_config
from upo.frontier.sweep import Point, load_sweep

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def runs(sweep) -> dict[str, Point]:
    """A sweep's points by run folder name (a steered run once), the base model's included."""
    return {p.trained or p.name: p for p in [Point("base", "base"), *sweep.points]}


def test_the_steered_example_reuses_the_seeds_examples_runs():
    """frontier_hh_steered.yaml trains in frontier_hh_seeds.yaml's points_dir: every run the two have
    in common by name must have the same config (else `check_same_run` refuses its folder) and the
    same evaluation settings (else it is evaluated again), at every seed."""
    seeds, steered = load_sweep(EXAMPLES / "frontier_hh_seeds.yaml"), load_sweep(EXAMPLES / "frontier_hh_steered.yaml")
    assert steered.points_dir == seeds.points_dir == Path("runs/frontier-hh-seeds/points")
    assert steered.output_dir != seeds.output_dir and steered.seeds == seeds.seeds
    assert steered.base == seeds.base and steered.eval == seeds.eval
    template, steered_template = eval_template(seeds, seeds.base_config()), eval_template(steered, steered.base_config())
    assert steered_template.settings() == template.settings()
    common = sorted(runs(steered).keys() & runs(seeds).keys())
    assert common == ["base", "kto", "upo-kto-aux0.3", "upo-kto-aux1"]
    assert {p.name for p in steered.points} - set(common) == {
        "upo-kto-aux3", "upo-steered-aux0", "upo-steered-aux0.3", "upo-steered-aux1", "upo-steered-aux3"}
    for seed in seeds.seeds:
        for name in common:
            mine, theirs = runs(steered)[name], runs(seeds)[name]
            if name != "base":
                assert point_config(mine, steered, seed).to_dict() == point_config(theirs, seeds, seed).to_dict(), name
            assert (run_eval_config(mine, steered, steered_template, seed).settings()
                    == run_eval_config(theirs, seeds, template, seed).settings()), name


def test_the_weighted_steered_example_is_the_steered_one_with_more_steps_at_aux_coef_0():
    """frontier_hh_steered_weighted.yaml: the same grid runs (shared, same configs and evaluation) and base, its
    steered run differing from frontier_hh_steered.yaml's only in steer_aux_weights (and name), its own reports."""
    steered = load_sweep(EXAMPLES / "frontier_hh_steered.yaml")
    weighted = load_sweep(EXAMPLES / "frontier_hh_steered_weighted.yaml")
    assert weighted.points_dir == steered.points_dir and weighted.output_dir != steered.output_dir
    assert weighted.base == steered.base and weighted.eval == steered.eval and weighted.seeds == steered.seeds
    quick = [load_sweep(EXAMPLES / f"frontier_hh_steered{tail}.yaml", quick=True) for tail in ("", "_weighted")]
    assert quick[0].points_dir != quick[1].points_dir and steered.points_dir not in (q.points_dir for q in quick)
    mine, theirs = runs(weighted), runs(steered)
    assert sorted(mine.keys() - theirs.keys()) == ["upo-steered-w3111"]
    assert sorted(theirs.keys() - mine.keys()) == ["upo-steered"]
    for seed in steered.seeds:
        for name in mine.keys() & theirs.keys() - {"base"}:
            assert point_config(mine[name], weighted, seed).to_dict() == point_config(theirs[name], steered, seed).to_dict()
        a = point_config(mine["upo-steered-w3111"], weighted, seed).to_dict()
        b = point_config(theirs["upo-steered"], steered, seed).to_dict()
        assert {k for k in a if a[k] != b[k]} == {"steer_aux_weights", "output_dir"}
        assert a["steer_aux_weights"] == [3, 1, 1, 1]


def test_quick_never_uses_the_full_sweeps_points_dir(tmp_path, monkeypatch):
    """Without points_dir in quick:, --quick keeps its runs in the quick output_dir's points/; with
    one, in that. The example's quick run has its own too, and a quick run writes nothing into the
    full sweep's points_dir."""
    path = tmp_path / "s.yaml"
    spec = {"output_dir": "full", "points_dir": "shared/points", "base": {"dataset": "x"}, "methods": ["dpo"],
            "quick": {"output_dir": "q"}}
    path.write_text(yaml.safe_dump(spec))
    assert load_sweep(path).points_dir == Path("shared/points")
    assert load_sweep(path, quick=True).points_dir == Path("q/points")
    assert load_sweep(path, quick=True, output_dir="elsewhere").points_dir == Path("elsewhere/points")
    path.write_text(yaml.safe_dump({**spec, "quick": {"output_dir": "q", "points_dir": "q-runs"}}))
    assert load_sweep(path, quick=True).points_dir == Path("q-runs")
    # no points_dir: output_dir/points, --output_dir's when given
    path.write_text(yaml.safe_dump({k: v for k, v in spec.items() if k != "points_dir"}))
    assert load_sweep(path).points_dir == Path("full/points")
    assert load_sweep(path, output_dir="o").points_dir == Path("o/points")
    path.write_text(yaml.safe_dump({**spec, "points_dir": ["a"]}))
    with pytest.raises(ConfigError, match="points_dir: expected a folder path"):
        load_sweep(path)

    example = EXAMPLES / "frontier_hh_steered.yaml"
    full, quick = load_sweep(example), load_sweep(example, quick=True)
    assert quick.points_dir == quick.output_dir / "points" and full.points_dir not in (quick.points_dir,
                                                                                     *quick.points_dir.parents)

    monkeypatch.setattr("upo.trainer.train", fake_train)
    monkeypatch.setattr(frontier_run, "run_eval", fake_eval)
    shared = tmp_path / "frontier" / "points"
    sweep = yaml.safe_load(sweep_file(tmp_path, [1]).read_text())
    path.write_text(yaml.safe_dump({**sweep, "points_dir": str(shared), "quick": {"output_dir": str(tmp_path / "q")}}))
    assert main(["frontier", "--config", str(path), "--quick"]) == 0
    assert (tmp_path / "q" / "points" / "kto" / "seed-1" / "final").is_dir() and not shared.exists()


def test_two_sweeps_with_one_points_dir_share_their_runs(tmp_path, monkeypatch, capsys):
    """Sweep B (kto, upo-aux1, upo-aux3) trains and evaluates first; sweep A (dpo, kto, upo-aux0.3,
    upo-aux1, upo-aux3) in its own output_dir but B's points_dir then trains and evaluates only dpo
    and upo-aux0.3. Each reports every one of its points; neither report lands in the other's folder."""
    calls = []
    monkeypatch.setattr("upo.trainer.train", lambda cfg: calls.append(cfg) or fake_train(cfg))
    monkeypatch.setattr(frontier_run, "run_eval", fake_eval)
    a = yaml.safe_load(sweep_file(tmp_path, [1, 2]).read_text())
    b_path = tmp_path / "b.yaml"
    b_path.write_text(yaml.safe_dump({**a, "output_dir": str(tmp_path / "b"), "methods": ["kto", "upo"],
                                      "aux_coef": [1.0, 3.0], "points_dir": str(tmp_path / "frontier" / "points")}))
    assert main(["frontier", "--config", str(b_path)]) == 0, capsys.readouterr().out
    assert len(calls) == 3 * 2
    calls.clear()
    capsys.readouterr()

    assert main(["frontier", "--config", str(sweep_file(tmp_path, [1, 2]))]) == 0
    log = capsys.readouterr().out
    assert sorted({Path(c.output_dir).parent.name for c in calls}) == ["dpo", "upo-aux0.3"] and len(calls) == 4
    assert log.count(": evaluating") == 4 and "kto seed 2: done earlier, skipping" in log
    assert "base seed 1: done earlier, skipping" in log
    rows = {out: {r["name"]: r for r in json.loads((tmp_path / out / "frontier.json").read_text())["points"]}
            for out in ("frontier", "b")}
    assert set(rows["frontier"]) == {"base", "dpo", "kto", "upo-aux0.3", "upo-aux1", "upo-aux3"}
    assert set(rows["b"]) == {"base", "kto", "upo-aux1", "upo-aux3"}
    assert rows["frontier"]["upo-aux1"]["metrics"] == rows["b"]["upo-aux1"]["metrics"]  # the same evaluations
    assert json.loads((tmp_path / "b" / "frontier.json").read_text())["points_dir"] == str(tmp_path / "frontier" /
                                                                                          "points")
    assert not (tmp_path / "b" / "points").exists()
    assert f"in its folder under `{tmp_path / 'frontier' / 'points'}`." in (tmp_path / "b" / "report.md").read_text()

    # a point of the same name with another config is refused its folder, and fails alone
    b_path.write_text(yaml.safe_dump({**yaml.safe_load(b_path.read_text()),
                                      "method_overrides": {"kto": {"beta": 0.3}}}))
    assert main(["frontier", "--config", str(b_path)]) == 1
    log = capsys.readouterr().out
    assert "kto seed 1: FAILED: ConfigError:" in log and "different config (beta)" in log
    assert (tmp_path / "frontier" / "points" / "kto" / "seed-1" / "error.txt").exists()


def test_a_failed_run_keeps_its_traceback_in_its_own_seed_folder(tmp_path, monkeypatch, capsys):
    """dpo's seed 2 fails (its folder is in use): its traceback goes to points/dpo/seed-2/error.txt,
    named in the log and the report; seed 1 succeeding elsewhere leaves it; seed 2 succeeding drops
    it at once (no report needed); the report run, every seed of dpo done, drops an older upo's
    points/dpo/error.txt too."""
    monkeypatch.setattr("upo.trainer.train", fake_train)
    monkeypatch.setattr(frontier_run, "run_eval", fake_eval)
    sweep = str(sweep_file(tmp_path, [1, 2]))
    points = tmp_path / "frontier" / "points"
    held = points / "dpo" / "seed-2"
    held.mkdir(parents=True)
    with (held / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another process holds it
        assert main(["frontier", "--config", sweep, "--seeds", "2"]) == 1
        assert f"dpo seed 2: FAILED: ConfigError: {held} is in use" in capsys.readouterr().out
        assert "in use by another" in (held / "error.txt").read_text() and not (points / "dpo" / "error.txt").exists()
        assert main(["frontier", "--config", sweep, "--seeds", "1"]) == 0
        assert (held / "error.txt").exists() and not (points / "dpo" / "seed-1" / "error.txt").exists()
        assert main(["frontier", "--config", sweep]) == 1
        report = (tmp_path / "frontier" / "report.md").read_text()
        assert f"- dpo (seed 2): ConfigError: {held} is in use" in report and f"(traceback: {held / 'error.txt'})" in report
        assert f"(tracebacks: {held / 'error.txt'})" in capsys.readouterr().out
    assert main(["frontier", "--config", sweep, "--seeds", "2"]) == 0
    assert not (held / "error.txt").exists()
    (points / "dpo" / "error.txt").write_text("an older upo's error file for the whole point\n")
    assert main(["frontier", "--config", sweep]) == 0
    assert not (points / "dpo" / "error.txt").exists()


def test_eval_subdir_evaluates_the_same_runs_again_and_keeps_both(tmp_path, monkeypatch, capsys):
    """A second sweep over the same points_dir with `eval_subdir` and another max_new_tokens trains
    nothing, evaluates every run into <run folder>/<eval_subdir>/ and leaves the first sweep's
    evaluations as they were; rerunning the first evaluates nothing."""
    trained, evaluated = [], []
    monkeypatch.setattr("upo.trainer.train", lambda cfg: trained.append(cfg.output_dir) or fake_train(cfg))
    monkeypatch.setattr(frontier_run, "run_eval", lambda cfg, **kw: evaluated.append(cfg.output) or fake_eval(cfg, **kw))
    first = sweep_file(tmp_path, [1])
    assert main(["frontier", "--config", str(first)]) == 0
    points = tmp_path / "frontier" / "points"
    before = (points / "dpo" / "seed-1" / "eval.json").read_text()
    spec = yaml.safe_load(first.read_text())
    spec.update(output_dir=str(tmp_path / "long"), points_dir=str(points), eval_subdir="tokens-128")
    spec["eval"]["max_new_tokens"] = 128
    second = tmp_path / "long.yaml"
    second.write_text(yaml.safe_dump(spec))
    trained.clear(), evaluated.clear()
    assert main(["frontier", "--config", str(second)]) == 0
    assert trained == [] and len(evaluated) == 6  # 5 trained points and the base model, evaluated again
    assert all(Path(out).name == "tokens-128" for out in evaluated), evaluated
    long = json.loads((points / "dpo" / "seed-1" / "tokens-128" / "eval.json").read_text())
    assert long["settings"]["max_new_tokens"] == 128 and (points / "base" / "seed-1" / "tokens-128" / "eval.json").exists()
    assert (points / "dpo" / "seed-1" / "eval.json").read_text() == before
    evaluated.clear()
    assert main(["frontier", "--config", str(first)]) == 0 and evaluated == []
    spec["eval_subdir"] = "../up"
    second.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="eval_subdir: expected a folder name"):
        load_sweep(second)


def test_the_long_example_evaluates_the_seeds_examples_runs_again():
    """frontier_hh_long.yaml: the seeds sweep's points_dir, every one of its runs configured exactly as
    there at every seed (so nothing is trained again), evaluated into eval_subdir with the same
    settings but max_new_tokens."""
    seeds, long = load_sweep(EXAMPLES / "frontier_hh_seeds.yaml"), load_sweep(EXAMPLES / "frontier_hh_long.yaml")
    assert long.points_dir == seeds.points_dir and long.eval_subdir and not seeds.eval_subdir
    assert long.output_dir != seeds.output_dir and long.seeds == seeds.seeds and long.base == seeds.base
    assert runs(long).keys() == {"base", "dpo", "kto", "upo-kto-aux1", "upo-dpo-aux1"} <= runs(seeds).keys()
    template, long_template = eval_template(seeds, seeds.base_config()), eval_template(long, long.base_config())
    assert long_template.max_new_tokens > template.max_new_tokens
    assert {**long_template.settings(), "max_new_tokens": template.max_new_tokens} == template.settings()
    for seed in seeds.seeds:
        for name, point in runs(long).items():
            if name != "base":
                assert point_config(point, long, seed).to_dict() == point_config(runs(seeds)[name], seeds, seed).to_dict()
