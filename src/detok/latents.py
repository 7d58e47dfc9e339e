"""Latents of a dataset: the tokenizer's per-channel statistics and an on-disk cache for generator training."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from detok import dist
from detok.checkpoint import (
    CONFIG_FILE,
    publish,
    read_json,
    read_model_config,
    read_weights,
    weights_digest,
    write_json,
)
from detok.config import to_dict
from detok.data import MAX_CLASSES, check_labels, iter_batches
from detok.loader import BatchPlan, image_batches
from detok.progress import tqdm
from detok.runfolder import check_cache_folder


@torch.no_grad()
def compute_latent_stats(
    tokenizer: torch.nn.Module,
    dataset,
    batch_size: int = 256,
    max_images: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of `tokenizer.encode` over `dataset` (float64 accumulation).

    Channels are those of the tokenizer's latent layout (axis 1 of a grid, the last axis of a sequence);
    discrete tokenizers have none to normalise and are refused.
    """
    layout = tokenizer.latent_layout
    if layout.kind == "discrete":
        raise ValueError("a discrete tokenizer's latents are code indices: they have no statistics to normalise")
    tokenizer.eval()
    total = sq = None
    count = 0
    for x, _ in iter_batches(dataset, batch_size, max_images, "latent stats", progress):
        x = x.to(device)
        z = layout.per_channel(tokenizer.encode(x).double())  # (C, N·positions)
        total = z.sum(1) if total is None else total + z.sum(1)
        sq = (z * z).sum(1) if sq is None else sq + (z * z).sum(1)
        count += z.shape[1]
    mean = total / count
    std = (sq / count - mean**2).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def store_latent_stats(folder: str | Path, mean: list[float], std: list[float]) -> None:
    """Write the statistics into a model folder's config.json (the tokenizer owns its normalisation)."""
    _, cfg, raw = read_model_config(folder)
    cfg = dataclasses.replace(cfg, latent_mean=tuple(mean), latent_std=tuple(std))
    raw["model"] = to_dict(cfg)
    write_json(Path(folder) / CONFIG_FILE, raw)


# --------------------------------------------------------------------------------------------------
# Latent cache (encode a dataset once; generators then train without the tokenizer in the loop)
# --------------------------------------------------------------------------------------------------

CACHE_META = "latents.json"
CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
CACHE_SPEC = "cache-spec.json"  # written before the first shard: what decides the shards


