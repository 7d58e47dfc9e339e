"""`detok teacher train`: detok's own label-free MAE teacher, trained and then probed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from detok.commands._common import run_training
from detok.config import apply_overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    tea = sub.add_parser("teacher", help="train detok's own label-free teacher").add_subparsers(
        dest="action", required=True
    )
    p = tea.add_parser(
        "train", help="train a label-free MAE teacher, then probe it (re-run the same command to resume)"
    )
    p.add_argument("--preset", required=True, help="teacher preset (see `detok presets 'mae-teacher-*'`)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.images=20000"
    )
    p.add_argument(
        "--out",
        help="run directory (default: the cache folder $DETOK_CACHE/teachers/<preset>, reused once trained, which "
        "the teacher spec detok:<preset> names)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(fn=train)


def train(args: argparse.Namespace) -> int:
    from detok.teachers.mae import default_teacher_dir
    from detok.training.teacher import PROBE_FILE, default_run_config, train_teacher

    cfg = apply_overrides(default_run_config(args.preset), args.set or [])
    out = Path(args.out) if args.out else default_teacher_dir(args.preset)
    code = run_training(cfg, out, train_teacher, "teacher", args.dry_run)
    if not args.dry_run:
        probe = json.loads((out / PROBE_FILE).read_text())
        print(
            f"linear probe: {probe['test_accuracy']:.2%} test accuracy on {probe['feature_dim']}-d mean-pooled "
            f"features ({out / PROBE_FILE}); teacher spec: detok:{args.out or args.preset}"
        )
    return code
