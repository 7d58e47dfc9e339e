"""Tokenizer training and encode/decode throughput, and achieved GFLOP/s against the measured matmul peak.

Runs the real training loop (`train_tokenizer`) on an in-memory random dataset, reads img/s from its log
(the first log interval, which holds start-up costs, is dropped), counts FLOPs of a training step with
torch's FlopCounterMode averaged over masking ratios drawn from the run's distribution, and compares with
the fp32 matmul peak measured here. Prints one line per configuration.

    python benchmarks/tokenizer_throughput.py [--threads 2] [--steps 60] [--only reference] [--procs 1 2] [--compile]

`--procs 1 2` also times the same run launched as P processes (torchrun, gloo DDP) sharing the `--threads`
cores, P × (threads / P), through the CLI for every P so that the launches are compared in one harness:
on small models the intra-op threading of element-wise kernels, not the GEMMs, limits a 2-thread process.
`--compile` trains with `train.compile=true` (compiled blocks); the first log interval, dropped, holds the
compilation, so give it enough `--steps` for the later intervals to be compiled steady state.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from detok.config import apply_overrides
from detok.runtime import autocast, synchronize
from detok.runtime import matmul_peak as runtime_matmul_peak
from detok.tokenizers.corruption import sample_mask_ratio
from detok.tokenizers.detok import DeTok
from detok.training.tokenizer import default_run_config, train_tokenizer

# The fixed reference: width 256, 4+4 blocks, 4 heads, 32×32×3, p=4, C=16, batch 64, γ=3, M=0.7.
REFERENCE = [
    "model.channels=3",
    "data.channels=3",
    "model.enc_width=256",
    "model.dec_width=256",
    "model.enc_depth=4",
    "model.dec_depth=4",
    "model.enc_heads=4",
    "model.dec_heads=4",
    "model.patch_size=4",
    "model.latent_channels=16",
    "model.corruption.noise_gamma=3.0",
    "model.corruption.mask_max=0.7",
    "train.batch_size=64",
    "loss.perceptual_weight=0",
    "loss.gan_weight=0",
    "train.precision=fp32",
]


def matmul_peak(threads: int, n: int = 2048, reps: int = 20, device: str = "cpu", dtype=torch.float32) -> float:
    """Best-of-3 GEMM rate in GFLOP/s with `threads` threads (on CUDA: n = 8192; `runtime.matmul_peak`)."""
    torch.set_num_threads(threads)
    return runtime_matmul_peak(device, dtype, 8192 if device == "cuda" else n, reps) / 1e9


def step_flops(model: DeTok, batch: int, draws: int = 16) -> float:
    """Mean FLOPs of forward + backward for one batch, over masking ratios drawn as in training."""
    cfg = model.config
    device = next(model.parameters()).device
    x = torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size, device=device) * 2 - 1
    g = torch.Generator().manual_seed(0)
    total = 0
    for _ in range(draws):
        ratio = sample_mask_ratio(cfg.corruption, g)
        with FlopCounterMode(display=False) as fc:
            out = model(x, mask_ratio=ratio)
            (out["recon"] - x).pow(2).mean().backward()
        total += fc.get_total_flops()
    model.zero_grad(set_to_none=True)
    return total / draws


def train_throughput(cfg, steps: int, threads: int) -> float:
    """img/s of the training loop, excluding its first log interval."""
    n = cfg.train.batch_size * 8
    size, ch = cfg.model.image_size, cfg.model.channels
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "random.npz"
        np.savez(data, images=np.random.default_rng(0).integers(0, 256, (n, size, size, ch), dtype=np.uint8))
        cfg = apply_overrides(
            cfg,
            [
                "data.name=npz",
                f"data.root={data}",
                f"train.threads={threads}",
                f"train.images={steps * cfg.train.batch_size}",
                "train.log_every=10",
                "train.progress=false",
                f"train.ckpt_every={10**9}",
                f"train.sample_every={10**9}",
            ],
        )
        train_tokenizer(cfg, Path(tmp) / "run")
        logs = [json.loads(line) for line in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()]
    rates = [r["img_per_s"] for r in logs[1:]]
    return float(np.median(rates))


def launch_throughput(cfg, overrides: list[str], steps: int, threads: int, procs: int) -> float:
    """img/s of `detok tokenizer train` on random data, launched as `procs` processes of threads/procs each.

    Median over log intervals of 5 steps after the first; procs = 1 runs the CLI without torchrun.
    """
    if threads % procs:
        raise ValueError(f"--threads {threads} is not divisible by {procs} processes")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "random.npz"
        size, ch, batch = cfg.model.image_size, cfg.model.channels, cfg.train.batch_size
        np.savez(data, images=np.random.default_rng(0).integers(0, 256, (batch * 8, size, size, ch), dtype=np.uint8))
        sets = overrides + [
            "data.name=npz",
            f"data.root={data}",
            f"train.threads={threads // procs}",
            f"train.images={steps * batch}",
            "train.log_every=5",
            "train.progress=false",
            f"train.ckpt_every={10**9}",
            f"train.sample_every={10**9}",
        ]
        cli = ["-m", "detok.cli", "tokenizer", "train", "--preset", "detok-fmnist32", "--out", f"{tmp}/run"]
        for item in sets:
            cli += ["--set", item]
        launcher = (
            [sys.executable]
            if procs == 1
            else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        )
        env = dict(os.environ, OMP_NUM_THREADS=str(threads // procs))
        subprocess.run(launcher + cli, check=True, env=env, stdout=subprocess.DEVNULL)
        logs = [json.loads(line) for line in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()]
    return float(np.median([r["img_per_s"] for r in logs[1:]]))


@torch.no_grad()
def codec_throughput(model: DeTok, batch: int = 256, reps: int = 5, precision: str = "fp32") -> tuple[float, float]:
    """(encode img/s, decode img/s) in eval mode."""
    cfg = model.config
    device = next(model.parameters()).device
    model.eval()
    x = torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size, device=device) * 2 - 1
    with autocast(device, precision):
        z = model.encode(x)
        model.decode(z)
        synchronize(device)
        t = time.perf_counter()
        for _ in range(reps):
            model.encode(x)
        synchronize(device)
        enc = reps * batch / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(reps):
            model.decode(z)
        synchronize(device)
    return enc, reps * batch / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--only", choices=["reference", "fmnist32", "bb"], default=None)
    parser.add_argument(
        "--procs", type=int, nargs="+", default=None, help="also time the CLI launched as P processes (CPU)"
    )
    parser.add_argument("--compile", action="store_true", help="train with train.compile=true")
    args = parser.parse_args()

    torch.manual_seed(0)
    peak = matmul_peak(args.threads)
    print(f"machine: fp32 matmul peak {peak:.1f} GFLOP/s with {args.threads} threads (2048² GEMM, best of 3)")
    configs = {
        "reference": apply_overrides(default_run_config("detok-fmnist32"), REFERENCE),
        "fmnist32": default_run_config("detok-fmnist32"),
    }
    peaks = {"fp32": peak}
    if torch.cuda.is_available():
        # detok-BB at 256 px, the paper's tokenizer (no LPIPS/GAN: their cost depends on the backbone choice).
        peaks = {"fp32": matmul_peak(1, device="cuda"), "bf16": matmul_peak(1, device="cuda", dtype=torch.bfloat16)}
        print(f"gpu {torch.cuda.get_device_name()}: fp32 matmul {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f}")
        for precision in ("bf16", "fp32"):
            configs[f"bb-{precision}"] = apply_overrides(
                default_run_config("detok-bb"),
                [
                    "train.device=cuda",
                    "train.batch_size=64",
                    f"train.precision={precision}",
                    "loss.perceptual_weight=0",
                    "loss.gan_weight=0",
                ],
            )
    for name, cfg in configs.items():
        if args.only and not name.startswith(args.only):
            continue
        device = "cuda" if cfg.train.device == "cuda" else "cpu"
        model = DeTok(cfg.model).to(device)
        flops = step_flops(model, cfg.train.batch_size) / cfg.train.batch_size
        if args.compile:
            cfg = apply_overrides(cfg, ["train.compile=true"])
        ips = train_throughput(cfg, args.steps, args.threads)
        enc, dec = codec_throughput(model, precision=cfg.train.precision)
        achieved = ips * flops / 1e9
        ref = peaks[cfg.train.precision] if device == "cuda" else peak
        print(
            f"{name}{' (train.compile=true)' if args.compile else ''}: train {ips:.1f} img/s, "
            f"{flops / 1e9:.2f} GFLOP/img (fwd+bwd) -> {achieved:.1f} GFLOP/s "
            f"= {100 * achieved / ref:.0f}% of {device} {cfg.train.precision} peak; "
            f"encode {enc:.0f} img/s, decode {dec:.0f} img/s"
        )
        if args.procs and device == "cpu":
            overrides = REFERENCE if name == "reference" else []
            for procs in args.procs:
                ips = launch_throughput(cfg, overrides, args.steps, args.threads, procs)
                achieved = ips * flops / 1e9
                print(
                    f"  {name} via the CLI, {procs} process(es) x {args.threads // procs} thread(s): "
                    f"train {ips:.1f} img/s -> {achieved:.1f} GFLOP/s = {100 * achieved / peak:.0f}% of peak"
                )


if __name__ == "__main__":
    main()
