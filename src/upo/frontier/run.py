"""Run a sweep: train every point, evaluate it and the base model, then summarize, plot and report.

Resumable: a point whose eval.json exists with the same evaluation settings is skipped; a trained
point (final/ exists) is only evaluated; a point with checkpoints resumes training. A folder that
holds a run with a different training config is an error for that point (never overwritten). A
point that fails (a bad config, a diverging loss) is reported and the others still run.
"""

from __future__ import annotations

import dataclasses
import json
import traceback
from pathlib import Path

import yaml

from upo.checkpoint import latest_checkpoint
from upo.config import ConfigError, UPOConfig
from upo.evaluation.config import EVAL_PRECISIONS, EvalConfig
from upo.evaluation.eval import make_judge, run_eval
from upo.evaluation.metrics import direction
from upo.frontier.plot import plot_frontier, slug
from upo.frontier.report import format_report, write_csv
from upo.frontier.summary import default_aux_metrics, preference_metric, summarize
from upo.frontier.sweep import Point, Sweep, load_sweep, uses_aux
from upo.rewards.cache import ScoreCache, default_cache_dir

RUN_ONLY_KEYS = ("resume", "progress")  # may differ between a run and its rerun


def log(message: str) -> None:
    print(f"upo frontier: {message}", flush=True)


def point_config(point: Point, sweep: Sweep) -> UPOConfig:
    """The point's UPOConfig (base < point keys), training into output_dir/points/<name>/."""
    out = sweep.output_dir / "points" / point.name
    keys = {**sweep.base, **point.overrides, "output_dir": str(out)}
    if not (uses_aux(keys.get("method", "upo"), keys.get("rewards", {})) or keys.get("relabel")):
        keys.pop("rewards", None)  # the base's rewards are for the points that use them
    return UPOConfig(**keys)


def eval_template(sweep: Sweep, base: UPOConfig) -> EvalConfig:
    """The sweep's eval settings; what it leaves out comes from the base config: the held-out split
    of its dataset (or its eval_dataset), lengths, precision, score cache."""
    values: dict = {"max_length": base.max_length, "max_prompt_length": base.max_prompt_length,
                    "cache_dir": base.cache_dir, "progress": base.progress, "split_seed": base.seed,
                    "data_split": base.dataset_split}
    if base.precision in EVAL_PRECISIONS:
        values["precision"] = base.precision
    if "data" not in sweep.eval:
        if base.eval_dataset:
            values["data"] = base.eval_dataset
        elif base.eval_fraction > 0:
            values.update(data=base.dataset, eval_fraction=base.eval_fraction)
        else:
            raise ConfigError("the sweep has no held-out data: set eval: {data: ...}, base.eval_dataset or "
                              "base.eval_fraction > 0")
    return EvalConfig(**{**values, **sweep.eval})


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


def _check_same_run(cfg: UPOConfig, out: Path) -> None:
    """Refuse to reuse a folder that holds a run of a different config."""
    saved = out / "config.yaml"
    if not saved.exists():
        return
    old = yaml.safe_load(saved.read_text()) or {}
    new = cfg.to_dict()
    differ = sorted(k for k in set(old) | set(new) if k not in RUN_ONLY_KEYS and old.get(k) != new.get(k))
    if differ:
        raise ConfigError(f"{out} holds a run with a different config ({', '.join(differ)}); delete the folder "
                          "or rename the point")


def _finished_eval(path: Path, settings: dict) -> bool:
    if not path.exists():
        return False
    old = json.loads(path.read_text()).get("settings")
    if old != settings:
        log(f"{path.parent.name}: evaluation settings changed; evaluating again")
        return False
    return True


def run_point(point: Point, sweep: Sweep, template: EvalConfig, judge, memo: dict) -> dict:
    """Train (unless done) and evaluate (unless done) one point; returns its eval.json dict."""
    out = sweep.output_dir / "points" / point.name
    if point.group == "base":
        cfg = sweep.base_config()
        eval_cfg = dataclasses.replace(template, model=cfg.model, ref_model=None, beta=cfg.beta, output=str(out))
    else:
        cfg = point_config(point, sweep)
        _check_same_run(cfg, out)
        eval_cfg = dataclasses.replace(template, model=str(out / "final"), ref_model=cfg.ref_model or cfg.model,
                                       beta=cfg.beta, output=str(out))
    eval_path = out / "eval.json"
    if _finished_eval(eval_path, eval_cfg.settings()):
        log(f"{point.name}: done earlier, skipping ({eval_path})")
        return json.loads(eval_path.read_text())
    if point.group != "base" and not (out / "final").exists():
        from upo.trainer import train

        resume = latest_checkpoint(out) is not None
        log(f"{point.name}: training ({cfg.method}{', resuming' if resume else ''}) into {out}")
        train(dataclasses.replace(cfg, resume=resume))
    log(f"{point.name}: evaluating")
    return run_eval(eval_cfg, judge=judge, reference_memo=memo)


