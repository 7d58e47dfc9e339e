"""Typed dataclass configs: conversion to/from plain dicts and validated `key=value` overrides.

Overrides use dotted paths into nested dataclasses (`model.noise_gamma=3`, `train.batch_size=64`).
Values are parsed as JSON where possible (numbers, booleans, lists, null) and otherwise taken as strings,
then checked against the field's annotated type. Unknown keys and ill-typed values raise.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin


def to_dict(cfg: Any) -> dict[str, Any]:
    """A nested dataclass as plain JSON-ready data."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild dataclass `cls` from `to_dict` output; unknown keys raise."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(value, hints[key], f"{cls.__name__}.{key}")
    return cls(**kwargs)


@functools.cache
def _choice_fields(cls: type) -> tuple[tuple[str, tuple], ...]:
    hints = typing.get_type_hints(cls)
    fields = ((f.name, hints[f.name]) for f in dataclasses.fields(cls))
    return tuple((name, get_args(tp)) for name, tp in fields if get_origin(tp) is Literal)


def check_choices(cfg: Any) -> None:
    """Raise for a `Literal` field of dataclass `cfg` that holds a value outside its choices.

    Overrides and config files are checked as they are parsed; this covers configs built directly in Python, where
    a typo (`mask_mode="const"`) would otherwise fall through to some default branch.
    """
    for name, choices in _choice_fields(type(cfg)):
        value = getattr(cfg, name)
        if value not in choices:
            raise ValueError(f"{type(cfg).__name__}.{name}: {value!r} is not one of {list(choices)}")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against annotation `tp`, converting lists/dicts where the type asks for it."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value)
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, where)
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
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where}: expected a number, got {value!r}")
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


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """A copy of dataclass `cfg` with each `dotted.key=value` applied, type-checked, then validated once."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, text = (part.strip() for part in item.split("=", 1))
        cls, node, path = type(cfg), data, key.split(".")
        for depth, name in enumerate(path):
            names = {f.name for f in dataclasses.fields(cls)}
            if name not in names:
                raise KeyError(
                    f"unknown config key {key!r}: {cls.__name__} has no field {name!r} "
                    f"(fields: {', '.join(sorted(names))})"
                )
            hint = typing.get_type_hints(cls)[name]
            if depth == len(path) - 1:
                value = _coerce(parse_value(text), hint, key)
                node[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
            elif _is_dataclass_type(hint):
                cls, node = hint, node[name]
            else:
                raise KeyError(f"unknown config key {key!r}: {name!r} is not a nested config")
    return from_dict(type(cfg), data)
