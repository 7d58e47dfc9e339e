"""Time and score MAR sampling settings on one trained bench cell: what fewer MAR / DiffLoss steps cost in gFID.

Usage: python benchmarks/mar_sampling_quality.py runs/bench-table2-r2/baseline-seed2 [--num 1000] [--cfg 3]
       [--settings 4/10,4/8,3/10,3/8]   (each: num_iter/diffloss.sample_steps)

Loads the cell's trained MAR (`<cell>/mar`) and tokenizer (`<cell>/tokenizer`), samples `--num` class-balanced
images per setting with the same seed and batch size, and scores them against the Fashion-MNIST reference
classifier's training-set statistics (the bench's evaluator). Prints seconds, ms/image and FID/IS/precision/recall
per setting. At 1,000 samples FIDs are comparable between settings of one run, not with the bench's 10k FIDs.
"""

import argparse
import time

import torch

from detok.checkpoint import load_generator, load_tokenizer
from detok.data import DataConfig, build_dataset
from detok.eval.features import build_extractor, dataset_key, reference_set
from detok.eval.generation import score_images
from detok.generate import sample_images, with_sampling_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cell", help="a bench cell folder holding mar/ and tokenizer/")
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--cfg", type=float, default=3.0)
    parser.add_argument("--settings", default="4/10,3/8", help="num_iter/diffloss.sample_steps, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=250)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    tokenizer = load_tokenizer(f"{args.cell}/tokenizer", device)
    data = DataConfig(name="fashion-mnist")
    extractor = build_extractor("reference", device, data.name)
    ref = reference_set(extractor, build_dataset(data, "train"), dataset_key(data, "train"))
    for setting in args.settings.split(","):
        num_iter, steps = setting.split("/")
        overrides = [f"num_iter={num_iter}", f"diffloss.sample_steps={steps}"]
        model = with_sampling_settings(load_generator(f"{args.cell}/mar", device), overrides)
        start = time.perf_counter()
        images, _ = sample_images(
            model, tokenizer, args.num, cfg_scale=args.cfg, batch_size=args.batch, seed=7, progress=False
        )
        seconds = time.perf_counter() - start
        s = score_images(images, extractor, ref, seed=7, progress=False)
        print(
            f"num_iter={num_iter} diffloss.sample_steps={steps}: {seconds:.1f} s for {args.num} "
            f"({1000 * seconds / args.num:.1f} ms/img), FID {s['fid']:.2f} IS {s['is']:.2f} "
            f"P {s['precision']:.3f} R {s['recall']:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
