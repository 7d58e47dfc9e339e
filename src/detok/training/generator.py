"""Generator training on tokenizer latents (paper App. A.2: the same recipe for every tokenizer).

The generator sees latents normalised with the tokenizer's own per-channel statistics, either read from a
latent cache (`detok latents cache`, the fast path) or encoded on the fly from images. Same conventions as
tokenizer training: resume by re-running, DDP under torchrun, EMA, JSONL log, resolved config, periodic
sample grids decoded through the tokenizer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from detok import dist
from detok.checkpoint import (
    load_model_folder,
    load_tokenizer,
    weights_digest,
    write_json,
)
from detok.config import ConfigError, NonNegativeFloat, apply_overrides, check_fields, from_dict, to_dict
from detok.data import DataConfig, build_dataset
from detok.generate import batch_generator
from detok.latents import LatentDataset
from detok.objectives.guidance import balanced_labels
from detok.optim import EMA, lr_at, param_groups
from detok.progress import tqdm
from detok.registry import get_preset
from detok.runlog import RunLog, save_grid
from detok.runtime import DivergenceGuard, augment_seed, autocast, batch_indices, compile_blocks, shard_seed
from detok.training.common import TrainConfig, check_batch_memory, resume, save_checkpoint, start_run
from detok.training.init_from import matching_state_dict


@dataclass(frozen=True)
class GeneratorRunConfig:
    """Everything a generator run needs.

    Attributes:
        model: the preset's config; `latent_channels`, `input_size` and `num_classes` are filled from the
            tokenizer and the data by `default_run_config`.
        tokenizer: tokenizer run directory or model folder (decodes preview grids; encodes on the fly).
        latents: latent cache directory; None encodes `data` through the tokenizer at every step.
        latents_in_memory: load the whole cache into RAM (fast); false reads each batch's rows from the
            memory-mapped shards (for caches larger than RAM).
        preview_cfg: guidance scale of the periodic sample grids.
        init_from: a trained generator (run directory or model folder) to start from: the same preset, the latent
            grid may differ (MAR-L 256 → 512 px, l-DeTok App. A.3): learned positions are resampled to it.
        captions: text-conditioned presets (`t2i-*`) only: the caption set of the training images (text/captions.py;
            `detok captions make`); images without a caption or in a held-out combination are not trained on.
        text_encoder: text-conditioned presets only: the frozen text encoder whose token outputs condition the model
            (text/encoders.py: `hf:FOLDER`, `detok:FOLDER` or a text-encoder preset); the caption set's embeddings are
            computed once and cached in the caption set's folder.
    """

    preset: str
    tokenizer: str
    model: Any
    latents: str | None = None
    latents_in_memory: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preview_cfg: NonNegativeFloat = 2.0
    init_from: str | None = None
    captions: str | None = None
    text_encoder: str | None = None

    def __post_init__(self):
        check_batch_memory(self.train, self.data)
        check_fields(self)
        if (self.captions is None) != (self.text_encoder is None):
            raise ValueError("captions and text_encoder come together: a caption set and the encoder of its captions")


IMAGENET_TRAIN_IMAGES = 1_281_167


def default_train_config(preset: str) -> TrainConfig:
    """The paper's generator recipe (constant lr 2e-4, no warm-up, no weight decay, EMA 0.9999), or the
    FMNIST-32 short-run recipe: minutes on 2 CPU cores need a larger rate and a faster EMA."""
    if "fmnist" in preset:
        return TrainConfig(
            images=96_000,
            batch_size=64,
            lr=1e-3,
            lr_schedule="constant",
            warmup_frac=0.0,
            weight_decay=0.0,
            grad_clip=3.0,
            ema_decay=0.999,
            ckpt_every=250,
            sample_every=10**9,
        )
    # l-DeTok App. A.2 (LightningDiT's recipe): global batch 1024, AdamW at a constant 2e-4, no warm-up, no
    # gradient clipping, no weight decay, EMA 0.9999; 100 epochs of ImageNet for the ablations (800 for the
    # system-level MAR: --set train.images=1024916800).
    return TrainConfig(
        images=100 * IMAGENET_TRAIN_IMAGES,
        batch_size=1024,
        lr=2e-4,
        lr_schedule="constant",
        warmup_frac=0.0,
        weight_decay=0.0,
        grad_clip=None,
        ema_decay=0.9999,
        ckpt_every=5_000,
        sample_every=5_000,
    )


def _tokenizer_data(tokenizer_path: str, tokenizer) -> DataConfig:
    """The tokenizer's training data (from its run_config.json), with flips on; else Fashion-MNIST geometry."""
    run_cfg = Path(tokenizer_path) / "run_config.json"
    if run_cfg.is_file():
        data = from_dict(DataConfig, json.loads(run_cfg.read_text())["run"]["data"])
        return dataclasses.replace(data, hflip=True)
    return DataConfig(image_size=tokenizer.config.image_size, channels=tokenizer.config.channels, hflip=True)


