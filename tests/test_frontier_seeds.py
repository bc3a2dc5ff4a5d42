"""`upo frontier` with intervals and `seeds:`: bootstrap verdicts on hand-made draws, and a sweep whose
training and evaluation are replaced by synthetic results (no model is trained or loaded)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

import upo.frontier.run as frontier_run
from upo.cli import main
from upo.config import ConfigError
from upo.evaluation.intervals import summarize, unit_section
from upo.frontier.summary import summarize_axes
from upo.frontier.sweep import load_sweep
from upo.frontier.uncertainty import front_uncertainty, paired_comparisons

AXES = ["judge/win_rate", "safety/violation_rate"]


def row(name: str, group: str, win: float, violations: float) -> dict:
    return {"name": name, "group": group, "metrics": {"judge/win_rate": win, "safety/violation_rate": violations}}


def test_verdicts_against_the_preference_front_hand_worked():
    """Draws of one preference point p (win 0.5, violations 0.1 in every draw) and three UPO points:
    a: (0.6, 0.1) in every draw, beyond; b: (0.4, 0.2), dominated in every draw, behind; c: (0.6, 0.1)
    in half the draws and (0.4, 0.1) in the other half, beyond in 1/2, behind in 1/2: not distinguishable."""
    half = np.array([0.6, 0.4] * 50)
    draws = {"p": {"judge/win_rate": np.full(100, 0.5), "safety/violation_rate": np.full(100, 0.1)},
             "a": {"judge/win_rate": np.full(100, 0.6), "safety/violation_rate": np.full(100, 0.1)},
             "b": {"judge/win_rate": np.full(100, 0.4), "safety/violation_rate": np.full(100, 0.2)},
             "c": {"judge/win_rate": half, "safety/violation_rate": np.full(100, 0.1)}}
    rows = [row("p", "preference", 0.5, 0.1), row("a", "upo", 0.6, 0.1), row("b", "upo", 0.4, 0.2),
            row("c", "upo", 0.5, 0.1)]
    entry = summarize_axes(rows, AXES)
    out = front_uncertainty(entry, rows, draws)
    verdicts = {v["name"]: (v["share_beyond"], v["share_behind"], v["verdict"]) for v in out["upo_verdicts"]}
    assert verdicts == {"a": (1.0, 0.0, "beyond"), "b": (0.0, 1.0, "behind"), "c": (0.5, 0.5, "not distinguishable")}
    # a lies beyond p in every draw: the gain is never 0
    low, high = out["hv_gain_interval"]
    assert 0 < low <= entry["hv_gain"] <= high
    # a point without draws leaves the entry without intervals rather than guessing
    assert front_uncertainty(entry, rows, {k: v for k, v in draws.items() if k != "b"}) == {
        "hv_gain_interval": None, "upo_verdicts": []}

    compared = {(c["upo"], c["metric"]): c for c in paired_comparisons(rows, draws, AXES)}
    assert compared[("a", "judge/win_rate")]["better"] == "a" and compared[("b", "judge/win_rate")]["better"] == "p"
    assert compared[("c", "judge/win_rate")]["better"] == "neither"
    assert compared[("b", "safety/violation_rate")]["better"] == "p"  # more violations: p is better
    assert compared[("a", "judge/win_rate")]["difference"] == pytest.approx(0.1)


# ---- a sweep with seeds, on synthetic results ----------------------------------------------------

N_PROMPTS = 100
# point -> (win probability, violation probability) of its generations
TRUTH = {"base": (0.3, 0.3), "dpo": (0.6, 0.3), "kto": (0.4, 0.2), "upo-aux0.3": (0.6, 0.3), "upo-aux1": (0.85, 0.05),
         "upo-aux3": (0.2, 0.6)}


def fake_train(cfg):
    final = Path(cfg.output_dir) / "final"
    final.mkdir(parents=True)
    (Path(cfg.output_dir) / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    return final


def fake_eval(cfg, judge=None, reference_memo=None):
    """What run_eval writes, with per-prompt values drawn from TRUTH (seeded by point and seed)."""
    out = Path(cfg.output)
    parts = out.parts  # .../points/NAME[/seed-S][/eval_subdir]
    name = parts[len(parts) - parts[::-1].index("points")]
    win, violation = TRUTH[name]
    rng = np.random.default_rng([sorted(TRUTH).index(name), cfg.seed])
    values = {"judge/win_rate": rng.choice([0.0, 0.5, 1.0], size=N_PROMPTS, p=[(1 - win) * 0.9, 0.1, win * 0.9]),
              "safety/violation_rate": (rng.random(N_PROMPTS) < violation).astype(float),
              "length/words_ratio": rng.uniform(0.5, 1.5, N_PROMPTS)}
    values["length/words"] = rng.integers(3, 40, N_PROMPTS).astype(float)  # the same lengths at every point
    values["safety/max_toxicity"] = violation + rng.uniform(0, 0.01, N_PROMPTS)
    values["length/cut"] = (rng.random(N_PROMPTS) < 0.1).astype(float)
    metrics, intervals = summarize(values)
    result = {"model": cfg.model, "metrics": metrics, "intervals": intervals, "settings": cfg.settings(),
              "per_prompt": unit_section([f"p{i}" for i in range(N_PROMPTS)], values),
              "per_pair": unit_section([], {})}
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result))
    return result


def sweep_file(tmp_path, seeds) -> Path:
    spec = {"output_dir": str(tmp_path / "frontier"),
            "base": {"model": "tiny", "dataset": "pairs.jsonl", "eval_fraction": 0.25, "seed": 42,
                     "rewards": {"length": 1.0}, "progress": False},
            "eval": {"prompts": N_PROMPTS, "scorers": ["safety"]},
            "methods": ["dpo", "kto", "upo"], "aux_coef": [0.3, 1.0, 3.0], "preference_metric": "judge/win_rate",
            "compare_metrics": ["safety/max_toxicity", "no/such_metric"]}
    if seeds is not None:
        spec["seeds"] = seeds
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_frontier_with_seeds_on_synthetic_results(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("upo.trainer.train", lambda cfg: calls.append(cfg) or fake_train(cfg))
    monkeypatch.setattr(frontier_run, "run_eval", fake_eval)
    code = main(["frontier", "--config", str(sweep_file(tmp_path, [1, 2, 3]))])
    assert code == 0, capsys.readouterr().out
    out = tmp_path / "frontier"
    # every trained point once per seed, each seed in its own folder, all on the base's held-out split
    assert len(calls) == 5 * 3
    assert [c.seed for c in calls] == [1] * 5 + [2] * 5 + [3] * 5  # in rounds: every point's seed 1 first
    assert {(Path(c.output_dir).parent.name, Path(c.output_dir).name, c.seed, c.split_seed) for c in calls} == {
        (p, f"seed-{s}", s, 42) for p in ("dpo", "kto", "upo-aux0.3", "upo-aux1", "upo-aux3") for s in (1, 2, 3)}
    for s in (1, 2, 3):  # the base model is evaluated (generated) with each seed too
        assert json.loads((out / "points" / "base" / f"seed-{s}" / "eval.json").read_text())["settings"]["seed"] == s

    result = json.loads((out / "frontier.json").read_text())
    assert result["seeds"] == [1, 2, 3]
    points = {r["name"]: r for r in result["points"]}
    upo1 = points["upo-aux1"]
    runs = [json.loads((out / "points" / "upo-aux1" / f"seed-{s}" / "eval.json").read_text()) for s in (1, 2, 3)]
    assert [r["seed"] for r in upo1["runs"]] == [1, 2, 3]
    assert upo1["metrics"]["judge/win_rate"] == pytest.approx(np.mean([r["metrics"]["judge/win_rate"] for r in runs]))
    for metric, (low, high) in upo1["intervals"].items():
        assert low <= upo1["metrics"][metric] <= high, metric

    two_d = result["summary"][0]
    assert two_d["axes"] == AXES
    low, high = two_d["hv_gain_interval"]
    assert 0 < low <= two_d["hv_gain"] <= high
    verdicts = {v["name"]: v["verdict"] for v in two_d["upo_verdicts"]}
    assert verdicts == {"upo-aux0.3": "not distinguishable", "upo-aux1": "beyond", "upo-aux3": "behind"}
    compared = {(c["upo"], c["preference"], c["metric"]): c["better"] for c in result["comparisons"]}
    assert compared[("upo-aux1", "dpo", "judge/win_rate")] == "upo-aux1"
    assert compared[("upo-aux1", "kto", "safety/violation_rate")] == "upo-aux1"
    assert compared[("upo-aux3", "dpo", "judge/win_rate")] == "dpo"
    assert compared[("upo-aux0.3", "dpo", "judge/win_rate")] == "neither"

    # at equal length (lengths drawn alike at every point): the same verdicts; lengths not compared
    matched = {(c["upo"], c["preference"], c["metric"]): c for c in result["comparisons_at_equal_length"]}
    assert {m for _, _, m in matched} == {"judge/win_rate", "safety/violation_rate", "safety/max_toxicity"}
    assert matched[("upo-aux1", "dpo", "judge/win_rate")]["better"] == "upo-aux1"
    assert matched[("upo-aux3", "dpo", "judge/win_rate")]["better"] == "dpo"
    assert matched[("upo-aux1", "kto", "safety/violation_rate")]["overlap_upo"] == 1.0
    effective = matched[("upo-aux1", "kto", "safety/violation_rate")]["effective_n"]
    assert 0.8 * 3 * N_PROMPTS < effective <= 3 * N_PROMPTS  # the same lengths: nearly every generation counts
    # compare_metrics: compared besides the axes (a metric no point has: a warning)
    assert compared[("upo-aux1", "kto", "safety/max_toxicity")] == "upo-aux1"
    assert ("upo-aux1", "kto", "safety/max_toxicity") in matched
    assert "compare_metrics: no point has 'no/such_metric'" in " ".join(result["warnings"])

    report = (out / "report.md").read_text()
    assert "### At equal length: UPO - preference-only" in report
    assert "fixes every hypervolume's scale): `judge/win_rate` " in report
    verdict = next(line for line in report.splitlines() if line.startswith("| judge/win_rate ↑ × safety/violation_rate ↓ | upo-aux1 |"))
    assert "seeds 1, 2, 3" in report and "| upo-aux1 | 1.000 | 0.000 | dpo: " in verdict and verdict.endswith("| **beyond** |")
    against = dict(re.findall(r"(dpo|kto): (?:judge/win_rate|safety/violation_rate) (\d\.\d{3})", verdict))
    assert set(against) == {"dpo", "kto"} and all(float(s) >= 0.975 for s in against.values())  # each beaten on an axis
    assert "| upo-aux1 | dpo | judge/win_rate ↑ |" in report and "| upo-aux1 | dpo | length/words_ratio |" in report
    assert "| length/words_ratio | length/cut |" in report and "| upo-aux1 | dpo | length/cut |" in report
    # the sweep's questions: UPO (its default KTO term) against KTO first, raw and at equal length
    answers = report.split("### What the sweep answers, at 95%")[1].split("###")[0]
    assert points["upo-aux1"]["pref_loss"] == "kto" and points["dpo"]["pref_loss"] is None
    assert "| upo-aux1 | `safety/violation_rate` lower | kto (its term) |" in answers
    win = next(line for line in answers.splitlines() if line.startswith("| upo-aux1 | `judge/win_rate` not lower"))
    assert "| kto (its term) |" in win and win.count("**yes**") == 2  # raw and at equal length
    assert "| upo-aux1 | beyond the preference-only front on all axes | dpo, kto |  |  | **yes** |" in answers
    assert "| upo-aux3 | beyond the preference-only front on all axes | dpo, kto |  |  | **no** |" in answers
    worse = next(line for line in answers.splitlines() if line.startswith("| upo-aux3 | `judge/win_rate` not lower"))
    assert worse.count("**no**") == 2  # upo-aux3 loses to KTO on win rate, raw and at equal length
    assert (out / "frontier_safety_violation_rate.png").read_bytes()[:4] == b"\x89PNG"

    # rerun: nothing trained or evaluated again; a lost evaluation of one seed is redone alone
    (out / "points" / "kto" / "seed-2" / "eval.json").unlink()
    calls.clear()
    capsys.readouterr()
    assert main(["frontier", "--config", str(sweep_file(tmp_path, [1, 2, 3]))]) == 0
    log = capsys.readouterr().out
    assert calls == [] and "kto seed 2: evaluating" in log and log.count("evaluating") == 1
    assert "upo-aux1 seed 3: done earlier, skipping" in log


def test_frontier_without_seeds_keeps_one_run_per_point(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("upo.trainer.train", fake_train)
    monkeypatch.setattr(frontier_run, "run_eval", fake_eval)
    code = main(["frontier", "--config", str(sweep_file(tmp_path, None))])
    assert code == 0, capsys.readouterr().out
    out = tmp_path / "frontier"
    assert (out / "points" / "dpo" / "final").is_dir() and not (out / "points" / "dpo" / "seed-42").exists()
    result = json.loads((out / "frontier.json").read_text())
    assert result["seeds"] is None and "runs" not in result["points"][1]
    # one seed: intervals over the prompts alone, still there
    assert result["points"][1]["intervals"]["judge/win_rate"][0] < result["points"][1]["metrics"]["judge/win_rate"]
    assert "one run per point" in (out / "report.md").read_text()

    # an eval.json from before per-prompt values were kept is evaluated again (not retrained); the rest is kept
    old = out / "points" / "kto" / "eval.json"
    old.write_text(json.dumps({k: v for k, v in json.loads(old.read_text()).items() if k not in ("per_prompt",
                                                                                                  "per_pair")}))
    capsys.readouterr()
    assert main(["frontier", "--config", str(sweep_file(tmp_path, None))]) == 0
    log = capsys.readouterr().out
    assert "without per-prompt values; evaluating again" in log and log.count("evaluating") == 2  # message + run
    assert "training" not in log and "dpo: done earlier, skipping" in log


def test_seeds_must_be_distinct_integers(tmp_path):
    for bad in ([], [1, 1], ["a"], 3, [-1]):
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump({"base": {"dataset": "x"}, "methods": ["dpo"], "seeds": bad}))
        with pytest.raises(ConfigError, match="seeds"):
            load_sweep(path)


def test_decisive_hh_sweep_is_valid():
    """examples/frontier_hh_seeds.yaml (issue 15, item 5): >= 384 held-out prompts, >= 3 seeds, the
    points it must compare, a judge trained on the same split; every run's config builds."""
    from conftest import HH_FILE

    from upo.frontier.run import eval_template, point_config

    path = Path(__file__).resolve().parents[1] / "examples" / "frontier_hh_seeds.yaml"
    sweep, quick = load_sweep(path), load_sweep(path, quick=True)
    assert len(sweep.seeds) >= 3 and str(quick.output_dir) != str(sweep.output_dir)
    points = {p.name: p for p in sweep.points}
    configs = {name: point_config(p, sweep, sweep.seeds[0]) for name, p in points.items()}
    kinds = {(c.method, c.pref_loss if c.method == "upo" else None, c.relabel, points[n].aux_coef)
             for n, c in configs.items()}
    assert {("dpo", None, False, None), ("kto", None, False, None), ("upo", "kto", False, 0.3),
            ("upo", "kto", False, 1.0), ("upo", "dpo", False, 1.0), ("modpo", None, False, 1.0),
            ("dpo", None, True, None)} <= kinds
    assert all(c.max_examples is None and c.split_seed == sweep.base["seed"] for c in configs.values())
    template = eval_template(sweep, sweep.base_config())
    assert template.eval_fraction == 0.25 and template.prompts >= 384 and template.split_seed == 42
    assert template.judge == "rm:runs/rm-hh-025/final"
    assert "--eval_fraction 0.25 --seed 42" in path.read_text() and "--output_dir runs/rm-hh-025" in path.read_text()
    if HH_FILE.exists():  # 1800 pairs: 450 held out, at least the 384 evaluated
        from upo.evaluation.heldout import heldout_records

        assert len(heldout_records(str(HH_FILE), eval_fraction=0.25, seed=42)) >= template.prompts


