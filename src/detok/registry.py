"""Model registry: presets are small factory functions registered under the paper's names.

Presets register themselves when their model module is imported; importing `detok` imports every model package
(`detok.tokenizers`, `detok.generators`, the evaluators, the teachers), as timm's package does, so this module imports
none of them. Each preset factory returns a config dataclass; `create_model` builds the model from it.
`register_with_tiny` registers a preset together with its `-tiny` test twin.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.nn as nn


@dataclass(frozen=True)
class Preset:
    """A registered preset: its name, kind ("tokenizer", "generator", "evaluator", "teacher" or "text-encoder"),
    config factory and model class."""

    name: str
    kind: str
    make_config: Callable[[], Any]
    model_cls: type[nn.Module]
    doc: str


_PRESETS: dict[str, Preset] = {}


def register_preset(name: str, kind: str, model_cls: type[nn.Module]) -> Callable:
    """Decorator registering a zero-argument config factory under `name`."""

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip()
        _PRESETS[name] = Preset(name, kind, fn, model_cls, doc)
        return fn

    return wrap


def register_with_tiny(
    name: str, make: Callable[[], Any], doc: str, *, kind: str, model_cls: type[nn.Module], tiny: Callable[[Any], Any]
) -> None:
    """Register preset `name` (config factory `make`) and its test twin `name-tiny` (`tiny(make())`)."""
    make.__doc__ = doc
    register_preset(name, kind, model_cls)(make)

    def make_tiny() -> Any:
        return tiny(make())

    make_tiny.__doc__ = f"Tiny test twin of {name}."
    register_preset(f"{name}-tiny", kind, model_cls)(make_tiny)


def get_preset(name: str) -> Preset:
    """The preset called `name`; unknown names raise with the list of known ones."""
    if name not in _PRESETS:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(sorted(_PRESETS))}")
    return _PRESETS[name]


def list_models(pattern: str = "*", kind: str | None = None) -> list[str]:
    """Names of registered presets matching a shell-style `pattern` (and `kind`, if given), sorted."""
    return sorted(n for n, p in _PRESETS.items() if fnmatch.fnmatch(n, pattern) and kind in (None, p.kind))


def preset_config(name: str, **overrides: Any) -> Any:
    """The preset's config with fields replaced by `overrides` (unknown fields raise)."""
    cfg = get_preset(name).make_config()
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the model registered as `name`, with config fields replaced by `overrides`."""
    preset = get_preset(name)
    return preset.model_cls(preset_config(name, **overrides))


def model_class(arch: str) -> type[nn.Module]:
    """The model class called `arch` (as saved in a model folder's config.json)."""
    classes = {p.model_cls.__name__: p.model_cls for p in _PRESETS.values()}
    if arch not in classes:
        raise KeyError(f"unknown model architecture {arch!r}; known: {', '.join(sorted(classes))}")
    return classes[arch]
