"""`detok generator train|sample`: generators trained on tokenizer latents, and images sampled from them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detok.commands._common import (
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    add_device_args,
    parse_interval,
    run_training,
    start_processes,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generator", help="train generators on tokenizer latents and sample from them")
    gen = gen.add_subparsers(dest="action", required=True)
    p = gen.add_parser("train", help="train a generator (re-run the same command to resume)")
    p.add_argument("--preset", required=True, help="generator preset (see `detok presets`)")
    p.add_argument("--tokenizer", required=True, help="tokenizer run directory or model folder (with latent stats)")
    p.add_argument("--latents", help="latent cache from `detok latents cache` (default: encode images on the fly)")
    p.add_argument("--captions", help="t2i-* presets: the caption set of the training images (`detok captions make`)")
    p.add_argument(
        "--text-encoder", help="t2i-* presets: hf:FOLDER (a local transformers model), detok:FOLDER or a preset name"
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.images=20000 or model.flow.sample_steps=100",
    )
    p.add_argument("--out", help="run directory (default runs/<preset>)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(fn=train)

    p = gen.add_parser("sample", help="sample class-balanced images into an .npz (uint8 images + labels) and a PNG")
    p.add_argument("run", help="generator run directory or model folder")
    p.add_argument(
        "--num", type=POSITIVE_INT, default=None, help="number of images (default 100; with --captions one per caption)"
    )
    p.add_argument(
        "--captions", help="text-conditioned generators: a text file, one caption per line (taken in turn for --num)"
    )
    p.add_argument("--text-encoder", help="with --captions: the text encoder (default: the one the generator used)")
    p.add_argument("--cfg", type=NON_NEGATIVE_FLOAT, default=1.0, help="classifier-free guidance scale (1 = unguided)")
    p.add_argument(
        "--cfg-interval",
        default=None,
        help="guide only at noise levels in [lo,hi] (0 = data, 1 = noise); default: the model's own (all levels, "
        "or the preset's interval for LightningDiT)",
    )
    p.add_argument("--temperature", type=POSITIVE_FLOAT, default=1.0)
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64)
    p.add_argument("--out", required=True, help="output .npz path (a PNG grid is written beside it)")
    p.add_argument("--tokenizer", help="tokenizer to decode with (default: the one the generator was trained on)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="sampling setting, e.g. model.flow.sampler=euler"
    )
    add_device_args(p)
    p.set_defaults(fn=sample)


def train(args: argparse.Namespace) -> int:
    from detok.training.generator import default_run_config, train_generator

    text = {"captions": args.captions, "text_encoder": args.text_encoder}
    cfg = default_run_config(args.preset, args.tokenizer, args.latents, args.set or [], **text)
    return run_training(cfg, Path(args.out or f"runs/{args.preset}"), train_generator, "generator", args.dry_run)


def sample(args: argparse.Namespace) -> int:
    import torch

    from detok import dist
    from detok.checkpoint import load_generator, load_tokenizer, read_model_config
    from detok.generate import is_text_conditioned, npz_path, sample_to_file, with_sampling_settings

    interval = None if args.cfg_interval is None else parse_interval(args.cfg_interval)  # before anything loads
    device = start_processes(args)
    model = load_generator(args.run, device)
    model = with_sampling_settings(model, args.set or [])  # e.g. model.flow.sample_steps=100
    recorded = read_model_config(args.run)[2]
    tokenizer_path = args.tokenizer or recorded.get("tokenizer")
    if not tokenizer_path:
        raise ValueError(f"{args.run} does not record its tokenizer; pass --tokenizer")
    text, notes = {}, {}
    if is_text_conditioned(model):
        text, notes = _caption_conditions(args, model, recorded, device)
    elif args.captions or args.text_encoder:
        raise ValueError(f"{args.run} is class-conditional: --captions and --text-encoder are for t2i-* generators")
    num = args.num or (len(text["captions"]) if text else 100)
    if text:
        which = torch.arange(num) % len(text["captions"])  # the captions in turn
        text = {"text": text["tokens"][which], "labels": which, "captions": text["captions"]}
    tok = load_tokenizer(tokenizer_path, device)
    path = npz_path(args.out)
    sample_to_file(  # resumable: a rerun keeps the finished parts; under torchrun the processes share the parts
        path,
        model,
        tok,
        num,
        batch_size=args.batch_size,
        seed=args.seed,
        cfg_scale=args.cfg,
        cfg_interval=interval,
        temperature=args.temperature,
        **text,
    )
    settings = {"cfg": args.cfg, "cfg_interval": args.cfg_interval, "temperature": args.temperature}
    dist.print0(json.dumps({"samples": str(path), "num": num, "seed": args.seed, **settings, **notes}))
    return 0


def _caption_conditions(args: argparse.Namespace, model, recorded: dict, device) -> tuple[dict, dict]:
    """The captions of --captions FILE and their tokens under the generator's text encoder (the one it was trained
    with, or --text-encoder), after checking the encoder fits the model; truncation is reported, not an error."""
    import warnings

    from detok.text.encoders import load_text_encoder, read_captions_file

    if not args.captions:
        raise ValueError(f"{args.run} is text-conditioned: give --captions FILE (one caption per line)")
    captions = read_captions_file(args.captions)
    spec = args.text_encoder or recorded.get("text_encoder")
    if not spec:
        raise ValueError(f"{args.run} does not record its text encoder; pass --text-encoder")
    encoder = load_text_encoder(spec, device)
    cfg = model.config
    if (encoder.max_length, encoder.dim) != (cfg.text_len, cfg.text_dim):
        raise ValueError(
            f"text encoder {spec} gives {encoder.max_length} tokens of width {encoder.dim}, the generator takes "
            f"{cfg.text_len} of width {cfg.text_dim}: use the encoder it was trained with"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoded = encoder.encode(captions)
    for w in caught:
        print(f"detok: warning: {w.message}", file=sys.stderr)
    notes = {"captions": len(captions), "truncated_captions": encoded.truncated, "truncation": encoder.truncation}
    return {"tokens": encoded.tokens, "captions": captions}, notes
