"""Batches for training and caching in the loop's own deterministic order; image folders decoded ahead by workers.

A loop says what it needs as a sequence of `BatchPlan`s — the dataset indices of one batch and the seed of its flips —
computed from the global step alone (`runtime.batch_indices`, `runtime.augment_seed`). `image_batches` turns plans
into batches: in-memory datasets index their tensors in the calling process (their fast path); an image folder with
`data.workers` > 0 hands the plans, in order, to a `torch.utils.data.DataLoader` whose worker processes decode,
preprocess and flip whole batches ahead of the loop (`data.prefetch` each), into pinned memory on CUDA.

The plans and their order do not depend on the number of workers (nor does anything a worker draws: a batch's flips
come from its plan's seed), so the batches are the same with and without workers, and a run resumed at step s asks
for the plans from step s on: after a resume it sees the images an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from detok.imagefolder import ImageFolderDataset, UnreadableImageError
from detok.runtime import augment_seed, batch_indices

# (images float32 (B, C, H, W) in [-1, 1] on the device, labels (B,) int64 on the CPU, replaced unreadable files as
# (path, reason) pairs)
Batch = tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]


class BatchPlan(NamedTuple):
    """One batch to load: dataset indices (B,) and the seed of its flips (None: the dataset's default stream)."""

    indices: torch.Tensor
    seed: int | None = None


class DataWorkerError(RuntimeError):
    """A data-loading worker process died (killed for memory, a crash in a decoder); the message says what to do."""


def training_plans(
    start_step: int,
    total_steps: int,
    batch_size: int,
    dataset_len: int,
    seed: int,
    rank: int,
    grad_accum: int,
    shards: int,
) -> Iterator[BatchPlan]:
    """The plans of training steps `start_step` … `total_steps - 1` for this rank, one per accumulation slice.

    Global batch `step` is `batch_indices(step, …)` cut into `shards` (processes × `grad_accum`) equal parts; this
    rank's slice `micro` is shard `rank * grad_accum + micro`, flipped from `augment_seed(seed, step, shard)`: the
    split of the training loops, so the plans equal the batches of a loop that indexes the dataset itself.
    """
    for step in range(start_step, total_steps):
        idx = batch_indices(step, batch_size, dataset_len, seed).view(shards, -1)  # (shards, B / shards)
        for micro in range(grad_accum):
            shard = rank * grad_accum + micro
            yield BatchPlan(idx[shard], augment_seed(seed, step, shard))


def image_batches(
    dataset,
    plans: Iterable[BatchPlan],
    device: torch.device | str = "cpu",
    workers: int = 0,
    prefetch: int = 2,
) -> Iterator[Batch]:
    """Yield the batch of each plan, in order: images in [-1, 1] on `device`, labels, replaced files.

    `workers` > 0 decodes an `ImageFolderDataset` in that many worker processes; other datasets are in memory and
    always index in this process. An unreadable image raises `UnreadableImageError` (naming the file) when its
    batch is reached — not earlier, however far ahead the workers are — unless the dataset skips such files.
    """
    device = torch.device(device)
    if not isinstance(dataset, ImageFolderDataset):
        for plan in plans:
            x, y = dataset.get_batch(plan.indices, _generator(plan.seed))
            yield x.to(device, non_blocking=True), y, []
        return
    if workers == 0:
        for plan in plans:
            x, y, skipped = dataset.load_batch(plan.indices, _generator(plan.seed))
            yield _to_unit(x, device), y, skipped
        return
    loader = DataLoader(
        _PlannedBatches(dataset),
        batch_size=None,  # each item is a whole batch, decoded by one worker
        sampler=_Plans(plans),
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=device.type == "cuda",
        prefetch_factor=prefetch,
        # one pass over the plans spans the whole run, so the workers already live as long as it does (what
        # persistent_workers would give across epochs); they stop when this generator ends or is closed
        persistent_workers=False,
        # the DataLoader draws its workers' base seed when iteration starts; from the global stream that draw would
        # shift the model's random numbers of the first step (nothing in a worker is random: flips come from plans)
        generator=torch.Generator().manual_seed(0),
    )
    batches = iter(loader)
    try:
        while True:
            try:
                x, y, skipped, error = next(batches)
            except StopIteration:
                return
            except RuntimeError as e:
                if "exited unexpectedly" not in str(e) and "killed by signal" not in str(e):
                    raise  # an exception inside a worker: the DataLoader re-raises it with the worker's traceback
                first = str(e).strip().splitlines()[0]
                raise DataWorkerError(
                    f"a data-loading worker process stopped ({first}); the run cannot continue. Rerun the same "
                    "command to resume from the newest checkpoint; if the worker was killed for memory (the kernel's "
                    "OOM killer, see dmesg), lower data.workers or data.prefetch"
                ) from None
            if error is not None:
                raise UnreadableImageError(*error)
            yield _to_unit(x, device), y, skipped
    finally:
        del batches  # shuts the workers down now (after an error too), not when the loader is collected


def _to_unit(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, C, H, W) → float32 in [-1, 1] on `device` (moved as uint8: a quarter of the bytes)."""
    return images.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(seed)


def _as_is(batch):
    return batch


class _Plans(Sampler):
    """The plans as the DataLoader's keys: (indices as a tuple, seed), cheap to send to a worker."""

    def __init__(self, plans: Iterable[BatchPlan]):
        self.plans = plans

    def __iter__(self):
        return ((tuple(p.indices.tolist()), p.seed) for p in self.plans)


class _PlannedBatches(Dataset):
    """An image folder addressed by plan: item (indices, seed) is that whole batch, decoded and flipped, as uint8.

    An unreadable image comes back as the error itself, raised by `image_batches` when the loop reaches its batch:
    raised here, the DataLoader would wrap it in a multi-line message with the worker's traceback.
    """

    def __init__(self, dataset: ImageFolderDataset):
        self.dataset = dataset

    def __getitem__(self, key):
        indices, seed = key
        try:
            x, y, skipped = self.dataset.load_batch(torch.tensor(indices, dtype=torch.int64), _generator(seed))
        except UnreadableImageError as e:
            return None, None, [], (e.path, e.reason)
        return x, y, skipped, None