def test_sft_points_score_implicit_rewards_at_the_base_beta(tmp_path, monkeypatch):
    """SFT and CSFT read no beta, so their configs hold the default; their held-out implicit rewards
    use the base's beta, as every other point's do, so margins share one scale."""
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "frontier"),
        "base": {"model": "tiny", "dataset": "pairs.jsonl", "beta": 0.3, "rewards": {"length": 1.0}, "progress": False},
        "eval": {"prompts": 4, "scorers": ["safety"]}, "methods": ["dpo", "csft"]}))
    sweep = load_sweep(path)
    monkeypatch.setattr("upo.trainer.train", fake_train)
    betas = {}
    monkeypatch.setattr(frontier_run, "run_eval", lambda cfg, **_: betas.update({Path(cfg.output).name: cfg.beta}) or {})
    template = frontier_run.eval_template(sweep, sweep.base_config())
    for point in sweep.points:
        frontier_run.run_point(point, sweep, template, None, {})
    assert betas == {"dpo": 0.3, "csft": 0.3}


def test_seeds_in_parallel_processes_then_one_report(tmp_path, monkeypatch, capsys):
    """`--seeds 2` runs only seed 2's runs and writes no report; a run without --seeds then trains
    only the seeds left and reports all three; a seed the sweep lacks is an error."""
    calls = []
    monkeypatch.setattr("upo.trainer.train", lambda cfg: calls.append(cfg.seed) or fake_train(cfg))
    monkeypatch.setattr(frontier_run, "run_eval", fake_eval)
    sweep = str(sweep_file(tmp_path, [1, 2, 3]))
    assert main(["frontier", "--config", sweep, "--seeds", "2"]) == 0
    assert calls == [2] * 5 and not (tmp_path / "frontier" / "frontier.json").exists()
    assert "rerun without --seeds" in capsys.readouterr().out
    calls.clear()
    assert main(["frontier", "--config", sweep]) == 0
    assert calls == [1] * 5 + [3] * 5
    assert json.loads((tmp_path / "frontier" / "frontier.json").read_text())["seeds"] == [1, 2, 3]
    assert main(["frontier", "--config", sweep, "--seeds", "4"]) == 2
    assert "the sweep's seeds are [1, 2, 3]" in capsys.readouterr().err


