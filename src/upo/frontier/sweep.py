"""SWEEP.yaml -> the list of points to train and evaluate.

    output_dir: runs/frontier              # frontier.json/.csv, PNGs, report.md (and points/ by default)
    points_dir: runs/frontier/points       # optional: where the run folders <name>/ live; default output_dir/points
    base: {...}                            # UPOConfig keys shared by every point (that its method reads)
    eval: {...}                            # EvalConfig keys (data: default = the base's held-out split)
    methods: [dpo, kto, upo, modpo]        # one point per method ...
    aux_coef: [0.3, 1.0, 3.0]              # ... times each value, for methods given auxiliary rewards
    method_overrides: {upo: {pref_loss: dpo}, modpo: {aux_coef: [1.0]}}
    reward_variants: {safety: {safety: 1.0}, mix: {safety: 0.95, readability: 0.05}}   # optional
    points: [{name: dpo-relabel, method: dpo, relabel: true}]                        # explicit extras
    points: [{name: upo-steered, method: upo, steer_aux_coefs: [0.3, 1, 3]}]        # one steered run
    points: [{name: upo-mixes, method: upo, steer_reward_mixes: {safe: {...}, readable: {...}}}]  # over mixes
    seeds: [1, 2, 3]                       # optional: train and generate every point once per seed
    preference_metric: auto                # or judge/win_rate, rewards/accuracies
    aux_metrics: auto                      # or a list of eval.json metric names
    compare_metrics: [safety/max_toxicity] # optional: more metrics compared UPO vs preference-only (not axes)
    eval_subdir: tokens-256                # optional: evaluations in this folder of each run folder
    quick: {...}                           # deep-merged over this file with --quick

`aux_coef` is the strength of the auxiliary objective: the config key the method table names for it
(`Method.aux_strength_key`: `aux_coef` for `upo`); for the other methods given auxiliary rewards
(`uses_rewards`, or `accepts_rewards` with rewards configured) a factor on every reward weight, their
one knob for it (MODPO's margin, aoPPO's R + r_a). A point's group is the table's too
(`Method.frontier_group`). A method's `aux_coef` in method_overrides (a number or a list)
replaces the grid for that method. Preference-only methods get one point.

With `seeds:`, point NAME trains into points/NAME/seed-S/ with `seed: S` (data order,
initialization, sampling) and generates its evaluation with seed S; every seed shares the held-out
split of the base's seed (`split_seed`). Without it each point is one run in points/NAME/.

`points_dir` (default output_dir/points; a relative path is relative to the working directory, as
output_dir is) holds the run folders. Sweeps given the same points_dir share every run they have in
common: a point of the same name whose config is the same (its run folder is refused otherwise) is
trained once, and its evaluation with the same settings is reused; each sweep writes its own report
into its own output_dir. `eval_subdir` puts each evaluation in that folder of its run folder, so
sweeps that evaluate the same trained runs otherwise (a larger max_new_tokens, another judge) keep
every evaluation: such a sweep trains nothing the other has trained. With --quick, points_dir is quick's own, or else the quick output_dir's
points/ (never the full sweep's); --output_dir moves the reports, not a points_dir the file sets.

Keys and types are checked when the file is read; the rest of each point's config (a method this
version lacks, a bad steer_aux_coefs) when `upo frontier` builds the UPOConfig of every point it is
to run (`point_config`), before anything trains.

An explicit point with `steer_aux_coefs` (steered UPO, `upo.data.steering`) trains once and is
evaluated at each of its conditions: it becomes one point per value, NAME-auxC in group "steered"
("UPO steered"), all sharing the run folder points/NAME/ and evaluated into points/NAME/aux-C/.
With `steer_reward_mixes` (in place of the base's rewards) its conditions are the mixes, NAME-MIX
evaluated into mix-MIX/, or with both keys every pair, NAME-auxC-MIX into aux-C-mix-MIX/; a point's
`variant` is then its mix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upo.config import ConfigError, UPOConfig, coerce, read_yaml_mapping
from upo.evaluation.config import coerce_eval

TOP_KEYS = ("output_dir", "points_dir", "base", "eval", "methods", "aux_coef", "method_overrides", "reward_variants",
            "points", "preference_metric", "aux_metrics", "compare_metrics", "eval_subdir", "seeds", "quick")
# Every point must share the held-out split (it is the evaluation set) and get its own run folder.
SHARED_KEYS = ("dataset", "dataset_split", "eval_dataset", "eval_split", "eval_fraction", "seed", "split_seed",
               "output_dir")
# Set per point by the sweep, not in eval:
EVAL_PER_POINT = ("model", "ref_model", "output", "beta", "aux_coef", "reward_mix")
GROUPS = ("base", "preference", "upo", "auxiliary", "steered")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Point:
    name: str
    group: str  # base | preference | upo | auxiliary | steered (README, upo frontier)
    overrides: dict[str, Any] = field(default_factory=dict)  # UPOConfig keys on top of the base
    aux_coef: float | None = None  # the swept auxiliary strength, if this point is on the grid (steered: its condition)
    variant: str | None = None  # the reward_variants entry, if any (steered over reward mixes: its mix)
    trained: str | None = None  # steered: the name of the one training run its conditions share


@dataclass
class Sweep:
    output_dir: Path
    base: dict[str, Any]  # coerced UPOConfig values
    eval: dict[str, Any]  # coerced EvalConfig values
    points: list[Point]
    points_dir: Path  # the run folders points_dir/<name>[/seed-S]/, which sweeps with the same one share
    preference_metric: str = "auto"
    aux_metrics: list[str] | str = "auto"
    compare_metrics: list[str] = field(default_factory=list)  # compared UPO vs preference-only besides the axes
    eval_subdir: str | None = None  # each evaluation in this folder of its run folder; None: the run folder itself
    source: str = ""
    quick: bool = False
    seeds: list[int] | None = None  # training (and generation) seeds of every point; None = one run, the base's seed

    def base_config(self) -> UPOConfig:
        return UPOConfig(**config_keys(self.base, {}))


def deep_merge(a: dict, b: dict) -> dict:
    """`b` over `a`: nested dicts merge key by key, anything else in `b` replaces."""
    out = dict(a)
    for key, value in b.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _method(name: str):
    """The method table's entry, or None for a name this version lacks (its config fails later)."""
    from upo.methods import METHODS  # imports torch: only when points are expanded

    return METHODS.get(name)


