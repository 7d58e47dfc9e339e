"""diffusers' `AutoencoderKL` (Stable Diffusion's KL-8 VAE, `stabilityai/sd-vae-ft-ema` / `-mse`) ⇄ `CNNTokenizer`.

DiT and SiT encode and decode with this VAE (facebookresearch/DiT `sample.py`: `AutoencoderKL.from_pretrained(
"stabilityai/sd-vae-ft-ema")`, latents × 0.18215). Its weights (`diffusion_pytorch_model.safetensors` or `.bin`) are
LDM's architecture under diffusers' names: `down_blocks[i].resnets[j]` / `downsamplers[0]`, a mid-block
`resnets[0], attentions[0], resnets[1]` whose attention has Linear `to_q/to_k/to_v/to_out.0` (older files:
`query/key/value/proj_attn`), and `up_blocks[i]` indexed from the *lowest* resolution, as detok's decoder stages run.
Only the mid-blocks attend (diffusers' VAE has no attention inside its levels).
"""

from __future__ import annotations

import re

import torch

from detok.checkpoint import CheckpointError
from detok.convert.keymap import SAME, Join, KeyMap, Transform, count_indexed, join_tensors, split_tensors
from detok.tokenizers.cnn import CNNTokenizer, CNNTokenizerConfig
from detok.tokenizers.corruption import CorruptionConfig

NAME = "diffusers-vae"
MODEL_CLS = CNNTokenizer
UPSTREAM = "huggingface/diffusers AutoencoderKL (the VAE of DiT / SiT: stabilityai/sd-vae-ft-ema)"
VERIFIED_COMMIT = "diffusers 0.42.1"
SETTABLE = ("image_size",)
SINGLE_WEIGHTS = True  # a diffusers weights file is one state dict
SD_SCALE = 0.18215  # the SD VAE's scaling_factor (diffusers config; DiT/SiT sample.py)

# A Linear (C_out, C_in) where detok has a 1×1 convolution (C_out, C_in, 1, 1).
LINEAR_AS_CONV = Transform(
    "linear→conv1x1",
    lambda t: t[:, :, None, None] if t.dim() == 2 else t,
    lambda t: t[:, :, 0, 0] if t.dim() == 4 else t,
)
_RESNET = [("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2"), ("conv_shortcut", "skip")]
_ATTN_NAMES = {"new": ("to_q", "to_k", "to_v", "to_out.0"), "old": ("query", "key", "value", "proj_attn")}


def matches(state: dict[str, torch.Tensor]) -> bool:
    return "encoder.conv_in.weight" in state and any(k.startswith("encoder.down_blocks.") for k in state)


def _attn_names(state: dict) -> str:
    return "old" if "encoder.mid_block.attentions.0.query.weight" in state else "new"


