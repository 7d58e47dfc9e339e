"""Pieces every training loop shares: the optimisation config, run set-up, checkpoints and resume."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from detok import dist
from detok.checkpoint import (
    CheckpointError,
    checkpoints_newest_first,
    load_training_state,
    save_model_folder,
    save_training_state,
)
from detok.config import (
    Fraction,
    FractionBelowOne,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    check_fields,
)
from detok.memory import check_fits
from detok.optim import EMA
from detok.runfolder import check_run_kind, claim_run_folder
from detok.runtime import TrainingDivergedError, resolve_device, set_threads


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping of a training run.

    Progress is counted in images: `images` is the budget, `batch_size` the global (effective) batch over
    all processes and accumulation steps. lr = blr · batch_size / 256, unless `lr` gives it directly
    (the generators' recipe states an absolute rate). `grad_clip` None trains without clipping (the paper's
    generator recipe); the gradient norm is still measured, logged and checked for divergence.
    """

    images: PositiveInt = 60_000
    batch_size: PositiveInt = 64
    grad_accum: PositiveInt = 1
    blr: PositiveFloat = 1e-4
    lr: PositiveFloat | None = None
    min_lr: NonNegativeFloat = 0.0
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_frac: Fraction = 0.25
    weight_decay: NonNegativeFloat = 1e-4
    beta1: FractionBelowOne = 0.9
    beta2: FractionBelowOne = 0.95
    grad_clip: PositiveFloat | None = 3.0
    ema_decay: FractionBelowOne = 0.999
    ema_warmup: bool = True
    seed: NonNegativeInt = 0
    threads: NonNegativeInt = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    log_every: PositiveInt = 20
    ckpt_every: PositiveInt = 500
    sample_every: PositiveInt = 500
    keep_checkpoints: PositiveInt = 2
    tensorboard: bool = False
    progress: bool = True

    def __post_init__(self):
        check_fields(self)

    @property
    def total_steps(self) -> int:
        return -(-self.images // self.batch_size)

    @property
    def clip_norm(self) -> float:
        """The max_norm for `clip_grad_norm_`: inf measures the norm without clipping."""
        return math.inf if self.grad_clip is None else self.grad_clip

    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else self.blr * self.batch_size / 256


def check_batch_memory(tc: TrainConfig, data) -> None:
    """Refuse a batch whose images alone exceed the machine's memory, before anything is allocated (so `--dry-run`
    finds it): the estimate is one float32 copy of a process-step's images with their int64 indices,
    batch_size / grad_accum × (C·H·W·4 + 8) bytes, a lower bound on what a step holds (activations take many times it).
    `data` is the run's `DataConfig`."""
    per_step = tc.batch_size / tc.grad_accum
    shape = f"{data.channels}×{data.image_size}×{data.image_size}"
    what = f"a step's {per_step:.0f} images of {shape} in float32 alone"
    check_fits(per_step * (data.channels * data.image_size**2 * 4 + 8), f"train.batch_size={tc.batch_size}", what)


def start_run(tc: TrainConfig, run_dir: Path, kind: str) -> tuple[torch.device, int]:
    """Pick the device, join the process group, set threads and claim `run_dir` for a run of `kind` (created if new,
    refused if it holds another kind of run or model, or another live process writes there: `detok.runfolder`).

    Returns:
        the device and the number of data shards per step (processes × accumulation steps).
    """
    device = resolve_device(tc.device)
    dist.init(device)
    set_threads(tc.threads)
    shards = dist.world_size() * tc.grad_accum
    if tc.batch_size % shards:
        raise ValueError(f"batch_size {tc.batch_size} is not divisible by processes × grad_accum = {shards}")
    if dist.is_main():
        claim_run_folder(run_dir, kind)
    else:
        check_run_kind(run_dir, kind)
    dist.barrier()
    return device, shards


# Settings a resumed run may change: how the same optimisation is executed and reported, not what it computes.
# (grad_accum splits the same global batch; the data order and per-image seeds depend on the global step only, not on
# the number of loader workers. Skipping unreadable files may be switched on to continue a run that stopped at one:
# every step before it read only readable files.)
RESUMABLE_CHANGES = frozenset(
    [f"train.{name}"
     for name in (
         "threads", "device", "precision", "compile", "grad_accum", "progress", "log_every", "ckpt_every",
         "sample_every", "keep_checkpoints", "tensorboard",
     )]
    + [f"data.{name}" for name in ("workers", "prefetch", "verify", "skip_bad_files")]
)  # fmt: skip


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_same_run(run_dir: Path, run: dict) -> None:
    """Refuse to continue `run_dir`'s checkpoints under settings other than those it was trained with.

    `run` is the new run's config as a dict; the old one is the "run" of `run_dir/run_config.json`. Only the
    keys in RESUMABLE_CHANGES may differ: a new learning rate, batch size, budget, data set or model would
    otherwise continue silently from a state made under the old ones (the cosine schedule alone depends on
    train.images).
    """
    record = run_dir / "run_config.json"
    if not record.exists():  # a checkpoint copied without its record: nothing to compare with
        return
    old = _flatten(json.loads(record.read_text())["run"])
    new = _flatten(json.loads(json.dumps(run)))  # tuples → lists, as the record has them
    # A key the record lacks is a setting added to detok since the run started; its default keeps the old behaviour.
    changed = sorted(k for k in new.keys() if k in old and old[k] != new[k] and k not in RESUMABLE_CHANGES)
    changed += sorted(k for k in old.keys() - new.keys())
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in changed)
        raise ValueError(
            f"{run_dir} holds checkpoints of a run with other settings ({diffs}); resuming would continue its state "
            "under the new ones. Train into a new run directory, or rerun with the recorded settings "
            f"({record})"
        )


