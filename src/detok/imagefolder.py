"""Image folders (`root/<class>/<image>`, ImageNet's layout): decoded lazily with PIL, checked, and read in batches.

Labels index the class folders sorted by name. An unreadable file stops a run with an error naming it, or is replaced
and counted with `data.skip_bad_files`; `loader.py` decodes these folders in worker processes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from detok.images import (
    DataConfig,
    DatasetNotFoundError,
    TensorImageDataset,
    adm_center_crop,
    fit_images,
    to_unit_range,
    warn_no_test_split,
)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# Image folders up to this many files are decoded once before training when `verify` is left at None
# (~1–2 ms per small PNG/JPEG on one core: ≤ ~40 s); larger folders are scanned only with verify=true.
VERIFY_AUTO_MAX_IMAGES = 20_000
# With skip_bad_files, an unreadable image is replaced by the next readable one in folder order; this many unreadable
# files in a row mean the folder itself is unreadable (a dead mount), not a few damaged files.
MAX_CONSECUTIVE_BAD_FILES = 64


class UnreadableImageError(ValueError):
    """An image file that cannot be decoded (truncated, not an image, unreadable); the message names it."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path, self.reason = str(path), reason


def image_classes(root: Path) -> list[str]:
    """The class folders of an image folder, sorted by name (labels are indices into this list)."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    loose = 0 if classes else sum(1 for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if loose:
        raise DatasetNotFoundError(
            f"{root} holds {loose} images but no class subfolders: an image folder is laid out as "
            f"{root}/<class>/<image> (ImageNet: train/<wnid>/*.JPEG; its validation images come in one flat folder "
            "and must first be sorted into <wnid>/ folders)"
        )
    return classes


def check_same_classes(train_root: Path, eval_root: Path) -> None:
    """Refuse an evaluation folder whose class folders differ from the training folder's: labels index the sorted
    class names, so one missing class would shift every label after it."""
    train, other = image_classes(train_root), image_classes(eval_root)
    if train == other:
        return
    only_train, only_other = sorted(set(train) - set(other)), sorted(set(other) - set(train))

    def listed(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    parts = [f"{len(only_train)} in {train_root.name}/ only ({listed(only_train)})"] if only_train else []
    parts += [f"{len(only_other)} in {eval_root.name}/ only ({listed(only_other)})"] if only_other else []
    raise ValueError(
        f"the class folders of {eval_root} and {train_root} differ: {'; '.join(parts)}. Labels are indices into the "
        "sorted class names, so they would not mean the same classes; give both splits the same class folders"
    )


class ImageFolderDataset(TensorImageDataset):
    """`root/<class>/<image>` files, decoded lazily with PIL; classes sorted by name.

    With `skip_bad_files`, an unreadable file is replaced by the next readable one in folder order (so a batch keeps
    its size and the data order stays a function of the step); `load_batch` returns what it replaced.
    """

    def __init__(self, root: Path, cfg: DataConfig):
        classes = image_classes(root)
        files, labels = [], []
        for label, name in enumerate(classes):
            for f in sorted((root / name).rglob("*")):
                if f.suffix.lower() not in IMAGE_SUFFIXES or f.is_dir():
                    continue
                if f.exists() and not f.is_file():  # reading a named pipe would wait forever for a writer
                    raise ValueError(
                        f"{f} is not a regular file (a named pipe, socket or device): remove it from the image folder"
                    )
                files.append(f)
                labels.append(label)
        if not files:
            raise DatasetNotFoundError(
                f"no images found under {root}: expected {root}/<class_name>/<image files> "
                f"with suffixes {sorted(IMAGE_SUFFIXES)}"
            )
        self.files, self.cfg = files, cfg
        super().__init__(torch.empty(0), torch.tensor(labels), classes, cfg.hflip)
        if cfg.verify or (cfg.verify is None and len(files) <= VERIFY_AUTO_MAX_IMAGES):
            self.verify()

    def verify(self) -> None:
        """Decode every image once; the first unreadable one raises, naming the file and how many were bad (with
        `skip_bad_files` they are listed in a warning instead)."""
        bad = []
        for i in range(len(self.files)):
            try:
                self._load(i)
            except UnreadableImageError as e:
                bad.append(str(e))
        if bad and self.cfg.skip_bad_files:
            listed = "; ".join(bad[:20]) + (f"; and {len(bad) - 20} more" if len(bad) > 20 else "")
            warnings.warn(
                f"{len(bad)} unreadable images will be skipped (data.skip_bad_files=true): {listed}", stacklevel=3
            )
        elif bad:
            more = f" (and {len(bad) - 1} more unreadable images)" if len(bad) > 1 else ""
            raise ValueError(
                f"{bad[0]}{more}; remove or replace it, set data.skip_bad_files=true to skip such files, or set "
                "data.verify=false to find out later"
            )

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, i: int) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        path = self.files[i]
        try:
            with Image.open(path) as im:
                im = im.convert("L" if self.cfg.channels == 1 else "RGB")
                if self.cfg.resize == "adm-center-crop":  # on the decoded image, before anything else
                    arr = adm_center_crop(im, self.cfg.image_size)
                else:
                    arr = np.asarray(im, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            raise UnreadableImageError(path, str(e)) from e
        x = torch.from_numpy(arr.copy()).view(1, *arr.shape[:2], -1).permute(0, 3, 1, 2)  # (1, C, H, W)
        return fit_images(x, self.cfg.image_size, self.cfg.resize, self.cfg.pad_to)[0]

    def load_batch(
        self, indices: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
        """Decoded images (B, C, H, W) uint8, flipped (if enabled) from `generator`, and labels (B,).

        Returns also the (file, reason) of each unreadable image replaced under `skip_bad_files`; without it the
        first unreadable image raises `UnreadableImageError`.
        """
        images, labels, skipped = [], [], []
        for i in indices.tolist():
            j = i
            for _ in range(MAX_CONSECUTIVE_BAD_FILES):
                try:
                    images.append(self._load(j))
                    break
                except UnreadableImageError as e:
                    if not self.cfg.skip_bad_files:
                        raise
                    skipped.append((e.path, e.reason))
                    j = (j + 1) % len(self.files)
            else:
                raise UnreadableImageError(
                    self.files[i], f"it and the {MAX_CONSECUTIVE_BAD_FILES - 1} files after it are all unreadable"
                )
            labels.append(int(self.labels[j]))
        x = torch.stack(images)  # (B, C, H, W) uint8
        if self.hflip:  # the draw of `to_unit_range`, so both give the same flips
            flip = torch.rand(len(x), generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x, torch.tensor(labels, dtype=torch.int64), skipped

    def get_batch(
        self, indices: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, skipped = self.load_batch(indices, generator)
        for path, reason in skipped:
            warnings.warn(f"skipped unreadable image {path} ({reason}): data.skip_bad_files=true", stacklevel=2)
        return to_unit_range(x, False, None), y


def load_image_folder(cfg: DataConfig, split: str) -> ImageFolderDataset:
    """The `split` of the image folder `cfg.root`: its train/ (test: test/, else val/) subfolder when present, with
    the evaluation split's classes checked against train/'s; else the folder itself."""
    if not cfg.root or not Path(cfg.root).is_dir():
        raise DatasetNotFoundError(f"image-folder dataset needs data.root=<folder>; {cfg.root!r} is not a folder")
    root = Path(cfg.root)
    for sub in (split,) if split == "train" else (split, "val"):
        if (root / sub).is_dir():
            if split == "test" and (root / "train").is_dir():
                check_same_classes(root / "train", root / sub)
            root = root / sub
            break
    else:
        if split == "test":
            warn_no_test_split(f"{root} has no test/ or val/ folder")
    return ImageFolderDataset(root, cfg)
