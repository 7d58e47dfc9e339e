"""Caption sets: the captions of a dataset's images, and captions made offline from measured attributes.

A caption set is a folder: `caption_set.json` (the distinct caption strings, the data they describe, and the recipe
that made them, if any) and one `<split>.npz` per split with `caption_ids` (N, K) — the K captions of each image in the
dataset's own order, -1 where an image has fewer — and, for made captions, `combos` (N, 1 + A) and `held_out` (N,).
COCO-style data with human captions becomes a caption set through `CaptionSet.from_lists`; its images are those of the
dataset in its order (an image folder's sorted file order).

Offline captions for small grey-scale datasets (Fashion-MNIST-32, the issue's analogue of MS-COCO): each image gets
its class and three attributes measured on its pixels, each cut into levels at per-class quantiles of the training
split, and K captions phrased from several templates and synonyms. A held-out set of (class, levels) combinations is
never captioned for training (the generator and the text encoder skip those images), so that evaluation can tell
seen from unseen combinations. Every measurement is invariant to a horizontal flip, so flipped training images keep
their captions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detok.checkpoint import write_json

CAPTION_SET_FILE = "caption_set.json"
INK = 25  # grey level (of 255) above which a pixel belongs to the object; Fashion-MNIST's background is 0


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------


def grey_images(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W), (N, H, W, C) or (N, C, H, W) with C ∈ {1, 3} as float32 grey levels (N, H, W)."""
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)  # (N, H, W, C)
    if x.ndim == 4:
        x = x[..., 0] if x.shape[-1] == 1 else x[..., :3] @ np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma
    if x.ndim != 3:
        raise ValueError(f"expected images (N, H, W[, C]), got shape {np.asarray(images).shape}")
    return x.astype(np.float32)


def measure(images: np.ndarray) -> dict[str, np.ndarray]:
    """The attributes of each image (N,), computed on its object, the pixels brighter than INK:

    - brightness: the mean grey level of the object's pixels;
    - width: the mean number of object pixels per row that has any (how wide the item is, row by row);
    - texture: the mean absolute grey-level difference between horizontally or vertically adjacent object pixels
      (prints, stripes and seams raise it; a plain surface keeps it low).

    An image without object pixels measures 0 on each.
    """
    x = grey_images(images)  # (N, H, W)
    ink = x > INK
    count = ink.sum((1, 2))
    brightness = (x * ink).sum((1, 2)) / np.maximum(count, 1)
    width = count / np.maximum(ink.any(2).sum(1), 1)
    pairs_h = ink[:, :, 1:] & ink[:, :, :-1]
    pairs_v = ink[:, 1:, :] & ink[:, :-1, :]
    diff = (np.abs(np.diff(x, axis=2)) * pairs_h).sum((1, 2)) + (np.abs(np.diff(x, axis=1)) * pairs_v).sum((1, 2))
    texture = diff / np.maximum(pairs_h.sum((1, 2)) + pairs_v.sum((1, 2)), 1)
    return {"brightness": brightness, "width": width, "texture": texture}


@dataclass(frozen=True)
class Attribute:
    """A measured attribute: the measurement it reads, its levels (low to high) and the phrasings of each level."""

    name: str
    measurement: str
    levels: tuple[str, ...]
    phrases: tuple[tuple[str, ...], ...]


# Levels are cut at per-class quantiles of the training split: terciles for brightness and width, the median for
# texture, so each level holds about the same share of every class and "wide" means wide for its kind of garment.
ATTRIBUTES = (
    Attribute("brightness", "brightness", ("dark", "medium", "bright"),
              (("dark", "dim", "shadowy"), ("mid-toned", "medium-bright", "greyish"), ("bright", "light", "pale"))),
    Attribute("width", "width", ("narrow", "regular", "wide"),
              (("narrow", "slim", "thin"), ("regular-width", "average-width", "medium-width"),
               ("wide", "broad", "roomy"))),
    Attribute("pattern", "texture", ("plain", "patterned"),
              (("plain", "smooth", "uniform"), ("patterned", "textured", "detailed"))),
)  # fmt: skip

# Synonyms of the Fashion-MNIST class names; other datasets use their class names, lower-cased.
CLASS_PHRASES = {
    "T-shirt/top": ("t-shirt", "top", "tee"),
    "Trouser": ("trousers", "pants"),
    "Pullover": ("pullover", "sweater", "jumper"),
    "Dress": ("dress", "frock"),
    "Coat": ("coat", "jacket"),
    "Sandal": ("sandal",),
    "Shirt": ("shirt", "blouse"),
    "Sneaker": ("sneaker", "trainer"),
    "Bag": ("bag", "handbag"),
    "Ankle boot": ("ankle boot", "boot"),
}

# Attribute slots in three word orders, so that a text encoder must bind each word wherever it stands.
TEMPLATES = (
    "a {brightness} {width} {pattern} {cls}",
    "a {pattern} {cls}, {brightness} and {width}",
    "a photo of a {width} {cls} that is {brightness} and {pattern}",
)


