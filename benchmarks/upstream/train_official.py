"""Train the official l-DeTok tokenizer (Jiawei-Yang/DeTok) on FMNIST-32 on CPU, with detok-fmnist32's settings.

    /work/venv-upstream/bin/python benchmarks/upstream/train_official.py --detok-repo ../upstream/DeTok \\
        --out /work/upstream-runs/cpu-joint-seed8 --gamma 3 --mask 0.7 --seed 8

The upstream code is the oracle, never a source: this script imports `main_reconstruction` from the checkout given on
the command line and calls its own `main(args)` with a namespace parsed by its own `get_args_parser()` — its training
loop, its `DeTok` model, its `ReconstructionLoss`, its EMA, its loader and its checkpoints. Nothing of it is copied
here and no upstream file is edited. The official code assumes CUDA, DDP and bf16 autocast; the script adapts that
at run time (monkeypatches, listed in RUN/patches.json and printed), and lists every detok-fmnist32 setting it
could not match, with the reason, in RUN/unmatched.json (all settings, matched or not: RUN/settings.json).

Steps: (1) Fashion-MNIST (IDX .gz) is written once as PNGs, zero-padded 28 → 32 as detok's loader does, under
CACHE/train/<class>/<i>.png and CACHE/val/<class>/<i>.png (the folders upstream's `ListDataset` reads through the
lists RUN/data/train.txt and RUN/data/val.txt); (2) upstream's `main` trains in RUN (its checkpoints under
RUN/upstream/train/checkpoints/); (3) the final checkpoint is copied to RUN/final-gamma{γ}-m{M}.pth (the name
carries γ and M to `detok convert`) and converted twice, EMA weights → RUN/detok and raw weights → RUN/detok-raw;
(4) `detok tokenizer eval` scores both (PSNR, rFID with detok's FMNIST reference classifier). A rerun of the same
command finds upstream's checkpoint (`--auto_resume`), trains nothing and repeats steps 3–4: a cell is one upstream
epoch, so an interrupted cell restarts from the beginning.

Greyscale: upstream's model, loader and normalisation are RGB. With `--channels 1` (the default) the loader reads
grey, Normalize keeps one channel and the model's three image-side convolutions (patch embedding, the decoder's 1×1
output projection, `conv_out`) are built for one channel, initialised by upstream's own `_init_weights`: the
converted tokenizer is one-channel like detok-fmnist32, so table2's steps and detok's reference classifier apply to
it unchanged. `--channels 3` keeps upstream's RGB model and lets its loader replicate grey (PIL `convert("RGB")`);
that tokenizer is 3-channel, needs `data.channels=3` downstream, and detok's 1-channel reference classifier cannot
score its reconstructions (`detok tokenizer eval` refuses them), so its runs stop after conversion.
`--ema-warmup` patches detok's EMA warm-up into upstream's EMA (the one-change-at-a-time comparison).

Environment (upstream imports torchvision; PyPI's torchvision does not import beside the torch of detok's venv):

    python3 -m venv /work/venv-upstream     # outside the repository
    /work/venv-upstream/bin/pip install torch==2.14.1 torchvision==0.29.1 einops scipy timm \\
        rich requests wandb torch-fidelity torchdiffeq diffusers   # what upstream's modules import

The detok CLI of the repository (`--detok-cli`, default .venv/bin/detok) converts and evaluates.

Length (~630 lines): one script on purpose — it runs under the upstream venv from any working directory and is
loaded by path in tests/test_upstream_runner.py, so it imports no sibling module. Next split, by concern: the
settings table (`settings_table`, `format_table`) into a module the tests load the same way.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# detok-fmnist32 (r2) and its `cpu` tokenizer budget: `detok tokenizer train --preset detok-fmnist32 --dry-run`,
# src/detok/bench/suites.py `Budget.tokenizer_images`, and the table2 variants' corruption overrides.
DETOK = {
    "image_size": 32,
    "channels": 1,
    "patch_size": 4,
    "latent_channels": 8,
    "width": 192,
    "depth": 4,
    "heads": 4,
    "batch_size": 64,
    "blr": 4e-3,
    "min_lr": 0.0,
    "warmup_frac": 0.1,
    "weight_decay": 1e-4,
    "betas": (0.9, 0.95),
    "grad_clip": 3.0,
    "ema_decay": 0.995,
    "kl_weight": 1e-6,
    "perceptual_weight": 0.0,
    "gan_weight": 0.0,
    "hflip": False,
    "mask_min": -0.1,
}
# detok's tokenizer budgets (src/detok/bench/suites.py BUDGETS: `tokenizer_images` and `tokenizer_train`)
BUDGETS = {
    "cpu": {"images": 16_000},
    "cpu-long": {"images": 64_000},
    "quality": {"images": 128_000, "warmup_frac": 0.02, "ema_decay": 0.999},
}


def recipe(budget: str) -> dict:
    """detok-fmnist32's settings under one of detok's tokenizer budgets."""
    return {**DETOK, **{k: v for k, v in BUDGETS[budget].items() if k != "images"}}


# upstream's loss sees images in [0, 1] (targets x·0.5 + 0.5), detok's in [-1, 1]: its MSE is ¼ of detok's, so the
# KL weight and the clipping threshold are scaled by ¼ to make upstream's objective detok's divided by 4 (AdamW is
# invariant to that factor)
LOSS_SCALE = 0.25
SIZE_NAME = "fmnist32"
MODEL_NAME = "detok_fmnist32"


# --------------------------------------------------------------------------------------------------
# Data: Fashion-MNIST as the image folder upstream's loader reads
# --------------------------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (.gz) as a uint8 array: images (N, H, W) or labels (N,)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    dims = magic & 0xFF
    shape = (n, *struct.unpack(">" + "I" * (dims - 1), data[8 : 4 * (dims + 1)]))
    return np.frombuffer(data, dtype=np.uint8, offset=4 * (dims + 1)).reshape(shape)


def pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) zero-padded to (N, size, size), centred as detok's `fit_images(..., "pad")` (28 → 32: 2 each side)."""
    h, w = images.shape[1:]
    ph, pw = size - h, size - w
    return np.pad(images, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))


