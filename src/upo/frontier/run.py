"""Run a sweep: train every point, evaluate it and the base model, then summarize, plot and report.

With `seeds:` every point (the base model too) is one run per seed, and its metrics are the mean
over the seeds; every metric gets a 95% bootstrap interval over the prompts (and seeds), and the
summary says how sure UPO's gain is (`uncertainty.py`).

Every run's folder is in the sweep's points_dir (by default output_dir/points): sweeps that share
one share the runs they have in common, and each writes its own report into its own output_dir.

Resumable: a run whose eval.json exists with the same evaluation settings is skipped; a trained
run (final/ exists) is only evaluated; a run with checkpoints resumes training. A folder that
holds a run with a different training config is an error for that point (never overwritten). A
point that fails (a bad config, a diverging loss) is reported and the others still run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import traceback
from pathlib import Path

import numpy as np
import yaml

from upo.checkpoint import latest_checkpoint
from upo.config import ConfigError, UPOConfig
from upo.evaluation.config import EVAL_PRECISIONS, EvalConfig
from upo.evaluation.eval import make_judge, run_eval
from upo.evaluation.intervals import INTERVAL_SETTINGS, units_of
from upo.evaluation.metrics import direction
from upo.evaluation.rejudge import mixed_judges_warning
from upo.frontier.compute import group_compute, mean_compute, run_compute
from upo.frontier.finished import same_seeds_per_run, unfinished_warning
from upo.frontier.folders import check_same_run, error_file, eval_folder, run_folder, run_label
from upo.frontier.plot import plot_frontier, slug
from upo.frontier.report import format_report, write_csv
from upo.frontier.summary import default_aux_metrics, preference_metric, summarize
from upo.frontier.sweep import Point, Sweep, config_keys, load_sweep, uses_aux
from upo.frontier.uncertainty import add_uncertainty, equal_length_comparisons, stack_units
from upo.judges import LLMJudge
from upo.methods import unread_method_keys
from upo.rewards.cache import ScoreCache, default_cache_dir
from upo.rewards.reward_model import check_exists


def log(message: str) -> None:
    print(f"upo frontier: {message}", flush=True)


def point_config(point: Point, sweep: Sweep, seed: int | None = None) -> UPOConfig:
    """The point's UPOConfig (base < point keys), training into its run folder; with a seed, that
    seed and the base's held-out split (split_seed). The base's keys that the point's method does not
    read are left out: its method-specific ones (`config_keys`) and its rewards."""
    keys = {**config_keys(sweep.base, point.overrides), "output_dir": str(run_folder(sweep, point, seed))}
    if seed is not None:
        keys.update(seed=seed, split_seed=sweep.base_config().heldout_seed)
    if not (uses_aux(keys.get("method", "upo"), keys.get("rewards", {})) or keys.get("relabel")):
        keys.pop("rewards", None)  # the base's rewards are for the points that use them
    try:
        return UPOConfig(**keys)
    except ConfigError as e:
        raise ConfigError(f"{sweep.source}: point {point.trained or point.name}: {e}") from None


def eval_template(sweep: Sweep, base: UPOConfig) -> EvalConfig:
    """The sweep's eval settings; what it leaves out comes from the base config: the held-out split
    of its dataset (or its eval_dataset), lengths, precision, score cache."""
    values: dict = {"max_length": base.max_length, "max_prompt_length": base.max_prompt_length,
                    "cache_dir": base.cache_dir, "progress": base.progress, "split_seed": base.heldout_seed,
                    "data_split": base.dataset_split}
    if base.precision in EVAL_PRECISIONS:
        values["precision"] = base.precision
    if "data" not in sweep.eval:
        if base.eval_dataset:
            values.update(data=base.eval_dataset, data_split=base.eval_split or base.dataset_split)
        elif base.eval_fraction > 0:
            values.update(data=base.dataset, eval_fraction=base.eval_fraction)
        else:
            raise ConfigError("the sweep has no held-out data: set eval: {data: ...}, base.eval_dataset or "
                              "base.eval_fraction > 0")
    return EvalConfig(**{**values, **sweep.eval})


def missing_judge_warning(template: EvalConfig) -> str | None:
    """A warning when the rm: judge's folder does not exist (yet): trainings go on, and every evaluation
    fails until it does (the judge loads at the first one)."""
    try:
        check_exists(template.judge)
    except FileNotFoundError as e:
        return f"{e}: runs will train, but each evaluation fails until it exists; rerun the sweep then to evaluate them"
    return None


def judge_split_warning(template: EvalConfig) -> str | None:
    """A warning when the rm: judge was trained (`upo rm train`) on the evaluation data with a split
    that need not hold out the evaluated rows: another seed, or a smaller eval_fraction."""
    if not (template.judge or "").startswith("rm:") or template.eval_fraction is None:
        return None
    saved = Path(template.judge[3:]) / "rm_config.yaml"
    if not saved.is_file():
        return None
    rm = yaml.safe_load(saved.read_text()) or {}
    same_data = str(rm.get("dataset")) == template.data or (
        Path(template.data).exists() and Path(str(rm.get("dataset"))).resolve() == Path(template.data).resolve())
    if not same_data:
        return None
    if rm.get("seed") != template.split_seed or float(rm.get("eval_fraction", 0)) < template.eval_fraction:
        return (f"the judge {template.judge} was trained on {template.data} with seed {rm.get('seed')} and "
                f"eval_fraction {rm.get('eval_fraction')}: it may have trained on the evaluated rows (seed "
                f"{template.split_seed}, eval_fraction {template.eval_fraction}); train it with the same seed and "
                "an eval_fraction at least as large")
    return None


def _finished_eval(path: Path, settings: dict, quiet: bool = False) -> bool:
    if not path.exists():
        return False
    old = json.loads(path.read_text())
    why = ("evaluation settings changed" if old.get("settings") != settings else
           "evaluated by an older upo without per-prompt values" if not units_of(old) else None)
    if why and not quiet:
        log(f"{path.parent}: {why}; evaluating again")
    return why is None


@contextlib.contextmanager
def _run_lock(out: Path):
    """Hold `out/.lock` for the block: a second process (two `upo frontier` runs given the same seed)
    would delete the first one's checkpoint being written and its final/ being read."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{out} is in use by another upo frontier process (the same seed in two "
                              "processes, or the report run started before the --seeds ones ended)") from None
        yield