def _row(point: Point, result: dict) -> dict:
    method = "base" if point.group == "base" else point.overrides.get("method")
    return {"name": point.name, "group": point.group, "method": method, "aux_coef": point.aux_coef,
            "variant": point.variant, "relabel": bool(point.overrides.get("relabel", False)),
            "model": result["model"], "metrics": result["metrics"]}


def run_frontier(config: str, quick: bool = False, output_dir: str | None = None) -> int:
    """`upo frontier`: returns 0, or 1 when some point failed (the others are still reported)."""
    sweep = load_sweep(config, quick=quick, output_dir=output_dir)
    base = sweep.base_config()
    template = eval_template(sweep, base)
    aux_metrics = default_aux_metrics(template.scorers) if sweep.aux_metrics == "auto" else list(sweep.aux_metrics)
    if not aux_metrics:
        raise ConfigError("no auxiliary metric to chart: add a scorer with a better direction to eval.scorers "
                          "(e.g. safety, readability) or list aux_metrics")
    for metric in aux_metrics + ([sweep.preference_metric] if sweep.preference_metric != "auto" else []):
        if direction(metric) is None:
            raise ConfigError(f"metric {metric!r} has no better direction (see upo.evaluation.metrics)")
    out = sweep.output_dir
    out.mkdir(parents=True, exist_ok=True)
    warnings = [w for w in (judge_split_warning(template),) if w]
    for warning in warnings:
        log(f"WARNING: {warning}")
    points = [Point("base", "base"), *sweep.points]
    log(f"{len(points)} points ({len(sweep.points)} to train and the base model) -> {out}")
    memo: dict = {}  # reference log-probs of the held-out pairs, shared by the points
    rows, failed = [], []
    with ScoreCache(template.cache_dir or default_cache_dir()) as cache:
        judge = make_judge(template, cache) if template.judge else None  # loaded once for every point
        for point in points:
            try:
                rows.append(_row(point, run_point(point, sweep, template, judge, memo)))
                (out / "points" / point.name / "error.txt").unlink(missing_ok=True)  # from an earlier failure
            except Exception as e:  # one point's failure must not lose the others' hours of training
                failed.append({"name": point.name, "error": f"{type(e).__name__}: {e}"})
                (out / "points" / point.name).mkdir(parents=True, exist_ok=True)
                (out / "points" / point.name / "error.txt").write_text(traceback.format_exc())
                log(f"{point.name}: FAILED: {type(e).__name__}: {e}")

    pref = preference_metric(rows, sweep.preference_metric)
    summary = summarize(rows, pref, aux_metrics)
    plots = {}
    for entry in summary[: len(aux_metrics)]:  # the 2-D ones
        png = f"frontier_{slug(entry['axes'][1])}.png"
        plot_frontier(rows, entry, out / png)
        plots[entry["axes"][1]] = png
    result = {
        "sweep": sweep.source,
        "quick": sweep.quick,
        "preference_metric": pref,
        "aux_metrics": aux_metrics,
        "directions": {m: direction(m) for r in rows for m in r["metrics"]},
        "eval_settings": {k: v for k, v in template.settings().items() if k not in ("model", "ref_model", "beta")},
        "points": rows,
        "summary": summary,
        "plots": plots,
        "failed": failed,
        "warnings": warnings,
    }
    (out / "frontier.json").write_text(json.dumps(result, indent=2) + "\n")
    write_csv(rows, out / "frontier.csv")
    (out / "report.md").write_text(format_report(result, plots) + "\n")
    log(f"wrote {out / 'frontier.json'}, frontier.csv, {', '.join(plots.values())} and report.md")
    if failed:
        log(f"{len(failed)} point(s) failed: {', '.join(f['name'] for f in failed)} (see points/NAME/error.txt); "
            "fix and rerun: finished points are skipped")
        return 1
    return 0
