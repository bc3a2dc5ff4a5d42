"""`upo frontier`: Pareto math on hand-worked points, sweep expansion, and a tiny sweep end to end."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import yaml
from helpers import save_tiny_reward_model

from upo.cli import main
from upo.config import ConfigError
from upo.frontier.pareto import (
    dominated_mask,
    dominates,
    hypervolume,
    nondominated_share,
    normalize,
    oriented,
    pareto_front,
)
from upo.frontier.summary import default_aux_metrics, preference_metric, summarize_axes
from upo.frontier.sweep import deep_merge, expand_points, load_sweep

WIN_GRADE = ["max", "min"]  # (win rate: higher is better, reading grade: lower is better)


def test_dominance_follows_each_axis_direction():
    assert dominates([0.6, 8.0], [0.4, 9.0], WIN_GRADE)  # better on both
    assert not dominates([0.6, 9.0], [0.4, 8.0], WIN_GRADE)  # a trade-off
    assert dominates([0.6, 9.0], [0.4, 8.0], ["max", "max"])  # the same numbers when a higher grade is better
    assert not dominates([0.5, 8.0], [0.5, 8.0], WIN_GRADE)  # equal points do not dominate each other
    assert dominates([0.5, 7.0], [0.5, 8.0], WIN_GRADE)  # equal on one axis, better on the other


def test_pareto_front_and_dominated_share_hand_worked():
    """A (0.6, 8) dominates C (0.4, 9); B (0.5, 6) trades win rate for grade; D equals A (ties are kept)."""
    values = [[0.6, 8.0], [0.5, 6.0], [0.4, 9.0], [0.6, 8.0]]
    assert pareto_front(values, WIN_GRADE) == [0, 1, 3]
    assert pareto_front(values, ["max", "max"]) == [0, 2, 3]  # a high grade wanted: C (9) is on the front
    # candidates: one beyond the front (0.7, 7), one behind A (0.55, 8.5), one on it (0.5, 6)
    candidates = [[0.7, 7.0], [0.55, 8.5], [0.5, 6.0]]
    assert dominated_mask(candidates, values, WIN_GRADE).tolist() == [False, True, False]
    assert nondominated_share(candidates, values, WIN_GRADE) == pytest.approx(2 / 3)
    assert nondominated_share(candidates, [], WIN_GRADE) == 1.0
    assert nondominated_share([], values, WIN_GRADE) is None


def test_hypervolume_hand_worked():
    """Maximization boxes from the reference 0: (1, 2) and (2, 1) cover 2 + 2 - 1 (overlap) = 3; a
    dominated point (0.5, 0.5) adds nothing; in 3-D, unit-height slabs of the same cover 3."""
    assert hypervolume([[1, 2], [2, 1]], [0, 0]) == pytest.approx(3.0)
    assert hypervolume([[1, 2], [2, 1], [0.5, 0.5]], [0, 0]) == pytest.approx(3.0)
    assert hypervolume([[1, 2, 1], [2, 1, 1]], [0, 0, 0]) == pytest.approx(3.0)
    assert hypervolume([[1, 1, 1], [2, 2, 0.5]], [0, 0, 0]) == pytest.approx(1 + 4 * 0.5 - 1 * 0.5)
    assert hypervolume([[1, -1]], [0, 0]) == 0.0  # not better than the reference on one axis
    assert hypervolume(np.empty((0, 2)), [0, 0]) == 0.0


def test_hypervolume_with_a_lower_is_better_axis():
    """A (0.6, 8), B (0.5, 6) w.r.t. the worst values (0.4, 9): in the metrics' units the boxes are
    0.2 x 1 and 0.1 x 3, overlapping 0.1 x 1: 0.4. Scaled (win 0.4..0.6, grade 9..6) A = (1, 1/3),
    B = (1/2, 1): 1/3 + 1/2 - 1/6 = 2/3."""
    values = [[0.6, 8.0], [0.5, 6.0]]
    assert hypervolume(oriented(values, WIN_GRADE), oriented([0.4, 9.0], WIN_GRADE)[0]) == pytest.approx(0.4)
    scaled = normalize(values, WIN_GRADE, worst=[0.4, 9.0], best=[0.6, 6.0])
    np.testing.assert_allclose(scaled, [[1.0, 1 / 3], [0.5, 1.0]])
    assert hypervolume(scaled, [0, 0]) == pytest.approx(2 / 3)
    # an axis on which every point ties does not separate them: it counts 1 for all
    assert normalize([[0.5, 3.0], [0.7, 3.0]], WIN_GRADE, [0.5, 3.0], [0.7, 3.0]).tolist() == [[0, 1], [1, 1]]


def _rows():
    """(win rate, grade): base (0.3, 10); dpo (0.6, 8) dominates kto (0.4, 9); upo1 (0.5, 6)
    trades win rate for grade against dpo; upo2 (0.35, 9.5) is dominated by dpo; modpo is neither group."""
    points = [("base", "base", 0.3, 10.0), ("dpo", "preference", 0.6, 8.0), ("kto", "preference", 0.4, 9.0),
              ("upo1", "upo", 0.5, 6.0), ("upo2", "upo", 0.35, 9.5), ("modpo", "auxiliary", 0.45, 7.0)]
    return [{"name": n, "group": g, "metrics": {"judge/win_rate": w, "readability/fk_grade": f}}
            for n, g, w, f in points]


def test_summary_hand_worked():
    """Worst (0.3, 10), best (0.6, 6): scaled dpo = (1, 1/2), upo1 = (2/3, 1). HV pref = 1/2;
    HV upo = 2/3; union = 1/2 + 2/3 - 2/3 * 1/2 = 5/6; gain 1/3; upo2 is dominated by dpo: share 1/2."""
    e = summarize_axes(_rows(), ["judge/win_rate", "readability/fk_grade"])
    assert e["directions"] == WIN_GRADE and e["points"] == 6
    assert e["reference"] == pytest.approx([0.3, 10.0]) and e["best"] == pytest.approx([0.6, 6.0])
    assert e["reference_from"] == ["base", "base"]
    without_base = summarize_axes(_rows()[1:], ["judge/win_rate", "readability/fk_grade"])
    assert without_base["reference"] == pytest.approx([0.35, 9.5]) and without_base["reference_from"] == ["upo2", "upo2"]
    assert e["preference_front"] == ["dpo"] and e["upo_front"] == ["upo1"]
    assert e["hv_preference"] == pytest.approx(0.5) and e["hv_upo"] == pytest.approx(2 / 3)
    assert e["hv_union"] == pytest.approx(5 / 6) and e["hv_gain"] == pytest.approx(1 / 3)
    assert e["upo_nondominated_share"] == pytest.approx(0.5)
    # behind the front: no gain, nothing beyond it
    behind = [r for r in _rows() if r["name"] != "upo1"]
    e = summarize_axes(behind, ["judge/win_rate", "readability/fk_grade"])
    assert e["hv_gain"] == pytest.approx(0.0) and e["upo_nondominated_share"] == 0.0
    with pytest.raises(ValueError, match="no better direction"):
        summarize_axes(_rows(), ["judge/win_rate", "length/words"])


def test_preference_metric_is_the_judge_when_there_is_one():
    rows = _rows()
    assert preference_metric(rows) == "judge/win_rate"
    assert preference_metric([{"metrics": {"rewards/accuracies": 0.6}}]) == "rewards/accuracies"
    assert preference_metric(rows, "rewards/margins") == "rewards/margins"


def test_default_aux_metrics():
    assert default_aux_metrics(["safety", "readability", "length_words", "reading_ease"]) == [
        "safety/violation_rate", "readability/fk_grade", "reading_ease/ease"]


def test_expand_points_grid_groups_and_names():
    base = {"rewards": {"safety": 0.95, "readability": 0.05}}
    spec = {"methods": ["dpo", "upo", "modpo", "aoppo", "csft", "nosuch"], "aux_coef": [0.5, 2.0],
            "method_overrides": {"upo": {"pref_loss": "dpo"}, "aoppo": {"aux_coef": 1.0}},
            "points": [{"name": "dpo-relabel", "method": "dpo", "relabel": True}]}
    points = {p.name: p for p in expand_points(spec, base)}
    assert list(points) == ["dpo", "upo-aux0.5", "upo-aux2", "modpo-aux0.5", "modpo-aux2", "aoppo", "csft", "nosuch",
                            "dpo-relabel"]
    groups = {name: p.group for name, p in points.items()}
    assert groups == {"dpo": "preference", "upo-aux0.5": "upo", "upo-aux2": "upo", "modpo-aux0.5": "auxiliary",
                      "modpo-aux2": "auxiliary", "aoppo": "auxiliary", "csft": "preference", "nosuch": "preference",
                      "dpo-relabel": "auxiliary"}
    # upo: aux_coef itself; modpo (whose loss has no aux_coef): the reward weights scaled
    assert points["upo-aux2"].overrides["aux_coef"] == 2.0 and points["upo-aux2"].overrides["pref_loss"] == "dpo"
    assert points["modpo-aux2"].overrides["rewards"] == {"safety": 1.9, "readability": 0.1}
    assert "aux_coef" not in points["modpo-aux2"].overrides
    assert points["aoppo"].overrides["rewards"] == base["rewards"] and points["aoppo"].aux_coef == 1.0
    assert points["dpo"].overrides == {"method": "dpo"}

    variants = expand_points({"methods": ["upo"], "reward_variants": {"s": {"safety": 1}, "r": {"readability": 1}}},
                             base)
    assert [(p.name, p.overrides["rewards"]) for p in variants] == [("upo-s", {"safety": 1.0}),
                                                                      ("upo-r", {"readability": 1.0})]


def test_expand_points_reads_aux_strength_and_group_from_the_method_table(monkeypatch):
    """A method whose table entry names its auxiliary-strength key and group is swept through that
    key and put in that group; no method name is hard-coded in the sweep."""
    from dataclasses import replace

    from upo import methods
    from upo.frontier.sweep import GROUPS

    for m in methods.METHODS.values():  # every group the table names is one the frontier draws
        assert m.frontier_group in (None, *GROUPS[1:])
    own = replace(methods.METHODS["modpo"], name="mine", aux_strength_key="modpo_w0", frontier_group="upo")
    monkeypatch.setitem(methods.METHODS, "mine", own)
    base = {"rewards": {"safety": 1.0}}
    points = expand_points({"methods": ["mine", "modpo"], "aux_coef": [0.5, 2.0]}, base)
    by_name = {p.name: p for p in points}
    assert by_name["mine-aux2"].overrides["modpo_w0"] == 2.0 and by_name["mine-aux2"].group == "upo"
    assert by_name["mine-aux2"].overrides["rewards"] == {"safety": 1.0}  # the key, not the weights
    assert by_name["modpo-aux2"].overrides["rewards"] == {"safety": 2.0} and by_name["modpo-aux2"].group == "auxiliary"


def test_a_point_leaves_out_the_base_keys_its_method_does_not_read(tmp_path):
    """The base's method-specific keys go to the points whose method reads them (the table's
    `Method.reads`); the others get the default, so their configs build. A point's own unread key
    is still refused."""
    from upo.frontier.run import point_config

    base = {"beta": 0.2, "label_smoothing": 0.1, "aux_coef": 0.5, "desirable_weight": 2.0, "pref_loss": "dpo"}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": base, "methods": ["dpo", "csft", "kto", "upo"],
                                    "points": [{"name": "dpo-aux", "method": "dpo", "aux_coef": 0.5}]}))
    sweep = load_sweep(path)
    points = {p.name: p for p in sweep.points}
    dpo, csft, kto, upo = (point_config(points[name], sweep) for name in ("dpo", "csft", "kto", "upo"))
    assert (dpo.beta, dpo.label_smoothing, dpo.aux_coef, dpo.desirable_weight) == (0.2, 0.1, 1.0, 1.0)
    assert (csft.beta, csft.label_smoothing, csft.pref_loss) == (0.1, 0.0, "kto")
    assert (kto.beta, kto.desirable_weight, kto.label_smoothing) == (0.2, 2.0, 0.0)
    assert (upo.pref_loss, upo.beta, upo.label_smoothing, upo.desirable_weight) == ("dpo", 0.2, 0.1, 1.0)
    assert sweep.base_config().pref_loss == "dpo"  # the base model's config: method upo, whose term is dpo
    with pytest.raises(ConfigError, match="aux_coef"):
        point_config(points["dpo-aux"], sweep)


def test_a_steered_point_leaves_out_the_base_aux_coef(tmp_path):
    """A steered point draws every example's aux_coef from its steer_aux_coefs: the base's aux_coef
    (for the grid's UPO points) is not its own, so it builds instead of being refused."""
    from upo.frontier.run import point_config

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": {"aux_coef": 0.5, "rewards": {"length": 1.0}}, "methods": ["upo"],
                                    "points": [{"name": "steered", "method": "upo", "steer_aux_coefs": [0, 1]}]}))
    sweep = load_sweep(path)
    steered = point_config(next(p for p in sweep.points if p.trained), sweep)
    assert steered.steer_aux_coefs == [0.0, 1.0]


