"""`detok tokenizer train|eval|stats`: train tokenizers, measure their reconstructions, store their latent stats."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detok.commands._common import POSITIVE_INT, add_device_args, data_for, device_for, run_training
from detok.config import to_dict


def add_parser(sub: argparse._SubParsersAction) -> None:
    tok = sub.add_parser("tokenizer", help="train, evaluate and inspect tokenizers").add_subparsers(
        dest="action", required=True
    )
    p = tok.add_parser("train", help="train a tokenizer (re-run the same command to resume)")
    p.add_argument("--preset", required=True, help="tokenizer preset (see `detok presets 'detok-*'`)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.images=20000 or model.corruption.noise_gamma=0",
    )
    p.add_argument("--out", help="run directory (default runs/<preset>)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(fn=train)

    for name, fn, helptext in (
        ("eval", evaluate, "reconstruction PSNR/SSIM on a dataset split"),
        ("stats", stats, "compute and store per-channel latent mean/std"),
    ):
        p = tok.add_parser(name, help=helptext)
        p.add_argument("run", help="run directory or folder with config.json + model.safetensors")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data config value")
        p.add_argument("--batch-size", type=POSITIVE_INT, default=256)
        p.add_argument("--max-images", type=POSITIVE_INT, default=None)
        add_device_args(p)
        if name == "eval":
            p.add_argument("--split", default="test", choices=["train", "test"])
            p.add_argument("--out", help="metrics JSON path (default RUN/eval-<split>.json)")
            p.add_argument(
                "--evaluator",
                default=None,
                help="features for rFID: reference[:FOLDER], inception[:WEIGHTS] or none (default: the cached "
                "reference classifier for fashion-mnist, else none)",
            )
            p.add_argument(
                "--lpips",
                default="auto",
                choices=["auto", "on", "off"],
                help="LPIPS-VGG distance (auto: skipped with a note when the VGG16 weights are unavailable)",
            )
        p.set_defaults(fn=fn)


def train(args: argparse.Namespace) -> int:
    from detok.training.tokenizer import default_run_config, train_tokenizer

    cfg = default_run_config(args.preset, args.set or [])
    return run_training(cfg, Path(args.out or f"runs/{args.preset}"), train_tokenizer, "tokenizer", args.dry_run)


def evaluate(args: argparse.Namespace) -> int:
    import torch

    from detok.checkpoint import load_tokenizer, write_json
    from detok.data import build_dataset
    from detok.eval.features import fit_to_size
    from detok.eval.recon import evaluate_reconstruction

    device = device_for(args)
    tok = load_tokenizer(args.run, device)
    data = data_for(args.run, tok, args.set)
    dataset = build_dataset(data, args.split)
    notes = {}
    extractor, notes["rfid_note"] = _reconstruction_evaluator(args.evaluator, data.name, device)
    extractor = fit_to_size(extractor, data.image_size)  # e.g. a 64-px tokenizer and the 32-px classifier
    lpips, notes["lpips_note"] = _lpips_or_note(args.lpips, device)
    with torch.no_grad():
        metrics = evaluate_reconstruction(
            tok, dataset, args.batch_size, args.max_images, device, extractor=extractor, lpips=lpips
        )
    record = {"split": args.split, "dataset": to_dict(data), **metrics}
    record.setdefault("rfid", None)
    record.setdefault("lpips", None)
    record["evaluator"] = extractor.name if extractor is not None else None
    record.update({k: v for k, v in notes.items() if v})
    print(json.dumps(record, indent=2))
    for note in filter(None, notes.values()):
        print(f"note: {note}", file=sys.stderr)
    out = Path(args.out) if args.out else Path(args.run) / f"eval-{args.split}.json"
    write_json(out, record)
    print(f"written to {out}", file=sys.stderr)
    return 0


def _reconstruction_evaluator(spec: str | None, dataset: str, device):
    """(extractor, None) or (None, why rFID is skipped): the default is the dataset's cached reference classifier."""
    from detok.eval.features import build_extractor, default_reference_dir

    if spec == "none":
        return None, "rFID not computed (--evaluator none)"
    if spec is not None:
        return build_extractor(spec, device, dataset), None
    if dataset != "fashion-mnist":
        return None, f"rFID skipped: no default evaluator for {dataset!r}; pass --evaluator inception[:WEIGHTS]"
    folder = default_reference_dir(dataset)
    if not (folder / "config.json").is_file():
        return None, f"rFID skipped: the shipped reference classifier is missing from {folder} (a broken install?)"
    return build_extractor("reference", device, dataset), None


def _lpips_or_note(mode: str, device):
    """(LPIPS module, None) or (None, why it is skipped); mode "auto" skips when the VGG weights are unavailable."""
    from detok.losses.perceptual import PerceptualUnavailableError, build_perceptual

    if mode == "off":
        return None, "LPIPS not computed (--lpips off)"
    try:
        return build_perceptual().to(device), None
    except PerceptualUnavailableError as e:
        if mode == "on":
            raise
        reason = str(e).split(". To train without")[0]
        return None, f"LPIPS skipped: {reason}"


def stats(args: argparse.Namespace) -> int:
    from detok.checkpoint import load_tokenizer
    from detok.data import build_dataset
    from detok.latents import compute_latent_stats, store_latent_stats

    device = device_for(args)
    tok = load_tokenizer(args.run, device, check_stats=False)  # the statistics it has are about to be replaced
    dataset = build_dataset(data_for(args.run, tok, args.set), "train")
    mean, std = compute_latent_stats(tok, dataset, args.batch_size, args.max_images, device)
    store_latent_stats(args.run, mean, std)
    print(json.dumps({"latent_mean": mean, "latent_std": std}, indent=2))
    return 0
