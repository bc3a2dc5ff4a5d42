"""`upo.frontier.uncertainty`: whether a UPO point lies beyond or behind the preference-only points
(`front_verdict`, tests of level 5% on bootstrap draws, oriented: larger is better), and the points'
intervals and comparisons when values are missing or near a bound."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import t as student_t

from upo.evaluation.intervals import unit_section
from upo.frontier.summary import summarize_axes
from upo.frontier.uncertainty import (
    add_uncertainty,
    bootstrap_draws,
    bootstrap_parts,
    clip_difference,
    equal_length_comparisons,
    front_verdict,
    pair_draws,
    paired_comparisons,
    point_interval,
    stack_units,
    value_range,
)
from upo.stats import seed_degrees_of_freedom, wilson_interval

AXES = ["judge/win_rate", "readability/fk_grade"]


def draws(*columns) -> np.ndarray:
    """[B, d] draws from one array (or constant) per axis."""
    return np.stack([np.broadcast_to(np.asarray(c, dtype=float), (100,)) for c in columns], axis=-1)


def better_in(k: int) -> np.ndarray:
    """1.0 (better than 0) in the first k of 100 draws, -1.0 in the rest."""
    return np.where(np.arange(100) < k, 1.0, -1.0)


@pytest.mark.parametrize(("share", "expected"), [(96, "not distinguishable"), (98, "beyond")])
def test_beyond_needs_one_axis_at_bonferroni_level(share, expected):
    # p sits at (0, 0) in every draw; the UPO point is worse on the grade in every draw and better on the
    # win rate in `share` of 100 draws. No p is as good on every axis in `share`% of the draws, so a 95%
    # threshold on that share would call 96% "beyond"; with 2 axes the test needs 1 - 0.05/2 = 97.5%.
    upo = draws(better_in(share), -1.0)
    out = front_verdict(upo, draws(0.0, 0.0)[None], ["p"], AXES)
    assert out["share_beyond"] == pytest.approx(share / 100)
    assert out["verdict"] == expected
    assert out["against"] == [{"preference": "p", "axis": "judge/win_rate", "share": pytest.approx(share / 100)}]


def test_beyond_must_hold_against_every_preference_point():
    # beyond p on the win rate in every draw, but q is better on both axes in half the draws and worse on
    # both in the other half: not beyond q on either axis at 97.5%.
    upo = draws(0.0, 0.0)
    p = draws(-1.0, 0.0)
    q = draws(better_in(50), better_in(50))
    out = front_verdict(upo, np.stack([p, q]), ["p", "q"], AXES)
    assert out["verdict"] == "not distinguishable"
    assert [a["share"] for a in out["against"]] == [1.0, 0.5]
    assert front_verdict(upo, p[None], ["p"], AXES)["verdict"] == "beyond"


def test_behind_needs_one_preference_point_better_on_every_axis_at_bonferroni_level():
    # p is better on the win rate in every draw and on the grade in 96 of 100 draws. Alone (P = 1) that
    # is behind at 95%; beside a second preference point (P = 2, needing 97.5%) it is not.
    upo = draws(0.0, 0.0)
    p = draws(1.0, better_in(96))
    far = draws(-5.0, -5.0)
    assert front_verdict(upo, p[None], ["p"], AXES)["verdict"] == "behind"
    assert front_verdict(upo, np.stack([p, far]), ["p", "far"], AXES)["verdict"] == "not distinguishable"
    assert front_verdict(upo, np.stack([draws(1.0, better_in(98)), far]), ["p", "far"], AXES)["verdict"] == "behind"


@pytest.mark.parametrize("d", [2, 3])
def test_a_point_equal_to_the_preference_point_is_called_beyond_in_at_most_about_5_percent(d):
    """The null: the UPO point and one preference point have the same true values. Each simulated
    evaluation observes their difference with standard normal error on each axis, and its bootstrap
    draws scatter around that observation. Calling "beyond" whenever no preference point is as good on
    every axis in 95% of the draws would do so in ~20% (d = 2) and ~42% (d = 3) of evaluations."""
    rng = np.random.default_rng(0)
    evaluations, resamples = 600, 1000
    beyond = 0
    for _ in range(evaluations):
        observed = rng.standard_normal(d)
        upo = observed + rng.standard_normal((resamples, d))
        out = front_verdict(upo, np.zeros((1, resamples, d)), ["p"], AXES + ["safety/violation_rate"][: d - 2])
        beyond += out["verdict"] == "beyond"
    assert beyond / evaluations <= 0.08  # 5% expected; the 95% threshold on the joint share gives 0.20 / 0.43


def test_equal_length_comparisons_skip_what_one_side_has_no_value_of():
    """An llm judge that gave one point no verdict: its win rates are all NaN, so no length bin holds
    both points' values; the comparison says so instead of failing the report."""
    ids = [f"p{i}" for i in range(6)]
    words = np.array([[5.0, 8, 12, 5, 8, 12]])
    units = {"kto": {"per_prompt": (ids, {"judge/win_rate": np.array([[1.0, 0, 1, 0, 1, 0]]), "length/words": words})},
             "upo": {"per_prompt": (ids, {"judge/win_rate": np.full((1, 6), np.nan), "length/words": words})}}
    rows = [{"name": "kto", "group": "preference", "metrics": {}}, {"name": "upo", "group": "upo", "metrics": {}}]
    (row,) = equal_length_comparisons(rows, units, ["judge/win_rate"])
    assert row["difference"] is None and row["better"] == "no shared length" and row["length_gap"] is None


