"""`detok presets`: the registered model presets."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list registered model presets")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'detok-*'")
    p.set_defaults(fn=presets)


def presets(args: argparse.Namespace) -> int:
    from detok.registry import get_preset, list_models

    for name in list_models(args.pattern):
        p = get_preset(name)
        first = p.doc.splitlines()[0] if p.doc else ""
        print(f"{name:28s} {p.kind:10s} {first}")
    return 0