# --------------------------------------------------------------------------------------------------
# The recipe: cut points, held-out combinations, phrasing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionRecipe:
    """How captions were made, as plain data (saved in the caption set).

    Attributes:
        class_phrases: the words that may name each class.
        cuts: per class, per attribute, the cut points between its levels (len(levels) − 1 values).
        held_out: (class, level, level, level) combinations whose images are never captioned for training.
        per_image: captions per image (K); each draws a template and a phrasing of every word.
        seed: the draws of phrasings and of the held-out combinations.
    """

    class_phrases: tuple[tuple[str, ...], ...]
    cuts: tuple[tuple[tuple[float, ...], ...], ...]
    held_out: tuple[tuple[int, ...], ...]
    per_image: int
    seed: int

    def levels(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """The combination (class, attribute levels...) of each image (N, 1 + A), measured with the cut points of the
        given class (a generated image is measured against the class its caption names)."""
        classes = np.asarray(classes, dtype=np.int64)
        values = measure(images)
        out = np.zeros((len(classes), 1 + len(ATTRIBUTES)), dtype=np.int64)
        out[:, 0] = classes
        for a, attr in enumerate(ATTRIBUTES):
            cuts = np.asarray([per_class[a] for per_class in self.cuts])[classes]  # (N, levels − 1)
            out[:, 1 + a] = (values[attr.measurement][:, None] > cuts).sum(1)
        return out

    def is_held_out(self, combos: np.ndarray) -> np.ndarray:
        """Whether each combination (N, 1 + A) is one of the held-out ones: (N,) bool."""
        held = {tuple(c) for c in self.held_out}
        return np.array([tuple(int(v) for v in c) in held for c in combos], dtype=bool)

    def phrase(self, combo: np.ndarray, rng: np.random.Generator) -> str:
        """One caption of a combination: a random template, a random phrasing of the class and of each level."""
        words = {"cls": _choice(self.class_phrases[int(combo[0])], rng)}
        for a, attr in enumerate(ATTRIBUTES):
            words[attr.name] = _choice(attr.phrases[int(combo[1 + a])], rng)
        return _choice(TEMPLATES, rng).format(**words)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CaptionRecipe:
        return cls(
            class_phrases=tuple(tuple(p) for p in d["class_phrases"]),
            cuts=tuple(tuple(tuple(float(v) for v in a) for a in c) for c in d["cuts"]),
            held_out=tuple(tuple(int(v) for v in h) for h in d["held_out"]),
            per_image=int(d["per_image"]),
            seed=int(d["seed"]),
        )


def _choice(options: tuple, rng: np.random.Generator):
    return options[int(rng.integers(len(options)))]


def fit_recipe(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    held_out_per_class: int = 2,
    per_image: int = 4,
    seed: int = 0,
) -> CaptionRecipe:
    """Cut points from the training images (per class: terciles of brightness and width, the median of texture) and
    the held-out combinations: `held_out_per_class` of each class's level combinations, drawn so that each combination
    of levels is held out for at most ⌈classes · held_out_per_class / combinations⌉ classes and stays seen with the
    others (unseen pairings of seen words, not unseen words)."""
    labels = np.asarray(labels)
    values = measure(images)
    cuts = []
    for c in range(len(class_names)):
        mine = labels == c if (labels == c).any() else np.ones(len(labels), dtype=bool)  # an empty class: all images
        per_attr = []
        for attr in ATTRIBUTES:
            q = np.linspace(0, 100, len(attr.levels) + 1)[1:-1]
            per_attr.append(tuple(float(v) for v in np.percentile(values[attr.measurement][mine], q)))
        cuts.append(tuple(per_attr))
    level_combos = [tuple(int(v) for v in combo) for combo in np.ndindex(*(len(a.levels) for a in ATTRIBUTES))]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(level_combos))
    held = []
    for c in range(len(class_names)):  # class c holds out the next slots of one shuffled cycle of combinations
        for k in range(held_out_per_class):
            held.append((c, *level_combos[order[(c * held_out_per_class + k) % len(level_combos)]]))
    phrases = tuple(CLASS_PHRASES.get(name, (name.lower(),)) for name in class_names)
    return CaptionRecipe(phrases, tuple(cuts), tuple(held), per_image, seed)


# --------------------------------------------------------------------------------------------------
# Caption sets
# --------------------------------------------------------------------------------------------------