def default_run_config(
    preset: str,
    tokenizer: str,
    latents: str | None = None,
    overrides: list[str] | None = None,
    captions: str | None = None,
    text_encoder: str | None = None,
) -> GeneratorRunConfig:
    """The resolved run config: the preset's model fitted to the tokenizer's latent layout and the data's
    classes (a text-conditioned preset: to the text encoder's width and context, embedding the caption set once), the
    recipe of `default_train_config`, then `overrides` (`model.*` keys go to the model config)."""
    p = get_preset(preset)
    if p.kind != "generator":
        raise ValueError(f"{preset!r} is a {p.kind} preset, not a generator")
    text = getattr(p.model_cls, "conditioning", "class") == "text"
    if text and (captions is None or text_encoder is None):
        raise ValueError(
            f"{preset} is conditioned on text: give --captions (a caption set of the training images, `detok captions "
            "make`) and --text-encoder (hf:FOLDER, detok:FOLDER or a text-encoder preset)"
        )
    if not text and (captions is not None or text_encoder is not None):
        raise ValueError(f"{preset} is class-conditional: --captions and --text-encoder are for the t2i-* presets")
    tok = load_tokenizer(tokenizer)
    discrete_tokenizer, discrete_model = tok.latent_layout.kind == "discrete", p.model_cls.latent_kind == "discrete"
    if discrete_tokenizer != discrete_model:
        raise ValueError(
            f"{preset} models {'code indices' if discrete_model else 'continuous latents'} but tokenizer {tokenizer} "
            f"produces {'code indices (a VQ tokenizer)' if discrete_tokenizer else 'continuous latents'}: "
            + ("use a discrete AR generator (randomar-vq-*, rasterar-vq-*)" if discrete_tokenizer
               else "use a continuous generator (sit-*, mar-*, …) or a VQ tokenizer")
        )  # fmt: skip
    cfg = GeneratorRunConfig(
        preset=preset,
        tokenizer=str(tokenizer),
        model=p.make_config(),
        latents=None if latents is None else str(latents),
        data=_tokenizer_data(tokenizer, tok),
        train=default_train_config(preset),
        captions=None if captions is None else str(captions),
        text_encoder=None if text_encoder is None else str(text_encoder),
    )
    cfg = apply_overrides(cfg, overrides or [])
    if cfg.latents is not None:
        meta = LatentDataset.read_meta(cfg.latents)
        if tuple(meta["latent_shape"]) != tuple(tok.latent_shape):
            raise ValueError(
                f"latent cache {cfg.latents} holds latents of shape {tuple(meta['latent_shape'])} but the "
                f"tokenizer {tokenizer} produces {tuple(tok.latent_shape)}: re-cache with this tokenizer"
            )
        num_classes = meta["num_classes"]
    else:
        num_classes = build_dataset(cfg.data, "train").num_classes
    c, size = tok.latent_layout.generator_input
    channels = {"codebook_size" if discrete_model else "latent_channels": c}
    layout = {**channels, "input_size": size}
    made_by = {key: f"tokenizer {tokenizer} produces" for key in layout}
    if text:
        count = meta["count"] if cfg.latents is not None else None
        layout.update(_text_layout(cfg, count))
        made_by.update(text_dim=f"text encoder {text_encoder} gives", text_len=f"text encoder {text_encoder} gives")
    for key, value in layout.items():  # the tokenizer decides these: a different override would be silently lost
        given = next((o.split("=", 1)[1] for o in overrides or [] if o.strip().startswith(f"model.{key}=")), None)
        if given is not None and getattr(cfg.model, key) != value:
            source = "text encoder" if key.startswith("text_") else "tokenizer"
            shape = tuple(tok.latent_shape)
            shape = "" if key.startswith("text_") else f" ({tok.latent_layout.kind} latents of shape {shape})"
            raise ValueError(
                f"model.{key}={given.strip()} but {made_by[key]} {key} {value}{shape}: the layout comes from the "
                + source
            )
    try:
        model = dataclasses.replace(cfg.model, **layout, **({} if text else {"num_classes": num_classes}))
    except ConfigError as e:  # a setting that does not fit the tokenizer's layout, named as the user would type it
        raise e.within("model.") from None
    return dataclasses.replace(cfg, model=model)


