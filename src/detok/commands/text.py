"""`detok captions make` and `detok text-encoder train`: the text side of text-to-image generation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from detok.commands._common import NON_NEGATIVE_INT, POSITIVE_INT, run_training
from detok.config import apply_overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    cap = sub.add_parser("captions", help="caption sets for text-to-image generators").add_subparsers(
        dest="action", required=True
    )
    p = cap.add_parser(
        "make", help="caption every image from its class and measured attributes (brightness, width, pattern)"
    )
    p.add_argument("--out", help="caption-set folder (default: the cache's captions/fashion-mnist-32)")
    p.add_argument("--per-image", type=POSITIVE_INT, default=4, help="captions per image, each phrased anew")
    p.add_argument(
        "--held-out-per-class",
        type=NON_NEGATIVE_INT,
        default=2,
        help="attribute combinations per class never trained on",
    )
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data config value")
    p.set_defaults(fn=captions_make)

    txt = sub.add_parser("text-encoder", help="detok's own offline text encoder").add_subparsers(
        dest="action", required=True
    )
    p = txt.add_parser(
        "train", help="train the word-level text encoder CLIP-style against the images' pixels, then probe it"
    )
    p.add_argument("--preset", default="text-encoder-fmnist32", help="text-encoder preset")
    p.add_argument("--captions", help="caption set (default: the Fashion-MNIST-32 one, made on first use)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.images=60000")
    p.add_argument(
        "--out", help="run directory (default: the cache's text-encoders/<preset>, which the spec <preset> names)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(fn=text_encoder_train)


def captions_make(args: argparse.Namespace) -> int:
    from detok.data import DataConfig
    from detok.text.captions import default_captions_dir, describe, make_attribute_captions

    data = apply_overrides(DataConfig(name="fashion-mnist"), args.set or [])
    out = Path(args.out) if args.out else default_captions_dir()
    captions = make_attribute_captions(data, args.per_image, args.held_out_per_class, args.seed)
    captions.save(out)
    summary = describe(captions)
    held = summary.pop("held_out_combinations", [])
    print(json.dumps({"out": str(out), **summary, "held_out_combinations": len(held)}, indent=2))
    return 0


def text_encoder_train(args: argparse.Namespace) -> int:
    from detok.text.captions import default_captions
    from detok.text.encoders import default_text_encoder_dir
    from detok.training.text_encoder import PROBE_FILE, default_run_config, train_text_encoder

    captions = args.captions or default_captions()
    cfg = apply_overrides(default_run_config(args.preset, captions), args.set or [])
    out = Path(args.out) if args.out else default_text_encoder_dir(args.preset)
    code = run_training(cfg, out, train_text_encoder, "text encoder", args.dry_run)
    if not args.dry_run:
        probe = json.loads((out / PROBE_FILE).read_text())
        if "retrieval_same_combination" in probe:
            print(
                f"retrieval probe: {probe['retrieval_same_combination']:.1%} of {probe['images']} test captions find "
                f"an image of their combination (chance {probe['chance']:.1%}); text encoder spec: "
                f"{args.out or args.preset}"
            )
    return code
