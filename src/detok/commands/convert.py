"""`detok convert`: an upstream checkpoint file into a detok model folder, or a detok model folder back into the
upstream's layout (docs/checkpoints.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="released upstream checkpoints <-> detok model folders (docs/checkpoints.md)",
        description="A checkpoint file (.pth/.pt/.ckpt/.bin/.safetensors) becomes a detok model folder; a detok model "
        "folder becomes a checkpoint in its upstream's layout. Files are read weights-only: nothing in them runs.",
    )
    p.add_argument("source", help="an upstream checkpoint file, or a detok model folder to export")
    p.add_argument("--out", required=True, help="the model folder to write (import) or the checkpoint file (export)")
    p.add_argument(
        "--format", help="upstream format (default: recognised from the weights; for export, the one converted from)"
    )
    p.add_argument("--raw", action="store_true", help="convert the raw weights instead of the EMA ones")
    p.add_argument("--stats", help="upstream latent statistics to store in the folder (DeTok's stats.pkl)")
    p.add_argument("--stats-key", help="the entry of --stats to use (import), or to write under (export)")
    p.add_argument("--tokenizer", help="a generator's tokenizer folder, recorded so that sampling needs no --tokenizer")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="what the weights cannot tell, e.g. model.enc_heads=12 for a width that is not an upstream size",
    )
    p.set_defaults(fn=convert)


def convert(args: argparse.Namespace) -> int:
    from detok.checkpoint import CONFIG_FILE, read_model_config
    from detok.convert import convert_checkpoint, export_checkpoint

    source, out = Path(args.source), Path(args.out)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if out.exists():
        raise FileExistsError(f"--out {out} exists; detok convert writes only new files and folders")
    if source.is_dir():  # export
        if not (source / CONFIG_FILE).is_file():
            raise ValueError(f"{source} is a folder but not a detok model folder ({CONFIG_FILE} is missing)")
        given = (("--raw", args.raw), ("--stats", args.stats), ("--set", args.set), ("--tokenizer", args.tokenizer))
        unused = [f for f, v in given if v]
        if unused:
            raise ValueError(f"{', '.join(unused)}: only for converting a file")
        written = export_checkpoint(source, out, stats_key=args.stats_key, fmt=args.format)
        print(f"exported {source} → {', '.join(map(str, written))}")
        return 0
    if args.stats_key and not args.stats:
        raise ValueError("--stats-key names an entry of --stats; give the statistics file too")
    convert_checkpoint(
        source,
        out,
        fmt=args.format,
        ema=not args.raw,
        stats=args.stats,
        stats_key=args.stats_key,
        overrides=args.set,
        tokenizer=args.tokenizer,
    )
    _, cfg, raw = read_model_config(out)
    info = raw["converted_from"]
    arch = getattr(cfg, "architecture", None)
    stats = info.get("stats")
    print(
        f"converted {source.name} ({info['format']}, weights {info['weights']}) → {out}"
        + (f"; architecture {arch}" if arch else "")
        + (f"; tokenizer {raw['tokenizer']}" if raw.get("tokenizer") else "")
        + _stats_note(cfg, stats)
    )
    return 0


def _stats_note(cfg, stats: dict | None) -> str:
    if not hasattr(cfg, "latent_mean"):  # a generator: its latents are the tokenizer's
        return ""
    if stats is None:
        return "; no latent statistics"
    return f"; latent statistics from {stats['file']}[{stats['key']!r}]" if "file" in stats else f"; {stats['source']}"