def run_eval_config(point: Point, sweep: Sweep, template: EvalConfig, seed: int | None = None) -> EvalConfig:
    """The evaluation of one run of a point: the sweep's `template` with the run's model (the base
    model, or its run's final/), reference, beta, output folder (`eval_folder`), generation seed and,
    for a steered condition, its aux_coef and reward mix. Its settings decide whether an eval.json is reused."""
    if seed is not None:
        template = dataclasses.replace(template, seed=seed)
    base = sweep.base_config()
    if point.group == "base":
        return dataclasses.replace(template, model=base.model, ref_model=None, beta=base.beta,
                                   output=str(eval_folder(sweep, point, seed)))
    cfg = point_config(point, sweep, seed)
    # the implicit rewards' beta: the point's own, or (SFT, CSFT: none) the base's, as every other point's
    beta = base.beta if "beta" in unread_method_keys(cfg.method, cfg.pref_loss, cfg.loss_mix) else cfg.beta
    return dataclasses.replace(template, model=str(run_folder(sweep, point, seed) / "final"),
                               ref_model=cfg.ref_model or cfg.model, beta=beta,
                               output=str(eval_folder(sweep, point, seed)),
                               aux_coef=point.aux_coef if point.trained else None,
                               reward_mix=point.variant if point.trained else None)


def run_point(point: Point, sweep: Sweep, template: EvalConfig, judge, memo: dict, seed: int | None = None) -> dict:
    """Train (unless done) and evaluate (unless done) one run of a point, generating with `seed`
    when given; returns its eval.json dict. The run's folder is locked meanwhile (`_run_lock`)."""
    with _run_lock(run_folder(sweep, point, seed)):
        return _run_point(point, sweep, template, judge, memo, seed)


