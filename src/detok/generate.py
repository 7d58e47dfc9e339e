"""Turning a trained generator and its tokenizer into images: class-balanced, seeded, batched sampling."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from detok import dist
from detok.checkpoint import weights_digest
from detok.memory import check_fits
from detok.objectives.guidance import balanced_labels, check_interval
from detok.progress import tqdm
from detok.runlog import save_grid, to_uint8

# Config fields that change how a trained generator samples, not what it was trained to do.
SAMPLING_FIELDS = frozenset(
    {
        "sample_steps",
        "sampler",
        "shift",
        "sde_diffusion_norm",
        "sde_last_step",
        "num_iter",
        "cfg_schedule",
        "cfg_channels",
        "cfg_interval",
        "kv_cache",
        "clip_denoised",
    }
)


def with_sampling_settings(model: torch.nn.Module, overrides: list[str]) -> torch.nn.Module:
    """The same weights under changed sampling settings, e.g. ["flow.sample_steps=10"] ("model." is optional).

    Only `SAMPLING_FIELDS` may change (at any nesting: `diffloss.sample_steps`). Anything else — a noise schedule,
    `train_steps`, a time scale, a width — would run the weights under a process they were not trained for (or not
    load them), and raises.
    """
    if not overrides:
        return model
    from detok.config import apply_overrides

    overrides = [o.removeprefix("model.") for o in overrides]
    keys = [o.split("=", 1)[0] for o in overrides]
    trained = [k for k in keys if k.rsplit(".", 1)[-1] not in SAMPLING_FIELDS]
    if trained:
        raise ValueError(
            f"not a sampling setting: {', '.join(trained)}; a trained generator can change only "
            f"{', '.join(sorted(SAMPLING_FIELDS))}"
        )

    cfg = apply_overrides(model.config, overrides)
    device = next(model.parameters()).device
    rebuilt = type(model)(cfg).to(device).eval()
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt


def batch_generator(seed: int, batch: int, device: torch.device) -> torch.Generator:
    """The random stream of sampling batch `batch` under `seed` (so a batch's samples do not depend on the others)."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + batch)


@torch.no_grad()
def sample_images(
    generator_model: torch.nn.Module,
    tokenizer: torch.nn.Module,
    num: int,
    cfg_scale: float = 1.0,
    cfg_interval: tuple[float, float] | None = None,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    labels: torch.Tensor | None = None,
    progress: bool = True,
    first_batch: int = 0,
    text: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample `num` images with class-balanced labels (or the given `labels`); a text-conditioned generator
    (`conditioning == "text"`) from `text`, the token embeddings (num, L, D) of each sample's caption, with `labels`
    then naming each sample's caption (default 0…num−1).

    The generator produces normalised latents; the tokenizer decodes them with its own statistics.
    `cfg_interval` None keeps the model's own default (LightningDiT presets carry the paper's interval).
    Batch b draws from `batch_generator(seed, first_batch + b)`, so a run split into pieces (`sample_to_file`)
    gives the same images as one call.

    Returns:
        images as uint8 (num, H, W, C) and labels as int64 (num,).
    """
    if num <= 0:
        raise ValueError(f"the number of samples must be positive, got {num}")
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    interval = {} if cfg_interval is None else {"cfg_interval": check_interval(cfg_interval)}
    device = next(generator_model.parameters()).device
    if is_text_conditioned(generator_model):
        if text is None or len(text) != num:
            raise ValueError(f"a text-conditioned generator needs caption tokens for each of the {num} samples")
        labels = (torch.arange(num) if labels is None else labels).to(torch.long)
        conditions = text
    else:
        if text is not None:
            raise ValueError(f"{type(generator_model).__name__} is class-conditional: it takes labels, not text")
        num_classes = generator_model.config.num_classes
        if labels is None:
            labels = balanced_labels(num, num_classes)
        labels = labels.to(torch.long)
        if len(labels) != num or labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"labels must be {num} class indices in [0, {num_classes})")
        conditions = labels
    generator_model.eval()
    tokenizer.eval()
    images = []
    starts = range(0, num, batch_size)
    for b, start in enumerate(tqdm(starts, disable=not progress, desc="sampling", unit="batch")):
        y = conditions[start : start + batch_size].to(device)  # labels (B,) or caption tokens (B, L, D)
        z = generator_model.sample(
            y,
            cfg_scale=cfg_scale,
            temperature=temperature,
            generator=batch_generator(seed, first_batch + b, device),
            **interval,
        )  # (B, C, *input_size) normalised latents, or (B, *input_size) code indices
        images.append(to_uint8(tokenizer.decode_generated(z)))
    return np.concatenate(images), labels.cpu().numpy()


def is_text_conditioned(model: torch.nn.Module) -> bool:
    """Whether a generator takes caption tokens (the T2I generators) rather than class labels."""
    return getattr(model, "conditioning", "class") == "text"


def conditions_digest(text: torch.Tensor, labels: torch.Tensor) -> str:
    """A digest of the caption tokens and caption ids that condition a set of samples."""
    h = hashlib.blake2b(digest_size=16)
    for t in (text.detach().float().cpu().contiguous(), labels.detach().long().cpu().contiguous()):
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def sampling_record(
    generator_model: torch.nn.Module, tokenizer: torch.nn.Module, num: int, batch_size: int, seed: int, **kwargs
) -> dict:
    """What decides a set of samples: the `sample_images` arguments, the generator's config (its sampling settings
    included) and a digest of both models' weights."""
    from detok.config import to_dict

    return {
        "num": num,
        "batch_size": batch_size,
        "seed": seed,
        "sampling": kwargs,
        "config": to_dict(generator_model.config),
        "weights": weights_digest(generator_model, tokenizer),
    }