def _text_layout(cfg: GeneratorRunConfig, count: int | None) -> dict[str, int]:
    """The text encoder's width and context (text_dim, text_len), after embedding the caption set once (cached), and
    checking that the caption set describes the training images (the first `count`, or the whole training split)."""
    from detok.text.captions import CaptionSet
    from detok.text.encoders import caption_embeddings, load_text_encoder

    captions = CaptionSet.load(cfg.captions)
    data = captions.data
    if (data.get("name"), data.get("root")) != (cfg.data.name, cfg.data.root):
        raise ValueError(
            f"caption set {cfg.captions} describes {data.get('name')} images (root {data.get('root')}), the run trains "
            f"on {cfg.data.name} (root {cfg.data.root}): make the captions from the run's data"
        )
    if "train" not in captions.ids:
        raise ValueError(f"caption set {cfg.captions} has no captions of the training split")
    have = len(captions.ids["train"])
    need = count if count is not None else len(build_dataset(cfg.data, "train"))
    if have < need:
        raise ValueError(f"caption set {cfg.captions} captions {have} training images, the run trains on {need}")
    tokens = caption_embeddings(captions, cfg.captions, load_text_encoder(cfg.text_encoder))  # (M, L, D)
    return {"text_dim": tokens.shape[2], "text_len": tokens.shape[1]}


