"""Image-folder input pipeline: decoded + preprocessed img/s against the number of loader workers, the training step's
data-wait fraction with and without workers, and the workers per GPU a paper preset implies.

    python benchmarks/loader_throughput.py FOLDER [--images 20000] [--workers 0 1 2] [--size 256] [--batches 40]
        [--preset detok-bb] [--train-batch 8] [--train-steps 6] [--threads 2] [--mfu 0.4]

FOLDER caches a synthetic ImageNet-like folder (made once, reused while it holds --images images): 100 classes in
`<wnid>/<name>.JPEG` layout, sizes drawn around ImageNet's typical 400×350 (width 400 ± 60, height 350 ± 50, clipped),
smooth content plus grain at JPEG quality 90 (~30–60 KB a file, close to ImageNet's mean of ~110 KB for ~1.4× the
pixels). Pure noise would compress badly and decode more slowly than photographs.

1. Loader: `detok.loader.image_batches` over --batches batches of 64 in the training order (ADM centre crop to
   --size, random flips, to float in [-1, 1]), for each --workers value; img/s after the first batch (worker
   start-up excluded). The files are in the page cache after the first pass: this measures decoding, not the disk.
2. Training: `train_tokenizer` with --preset (LPIPS, ConvNeXt and GAN off: offline, and they cost the same with
   any loader) at --train-batch for --train-steps steps, with 0 workers and with the largest --workers value;
   the data-wait fraction is the log's `data_wait` (share of wall time spent waiting for the next batch), median
   over steps after the first.
3. Workers per GPU: the preset's training FLOPs per image (forward + backward of the tokenizer alone, counted on
   the meta device over 8 mask ratios drawn as in training), the images per second an H100 would consume at --mfu
   of its 989 TFLOP/s dense bf16 peak, divided by the 1-worker rate measured here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from detok.config import apply_overrides
from detok.data import DataConfig, build_dataset
from detok.loader import image_batches, training_plans
from detok.registry import create_model
from detok.training.tokenizer import default_run_config, train_tokenizer

H100_BF16_DENSE = 989e12  # FLOP/s, H100 SXM dense bf16 tensor-core peak (NVIDIA's data sheet)
MARKER = "synthetic.json"


def make_folder(folder: Path, images: int, classes: int = 100, seed: int = 0) -> Path:
    """Write (or reuse) the synthetic ImageNet-like folder; returns it."""
    from PIL import Image

    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("images", 0) >= images:
        return folder
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    for i in range(images):
        wnid = folder / f"n{i % classes:08d}"
        wnid.mkdir(parents=True, exist_ok=True)
        path = wnid / f"n{i % classes:08d}_{i // classes}.JPEG"
        if path.is_file():
            continue
        w, h = int(np.clip(rng.normal(400, 60), 250, 600)), int(np.clip(rng.normal(350, 50), 200, 500))
        base = Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        grain = rng.normal(0, 6, (h, w, 3))
        arr = np.clip(np.asarray(base, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(path, quality=90)
        if (i + 1) % 2000 == 0:
            print(f"  made {i + 1}/{images} images ({time.perf_counter() - t:.0f} s)", flush=True)
    marker.write_text(json.dumps({"images": images, "classes": classes, "seed": seed}))
    return folder


def loader_rate(dataset, workers: int, batches: int, batch: int = 64) -> float:
    """Decoded + preprocessed img/s of `image_batches` with `workers`, after the first batch."""
    plans = training_plans(0, batches, batch, len(dataset), 0, 0, 1, 1)
    it = image_batches(dataset, plans, "cpu", workers, prefetch=2)
    next(it)  # worker start-up and the first decode
    t, n = time.perf_counter(), 0
    for x, _, _ in it:
        n += len(x)
    return n / (time.perf_counter() - t)


def data_wait(folder: Path, preset: str, batch: int, steps: int, workers: int, threads: int) -> tuple[float, float]:
    """(median data-wait fraction, median img/s) of `train_tokenizer` on the folder, steps after the first."""
    with tempfile.TemporaryDirectory() as tmp:
        sets = [
            "data.name=image-folder",
            f"data.root={folder}",
            "data.resize=adm-center-crop",
            "data.hflip=true",
            "data.verify=false",
            f"data.workers={workers}",
            "loss.perceptual_weight=0",
            "loss.convnext_weight=0",
            "loss.gan_weight=0",
            f"train.batch_size={batch}",
            f"train.images={batch * steps}",
            f"train.threads={threads}",
            "train.log_every=1",
            "train.progress=false",
            f"train.ckpt_every={10**9}",
            f"train.sample_every={10**9}",
        ]
        train_tokenizer(apply_overrides(default_run_config(preset), sets), Path(tmp) / "run")
        logs = [json.loads(line) for line in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()][1:]
    return statistics.median(r["data_wait"] for r in logs), statistics.median(r["img_per_s"] for r in logs)


def train_flops_per_image(preset: str, draws: int = 8) -> float:
    """Forward + backward FLOPs of one image through the tokenizer, counted on the meta device (no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    from detok.tokenizers.corruption import sample_mask_ratio

    with torch.device("meta"):
        model = create_model(preset)
    cfg = model.config
    x = torch.zeros(1, cfg.channels, cfg.image_size, cfg.image_size, device="meta")
    g, total = torch.Generator().manual_seed(0), 0
    for _ in range(draws):
        with FlopCounterMode(display=False) as fc:
            out = model(x, mask_ratio=sample_mask_ratio(cfg.corruption, g))
            (out["recon"] - x).pow(2).mean().backward()
        total += fc.get_total_flops()
    return total / draws


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="where the synthetic folder is made (and reused)")
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--size", type=int, default=256, help="training resolution of the loader measurement")
    p.add_argument("--batches", type=int, default=40, help="batches of 64 per loader measurement")
    p.add_argument("--preset", default="detok-bb")
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--train-steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOP utilisation assumed for the H100 line")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    folder = make_folder(args.folder, args.images)
    cfg = DataConfig(name="image-folder", root=str(folder), image_size=args.size, channels=3,
                     resize="adm-center-crop", hflip=True, verify=False)  # fmt: skip
    dataset = build_dataset(cfg)
    print(f"folder {folder}: {len(dataset)} JPEGs; {args.threads} training threads; torch {torch.__version__}")
    rates = {}
    for workers in args.workers:
        rates[workers] = loader_rate(dataset, workers, args.batches)
        print(f"loader, {workers} workers: {rates[workers]:.1f} img/s decoded + ADM-cropped to {args.size} px")

    most = max(args.workers)
    for workers in sorted({0, most}):
        wait, ips = data_wait(folder, args.preset, args.train_batch, args.train_steps, workers, args.threads)
        print(f"{args.preset} batch {args.train_batch}, {workers} workers: data wait {wait:.1%} of the step, "
              f"{ips:.2f} img/s")  # fmt: skip

    flops = train_flops_per_image(args.preset)
    consumed = args.mfu * H100_BF16_DENSE / flops
    one = rates.get(1)
    line = (f"{args.preset}: {flops / 1e9:.1f} GFLOP/img (fwd+bwd, tokenizer alone) -> one H100 at {args.mfu:.0%} "
            f"MFU consumes {consumed:.0f} img/s")  # fmt: skip
    if one:
        line += f"; at {one:.0f} img/s per worker here that is {consumed / one:.1f} workers per GPU"
    print(line)


if __name__ == "__main__":
    main()
