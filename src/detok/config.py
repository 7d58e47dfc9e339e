"""Typed dataclass configs: conversion to/from plain dicts and validated `key=value` overrides.

Overrides use dotted paths into nested dataclasses (`model.noise_gamma=3`, `train.batch_size=64`).
Values are parsed as JSON where possible (numbers, booleans, lists, null) and otherwise taken as strings,
then checked against the field's annotated type. Unknown keys and ill-typed values raise.

A numeric field declares its admissible range in its annotation (`latent_channels: PositiveInt`,
`mask_max: Fraction`); `check_fields`, called by every config's `__post_init__`, enforces the ranges, the
`Literal` choices and finiteness (NaN and ±inf are refused in every float field), and names the field in a
`ConfigError`. Configs rebuilt from dicts or overrides get the field's dotted path (`model.latent_channels`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin


class ConfigError(ValueError):
    """A config field holds a value it cannot take; `path` is the field's (dotted) name."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path} {problem}")

    def within(self, prefix: str) -> ConfigError:
        """The same error, named from an enclosing config (`prefix` ends with a dot)."""
        return ConfigError(f"{prefix}{self.path}", self.problem)


@dataclass(frozen=True)
class Range:
    """The interval a numeric field may take, declared in its annotation: `Annotated[int, Range(ge=1)]`."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def admits(self, v: float) -> bool:
        return (
            (self.ge is None or v >= self.ge)
            and (self.gt is None or v > self.gt)
            and (self.le is None or v <= self.le)
            and (self.lt is None or v < self.lt)
        )

    def __str__(self) -> str:
        lo = f"[{self.ge:g}" if self.ge is not None else (f"({self.gt:g}" if self.gt is not None else None)
        hi = f"{self.le:g}]" if self.le is not None else (f"{self.lt:g})" if self.lt is not None else None)
        if lo and hi:
            return f"in {lo}, {hi}"
        if lo:
            return f"{'≥' if self.ge is not None else '>'} {lo[1:]}"
        return f"{'≤' if self.le is not None else '<'} {hi[:-1]}"


PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(ge=0, le=1)]  # a ratio, probability or share of training
FractionBelowOne = Annotated[float, Range(ge=0, lt=1)]  # a decay, momentum or dropout rate


def to_dict(cfg: Any) -> dict[str, Any]:
    """A nested dataclass as plain JSON-ready data."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Rebuild dataclass `cls` from `to_dict` output; unknown keys raise.

    Args:
        path: the dotted name of this config inside an enclosing one ("model."), used in error messages.
    """
    if not isinstance(data, dict):
        raise ConfigError(path.rstrip(".") or cls.__name__, f"must be a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    # Fields added after configs were saved: their absence means the value the saved model was built with.
    data = {**getattr(cls, "absent_fields_mean", {}), **data}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {path or cls.__name__ + '.'}field(s): {', '.join(sorted(unknown))}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(value, hints[key], f"{path}{key}")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise e.within(path) from None


def _range_of(tp: Any) -> Range | None:
    """The `Range` declared in annotation `tp` (directly or inside an Optional), if any."""
    if get_origin(tp) is Annotated:
        return next((m for m in tp.__metadata__ if isinstance(m, Range)), None)
    if get_origin(tp) in (Union, types.UnionType):
        return next(filter(None, map(_range_of, get_args(tp))), None)
    return None


@functools.cache
def _field_rules(cls: type) -> tuple[tuple[str, tuple, Range | None], ...]:
    hints = typing.get_type_hints(cls, include_extras=True)
    rules = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        bare = get_args(tp)[0] if get_origin(tp) is Annotated else tp
        choices = get_args(bare) if get_origin(bare) is Literal else ()
        rules.append((f.name, choices, _range_of(tp)))
    return tuple(rules)


def check_fields(cfg: Any) -> None:
    """Raise `ConfigError` for a field of dataclass `cfg` outside its choices or range, or holding NaN/±inf.

    Overrides and config files are checked as they are parsed; this covers configs built directly in Python, where
    a typo (`mask_mode="const"`) would otherwise fall through to some default branch, and is where ranges are
    enforced for every way of building a config.
    """
    for name, choices, rng in _field_rules(type(cfg)):
        value = getattr(cfg, name)
        if choices and value not in choices:
            raise ConfigError(name, f"must be one of {list(choices)}, got {value!r}")
        numbers = value if isinstance(value, (tuple, list)) else (value,)
        for v in numbers:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(v):
                raise ConfigError(name, f"must be a finite number, got {v}")
            if rng is not None and not rng.admits(v):
                raise ConfigError(name, f"must be {rng}, got {v!r}")


def check_value(value: Any, tp: Any, where: str) -> Any:
    """`value` checked as a field annotated `tp` is checked (type, finiteness, range), for a setting that is not a
    config field (a command-line option); raises `ConfigError` or `TypeError` naming `where`."""
    value = _coerce(value, tp, where)
    rng = _range_of(tp)
    if rng is not None and value is not None and not rng.admits(value):
        raise ConfigError(where, f"must be {rng}, got {value!r}")
    return value


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against annotation `tp`, converting lists/dicts where the type asks for it."""
    if get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    origin = get_origin(tp)
    if tp is Any:
        return value
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, f"{where}.")
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                raise
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise TypeError(f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ValueError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, where) for v, a in zip(value, args))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is type(None):
        if value is not None:
            raise TypeError(f"{where}: expected null, got {value!r}")
        return None
    if tp is float:
        if isinstance(value, str) and value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
            value = float(value)  # JSON spells them NaN and Infinity; "nan" and "inf" are refused just the same
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(where, f"must be a finite number, got {value}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported annotation {tp}")