def cache_latents(
    tokenizer: torch.nn.Module,
    dataset,
    out_dir: str | Path,
    tokenizer_path: str = "",
    batch_size: int = 256,
    shard_size: int = 10_000,
    progress: bool = True,
    max_images: int | None = None,
    dtype: str = "float32",
    workers: int = 0,
    prefetch: int = 2,
) -> Path:
    """Encode every image of `dataset` and its horizontal flip into safetensors shards under `out_dir`.

    Each shard `shard-XXXXX.safetensors` holds "latents" and "latents_flip" (n, *latent_shape) in `dtype`
    ("float32", or "float16" for half the disk: 1.28M ImageNet images × 2 at 16×16×16 take ~21 GB) — raw posterior
    means, not normalised; a VQ tokenizer's code indices keep their integer type — and "labels" (n,). Shards are
    written atomically; re-running skips the finished ones, so an interrupted cache resumes. `latents.json` records
    the layout and the tokenizer's own statistics (if it has them) so that consumers normalise with the tokenizer's
    numbers. `max_images` caches only the first images of the split (a resumed cache must use the same value). What
    decides the shards (count, shard size, the tokenizer's weights) is recorded before the first shard, so a resumed
    cache made with another tokenizer is refused instead of mixed.

    Under torchrun every process encodes its part: shard s is written by rank s mod world size (once, by one
    process; the folder must be shared by all of them), and rank 0 writes `latents.json` when every shard exists. A
    shard's batches are the same whoever encodes it, so the cache equals a single process's, and a resumed cache may
    use another number of processes. An image folder with `workers` > 0 is decoded by that many worker processes
    per rank (`detok.loader`), `prefetch` batches each ahead.
    """
    if getattr(dataset, "hflip", False):
        raise ValueError("cache_latents stores each image and its flip itself: build the dataset with hflip=False")
    out = Path(out_dir)
    check_cache_folder(out)
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    if n <= 0:
        raise ValueError(f"nothing to cache: max_images={max_images}")
    if (out / CACHE_META).is_file() and json.loads((out / CACHE_META).read_text())["count"] != n:
        raise ValueError(f"{out} already holds a cache of another size; use a new --out or the same --max-images")
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"latent cache dtype must be one of {sorted(CACHE_DTYPES)}, got {dtype!r}")
    spec = {"count": n, "shard_size": shard_size, "tokenizer_weights": weights_digest(tokenizer)}
    if dtype != "float32":  # caches made before the choice existed are float32 and keep their spec
        spec["dtype"] = dtype
    if (out / CACHE_SPEC).is_file():  # every rank checks, so a refusal stops them all alike
        made = json.loads((out / CACHE_SPEC).read_text())
        if made != spec:
            what = (
                "another tokenizer" if made.get("tokenizer_weights") != spec["tokenizer_weights"] else "other settings"
            )
            raise ValueError(f"{out} holds (part of) a cache made with {what} ({made}); use a new --out or delete it")
    dist.barrier()  # nobody writes the spec before everyone has read the old one
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        if not (out / CACHE_SPEC).is_file():
            write_json(out / CACHE_SPEC, spec)
    dist.barrier()
    num_shards = -(-n // shard_size)
    rank, world = dist.rank(), dist.world_size()
    mine = [s for s in range(rank, num_shards, world) if not _shard_path(out, s).exists()]
    plans = (
        BatchPlan(torch.arange(start, min(start + batch_size, (s + 1) * shard_size, n)))
        for s in mine
        for start in range(s * shard_size, min((s + 1) * shard_size, n), batch_size)
    )
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    batches = image_batches(dataset, plans, device, workers, prefetch)
    for s in tqdm(mine, disable=not (progress and dist.is_main()), desc="cache latents", unit="shard"):
        parts: dict[str, list[torch.Tensor]] = {"latents": [], "latents_flip": [], "labels": []}
        for _ in range(s * shard_size, min((s + 1) * shard_size, n), batch_size):
            x, y, skipped = next(batches)
            for path, reason in skipped:
                print(f"skipped unreadable image {path} ({reason}): data.skip_bad_files=true", flush=True)
            with torch.no_grad():
                for key, images in (("latents", x), ("latents_flip", x.flip(-1))):
                    z = tokenizer.encode(images).cpu()
                    parts[key].append(z.to(CACHE_DTYPES[dtype]) if z.is_floating_point() else z)
            parts["labels"].append(y)
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".shard-")
        os.close(fd)
        save_file({k: torch.cat(v).contiguous() for k, v in parts.items()}, tmp)
        publish(tmp, _shard_path(out, s))
    dist.barrier()
    if dist.is_main():
        missing = [_shard_path(out, s).name for s in range(num_shards) if not _shard_path(out, s).exists()]
        if missing:
            raise RuntimeError(f"{out}: shards {', '.join(missing[:5])} were not written; rerun to finish the cache")
        cfg = tokenizer.config
        meta = {
            "tokenizer": tokenizer_path,
            "count": n,
            "shards": num_shards,
            "latent_shape": list(tokenizer.latent_shape),
            "token_layout": tokenizer.token_layout,
            "layout": tokenizer.latent_layout.kind,
            "dtype": dtype,
            "num_classes": dataset.num_classes,
            "latent_mean": None if cfg.latent_mean is None else list(cfg.latent_mean),
            "latent_std": None if cfg.latent_std is None else list(cfg.latent_std),
        }
        write_json(out / CACHE_META, meta)
    dist.barrier()
    return out


def _shard_path(cache: Path, shard: int) -> Path:
    return cache / f"shard-{shard:05d}.safetensors"