def config_keys(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """UPOConfig keys of a point: `base` < `overrides`, without the base's method-specific keys that
    the point's method does not read (`upo.methods.unread_method_keys`: e.g. the base's beta for a
    CSFT point, its aux_coef for DPO; `unread_setting_keys`: ld_alpha for KTO), which its config
    would refuse. The point's own keys are kept, so setting an unread one there is still an error."""
    # imports torch: only when configs are built
    from upo.methods import METHODS, unread_method_keys, unread_setting_keys

    keys = {**base, **overrides}
    method, pref_loss = keys.get("method", UPOConfig.method), keys.get("pref_loss", UPOConfig.pref_loss)
    unread = set(unread_method_keys(method, pref_loss, keys.get("loss_mix")))
    if method in METHODS:  # LD-DPO's and WPO's keys, label_smoothing, where the point's settings cannot take them
        unread.update(unread_setting_keys(METHODS[method], pref_loss, keys.get("loss_mix"),
                                          keys.get("aux_logp", UPOConfig.aux_logp),
                                          keys.get("cpo_loss_type", UPOConfig.cpo_loss_type)))
    if keys.get("steer_aux_coefs"):  # a steered point draws each example's aux_coef: the base's is not its own
        unread.add("aux_coef")
    if keys.get("steer_reward_mixes"):  # ... and its reward mix, in place of the base's rewards
        unread.add("rewards")
    return {**{k: v for k, v in base.items() if k not in unread}, **overrides}


def uses_aux(method: str, rewards: dict[str, float]) -> bool:
    """Whether `method` is given the auxiliary rewards (unknown names: no)."""
    m = _method(method)
    return m is not None and (m.uses_rewards or (m.accepts_rewards and bool(rewards)))


def point_group(method: str, relabel: bool, rewards: dict[str, float]) -> str:
    """The method's own group in the table (upo); else auxiliary (a baseline given the auxiliary
    information: its rewards, or relabelled pairs) or preference (the preference labels only)."""
    m = _method(method)
    if m is not None and m.frontier_group is not None:
        return m.frontier_group
    return "auxiliary" if relabel or uses_aux(method, rewards) else "preference"


def aux_strength(method: str, coef: float, rewards: dict[str, float]) -> dict[str, Any]:
    """The UPOConfig keys that set auxiliary strength `coef` for `method` (see the module docstring)."""
    m = _method(method)
    if m is not None and m.aux_strength_key is not None:
        return {m.aux_strength_key: coef}
    return {"rewards": {name: weight * coef for name, weight in rewards.items()}}


def _grid(value: Any, where: str) -> list[float]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ConfigError(f"{where}: expected a number >= 0 or a non-empty list of them, got {value!r}")
    return [float(v) for v in values]


def _coerce_upo(values: dict, where: str, allow_shared: bool = False) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys, got {values!r}")
    out = {}
    for key, value in values.items():
        if not allow_shared and key in SHARED_KEYS:
            raise ConfigError(f"{where}: {key!r} must be the same for every point; set it in base:")
        out[key] = coerce(str(key), value, source=where)
    return out


def expand_points(spec: dict[str, Any], base: dict[str, Any]) -> list[Point]:
    """The trained points of a sweep dict (not the base model): the methods x aux_coef x reward
    variants grid, then the explicit points. Raises ConfigError on duplicate or unsafe names."""
    methods = spec.get("methods") or []
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise ConfigError(f"methods: expected a list of method names, got {methods!r}")
    default_grid = _grid(spec.get("aux_coef", 1.0), "aux_coef")
    overrides = spec.get("method_overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"method_overrides: expected a mapping of method -> config keys, got {overrides!r}")
    variants = spec.get("reward_variants") or {}
    if not isinstance(variants, dict):
        raise ConfigError(f"reward_variants: expected a mapping of name -> rewards, got {variants!r}")
    variant_rewards = {name: coerce("rewards", weights, source=f"reward_variants.{name}")
                       for name, weights in variants.items()}

    points: list[Point] = []
    for method in methods:
        own = dict(overrides.get(method) or {})
        grid = _grid(own.pop("aux_coef"), f"method_overrides.{method}.aux_coef") if "aux_coef" in own else default_grid
        keys = {**_coerce_upo(own, f"method_overrides.{method}"), "method": method}
        rewards = keys.get("rewards", base.get("rewards", {}))
        relabel = keys.get("relabel", base.get("relabel", False))
        if not uses_aux(method, rewards):
            points.append(Point(method, point_group(method, relabel, rewards), keys))
            continue
        for variant, weights in (variant_rewards.items() if variant_rewards else [(None, rewards)]):
            for coef in grid:
                name = method + (f"-{variant}" if variant else "") + (f"-aux{coef:g}" if len(grid) > 1 else "")
                point_keys = {**keys, "rewards": weights, **aux_strength(method, coef, weights)}
                points.append(Point(name, point_group(method, relabel, weights), point_keys, coef, variant))

    for i, raw in enumerate(spec.get("points") or []):
        if not isinstance(raw, dict) or "name" not in raw:
            raise ConfigError(f"points[{i}]: expected a mapping with a name and config keys, got {raw!r}")
        raw = dict(raw)
        name, group = str(raw.pop("name")), raw.pop("group", None)
        keys = _coerce_upo(raw, f"points[{i}] ({name})")
        method = keys.get("method", base.get("method", "upo"))
        rewards, relabel = keys.get("rewards", base.get("rewards", {})), keys.get("relabel", base.get("relabel", False))
        if group is not None and group not in GROUPS[1:]:
            raise ConfigError(f"points[{i}] ({name}): group must be one of {', '.join(GROUPS[1:])}, got {group!r}")
        if keys.get("steer_aux_coefs") or keys.get("steer_reward_mixes"):  # one run, evaluated at each condition
            points += steered_points(name, group or "steered", keys)
            continue
        points.append(Point(name, group or point_group(method, relabel, rewards), keys, keys.get("aux_coef")))

    seen: set[str] = {"base"}  # the base model's point
    for p in points:
        if not _NAME.match(p.name):
            raise ConfigError(f"point name {p.name!r}: use letters, digits, '.', '_' and '-' only")
        if p.name in seen:
            raise ConfigError(f"two points are named {p.name!r} (and 'base' is the base model's)")
        seen.add(p.name)
    clash = sorted({p.trained for p in points if p.trained} & (seen - {p.name for p in points if p.trained}))
    if clash:
        raise ConfigError(f"steered point {clash[0]!r} trains in points/{clash[0]}/: another point has that name")
    return points


def steered_points(name: str, group: str, keys: dict[str, Any]) -> list[Point]:
    """A steered point's conditions, each a point of the one training run `name`: NAME-auxC (aux_coef
    steered), NAME-MIX (reward mixes, the mix as its variant) or NAME-auxC-MIX (both), aux_coef-major."""
    coefs = [float(c) for c in keys.get("steer_aux_coefs") or []] or [None]
    names = [f"{c:g}" for c in coefs if c is not None]
    if len(set(names)) < len(names):  # conditions are named, evaluated and chosen by their %g value
        raise ConfigError(f"points ({name}): steer_aux_coefs {names}: each value once, distinct in 6 significant digits")
    mixes = list(keys.get("steer_reward_mixes") or {}) or [None]
    return [Point(name + (f"-aux{c:g}" if c is not None else "") + (f"-{m}" if m is not None else ""), group, keys,
                  c, m, trained=name) for c in coefs for m in mixes]


def condition_folder(aux_coef: float | None, reward_mix: str | None) -> str:
    """The evaluation folder of one condition of a steered run: aux-C, mix-MIX or aux-C-mix-MIX."""
    return "-".join(part for part in (aux_coef is not None and f"aux-{aux_coef:g}",
                                      reward_mix is not None and f"mix-{reward_mix}") if part)


def _seeds(value: Any, where: str) -> list[int] | None:
    if value is None:
        return None
    if not (isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                      for v in value) and len(set(value)) == len(value)):
        raise ConfigError(f"{where}: seeds: expected a non-empty list of distinct integers >= 0, got {value!r}")
    return list(value)


def _points_dir(spec: dict[str, Any], quick_spec: dict[str, Any], output_dir: Path, quick: bool,
                where: str) -> Path:
    """The sweep's points_dir: its own, or output_dir/points; with --quick, only one that quick:
    sets (`quick_spec`), so a smoke run never writes into the full sweep's run folders."""
    value = quick_spec.get("points_dir") if quick else spec.get("points_dir")
    if value is None:
        return output_dir / "points"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: points_dir: expected a folder path, got {value!r}")
    return Path(value)


def load_sweep(path: str | Path, quick: bool = False, output_dir: str | None = None) -> Sweep:
    """Read SWEEP.yaml (with its quick: overrides when `quick`) and expand its points."""
    path = Path(path)
    spec = read_yaml_mapping(path)
    unknown = sorted(set(spec) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(TOP_KEYS)}")
    quick_spec = spec.get("quick") or {}
    if quick and not quick_spec:
        raise ConfigError(f"{path}: --quick applies the sweep's quick: overrides, and it has none (it would be the "
                          "full sweep): add e.g. quick: {output_dir: runs/frontier-quick, base: {max_steps: 4}, "
                          "eval: {prompts: 8}}")
    if quick:
        spec = deep_merge(spec, quick_spec)
    spec.pop("quick", None)
    base = _coerce_upo(spec.get("base") or {}, f"{path}: base", allow_shared=True)
    base.pop("output_dir", None)  # each point's run folder is points_dir/<name>
    eval_values = spec.get("eval") or {}
    if not isinstance(eval_values, dict):
        raise ConfigError(f"{path}: eval: expected a mapping of eval keys")
    per_point = sorted(set(eval_values) & set(EVAL_PER_POINT))
    if per_point:
        raise ConfigError(f"{path}: eval: {', '.join(per_point)} are set per point by the sweep")
    aux_metrics = spec.get("aux_metrics", "auto")
    if aux_metrics != "auto" and not (isinstance(aux_metrics, list) and aux_metrics):
        raise ConfigError(f"{path}: aux_metrics: expected auto or a list of metric names, got {aux_metrics!r}")
    compare_metrics = spec.get("compare_metrics", [])
    if not (isinstance(compare_metrics, list) and all(isinstance(m, str) for m in compare_metrics)):
        raise ConfigError(f"{path}: compare_metrics: expected a list of metric names, got {compare_metrics!r}")
    eval_subdir = spec.get("eval_subdir")
    if eval_subdir is not None and not (isinstance(eval_subdir, str) and _NAME.match(eval_subdir)):
        raise ConfigError(f"{path}: eval_subdir: expected a folder name (letters, digits, '.', '_', '-'), "
                          f"got {eval_subdir!r}")
    out = Path(output_dir or spec.get("output_dir") or "runs/frontier")
    try:
        points = expand_points(spec, base)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return Sweep(
        output_dir=out,
        base=base,
        eval=coerce_eval(eval_values, f"{path}: eval"),
        points=points,
        points_dir=_points_dir(spec, quick_spec, out, quick, str(path)),
        preference_metric=str(spec.get("preference_metric", "auto")),
        aux_metrics=aux_metrics,
        compare_metrics=compare_metrics,
        eval_subdir=eval_subdir,
        source=str(path),
        quick=quick,
        seeds=_seeds(spec.get("seeds"), str(path)),
    )