def parse_value(text: str) -> Any:
    """Parse an override's right-hand side: JSON if it parses (numbers, true/false, null, lists), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(cfg: Any, overrides: list[str], prefix: str = "") -> Any:
    """A copy of dataclass `cfg` with each `dotted.key=value` applied, type-checked, then validated once.

    A field annotated `Any` that holds a dataclass (a run config's `model`, whose type depends on the preset) is
    walked with that dataclass's own type.

    Args:
        prefix: where `cfg` sits in the user's namespace, so that messages name the key as the user typed it.
    """
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, text = (part.strip() for part in item.split("=", 1))
        obj, node, path = cfg, data, key.split(".")
        for depth, name in enumerate(path):
            cls = type(obj)
            names = {f.name for f in dataclasses.fields(cls)}
            if name not in names:
                raise KeyError(
                    f"unknown config key {prefix + key!r}: {cls.__name__} has no field {name!r} "
                    f"(fields: {', '.join(sorted(names))})"
                )
            hint = typing.get_type_hints(cls)[name]
            value = getattr(obj, name)
            if hint is Any and dataclasses.is_dataclass(value):
                hint = type(value)
            if depth == len(path) - 1:
                value = _coerce(parse_value(text), hint, prefix + key)
                node[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
            elif _is_dataclass_type(hint) or (dataclasses.is_dataclass(value) and isinstance(node[name], dict)):
                obj, node = value, node[name]  # a nested config, or an optional one that is set
            else:
                raise KeyError(f"unknown config key {prefix + key!r}: {name!r} is not a nested config")
    return from_dict(type(cfg), _retype(cfg, data, prefix), prefix)


def _retype(cfg: Any, data: dict, prefix: str) -> dict:
    """`data` (from `to_dict(cfg)`, edited) with the dicts of `Any`-typed dataclass fields rebuilt as those types."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not dataclasses.is_dataclass(value) or not isinstance(data.get(f.name), dict):
            continue
        inner = _retype(value, data[f.name], f"{prefix}{f.name}.")
        data[f.name] = from_dict(type(value), inner, f"{prefix}{f.name}.") if hints[f.name] is Any else inner
    return data
