"""Time of one DiffLoss `sample` call (the per-token denoising chain of MAR / RandomAR / RasterAR).

Usage: python benchmarks/diffloss_sampling.py [--threads 2] [--preset mar-fmnist32] [--rows 16,128] [--reps 5]

Builds the preset's head (untrained weights, perturbed away from adaLN-Zero so that every layer computes),
then times `sample` with guidance (rows = 2 × tokens: [cond; uncond]) at each row count; prints the best of
`--reps` calls. An A/B comparison of two code versions runs this script under each (PYTHONPATH) in turn.
"""

import argparse
import time

import torch

from detok import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="mar-fmnist32")
    parser.add_argument("--rows", default="16,128", help="condition rows per call ([cond; uncond]), comma-separated")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cfg", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    head = create_model(args.preset).diffloss.eval()
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.02 * torch.randn_like(p))
    cond_dim = head.net.cond_embed.in_features
    for rows in (int(r) for r in args.rows.split(",")):
        cond = torch.randn(rows, cond_dim)
        head.sample(cond, cfg_scale=args.cfg, generator=torch.Generator().manual_seed(0))  # warm-up
        best = float("inf")
        for _ in range(args.reps):
            start = time.perf_counter()
            head.sample(cond, cfg_scale=args.cfg, generator=torch.Generator().manual_seed(0))
            best = min(best, time.perf_counter() - start)
        steps = head.cfg.sample_steps
        print(
            f"{args.preset} head {head.cfg.width}x{head.cfg.depth}, {steps} steps, {rows} rows, CFG {args.cfg}: "
            f"{1000 * best:.1f} ms per sample call ({1000 * best / steps:.2f} ms per step)",
            flush=True,
        )


if __name__ == "__main__":
    main()
