"""Helpers shared by several command groups: the training wrapper, the evaluation data, devices and processes."""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from detok.config import (
    ConfigError,
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    apply_overrides,
    check_value,
    to_dict,
)


def run_training(cfg, out: Path, train, what: str, dry_run: bool) -> int:
    """Print the resolved config (`--dry-run`) or train, then leave the process group.

    A run that fails removes the run folder it created if it wrote nothing there but its resolved config. The run
    folder's lock (`detok.runfolder`) is given back either way.
    """
    if dry_run:
        print(json.dumps({"out": str(out), **to_dict(cfg)}, indent=2))
        return 0
    from detok import dist
    from detok.runfolder import release_run_folder

    created = not out.exists()
    try:
        train(cfg, out)
        dist.print0(f"trained {what} written to {out}")
    except BaseException:
        release_run_folder(out)
        if created and dist.is_main():
            _remove_if_unused(out)
        raise
    finally:
        release_run_folder(out)
        dist.cleanup()
    return 0


def _remove_if_unused(run_dir: Path) -> None:
    """Delete `run_dir` if it holds no file other than run_config.json (empty sub-folders aside)."""
    if not run_dir.is_dir():
        return
    files = [p for p in run_dir.rglob("*") if not p.is_dir()]
    if all(p == run_dir / "run_config.json" for p in files):
        shutil.rmtree(run_dir, ignore_errors=True)


def data_for(run: str | Path, tok, overrides: list[str] | None):
    """The evaluation dataset: the run's training data config (if known), unflipped, with CLI replacements."""
    from detok.config import from_dict
    from detok.data import DataConfig

    run_cfg = Path(run) / "run_config.json"
    if run_cfg.is_file():
        data = from_dict(DataConfig, json.loads(run_cfg.read_text())["run"]["data"])
        data = apply_overrides(data, ["hflip=false"])
    else:
        data = DataConfig(image_size=tok.config.image_size, channels=tok.config.channels)
    return apply_overrides(data, overrides or [])


def add_device_args(p: argparse.ArgumentParser) -> None:
    """--threads and --device, read by `device_for` and `start_processes`."""
    p.add_argument("--threads", type=number(NonNegativeInt), default=0, help="CPU threads (0: all cores)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def device_for(args: argparse.Namespace):
    """The device of a single-process command, after setting its CPU threads."""
    from detok.runtime import resolve_device, set_threads

    set_threads(args.threads, for_process=True)
    return resolve_device(args.device)


def start_processes(args: argparse.Namespace):
    """The device of this process, after joining the process group if launched by torchrun (left at exit)."""
    import atexit

    from detok import dist

    device = device_for(args)
    dist.init(device)
    if dist.is_distributed():
        atexit.register(dist.cleanup)
    return device


def number(tp: Any) -> Callable[[str], Any]:
    """An argparse `type` for a numeric option, checked as a config field annotated `tp` (`PositiveInt`,
    `NonNegativeFloat`, …) is: an integer or a number, finite, in the annotation's range. argparse reports a refusal
    as one line naming the option."""
    integer = int in (tp, *get_args(tp))  # PositiveInt is Annotated[int, ...]

    def parse(text: str) -> Any:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            what = "an integer" if integer else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        try:
            return check_value(value, tp, "")
        except (ConfigError, TypeError) as e:
            raise argparse.ArgumentTypeError(e.problem if isinstance(e, ConfigError) else str(e).lstrip(": ")) from None

    parse.__name__ = "integer" if integer else "number"
    return parse


def parse_interval(text: str) -> tuple[float, float]:
    """--cfg-interval 'lo,hi' as two noise levels, each in [0, 1], lo <= hi."""
    parts = text.split(",")
    try:
        lo, hi = (check_value(float(p), Fraction, "--cfg-interval") for p in parts) if len(parts) == 2 else (1, 0)
    except (ValueError, ConfigError):
        lo, hi = 1, 0
    if not lo <= hi:
        raise ValueError(
            f"--cfg-interval takes two noise levels 'lo,hi' with 0 <= lo <= hi <= 1 (0 = data, 1 = noise), got {text!r}"
        )
    return float(lo), float(hi)


# The ranges of the numeric options the commands share (as their config fields have them).
POSITIVE_INT, NON_NEGATIVE_INT = number(PositiveInt), number(NonNegativeInt)
POSITIVE_FLOAT, NON_NEGATIVE_FLOAT = number(PositiveFloat), number(NonNegativeFloat)