class _TrainingCaptions:
    """The caption tokens of the training images: one of each image's captions per step, drawn from the batch's
    augmentation stream. Only images with a caption and outside the held-out combinations (`pool`) are drawn."""

    def __init__(self, cfg: GeneratorRunConfig, count: int):
        from detok.text.captions import CaptionSet
        from detok.text.encoders import caption_embeddings, load_text_encoder

        captions = CaptionSet.load(cfg.captions)
        self.tokens = caption_embeddings(captions, cfg.captions, load_text_encoder(cfg.text_encoder))  # (M, L, D)
        self.ids = torch.from_numpy(captions.ids["train"][:count]).long()  # (N, K), -1 = none
        self.pool = torch.from_numpy(captions.trainable("train", count))  # (P,) image indices
        if not len(self.pool):
            raise ValueError(f"caption set {cfg.captions} has no trainable caption among the first {count} images")

    def draw(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Caption tokens (B, L, D) for training images `rows` (B,): one of each image's captions at random."""
        choices = self.ids[rows]  # (B, K)
        k = (torch.rand(len(rows), generator=generator) * (choices >= 0).sum(1)).long()  # (B,)
        return self.tokens[choices[torch.arange(len(rows)), k]]

    def preview(self, num: int) -> torch.Tensor:
        """The first caption of the first `num` trainable images: (num, L, D)."""
        rows = self.pool[:num]
        return self.tokens[self.ids[rows, 0]]


class _OnTheFlyLatents:
    """Images encoded through the tokenizer at every step (normalised with its statistics)."""

    def __init__(self, data: DataConfig, tokenizer, device: torch.device, normalize: bool = True):
        self.dataset = build_dataset(data, "train")
        self.tokenizer, self.device, self.normalize = tokenizer, device, normalize

    def __len__(self) -> int:
        return len(self.dataset)

    def get_batch(self, indices: torch.Tensor, generator: torch.Generator | None = None):
        x, y = self.dataset.get_batch(indices, generator)  # flips drawn from `generator`
        return self.tokenizer.encode(x.to(self.device), normalize=self.normalize), y  # (B, *latent_shape)


def train_generator(cfg: GeneratorRunConfig, run_dir: str | Path) -> Path:
    """Train (or resume) a generator in `run_dir`; returns the run directory, which then holds the EMA model."""
    tc = cfg.train
    run_dir = Path(run_dir)
    device, shards = start_run(tc, run_dir, "generator")
    world, rank = dist.world_size(), dist.rank()

    tokenizer = load_tokenizer(cfg.tokenizer, device)
    layout = tokenizer.latent_layout  # generators take (N, C, *input_size): a 1-D sequence is transposed
    normalize = layout.kind != "discrete"  # continuous latents train normalised; code indices as they are
    if normalize and tokenizer.config.latent_mean is None:
        raise RuntimeError(
            f"tokenizer {cfg.tokenizer} has no latent statistics; run `detok tokenizer stats {cfg.tokenizer}` first "
            "(generators train on latents normalised with the tokenizer's own statistics)"
        )
    if cfg.latents is not None:
        dataset = LatentDataset(cfg.latents, normalize=normalize, in_memory=cfg.latents_in_memory)
        if normalize and dataset.meta["latent_mean"] != list(tokenizer.config.latent_mean):
            raise ValueError(
                f"latent cache {cfg.latents} was normalised with other statistics than tokenizer {cfg.tokenizer} "
                "has now (stats recomputed after caching?): re-run `detok latents cache`"
            )
        made_by, digest = LatentDataset.tokenizer_digest(cfg.latents), weights_digest(tokenizer)
        if made_by is not None and made_by != digest:
            raise ValueError(
                f"latent cache {cfg.latents} was made by other tokenizer weights than {cfg.tokenizer}'s (digest "
                f"{made_by}, the tokenizer's {digest}): cache the latents of this tokenizer, or "
                "train with the tokenizer that made the cache"
            )
    else:
        dataset = _OnTheFlyLatents(cfg.data, tokenizer, device, normalize)

    preset = get_preset(cfg.preset)
    captions = _TrainingCaptions(cfg, len(dataset)) if cfg.captions is not None else None
    torch.manual_seed(tc.seed)
    model = preset.model_cls(cfg.model).to(device)
    if cfg.init_from:
        model.load_state_dict(matching_state_dict(load_model_folder(cfg.init_from), model, cfg.init_from, "input_size"))
    ema = EMA(model, tc.ema_decay, tc.ema_warmup)
    opt = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.peak_lr(), betas=(tc.beta1, tc.beta2))
    modules, optimizers = {"model": model, "ema": ema.model}, {"opt": opt}

    run = to_dict(cfg)
    step, images_seen = resume(run_dir, modules, optimizers, ema, run)
    num_params = sum(p.numel() for p in model.parameters())
    record = {"run": run, "world_size": world, "effective_batch": tc.batch_size, "parameters": num_params}
    if dist.is_main():
        write_json(run_dir / "run_config.json", record)
    trainable = "" if captions is None else f", {len(captions.pool)} of them with a caption outside the held-out set"
    dist.print0(f"{cfg.preset}: {num_params / 1e6:.2f}M parameters, {len(dataset)} training latents{trainable}")

    if tc.compile:
        compile_blocks(model)
    ddp_model = DDP(model) if dist.is_distributed() else model
    total, warmup = tc.total_steps, int(tc.warmup_frac * tc.total_steps)
    log = RunLog(run_dir, enabled=dist.is_main(), tensorboard=tc.tensorboard, start_step=step)
    guard = DivergenceGuard(run_dir)
    bar = tqdm(total=total, initial=step, disable=not (tc.progress and dist.is_main()), desc="generator", unit="step")
    t_last, imgs_last = time.perf_counter(), images_seen

    model.train()
    while step < total:
        lr = lr_at(step, total, tc.peak_lr(), warmup, tc.min_lr, tc.lr_schedule)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = batch_indices(step, tc.batch_size, len(dataset if captions is None else captions.pool), tc.seed)
        idx = idx.view(shards, -1)
        loss_sum = torch.zeros((), device=device)
        for micro in range(tc.grad_accum):
            shard = rank * tc.grad_accum + micro
            rows = idx[shard] if captions is None else captions.pool[idx[shard]]  # (B,) image indices
            gen = torch.Generator().manual_seed(augment_seed(tc.seed, step, shard))
            z, y = dataset.get_batch(rows, gen)
            y = y if captions is None else captions.draw(rows, gen)  # labels (B,) or caption tokens (B, L, D)
            z, y = layout.to_generator(z.to(device, non_blocking=True)), y.to(device, non_blocking=True)
            torch.manual_seed(shard_seed(tc.seed, step, shard))  # noise, timesteps, masks, label dropout
            sync = micro == tc.grad_accum - 1
            with ddp_model.no_sync() if (not sync and ddp_model is not model) else contextlib.nullcontext():
                with autocast(device, tc.precision):
                    loss = ddp_model(z, y).float()
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
            loss_mean = float(dist.all_reduce_mean(loss_sum))
            now = time.perf_counter()
            ips = (images_seen - imgs_last) / max(now - t_last, 1e-9)
            t_last, imgs_last = now, images_seen
            log.log(
                step,
                images=images_seen,
                lr=lr,
                loss=round(loss_mean, 6),
                grad_norm=float(grad_norm),
                img_per_s=round(ips, 2),
            )
            bar.set_postfix(loss=f"{loss_mean:.4f}", img_s=f"{ips:.0f}")
        if dist.is_main() and (step % tc.sample_every == 0 or step == total):
            _preview(ema.model, tokenizer, cfg, run_dir / "samples" / f"step-{step:08d}.png", device, captions)
        if step % tc.ckpt_every == 0 or step == total:
            extra = {"preset": cfg.preset, "tokenizer": cfg.tokenizer}
            if captions is not None:  # what `detok generator sample --captions` encodes new captions with
                extra.update(text_encoder=cfg.text_encoder, captions=cfg.captions)
            save_checkpoint(run_dir, tc, step, images_seen, modules, optimizers, ema, extra)
    bar.close()
    log.close()
    return run_dir


@torch.no_grad()
def _preview(model, tokenizer, cfg: GeneratorRunConfig, path: Path, device: torch.device, captions=None) -> None:
    """Two EMA samples for each of the first (up to) 8 classes (a text-conditioned model: one for each of the first
    16 training captions), decoded through the tokenizer into a PNG grid."""
    if captions is not None:
        cond, nrow = captions.preview(16).to(device), 8
    else:
        k = model.config.num_classes
        cond, nrow = balanced_labels(2 * min(k, 8), min(k, 8), device), min(k, 8)
    z = model.sample(cond, cfg_scale=cfg.preview_cfg, generator=batch_generator(cfg.train.seed, 0, device))
    save_grid(tokenizer.decode_generated(z), path, nrow=nrow)
