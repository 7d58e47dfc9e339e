"""Images in memory at the model's geometry: the data config, the in-memory dataset every source yields, and the
resizing, channel and [-1, 1] conversions shared by the sources (`data.py`) and image folders (`imagefolder.py`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from detok.config import ConfigError, NonNegativeInt, PositiveInt, check_fields


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where they were looked for; the message says how to get them."""


@dataclass(frozen=True)
class DataConfig:
    """Which images to load and how to bring them to the model's geometry.

    Attributes:
        root: dataset location (folder, or the .npz file); None uses the dataset's default search.
        resize: "pad" (centre-pad, then resize if still off), "resize" (shorter side, centre crop),
            "center-crop" (crop to a square, then resize) or "adm-center-crop" (ADM's `center_crop_arr`, the
            ImageNet preprocessing of DiT, SiT, MAR and LightningDiT: halve with a box filter while the shorter side
            is at least twice the target, resize it to the target with bicubic interpolation, centre crop).
        pad_to: with resize="pad", pad to this size first, then resize to `image_size`: Fashion-MNIST at 64 px in the
            framing of the 32-px runs (28 px padded to 32, then doubled: App. A.3's analogue, detok-fmnist64).
        hflip: random horizontal flips in `get_batch` (training augmentation).
        download: fetch Fashion-MNIST from its canonical address when it is not found locally (checked against
            the published MD5 sums).
        verify: decode every image of an image folder when the dataset is built, so an unreadable file stops
            the run before training; None does so for folders of up to VERIFY_AUTO_MAX_IMAGES images.
        workers: image folders only: processes that decode and preprocess training batches ahead of the loop
            (`torch.utils.data` workers, `detok.loader`); 0 decodes in the training process. Batches, their order
            and flips are the same for every value.
        prefetch: batches each worker prepares ahead (the DataLoader's `prefetch_factor`).
        skip_bad_files: replace an unreadable image file by the next readable one in folder order, and list it in
            the run's log, instead of stopping the run at it.
    """

    name: Literal["fashion-mnist", "image-folder", "cifar10", "npz"] = "fashion-mnist"
    root: str | None = None
    image_size: PositiveInt = 32
    channels: PositiveInt = 1
    resize: Literal["pad", "resize", "center-crop", "adm-center-crop"] = "pad"
    pad_to: PositiveInt | None = None
    hflip: bool = False
    download: bool = False
    verify: bool | None = None
    workers: NonNegativeInt = 0
    prefetch: PositiveInt = 2
    skip_bad_files: bool = False

    def __post_init__(self):
        check_fields(self)
        if self.channels not in (1, 3):
            raise ConfigError("channels", f"must be 1 or 3, got {self.channels}")
        if self.pad_to is not None and self.resize != "pad":
            raise ConfigError("pad_to", f"pads before resizing with resize=pad only, not resize={self.resize}")


# --------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, H, W) uint8/float with C ∈ {1, 3} → `channels` (grey via ITU-R 601 luma, or replication)."""
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(x.dtype)


def adm_center_crop(image, size: int) -> np.ndarray:
    """ADM's `center_crop_arr` (guided-diffusion `image_datasets.py`) of a PIL image: uint8 (size, size[, C])."""
    from PIL import Image

    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top : top + size, left : left + size]


def fit_images(x: torch.Tensor, size: int, mode: str, pad_to: int | None = None) -> torch.Tensor:
    """Bring uint8 images (N, C, H, W) to (N, C, size, size) by padding (to `pad_to`, if given), cropping and/or
    resizing."""
    if mode == "adm-center-crop":  # one PIL image at a time, exactly as ADM's loader does
        from PIL import Image

        out = []
        for img in x.permute(0, 2, 3, 1).numpy():  # (H, W, C)
            pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
            out.append(torch.from_numpy(adm_center_crop(pil, size).copy()).reshape(size, size, -1))
        return torch.stack(out).permute(0, 3, 1, 2).contiguous()  # (N, C, size, size)
    h, w = x.shape[-2:]
    if mode == "pad":
        ph, pw = max(0, (pad_to or size) - h), max(0, (pad_to or size) - w)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    elif mode == "center-crop":
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        x = x[..., top : top + s, left : left + s]
    elif mode == "resize" and h != w:
        scale = size / min(h, w)
        x = _resize(x, round(h * scale), round(w * scale))
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        if min(h, w) > size and h == w:
            x = _resize(x, size, size)
        else:
            s = min(h, w)
            top, left = (h - s) // 2, (w - s) // 2
            x = _resize(x[..., top : top + s, left : left + s], size, size)
    return x


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (h, w):
        return x
    y = F.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


def to_unit_range(images: torch.Tensor, hflip: bool, generator: torch.Generator | None) -> torch.Tensor:
    """uint8 (B, C, H, W) → float32 in [-1, 1], each image flipped left-right with probability ½ if `hflip`."""
    x = images.float().div_(127.5).sub_(1.0)
    if hflip:
        flip = torch.rand(len(x), generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return x


class TensorImageDataset:
    """Images held in memory as uint8 (N, C, H, W) at the target geometry, with int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: list[str], hflip: bool = False):
        self.images, self.labels = images, labels
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.images)

    def get_batch(
        self, indices: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) float32 in [-1, 1] and labels (B,); flips (if enabled) drawn from `generator`."""
        return to_unit_range(self.images[indices], self.hflip, generator), self.labels[indices]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.get_batch(torch.tensor([i]))
        return x[0], int(y[0])


def warn_no_test_split(why: str) -> None:
    warnings.warn(
        f"{why}: the 'test' split is the training images; test metrics will measure training data", stacklevel=3
    )
