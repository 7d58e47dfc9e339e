"""Latent statistics owned by a tokenizer: per-channel mean/std over a dataset."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from tqdm import tqdm

from detok.checkpoint import CONFIG_FILE, read_model_config, write_json
from detok.config import to_dict


@torch.no_grad()
def compute_latent_stats(
    tokenizer: torch.nn.Module,
    dataset,
    batch_size: int = 256,
    max_images: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of `tokenizer.encode` over `dataset` (float64 accumulation)."""
    tokenizer.eval()
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    total = sq = None
    count = 0
    for start in tqdm(range(0, n, batch_size), disable=not progress, desc="latent stats", unit="batch"):
        x = dataset.get_batch(torch.arange(start, min(start + batch_size, n)))[0].to(device)
        z = tokenizer.encode(x).double().transpose(0, 1).flatten(1)  # (C, N·h·w)
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
