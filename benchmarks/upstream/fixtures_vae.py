"""Fixture jobs on the autoencoders: LDM's KL (LTH14/mar KL-16, hustvl/LightningDiT VA-VAE) and diffusers' SD-VAE."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import torch
from fixture_utils import (
    enter_package,
    git_state,
    perturb_,
    stand_in,
    write,
)

# --------------------------------------------------------------------------------------------------
# LDM's KL autoencoder as LTH14/mar (KL-16) and hustvl/LightningDiT (VA-VAE) release it
# --------------------------------------------------------------------------------------------------

# Tiny LDM autoencoders through the upstream's own Encoder/Decoder: width 32 (GroupNorm's 32 groups), two levels,
# 16-px images (an 8×8 latent grid), attention where each upstream puts it (at the lowest level). KL-16's levels are
# 64 then 32 wide (the wider level first keeps the mid-blocks narrow, and its 1×1 skips appear); VA-VAE's 32 and 32.
LDM_TINY = {"ch": 32, "num_res_blocks": 1, "resolution": 16, "z_channels": 4, "dropout": 0.0}
LDM_JOBS = {  # name: (package, module, ch_mult, attn at the lowest level in encoder, decoder)
    "mar_kl16": ("models", "models.vae", (2, 1), (8,), ()),
    "vavae": ("tokenizer", "tokenizer.autoencoder", (1, 1), (8,), (8,)),  # 1×1 skips are the KL-16 fixture's
}


def _perturbed_with_inputs(vae):
    """Perturb `vae`'s weights (seed 1), put it in eval mode, and draw the shared test inputs: images x (2, 3, 16, 16)
    in [-1, 1] and latents z (2, 4, 8, 8), from one generator seeded 3."""
    perturb_(vae, seed=1)
    vae.eval()
    g = torch.Generator().manual_seed(3)
    return torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, torch.randn(2, 4, 8, 8, generator=g)


def _ldm(repo: Path, out: Path, name: str) -> None:
    package, module_name, ch_mult, enc_attn, dec_attn = LDM_JOBS[name]
    tiny = {**LDM_TINY, "ch_mult": ch_mult}
    adaptations: list[str] = []
    sys.path.insert(0, str(repo))
    enter_package(repo, package, adaptations)
    stand_in("torchvision", {"transforms": None}, "an image transform import no model here calls", adaptations)
    upstream = importlib.import_module(module_name)
    torch.manual_seed(0)
    vae = upstream.AutoencoderKL(embed_dim=4, ch_mult=ch_mult)  # its own quant convs for 4 channels
    vae.encoder = upstream.Encoder(attn_resolutions=enc_attn, **tiny)
    vae.decoder = upstream.Decoder(attn_resolutions=dec_attn, **tiny)
    adaptations.append(
        f"encoder/decoder rebuilt at tiny size with the upstream classes: {tiny}, attn {enc_attn}/{dec_attn}"
    )
    x, z = _perturbed_with_inputs(vae)
    with torch.no_grad():
        posterior = vae.encode(x)
        outputs = {"mean": posterior.mean, "logvar": posterior.logvar, "decode": vae.decode(z)}
        outputs["forward"] = vae.decode(posterior.mean)
    meta = {
        "upstream": {"mar_kl16": "LTH14/mar", "vavae": "hustvl/LightningDiT"}[name],
        **git_state(repo),
        "class": f"{module_name}.AutoencoderKL",
        "args": {**tiny, "embed_dim": 4, "enc_attn_resolutions": enc_attn, "dec_attn_resolutions": dec_attn},
        "adaptations": adaptations,
        "torch": torch.__version__,
    }
    ckpt = {"model": vae.state_dict()} if name == "mar_kl16" else {"state_dict": vae.state_dict()}
    write(out, name, ckpt, {"x": x, "z": z, **outputs}, meta)


def mar_kl16(repo: Path, out: Path) -> None:
    _ldm(repo, out, "mar_kl16")


def vavae(repo: Path, out: Path) -> None:
    _ldm(repo, out, "vavae")


# --------------------------------------------------------------------------------------------------
# diffusers' AutoencoderKL: the SD-VAE (KL-8) that DiT and SiT load with from_pretrained
# --------------------------------------------------------------------------------------------------

SD_TINY = {"block_out_channels": (32, 64), "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 32}


def sd_vae(_: Path | None, out: Path) -> None:
    import diffusers

    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=16,
        **SD_TINY,
    )
    x, z = _perturbed_with_inputs(vae)
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
        outputs = {"mean": posterior.mean, "logvar": posterior.logvar, "decode": vae.decode(z).sample}
    meta = {
        "upstream": "huggingface/diffusers",
        "commit": None,
        "dirty": None,
        "diffusers": diffusers.__version__,
        "class": "diffusers.AutoencoderKL",
        "args": {**SD_TINY, "sample_size": 16},
        "adaptations": [],
        "torch": torch.__version__,
    }
    write(out, "sd_vae", {}, {"x": x, "z": z, **outputs}, meta)
    from safetensors.torch import save_file  # the release's own file format: a bare safetensors state dict

    save_file(
        {k: v.contiguous() for k, v in vae.state_dict().items()},
        str(out / "sd_vae" / "diffusion_pytorch_model.safetensors"),
    )
    (out / "sd_vae" / "checkpoint.pth").unlink()
