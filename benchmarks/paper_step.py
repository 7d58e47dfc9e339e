"""The device check: one training step of the paper's presets at a paper batch per GPU, in bf16 — img/s and MFU.

    python benchmarks/paper_step.py                        # detok-bb, mar-b, sit-b at 128 a GPU, bf16, on CUDA
    python benchmarks/paper_step.py --presets sit-b --per-gpu-batch 256 --compile
    python benchmarks/paper_step.py --device cpu --precision fp32 --per-gpu-batch 4 --steps 2 --warmup 1 \\
        --presets detok-fmnist32 mar-fmnist32 sit-fmnist32   # the CPU smoke run (tests/test_benchmarks.py)

What a step is — the training loops' own step on random data already on the device (no data loading):
- tokenizer: the training forward with its corruption on and the mask ratio drawn as training draws it
  (`mask_ratio_at`), the tokenizer loss (MSE + KL + LPIPS-VGG, losses/tokenizer.py), backward, AdamW, EMA. Two rows
  for a preset whose recipe turns GAN on part-way (detok-bb: from epoch 100 of 200, App. A.1): without it, and with
  it (the generator's adversarial term with its discriminator forward, and the discriminator's own step).
  LPIPS runs with random weights: the cost does not depend on them, and a machine without internet has none.
  Not in the step: the ConvNeXt-S perceptual term (torchvision is an optional extra), its weight being 0.1 of the
  perceptual loss — the rows are lower bounds on the paper step's time by that network's forward and backward.
- generator: the model's loss on random latents of its configured latent shape and random labels (label dropout
  as configured), backward, AdamW, EMA.

Batch per GPU: the paper gives only the global batch, 1024 for tokenizers and generators (App. A.1, A.2); the
default 128 is 1024 on 8 GPUs, an assumption.

MFU = (model FLOPs per image) × img/s ÷ peak. Model FLOPs: torch's FlopCounterMode over forward + backward (matmuls,
convolutions, attention), averaged over `--flop-draws` steps (the mask ratio, and MAR's number of masked tokens,
change per step); the discriminator's step is included in the GAN row, the optimiser's element-wise work is not.
Two peaks: the device's dense datasheet peak for the precision where the device is known (H100/H200 SXM bf16
989 TFLOP/s, A100 312), and the best rate of an 8192² GEMM measured here (on the CPU: 2048²).

For comparison the paper's training budgets (App. A.1, A.2) imply, per A100 GPU: detok-bb 200 epochs of ImageNet in
~1,150 A100-hours ≈ 62 img/s (with GAN for half, LPIPS and ConvNeXt, and its evaluations); SiT-B 100 epochs in
128–200 h ≈ 178–278 img/s; MAR-B 100 epochs in 220–250 h ≈ 142–162 img/s (cached latents).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from detok.losses.perceptual import _STAGE_CHANNELS, LPIPS, vgg16_features
from detok.losses.tokenizer import TokenizerLoss
from detok.registry import create_model, get_preset
from detok.runtime import autocast, matmul_peak, synchronize
from detok.training.tokenizer import default_run_config

# Dense (no sparsity) datasheet peaks in TFLOP/s, by a name part of torch.cuda.get_device_name().
DATASHEET_TFLOPS = {"H200": {"bf16": 989.0, "fp32": 67.0}, "H100": {"bf16": 989.0, "fp32": 67.0},
                    "A100": {"bf16": 312.0, "fp32": 19.5}}  # fmt: skip
IMAGENET_TRAIN_IMAGES = 1_281_167
# The paper's A100-hours (App. A.1, A.2) for `epochs` of ImageNet, as (low, high).
PAPER_A100_HOURS = {"detok-bb": (200, 1150, 1150), "sit-b": (100, 128, 200), "mar-b": (100, 220, 250)}


def paper_rate(preset: str) -> str:
    """The per-A100 img/s the paper's budget implies for `preset`, or '—'."""
    if preset not in PAPER_A100_HOURS:
        return "—"
    epochs, low, high = PAPER_A100_HOURS[preset]
    rates = sorted({round(epochs * IMAGENET_TRAIN_IMAGES / (h * 3600)) for h in (low, high)})
    return "–".join(map(str, rates)) + " img/s per A100"


