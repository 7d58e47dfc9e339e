"""Images/s of `sample_images` (generator sampling + tokenizer decoding) under the table2 suite's sampling settings.

Usage: python benchmarks/sampling_settings.py [--threads 2] [--num 500] [--batches 100,250]

Untrained weights (speed does not depend on them), FMNIST-32 presets, CFG 1.5, 8×8×8 latents decoded by
`detok-fmnist32`. Prints one line per (generator, batch size); run it on an otherwise idle machine.
"""

import argparse
import dataclasses
import time

import torch

from detok import create_model
from detok.bench.reproduce import BUDGETS
from detok.generate import sample_images, with_sampling_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--num", type=int, default=500, help="images per measurement")
    parser.add_argument("--batches", default="100,250", help="sampling batch sizes, comma-separated")
    parser.add_argument("--budget", default="cpu", help="the suite budget whose sampling settings are timed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budget = BUDGETS[args.budget]
    tok = create_model("detok-fmnist32").eval()
    stats = dict(latent_mean=(0.0,) * 8, latent_std=(1.0,) * 8)
    tok = type(tok)(dataclasses.replace(tok.config, **stats)).eval()
    for preset, settings in ((budget.sit, budget.sit_sampling), (budget.mar, budget.mar_sampling)):
        torch.manual_seed(0)
        model = create_model(preset, latent_channels=8, input_size=(8, 8), num_classes=10).eval()
        model = with_sampling_settings(model, list(settings))
        for batch in (int(b) for b in args.batches.split(",")):
            start = time.perf_counter()
            sample_images(model, tok, args.num, cfg_scale=1.5, batch_size=batch, progress=False)
            rate = args.num / (time.perf_counter() - start)
            print(f"{preset} {list(settings)} batch {batch}: {rate:.1f} img/s", flush=True)


if __name__ == "__main__":
    main()
