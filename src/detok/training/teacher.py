"""Training of detok's own label-free teacher (teachers/mae.py), then its linear probe on the test split.

The MAE recipe (He et al., arXiv:2111.06377, App. A.1: AdamW β = (0.9, 0.95), weight decay 0.05, lr = blr · batch /
256, warm-up then cosine decay) shortened for CPUs; one loop in the shape of the tokenizer trainer's, sharing its run
set-up, checkpoints and resume (training/common.py). Resuming is running the same command again. Labels are read only
after training, by the probe, which measures the teacher and never changes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from detok import dist
from detok.checkpoint import write_json
from detok.config import PositiveInt, check_fields, to_dict
from detok.data import DataConfig, build_dataset, iter_batches
from detok.eval.latent_analysis import linear_probe
from detok.optim import EMA, lr_at, param_groups
from detok.progress import tqdm
from detok.registry import get_preset
from detok.runlog import RunLog
from detok.runtime import DivergenceGuard, augment_seed, autocast, batch_indices, compile_blocks, shard_seed
from detok.teachers.mae import MaskedAutoencoder
from detok.training.common import TrainConfig, check_batch_memory, resume, save_checkpoint, start_run

PROBE_FILE = "probe.json"


@dataclass(frozen=True)
class ProbeConfig:
    """The linear probe run after training (eval/latent_analysis.py's `linear_probe`, its default recipe) on the
    mean-pooled encoder features of the first `train_images` training and `test_images` test images."""

    train_images: PositiveInt = 5_000
    test_images: PositiveInt = 10_000
    batch_size: PositiveInt = 500

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class TeacherRunConfig:
    """Everything a teacher run needs: the preset's model config, the (label-free) training data and schedule."""

    preset: str
    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self):
        check_batch_memory(self.train, self.data)
        if (self.data.channels, self.data.image_size) != (self.model.channels, self.model.image_size):
            raise ValueError(
                f"data gives {self.data.channels}-channel {self.data.image_size}-px images, the model takes "
                f"{self.model.channels}-channel {self.model.image_size}-px ones"
            )


def default_run_config(preset: str) -> TeacherRunConfig:
    """The run recipe of a teacher preset: Fashion-MNIST's training split with flips, a short MAE schedule (64,000
    images, ~1.1 epochs, batch 64, lr 1e-3 after 10% warm-up, cosine decay).

    Cost of `mae-teacher-fmnist32`, an estimate from timed steps (not a timed full run; 2026-12-02, one thread on a
    2-core CPU that a 2-thread benchmark shared): 133–200 training images/s and ~210 images/s through the whole
    encoder, so ~5.5–8 minutes of training and ~1.2 minutes for the probe's 15,000 feature passes: at most ~9 minutes
    with one thread, less with both cores of an idle machine. A 20-step smoke run on Fashion-MNIST took the masked-patch
    loss from 0.65 to 0.53. Measured full run (the peers suite's teacher, 2026-12-02, 2 threads, the CPU partly
    shared with test runs): 655.7 s including the probe (35.9 s), linear-probe test accuracy 71.96%.
    """
    p = get_preset(preset)
    if p.kind != "teacher":
        raise ValueError(f"{preset!r} is a {p.kind} preset, not a teacher")
    model = p.make_config()
    data = DataConfig(name="fashion-mnist", image_size=model.image_size, channels=model.channels, hflip=True)
    train = TrainConfig(
        images=64_000,
        batch_size=64,
        blr=4e-3,
        warmup_frac=0.1,
        weight_decay=0.05,
        beta2=0.95,
        ema_decay=0.995,
        ckpt_every=250,
    )
    return TeacherRunConfig(preset=preset, model=model, data=data, train=train)


@torch.no_grad()
def pooled_features(model: MaskedAutoencoder, dataset, max_images: int, batch_size: int, device) -> tuple:
    """Mean-pooled encoder features (N, D) and labels (N,) of the first `max_images` images of `dataset`, in order."""
    model.eval()
    feats, labels = [], []
    for x, y in iter_batches(dataset, batch_size, max_images, progress=False):
        feats.append(model.features(x.to(device)).mean(1).float().cpu())  # (B, D)
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def probe_teacher(model: MaskedAutoencoder, data: DataConfig, probe: ProbeConfig, device, seed: int = 0) -> dict:
    """Linear-probe accuracy of the teacher's mean-pooled patch features: trained on the training split, reported on
    the test split (unflipped images)."""
    plain = dataclasses.replace(data, hflip=False)
    train, test = build_dataset(plain, "train"), build_dataset(plain, "test")
    x_train, y_train = pooled_features(model, train, probe.train_images, probe.batch_size, device)
    x_test, y_test = pooled_features(model, test, probe.test_images, probe.batch_size, device)
    result = linear_probe(x_train, y_train, x_test, y_test, seed=seed)
    return {**result, "features": "mean over the patches of the encoder's normalised features", "data": to_dict(plain)}