def test_a_run_in_use_by_another_process_is_refused(tmp_path, monkeypatch, capsys):
    """Two processes on one seed's run (the same --seeds twice, or the report run started early): the
    second is refused that run, naming why, instead of deleting the first one's checkpoints."""
    import fcntl

    monkeypatch.setattr("upo.trainer.train", fake_train)
    monkeypatch.setattr(frontier_run, "run_eval", fake_eval)
    sweep = str(sweep_file(tmp_path, [1, 2]))
    held = tmp_path / "frontier" / "points" / "dpo" / "seed-2"
    held.mkdir(parents=True)
    with (held / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the other process holds it
        assert main(["frontier", "--config", sweep, "--seeds", "2"]) == 1
    assert "seed-2 is in use by another upo frontier process" in capsys.readouterr().out
    assert not (held / "final").exists() and (tmp_path / "frontier" / "points" / "kto" / "seed-2" / "final").exists()
    assert main(["frontier", "--config", sweep]) == 0  # released: the report run trains it


def test_points_option_runs_only_the_named_points(tmp_path, monkeypatch, capsys):
    """`--points kto` (with or without --seeds) trains only kto's runs, and `--points upo-aux1,dpo`
    those two in that order; no report; an unknown name is an error listing the sweep's points."""
    calls = []
    monkeypatch.setattr("upo.trainer.train", lambda cfg: calls.append((cfg.method, cfg.seed)) or fake_train(cfg))
    monkeypatch.setattr(frontier_run, "run_eval", fake_eval)
    sweep = str(sweep_file(tmp_path, [1, 2]))
    assert main(["frontier", "--config", sweep, "--points", "kto", "--seeds", "2"]) == 0
    assert calls == [("kto", 2)] and not (tmp_path / "frontier" / "frontier.json").exists()
    assert "rerun without --seeds and --points" in capsys.readouterr().out
    calls.clear()
    assert main(["frontier", "--config", sweep, "--points", "kto,base"]) == 0
    assert calls == [("kto", 1)] and not (tmp_path / "frontier" / "frontier.json").exists()
    calls.clear()
    assert main(["frontier", "--config", sweep, "--points", "upo-aux1,dpo", "--seeds", "1"]) == 0
    assert [c[0] for c in calls] == ["upo", "dpo"]
    assert main(["frontier", "--config", sweep, "--points", "kto,nope"]) == 2
    assert "--points nope: not a point of the sweep" in capsys.readouterr().err
    calls.clear()
    assert main(["frontier", "--config", sweep]) == 0
    assert ("kto", 1) not in calls and ("kto", 2) not in calls and len(calls) == 6
    assert (tmp_path / "frontier" / "frontier.json").exists()


def test_finished_reports_the_runs_done_so_far_and_runs_nothing(tmp_path, monkeypatch, capsys):
    """`--finished` while the sweep is running: trains and evaluates nothing, reports each point over
    the seeds it finished (the others left out) and names what is not finished; a point finished at
    no seed is left out; with --seeds only those seeds count; before any run is done, an error."""
    trained, evaluated = [], []
    monkeypatch.setattr("upo.trainer.train", lambda cfg: trained.append((cfg.method, cfg.seed)) or fake_train(cfg))
    monkeypatch.setattr(frontier_run, "run_eval", lambda cfg, **kw: evaluated.append(cfg.seed) or fake_eval(cfg, **kw))
    sweep = str(sweep_file(tmp_path, [1, 2, 3]))
    out = tmp_path / "frontier"
    assert main(["frontier", "--config", sweep, "--finished"]) == 2
    assert "--finished: no run of" in capsys.readouterr().err
    assert main(["frontier", "--config", sweep, "--points", "base,dpo,kto,upo-aux1", "--seeds", "1"]) == 0
    assert main(["frontier", "--config", sweep, "--points", "dpo,upo-aux1", "--seeds", "2"]) == 0
    (out / "points" / "kto" / "seed-2").mkdir(parents=True)  # kto seed 2 trains elsewhere, unfinished
    (out / "points" / "kto" / "seed-2" / "config.yaml").write_text(yaml.safe_dump(
        frontier_run.point_config(next(p for p in load_sweep(sweep).points if p.name == "kto"), load_sweep(sweep), 2)
        .to_dict()))
    trained.clear(), evaluated.clear(), capsys.readouterr()

    assert main(["frontier", "--config", sweep, "--finished"]) == 0
    assert trained == [] and evaluated == []
    result = json.loads((out / "frontier.json").read_text())
    runs = {r["name"]: [run["seed"] for run in r["runs"]] for r in result["points"]}
    assert runs == {"base": [1], "dpo": [1, 2], "kto": [1], "upo-aux1": [1, 2]}
    dpo = next(r for r in result["points"] if r["name"] == "dpo")
    assert dpo["metrics"]["judge/win_rate"] == pytest.approx(np.mean([r["metrics"]["judge/win_rate"] for r in
                                                                     [json.loads((out / "points" / "dpo" / f"seed-{s}" /
                                                                                  "eval.json").read_text())
                                                                      for s in (1, 2)]]))
    warning = next(w for w in result["warnings"] if w.startswith("--finished"))
    assert "base seed 2, 3; dpo seed 3; kto seed 2, 3; upo-aux0.3; upo-aux1 seed 3; upo-aux3" in warning
    assert "Points with one finished seed (base, kto) carry no seed variance" in warning
    report = (out / "report.md").read_text()
    assert "--finished: a report of the runs finished so far" in report and "| dpo (seed 1, 2) | preference |" in report
    assert "each point the mean over its finished runs of seeds 1, 2, 3" in report
    assert ("upo-aux1", "dpo", "judge/win_rate") in {(c["upo"], c["preference"], c["metric"])
                                                      for c in result["comparisons"]}

    assert main(["frontier", "--config", sweep, "--finished", "--seeds", "2"]) == 0
    result = json.loads((out / "frontier.json").read_text())
    assert {r["name"]: [run["seed"] for run in r["runs"]] for r in result["points"]} == {"dpo": [2], "upo-aux1": [2]}
    assert trained == [] and evaluated == []
    assert result["seeds"] == [2] and "each point trained and generated with seeds 2 " in (out / "report.md").read_text()


def test_finished_keeps_a_steered_runs_conditions_at_the_same_seeds(tmp_path, monkeypatch, capsys):
    """A steered run evaluated at every condition for seeds 1-2 but one condition short at seed 3:
    `--finished` reports both conditions at seeds 1 and 2 (its conditions resample their seeds alike)."""
    monkeypatch.setattr("upo.trainer.train", fake_train)
    monkeypatch.setattr(frontier_run, "run_eval", fake_eval)
    monkeypatch.setitem(TRUTH, "upo-steered", (0.7, 0.1))
    spec = yaml.safe_load(sweep_file(tmp_path, [1, 2, 3]).read_text())
    spec.update(methods=["dpo", "kto"], points=[{"name": "upo-steered", "method": "upo", "steer_aux_coefs": [0, 1]}])
    sweep = tmp_path / "steered.yaml"
    sweep.write_text(yaml.safe_dump(spec))
    assert main(["frontier", "--config", str(sweep), "--seeds", "1,2,3"]) == 0
    conditions = sorted((tmp_path / "frontier" / "points" / "upo-steered" / "seed-3").glob("aux-*"))
    assert len(conditions) == 2
    (conditions[1] / "eval.json").unlink()
    capsys.readouterr()
    assert main(["frontier", "--config", str(sweep), "--finished"]) == 0
    result = json.loads((tmp_path / "frontier" / "frontier.json").read_text())
    runs = {r["name"]: [run["seed"] for run in r["runs"]] for r in result["points"]}
    assert runs["upo-steered-aux0"] == runs["upo-steered-aux1"] == [1, 2] and runs["dpo"] == [1, 2, 3]
    assert "upo-steered-aux0 seed 3; upo-steered-aux1 seed 3" in capsys.readouterr().out