def _run_point(point: Point, sweep: Sweep, template: EvalConfig, judge, memo: dict, seed: int | None) -> dict:
    out = run_folder(sweep, point, seed)
    label = run_label(point, seed)
    if point.group != "base":
        cfg = point_config(point, sweep, seed)
        check_same_run(cfg, out)
    eval_cfg = run_eval_config(point, sweep, template, seed)
    eval_path = eval_folder(sweep, point, seed) / "eval.json"
    if _finished_eval(eval_path, eval_cfg.settings()):
        log(f"{label}: done earlier, skipping ({eval_path})")
        return json.loads(eval_path.read_text())
    if point.group != "base" and not (out / "final").exists():
        from upo.trainer import train

        resume = latest_checkpoint(out) is not None
        log(f"{label}: training ({cfg.method}{', resuming' if resume else ''}) into {out}")
        train(dataclasses.replace(cfg, resume=resume))
    log(f"{label}: evaluating")
    return run_eval(eval_cfg, judge=judge, reference_memo=memo)


def finished_result(point: Point, sweep: Sweep, template: EvalConfig, seed: int | None,
                    quiet: bool = False) -> dict | None:
    """A run's eval.json dict if it is finished with the sweep's evaluation settings, else None; reads
    only (no lock, nothing trained or evaluated): what `--finished` reports while the sweep runs
    (`quiet`: without logging why an eval.json does not count)."""
    path = eval_folder(sweep, point, seed) / "eval.json"
    if point.group != "base":
        check_same_run(point_config(point, sweep, seed), run_folder(sweep, point, seed))
    try:
        finished = _finished_eval(path, run_eval_config(point, sweep, template, seed).settings(), quiet)
        return json.loads(path.read_text()) if finished else None
    except json.JSONDecodeError:  # being written this moment by the process evaluating it
        return None


def _unfinished(point: Point, sweep: Sweep, template: EvalConfig, seed: int | None) -> bool:
    """Whether a run is still to be trained or evaluated (a folder `finished_result` refuses counts:
    running it reports why)."""
    try:
        return finished_result(point, sweep, template, seed, quiet=True) is None
    except (ConfigError, OSError):
        return True


def _row(point: Point, results: list[dict], seeds: list[int] | None, computes: list[dict | None]) -> dict:
    """A point's row: its metrics (the mean over its seeds' evaluations), its training compute (the
    mean over its seeds' runs; None for the base model) and, with seeds, each run's metrics."""
    method = "base" if point.group == "base" else point.overrides.get("method")
    shared = [m for m in results[0]["metrics"] if all(m in r["metrics"] for r in results)]
    row = {"name": point.name, "group": point.group, "method": method, "aux_coef": point.aux_coef,
           "variant": point.variant, "relabel": bool(point.overrides.get("relabel", False)),
           "trained": point.trained, "compute": mean_compute(computes),
           "model": results[0]["model"], "metrics": {m: float(np.mean([r["metrics"][m] for r in results]))
                                                     for m in shared}}
    if seeds is not None:
        row["runs"] = [{"seed": s, "model": r["model"], "metrics": r["metrics"]} for s, r in zip(seeds, results,
                                                                                                  strict=True)]
    return row