def sample_to_file(
    path: str | Path,
    generator_model: torch.nn.Module,
    tokenizer: torch.nn.Module,
    num: int,
    batch_size: int = 64,
    seed: int = 0,
    chunk_batches: int = 8,
    progress: bool = True,
    text: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    captions: list[str] | None = None,
    **kwargs,
) -> tuple[np.ndarray, np.ndarray]:
    """`sample_images` into `save_samples(path, …)`, resumable: every `chunk_batches` batches are kept in
    `<path>.partK.npz` until the whole set is written, so an interrupted run continues where it stopped.

    The result equals one `sample_images` call with the same arguments (class-balanced labels, per-batch seeds).
    `kwargs` go to `sample_images` (cfg_scale, cfg_interval, temperature). Each part records what made it (the
    arguments, the generator's config and both models' weights): a part left by a run with other settings is
    refused, never mixed in.

    A text-conditioned generator samples from `text` (num, L, D), the caption tokens of each sample, `labels` (num,)
    naming each sample's caption in the list `captions` (stored in the .npz with the images).

    Under torchrun each process samples its share, the parts K ≡ rank (mod world size), with the labels and batch
    seeds of the whole set, so the parts are those a single process makes; rank 0 then joins them into `path` (the
    folder must be shared by all processes). Parts do not depend on the number of processes: a run may be resumed
    with another.

    Returns:
        the images and labels this process sampled, in order: the whole set in a single process, the positions
        `share_indices(num, batch_size * chunk_batches, rank, world)` of it under torchrun.
    """
    path = npz_path(path)
    if batch_size <= 0 or chunk_batches <= 0:
        raise ValueError(f"batch_size and chunk_batches must be positive, got {batch_size}, {chunk_batches}")
    chunk = batch_size * chunk_batches
    size, channels = tokenizer.config.image_size, tokenizer.config.channels
    # the whole set is held twice at the end (the parts and their concatenation), as uint8, with int64 labels
    check_fits(2 * num * (size * size * channels + 8), f"num={num}", f"{num} samples of {size}×{size}×{channels}")
    made_by = sampling_record(generator_model, tokenizer, num, batch_size, seed, **kwargs)
    if is_text_conditioned(generator_model):
        if text is None:
            raise ValueError("a text-conditioned generator samples from captions: give their tokens (`detok eval t2i`)")
        labels = torch.arange(num) if labels is None else labels.to(torch.long)
        made_by["conditions"] = conditions_digest(text, labels)
    else:
        labels = balanced_labels(num, generator_model.config.num_classes)
    settings = json.dumps({**made_by, "chunk_batches": chunk_batches}, sort_keys=True, default=str)
    parts = [path.with_name(f"{path.stem}.part{k}.npz") for k in range(-(-num // chunk))]
    mine = {}
    for k in range(dist.rank(), len(parts), dist.world_size()):
        start = k * chunk
        if parts[k].is_file():
            mine[k] = _read_part(parts[k], settings, path)
            continue
        mine[k], _ = sample_images(
            generator_model,
            tokenizer,
            min(chunk, num - start),
            batch_size=batch_size,
            seed=seed,
            labels=labels[start : start + chunk],
            progress=progress and dist.is_main(),
            first_batch=start // batch_size,
            text=None if text is None else text[start : start + chunk],
            **kwargs,
        )
        parts[k].parent.mkdir(parents=True, exist_ok=True)
        tmp = parts[k].with_name(parts[k].stem + ".tmp.npz")
        np.savez(tmp, images=mine[k], settings=np.array(settings))
        tmp.replace(parts[k])  # a part exists only once complete
    dist.barrier()
    if dist.is_main():
        images = np.concatenate(
            [mine[k] if k in mine else _read_part(part, settings, path) for k, part in enumerate(parts)]
        )
        made = json.dumps(made_by, sort_keys=True, default=str)
        save_samples(path, images, labels.numpy(), made_by=made, captions=captions)
        del images
        for part in parts:
            part.unlink()
    dist.barrier()
    share = share_indices(num, chunk, dist.rank(), dist.world_size())
    if not mine:  # more processes than parts
        return np.zeros((0, size, size, channels), dtype=np.uint8), labels.numpy()[share]
    return np.concatenate([mine[k] for k in sorted(mine)]), labels.numpy()[share]


def share_indices(num: int, chunk: int, rank: int, world: int) -> np.ndarray:
    """Positions, in a set of `num` samples cut into parts of `chunk`, of the parts K ≡ `rank` (mod `world`)."""
    starts = range(rank * chunk, num, world * chunk)
    return np.concatenate([np.arange(s, min(s + chunk, num)) for s in starts] or [np.zeros(0, dtype=np.int64)])


def _read_part(part: Path, settings: str, path: Path) -> np.ndarray:
    """The images of a kept part, after checking it was made with `settings`."""
    with np.load(part) as f:
        if "settings" not in f.files or str(f["settings"]) != settings:
            raise ValueError(
                f"{part} was sampled with other settings or models than this run; delete "
                f"{path.stem}.part*.npz in {path.parent} to sample again"
            )
        return f["images"]


def npz_path(path: str | Path) -> Path:
    """`path` ending in .npz: appended, never replacing what looks like a suffix ("samples-cfg1.5" stays whole)."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


GRID_MIN_SIDE = 96  # pixels per image in sample grids: small images are enlarged to be judged by eye


def save_samples(
    path: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    grid_per_class: int = 10,
    made_by: str | None = None,
    captions: list[str] | None = None,
) -> Path:
    """Write samples as an .npz ("images" uint8 (N, H, W, C), "labels") and a PNG grid beside it.

    The grid has one row per class (at most 16 classes, `grid_per_class` images each), each image enlarged by an
    integer factor to at least GRID_MIN_SIDE pixels (32-px images ×3). `made_by` (the JSON of a `sampling_record`)
    is stored as "made_by" so that a later run can tell whether the file is its own. With `captions` (samples of a
    text-conditioned generator) `labels` name each image's caption in that list: they are stored as "caption_index"
    beside "captions", not as class labels, and the grid shows the first images in order, `grid_per_class` a row.
    """
    path = npz_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if made_by is None else {"made_by": np.array(made_by)}
    if captions is not None:
        np.savez(path, images=images, caption_index=labels, captions=np.array(captions, dtype=str), **extra)
        grid = torch.from_numpy(images[: grid_per_class * 10]).permute(0, 3, 1, 2).float() / 127.5 - 1
        scale = -(-GRID_MIN_SIDE // images.shape[1])
        save_grid(grid, path.with_suffix(".png"), nrow=min(grid_per_class, len(grid)), scale=scale)
        return path
    np.savez(path, images=images, labels=labels, **extra)
    rows = []
    for c in np.unique(labels)[:16]:
        idx = np.flatnonzero(labels == c)[:grid_per_class]
        row = images[idx]
        if len(row) < grid_per_class:  # pad short rows with white so the grid stays rectangular
            row = np.concatenate([row, np.full((grid_per_class - len(row), *row.shape[1:]), 255, np.uint8)])
        rows.append(row)
    grid = torch.from_numpy(np.concatenate(rows)).permute(0, 3, 1, 2).float() / 127.5 - 1
    save_grid(grid, path.with_suffix(".png"), nrow=grid_per_class, scale=-(-GRID_MIN_SIDE // images.shape[1]))
    return path
