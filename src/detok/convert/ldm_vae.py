"""LDM's KL autoencoder as released by MAR (KL-16) and VA-VAE (f16d32) ⇄ detok's `CNNTokenizer`.

Upstream: LTH14/mar `models/vae.py` (`kl16.ckpt`: {"model": state dict}; latents scaled by 0.2325 in
`engine_mar.py`) and hustvl/LightningDiT `tokenizer/autoencoder.py` (`vavae-imagenet256-f16d32-dinov2.pt`:
{"state_dict": …} with the training losses' weights beside the model's; latents normalised by `latents_stats.pt`,
{"mean", "std"} of shape (1, C, 1, 1)). Both are CompVis/latent-diffusion's `Encoder`/`Decoder`: per level
`down[i].block[j]` / `down[i].attn[j]` / `down[i].downsample`, a mid-block `block_1, attn_1, block_2`, and the decoder's
levels `up[i]` indexed from the full resolution (run in reverse). detok's stages hold the same modules in run order,
attention blocks interleaved; its attention fuses LDM's q, k, v 1×1 convolutions into one `qkv` (concatenated on
the output channels: the same arithmetic).

The key map is a data table built from the architecture read off the weights (the block indices depend on where
attention sits). The image size is not in the weights: it is taken as upstream's 256 unless `--set model.image_size`
says otherwise; it only decides which stage sides the attention resolutions name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from detok.checkpoint import CheckpointError
from detok.convert.keymap import SAME, Join, KeyMap, count_indexed, join_tensors, split_tensors
from detok.convert.safe_load import load_checkpoint
from detok.tokenizers.cnn import CNNTokenizer, CNNTokenizerConfig
from detok.tokenizers.corruption import CorruptionConfig

NAME = "ldm-kl"
MODEL_CLS = CNNTokenizer
UPSTREAM = "LTH14/mar models/vae.py; hustvl/LightningDiT tokenizer/autoencoder.py"
VERIFIED_COMMIT = {"LTH14/mar": "fe470ac", "hustvl/LightningDiT": "2725fed"}
SETTABLE = ("image_size",)
SINGLE_WEIGHTS = True  # kl16.ckpt holds {"model"}, VA-VAE {"state_dict"}: no EMA to prefer
# Weights of the upstream's training that are not the autoencoder: VA-VAE's checkpoint keeps its losses (LPIPS,
# discriminator), its frozen DINOv2 and the VF loss's projection beside the model. Dropped, and listed in config.json.
TRAINING_ONLY = ("loss.", "foundation_model.", "linear_proj.")
MAR_KL16_SCALE = 0.2325  # LTH14/mar engine_mar.py: posterior.sample().mul_(0.2325)

_RESNET = [("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2"), ("nin_shortcut", "skip")]


def matches(state: dict[str, torch.Tensor]) -> bool:
    return (
        "encoder.conv_in.weight" in state
        and "quant_conv.weight" in state
        and "decoder.up.0.block.0.conv1.weight" in state
    )


def training_only(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in state if k.startswith(TRAINING_ONLY)]


def config_from_state(state: dict[str, torch.Tensor], settings: dict[str, int]) -> CNNTokenizerConfig:
    ch, channels = state["encoder.conv_in.weight"].shape[:2]
    levels = count_indexed(state, "encoder.down")
    mults = tuple(state[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in range(levels))
    image_size = settings.get("image_size", 256)
    side = [image_size // 2**i for i in range(levels)]
    enc_attn = tuple(side[i] for i in range(levels) if f"encoder.down.{i}.attn.0.q.weight" in state)
    dec_attn = tuple(side[i] for i in range(levels) if f"decoder.up.{i}.attn.0.q.weight" in state)
    latent, moments = state["post_quant_conv.weight"].shape[0], state["quant_conv.weight"].shape[0]
    if moments not in (latent, 2 * latent):
        raise CheckpointError(f"quant_conv gives {moments} channels for a {latent}-channel latent")
    return CNNTokenizerConfig(
        image_size=image_size,
        channels=channels,
        latent_channels=latent,
        base_channels=ch,
        channel_mults=mults,
        res_blocks=count_indexed(state, "encoder.down.0.block"),
        enc_attn_resolutions=enc_attn,
        dec_attn_resolutions=dec_attn,
        mid_attention="encoder.mid.attn_1.q.weight" in state,
        variational=moments == 2 * latent,
        corruption=CorruptionConfig(mask_max=0.0, mask_min=0.0, noise_gamma=0.0),
    )


def keymap_for(cfg: CNNTokenizerConfig) -> tuple[KeyMap, list[Join]]:
    """The table for one architecture: upstream name → detok name, every block named; and the q, k, v joins."""
    rules: list[tuple] = []
    joins: list[Join] = []

    def resnet(up: str, down: str) -> None:
        rules.extend((f"{up}.{u}.{{w}}", f"{down}.{d}.{{w}}", SAME) for u, d in _RESNET)

    def attn(up: str, down: str, width: int) -> None:
        rules.append((f"{up}.norm.{{w}}", f"{down}.norm.{{w}}", SAME))
        for w in ("weight", "bias"):  # LDM's three 1×1 convolutions, stacked on the output channels
            join = Join(parts=tuple(f"{up}.{q}.{w}" for q in "qkv"), rows=(width, width, None))
            joins.append(join)
            rules.append((join.name, f"{down}.qkv.{w}", SAME))
        rules.append((f"{up}.proj_out.{{w}}", f"{down}.proj.{{w}}", SAME))

    levels, sides = len(cfg.channel_mults), cfg.stage_resolutions
    widths = [cfg.base_channels * m for m in cfg.channel_mults]

    def mid(up: str, down: str) -> None:
        resnet(f"{up}.block_1", f"{down}.0")
        if cfg.mid_attention:
            attn(f"{up}.attn_1", f"{down}.1", widths[-1])
        resnet(f"{up}.block_2", f"{down}.2")

    rules.append(("encoder.conv_in.{w}", "enc_in.{w}", SAME))
    for i in range(levels):
        k = 0
        for j in range(cfg.res_blocks):
            resnet(f"encoder.down.{i}.block.{j}", f"enc_stages.{i}.{k}")
            k += 1
            if sides[i] in cfg.enc_attn_resolutions:
                attn(f"encoder.down.{i}.attn.{j}", f"enc_stages.{i}.{k}", widths[i])
                k += 1
        if i < levels - 1:
            rules.append((f"encoder.down.{i}.downsample.conv.{{w}}", f"enc_stages.{i}.{k}.conv.{{w}}", SAME))
    mid("encoder.mid", "enc_mid")
    rules += [("encoder.norm_out.{w}", "enc_out.0.{w}", SAME), ("encoder.conv_out.{w}", "enc_out.2.{w}", SAME)]
    rules += [("quant_conv.{w}", "quant_conv.{w}", SAME), ("post_quant_conv.{w}", "decoder.post_quant_conv.{w}", SAME)]
    rules.append(("decoder.conv_in.{w}", "decoder.dec_in.{w}", SAME))
    mid("decoder.mid", "decoder.dec_mid")
    for i in range(levels):
        stage, k = levels - 1 - i, 0  # upstream's up[i] is level i; detok's stages run from the lowest resolution
        for j in range(cfg.res_blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", f"decoder.dec_stages.{stage}.{k}")
            k += 1
            if sides[i] in cfg.dec_attn_resolutions:
                attn(f"decoder.up.{i}.attn.{j}", f"decoder.dec_stages.{stage}.{k}", widths[i])
                k += 1
        if i > 0:
            rules.append((f"decoder.up.{i}.upsample.conv.{{w}}", f"decoder.dec_stages.{stage}.{k}.conv.{{w}}", SAME))
    rules += [
        ("decoder.norm_out.{w}", "decoder.dec_norm.{w}", SAME),
        ("decoder.conv_out.{w}", "decoder.dec_out.{w}", SAME),
    ]
    return KeyMap(rules), joins


def is_mar_kl16(cfg: CNNTokenizerConfig) -> bool:
    """MAR's KL-16 (whose users scale the latents by 0.2325): its exact architecture."""
    return (cfg.latent_channels, cfg.channel_mults, cfg.enc_attn_resolutions, cfg.dec_attn_resolutions) == (
        16, (1, 1, 2, 2, 4), (16,), ()
    ) and cfg.image_size == 256  # fmt: skip