def test_a_run_folder_of_an_older_upo_is_the_same_run(tmp_path):
    """A run's config.yaml written before keys were added (they count as their defaults), holding a
    base key its method never read, or evaluated during training where its rerun is not, is still
    that run; a key that changes training is not."""
    from upo.config import UPOConfig
    from upo.frontier.folders import check_same_run

    cfg = UPOConfig(method="dpo", model="tiny", dataset="pairs.jsonl", rewards={})
    old = cfg.to_dict()
    del old["logits_chunk_tokens"]
    old["aux_coef"] = 0.5  # a sweep base's aux_coef, recorded in a DPO point's config before it was left out
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    check_same_run(cfg, tmp_path)
    check_same_run(dataclasses.replace(cfg, heldout_eval=False), tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**old, "beta": 0.3}))
    with pytest.raises(ConfigError, match=r"different config \(beta\)"):
        check_same_run(cfg, tmp_path)


def test_a_steered_run_written_before_control_token_init_started_its_tokens_at_the_mean(tmp_path):
    """control_token_init did not exist before 'text' became the default: an older steered run's
    tokens started at the vocabulary's mean (BEFORE_ADDED), so it is not the same run as a steered
    config of today; an older DPO run, which adds no tokens, still is."""
    from upo.config import UPOConfig
    from upo.frontier.folders import check_same_run

    steered = UPOConfig(model="tiny", dataset="pairs.jsonl", steer_aux_coefs=[0, 1], aux_coef=1.0)
    old = steered.to_dict()
    del old["control_token_init"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(ConfigError, match=r"different config \(control_token_init\)"):
        check_same_run(steered, tmp_path)
    check_same_run(dataclasses.replace(steered, control_token_init="mean"), tmp_path)
    dpo = UPOConfig(method="dpo", model="tiny", dataset="pairs.jsonl", rewards={})
    old = dpo.to_dict()
    del old["control_token_init"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    check_same_run(dpo, tmp_path)
    with pytest.raises(ConfigError, match="control_token_init \\(no new control tokens"):
        UPOConfig(method="dpo", model="tiny", dataset="pairs.jsonl", rewards={}, control_token_init="mean")


def test_sweep_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="two points are named 'dpo'"):
        expand_points({"methods": ["dpo"], "points": [{"name": "dpo", "method": "dpo"}]}, {})
    with pytest.raises(ConfigError, match="'seed' must be the same for every point"):
        expand_points({"methods": ["dpo"], "method_overrides": {"dpo": {"seed": 3}}}, {})
    with pytest.raises(ConfigError, match="unknown key 'lerning_rate'"):
        expand_points({"points": [{"name": "x", "lerning_rate": 1}]}, {})
    with pytest.raises(ConfigError, match="letters, digits"):
        expand_points({"points": [{"name": "a/b", "method": "dpo"}]}, {})
    steered = {"name": "s", "method": "upo", "rewards": {"length": 1.0}}
    with pytest.raises(ConfigError, match=r"points \(s\): steer_aux_coefs \['0', '0', '1'\]: each value once"):
        expand_points({"points": [{**steered, "steer_aux_coefs": [0, 0.0, 1]}]}, {})
    with pytest.raises(ConfigError, match="'steer_aux_coefs' must be a list of numbers, got 1"):
        expand_points({"points": [{**steered, "steer_aux_coefs": 1}]}, {})
    sweep = tmp_path / "s.yaml"
    sweep.write_text("methods: [dpo]\nevaluation: {}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_sweep(sweep)
    sweep.write_text("methods: [dpo]\neval: {model: x}\n")
    with pytest.raises(ConfigError, match="set per point"):
        load_sweep(sweep)


def test_quick_overrides_merge_deeply(tmp_path):
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"c": 3}, "d": [2]}) == {"a": {"b": 1, "c": 3}, "d": [2]}
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"base": {"max_steps": 100, "lora": True}, "methods": ["dpo", "upo"],
                                     "aux_coef": [0.5, 1, 2],
                                     "quick": {"base": {"max_steps": 2}, "aux_coef": [1], "output_dir": "q"}}))
    full, quick = load_sweep(sweep), load_sweep(sweep, quick=True)
    assert [p.name for p in full.points] == ["dpo", "upo-aux0.5", "upo-aux1", "upo-aux2"]
    assert [p.name for p in quick.points] == ["dpo", "upo"]
    assert quick.base == {"max_steps": 2, "lora": True} and str(quick.output_dir) == "q"