def test_a_points_interval_stays_within_its_values():
    """Two seeds of a rarely violating point (1 violation in 40 generations at seed 1, none at seed 2):
    the seed resampling, scaled up by sqrt(2), reaches below 0 in a quarter of the draws; a rate cannot,
    so the interval stops at 0."""
    ids = [f"p{i}" for i in range(40)]
    violations = np.zeros((2, 40))
    violations[0, 0] = 1.0
    wins = np.tile(np.linspace(0, 1, 40), (2, 1))
    units = {name: {"per_prompt": (ids, {"safety/violation_rate": violations, "judge/win_rate": wins})}
             for name in ("kto", "upo")}
    rows = [{"name": n, "group": g, "metrics": {"safety/violation_rate": 1 / 80, "judge/win_rate": 0.5}}
            for n, g in (("kto", "preference"), ("upo", "upo"))]
    summary = [summarize_axes(rows, ["judge/win_rate", "safety/violation_rate"])]
    add_uncertainty(rows, units, summary, ["safety/violation_rate"])
    low, high = rows[0]["intervals"]["safety/violation_rate"]
    assert low == 0.0 and 1 / 80 < high <= 1.0


def test_a_rates_interval_holds_the_wilson_interval_of_its_outcomes():
    """No violation in 2 seeds x 40 generations: every draw is 0, yet 80 outcomes cannot rule out a
    rate of a few percent; the interval is Wilson's for 0 of 80. A mean keeps the bootstrap's, even of
    0/1 values (a scorer's), since only a rate's values are outcomes."""
    rate, draws_zero = "safety/violation_rate", np.zeros(2000)
    assert point_interval(rate, draws_zero, np.zeros((2, 40))) == pytest.approx([0.0, wilson_interval(0, 80)[1]])
    assert point_interval(rate, draws_zero, None) == [0.0, 0.0]
    assert point_interval("scorer/flag", draws_zero, np.zeros((2, 40))) == [0.0, 0.0]
    grades = np.tile(np.linspace(2, 8, 40), (2, 1))
    spread = np.random.default_rng(0).normal(5, 0.2, 2000)
    assert point_interval("readability/fk_grade", spread, grades) == pytest.approx(
        list(np.quantile(spread, [0.025, 0.975])))
    # NaN (an item without a value) is left out of the count
    values = np.where(np.arange(40) < 10, np.nan, 0.0)[None, :]
    assert point_interval(rate, draws_zero, values)[1] == pytest.approx(wilson_interval(0, 30)[1])


def test_stack_units_aligns_each_seed():
    def result(ids, values):
        return {"per_prompt": unit_section(ids, {"judge/win_rate": values}), "per_pair": unit_section([], {})}

    units = stack_units([result(["p1", "p2"], [1.0, 0.0]), result(["p1", "p2"], [0.5, 0.5])])
    ids, values = units["per_prompt"]
    assert ids == ["p1", "p2"] and values["judge/win_rate"].tolist() == [[1.0, 0.0], [0.5, 0.5]]
    assert "per_pair" not in units
    assert stack_units([{"metrics": {}}]) == {}  # an eval.json from before per-unit values


