"""Reconstruction quality along training: PSNR, SSIM and rFID of every kept checkpoint of tokenizer runs.

Usage: python benchmarks/tokenizer_curve.py RUN [RUN ...] [--images 10000] [--threads 2] [--out curve.json]

Each checkpoint's EMA weights (`checkpoints/step-*/ema.safetensors`, what the run would publish at that step) are
scored on the first `--images` test images of the run's own data, in the cached Fashion-MNIST reference
classifier's features (train it with `detok eval train-reference`). Prints one row per (run, images seen) and writes
the rows as JSON: the curve that shows whether a recipe has converged and how a gap between tokenizers evolves.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from detok.checkpoint import load_tokenizer, read_json, read_weights
from detok.commands._common import data_for
from detok.data import build_dataset
from detok.eval.features import build_extractor
from detok.eval.recon import evaluate_reconstruction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    extractor = build_extractor("reference", "cpu", "fashion-mnist")
    rows = []
    print(f"{'run':<32} {'step':>6} {'images':>8} {'PSNR':>7} {'SSIM':>6} {'rFID':>7} {'s':>5}")
    for run in map(Path, args.runs):
        label = "/".join(run.resolve().parts[-2:])  # a bench cell's runs are all called tokenizer, sit, mar
        tok = load_tokenizer(run)
        test = build_dataset(data_for(run, tok, []), "test")
        for ckpt in sorted((run / "checkpoints").glob("step-*")):
            start = time.perf_counter()
            tok.load_state_dict(read_weights(ckpt / "ema.safetensors"))
            meta = read_json(ckpt / "meta.json")
            with torch.no_grad():
                m = evaluate_reconstruction(tok.eval(), test, 500, args.images, "cpu", False, extractor=extractor)
            row = {"run": label, "step": meta["step"], "images_seen": meta["images_seen"], **m}
            rows.append(row)
            print(
                f"{label:<32} {row['step']:>6} {row['images_seen']:>8} {m['psnr']:>7.2f} {m['ssim']:>6.3f} "
                f"{m['rfid']:>7.2f} {time.perf_counter() - start:>5.0f}",
                flush=True,
            )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