def datasheet_peak(device: torch.device, precision: str) -> float | None:
    """The dense datasheet peak in TFLOP/s of a known CUDA device, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peaks[precision] for part, peaks in DATASHEET_TFLOPS.items() if part in name), None)


def random_lpips() -> LPIPS:
    """LPIPS-VGG with random weights: the perceptual term's cost without its (downloaded) weights."""
    lins = {f"{i}.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(_STAGE_CHANNELS)}
    return LPIPS(vgg16_features().state_dict(), lins)


class TokenizerStep:
    """One optimiser step of the tokenizer trainer (training/tokenizer.py) on a fixed random batch."""

    def __init__(self, preset: str, batch: int, device: torch.device, precision: str, gan: bool):
        cfg = default_run_config(preset)
        self.model = create_model(preset).to(device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        # Built without weights, then given a random LPIPS: TokenizerLoss would otherwise load VGG16's weights.
        lc = dataclasses.replace(cfg.loss, perceptual_weight=0.0, convnext_weight=0.0, gan_weight=0.1 if gan else 0.0)
        self.loss = TokenizerLoss(lc, self.model.config.channels, total_steps=1)
        self.loss.cfg = dataclasses.replace(lc, perceptual_weight=cfg.loss.perceptual_weight)
        if self.loss.cfg.perceptual_weight > 0:
            self.loss.perceptual = random_lpips()
        self.loss.gan_start = 0
        self.loss.to(device)
        tc = cfg.train
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(tc.beta1, tc.beta2), fused=False)
        self.opt_d = torch.optim.AdamW(self.loss.disc.parameters(), lr=1e-4) if gan else None
        size, channels = self.model.config.image_size, self.model.config.channels
        self.x = torch.rand(batch, channels, size, size, device=device) * 2 - 1
        self.device, self.precision, self.gan = device, precision, gan
        self.ratios = torch.Generator().manual_seed(0)

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def __call__(self, optimise: bool = True) -> None:
        model, x = self.model, self.x
        ratio = model.mask_ratio_at(0, 1, self.ratios)
        with autocast(self.device, self.precision):
            out = model(x, corrupt=True, mask_ratio=ratio, sample_posterior=True)
        loss, _ = self.loss.generator_loss(x, out, 0, model.last_decoder_layer(), model.last_encoder_layer())
        loss.backward()
        if self.gan:
            self.loss.discriminator_loss(x, out["recon"].float()).backward()
        if optimise:
            self.opt.step()
            if self.gan:
                self.opt_d.step()
            with torch.no_grad():
                torch._foreach_lerp_(list(self.ema.parameters()), list(model.parameters()), 1e-4)
        self.opt.zero_grad(set_to_none=True)
        if self.gan:
            self.opt_d.zero_grad(set_to_none=True)


class GeneratorStep:
    """One optimiser step of the generator trainer (training/generator.py) on a fixed random latent batch."""

    def __init__(self, preset: str, batch: int, device: torch.device, precision: str):
        self.model = create_model(preset).to(device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=2e-4, weight_decay=0.0)
        cfg = self.model.config
        if getattr(self.model, "latent_kind", "continuous") == "discrete":
            raise ValueError(f"{preset} models code indices: this benchmark times the continuous generators")
        self.z = torch.randn(batch, cfg.latent_channels, *cfg.input_size, device=device)
        self.y = torch.randint(0, cfg.num_classes, (batch,), device=device)
        self.device, self.precision = device, precision

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def __call__(self, optimise: bool = True) -> None:
        with autocast(self.device, self.precision):
            loss = self.model(self.z, self.y).float()
        loss.backward()
        if optimise:
            self.opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1e-4)
        self.opt.zero_grad(set_to_none=True)