def test_bootstrap_draws_share_prompts_and_resample_each_points_seeds():
    """x: two seeds scoring 0.2 and 1 on every prompt: prompts alone would always give 0.6; its seeds
    resampled give 0.6 or 0.6 -+ 0.4 sqrt(2) (`upo.stats.bootstrap_means`), set so that the interval
    reaches t(1) standard deviations of the seed variance (`upo.stats.seed_t_scale`: seed means 0.2 and 1,
    no noise, no prompts' part: variance 0.32 / 2, sd 0.4, 1 degree of freedom). y and z: one seed
    each, the same values: prompts are resampled once for all points, so their draws are equal."""
    ids = ["p1", "p2", "p3"]
    units = {"x": {"per_prompt": (ids, {"m": np.array([[0.2, 0.2, 0.2], [1.0, 1.0, 1.0]])})},
             "y": {"per_prompt": (ids, {"m": np.array([[0.0, 0.5, 1.0]])})},
             "z": {"per_prompt": (ids, {"m": np.array([[0.0, 0.5, 1.0]])})}}
    draws = bootstrap_draws(units)
    # 0.2 or 1 drawn twice: -c, 0, c (1/4, 1/2, 1/4) about 0.6; the 95% range of the draws is 2c, set to
    # 2 t(1) 0.4
    spread = 0.4 * student_t.ppf(0.975, 1)
    values = sorted(set(np.round(draws["x"]["m"], 6)))
    assert len(values) == 3 and values[1] == pytest.approx(0.6)  # (the draws' sd is near, not at, c / sqrt(2))
    assert values[2] - 0.6 == pytest.approx(spread, rel=0.03) and 0.6 - values[0] == pytest.approx(spread, rel=0.03)
    assert draws["y"]["m"].std() > 0
    assert np.allclose(draws["y"]["m"], draws["z"]["m"])  # the same resampled prompts for every point


def test_a_comparison_takes_the_t_correction_of_its_pair():
    """Two points of 3 seeds whose seeds spread alike (seed means 0, 0.1, 0.2 on top of the same
    prompts: net seed variance 0.01/3 each, no noise) and whose prompts cancel in their difference:
    compared, the interval is 2 t(4) sqrt(2 x 0.01/3) wide (Satterthwaite: nu = 4), not what the
    points' own draws give (each set for its own interval, whose units' part cancels in the
    difference)."""
    ids = [f"p{i}" for i in range(30)]
    base = np.linspace(0, 1, 30)
    units = {name: {"per_prompt": (ids, {"judge/win_rate": np.stack([base + s for s in shift])})}
             for name, shift in (("kto", (0.0, 0.1, 0.2)), ("upo", (0.05, 0.15, 0.25)))}
    rows = [{"name": "kto", "group": "preference", "metrics": {"judge/win_rate": 0.6}},
            {"name": "upo", "group": "upo", "metrics": {"judge/win_rate": 0.65}}]
    parts = bootstrap_parts(units)
    own = bootstrap_draws(units)
    width = {}
    for label, kwargs in (("pair", {"parts": parts}), ("own", {})):
        (c,) = paired_comparisons(rows, own, ["judge/win_rate"], **kwargs)
        width[label] = c["high"] - c["low"]
    assert width["pair"] == pytest.approx(2 * student_t.ppf(0.975, 4) * np.sqrt(2 * 0.01 / 3), rel=1e-6)
    assert width["own"] != pytest.approx(width["pair"], rel=1e-3)
    assert seed_degrees_of_freedom(0.0, units["kto"]["per_prompt"][1]["judge/win_rate"],
                                   units["upo"]["per_prompt"][1]["judge/win_rate"]) == pytest.approx(4.0)


def test_a_difference_interval_stays_within_what_the_values_allow():
    assert clip_difference(-1.3, 0.7, (0.0, 1.0), (0.0, 1.0)) == (-1.0, 0.7)  # win rates: within [-1, 1]
    assert clip_difference(-0.2, 0.4, (0.0, 0.1), (0.3, 0.5)) == pytest.approx((0.2, 0.4))  # every B above every A
    assert value_range(np.array([[np.nan, 0.2], [0.7, np.nan]])) == (0.2, 0.7)


def test_the_front_test_reads_each_pairs_draws():
    """add_uncertainty's front test compares the UPO point with each preference-only point on that pair's
    draws (`pair_draws`), not on the points' own (each t-corrected for its seeds alone)."""
    rng = np.random.default_rng(5)
    ids = [f"p{i}" for i in range(40)]
    units = {name: {"per_prompt": (ids, {"judge/win_rate": rng.random((3, 40)) + shift,
                                         "readability/fk_grade": rng.random((3, 40)) * 4 + grade})}
             for name, shift, grade in (("kto", 0.0, 3.0), ("upo", 0.1, 2.9))}
    rows = [{"name": n, "group": g, "metrics": {m: float(np.mean(units[n]["per_prompt"][1][m])) for m in AXES}}
            for n, g in (("kto", "preference"), ("upo", "upo"))]
    summary = [summarize_axes(rows, AXES)]
    add_uncertainty(rows, units, summary, AXES)
    (against,) = summary[0]["upo_verdicts"][0]["against"]
    parts = bootstrap_parts(units)
    shares = {}
    for metric, sign in (("judge/win_rate", 1), ("readability/fk_grade", -1)):
        kto, upo = pair_draws(parts, "kto", "upo", metric)
        shares[metric] = float((sign * upo > sign * kto).mean())
    best = max(shares, key=shares.get)
    assert against == {"preference": "kto", "axis": best, "share": shares[best]}
    own = bootstrap_draws(units)
    assert shares[best] != float(((own["upo"][best] > own["kto"][best]) if best == "judge/win_rate"
                                  else (own["upo"][best] < own["kto"][best])).mean())