def write_image_folder(fmnist: Path, cache: Path, size: int = 32) -> dict[str, list[str]]:
    """CACHE/{train,val}/<class>/<i>.png once (a done.json marks it); returns each split's "path label" lines."""
    from PIL import Image

    if "train" in str(cache) or "val" in str(
        cache
    ):  # upstream finds the val folder by data_path.replace("train", "val")
        raise ValueError(f"the cache folder {cache} must not contain 'train' or 'val' in its path")
    lines = {}
    for split, (img_name, lbl_name) in FMNIST_FILES.items():
        labels = read_idx(fmnist / lbl_name)
        lines[split] = [f"{y}/{i}.png {y}" for i, y in enumerate(labels)]
        if (cache / split / "done.json").is_file():
            continue
        images = pad_to(read_idx(fmnist / img_name), size)
        for c in np.unique(labels):
            (cache / split / str(c)).mkdir(parents=True, exist_ok=True)
        for i, (img, y) in enumerate(zip(images, labels)):
            Image.fromarray(img, mode="L").save(cache / split / str(y) / f"{i}.png")
        (cache / split / "done.json").write_text(json.dumps({"images": len(images), "size": size}) + "\n")
    return lines


def train_subset(n_train: int, images: int, seed: int) -> list[int]:
    """The indices of one pass of `images` images: seeded permutations of the training set, concatenated and cut."""
    rng = np.random.RandomState(seed)
    order: list[int] = []
    while len(order) < images:
        order.extend(rng.permutation(n_train).tolist())
    return order[:images]


# --------------------------------------------------------------------------------------------------
# Settings: upstream's arguments and the comparison with detok-fmnist32
# --------------------------------------------------------------------------------------------------


