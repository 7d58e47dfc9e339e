"""Generation quality along training: gFID, precision/recall and class consistency of every kept checkpoint.

Usage: python benchmarks/generator_curve.py RUN [RUN ...] [--num 2000] [--cfg 1.5,3] [--sampling flow.sample_steps=8]
       [--steps 1250,7500] [--temperature 0.6,1.0] [--threads 2] [--out curve.json]

Each checkpoint's EMA weights (`checkpoints/step-*/ema.safetensors`) sample `--num` class-balanced images per
guidance scale and AR temperature (seed 0, the same for every checkpoint), decoded by the run's tokenizer and scored
against the Fashion-MNIST training images in the shipped reference classifier's features. Prints one row per (run,
images seen, CFG, temperature) and writes the rows as JSON: where gFID flattens with training length.
"""

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from detok.checkpoint import load_generator, load_tokenizer, read_json, read_model_config, read_weights
from detok.data import DataConfig, build_dataset
from detok.eval.features import build_extractor, dataset_key, reference_set
from detok.eval.generation import score_images
from detok.generate import sample_images, with_sampling_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--num", type=int, default=2000)
    parser.add_argument("--cfg", default="1.5,3")
    parser.add_argument("--sampling", action="append", default=[], help="e.g. flow.sample_steps=8")
    parser.add_argument("--temperature", default="1.0", help="AR generators' sampling temperatures, comma-separated")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the rows to this JSON file")
    parser.add_argument("--steps", help="only these checkpoint steps, comma-separated (default: all kept)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scales = [float(c) for c in args.cfg.split(",")]
    temperatures = [float(t) for t in args.temperature.split(",")]
    extractor = build_extractor("reference", "cpu", "fashion-mnist")
    data = DataConfig(name="fashion-mnist")
    ref = reference_set(extractor, build_dataset(data, "train"), dataset_key(data, "train"), progress=False)
    rows = []
    header = f"{'run':<32} {'step':>6} {'images':>8} {'cfg':>4} {'T':>4} {'gFID':>7} {'prec':>6} {'rec':>6}"
    print(f"{header} {'class':>6} {'s':>5}")
    for run in map(Path, args.runs):
        label = "/".join(run.resolve().parts[-2:])  # a bench cell's runs are all called tokenizer, sit, mar
        model = with_sampling_settings(load_generator(run), args.sampling)
        tokenizer = load_tokenizer(read_model_config(run)[2]["tokenizer"])
        wanted = None if args.steps is None else {int(x) for x in args.steps.split(",")}
        for ckpt in sorted((run / "checkpoints").glob("step-*")):
            if wanted is not None and int(ckpt.name.removeprefix("step-")) not in wanted:
                continue
            model.load_state_dict(read_weights(ckpt / "ema.safetensors"))
            meta = read_json(ckpt / "meta.json")
            for scale, temperature in itertools.product(scales, temperatures):
                start = time.perf_counter()
                images, labels = sample_images(
                    model,
                    tokenizer,
                    args.num,
                    cfg_scale=scale,
                    batch_size=args.batch_size,
                    temperature=temperature,
                    progress=False,
                )
                s = score_images(images, extractor, ref, progress=False, labels=labels)
                row = {"run": label, "step": meta["step"], "images_seen": meta["images_seen"], "cfg": scale, **s}
                row |= {
                    "sampling": args.sampling,
                    "temperature": temperature,
                    "seconds": time.perf_counter() - start,
                }
                rows.append(row)
                print(
                    f"{label:<32} {row['step']:>6} {row['images_seen']:>8} {scale:>4g} {temperature:>4g} "
                    f"{s['fid']:>7.2f} {s['precision']:>6.3f} {s['recall']:>6.3f} {s['class_consistency']:>6.3f} "
                    f"{time.perf_counter() - start:>5.0f}",
                    flush=True,
                )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
