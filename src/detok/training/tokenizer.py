"""Tokenizer training (l-DeTok recipe, paper App. A.1) and decoder fine-tuning on clean latents (App. A.3).

One loop for every tokenizer family: it speaks to the model through the tokenizer interface (`tokenizers/base.py`)
and to the loss through `losses/tokenizer.py` (MSE + weighted auxiliary terms + LPIPS + hinge GAN). Resuming is
running the same command again: the newest checkpoint in the run directory is loaded and the data order continues.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from detok import dist
from detok.checkpoint import (
    checkpoints_newest_first,
    load_model_folder,
    read_model_config,
    read_weights,
    write_json,
)
from detok.config import apply_overrides, to_dict
from detok.data import DataConfig, build_dataset
from detok.loader import image_batches, training_plans
from detok.losses.tokenizer import LossConfig, TokenizerLoss
from detok.optim import EMA, lr_at, param_groups
from detok.progress import tqdm
from detok.registry import get_preset
from detok.runlog import RunLog, save_grid
from detok.runtime import DivergenceGuard, autocast, compile_blocks, shard_seed
from detok.tokenizers.base import Tokenizer
from detok.training.common import SkippedFiles, TrainConfig, check_batch_memory, resume, save_checkpoint, start_run
from detok.training.init_from import matching_state_dict


@dataclass(frozen=True)
class TokenizerRunConfig:
    """Everything a tokenizer run needs. `model` is the preset's own config (its type depends on the family);
    `decoder_finetune` freezes the encoder of `init_from` and trains the decoder on clean latents (App. A.3: masking,
    noise and posterior sampling off), unless `finetune_corruption` keeps the model's own training corruption, so
    that the run differs from full fine-tuning in what is frozen only."""

    preset: str
    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    decoder_finetune: bool = False
    finetune_corruption: bool = False
    init_from: str | None = None
    continue_gan: bool = False

    def __post_init__(self):
        check_batch_memory(self.train, self.data)
        if self.data.channels != self.model.channels:
            raise ValueError(f"data.channels={self.data.channels} but the model expects {self.model.channels}")
        if self.data.image_size != self.model.image_size:
            raise ValueError(f"data.image_size={self.data.image_size} but the model expects {self.model.image_size}")
        if self.decoder_finetune and not self.init_from:
            raise ValueError("decoder_finetune=true needs init_from=<trained tokenizer run or folder>")
        if self.continue_gan and not (self.init_from and self.loss.gan_weight > 0):
            raise ValueError("continue_gan=true needs init_from=<the previous run> and loss.gan_weight > 0")
        if self.finetune_corruption and not self.decoder_finetune:
            raise ValueError("finetune_corruption=true applies to decoder_finetune=true runs only (others corrupt)")
        required = getattr(self.model, "requires_init_from", None)  # a stage that continues another (AlignTok)
        if required and not self.init_from:
            raise ValueError(required)
        self.loss.check_image_size(self.model.image_size)  # before any training


def default_run_config(preset: str, overrides: list[str] | tuple[str, ...] = ()) -> TokenizerRunConfig:
    """The run recipe for a tokenizer preset with `overrides` applied: FMNIST-32 presets train on Fashion-MNIST
    without LPIPS; a paper-size preset gets its family's recipe for the model the overrides make (AlignTok's stage
    decides its length and learning rate), the overrides winning over it."""
    p = get_preset(preset)
    if p.kind != "tokenizer":
        raise ValueError(f"{preset!r} is a {p.kind} preset, not a tokenizer")
    if resolution_base(preset) is not None:
        base = _resolution_run_config(preset, default_run_config(resolution_base(preset)))
        return apply_overrides(base, list(overrides))
    model = p.make_config()
    data = DataConfig(name="fashion-mnist", image_size=model.image_size, channels=model.channels, resize="pad")
    loss, train = LossConfig(), TrainConfig()
    if "fmnist" in preset:
        # LPIPS-VGG needs downloaded ImageNet weights and is meaningless on 32 px greyscale; GAN off keeps the
        # 15-minute demo stable. Both are one --set away. The schedule fits ~9 minutes on 2 CPU cores: at the
        # paper's blr (1e-4, i.e. lr 2.5e-5 at batch 64) a 6,400-image probe reached 15.4 dB test PSNR, at
        # blr 4e-3 16.7 dB, so short runs use the larger rate, 10% warm-up and a faster EMA.
        loss = LossConfig(perceptual_weight=0.0, gan_weight=0.0)
        train = TrainConfig(
            images=40_000, batch_size=64, blr=4e-3, warmup_frac=0.1, ema_decay=0.995, ckpt_every=100, sample_every=100
        )
    else:
        data = DataConfig(
            name="image-folder",
            image_size=model.image_size,
            channels=model.channels,
            resize="adm-center-crop",
            hflip=True,
        )
        train, loss = paper_recipe(PAPER_SETTINGS.get(preset.removesuffix("-tiny"), "ablation"))
        if preset.endswith("-tiny"):  # test twins train offline: LPIPS needs downloaded VGG16 weights
            loss = dataclasses.replace(loss, perceptual_weight=0.0)
    cfg = TokenizerRunConfig(preset=preset, model=model, data=data, train=train, loss=loss)
    if "fmnist" not in preset:
        model = apply_overrides(cfg.model, [o[6:] for o in overrides if o.startswith("model.")], "model.")
        return apply_overrides(cfg, [*p.model_cls.recipe_for(model), *overrides])  # validated once, at the end
    return apply_overrides(cfg, list(overrides))


IMAGENET_TRAIN_IMAGES = 1_281_167
# Which of the paper's two tokenizer settings a paper preset trains with (App. A.1): the ablations use S-B, the
# final experiments B-B; the other sizes (and the CNN, 1-D and VQ families, App. A.5–A.7) use the ablation recipe.
PAPER_SETTINGS = {"detok-bb": "final", "detok-ll": "final", "detok-bb-distill": "final"}  # A.4: "+Extended"


def paper_recipe(setting: str) -> tuple[TrainConfig, LossConfig]:
    """The l-DeTok paper's tokenizer recipe (App. A.1) for `setting` "ablation" or "final".

    Both: global batch 1024, peak lr 4e-4 (1e-4 per 256, linear scaling), linear warm-up for 25% of training, then
    cosine decay; AdamW (0.9, 0.95), weight decay 1e-4; horizontal flips; λ_KL 1e-6, λ_percep 1.0, λ_GAN 0.1;
    the perceptual term VGG- and ConvNeXt-based (LPIPS mixed with 0.1 ConvNeXt-S, losses/convnext.py).
    Ablation (S-B): 50 epochs, GAN off. Final (B-B): 200 epochs, GAN from epoch 100 (half of training).
    """
    if setting not in ("ablation", "final"):
        raise ValueError(f"unknown paper setting {setting!r}; known: ablation, final")
    epochs = 50 if setting == "ablation" else 200
    train = TrainConfig(
        images=epochs * IMAGENET_TRAIN_IMAGES,
        batch_size=1024,
        blr=1e-4,
        lr_schedule="cosine",
        warmup_frac=0.25,
        weight_decay=1e-4,
        beta1=0.9,
        beta2=0.95,
        ckpt_every=2_000,
        sample_every=2_000,
    )
    loss = LossConfig(kl_weight=1e-6, perceptual_weight=1.0, convnext_weight=0.1, gan_weight=0.0)
    if setting == "ablation":
        return train, loss
    return train, dataclasses.replace(loss, gan_weight=0.1, gan_start_frac=0.5)


# App. A.3: presets fine-tuned from a trained tokenizer at twice its image size (their runs need init_from), by the
# preset they start from. ImageNet 256 → 512 as the paper; the FMNIST analogue 32 → 64 keeps p = 4, so the token grid
# grows from 8×8 to 16×16 as the paper's (p = 16) from 16×16 to 32×32.
RESOLUTION_FINETUNES = {"detok-bb-512": "detok-bb", "detok-fmnist64": "detok-fmnist32"}


def resolution_base(preset: str) -> str | None:
    """The preset a resolution fine-tuning preset starts from (a tiny twin from the tiny twin); None for others."""
    name = preset.removesuffix("-tiny")
    return None if name not in RESOLUTION_FINETUNES else RESOLUTION_FINETUNES[name] + preset[len(name) :]


def _resolution_run_config(preset: str, base: TokenizerRunConfig) -> TokenizerRunConfig:
    """App. A.3's recipe at `preset`'s image size, from `base`, the run config of the preset it starts from: "we
    halve the learning rate to 2.0e-4 and fine-tune [from the 200-epoch checkpoints] for an additional 25 epochs,
    enabling GAN loss from the start" — half the base's peak lr, 1/8 of its images (25 epochs for detok-bb), the GAN
    from step 0 (λ 0.1, the final recipe's, where the base trains without one) with a fresh discriminator; all else,
    warm-up included, as the base's (the paper states no other change). The images keep the base's framing:
    Fashion-MNIST is padded to the base's 32 px, then resized."""
    model = get_preset(preset).make_config()
    pad_to = base.data.image_size if base.data.resize == "pad" else None
    lr = None if base.train.lr is None else base.train.lr / 2
    return dataclasses.replace(
        base,
        preset=preset,
        model=model,
        data=dataclasses.replace(base.data, image_size=model.image_size, pad_to=pad_to),
        train=dataclasses.replace(base.train, images=base.train.images // 8, blr=base.train.blr / 2, lr=lr),
        loss=dataclasses.replace(
            base.loss, gan_weight=base.loss.gan_weight or 0.1, gan_start_step=0, gan_start_frac=None
        ),
    )


def _init_weights(folder: str, model: Tokenizer) -> dict[str, torch.Tensor]:
    """Weights of the tokenizer in `folder` for `model`: the architecture must match but for the image size, at
    which learned grid position embeddings are resampled (App. A.3's fine-tuning to 512 px; `init_from.py`)."""
    source_model = load_model_folder(folder)
    state = matching_state_dict(source_model, model, folder, "image_size")
    model.check_init_source(source_model)
    return state


def _previous_discriminator(run: str) -> dict[str, torch.Tensor]:
    """The discriminator of the newest training checkpoint in the run folder `run` (`continue_gan`: AlignTok keeps
    its GAN "active throughout the second and third stages", App. A, rather than starting a fresh one)."""
    ckpts = checkpoints_newest_first(run)
    if not ckpts or not (ckpts[0] / "disc.safetensors").is_file():
        raise ValueError(
            f"continue_gan=true: {run} holds no training checkpoint with a discriminator (init_from must be the "
            "previous stage's run folder, trained with loss.gan_weight > 0)"
        )
    return read_weights(ckpts[0] / "disc.safetensors")


def train_tokenizer(cfg: TokenizerRunConfig, run_dir: str | Path) -> Path:
    """Train (or resume) a tokenizer in `run_dir`; returns the run directory, which then holds the EMA model."""
    tc, lc = cfg.train, cfg.loss
    run_dir = Path(run_dir)
    device, shards = start_run(tc, run_dir, "tokenizer")
    world, rank = dist.world_size(), dist.rank()

    dataset = build_dataset(cfg.data, "train")
    torch.manual_seed(tc.seed)
    model_cfg = cfg.model
    if resolution_base(cfg.preset) is not None and not cfg.init_from:
        raise ValueError(
            f"{cfg.preset} fine-tunes a trained {resolution_base(cfg.preset)} tokenizer at {model_cfg.image_size} px "
            f"(App. A.3): set init_from=<a {resolution_base(cfg.preset)} run>"
        )
    source = read_model_config(cfg.init_from)[1] if cfg.decoder_finetune else None
    if source is not None and source.image_size == model_cfg.image_size:  # the frozen encoder's statistics hold
        model_cfg = dataclasses.replace(model_cfg, latent_mean=source.latent_mean, latent_std=source.latent_std)
    model: Tokenizer = get_preset(cfg.preset).model_cls(model_cfg).to(device)
    if cfg.init_from:
        model.load_state_dict(_init_weights(cfg.init_from, model))
    if cfg.decoder_finetune:
        for p in model.decoder_finetune_frozen():
            p.requires_grad_(False)
    # built before resuming: a teacher made from this model's own weights (AlignTok's stage-1 latents) must hold
    # the init_from weights, not a resumed checkpoint's
    teachers = [] if cfg.decoder_finetune else [t.to(device) for t in model.build_teachers()]
    ema = EMA(model, tc.ema_decay, tc.ema_warmup)
    opt = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.peak_lr(), betas=(tc.beta1, tc.beta2))
    optimizers, modules = {"opt": opt}, {"model": model, "ema": ema.model}
    criterion = TokenizerLoss(lc, cfg.model.channels, tc.total_steps).to(device)
    disc = criterion.disc
    if disc is not None:
        opt_d = torch.optim.AdamW(
            disc.parameters(),
            lr=tc.peak_lr() * lc.disc_lr_mult,
            betas=(tc.beta1, tc.beta2),
            weight_decay=tc.weight_decay,
        )
        optimizers["opt_d"], modules["disc"] = opt_d, disc
        if cfg.continue_gan:  # before resuming: a resumed run's own checkpoint then holds the newer discriminator
            disc.load_state_dict(_previous_discriminator(cfg.init_from))

    run = to_dict(cfg)
    step, images_seen = resume(run_dir, modules, optimizers, ema, run)
    run_record = {"run": run, "world_size": world, "effective_batch": tc.batch_size}
    if dist.is_main():
        write_json(run_dir / "run_config.json", run_record)

    if tc.compile:
        compile_blocks(model)
    ddp_model = DDP(model, find_unused_parameters=True) if dist.is_distributed() else model
    ddp_disc = DDP(disc) if (disc is not None and dist.is_distributed()) else disc
    total, warmup = tc.total_steps, int(tc.warmup_frac * tc.total_steps)
    last_layer, encoder_layer = model.last_decoder_layer(), model.last_encoder_layer()
    log = RunLog(run_dir, enabled=dist.is_main(), tensorboard=tc.tensorboard, start_step=step)
    guard = DivergenceGuard(run_dir)
    preview = dataset.get_batch(torch.arange(min(16, len(dataset))))[0].to(device)
    bar = tqdm(total=total, initial=step, disable=not (tc.progress and dist.is_main()), desc="tokenizer", unit="step")
    t_last, imgs_last = time.perf_counter(), images_seen
    corruption = getattr(cfg.model, "corruption", None)
    clean = cfg.decoder_finetune and not cfg.finetune_corruption  # App. A.3's decoder fine-tuning on clean latents
    epoch_steps = len(dataset) / tc.batch_size  # a corruption warm-up in epochs (the 1-D tokenizers', App. A.6)
    # the steps' batches in order from `step` on (a resumed run continues the order), decoded ahead by workers if set
    plans = training_plans(step, total, tc.batch_size, len(dataset), tc.seed, rank, tc.grad_accum, shards)
    batches = image_batches(dataset, plans, device, cfg.data.workers, cfg.data.prefetch)
    skips, data_wait = SkippedFiles(cfg.data.skip_bad_files, run_dir), 0.0

    model.train()
    while step < total:
        lr = lr_at(step, total, tc.peak_lr(), warmup, tc.min_lr, tc.lr_schedule)
        for group in opt.param_groups:
            group["lr"] = lr
        if disc is not None:
            for group in opt_d.param_groups:
                group["lr"] = lr * lc.disc_lr_mult
        gan_on = criterion.gan_active(step)
        corrupt = not clean and (corruption is None or corruption.active(step, total, epoch_steps))
        ratio_rng = torch.Generator().manual_seed(shard_seed(tc.seed, step, -1))
        ratio = model.mask_ratio_at(step, total, ratio_rng, clean)
        stats: dict[str, torch.Tensor] = {}
        for micro in range(tc.grad_accum):
            shard = rank * tc.grad_accum + micro
            torch.manual_seed(shard_seed(tc.seed, step, shard))
            t_wait = time.perf_counter()
            x, _, skipped = next(batches)  # (B, C, H, W) on the device: this rank's slice `micro` of the step
            data_wait += time.perf_counter() - t_wait
            skips.add(step + 1, skipped)
            sync = micro == tc.grad_accum - 1
            with ddp_model.no_sync() if (not sync and ddp_model is not model) else contextlib.nullcontext():
                extra = {"teacher_features": [t(x) for t in teachers]} if teachers else {}
                with autocast(device, tc.precision):
                    out = ddp_model(x, corrupt=corrupt, mask_ratio=ratio, sample_posterior=not clean, **extra)
                loss, terms = criterion.generator_loss(x, out, step, last_layer, encoder_layer)
                (loss / tc.grad_accum).backward()
            d_loss = loss.new_zeros(())
            if gan_on:
                d_loss = criterion.discriminator_loss(x, out["recon"].float(), ddp_disc)
                (d_loss / tc.grad_accum).backward()
            for name, value in {"loss": loss, **terms, "gan_d": d_loss, **out.get("logs", {})}.items():
                stats[name] = stats.get(name, 0) + value.detach() / tc.grad_accum

        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
        guard.check(step + 1, grad_norm=grad_norm, **stats)  # before anything is applied
        opt.step()
        opt.zero_grad(set_to_none=True)
        if gan_on:
            opt_d.step()
        if disc is not None:
            opt_d.zero_grad(set_to_none=True)
        ema.update(model)
        step += 1
        images_seen += tc.batch_size
        bar.update(1)

        skipped_count = (
            skips.flush(log) if step % tc.log_every == 0 or step % tc.ckpt_every == 0 or step == total else {}
        )
        if step % tc.log_every == 0 or step == total:
            means = dist.all_reduce_mean(torch.stack(list(stats.values()))).tolist()
            now = time.perf_counter()
            ips = (images_seen - imgs_last) / max(now - t_last, 1e-9)
            wait_frac, data_wait = data_wait / max(now - t_last, 1e-9), 0.0
            t_last, imgs_last = now, images_seen
            log.log(
                step,
                images=images_seen,
                lr=lr,
                grad_norm=float(grad_norm),
                img_per_s=round(ips, 2),
                data_wait=round(wait_frac, 4),  # share of the interval's wall time spent waiting for batches
                **skipped_count,
                mask_ratio=float(out["mask_ratio"]) if "mask_ratio" in out else 0.0,  # as the forward applied it
                **{k: round(v, 6) for k, v in zip(stats, means)},
                # PSNR of the training batch's reconstructions (from the mean MSE, images in [-1, 1]): the curve on
                # which 1-D tokenizers show their "grokking" jump (l-DeTok Fig. A.3)
                psnr=round(10 * math.log10(4.0 / max(means[list(stats).index("mse")], 1e-12)), 4),
            )
            bar.set_postfix(loss=f"{means[0]:.4f}", img_s=f"{ips:.0f}")
        if dist.is_main() and (step % tc.sample_every == 0 or step == total):
            with torch.no_grad():
                recon = ema.model.decode(ema.model.encode(preview))
            save_grid(torch.cat([preview, recon]), run_dir / "samples" / f"step-{step:08d}.png", nrow=len(preview))
        if step % tc.ckpt_every == 0 or step == total:
            save_checkpoint(run_dir, tc, step, images_seen, modules, optimizers, ema, {"preset": cfg.preset})
    bar.close()
    log.close()
    return run_dir