def upstream_argv(
    *, data_path: Path, out: Path, images: int, gamma: float, mask: float, seed: int, workers: int, d: dict = DETOK
) -> list[str]:
    """Command-line arguments for upstream's `get_args_parser()` (`d`: the detok recipe): one epoch is the budget."""
    return [
        *("--model", MODEL_NAME, "--img_size", str(d["image_size"]), "--patch_size", str(d["patch_size"])),
        *("--token_channels", str(d["latent_channels"]), "--gamma", str(gamma), "--mask_ratio", str(mask)),
        *("--epochs", "1", "--batch_size", str(d["batch_size"]), "--blr", str(d["blr"]), "--min_lr", str(d["min_lr"])),
        *("--lr_sched", "cosine", "--warmup_rate", str(d["warmup_frac"]), "--ema_rate", str(d["ema_decay"])),
        *("--weight_decay", str(d["weight_decay"]), "--beta1", str(d["betas"][0]), "--beta2", str(d["betas"][1])),
        *("--grad_clip", str(d["grad_clip"] * LOSS_SCALE), "--kl_loss_weight", str(d["kl_weight"] * LOSS_SCALE)),
        *("--perceptual_loss", "none", "--perceptual_weight", str(d["perceptual_weight"])),
        *("--discriminator_weight", str(d["gan_weight"]), "--discriminator_start_epoch", "1"),
        *("--data_path", str(data_path), "--num_classes", "10", "--class_of_interest", *map(str, range(8))),
        *("--num_workers", str(workers), "--no_pin_mem", "--seed", str(seed)),
        *("--output_dir", str(out), "--project", "upstream", "--exp_name", "train", "--auto_resume"),
        *("--save_freq", "1", "--vis_freq", "1", "--keep_n_ckpts", "1", "--print_freq", "20"),
    ]  # fmt: skip


