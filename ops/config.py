"""Allowed ranges of config fields, declared once on the ops config dataclasses and checked by every entry point.

A field states its range in its type, with the `annotated_types` constraints that pydantic also reads:

    lr: PositiveFloat = 1e-3            # > 0
    k: Annotated[int, Ge(2)] = 256      # >= 2

`Checked.__post_init__` refuses an out-of-range value when the dataclass is built (bench scripts, tests, any
direct use of `ops/`), and `assets.common.config_class` hands the same annotated types to the Dagster config
classes, so a run is refused in its first step with the op, the field, the value and the range
(`pipeline.preflight.config_problems`). A subclass that re-declares a field (a trainer's own default `lr`) keeps the
ranges its bases declared: `field_type` merges them over the MRO.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Annotated, Any, Union

from annotated_types import BaseMetadata, Ge, Gt, Interval, Le, Lt, MinLen

PositiveInt = Annotated[int, Ge(1)]
NonNegativeInt = Annotated[int, Ge(0)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
Fraction = Annotated[float, Interval(ge=0, le=1)]  # a share, both ends allowed
OpenFraction = Annotated[float, Interval(ge=0, lt=1)]  # a share that must leave something (dropout, a split)
Seed = Annotated[int, Ge(0)]  # numpy and torch seeds are non-negative
CodesPerPosition = Annotated[int, Ge(2)]  # K: one code per position would tell no item from another
NonEmpty = MinLen(1)

_BOUNDS = (("gt", ">", lambda v, b: v > b), ("ge", ">=", lambda v, b: v >= b),
           ("lt", "<", lambda v, b: v < b), ("le", "<=", lambda v, b: v <= b))


class ConfigError(ValueError):
    """A config value outside its declared range, or settings that contradict each other."""


def _constraints(tp: Any) -> tuple[list[BaseMetadata | Interval], Any]:
    """(constraints on the value, element type of a list or None) of one annotation, through Optional."""
    if typing.get_origin(tp) is Annotated:
        base, *meta = typing.get_args(tp)
        inner, element = _constraints(base)
        return [*inner, *(m for m in meta if isinstance(m, (BaseMetadata, Interval)))], element
    if typing.get_origin(tp) in (Union, types.UnionType):
        found: list[BaseMetadata | Interval] = []
        element = None
        for arg in typing.get_args(tp):
            if arg is not type(None):
                more, element = _constraints(arg)
                found += more
        return found, element
    if typing.get_origin(tp) is list:
        (element,) = typing.get_args(tp) or (None,)
        return [], element
    return [], None


def _strip(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


@functools.cache
def field_type(cls: type, name: str) -> Any:
    """The annotation of field `name` of dataclass `cls`, with the value constraints of every class in its MRO
    that declares it (the most derived class decides the type)."""
    declared = [typing.get_type_hints(c, include_extras=True)[name] for c in cls.__mro__
                if name in getattr(c, "__annotations__", {})]
    constraints: list[Any] = []
    for tp in declared:
        for m in _top_constraints(tp):
            if m not in constraints:
                constraints.append(m)
    base = _strip(declared[0])
    return Annotated[(base, *constraints)] if constraints else declared[0]


def _top_constraints(tp: Any) -> list[Any]:
    return list(typing.get_args(tp)[1:]) if typing.get_origin(tp) is Annotated else []


def declared_range(cls: type, name: str) -> tuple[list[Any], list[Any]]:
    """The range constraints of a field's value and, for a list, of each of its values."""
    constraints, element = _constraints(field_type(cls, name))
    inner = _constraints(element)[0] if element is not None else []
    kinds = (Gt, Ge, Lt, Le, Interval, MinLen)
    return [c for c in constraints if isinstance(c, kinds)], [c for c in inner if isinstance(c, kinds)]


def describe(constraint: Any) -> str:
    if isinstance(constraint, MinLen):
        return f"at least {constraint.min_length} long"
    parts = [f"{sign} {getattr(constraint, attr)}" for attr, sign, _ in _BOUNDS
             if getattr(constraint, attr, None) is not None]
    return " and ".join(parts)


def _satisfies(value: Any, constraint: Any) -> bool:
    if isinstance(constraint, MinLen):
        return len(value) >= constraint.min_length
    if isinstance(value, float) and math.isnan(value):
        return False
    return all(test(value, getattr(constraint, attr)) for attr, _, test in _BOUNDS
               if getattr(constraint, attr, None) is not None)


def range_problems(config: Any) -> list[str]:
    """One message per field of a dataclass instance outside its declared range:
    `RQVAEConfig.lr = -1.0: must be > 0`."""
    problems = []
    cls = type(config)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:
            continue
        ranges, inner = declared_range(cls, f.name)
        bad = [describe(c) for c in ranges if not _satisfies(value, c)]
        if isinstance(value, (list, tuple)):
            bad += [f"{describe(c)} (each value)" for c in inner if not all(_satisfies(v, c) for v in value)]
        if bad:
            problems.append(f"{cls.__name__}.{f.name} = {value!r}: must be {' and '.join(bad)}")
    return problems


def check_ranges(config: Any) -> None:
    if problems := range_problems(config):
        raise ConfigError("; ".join(problems))


class Checked:
    """Mixin of the ops config dataclasses: building one with a value outside a declared range raises
    ConfigError naming the class, the field, the value and the range. Cross-field rules go in `check`."""

    def __post_init__(self) -> None:
        check_ranges(self)
        try:
            self.check()
        except ConfigError as error:
            raise ConfigError(f"{type(self).__name__}: {error}") from None

    def check(self) -> None:
        """Rules between fields (raise ConfigError naming them); ranges are checked before."""