def flops_per_image(step, batch: int, draws: int) -> float:
    """Mean FLOPs of forward + backward per image over `draws` steps (no optimiser update)."""
    total = 0
    for _ in range(draws):
        with FlopCounterMode(display=False) as counter:
            step(optimise=False)
        total += counter.get_total_flops()
    return total / draws / batch


def time_steps(step, device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per step, mean over `steps` after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    synchronize(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - t) / steps


def rows_for(preset: str) -> list[tuple[str, bool]]:
    """(row name, GAN on) of each measurement of `preset`."""
    if get_preset(preset).kind != "tokenizer":
        return [(preset, False)]
    if default_run_config(preset).loss.gan_weight > 0:
        return [(f"{preset} (no GAN)", False), (f"{preset} (GAN on)", True)]
    return [(preset, False)]


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["detok-bb", "mar-b", "sit-b"])
    p.add_argument("--per-gpu-batch", type=int, default=128, help="1024 on 8 GPUs (the paper gives the global only)")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=20, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (allocator, cuDNN/compile)")
    p.add_argument("--flop-draws", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (the CPU run must set them)")
    p.add_argument("--compile", action="store_true", help="torch.compile each block (as train.compile=true)")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: pass --device cpu --precision fp32 (and small --per-gpu-batch)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    measured = matmul_peak(device, dtype, reps=20 if device.type == "cuda" else 5) / 1e12  # TFLOP/s
    sheet = datasheet_peak(device, args.precision)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    sheet_text = f", datasheet {sheet:.0f} TFLOP/s" if sheet else ""
    print(f"{name}: {args.precision} GEMM {measured:.1f} TFLOP/s measured{sheet_text}; batch {args.per_gpu_batch}")
    rows = []
    for preset in args.presets:
        for row, gan in rows_for(preset):
            torch.manual_seed(0)
            if get_preset(preset).kind == "tokenizer":
                step = TokenizerStep(preset, args.per_gpu_batch, device, args.precision, gan)
            else:
                step = GeneratorStep(preset, args.per_gpu_batch, device, args.precision)
            flops = flops_per_image(step, args.per_gpu_batch, args.flop_draws)
            if args.compile:
                from detok.runtime import compile_blocks

                compile_blocks(step.model)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds = time_steps(step, device, args.steps, args.warmup)
            ips = args.per_gpu_batch / seconds
            achieved = ips * flops / 1e12
            record = {
                "row": row, "preset": preset, "device": name, "precision": args.precision,
                "per_gpu_batch": args.per_gpu_batch, "parameters": step.parameters(), "compile": args.compile,
                "img_per_s": ips, "step_s": seconds, "gflop_per_image": flops / 1e9, "tflop_per_s": achieved,
                "mfu_measured_peak": achieved / measured,
                "mfu_datasheet": achieved / sheet if sheet else None,
                "max_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            }  # fmt: skip
            if not all(math.isfinite(v) for v in (ips, flops)):
                raise RuntimeError(f"{row}: non-finite measurement {record}")
            rows.append(record)
            mfu = f"{100 * record['mfu_datasheet']:.1f}% of datasheet, " if sheet else ""
            memory = f", {record['max_memory_gib']:.1f} GiB" if record["max_memory_gib"] is not None else ""
            print(f"{row}: {step.parameters() / 1e6:.1f}M params, {ips:.1f} img/s, {flops / 1e9:.1f} GFLOP/img "
                  f"(fwd+bwd) -> {achieved:.2f} TFLOP/s = {mfu}{100 * record['mfu_measured_peak']:.1f}% of measured "
                  f"GEMM{memory}; paper's budget: {paper_rate(preset)}", flush=True)  # fmt: skip
            del step
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