def settings_table(
    images: int, gamma: float, mask: float, channels: int = 1, ema_warmup: bool = False, d: dict = DETOK
) -> list[dict]:
    """Every detok-fmnist32 setting (`d`: under the run's budget), how the upstream run sets it, and whether the two
    match."""
    steps, warm = images // d["batch_size"], int(d["warmup_frac"] * images // d["batch_size"])
    # upstream's EMA has no warm-up: the random initialisation keeps decay^steps of the average
    ema = d["ema_decay"]
    init_share = ema**steps
    detok_final_decay = min(ema, steps / (9 + steps))

    def row(setting: str, detok: str, upstream: str, status: str, note: str = "") -> dict:
        return {"setting": setting, "detok": detok, "upstream": upstream, "status": status, "note": note}

    return [
        row("size", "enc/dec 192 wide, 4 deep, 4 heads; patch 4; C = 8", f"SIZE_DICT['{SIZE_NAME}'] = 192/4/4 for "
            f"encoder and decoder (registered in memory); --patch_size 4 --token_channels 8", "matched"),
        row("SwiGLU width", "512 (r2: multiple of 8)", "int(2/3·4·192) = 512", "matched"),
        row("architecture", "r2: axial RoPE θ = 100, no ln_pre, per-patch Linear head, Xavier init",
            "official: unit-grid RoPE, ln_pre, 1×1 conv + 3×3 conv_out, truncated-normal init", "unmatched",
            "the official code's own architecture; detok's detok-fmnist32-official preset is this architecture in "
            "detok's loop, which separates the architecture from the training loop"),
        row("channels", "1 (grey)", "1: upstream's loader, Normalize and the model's three image-side convolutions "
            "built for one channel (patched)", "matched", "upstream is RGB throughout; the rest of its model is "
            "unchanged") if channels == 1 else
        row("channels", "1 (grey)", "3 (grey replicated by upstream's loader, PIL convert('RGB'))", "unmatched",
            "--channels 3 keeps upstream's RGB model: the MSE is the same number when the three outputs agree, but "
            "the input conv sees three copies, the decoder predicts three channels, and the converted tokenizer is "
            "3-channel (table2's steps would need data.channels=3, and detok's 1-channel reference classifier "
            "cannot score its reconstructions)"),
        row("data", "Fashion-MNIST train, zero-padded 28 → 32, [-1, 1]", "the same PNGs (written once), its "
            "center_crop_arr (identity at 32 px), Normalize(0.5, 0.5)", "matched"),
        row("images / batch / steps", f"{images} images, batch 64, {steps} steps",
            f"one epoch over a list of {images} images (seeded permutations of the 60,000), batch 64, drop_last",
            "matched", "the images and their order come from another RNG (unmatched by nature)"),
        row("hflip", "off", "off (create_train_dataloader(should_flip=False), patched)", "matched",
            "upstream flips training images with p = 0.5 and has no flag for it"),
        row("lr", "blr 4e-3 → 1e-3 at batch 64", "--blr 4e-3 → lr = blr·64/256 = 1e-3", "matched"),
        row("schedule", f"linear warm-up {warm} steps, cosine to 0", f"warm-up {d['warmup_frac']} epoch = {warm} "
            "steps (made fractional, patched), half-cycle cosine to 0 over fractional epochs", "matched",
            "upstream's warm-up starts at lr 0 (step/warm), detok's at 1/warm ((step+1)/warm): one step apart"),
        row("optimizer", "AdamW β (0.9, 0.95), wd 1e-4", "AdamW β (0.9, 0.95), wd 1e-4", "matched"),
        row("weight-decay exclusions", "biases, gains, position embeddings, mask token",
            "also every weight whose name contains 'embed', 'ln', 'norm' or 'token': the patch-embedding conv and "
            "decoder_embed are not decayed", "unmatched", "upstream's rule (utils/builders.py), kept"),
        row("grad clip", "3.0 (loss on [-1, 1] images)", f"{d['grad_clip'] * LOSS_SCALE} (loss on [0, 1] images)",
            "rescaled", "upstream's MSE is ¼ of detok's; clip and KL weight ×¼ make its objective detok's / 4"),
        row("KL weight", "1e-6", f"{d['kl_weight'] * LOSS_SCALE:g}", "rescaled", "as the clip: the same KL:MSE ratio"),
        row("perceptual", "off (weight 0)", "off: --perceptual_weight 0, PerceptualLoss replaced by zero (patched)",
            "matched", "upstream builds LPIPS/VGG16 and ConvNeXt-S with downloaded weights whatever the weight, "
            "which fails offline"),
        row("GAN", "off (weight 0)", "off: --discriminator_start_epoch 1 (the one epoch is epoch 0)", "matched",
            "upstream's create_loss_module does not pass --discriminator_weight on (the loss keeps its default 0.1), "
            "so the GAN is off by its start epoch alone; the PatchGAN and its optimizer are built, never stepped"),
        row("EMA", f"decay {ema:g} with warm-up min(d, (1+n)/(10+n)): {detok_final_decay:.3f} at step {steps}",
            "the same (--ema-warmup, patched)", "matched") if ema_warmup else
        row("EMA", f"decay {ema:g} with warm-up min(d, (1+n)/(10+n)): {detok_final_decay:.3f} at step {steps}",
            f"decay {ema:g} from the first step, no warm-up", "unmatched",
            f"upstream's EMA after {steps} steps still holds {ema:g}^{steps} = {init_share:.0%} of the random "
            "initialisation; both its EMA and raw weights are converted and scored (--ema-warmup matches it)"),
        row("latent noise", f"γ = {gamma:g}, interpolative, τ ~ U(0, 1) per image",
            f"--gamma {gamma:g}, interpolative, noise level ~ U(0, 1) per image", "matched"),
        row("masking", f"M = {mask:g}: ratio max(0, U(-0.1, M)) per batch",
            f"--mask_ratio {mask:g}: max(0, U(-0.1, M)) per batch", "matched"),
        row("posterior", "sampled in training, mean at evaluation", "the same", "matched"),
        row("precision", "fp32", "fp32 (bf16 autocast disabled on CPU, patched)", "matched"),
        row("evaluation", "detok tokenizer eval (PSNR, rFID with the FMNIST reference classifier)",
            "upstream's evaluate_tokenizer skipped (patched); the converted checkpoint is scored by detok's eval",
            "matched", "upstream's rFID needs torch-fidelity's Inception weights (a download) and ImageNet stats"),
    ]  # fmt: skip


def format_table(rows: list[dict], keys: tuple[str, ...]) -> str:
    """A Markdown table of `rows` with the given columns."""
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]).replace("|", "/") for k in keys) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Run-time adaptations of the upstream code (CUDA, DDP, AMP, offline)
# --------------------------------------------------------------------------------------------------