def _record_failure(sweep: Sweep, point: Point, seed: int | None, error: Exception) -> dict:
    """Log a run's failure and keep its traceback in its `error_file`; returns its `failed` entry."""
    path = error_file(sweep, point, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(traceback.format_exc())
    message = f"{type(error).__name__}: {error}"
    log(f"{run_label(point, seed)}: FAILED: {message} (traceback in {path})")
    return {"name": point.name, "seed": seed, "error": message, "traceback": str(path)}


def _clear_failures(sweep: Sweep, point: Point, seeds: list[int | None]) -> None:
    """Delete the error files of a point whose every run succeeded: each seed's (`error_file`), and
    the one an older upo kept for the whole point in points_dir/<name>/."""
    for path in {*(error_file(sweep, point, seed) for seed in seeds), sweep.points_dir / point.name / "error.txt"}:
        path.unlink(missing_ok=True)


def run_frontier(config: str, quick: bool = False, output_dir: str | None = None,
                 only_seeds: list[int] | None = None, only_points: list[str] | None = None,
                 finished_only: bool = False) -> int:
    """`upo frontier`: returns 0, or 1 when some point failed (the others are still reported). With
    `only_seeds` and/or `only_points`, runs just those of the sweep's seeds and points (in the order named)
    and writes no report (parallel processes, or the points wanted first). With `finished_only`, trains
    and evaluates nothing: the report of the runs finished so far (of those seeds and points, if given),
    each point the mean over its finished seeds, the unfinished ones named in a warning."""
    sweep = load_sweep(config, quick=quick, output_dir=output_dir)
    if only_seeds is not None and len(set(only_seeds)) < len(only_seeds):
        raise ConfigError(f"--seeds {','.join(map(str, only_seeds))}: a seed named twice")
    if only_seeds is not None and not set(only_seeds) <= set(sweep.seeds or []):
        raise ConfigError(f"--seeds {','.join(map(str, only_seeds))}: the sweep's seeds are "
                          f"{sweep.seeds or 'not set (add seeds: to the sweep)'}; choose among them")
    points = [Point("base", "base"), *sweep.points]
    names = {p.name for p in points} | {p.trained for p in points if p.trained}  # a steered run: all its conditions
    unknown = sorted(set(only_points or []) - names)
    if unknown:
        raise ConfigError(f"--points {','.join(unknown)}: not a point of the sweep; its points are "
                          f"{', '.join(sorted(names))}")
    base = sweep.base_config()
    template = eval_template(sweep, base)
    aux_metrics = default_aux_metrics(template.scorers) if sweep.aux_metrics == "auto" else list(sweep.aux_metrics)
    if not aux_metrics:
        raise ConfigError("no auxiliary metric to chart: add a scorer with a better direction to eval.scorers "
                          "(e.g. safety, readability) or list aux_metrics")
    for metric in aux_metrics + ([sweep.preference_metric] if sweep.preference_metric != "auto" else []):
        if direction(metric) is None:
            raise ConfigError(f"metric {metric!r} has no better direction (see upo.evaluation.metrics)")
    if only_points is not None:
        order = {name: i for i, name in enumerate(only_points)}  # in the order named; a steered run's conditions together
        points = sorted((p for p in points if p.name in order or p.trained in order),
                        key=lambda p: order.get(p.name, order.get(p.trained)))
    seeds = only_seeds or sweep.seeds or [None]
    for point in points:  # the training configs of the points to run, checked before anything trains
        if point.group != "base":
            point_config(point, sweep, seeds[0])
    out = sweep.output_dir
    out.mkdir(parents=True, exist_ok=True)
    warnings = [w for w in (judge_split_warning(template), missing_judge_warning(template)) if w]
    for warning in warnings:
        log(f"WARNING: {warning}")
    runs = len({p.trained or p.name for p in points if p.group != "base"})  # a steered run's conditions share one training
    base_model = " and the base model" if any(p.group == "base" for p in points) else ""
    if finished_only:
        log(f"the finished runs of {len(points)} points in {sweep.points_dir} -> {out} (nothing trained or evaluated)")
    else:
        log(f"{len(points)} points ({runs} to train{base_model}) in {sweep.points_dir} -> {out}")
    memo: dict = {}  # reference log-probs of the held-out pairs, shared by the points
    rows, failed, units = [], [], {}
    untrained: dict[tuple[str, int | None], dict] = {}  # (steered run, seed) -> the failure of its training
    results: dict[str, list[dict]] = {point.name: [] for point in points}
    done: dict[str, list] = {point.name: [] for point in points}  # the seeds of each point's results
    with ScoreCache(template.cache_dir or default_cache_dir()) as cache:
        judge = make_judge(template, cache) if template.judge and not finished_only else None  # loaded once
        if isinstance(judge, LLMJudge) and any(_unfinished(p, sweep, template, s) for s in seeds for p in points):
            judge.check_reachable()  # its server answers, or an error before anything trains
        # Seeds run in rounds: every point's first seed before any point's second, so a sweep stopped
        # part-way holds a whole front at the seeds it finished, not some points at every seed.
        for seed in seeds:
            for point in points:
                if any(f["name"] == point.name for f in failed):
                    continue
                if finished_only:  # reads only: a folder of another config is an error, as always
                    result = finished_result(point, sweep, template, seed)
                    if result is None:
                        continue
                elif (point.trained, seed) in untrained:  # a steered run whose training failed: not again
                    first = untrained[point.trained, seed]
                    log(f"{run_label(point, seed)}: skipped: its run's training failed ({first['traceback']})")
                    failed.append({**first, "name": point.name})
                    continue
                else:
                    try:
                        result = run_point(point, sweep, template, judge, memo, seed)
                    except Exception as e:  # one point's failure must not lose the others' hours of training
                        failed.append(_record_failure(sweep, point, seed, e))
                        if point.trained and not (run_folder(sweep, point, seed) / "final").exists():
                            untrained[point.trained, seed] = failed[-1]
                        continue
                    error_file(sweep, point, seed).unlink(missing_ok=True)  # an earlier attempt's, now stale
                results[point.name].append(result)
                done[point.name].append(seed)
        mixed = mixed_judges_warning([r for point_results in results.values() for r in point_results])
        if mixed:
            warnings.append(mixed)
            log(f"WARNING: {mixed}")
        if finished_only:
            same_seeds_per_run(points, results, done)
            if not any(done.values()):
                raise ConfigError(f"--finished: no run of {sweep.source} is finished yet (in {sweep.points_dir})")
            warnings.append(unfinished_warning(points, seeds, done, chosen=only_points is not None))
            log(f"WARNING: {warnings[-1]}")
            points = [p for p in points if done[p.name]]
        elif only_seeds is not None or only_points is not None:
            chosen = " and ".join(f"{what} {', '.join(map(str, values))}" for what, values in
                                  (("seeds", only_seeds), ("points", only_points)) if values is not None)
            log(f"{chosen} done{' but for failed points' if failed else ''}; no report (it needs every seed "
                "and point): rerun without --seeds and --points to write it")
            return 1 if failed else 0
        for point in points:
            if not any(f["name"] == point.name for f in failed):
                computes = [None if point.group == "base" else run_compute(run_folder(sweep, point, seed))
                            for seed in done[point.name]]
                rows.append(_row(point, results[point.name], done[point.name] if sweep.seeds else None, computes))
                if point.group != "base":  # a UPO point's preference term: the preference-only point it extends
                    cfg = point_config(point, sweep)
                    rows[-1]["pref_loss"] = None if "pref_loss" in unread_method_keys(cfg.method, cfg.pref_loss, cfg.loss_mix) \
                        else cfg.pref_loss
                units[point.name] = stack_units(results[point.name])
                if not finished_only:
                    _clear_failures(sweep, point, seeds)

    pref = preference_metric(rows, sweep.preference_metric)
    summary = summarize(rows, pref, aux_metrics)
    compared = list(dict.fromkeys([pref, *aux_metrics, *sweep.compare_metrics]))
    for metric in sweep.compare_metrics:
        if not any(metric in r["metrics"] for r in rows):
            warnings.append(f"compare_metrics: no point has {metric!r}; not compared")
            log(f"WARNING: {warnings[-1]}")
    comparisons = add_uncertainty(rows, units, summary, [*compared, "length/words_ratio", "length/cut"])
    at_equal_length = equal_length_comparisons(rows, units, compared)
    plots = {}
    for entry in summary[: len(aux_metrics)]:  # the 2-D ones
        png = f"frontier_{slug(entry['axes'][1])}.png"
        plot_frontier(rows, entry, out / png)
        plots[entry["axes"][1]] = png
    result = {
        "sweep": sweep.source,
        "quick": sweep.quick,
        "seeds": (only_seeds or sweep.seeds) if sweep.seeds else None,  # --finished --seeds: those reported
        "points_dir": str(sweep.points_dir),
        "preference_metric": pref,
        "aux_metrics": aux_metrics,
        "directions": {m: direction(m) for r in rows for m in r["metrics"]},
        "eval_settings": {k: v for k, v in template.settings().items() if k not in ("model", "ref_model", "beta")},
        "points": rows,
        "summary": summary,
        "comparisons": comparisons,
        "comparisons_at_equal_length": at_equal_length,
        "compute": group_compute(rows),  # per seed: the training runs of each group
        "interval_settings": INTERVAL_SETTINGS,
        "plots": plots,
        "failed": failed,
        "warnings": warnings,
    }
    (out / "frontier.json").write_text(json.dumps(result, indent=2) + "\n")
    write_csv(rows, out / "frontier.csv")
    (out / "report.md").write_text(format_report(result, plots) + "\n")
    log(f"wrote {out / 'frontier.json'}, frontier.csv, {', '.join(plots.values())} and report.md")
    if failed:
        log(f"{len(failed)} point(s) failed: {', '.join(f['name'] for f in failed)} (tracebacks: "
            f"{', '.join(f['traceback'] for f in failed)}); fix and rerun: finished points are skipped")
        return 1
    return 0