def train_teacher(cfg: TeacherRunConfig, run_dir: str | Path) -> Path:
    """Train (or resume) a teacher in `run_dir`, then probe it once; returns the run directory, which then holds the
    EMA model (config.json records `trained_with_labels: false`) and `probe.json`."""
    tc = cfg.train
    run_dir = Path(run_dir)
    device, shards = start_run(tc, run_dir, "teacher")
    world, rank = dist.world_size(), dist.rank()

    dataset = build_dataset(cfg.data, "train")
    torch.manual_seed(tc.seed)
    model: MaskedAutoencoder = get_preset(cfg.preset).model_cls(cfg.model).to(device)
    ema = EMA(model, tc.ema_decay, tc.ema_warmup)
    opt = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.peak_lr(), betas=(tc.beta1, tc.beta2))
    optimizers, modules = {"opt": opt}, {"model": model, "ema": ema.model}

    run = to_dict(cfg)
    step, images_seen = resume(run_dir, modules, optimizers, ema, run)
    if dist.is_main():
        write_json(run_dir / "run_config.json", {"run": run, "world_size": world, "effective_batch": tc.batch_size})

    if tc.compile:
        compile_blocks(model)
    ddp_model = DDP(model) if dist.is_distributed() else model
    total, warmup = tc.total_steps, int(tc.warmup_frac * tc.total_steps)
    record = {"preset": cfg.preset, "trained_with_labels": False, "total_steps": total}
    log = RunLog(run_dir, enabled=dist.is_main(), tensorboard=tc.tensorboard, start_step=step)
    guard = DivergenceGuard(run_dir)
    bar = tqdm(total=total, initial=step, disable=not (tc.progress and dist.is_main()), desc="teacher", unit="step")
    t_last, imgs_last = time.perf_counter(), images_seen

    model.train()
    while step < total:
        lr = lr_at(step, total, tc.peak_lr(), warmup, tc.min_lr, tc.lr_schedule)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = batch_indices(step, tc.batch_size, len(dataset), tc.seed).view(shards, -1)
        loss_sum = torch.zeros((), device=device)
        for micro in range(tc.grad_accum):
            shard = rank * tc.grad_accum + micro
            torch.manual_seed(shard_seed(tc.seed, step, shard))  # the masks: a resumed run draws the same ones
            x = dataset.get_batch(idx[shard], torch.Generator().manual_seed(augment_seed(tc.seed, step, shard)))[0]
            sync = micro == tc.grad_accum - 1
            with ddp_model.no_sync() if (not sync and ddp_model is not model) else contextlib.nullcontext():
                with autocast(device, tc.precision):
                    loss = ddp_model(x.to(device, non_blocking=True))["loss"]
                (loss / tc.grad_accum).backward()
            loss_sum += loss.detach() / tc.grad_accum

        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
        guard.check(step + 1, loss=loss_sum, grad_norm=grad_norm)  # before anything is applied
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model)
        step += 1
        images_seen += tc.batch_size
        bar.update(1)

        if step % tc.log_every == 0 or step == total:
            mean_loss = float(dist.all_reduce_mean(loss_sum))
            now = time.perf_counter()
            ips = (images_seen - imgs_last) / max(now - t_last, 1e-9)
            t_last, imgs_last = now, images_seen
            log.log(
                step, images=images_seen, lr=lr, grad_norm=float(grad_norm), img_per_s=round(ips, 2), loss=mean_loss
            )
            bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{ips:.0f}")
        if step % tc.ckpt_every == 0 or step == total:
            save_checkpoint(run_dir, tc, step, images_seen, modules, optimizers, ema, record)
    bar.close()
    log.close()

    if dist.is_main() and not (run_dir / PROBE_FILE).is_file():  # a finished run probed already is left as it is
        t0 = time.perf_counter()
        result = probe_teacher(ema.model, cfg.data, cfg.probe, device, seed=tc.seed)
        write_json(run_dir / PROBE_FILE, {**result, "seconds": round(time.perf_counter() - t0, 1)})
    dist.barrier()
    return run_dir
