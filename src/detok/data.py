"""Image datasets: Fashion-MNIST (IDX), CIFAR-10 python batches, .npz arrays, and image folders (`imagefolder.py`),
built by `build_dataset` from a `DataConfig` (`images.py`, with the in-memory dataset and geometry they share).

Every dataset returns images as float32 (N, C, H, W) in [-1, 1] and int64 labels through `get_batch`.
In-memory sources are resized/padded once at load, so the training hot path is indexing only.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import torch

from detok.imagefolder import load_image_folder
from detok.images import (
    DataConfig,
    DatasetNotFoundError,
    TensorImageDataset,
    fit_images,
    to_channels,
    warn_no_test_split,
)

DEBIAN_FMNIST = "/usr/share/datasets/fashion-mnist"
FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# MD5 of each file as published in the Fashion-MNIST README (github.com/zalandoresearch/fashion-mnist). The
# address serves plain HTTP only, so a download is kept only when it matches. (Debian's package recompresses the
# files, so local copies differ from these and are checked by their IDX headers and sizes instead.)
FMNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FMNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def _read_idx(path: Path, expect_magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic != expect_magic:
        raise ValueError(f"{path} is not an IDX file of the expected kind (magic {magic:#x}, want {expect_magic:#x})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(data) - header != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated or corrupt: {max(0, len(data) - header)} bytes for dimensions {dims}")
    arr = np.frombuffer(data, dtype=np.uint8, offset=header)
    return arr.reshape(dims)


# Labels index class tables (names, a generator's embedding rows): a label's value sizes them. ImageNet-21k has
# 21,841 classes; a million is far beyond any data set detok trains on, and its tables stay small (a name per
# class, a 1024-wide embedding row per class: 4 GB at most), so a larger label is refused as a damaged file.
MAX_CLASSES = 1_000_000


def check_labels(labels: np.ndarray, num_images: int, source: str, num_classes: int | None = None) -> np.ndarray:
    """Labels as int64, after checking there is one integer class index per image, by dtype and by value: in
    [0, `num_classes`) when the number of classes is known, else in [0, MAX_CLASSES) (checked before the cast, so
    that a uint64 or float label beyond int64 cannot wrap round)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != num_images:
        raise ValueError(f"{source}: {num_images} images but labels of shape {labels.shape}; need one label per image")
    if labels.dtype.kind not in "iuf" or (labels.dtype.kind == "f" and not np.all(labels == np.round(labels))):
        raise ValueError(f"{source}: labels must be integers, got dtype {labels.dtype}")
    if not len(labels):
        return labels.astype(np.int64)
    if labels.min() < 0:
        raise ValueError(f"{source}: labels must be non-negative class indices, found {labels.min()}")
    limit = MAX_CLASSES if num_classes is None else num_classes
    if labels.max() >= limit:
        within = f"the {num_classes} classes" if num_classes is not None else f"the limit of {MAX_CLASSES:,} classes"
        raise ValueError(
            f"{source}: label {labels.max()} is beyond {within} (labels are class indices 0 … {limit - 1})"
        )
    return labels.astype(np.int64)


def _check_images(n: int, source: str) -> None:
    if n == 0:
        raise ValueError(f"{source} holds no images")


def fmnist_search_paths(root: str | None) -> list[Path]:
    """Folders searched for Fashion-MNIST, in order: an explicit `root` only, else $DETOK_DATA and Debian's."""
    if root:
        return [Path(root)]
    paths = []
    if os.environ.get("DETOK_DATA"):
        base = Path(os.environ["DETOK_DATA"])
        paths += [base, base / "fashion-mnist"]
    return paths + [Path(DEBIAN_FMNIST)]


def _download_verified(url: str, target: Path, md5: str) -> None:
    """Fetch `url` into `target` through a temporary file; a checksum mismatch deletes it and raises."""
    part = target.with_name(target.name + ".part")
    try:
        urllib.request.urlretrieve(url, part)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise DatasetNotFoundError(f"could not download {url}: {e}") from e
    got = hashlib.md5(part.read_bytes()).hexdigest()
    if got != md5:
        part.unlink()
        raise ValueError(f"download of {url} has MD5 {got}, the published checksum is {md5}: deleted it; try again")
    os.replace(part, target)


