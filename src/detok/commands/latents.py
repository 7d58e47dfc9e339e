"""`detok latents cache`: a dataset encoded once, in shards, for generator training."""

from __future__ import annotations

import argparse

from detok.commands._common import POSITIVE_INT, add_device_args, data_for, start_processes


def add_parser(sub: argparse._SubParsersAction) -> None:
    lat = sub.add_parser("latents", help="encode a dataset once for generator training").add_subparsers(
        dest="action", required=True
    )
    p = lat.add_parser("cache", help="encode a dataset split (and its horizontal flips) into shards; resumable")
    p.add_argument("--tokenizer", required=True, help="tokenizer run directory or model folder")
    p.add_argument("--out", required=True, help="cache directory")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data config value")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=256)
    p.add_argument("--shard-size", type=POSITIVE_INT, default=10_000)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="storage type of the latents")
    p.add_argument("--max-images", type=POSITIVE_INT, default=None, help="cache only the first N images of the split")
    add_device_args(p)
    p.set_defaults(fn=cache)


def cache(args: argparse.Namespace) -> int:
    from detok import dist
    from detok.checkpoint import load_tokenizer
    from detok.data import build_dataset
    from detok.latents import cache_latents

    device = start_processes(args)
    tok = load_tokenizer(args.tokenizer, device)
    data = data_for(args.tokenizer, tok, args.set)
    dataset = build_dataset(data, args.split)
    out = cache_latents(
        tok,
        dataset,
        args.out,
        str(args.tokenizer),
        args.batch_size,
        args.shard_size,
        max_images=args.max_images,
        dtype=args.dtype,
        workers=data.workers,
        prefetch=data.prefetch,
    )
    count = len(dataset) if args.max_images is None else min(len(dataset), args.max_images)
    dist.print0(f"cached {count} latents (and their flips) in {out}")
    return 0
