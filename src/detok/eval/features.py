"""Feature extractors for FD/IS/precision/recall, and cached reference statistics of real data.

Every extractor takes uint8 images (N, C, H, W) — exactly what an image writer or a sample .npz holds, so that
generated samples, reconstructions and real images are scored through the same rounding — and returns
features (N, D) plus class probabilities (N, K) for the Inception Score. Two implementations:

- `InceptionExtractor`: the field's Inception-v3 (torch-fidelity's TF-compatible port: 2048-d pool features,
  unbiased logits for IS). Needs the `inception` extra and its weights (downloaded once, or a local file).
- `ReferenceExtractor`: the small-dataset reference classifier (`detok eval train-reference`), the default
  evaluator for Fashion-MNIST-32: offline, ~1,000× cheaper than Inception on CPU.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from detok.eval.metrics import feature_stats
from detok.progress import tqdm

ENV_CACHE = "DETOK_CACHE"
ENV_INCEPTION_WEIGHTS = "DETOK_INCEPTION_WEIGHTS"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def cache_dir() -> Path:
    """Where evaluators and reference statistics are cached: $DETOK_CACHE, else ~/.cache/detok."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "detok")


# The Fashion-MNIST-32 reference classifier detok scores with, shipped with the package (330 KB) so that every
# machine uses the same evaluator, as the field fixes Inception's weights. Trained with the default recipe of
# `detok eval train-reference` (2026-12-02, 2-core CPU, 1 thread): 91.95% test accuracy.
SHIPPED_REFERENCE = Path(__file__).parent / "weights" / "reference-fmnist32"


def default_reference_dir(dataset: str = "fashion-mnist") -> Path:
    """The reference classifier detok scores `dataset` with by default: the shipped one for Fashion-MNIST."""
    if dataset != "fashion-mnist":
        raise ValueError(f"no reference classifier for {dataset!r}; known: fashion-mnist")
    return SHIPPED_REFERENCE


def shipped_evaluator_dir(preset: str = "reference-fmnist32") -> Path:
    """The shipped weights of evaluator `preset` (reference-fmnist32, or the second one, reference-resnet-fmnist32)."""
    return SHIPPED_REFERENCE.parent / preset


def trained_reference_dir(dataset: str = "fashion-mnist", preset: str = "reference-fmnist32") -> Path:
    """Where `detok eval train-reference` writes a classifier it trains (the shipped one is never overwritten)."""
    if dataset != "fashion-mnist":
        raise ValueError(f"no reference classifier recipe for {dataset!r}; known: fashion-mnist")
    return cache_dir() / "evaluators" / preset