def _find_fmnist(cfg: DataConfig, split: str) -> Path:
    names = FMNIST_FILES[split]
    if cfg.root and not cfg.download and not Path(cfg.root).is_dir():
        raise DatasetNotFoundError(f"data.root={cfg.root} does not exist (or is not a folder)")
    searched = fmnist_search_paths(cfg.root)
    for folder in searched:
        if all((folder / n).is_file() for n in names):
            return folder
    if cfg.download:
        target = Path(cfg.root or os.environ.get("DETOK_DATA") or Path.home() / ".cache" / "detok" / "fashion-mnist")
        target.mkdir(parents=True, exist_ok=True)
        for n in names:
            if not (target / n).is_file():
                _download_verified(FMNIST_URL + n, target / n, FMNIST_MD5[n])
        return target
    raise DatasetNotFoundError(
        f"Fashion-MNIST ({', '.join(names)}) not found in: {', '.join(map(str, searched))}. Get it with "
        "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four .gz files in a folder and set "
        "DETOK_DATA (or data.root) to it, or allow a download with --set data.download=true"
    )


def _load_fmnist(cfg: DataConfig, split: str) -> TensorImageDataset:
    folder = _find_fmnist(cfg, split)
    img_name, lbl_name = FMNIST_FILES[split]
    images = torch.from_numpy(_read_idx(folder / img_name, 0x803).copy()).unsqueeze(1)  # (N, 1, 28, 28)
    labels = torch.from_numpy(check_labels(_read_idx(folder / lbl_name, 0x801), len(images), str(folder / lbl_name)))
    images = to_channels(fit_images(images, cfg.image_size, cfg.resize, cfg.pad_to), cfg.channels)
    return TensorImageDataset(images.contiguous(), labels, FMNIST_CLASSES, cfg.hflip)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10's python batches and nothing else: dicts, lists, bytes and NumPy arrays/scalars.

    The official format is a pickle; an unrestricted `pickle.load` of a downloaded file would run whatever code
    it names. Any global outside these (os.system, builtins.eval, …) is refused before it is looked up.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: not part of the CIFAR-10 format")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{path} is not a CIFAR-10 python batch: {e}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path} is not a CIFAR-10 python batch: holds a {type(batch).__name__}, not a dict")
    return batch