def to_detok(state: dict[str, torch.Tensor], source_name: str, settings: dict[str, int]) -> CNNTokenizer:
    config = config_from_state(state, settings)
    keymap, joins = keymap_for(config)
    weights, _ = keymap.to_detok(join_tensors(state, joins, source_name), source_name)
    model = CNNTokenizer(config)
    model.load_state_dict(weights)
    return model.eval()


def to_upstream(model: CNNTokenizer) -> dict[str, torch.Tensor]:
    if model.config.vf is not None:
        raise ValueError("a tokenizer with a VF projection (vf) has no plain LDM layout; convert the autoencoder only")
    keymap, joins = keymap_for(model.config)
    return split_tensors(keymap.to_upstream(dict(model.state_dict()), lambda name, t: tuple(t.shape)), joins)


def default_stats(model: CNNTokenizer) -> tuple[tuple[float, ...], tuple[float, ...], str] | None:
    """The latent statistics the upstream applies without a file: MAR's KL-16 scale (mean 0, std 1/0.2325)."""
    if not is_mar_kl16(model.config):
        return None
    c = model.config.latent_channels
    return (0.0,) * c, (1 / MAR_KL16_SCALE,) * c, f"MAR's latent scale {MAR_KL16_SCALE} (LTH14/mar engine_mar.py)"


def read_stats(path: str | Path, key: str | None, channels: int) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """VA-VAE's `latents_stats.pt` ({"mean", "std"}, (1, C, 1, 1)); LightningDiT's latent_multiplier is 1.0."""
    if key is not None:
        raise CheckpointError(f"{path} is one set of statistics; --stats-key is for DeTok's stats.pkl")
    data: dict[str, Any] = load_checkpoint(path)
    try:
        mean, std = (torch.as_tensor(data[k], dtype=torch.float64).reshape(-1) for k in ("mean", "std"))
    except KeyError as e:
        raise CheckpointError(f"{path} has no {e.args[0]!r}: not a latents_stats.pt of {{'mean', 'std'}}") from None
    if mean.numel() != channels or std.numel() != channels:
        raise CheckpointError(f"{path} has {mean.numel()} channel statistics for a {channels}-channel latent")
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise CheckpointError(f"{path}: the latent statistics must be finite with std > 0")
    return tuple(mean.tolist()), tuple(std.tolist()), "mean/std"


def stats_cache(model: CNNTokenizer, key: str) -> dict[str, Any]:
    raise ValueError("an LDM autoencoder's statistics are not exported (upstream recomputes latents_stats.pt)")