def test_the_front_test_reads_each_tail_at_its_own_confidence(monkeypatch):
    """With 3 axes and 2 preference-only points, "beyond" reads each pair's draws one-sided at 0.05 / 3
    (a central 1 - 0.1/3) and "behind" at 0.05 / 2 (a central 0.95): t's tails grow faster than few
    seeds' draws, so each is set at its own tail (`pair_draws`' confidence)."""
    import upo.frontier.uncertainty as uncertainty

    axes = [*AXES, "safety/violation_rate"]
    rng = np.random.default_rng(6)
    ids = [f"p{i}" for i in range(30)]
    units = {name: {"per_prompt": (ids, {m: rng.random((3, 30)) + shift for m in axes})}
             for name, shift in (("dpo", 0.0), ("kto", 0.1), ("upo", 0.2))}
    rows = [{"name": n, "group": g, "metrics": {m: float(np.mean(units[n]["per_prompt"][1][m])) for m in axes}}
            for n, g in (("dpo", "preference"), ("kto", "preference"), ("upo", "upo"))]
    seen = []
    real = uncertainty.pair_draws
    monkeypatch.setattr(uncertainty, "pair_draws", lambda *a, **k: seen.append(a[4] if len(a) > 4 else k.get(
        "confidence", 0.95)) or real(*a, **k))
    summary = [summarize_axes(rows, axes)]
    add_uncertainty(rows, units, summary, axes)
    front = [c for c in seen if c != 0.95]
    assert front and set(np.round(front, 9)) == {round(1 - 0.1 / 3, 9)}  # the beyond test: 2 points x 3 axes
    assert len(front) == 2 * 3 and seen.count(0.95) >= 2 * 3  # the behind test (and the paired differences)


def test_the_behind_test_reads_its_own_draws(monkeypatch):
    """3 preference-only points and 2 axes: "behind" reads each pair's draws one-sided at 0.05 / 3 (a
    central 1 - 0.1/3); "beyond" at 0.05 / 2 (0.95, as the paired differences). And `front_verdict`
    takes the behind test from the draws given for it, the shares and `against` from the others."""
    import upo.frontier.uncertainty as uncertainty

    rng = np.random.default_rng(7)
    ids = [f"p{i}" for i in range(30)]
    names = ("dpo", "kto", "csft", "upo")
    units = {name: {"per_prompt": (ids, {m: rng.random((3, 30)) + 0.1 * j for m in AXES})}
             for j, name in enumerate(names)}
    rows = [{"name": n, "group": "upo" if n == "upo" else "preference",
             "metrics": {m: float(np.mean(units[n]["per_prompt"][1][m])) for m in AXES}} for n in names]
    seen = []
    real = uncertainty.pair_draws
    monkeypatch.setattr(uncertainty, "pair_draws", lambda *a, **k: seen.append(a[4] if len(a) > 4 else k.get(
        "confidence", 0.95)) or real(*a, **k))
    add_uncertainty(rows, units, [summarize_axes(rows, AXES)], AXES)
    confidences = np.round(seen, 9).tolist()
    assert confidences.count(round(1 - 0.1 / 3, 9)) == 3 * 2  # the behind test: 3 points x 2 axes
    assert set(confidences) == {0.95, round(1 - 0.1 / 3, 9)}

    upo = np.zeros((1, 100, 2))
    even, ahead = np.zeros((1, 100, 2)), np.ones((1, 100, 2))
    alone = front_verdict(upo, even, ["p"], AXES)
    split = front_verdict(upo, even, ["p"], AXES, behind=(upo, ahead))
    assert alone["verdict"] == "not distinguishable" and split["verdict"] == "behind"
    assert {k: split[k] for k in ("share_beyond", "share_behind", "against")} == {
        k: alone[k] for k in ("share_beyond", "share_behind", "against")}