class Patches:
    """Monkeypatches, each recorded with what it replaced and why."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def set(self, owner, name: str, value, target: str, reason: str) -> None:
        setattr(owner, name, value)
        self.records.append({"target": target, "reason": reason})

    def model(self, models, factory, parts: str, reason: str) -> None:
        """Register `factory` as upstream's FMNIST model builder (a wrapper of the one registered before)."""
        models.DeTok_models[MODEL_NAME] = factory
        self.records.append({"target": f"models.DeTok_models['{MODEL_NAME}'] ({parts})", "reason": reason})


def patch_upstream(
    repo: Path, patches: Patches, channels: int, ema_warmup: bool = False, conv_out_identity: bool = False
):
    """Import upstream's `main_reconstruction` from `repo` with CPU / single-process adaptations; return it."""
    import functools

    import torch

    sys.dont_write_bytecode = True  # the checkout stays as it is
    sys.path.insert(0, str(repo))

    patches.set(torch.nn.Module, "cuda", lambda self, *a, **k: self, "torch.nn.Module.cuda", "no GPU: a no-op")
    patches.set(torch.Tensor, "cuda", lambda self, *a, **k: self, "torch.Tensor.cuda", "no GPU: a no-op")
    for name in ("synchronize", "empty_cache", "set_device"):
        patches.set(torch.cuda, name, lambda *a, **k: None, f"torch.cuda.{name}", "no GPU: a no-op")
    autocast = torch.autocast

    def cpu_autocast(device_type: str, *args, **kwargs):
        return autocast("cpu", enabled=False) if device_type == "cuda" else autocast(device_type, *args, **kwargs)

    patches.set(torch, "autocast", cpu_autocast, "torch.autocast('cuda', ...)",
                "bf16 autocast on CUDA → disabled: fp32 on CPU, as detok's CPU runs")  # fmt: skip
    grad_scaler = torch.GradScaler
    patches.set(torch, "GradScaler", lambda *a, **k: grad_scaler("cpu", enabled=False), "torch.GradScaler",
                "CUDA loss scaler → disabled (fp32): backward, unscale and step are plain")  # fmt: skip
    patches.set(torch.distributed, "barrier", lambda *a, **k: None, "torch.distributed.barrier",
                "single process, no process group: a no-op")  # fmt: skip

    import main_reconstruction as mr
    import models
    import models.ema
    import models.model_utils
    import utils.distributed
    import utils.logger
    import utils.losses

    patches.set(
        utils.distributed,
        "enable_distributed",
        lambda: None,
        "utils.distributed.enable_distributed",
        "no NCCL process group: one process, world size 1 (so no DDP wrapper, all_reduce_mean is the identity)",
    )
    patches.set(utils.distributed, "concat_all_gather", lambda t, gather_dim=0: t,
                "utils.distributed.concat_all_gather", "one process: the identity (it asks torch.distributed for "
                "the world size, which needs a process group)")  # fmt: skip
    move = utils.logger.move_to_device
    patches.set(
        utils.logger,
        "move_to_device",
        lambda obj, device: move(obj, torch.device("cpu")),
        "utils.logger.move_to_device",
        "the MetricLogger's prefetch moves each batch to 'cuda': kept on CPU",
    )

    class LoggerTorch:
        """utils.logger's view of torch: `cuda.is_available()` True, `cuda.max_memory_allocated()` 0."""

        cuda = types.SimpleNamespace(is_available=lambda: True, max_memory_allocated=lambda *a: 0)

        def __getattr__(self, name: str):
            return getattr(torch, name)

    patches.set(utils.logger, "torch", LoggerTorch(), "utils.logger.torch (cuda.is_available, max_memory_allocated)",
                "MetricLogger.log_every's non-CUDA branch formats its message without the elapsed_time_str the "
                "format names (KeyError, an upstream bug): the logger alone sees CUDA as available, memory 0 "
                "(its batches stay on CPU by the patch above)")  # fmt: skip
    ema_to = models.ema.SimpleEMAModel.to
    patches.set(models.ema.SimpleEMAModel, "to", lambda self, device=None, dtype=None: ema_to(self, "cpu", dtype),
                "models.ema.SimpleEMAModel.to", "resume moves the EMA to 'cuda': kept on CPU")  # fmt: skip

    class ZeroPerceptual(torch.nn.Module):
        """Stands in for upstream's PerceptualLoss at weight 0 (its nets' weights would be downloaded)."""

        def forward(self, inputs, pred):
            return inputs.new_zeros(())

    patches.set(utils.losses, "PerceptualLoss", lambda name: ZeroPerceptual(), "utils.losses.PerceptualLoss",
                "perceptual weight 0 (detok-fmnist32); upstream builds LPIPS/VGG16 and ConvNeXt-S from downloaded "
                "weights regardless, which fails offline: a module returning 0")  # fmt: skip
    d = DETOK
    size = {"width": d["width"], "layers": d["depth"], "heads": d["heads"]}
    models.model_utils.SIZE_DICT[SIZE_NAME] = size
    patches.records.append({"target": f"models.model_utils.SIZE_DICT['{SIZE_NAME}']", "reason": f"added: {size}"})
    from models.detok import DeTok

    factory = functools.partial(DeTok, vit_enc_model_size=SIZE_NAME, vit_dec_model_size=SIZE_NAME)
    models.DeTok_models[MODEL_NAME] = factory
    patches.records.append({"target": f"models.DeTok_models['{MODEL_NAME}']", "reason": f"added: DeTok with "
                            f"SIZE_DICT['{SIZE_NAME}'] for encoder and decoder"})  # fmt: skip
    if channels == 1:
        grey_channels(mr, patches)
    if conv_out_identity:
        frozen_identity_conv_out(patches)
    if ema_warmup:
        ema_step = models.ema.SimpleEMAModel.step

        def step_with_warmup(self, model):
            n, decay = getattr(self, "updates", 0), self.decay
            self.decay = min(decay, (1 + n) / (10 + n))  # detok's EMA warm-up (src/detok/optim.py)
            try:
                ema_step(self, model)
            finally:
                self.decay, self.updates = decay, n + 1

        patches.set(models.ema.SimpleEMAModel, "step", step_with_warmup, "models.ema.SimpleEMAModel.step",
                    "--ema-warmup: the decay ramps as detok's, min(decay, (1 + n) / (10 + n)) over updates n "
                    "(a change of upstream's algorithm, for the one-change-at-a-time comparison)")  # fmt: skip
    patches.set(mr, "create_train_dataloader", functools.partial(mr.create_train_dataloader, should_flip=False),
                "main_reconstruction.create_train_dataloader", "should_flip=False: detok-fmnist32 trains without "
                "flips; upstream flips with p = 0.5 and has no flag")  # fmt: skip
    setup = mr.setup

    def setup_fractional_warmup(args):
        out = setup(args)
        args.warmup_epochs = args.warmup_rate * args.epochs
        return out

    patches.set(
        mr,
        "setup",
        setup_fractional_warmup,
        "main_reconstruction.setup",
        "after upstream's setup, warmup_epochs = warmup_rate · epochs unrounded: upstream takes int(), and "
        "with the budget as one epoch that is no warm-up; its schedule works on fractional epochs",
    )
    patches.set(mr, "evaluate_tokenizer", lambda *a, **k: None, "main_reconstruction.evaluate_tokenizer",
                "skipped: its rFID needs torch-fidelity's Inception weights (a download), an ImageNet statistics "
                "file and CUDA; detok's eval scores the converted checkpoint instead")  # fmt: skip
    return mr