def resume(
    run_dir: Path,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    ema: EMA,
    run: dict,
) -> tuple[int, int]:
    """Restore the newest intact checkpoint in `run_dir` (if any); returns (step, images seen).

    `run` is the new run's config as a dict: a checkpoint made under other settings is refused (`check_same_run`).
    A damaged checkpoint (truncated file, foreign content) is skipped with a message saying why, and the next older
    one is tried. Per-step records written after the restored step (log lines, preview images) are removed, so the
    resumed run's records equal an uninterrupted run's.
    """
    ckpts = checkpoints_newest_first(run_dir)
    step, images_seen = 0, 0
    if ckpts:
        check_same_run(run_dir, run)
    skipped = []
    for ckpt in ckpts:
        try:
            meta = load_training_state(ckpt, modules, optimizers)
        except CheckpointError as e:
            skipped.append(str(e))
            dist.print0(f"skipping damaged checkpoint {ckpt.name}: {e}")
            continue
        ema.updates = meta["ema_updates"]
        step, images_seen = meta["step"], meta["images_seen"]
        dist.print0(f"resumed from {ckpt} (step {step}, {images_seen} images)")
        break
    else:
        if skipped:
            raise CheckpointError(
                f"no intact checkpoint in {run_dir / 'checkpoints'} ({'; '.join(skipped)}); move the folder away to "
                "start over"
            )
    if dist.is_main():
        truncate_records(run_dir, step)
    dist.barrier()
    return step, images_seen


def truncate_records(run_dir: Path, step: int) -> None:
    """Drop what a killed run recorded after `step`: log.jsonl lines and `samples/step-*.png` beyond it."""
    log = run_dir / "log.jsonl"
    if log.exists():
        kept = [line for line in log.read_text().splitlines(keepends=True) if _record_step(line) <= step]
        tmp = log.with_name(".log.jsonl.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, log)
    for png in (run_dir / "samples").glob("step-*.png"):
        if png.stem[len("step-") :].isdigit() and int(png.stem[len("step-") :]) > step:
            png.unlink()


def _record_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):  # a line cut short by a kill: not a record
        return math.inf


class SkippedFiles:
    """Unreadable image files replaced under `data.skip_bad_files`, gathered from every rank.

    Each file is listed once in the run's log, as a record {"step", "skipped_file", "error"} at the step whose batch
    met it first, and counted: `flush` returns {"skipped_files": files listed so far} for the metric records. A
    resumed run counts on from the records its (truncated) log already holds, so its log equals an uninterrupted
    run's as long as `flush` is called at the same steps — at every log step and before every checkpoint.
    """

    def __init__(self, enabled: bool, run_dir: Path):
        from detok.runlog import read_log

        self.enabled = enabled
        self.pending: list[tuple[int, str, str]] = []
        self.listed = {r["skipped_file"] for r in read_log(run_dir) if "skipped_file" in r} if enabled else set()

    def add(self, step: int, skipped: list[tuple[str, str]]) -> None:
        """Note the (file, reason) pairs replaced in the batch of 1-based `step`."""
        self.pending += [(step, path, reason) for path, reason in skipped]

    def flush(self, log) -> dict:
        """Log the files met since the last flush (a collective: every rank calls it at the same steps)."""
        if not self.enabled:
            return {}
        gathered = dist.gather_object(self.pending)
        self.pending = []
        for step, path, reason in sorted(entry for part in gathered or [] for entry in part):
            if path not in self.listed:
                self.listed.add(path)
                log.log(step, skipped_file=path, error=reason)
                dist.print0(f"step {step}: skipped unreadable image {path} ({reason})")
        return {"skipped_files": len(self.listed)}


def check_finite_weights(modules: dict[str, torch.nn.Module], step: int) -> None:
    """Refuse to save a module holding NaN or ±inf weights (the divergence guard should have stopped it first)."""
    for name, module in modules.items():
        for key, t in module.state_dict().items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise TrainingDivergedError(
                    f"{name} weight {key} is not finite at step {step}: not saved; the newest checkpoint is intact"
                )


def save_checkpoint(
    run_dir: Path,
    tc: TrainConfig,
    step: int,
    images_seen: int,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    ema: EMA,
    extra: dict,
) -> None:
    """Write the training state and the EMA model folder (rank 0), then wait for every rank."""
    check_finite_weights(modules, step)
    if dist.is_main():
        meta = {"step": step, "images_seen": images_seen, "ema_updates": ema.updates}
        save_training_state(run_dir, step, modules, optimizers, meta, tc.keep_checkpoints)
        save_model_folder(run_dir, ema.model, {**extra, "step": step})
    dist.barrier()