def config_from_state(state: dict[str, torch.Tensor], settings: dict[str, int]) -> CNNTokenizerConfig:
    ch, channels = state["encoder.conv_in.weight"].shape[:2]
    levels = count_indexed(state, "encoder.down_blocks")
    widths = [state[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in range(levels)]
    if any(w % ch for w in widths):
        raise CheckpointError(f"level widths {widths} are not multiples of the first ({ch}): not LDM's layout")
    mults = tuple(w // ch for w in widths)
    latent, moments = state["post_quant_conv.weight"].shape[0], state["quant_conv.weight"].shape[0]
    if any(re.match(r"(en|de)coder\.(down|up)_blocks\.\d+\.attentions\.", k) for k in state):
        raise CheckpointError("attention inside the levels is not diffusers' AutoencoderKL layout")
    return CNNTokenizerConfig(
        image_size=settings.get("image_size", 256),
        channels=channels,
        latent_channels=latent,
        base_channels=ch,
        channel_mults=mults,
        res_blocks=count_indexed(state, "encoder.down_blocks.0.resnets"),
        mid_attention=any(k.startswith("encoder.mid_block.attentions.0.") for k in state),
        variational=moments == 2 * latent,
        corruption=CorruptionConfig(mask_max=0.0, mask_min=0.0, noise_gamma=0.0),
    )


def keymap_for(cfg: CNNTokenizerConfig, names: str = "new") -> tuple[KeyMap, list[Join]]:
    q, k, v, out = _ATTN_NAMES[names]
    rules: list[tuple] = []
    joins: list[Join] = []
    widths = [cfg.base_channels * m for m in cfg.channel_mults]
    levels = len(widths)

    def resnet(up: str, down: str) -> None:
        rules.extend((f"{up}.{u}.{{w}}", f"{down}.{d}.{{w}}", SAME) for u, d in _RESNET)

    def mid(up: str, down: str) -> None:
        resnet(f"{up}.resnets.0", f"{down}.0")
        if cfg.mid_attention:
            a = f"{up}.attentions.0"
            rules.append((f"{a}.group_norm.{{w}}", f"{down}.1.norm.{{w}}", SAME))
            for w in ("weight", "bias"):
                join = Join(parts=tuple(f"{a}.{n}.{w}" for n in (q, k, v)), rows=(widths[-1], widths[-1], None))
                joins.append(join)
                rules.append((join.name, f"{down}.1.qkv.{w}", LINEAR_AS_CONV))
            rules.append((f"{a}.{out}.{{w}}", f"{down}.1.proj.{{w}}", LINEAR_AS_CONV))
        resnet(f"{up}.resnets.1", f"{down}.2")

    rules.append(("encoder.conv_in.{w}", "enc_in.{w}", SAME))
    for i in range(levels):
        for j in range(cfg.res_blocks):
            resnet(f"encoder.down_blocks.{i}.resnets.{j}", f"enc_stages.{i}.{j}")
        if i < levels - 1:
            rules.append(
                (
                    f"encoder.down_blocks.{i}.downsamplers.0.conv.{{w}}",
                    f"enc_stages.{i}.{cfg.res_blocks}.conv.{{w}}",
                    SAME,
                )
            )
    mid("encoder.mid_block", "enc_mid")
    rules += [("encoder.conv_norm_out.{w}", "enc_out.0.{w}", SAME), ("encoder.conv_out.{w}", "enc_out.2.{w}", SAME)]
    rules += [("quant_conv.{w}", "quant_conv.{w}", SAME), ("post_quant_conv.{w}", "decoder.post_quant_conv.{w}", SAME)]
    rules.append(("decoder.conv_in.{w}", "decoder.dec_in.{w}", SAME))
    mid("decoder.mid_block", "decoder.dec_mid")
    for b in range(levels):  # diffusers' up_blocks run from the lowest resolution, as detok's stages do
        for j in range(cfg.res_blocks + 1):
            resnet(f"decoder.up_blocks.{b}.resnets.{j}", f"decoder.dec_stages.{b}.{j}")
        if b < levels - 1:
            rules.append(
                (
                    f"decoder.up_blocks.{b}.upsamplers.0.conv.{{w}}",
                    f"decoder.dec_stages.{b}.{cfg.res_blocks + 1}.conv.{{w}}",
                    SAME,
                )
            )
    rules += [
        ("decoder.conv_norm_out.{w}", "decoder.dec_norm.{w}", SAME),
        ("decoder.conv_out.{w}", "decoder.dec_out.{w}", SAME),
    ]
    return KeyMap(rules), joins


def to_detok(state: dict[str, torch.Tensor], source_name: str, settings: dict[str, int]) -> CNNTokenizer:
    config = config_from_state(state, settings)
    keymap, joins = keymap_for(config, _attn_names(state))
    weights, _ = keymap.to_detok(join_tensors(state, joins, source_name), source_name)
    model = CNNTokenizer(config)
    model.load_state_dict(weights)
    return model.eval()


def to_upstream(model: CNNTokenizer) -> dict[str, torch.Tensor]:
    """detok's weights under diffusers' current names (`to_q`, …), Linear attention projections."""
    cfg = model.config
    if cfg.enc_attn_resolutions or cfg.dec_attn_resolutions or cfg.vf is not None:
        raise ValueError("only a CNN tokenizer with attention in the mid-blocks alone has diffusers' VAE layout")
    keymap, joins = keymap_for(cfg)
    return split_tensors(keymap.to_upstream(dict(model.state_dict()), lambda name, t: tuple(t.shape)), joins)


def is_sd_vae(cfg: CNNTokenizerConfig) -> bool:
    return (cfg.latent_channels, cfg.base_channels, cfg.channel_mults, cfg.res_blocks) == (4, 128, (1, 2, 4, 4), 2)


def default_stats(model: CNNTokenizer) -> tuple[tuple[float, ...], tuple[float, ...], str] | None:
    """SD's VAE latents are multiplied by its scaling_factor 0.18215: as statistics, mean 0 and std 1/0.18215."""
    if not is_sd_vae(model.config):
        return None
    return (0.0,) * 4, (1 / SD_SCALE,) * 4, f"SD-VAE's scaling_factor {SD_SCALE} (diffusers config; DiT/SiT sample.py)"


def read_stats(path, key, channels):
    raise CheckpointError(f"{path}: diffusers' VAE has no statistics file; its scaling_factor is applied by default")


def stats_cache(model: CNNTokenizer, key: str):
    raise ValueError("diffusers' VAE keeps its scaling_factor in its config.json, not a statistics file")