def frozen_identity_conv_out(patches: Patches) -> None:
    """`--conv-out-identity`: the decoder's final 3×3 conv_out becomes a frozen identity (a Dirac kernel, zero bias,
    no gradient), i.e. the decoder ends at its per-patch 1×1 projection as detok's r2 head does — the one change that
    `benchmarks/upstream/arch_steps.sh` (cell official-noconvout) makes in detok's loop. The checkpoint keeps the
    identity kernel, so `detok convert` reads it unchanged and the converted tokenizer computes the same images."""
    import models
    import torch

    factory = models.DeTok_models[MODEL_NAME]

    def without_conv_out(**kwargs):
        model = factory(**kwargs)
        conv = model.decoder.conv_out
        with torch.no_grad():
            conv.weight.zero_()
            for c in range(conv.out_channels):
                conv.weight[c, c, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] = 1.0
            conv.bias.zero_()
        conv.requires_grad_(False)
        return model

    patches.model(models, without_conv_out, "decoder.conv_out", "--conv-out-identity: decoder.conv_out set to a "
                  "frozen identity (Dirac kernel, zero bias, no gradient): a change of upstream's architecture, for "
                  "the one-change-at-a-time comparison")  # fmt: skip


def grey_channels(mr, patches: Patches) -> None:
    """One image channel, as detok-fmnist32: upstream's loader, normalisation and model are RGB.

    The model keeps its layer types and its own initialisation; only the image-side convolutions (patch embedding,
    the decoder's 1×1 output projection and its 3×3 conv_out) are built for one channel instead of three.
    """
    import torch
    import torchvision.transforms
    import utils.builders
    import utils.loader
    from PIL import Image

    def grey_loader(path: str):
        with open(path, "rb") as f:
            return Image.open(f).convert("L")

    patches.set(utils.loader, "default_loader", grey_loader, "utils.loader.default_loader",
                "images read as greyscale (PIL convert('L')) instead of convert('RGB')")  # fmt: skip

    class GreyTransforms:
        """utils.builders' view of torchvision.transforms: Normalize keeps the first channel's mean and std."""

        def __getattr__(self, name: str):
            return getattr(torchvision.transforms, name)

        @staticmethod
        def Normalize(mean, std, *args, **kwargs):  # noqa: N802 (torchvision's name)
            return torchvision.transforms.Normalize(mean[:1], std[:1], *args, **kwargs)

    patches.set(utils.builders, "transforms", GreyTransforms(), "utils.builders.transforms.Normalize",
                "Normalize([0.5]*3, [0.5]*3) → Normalize([0.5], [0.5]) for one-channel tensors")  # fmt: skip
    import models

    factory = models.DeTok_models[MODEL_NAME]

    def grey_detok(**kwargs):
        model = factory(**kwargs)
        enc, dec, p = model.encoder, model.decoder, model.encoder.patch_size
        enc.patch_embed[0] = torch.nn.Conv2d(1, enc.width, p, p)
        dec.ffn[1] = torch.nn.Conv2d(dec.ffn[1].in_channels, p * p, 1)
        dec.conv_out = torch.nn.Conv2d(1, 1, 3, padding=1)
        for module in (enc.patch_embed[0], dec.ffn[1], dec.conv_out):
            model._init_weights(module)  # upstream's own initialisation of convolutions
        return model

    patches.model(models, grey_detok, "encoder.patch_embed.0, decoder.ffn.1, decoder.conv_out", "built for 1 image "
                  "channel (Conv2d(1, 192, 4, 4), Conv2d(192, 16, 1), Conv2d(1, 1, 3)) and initialised by upstream's "
                  "DeTok._init_weights; the rest of the model is upstream's")  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None


