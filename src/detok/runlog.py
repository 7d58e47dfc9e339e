"""Run logging: JSONL metrics, optional TensorBoard, image grids as PNG."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from detok.checkpoint import strict_json


class RunLog:
    """Appends one strict-JSON object per `log` call to `run_dir/log.jsonl` (rank 0 only); mirrors to TensorBoard.

    `start_step` is the step a resumed run continues from: TensorBoard events after it are purged (log.jsonl is
    truncated by the resume itself), so curves have no duplicated points.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = False, start_step: int = 0):
        self.enabled = enabled
        self.path = Path(run_dir) / "log.jsonl"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError(
                    "TensorBoard logging needs the 'tensorboard' extra: "
                    "pip install 'detok[tensorboard]' (or set train.tensorboard=false)"
                ) from e
            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=start_step + 1)

    def log(self, step: int, **metrics: Any) -> None:
        if not self.enabled:
            return
        record = strict_json({"step": step, "time": round(time.time(), 3), **metrics})
        with self.path.open("a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_log(run_dir: str | Path) -> list[dict]:
    """All records of a run's log.jsonl."""
    path = Path(run_dir) / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images (N, C, H, W) in [-1, 1] → uint8 array (N, H, W, C)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, pad: int = 2, scale: int = 1) -> None:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid; `scale` enlarges each image (nearest neighbour)."""
    arr = to_uint8(images)
    if scale > 1:
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, c = arr.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = arr[i]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(path)
