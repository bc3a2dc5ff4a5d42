"""Typed config fields from YAML files and command-line flags: the machinery every upo config
(`upo.config.UPOConfig`, `upo eval`'s, `upo rm train`'s) is loaded with. Unknown keys and values of
the wrong type are `ConfigError`s that name the source and the key."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config problem a user can fix: names the key and what was wrong."""


def field_comments(cls: type) -> dict[str, str]:
    """The comment after each field in a config dataclass's source: its --help text."""
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        match = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.+)$", line)
        if match:
            comments[match.group(1)] = match.group(2)
    return comments


def coerce_fields(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """Raw values (from YAML, or strings from the command line) -> field values of dataclass `cls`;
    unknown keys are errors with a "did you mean"."""
    import difflib

    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    coerced = {}
    for key, value in values.items():
        key = str(key)
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint}{_trl_hint(key, fields)}")
        coerced[key] = coerce_value(key, hints[key], value, source)
    return coerced


def _trl_hint(key: str, fields: set[str]) -> str:
    """For a TRL config key in an upo training config: its upo name, and `upo from-trl`."""
    from upo.trl_keys import RENAMED

    if "model" not in fields or key not in RENAMED or RENAMED[key] == key:  # only UPOConfig's keys are TRL's
        return ""
    return (f"; it is TRL's name of upo's {RENAMED[key]!r}: `upo from-trl FILE --trainer dpo|kto|cpo|orpo` "
            "translates a whole TRL config")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, but a key given twice in one mapping is an error (PyYAML keeps the
    last silently: `rewards: {safety: 1, safety: 0.5}` would train with 0.5 alone). The keys are
    checked as written, on the composed nodes, before merge keys (`<<: *anchor`, whose keys a
    mapping may override) copy anything in."""

    def construct_document(self, node):
        _check_unique_keys(node, set())
        return super().construct_document(node)


def _check_unique_keys(node, seen_nodes: set[int]) -> None:
    """A ConstructorError at the second of two equal scalar keys (same tag and text) of a mapping
    node under `node`; each node visited once (aliases share nodes)."""
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if (key_node.tag, key_node.value) in keys:
                    raise yaml.constructor.ConstructorError(None, None, f"the key {key_node.value!r} is given twice",
                                                            key_node.start_mark)
                keys.add((key_node.tag, key_node.value))
            _check_unique_keys(value_node, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_unique_keys(item, seen_nodes)


def load_yaml(text: str) -> Any:
    """A user's YAML text (a config file, a mapping given as a flag) as yaml.safe_load reads it, but
    a mapping that repeats a key is a yaml.YAMLError."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: safe_load with one more check


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of key: value")
    return data


def load_dataclass(cls: type, path: str | Path | None = None, overrides: dict[str, Any] | None = None):
    """defaults < YAML file of `cls`'s keys at `path` < `overrides` (e.g. command-line flags)."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(coerce_fields(cls, read_yaml_mapping(path), str(path)))
    values.update(coerce_fields(cls, overrides or {}, "command line"))
    return cls(**values)


def coerce_value(key: str, hint: Any, value: Any, source: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce_value(key, arg, value, source)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{source}: bad value for {key!r}: {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{source}: {key!r} must be true or false, got {value!r}")
    if hint in (int, float):
        return _number(key, hint, value, source)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{source}: {key!r} must be a string, got {value!r}")
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if typing.get_args(hint) in ((float,), (int,)) and isinstance(value, list):
            return [coerce_value(key, typing.get_args(hint)[0], v, source) for v in value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        kind = {(float,): "numbers", (int,): "whole numbers"}.get(typing.get_args(hint), "strings")
        raise ConfigError(f"{source}: {key!r} must be a list of {kind}, got {value!r}")
    if origin is dict and typing.get_args(hint)[1] is not float:  # steer_reward_mixes
        return _coerce_mixes(key, value, source)
    if origin is dict:
        return _coerce_weights(key, value, source)
    raise ConfigError(f"{source}: cannot set {key!r} from {value!r}")


def _number(key: str, kind: type, value: Any, source: str) -> int | float:
    """An int (from an int or its text) or a float (from an int, a float or its text); never a bool."""
    if not isinstance(value, bool):
        if isinstance(value, (int,) if kind is int else (int, float)):
            return kind(value)
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
    raise ConfigError(f"{source}: {key!r} must be {'an integer' if kind is int else 'a number'}, got {value!r}")


def _coerce_weights(key: str, value: Any, source: str) -> dict[str, float]:
    """`{name: weight}` from YAML, or `name=weight,name=weight` from the command line (or a YAML or
    JSON mapping there: `--rewards '{"safety": 0.95}'`)."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = load_yaml(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: {key!r} must be name=weight,name=weight or a mapping: {e}") from None
    if isinstance(value, str):
        out: dict[str, Any] = {}
        for item in filter(None, (v.strip() for v in value.split(","))):
            name, sep, weight = item.rpartition("=")
            if not sep:
                name, weight = item, "1.0"
            if name.strip() in out:
                raise ConfigError(f"{source}: {key!r} names {name.strip()!r} twice: give each once, with its weight")
            out[name.strip()] = weight.strip()
        value = out
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key!r} must be a mapping of name -> weight, got {value!r}")
    result = {}
    for name, weight in value.items():
        try:
            result[str(name)] = float(weight)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: weight of {key}.{name} must be a number, got {weight!r}") from None
    return result


def _coerce_mixes(key: str, value: Any, source: str) -> dict[str, dict[str, float]]:
    """`{name: {reward: weight}}` from YAML, or the same as YAML text from the command line
    (`--steer_reward_mixes '{safe: {safety: 1}, readable: {readability: 1}}'`)."""
    if isinstance(value, str):
        try:
            value = load_yaml(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: {key!r} must be a YAML mapping of name -> rewards: {e}") from None
    return checked_mixes(value)


def checked_mixes(mixes: Any) -> dict[str, dict[str, float]]:
    """steer_reward_mixes as {name: {scorer: float weight}}: a non-empty mapping of names a control
    token can carry (letters, digits, '.', '_', '-'), each a non-empty mapping of finite weights."""
    from upo.data.steering import MIX_NAME

    if not isinstance(mixes, dict) or not mixes:
        raise ConfigError(f"steer_reward_mixes must be a non-empty mapping of name -> rewards, got {mixes!r}")
    out = {}
    for name, weights in mixes.items():
        if not isinstance(name, str) or not MIX_NAME.match(name):
            raise ConfigError(f"steer_reward_mixes: mix name {name!r}: use letters, digits, '.', '_' and '-' only")
        if not isinstance(weights, dict) or not weights:
            raise ConfigError(f"steer_reward_mixes.{name} must be a non-empty mapping of reward -> weight, "
                              f"got {weights!r}")
        out[name] = _coerce_weights(f"steer_reward_mixes.{name}", weights, "steer_reward_mixes")
        if not all(math.isfinite(w) for w in out[name].values()):
            raise ConfigError(f"steer_reward_mixes.{name}: weights must be finite numbers, got {weights!r}")
    return out