@dataclass
class CaptionSet:
    """Distinct captions and, per split, the ids of each image's captions (N, K) (-1: none); made captions also have
    each image's combination (N, 1 + A) and whether it is held out (N,)."""

    captions: list[str]
    ids: dict[str, np.ndarray]
    combos: dict[str, np.ndarray]
    held_out: dict[str, np.ndarray]
    data: dict
    recipe: CaptionRecipe | None = None

    @property
    def digest(self) -> str:
        """Names the caption strings (keys the embedding cache)."""
        return hashlib.sha256("\n".join(self.captions).encode()).hexdigest()[:12]

    def trainable(self, split: str = "train", count: int | None = None) -> np.ndarray:
        """Indices of the first `count` images of `split` that have a caption and are not held out."""
        ids = self.ids[split][:count]
        ok = (ids >= 0).any(1)
        if split in self.held_out:
            ok &= ~self.held_out[split][:count]
        return np.flatnonzero(ok)

    @classmethod
    def from_lists(cls, splits: dict[str, list[list[str]]], data: dict) -> CaptionSet:
        """A caption set from each split's per-image caption lists (COCO: ~5 per image), in the dataset's order."""
        index: dict[str, int] = {}
        ids = {}
        for split, per_image in splits.items():
            k = max((len(c) for c in per_image), default=0)
            arr = np.full((len(per_image), max(k, 1)), -1, dtype=np.int32)
            for i, caps in enumerate(per_image):
                for j, cap in enumerate(caps):
                    arr[i, j] = index.setdefault(cap, len(index))
            ids[split] = arr
        return cls(list(index), ids, {}, {}, data)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for split, ids in self.ids.items():
            arrays = {"caption_ids": ids}
            if split in self.combos:
                arrays.update(combos=self.combos[split], held_out=self.held_out[split])
            tmp = folder / f".{split}.tmp.npz"
            np.savez(tmp, **arrays)
            tmp.replace(folder / f"{split}.npz")
        record = {"format": 1, "captions": self.captions, "splits": sorted(self.ids), "data": self.data}
        record["recipe"] = None if self.recipe is None else self.recipe.to_dict()
        write_json(folder / CAPTION_SET_FILE, record)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> CaptionSet:
        folder = Path(folder)
        path = folder / CAPTION_SET_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} is not a caption set ({CAPTION_SET_FILE} missing); make one with `detok captions make`"
            )
        record = json.loads(path.read_text())
        ids, combos, held = {}, {}, {}
        for split in record["splits"]:
            with np.load(folder / f"{split}.npz") as f:
                ids[split] = f["caption_ids"]
                if "combos" in f.files:
                    combos[split], held[split] = f["combos"], f["held_out"]
        recipe = None if record.get("recipe") is None else CaptionRecipe.from_dict(record["recipe"])
        return cls(record["captions"], ids, combos, held, record["data"], recipe)


def make_attribute_captions(data, per_image: int = 4, held_out_per_class: int = 2, seed: int = 0) -> CaptionSet:
    """Captions of the train and test splits of an in-memory dataset (Fashion-MNIST, CIFAR-10, .npz) from each image's
    class and measured attributes, with the cut points and held-out combinations fitted on the training split.

    Test images in held-out combinations are captioned too (evaluation samples from them); training images in
    held-out combinations are captioned as well but marked, and `CaptionSet.trainable` leaves them out.
    """
    from detok.config import to_dict
    from detok.data import build_dataset

    plain = dataclasses.replace(data, hflip=False)
    splits = {s: build_dataset(plain, s) for s in ("train", "test")}
    for ds in splits.values():
        if getattr(ds, "images", None) is None or len(ds.images) != len(ds):
            raise ValueError(
                f"attribute captions need the images in memory (fashion-mnist, cifar10, npz); {data.name} is read "
                "file by file: write a caption set of your own captions with CaptionSet.from_lists"
            )
    train = splits["train"]
    recipe = fit_recipe(train.images.numpy(), train.labels.numpy(), train.class_names, held_out_per_class, per_image,
                        seed)  # fmt: skip
    index: dict[str, int] = {}
    ids, combos, held = {}, {}, {}
    for s, (split, ds) in enumerate(splits.items()):
        combos[split] = recipe.levels(ds.images.numpy(), ds.labels.numpy())
        held[split] = recipe.is_held_out(combos[split])
        rng = np.random.default_rng([seed, s])
        ids[split] = np.array(
            [[index.setdefault(recipe.phrase(c, rng), len(index)) for _ in range(per_image)] for c in combos[split]],
            dtype=np.int32,
        ).reshape(len(ds), per_image)
    return CaptionSet(list(index), ids, combos, held, to_dict(plain), recipe)


def default_captions_dir() -> Path:
    """Where the Fashion-MNIST-32 attribute captions of the default recipe are cached (made on first use)."""
    from detok.eval.features import cache_dir

    return cache_dir() / "captions" / "fashion-mnist-32"


def default_captions() -> Path:
    """The default Fashion-MNIST-32 caption set (`make_attribute_captions` with its defaults), made once and cached."""
    from detok.data import DataConfig

    folder = default_captions_dir()
    if not (folder / CAPTION_SET_FILE).is_file():
        make_attribute_captions(DataConfig(name="fashion-mnist")).save(folder)
    return folder


def describe(captions: CaptionSet) -> dict:
    """Counts of a caption set: images, captions, held-out shares, and the recipe's held-out combinations."""
    out: dict = {"captions": len(captions.captions)}
    for split, ids in captions.ids.items():
        out[split] = {"images": len(ids), "per_image": int(ids.shape[1])}
        if split in captions.held_out:
            out[split]["held_out_images"] = int(captions.held_out[split].sum())
    if captions.recipe is not None:
        out["held_out_combinations"] = [list(h) for h in captions.recipe.held_out]
        out["attributes"] = {a.name: list(a.levels) for a in ATTRIBUTES}
    return out
