"""The domain of every numeric config key, stated in its type and checked before anything loads.

A config field says where its value may lie, beside the field:

    beta: Positive[float] = 0.1
    eval_fraction: Annotated[float, Interval("[0, 1)")] = 0.05

`typing.get_type_hints` drops the annotation (so coercion sees a plain `float`); `check_domains`
reads it back and refuses a value outside the interval, and NaN or infinity anywhere (a NaN passes
every `> 0` test: all its comparisons are false), with an error that names the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any

_INTERVAL = re.compile(r"^([\[(])\s*(-?inf|-?[\d.e+-]+)\s*,\s*(-?inf|-?[\d.e+-]+)\s*([\])])$")


@dataclass(frozen=True)
class Interval:
    """An interval written as in mathematics: "(0, inf)", "[0, 1)", "(0, 1]"."""

    spec: str

    def __post_init__(self) -> None:
        if not _INTERVAL.match(self.spec):
            raise ValueError(f"not an interval: {self.spec!r}")

    def _parts(self) -> tuple[bool, float, float, bool]:
        lo_bracket, lo, hi, hi_bracket = _INTERVAL.match(self.spec).groups()
        return lo_bracket == "[", float(lo), float(hi), hi_bracket == "]"

    def __contains__(self, value: float) -> bool:
        lo_closed, lo, hi, hi_closed = self._parts()
        above = value >= lo if lo_closed else value > lo
        below = value <= hi if hi_closed else value < hi
        return above and below

    def __str__(self) -> str:
        """"> 0", ">= 0" for half-lines; "any number" for the whole line; "in [0, 1)" otherwise."""
        lo_closed, lo, hi, _ = self._parts()
        if math.isinf(hi) and math.isinf(lo):
            return "any number"
        if math.isinf(hi):
            return f"{'>=' if lo_closed else '>'} {lo:g}"
        return f"in {self.spec}"


T = typing.TypeVar("T")
Positive = Annotated[T, Interval("(0, inf)")]
NonNegative = Annotated[T, Interval("[0, inf)")]
Seed = Annotated[int, Interval("[0, 4294967295]")]  # numpy's seeds: 0 ... 2**32 - 1


def field_domains(cls: type) -> dict[str, Interval | None]:
    """Each numeric field of dataclass `cls` (int, float, their optionals, dicts of floats) -> its
    Interval, or None when the field states none (tests require one for every numeric key)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    found = {}
    for f in dataclasses.fields(cls):
        hint, domain = hints[f.name], None
        for part in _union_parts(hint):
            if typing.get_origin(part) is Annotated:
                part, *extras = typing.get_args(part)
                domain = next((e for e in extras if isinstance(e, Interval)), domain)
            if part in (int, float) or (typing.get_origin(part) is dict and typing.get_args(part)[1] is float):
                found[f.name] = domain
    return found


def _union_parts(hint: Any) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def check_domains(config: Any, error: type[Exception]) -> None:
    """Raise `error` naming the first numeric field of dataclass instance `config` that is NaN,
    infinite or outside its stated domain (None passes: the field's type allowed it)."""
    for name, domain in field_domains(type(config)).items():
        value = getattr(config, name)
        values = value.items() if isinstance(value, dict) else [(None, value)]
        for key, v in values:
            label = name if key is None else f"{name}.{key}"
            if v is None or isinstance(v, bool):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise error(f"{label} must be a finite number, got {v!r}")
            if domain is not None and v not in domain:
                raise error(f"{label} must be {domain}, got {v!r}")