def file_digest(path: str | Path, length: int = 12) -> str:
    """First `length` hex digits of the SHA-256 of a file: names an extractor's weights in cache keys."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def to_uint8_nchw(images: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] → uint8 (N, C, H, W), rounded as `runlog.to_uint8` writes them."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class FeatureExtractor(Protocol):
    """Maps uint8 images (N, C, H, W) to (features (N, D), class probabilities (N, K) or None)."""

    name: str  # stable identifier including a weights digest; keys the reference-statistics cache

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...


# --------------------------------------------------------------------------------------------------
# Extractors
# --------------------------------------------------------------------------------------------------


class ReferenceExtractor:
    """Penultimate features and softmax probabilities of a trained `ReferenceNet` (see eval/reference.py)."""

    dataset_classes = True  # its probabilities are over the dataset's own classes (class consistency is defined)

    def __init__(self, model: torch.nn.Module, name: str):
        self.model = model.eval()
        self.name = name
        self.device = next(model.parameters()).device

    @classmethod
    def from_folder(cls, path: str | Path, device: str | torch.device = "cpu") -> ReferenceExtractor:
        from detok.eval.reference import load_reference

        model = load_reference(path, device)
        return cls(model, f"reference-{file_digest(Path(path) / 'model.safetensors')}")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.model.config
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if tuple(images.shape[1:]) != (cfg.channels, cfg.image_size, cfg.image_size):
            raise ValueError(
                f"the reference classifier scores ({cfg.channels}, {cfg.image_size}, {cfg.image_size}) images, "
                f"got {tuple(images.shape[1:])}; it is specific to its dataset — use --evaluator inception otherwise"
            )
        x = images.to(self.device).float() / 127.5 - 1  # (N, C, H, W) in [-1, 1], as the classifier was trained
        feats = self.model.features(x)  # (N, D)
        return feats.cpu(), F.softmax(self.model.head(feats), dim=1).cpu()


class InceptionExtractor:
    """Inception-v3 pool features (2048-d) and softmax of the unbiased logits, via torch-fidelity.

    Weights: `weights` if given, else $DETOK_INCEPTION_WEIGHTS, else torch-fidelity downloads them once into the
    torch hub cache. Grey images are replicated to RGB; torch-fidelity resizes to 299×299 like TensorFlow did.
    """

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu"):
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as e:
            raise ImportError(
                "the Inception evaluator needs torch-fidelity: pip install 'detok[inception]' "
                "(or use the offline reference classifier: --evaluator reference)"
            ) from e
        weights = weights or os.environ.get(ENV_INCEPTION_WEIGHTS) or None
        if weights is not None and not Path(weights).is_file():
            raise FileNotFoundError(f"Inception weights file {weights} does not exist")
        try:
            net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"], weights)
        except OSError as e:  # urllib's URLError is an OSError: no internet and nothing in the hub cache
            raise RuntimeError(
                f"could not download the Inception-v3 weights ({e}). Offline, download {INCEPTION_FILE} from the "
                f"torch-fidelity releases elsewhere and pass it with --evaluator inception:PATH or "
                f"${ENV_INCEPTION_WEIGHTS}; or use the offline reference classifier (--evaluator reference)"
            ) from e
        self.net = net.to(device)
        self.device = torch.device(device)
        digest = file_digest(weights) if weights is not None else INCEPTION_FILE.rsplit("-", 1)[1].split(".")[0]
        self.name = f"inception-{digest}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 images (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
        x = images.to(self.device).expand(-1, 3, -1, -1)  # (N, 3, H, W); grey replicated to RGB
        feats, logits = self.net(x)  # (N, 2048), (N, 1008)
        return feats.cpu(), F.softmax(logits.double(), dim=1).float().cpu()


class ResizedExtractor:
    """Another extractor, fed images resized to the size it scores (antialiased bilinear, as `data.py` resizes): a
    64-px run scored by the 32-px reference classifier (App. A.3's analogue); its reference set is made the same way.
    """

    def __init__(self, inner: FeatureExtractor, size: int):
        self.inner, self.size = inner, size
        self.name = f"{inner.name}-at{size}px"
        self.dataset_classes = getattr(inner, "dataset_classes", False)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if tuple(images.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(images.float(), size=(self.size, self.size), mode="bilinear", antialias=True)
            images = x.round().clamp(0, 255).to(torch.uint8)
        return self.inner(images)


def fit_to_size(extractor, image_size: int):
    """`extractor` for images of `image_size`: a reference classifier trained at another size scores them resized
    to its own (`ResizedExtractor`, named so, with its own cached reference statistics); others as they are."""
    own = getattr(getattr(getattr(extractor, "model", None), "config", None), "image_size", None)
    if extractor is None or own is None or own == image_size:
        return extractor
    return ResizedExtractor(extractor, own)


def build_extractor(spec: str, device: str | torch.device = "cpu", dataset: str = "fashion-mnist"):
    """An extractor from a command-line spec: "reference[:FOLDER]", "reference-resnet[:FOLDER]" (the second
    evaluator), "inception" or "inception:WEIGHTS"."""
    kind, _, path = spec.partition(":")
    if kind == "reference":
        return ReferenceExtractor.from_folder(path or default_reference_dir(dataset), device)
    if kind == "reference-resnet":  # the second, independently trained evaluator (a ResNet, seed 1)
        if not path:
            default_reference_dir(dataset)  # the shipped one is for the same datasets
        return ReferenceExtractor.from_folder(path or shipped_evaluator_dir("reference-resnet-fmnist32"), device)
    if kind == "inception":
        return InceptionExtractor(path or None, device)
    raise ValueError(
        f"unknown evaluator {spec!r}; expected reference[:FOLDER], reference-resnet[:FOLDER] or inception[:WEIGHTS]"
    )


def extract(
    extractor: FeatureExtractor, images: np.ndarray | torch.Tensor, batch_size: int = 256, progress: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features and probabilities of uint8 images, (N, H, W, C) numpy (as in sample .npz files) or (N, C, H, W)."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images (N, H, W, C), got {images.dtype} {images.shape}")
        images = torch.from_numpy(images).permute(0, 3, 1, 2)  # (N, C, H, W)
    feats, probs = [], []
    for start in tqdm(range(0, len(images), batch_size), disable=not progress, desc="features", unit="batch"):
        f, p = extractor(images[start : start + batch_size].contiguous())
        feats.append(f.double().numpy())
        if p is not None:
            probs.append(p.double().numpy())
    return np.concatenate(feats), (np.concatenate(probs) if probs else None)


# --------------------------------------------------------------------------------------------------
# Reference statistics
# --------------------------------------------------------------------------------------------------


@dataclass
class ReferenceSet:
    """Real-data statistics for FD, and the features themselves for precision/recall (None for ADM files)."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None
    source: str

    @classmethod
    def from_features(cls, features: np.ndarray, source: str) -> ReferenceSet:
        mu, sigma = feature_stats(features)
        return cls(mu, sigma, features, source)


def load_adm_stats(path: str | Path) -> ReferenceSet:
    """Published reference statistics in the ADM / guided-diffusion format: an .npz with `mu` and `sigma`.

    Such files (e.g. VIRTUAL_imagenet256_labeled.npz) make FID comparable with the papers; they carry no
    per-image features, so precision/recall cannot be computed against them.
    """
    from detok.data import npz_array, open_npz

    with open_npz(path) as f:
        if "mu" not in f or "sigma" not in f:
            raise ValueError(f"{path} is not an ADM-format statistics file: expected keys mu, sigma; has {f.files}")
        mu, sigma = npz_array(f, "mu", path).astype(np.float64), npz_array(f, "sigma", path).astype(np.float64)
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not form a Gaussian")
    return ReferenceSet(mu, sigma, None, f"adm:{Path(path).name}")


def dataset_key(data, split: str) -> str:
    """Names a dataset split and its geometry for caches, e.g. "fashion-mnist-train-32x1".

    A non-default resize mode and a given root (hashed) are part of the name: they change the images.
    """
    key = f"{data.name}-{split}-{data.image_size}x{data.channels}"
    if data.resize != "pad":
        key += f"-{data.resize}"
    if data.pad_to:
        key += f"-pad{data.pad_to}"
    if data.root:
        key += "-" + hashlib.sha256(str(Path(data.root).resolve()).encode()).hexdigest()[:8]
    return key


def reference_set(
    extractor: FeatureExtractor,
    dataset,
    key: str,
    max_images: int | None = None,
    batch_size: int = 256,
    cache: str | Path | None = None,
    progress: bool = True,
) -> ReferenceSet:
    """Features of the first `max_images` images of `dataset` (in order, no flips), cached per dataset/extractor.

    Args:
        key: names the dataset, split and geometry, e.g. "fashion-mnist-train-32x1"; the cache file is
            `<cache>/refstats/<key>-n<count>-<extractor.name>.npz`.
        cache: cache root (default `cache_dir()`).
    """
    from detok.data import iter_batches

    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    path = Path(cache or cache_dir()) / "refstats" / f"{key}-n{count}-{extractor.name}.npz"
    source = f"{key}-n{count}"
    if path.is_file():
        with np.load(path) as f:
            return ReferenceSet(f["mu"], f["sigma"], f["features"], source)
    feats = []
    for x, _ in iter_batches(dataset, batch_size, count, "reference features", progress):
        feats.append(extract(extractor, to_uint8_nchw(x), batch_size, progress=False)[0])
    ref = ReferenceSet.from_features(np.concatenate(feats), source)
    ref.features = ref.features.astype(np.float32)  # as stored, so a cached and a fresh set score alike
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, mu=ref.mu, sigma=ref.sigma, features=ref.features)
    os.replace(tmp, path)
    return ref