def _load_cifar10(cfg: DataConfig, split: str) -> TensorImageDataset:
    if not cfg.root:
        raise DatasetNotFoundError(
            "CIFAR-10 needs data.root=<folder holding cifar-10-batches-py> (download the "
            "python version from https://www.cs.toronto.edu/~kriz/cifar.html)"
        )
    root = Path(cfg.root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"data.root={cfg.root} does not exist (or is not a folder)")
    root = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names + ["batches.meta"] if not (root / n).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"CIFAR-10 files {missing} not found in {root} (download the python version from "
            "https://www.cs.toronto.edu/~kriz/cifar.html and unpack it there)"
        )
    xs, ys = [], []
    for n in names:
        batch = _read_cifar_batch(root / n)
        if b"data" not in batch or b"labels" not in batch:
            raise ValueError(f"{root / n} is not a CIFAR-10 python batch: it has no b'data' and b'labels'")
        data = np.asarray(batch[b"data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{root / n}: data must be uint8 rows of 3072 values, got {data.dtype} {data.shape}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(check_labels(np.asarray(batch[b"labels"]), len(data), str(root / n)))
    meta = _read_cifar_batch(root / "batches.meta")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(b"label_names", [])]
    if not classes or max(int(y.max()) for y in ys if len(y)) >= len(classes):
        raise ValueError(f"{root / 'batches.meta'} names {len(classes)} classes, fewer than the labels use")
    images = torch.from_numpy(np.concatenate(xs))
    images = to_channels(fit_images(images, cfg.image_size, cfg.resize, cfg.pad_to), cfg.channels)
    return TensorImageDataset(images.contiguous(), torch.from_numpy(np.concatenate(ys)), classes, cfg.hflip)


def open_npz(path: str | Path) -> np.lib.npyio.NpzFile:
    """An .npz archive opened without pickle (`allow_pickle=False`). Anything else — a .npy array, a file that is not
    a zip archive, a damaged one — is refused naming the file, and never with advice to load it unsafely (numpy's own
    message for a non-zip file suggests an unpickling load)."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz archive (not a zip file: a .npy array, or a damaged or other file)")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz archive ({type(e).__name__})") from None


def npz_array(f: np.lib.npyio.NpzFile, key: str, path: str | Path) -> np.ndarray:
    """Array `key` of the archive `path` opened by `open_npz`; an object array (it would need pickle) or a damaged
    member is refused naming the file and the array."""
    try:
        return f[key]
    except ValueError:
        raise ValueError(
            f"{path}: array {key!r} holds Python objects; reading it would unpickle them, which detok never does "
            "(store numeric arrays)"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: array {key!r} is damaged ({type(e).__name__}: {e})") from None


def _load_npz(cfg: DataConfig, split: str) -> TensorImageDataset:
    if not cfg.root or not Path(cfg.root).is_file():
        raise DatasetNotFoundError(f"npz dataset needs data.root=<file.npz>; {cfg.root!r} is not a file")
    with open_npz(cfg.root) as f:
        key = f"images_{split}" if f"images_{split}" in f else "images"
        if split == "test" and key == "images":
            warn_no_test_split(f"{cfg.root} has no 'images_test' array")
        if key not in f:
            raise ValueError(f"{cfg.root} has no 'images' array (keys: {sorted(f.keys())})")
        images = npz_array(f, key, cfg.root)
        lkey = key.replace("images", "labels")
        labels = npz_array(f, lkey, cfg.root) if lkey in f else np.zeros(len(images), dtype=np.int64)
    _check_images(len(images), f"{cfg.root} ({key!r})")
    labels = check_labels(labels, len(images), f"{cfg.root} ({lkey!r})")
    if images.dtype != np.uint8:
        raise ValueError(f"{cfg.root}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    elif not (images.ndim == 4 and images.shape[1] in (1, 3)):
        raise ValueError(f"{cfg.root}: cannot tell the channel axis of images shaped {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = to_channels(fit_images(x, cfg.image_size, cfg.resize, cfg.pad_to), cfg.channels)
    num_classes = int(labels.max()) + 1 if len(labels) else 1
    return TensorImageDataset(x.contiguous(), torch.from_numpy(labels), [str(i) for i in range(num_classes)], cfg.hflip)


def build_dataset(cfg: DataConfig, split: str = "train") -> TensorImageDataset:
    """The `split` ("train" or "test") of the dataset described by `cfg`."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    if cfg.root and not cfg.download and not Path(cfg.root).exists():  # never silently fall back to another copy
        raise DatasetNotFoundError(f"data.root={cfg.root} does not exist")
    if cfg.name == "fashion-mnist":
        return _load_fmnist(cfg, split)
    if cfg.name == "cifar10":
        return _load_cifar10(cfg, split)
    if cfg.name == "npz":
        return _load_npz(cfg, split)
    if cfg.name == "image-folder":
        return load_image_folder(cfg, split)
    raise ValueError(f"unknown dataset {cfg.name!r}")


def iter_batches(dataset, batch_size: int, max_images: int | None = None, desc: str = "", progress: bool = True):
    """Yield (images, labels) over the first `max_images` items of `dataset` in order, without flips.

    A dataset with random flips is refused: its `get_batch` would flip from the unseeded global stream, and
    evaluation (reference statistics, reconstructions, latent caches) must see the images as they are.
    """
    from detok.progress import tqdm

    if getattr(dataset, "hflip", False):
        raise ValueError("evaluation reads images unflipped: build the dataset with hflip=False")

    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    for start in tqdm(range(0, n, batch_size), disable=not progress, desc=desc, unit="batch"):
        yield dataset.get_batch(torch.arange(start, min(start + batch_size, n)))