class LatentDataset:
    """Cached latents; `get_batch` picks the flipped copy of each image with probability ½, as float32.

    `in_memory` loads every shard at once (fast random access; RAM = the cache's size, in its stored dtype). Without
    it the shards stay memory-mapped and each batch reads only its rows, so a cache larger than RAM can feed
    training (the pages touched are the kernel's file cache, reclaimable, not the process's heap).
    """

    def __init__(self, cache_dir: str | Path, normalize: bool = True, in_memory: bool = True):
        cache = Path(cache_dir)
        self.meta = self.read_meta(cache)
        paths = [_shard_path(cache, s) for s in range(self.meta["shards"])]
        self.num_classes = self.meta["num_classes"]
        if in_memory:
            shards = [read_weights(path) for path in paths]
            self.latents = _widened(torch.cat([s["latents"] for s in shards]))  # (N, *latent_shape)
            self.latents_flip = _widened(torch.cat([s["latents_flip"] for s in shards]))
        else:
            self.latents = _MappedRows(paths, "latents")
            self.latents_flip = _MappedRows(paths, "latents_flip")
        labels = [s["labels"] for s in shards] if in_memory else [_read_key(p, "labels") for p in paths]
        for path, part in zip(paths, labels):  # by value and dtype: a label beyond the classes would index past them
            check_labels(part.numpy(), len(part), f"{path} ('labels')", self.num_classes)
        self.labels = torch.cat(labels).long()  # (N,): small, always in memory
        self.mean = self.std = None
        if normalize:
            if self.meta["latent_mean"] is None:
                raise RuntimeError(
                    f"{cache}: the tokenizer had no latent statistics when the cache was written; "
                    "run `detok tokenizer stats` and re-cache, or load with normalize=False"
                )
            # channels: axis 1 of a grid (N, C, h, w), the last axis of a sequence (N, K, C)
            kind = self.meta.get("layout", "sequence" if self.meta.get("token_layout") == "1d" else "grid")
            shape = [1] * (len(self.meta["latent_shape"]) + 1)
            shape[-1 if kind == "sequence" else 1] = -1
            self.mean = torch.tensor(self.meta["latent_mean"]).view(shape)
            self.std = torch.tensor(self.meta["latent_std"]).view(shape)
            if in_memory:  # normalised once here; mapped rows are normalised as they are read
                self.latents = (self.latents - self.mean) / self.std
                self.latents_flip = (self.latents_flip - self.mean) / self.std
                self.mean = self.std = None

    @staticmethod
    def read_meta(cache_dir: str | Path) -> dict:
        """The cache's `latents.json` (layout, class count, the tokenizer's statistics)."""
        meta_path = Path(cache_dir) / CACHE_META
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{cache_dir} is not a latent cache ({CACHE_META} missing; run `detok latents cache`)"
            )
        meta = read_json(meta_path)
        if not isinstance(meta, dict):
            raise ValueError(f"{meta_path} is not a JSON object: not a latent cache")
        classes = meta.get("num_classes")
        if isinstance(classes, bool) or not isinstance(classes, int) or not 1 <= classes <= MAX_CLASSES:
            raise ValueError(f"{meta_path}: num_classes must be an integer in [1, {MAX_CLASSES:,}], got {classes!r}")
        return meta

    @staticmethod
    def tokenizer_digest(cache_dir: str | Path) -> str | None:
        """The digest of the tokenizer weights that made the cache (`weights_digest`; None for older caches)."""
        spec = Path(cache_dir) / CACHE_SPEC
        made = read_json(spec) if spec.is_file() else {}
        return made.get("tokenizer_weights") if isinstance(made, dict) else None

    def __len__(self) -> int:
        return len(self.latents)

    def get_batch(
        self, indices: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (B, *latent_shape) and labels (B,); each drawn from the flipped copy with probability ½."""
        flip = torch.rand(len(indices), generator=generator) < 0.5
        plain, flipped = self.latents[indices], self.latents_flip[indices]
        z = torch.where(flip.view(-1, *([1] * (plain.dim() - 1))), flipped, plain)
        if z.is_floating_point():
            z = z.float()
            if self.mean is not None:
                z = (z - self.mean) / self.std
        return z, self.labels[indices]


def _widened(t: torch.Tensor) -> torch.Tensor:
    """float16 latents as float32 (code indices unchanged)."""
    return t.float() if t.is_floating_point() else t


def _read_key(path: Path, key: str) -> torch.Tensor:
    """One tensor of a safetensors shard, read without loading the others."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(key)


class _MappedRows:
    """Rows of one tensor spread over safetensors shards, read on demand through memory-mapped files."""

    def __init__(self, paths: list[Path], key: str):
        from safetensors import safe_open

        self.files = [safe_open(str(p), framework="pt") for p in paths]
        sizes = [f.get_slice(key).get_shape()[0] for f in self.files]
        self.starts = torch.tensor([0, *sizes]).cumsum(0)  # (S + 1,)
        self.key = key

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        shard = torch.searchsorted(self.starts, indices, right=True) - 1  # (B,)
        rows = [self.files[s].get_slice(self.key)[int(i - self.starts[s]) : int(i - self.starts[s]) + 1]
                for i, s in zip(indices.tolist(), shard.tolist())]  # fmt: skip
        return torch.cat(rows)
