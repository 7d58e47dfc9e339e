"""Expected GPU memory of one training process per paper preset, computed on the meta device (no compute, no GPU).

    python benchmarks/memory_per_gpu.py [--per-gpu-batch 128 32] [--presets detok-bb sit-xl …]

How:
- Parameters P are counted on a model built on the meta device. Trainable state is 24 bytes per parameter: fp32
  weights (4), gradients (4), AdamW's two moments (8), the EMA copy (4) and DDP's gradient buckets (4). Frozen
  networks (LPIPS's VGG16) hold their fp32 weights only (4).
- Activations are the bytes of the tensors autograd saves for backward in one training forward of one sample
  (`saved_tensors_hooks`, parameters excluded, each storage counted once), measured on the meta device in fp32.
  Attention runs PyTorch's math path there, which saves the attention probabilities that flash attention on a GPU
  does not: an upper bound by that much (~10–25% at 256 tokens). Tokenizers are measured at mask ratio 0 (every
  token through the encoder: the largest step).
- bf16 autocast saves the inputs of matmuls in bf16 but keeps norms, softmax and the residual stream in fp32; the
  bf16 column plans with BF16_SHARE = 0.6 of the fp32 activations (an assumption, not a measurement: casting the
  model to bf16 on the meta device does not reproduce autocast, and there is no autocast for the meta device).
  `--measure` (CUDA) runs real bf16 training steps and reports `torch.cuda.max_memory_allocated` instead.
- A tokenizer run with the paper's losses adds LPIPS (frozen VGG16, activations of the reconstruction's pass, which
  backward traverses), the patch discriminator (trainable) and ConvNeXt-S (frozen, 50.2M parameters; its activations
  are not counted here: timm is not a dependency).
- Not counted: the CUDA context and kernels (~0.5–1 GiB), the caching allocator's fragmentation (often 10–20%),
  the temporary buffers of the optimiser step, and the decoder-side GAN forward of the discriminator's own step.
"""

from __future__ import annotations

import argparse

import torch

from detok.registry import create_model, get_preset

TOKENIZERS = ["detok-ss", "detok-sb", "detok-bb", "detok-ll"]
GENERATORS = ["dit-xl", "sit-b", "sit-l", "sit-xl", "lightningdit-b", "lightningdit-xl", "mar-b", "mar-l", "mar-h",
              "randomar-b", "rasterar-b"]  # fmt: skip
STATE_BYTES, FROZEN_BYTES = 24, 4
BF16_SHARE = 0.6
CONVNEXT_S_PARAMS = 50_200_000  # frozen in the perceptual loss; timm's convnext_small
GIB = 2**30


def saved_bytes(model: torch.nn.Module, step) -> int:
    """Bytes autograd saves for backward while `step()` runs, parameters excluded, each storage once."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:
            seen[storage._cdata] = max(seen.get(storage._cdata, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def activations(name: str, device: str = "meta") -> tuple[int, int]:
    """(parameters, saved activation bytes per sample) of one fp32 training forward of preset `name`.

    On the meta device unless the model's shapes depend on data (MAR's and the AR models' masking keeps a drawn
    number of tokens): those run one real sample on the CPU, with the mask drawn under seed 0.
    """
    with torch.device(device):
        model = create_model(name)
    cfg = model.config
    if get_preset(name).kind == "tokenizer":
        x = torch.zeros(1, cfg.channels, cfg.image_size, cfg.image_size, device=device)
        step = lambda: model(x, mask_ratio=0.0)["recon"]  # noqa: E731
    else:
        z = torch.zeros(1, cfg.latent_channels, *cfg.input_size, device=device)
        y = torch.zeros(1, dtype=torch.long, device=device)
        step = lambda: model(z, y)  # noqa: E731
    try:
        return sum(p.numel() for p in model.parameters()), saved_bytes(model, step)
    except NotImplementedError:
        if device != "meta":
            raise
        del model
        torch.manual_seed(0)
        return activations(name, "cpu")


def tokenizer_losses(image_size: int) -> tuple[int, int, int]:
    """(frozen VGG16 parameters, trainable discriminator parameters, their saved fp32 bytes per sample)."""
    from detok.losses.gan import PatchDiscriminator
    from detok.losses.perceptual import vgg16_features

    with torch.device("meta"):
        vgg, disc = vgg16_features(), PatchDiscriminator(3)
    recon = torch.zeros(1, 3, image_size, image_size, device="meta", requires_grad=True)
    act = saved_bytes(vgg, lambda: vgg(recon)) + saved_bytes(disc, lambda: disc(recon))
    return sum(p.numel() for p in vgg.parameters()), sum(p.numel() for p in disc.parameters()), act


def measure(name: str, per_gpu_batch: int, steps: int = 2) -> float:
    """GiB of `torch.cuda.max_memory_allocated` over bf16 training steps of preset `name` (one process: no DDP
    buckets, no LPIPS/GAN) at `per_gpu_batch`: fp32 weights, AdamW, an EMA copy, autocast bf16."""
    import copy

    device = torch.device("cuda")
    model = create_model(name).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cfg = model.config
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if get_preset(name).kind == "tokenizer":
                x = torch.rand(per_gpu_batch, cfg.channels, cfg.image_size, cfg.image_size, device=device) * 2 - 1
                loss = (model(x, mask_ratio=0.0)["recon"].float() - x).pow(2).mean()
            else:
                z = torch.randn(per_gpu_batch, cfg.latent_channels, *cfg.input_size, device=device)
                loss = model(z, torch.randint(0, cfg.num_classes, (per_gpu_batch,), device=device)).float()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1e-4)
    return torch.cuda.max_memory_allocated(device) / GIB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-gpu-batch", type=int, nargs="+", default=[128, 32], help="global 1024 on 8 / 32 GPUs")
    p.add_argument("--presets", nargs="+", default=TOKENIZERS + GENERATORS)
    p.add_argument("--measure", action="store_true", help="also measure bf16 training steps on CUDA")
    args = p.parse_args()
    batches = args.per_gpu_batch
    head = " | ".join(f"GiB/GPU at {b}/GPU, bf16 (plan) / fp32" for b in batches)
    print(f"| preset | params (M) | state GiB | act. MiB/sample (fp32) | {head} |")
    print("|---" * (4 + len(batches)) + "|")
    for name in args.presets:
        params, act = activations(name)
        state, note = STATE_BYTES * params, ""
        if get_preset(name).kind == "tokenizer":
            with torch.device("meta"):
                image_size = create_model(name).config.image_size
            vgg, disc, losses = tokenizer_losses(image_size)
            state += FROZEN_BYTES * (vgg + CONVNEXT_S_PARAMS) + STATE_BYTES * disc
            act += losses
            note = " (+ LPIPS, GAN)"
        cells = " | ".join(f"{(state + b * BF16_SHARE * act) / GIB:.0f} / {(state + b * act) / GIB:.0f}"
                           for b in batches)  # fmt: skip
        print(f"| {name}{note} | {params / 1e6:.1f} | {state / GIB:.1f} | {act / 2**20:.0f} | {cells} |")
        if args.measure:
            for b in batches:
                print(f"  measured: {name} at {b}/GPU, bf16, one process: {measure(name, b):.1f} GiB", flush=True)


if __name__ == "__main__":
    main()
