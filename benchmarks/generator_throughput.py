"""Generator training and sampling throughput for the FMNIST-32 presets (issue #3's targets).

Training runs the real loop (`train_generator`) twice per preset on the same random data: from a latent
cache, and re-encoding every image through the tokenizer at every step (how the original implementation
trains). Sampling times one batch of `--batch` class-balanced samples at CFG 2 with the preset's own step
counts; for RandomAR/RasterAR also without the KV cache (how the original samples). The tokenizer is an
untrained `detok-fmnist32` (speed does not depend on its weights). Prints one line per preset.

    python benchmarks/generator_throughput.py [--threads 2] [--steps 30] [--only sit]
    python benchmarks/generator_throughput.py --kv-grid 16 --batch 8   # KV cache at the paper's 16×16 layout
    python benchmarks/generator_throughput.py --kv-presets randomar-b,rasterar-b --batch 1   # at the paper's size
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from detok import create_model, list_models
from detok.checkpoint import load_tokenizer, save_model_folder
from detok.data import DataConfig, build_dataset
from detok.latents import cache_latents, store_latent_stats
from detok.objectives.guidance import balanced_labels
from detok.training.generator import default_run_config, train_generator


def _setup(root: Path, images: int) -> tuple[Path, Path, Path]:
    """A tokenizer folder with statistics, a random 28×28 npz data set and its latent cache."""
    torch.manual_seed(0)
    tok = create_model("detok-fmnist32").eval()
    save_model_folder(root / "tok", tok)
    c = tok.config.latent_channels
    store_latent_stats(root / "tok", [0.0] * c, [1.0] * c)
    rng = np.random.default_rng(0)
    np.savez(
        root / "d.npz", images=rng.integers(0, 256, (images, 28, 28), dtype=np.uint8), labels=np.arange(images) % 10
    )
    data = build_dataset(DataConfig(name="npz", root=str(root / "d.npz")), "train")
    tok = load_tokenizer(root / "tok")  # now with its statistics, which the cache records
    cache_latents(tok, data, root / "cache", str(root / "tok"), progress=False)
    return root / "tok", root / "d.npz", root / "cache"


def train_rate(preset: str, tok: Path, data: Path, cache: Path | None, steps: int, threads: int, run: Path) -> float:
    """Median img/s of the training loop over its log intervals after the first."""
    overrides = [
        "data.name=npz",
        f"data.root={data}",
        f"train.threads={threads}",
        f"train.images={steps * 64}",
        "train.batch_size=64",
        "train.log_every=5",
        "train.progress=false",
        f"train.ckpt_every={10**9}",
        f"train.sample_every={10**9}",
    ]
    cfg = default_run_config(preset, str(tok), None if cache is None else str(cache), overrides)
    train_generator(cfg, run)
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return float(np.median([r["img_per_s"] for r in logs[1:]]))


FMNIST_LAYOUT = {"latent_channels": 8, "input_size": (8, 8), "num_classes": 10}


@torch.no_grad()
def sample_rate(
    preset: str, batch: int, threads: int, layout: dict | None = None, warmup: bool = True, **kwargs
) -> float:
    """Images/s of one batch of latents sampled at CFG 2 (after a one-image warm-up unless `warmup` is False).

    `layout` overrides the preset's latent layout (default: FMNIST-32's 8 × 8 × 8, 10 classes); `{}` keeps the
    preset's own.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(preset, **(FMNIST_LAYOUT if layout is None else layout)).eval()
    labels = balanced_labels(batch, model.config.num_classes)
    if warmup:
        model.sample(labels[:1], cfg_scale=2.0, generator=torch.Generator().manual_seed(0), **kwargs)
    t = time.perf_counter()
    model.sample(labels, cfg_scale=2.0, generator=torch.Generator().manual_seed(0), **kwargs)
    return batch / (time.perf_counter() - t)


def kv_comparison(presets: list[str], grid: int, batch: int, threads: int) -> None:
    """KV-cache against recompute sampling, one line per AR preset.

    Args:
        presets: AR preset names; the FMNIST-32 ones take the FMNIST layout, others keep their own.
        grid: if nonzero, a grid × grid latent replaces the layout's spatial size.
    """
    for preset in presets:
        layout = dict(FMNIST_LAYOUT) if preset.endswith("-fmnist32") else {}
        if grid:
            layout["input_size"] = (grid, grid)
        # The KV-cache run warms the process up; a second warm-up before recompute would cost a whole one-image
        # recompute sample, which on the B presets takes minutes.
        rates = {kv: sample_rate(preset, batch, threads, layout, warmup=kv, kv_cache=kv) for kv in (True, False)}
        size = create_model(preset, **layout).config.input_size
        print(
            f"{preset} on {size[0]}x{size[1]} latents ({size[0] * size[1]} tokens), batch {batch}: "
            f"KV cache {rates[True]:.3f} vs recompute {rates[False]:.3f} img/s: {rates[True] / rates[False]:.2f}x",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="training steps per measurement (batch 64)")
    parser.add_argument("--batch", type=int, default=64, help="sampling batch")
    parser.add_argument("--only", default=None, help="substring of the preset names to run")
    parser.add_argument(
        "--kv-grid",
        type=int,
        default=0,
        help="only compare KV-cache and recompute sampling of the AR presets on a grid × grid latent (e.g. 16)",
    )
    parser.add_argument(
        "--kv-presets",
        default=None,
        help="only compare KV-cache and recompute sampling of these AR presets (comma-separated; non-FMNIST presets "
        "keep their own latent layout, e.g. randomar-b's 16 × 16 × 16)",
    )
    args = parser.parse_args()

    if args.kv_grid or args.kv_presets:
        presets = (args.kv_presets or "randomar-fmnist32,rasterar-fmnist32").split(",")
        kv_comparison(presets, args.kv_grid, args.batch, args.threads)
        return

    presets = [n for n in list_models("*-fmnist32", kind="generator") if not args.only or args.only in n]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok, data, cache = _setup(root, images=2048)
        print(f"threads {args.threads}, batch 64, {args.steps} training steps, sampling batch {args.batch}, CFG 2")
        for preset in presets:
            cached = train_rate(preset, tok, data, cache, args.steps, args.threads, root / f"{preset}-c")
            fly = train_rate(preset, tok, data, None, args.steps, args.threads, root / f"{preset}-f")
            line = (
                f"{preset}: train {cached:.1f} img/s cached vs {fly:.1f} img/s re-encoding "
                f"({cached / fly:.2f}x); sample {sample_rate(preset, args.batch, args.threads):.1f} img/s"
            )
            if "ar-" in preset and not preset.startswith("mar"):
                uncached = sample_rate(preset, args.batch, args.threads, kv_cache=False)
                cached_rate = sample_rate(preset, args.batch, args.threads, kv_cache=True)
                line += (
                    f" (KV cache {cached_rate:.1f} vs recompute {uncached:.1f} img/s: {cached_rate / uncached:.2f}x)"
                )
            print(line, flush=True)


if __name__ == "__main__":
    main()