def test_frontier_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frontier", "--help"])
    assert e.value.code == 0
    assert "usage: upo frontier" in capsys.readouterr().out


def test_upo_frontier_end_to_end_and_resume(tiny_model_dir, tiny_tokenizer, pairs_file, tmp_path, capsys):
    out = tmp_path / "frontier"
    spec = {
        "output_dir": str(out),
        "base": {"model": str(tiny_model_dir), "dataset": str(pairs_file), "eval_fraction": 0.25, "batch_size": 2,
                 "max_steps": 1, "learning_rate": 1e-2, "precision": "fp32", "progress": False,
                 "cache_dir": str(tmp_path / "cache"), "rewards": {"length": 1.0}, "max_length": 96,
                 "max_prompt_length": 32, "plot_curves": False},
        "eval": {"prompts": 2, "max_new_tokens": 8, "scorers": ["readability", "reading_ease", "length_words"],
                 "judge": f"rm:{save_tiny_reward_model(tiny_tokenizer, tmp_path / 'rm')}"},
        "methods": ["dpo", "upo", "no_such_method"],
        "aux_coef": [0.5],
    }
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(spec))
    assert main(["frontier", "--config", str(sweep)]) == 2  # a config error: before anything trains
    assert f"{sweep}: point no_such_method: method must be one of" in capsys.readouterr().err
    assert not out.exists()
    # a point that fails as it runs (its model is not there) fails alone
    spec = {**spec, "methods": ["dpo", "upo"], "points": [{"name": "no_such_method", "method": "dpo",
                                                           "model": str(tmp_path / "no-model")}]}
    sweep.write_text(yaml.safe_dump(spec))
    assert main(["frontier", "--config", str(sweep)]) == 1
    log = capsys.readouterr().out
    assert "no_such_method: FAILED: FileNotFoundError:" in log

    result = json.loads((out / "frontier.json").read_text())
    assert [(r["name"], r["group"]) for r in result["points"]] == [("base", "base"), ("dpo", "preference"),
                                                                    ("upo", "upo")]
    assert [f["name"] for f in result["failed"]] == ["no_such_method"]
    assert result["preference_metric"] == "judge/win_rate"
    assert result["aux_metrics"] == ["readability/fk_grade", "reading_ease/ease"]
    assert [e["axes"] for e in result["summary"]] == [["judge/win_rate", "readability/fk_grade"],
                                                       ["judge/win_rate", "reading_ease/ease"],
                                                       ["judge/win_rate", "readability/fk_grade", "reading_ease/ease"]]
    assert result["summary"][0]["preference_front"] == ["dpo"] and result["summary"][0]["upo_front"] == ["upo"]
    assert result["summary"][0]["points"] == 3  # the base model has a win rate too
    # the trained points (not the base model) have implicit rewards against the base model
    assert "rewards/accuracies" in result["points"][1]["metrics"]
    assert "rewards/accuracies" not in result["points"][0]["metrics"]
    with (out / "frontier.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["name"] for r in table] == ["base", "dpo", "upo"]
    assert float(table[1]["readability/fk_grade"]) == result["points"][1]["metrics"]["readability/fk_grade"]
    for png in ("frontier_readability_fk_grade.png", "frontier_reading_ease_ease.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "](frontier_readability_fk_grade.png)" in report and "| upo | upo | upo | 0.5 |" in report
    assert "no_such_method" in report and (out / "points" / "no_such_method" / "error.txt").exists()
    upo_run = yaml.safe_load((out / "points" / "upo" / "config.yaml").read_text())
    assert upo_run["aux_coef"] == 0.5 and upo_run["method"] == "upo"

    stamps = {p: (out / "points" / p / "eval.json").stat().st_mtime_ns for p in ("base", "dpo", "upo")}
    assert main(["frontier", "--config", str(sweep)]) == 1
    log = capsys.readouterr().out
    for p in ("base", "dpo", "upo"):
        assert f"{p}: done earlier, skipping" in log
        assert (out / "points" / p / "eval.json").stat().st_mtime_ns == stamps[p]
        assert f" {p}: training" not in log
    assert " no_such_method: training" in log  # the failed point is tried again

    # a changed training config never overwrites a finished point
    spec["base"]["learning_rate"] = 5e-3
    sweep.write_text(yaml.safe_dump({**spec, "methods": ["dpo"]}))
    assert main(["frontier", "--config", str(sweep)]) == 1
    assert "dpo: FAILED: ConfigError:" in capsys.readouterr().out and "learning_rate" in (
        out / "points" / "dpo" / "error.txt").read_text()


def test_example_sweep_is_valid():
    """examples/frontier_hh.yaml: every point's config builds (nothing is trained or loaded)."""
    from pathlib import Path

    from upo.frontier.run import eval_template, point_config

    path = Path(__file__).resolve().parents[1] / "examples" / "frontier_hh.yaml"
    full, quick = load_sweep(path), load_sweep(path, quick=True)
    assert [p.name for p in full.points] == ["dpo", "kto", "upo-aux0.3", "upo-aux1", "upo-aux3", "modpo", "aoppo",
                                             "csft", "dpo-relabel", "kto-relabel"]
    assert [p.name for p in quick.points][:3] == ["dpo", "kto", "upo"] and len(quick.points) == 8
    for sweep in (full, quick):
        configs = [point_config(p, sweep) for p in sweep.points]
        # the base's rewards go to the points that use them; the preference-only points get none
        assert {p.name for p, c in zip(sweep.points, configs, strict=True) if c.rewards} == {
            p.name for p in sweep.points if p.group != "preference"}
        assert all(c.rewards in ({}, {"safety": 0.95, "readability": 0.05}) for c in configs)
        template = eval_template(sweep, sweep.base_config())
        assert template.judge == "rm:runs/rm-hh/final" and template.eval_fraction == sweep.base["eval_fraction"]
    assert {p.name: p.group for p in full.points}["kto-relabel"] == "auxiliary"
    assert str(quick.output_dir) != str(full.output_dir)


def test_the_sweeps_evaluation_reads_the_base_eval_dataset_at_its_eval_split(tmp_path):
    from upo.frontier.run import eval_template
    from upo.frontier.sweep import load_sweep

    sweep_file = tmp_path / "sweep.yaml"
    base = {"dataset": "ds", "eval_dataset": "ds", "eval_fraction": 0.0}
    sweep_file.write_text(yaml.safe_dump({"base": {**base, "eval_split": "test"}, "methods": ["dpo"],
                                          "eval": {"judge": "none"}}))
    sweep = load_sweep(sweep_file)
    assert (eval_template(sweep, sweep.base_config()).data, eval_template(sweep, sweep.base_config()).data_split) == (
        "ds", "test")
    sweep_file.write_text(yaml.safe_dump({"base": base, "methods": ["dpo"], "eval": {"judge": "none"}}))
    sweep = load_sweep(sweep_file)
    assert eval_template(sweep, sweep.base_config()).data_split == "train"  # dataset_split


def test_a_judge_trained_on_the_evaluated_rows_is_flagged(tmp_path):
    from upo.evaluation.config import EvalConfig
    from upo.frontier.run import judge_split_warning

    rm = tmp_path / "rm" / "final"
    rm.mkdir(parents=True)
    template = EvalConfig(data="hh.jsonl.gz", eval_fraction=0.1, split_seed=42, judge=f"rm:{rm}")
    assert judge_split_warning(template) is None  # no rm_config.yaml: nothing known
    for seed, fraction, flagged in ((42, 0.1, False), (42, 0.2, False), (42, 0.05, True), (7, 0.1, True)):
        (rm / "rm_config.yaml").write_text(yaml.safe_dump({"dataset": "hh.jsonl.gz", "seed": seed,
                                                           "eval_fraction": fraction}))
        assert (judge_split_warning(template) is not None) == flagged, (seed, fraction)
    (rm / "rm_config.yaml").write_text(yaml.safe_dump({"dataset": "other.jsonl", "seed": 7, "eval_fraction": 0.0}))
    assert judge_split_warning(template) is None