def host() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (subprocess.CalledProcessError, FileNotFoundError, StopIteration):
        return platform.processor() or socket.gethostname()


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")


def detok_steps(cli: Path, ckpt: Path, out: Path, eval_images: int, threads: int, evaluate: bool = True) -> dict:
    """Convert the checkpoint (EMA and raw weights) with `detok convert` and score each with `detok tokenizer eval`."""
    heads = ["--set", f"model.enc_heads={DETOK['heads']}", "--set", f"model.dec_heads={DETOK['heads']}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    results = {}
    for name, extra in (("detok", []), ("detok-raw", ["--raw"])):
        folder = out / name
        if not (folder / "config.json").is_file():
            subprocess.run([str(cli), "convert", str(ckpt), "--out", str(folder), *heads, *extra], check=True, env=env)
        metrics = folder / f"eval-test-{eval_images}.json"
        if not evaluate:
            continue
        if not metrics.is_file():
            cmd = [str(cli), "tokenizer", "eval", str(folder), "--max-images", str(eval_images)]
            subprocess.run([*cmd, "--threads", str(threads), "--out", str(metrics)], check=True, env=env)
        results[name] = json.loads(metrics.read_text())
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--detok-repo", type=Path, required=True, help="a local checkout of Jiawei-Yang/DeTok")
    p.add_argument("--out", type=Path, required=True, help="the run folder (outside the repository)")
    p.add_argument("--gamma", type=float, default=3.0)
    p.add_argument("--mask", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", choices=sorted(BUDGETS), default="cpu", help="detok's tokenizer budget (its recipe)")
    p.add_argument("--steps", type=int, default=None, help="train this many steps instead of the budget (a smoke run)")
    p.add_argument("--cache", type=Path, default=Path("/work/upstream-runs/fmnist32-png"), help="the PNG folder")
    p.add_argument("--fmnist", type=Path, default=FMNIST, help="Fashion-MNIST's four IDX .gz files")
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=1,
        help="1: the model and loader patched to grey (detok-fmnist32); 3: upstream's RGB, grey replicated",
    )
    p.add_argument("--ema-warmup", action="store_true", help="patch detok's EMA warm-up into upstream's EMA")
    p.add_argument("--conv-out-identity", action="store_true", help="decoder.conv_out a frozen identity (a patch)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="upstream's DataLoader workers")
    p.add_argument("--detok-cli", type=Path, default=ROOT / ".venv" / "bin" / "detok")
    p.add_argument("--eval-images", type=int, default=5000, help="test images for detok's eval (table2: 5,000)")
    p.add_argument("--no-convert", action="store_true", help="train only")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    out, repo = args.out.resolve(), args.detok_repo.resolve()
    d = recipe(args.budget)
    images = args.steps * d["batch_size"] if args.steps else BUDGETS[args.budget]["images"]
    (out / "data").mkdir(parents=True, exist_ok=True)

    lines = write_image_folder(args.fmnist, args.cache.resolve())
    subset = train_subset(len(lines["train"]), images, args.seed)
    (out / "data" / "train.txt").write_text("\n".join(lines["train"][i] for i in subset) + "\n")
    (out / "data" / "val.txt").write_text("\n".join(lines["val"]) + "\n")

    patches = Patches()
    mr = patch_upstream(repo, patches, args.channels, args.ema_warmup, args.conv_out_identity)
    up_argv = upstream_argv(data_path=args.cache.resolve() / "train", out=out, images=images, gamma=args.gamma,
                            mask=args.mask, seed=args.seed, workers=args.workers, d=d)  # fmt: skip
    up_args = mr.get_args_parser().parse_args(up_argv)
    rows = settings_table(images, args.gamma, args.mask, args.channels, args.ema_warmup, d)
    unmatched = [r for r in rows if r["status"] != "matched"]
    write_json(out / "patches.json", patches.records)
    write_json(out / "settings.json", rows)
    write_json(out / "unmatched.json", unmatched)
    print("== run-time patches of the upstream code ==")
    print(format_table(patches.records, ("target", "reason")))
    print("== detok-fmnist32 settings not matched exactly ==")
    print(format_table(unmatched, ("setting", "detok", "upstream", "status", "note")), flush=True)

    record = {
        "command": [sys.executable, *sys.argv],
        "upstream": {"repo": str(repo), "commit": git_commit(repo), "argv": up_argv},
        "images": images,
        "host": host(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threads": args.threads,
        "torch": torch.__version__,
    }
    cwd = Path.cwd()
    os.chdir(out)  # upstream reads data/train.txt and data/val.txt relative to the working directory
    t0 = time.perf_counter()
    try:
        code = mr.main(up_args)
    finally:
        os.chdir(cwd)
    record["train_wall_s"] = round(time.perf_counter() - t0, 1)
    ckpts = sorted((out / "upstream" / "train" / "checkpoints").glob("epoch_*.pth"))
    if code != 0 or not ckpts:
        raise SystemExit(f"upstream's main returned {code}; checkpoints: {ckpts}")
    final = out / f"final-gamma{args.gamma:g}-m{args.mask:g}.pth"
    if not final.is_file():
        shutil.copyfile(ckpts[-1], final)
    record["checkpoint"] = str(final)
    if not args.no_convert:
        t1 = time.perf_counter()
        record["eval"] = detok_steps(args.detok_cli, final, out, args.eval_images, args.threads, args.channels == 1)
        record["convert_eval_wall_s"] = round(time.perf_counter() - t1, 1)
        for name, m in record["eval"].items():
            print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, float)))
    runs = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else []
    write_json(out / "run.json", [*runs, record])
    return 0


if __name__ == "__main__":
    sys.exit(main())
