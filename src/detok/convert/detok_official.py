"""Jiawei-Yang/DeTok's l-DeTok tokenizer (`models/detok.py`, checked at 706f7ac) ⇄ detok's `DeTok`.

Released as `detok-BB-gamm3.0-m0.7.pth` and its `-decoder_tuned` twin (huggingface.co/jjiaweiyang/l-DeTok): a
`torch.save` of {"model", "model_ema", …} in the layout below. The official architecture is detok's
`ARCHITECTURES["official"]` (unit-grid RoPE, `ln_pre`, 3×3 `conv_out`, SwiGLU int(2/3·4d)); detok's patch embedding
is a Linear over (p, p, C) patches where upstream has a stride-p Conv2d, and its per-patch output projection a
Linear where upstream has a 1×1 Conv2d — the same arithmetic, rearranged weights.

Latent statistics: upstream caches them in `stats.pkl` ({key: {"single": (mean, std), "channel": (mean, std)}}, the
"channel" pair over the 2C posterior moments, of which the first C — the means — normalise the latents).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from detok.checkpoint import CheckpointError
from detok.convert.keymap import CONV1X1, PATCH_CONV, SAME, KeyMap, count_indexed, heads_for
from detok.convert.safe_load import load_raw_pickle
from detok.tokenizers.corruption import CorruptionConfig
from detok.tokenizers.detok import ARCHITECTURES, DeTok, DeTokConfig

NAME = "detok-tokenizer"
MODEL_CLS = DeTok
UPSTREAM = "Jiawei-Yang/DeTok models/detok.py"
VERIFIED_COMMIT = "706f7ac6ed681a85ee2210234df3576e49005f53"

_BLOCK = [
    ("norm1.weight", "norm1.weight"),
    ("attn.qkv.{w}", "attn.qkv.{w}"),
    ("attn.proj.{w}", "attn.proj.{w}"),
    ("norm2.weight", "norm2.weight"),
    ("mlp.w12.{w}", "mlp.w13.{w}"),  # [gate; value], fused, in the same order
    ("mlp.w3.{w}", "mlp.w2.{w}"),
]

KEYMAP = KeyMap(
    [
        ("encoder.patch_embed.0.weight", "patch_embed.weight", PATCH_CONV),
        ("encoder.patch_embed.0.bias", "patch_embed.bias", SAME),
        ("encoder.positional_embedding", "enc_pos", SAME),
        ("encoder.ln_pre.weight", "enc_ln_pre.weight", SAME),
        *[(f"encoder.transformer.{{i}}.{u}", f"enc_blocks.{{i}}.{d}", SAME) for u, d in _BLOCK],
        ("encoder.ln_post.weight", "enc_norm.weight", SAME),
        ("encoder.latent_head.{w}", "enc_head.{w}", SAME),
        ("decoder.positional_embedding", "dec_pos", SAME),
        ("decoder.mask_token", "mask_token", SAME),
        ("decoder.decoder_embed.{w}", "dec_embed.{w}", SAME),
        ("decoder.ln_pre.weight", "dec_ln_pre.weight", SAME),
        *[(f"decoder.transformer.{{i}}.{u}", f"dec_blocks.{{i}}.{d}", SAME) for u, d in _BLOCK],
        ("decoder.ln_post.weight", "dec_norm.weight", SAME),
        ("decoder.ffn.1.weight", "dec_head.weight", CONV1X1),
        ("decoder.ffn.1.bias", "dec_head.bias", SAME),
        ("decoder.conv_out.{w}", "dec_conv_out.{w}", SAME),
    ]
)

# Upstream's SIZE_DICT: heads are not in the weights, so a width names them (models/model_utils.py).
HEADS_BY_WIDTH = {512: 8, 768: 12, 1024: 16, 1152: 16, 1280: 16}


def matches(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict looks like an official DeTok tokenizer."""
    return "encoder.latent_head.weight" in state and "decoder.conv_out.weight" in state


def corruption_from_name(name: str) -> CorruptionConfig:
    """γ and M from a released file name (`detok-BB-gamm3.0-m0.7.pth`); the paper's 3.0 and 0.7 otherwise. They only
    matter for further training: encoding and decoding apply no corruption."""
    m = re.search(r"gamma?(\d+(?:\.\d+)?)-m(\d+(?:\.\d+)?)", name)
    gamma, mask = (float(m.group(1)), float(m.group(2))) if m else (3.0, 0.7)
    return CorruptionConfig(noise_gamma=gamma, mask_max=mask)


def config_from_state(state: dict[str, torch.Tensor], source_name: str, heads: dict[str, int]) -> DeTokConfig:
    """The `DeTokConfig` (official architecture) that holds `state`, read off the tensor shapes."""
    enc_w, channels, p, _ = state["encoder.patch_embed.0.weight"].shape
    tokens, dec_w = state["decoder.positional_embedding"].shape[1:]
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise CheckpointError(f"{tokens} decoder positions do not make a square grid")
    hidden = state["encoder.transformer.0.mlp.w3.weight"].shape[1]
    mlp_ratio = 4.0
    if hidden != int(2 / 3 * enc_w * mlp_ratio):
        raise CheckpointError(f"SwiGLU width {hidden} is not upstream's int(2/3·4·{enc_w}): not an official DeTok")
    return DeTokConfig(
        **ARCHITECTURES["official"],
        image_size=grid * p,
        channels=channels,
        patch_size=p,
        latent_channels=state["encoder.latent_head.weight"].shape[0] // 2,
        enc_width=enc_w,
        enc_depth=count_indexed(state, "encoder.transformer"),
        enc_heads=heads_for(enc_w, "enc", heads, HEADS_BY_WIDTH, "upstream's sizes"),
        dec_width=dec_w,
        dec_depth=count_indexed(state, "decoder.transformer"),
        dec_heads=heads_for(dec_w, "dec", heads, HEADS_BY_WIDTH, "upstream's sizes"),
        mlp_ratio=mlp_ratio,
        corruption=corruption_from_name(source_name),
    )


def read_stats(path: str | Path, key: str | None, channels: int) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """Per-channel (mean, std) of the latents from upstream's `stats.pkl`, and the key they were read under."""
    cache = load_raw_pickle(path)
    if not isinstance(cache, dict) or not cache:
        raise CheckpointError(f"{path} is not a DeTok stats cache (a dict of {{key: {{'channel': (mean, std)}}}})")
    if key is None:
        if len(cache) > 1:
            raise CheckpointError(f"{path} holds statistics for {sorted(cache)}: choose one with --stats-key")
        key = next(iter(cache))
    if key not in cache:
        raise CheckpointError(f"{path} has no statistics under {key!r}; it has {sorted(cache)}")
    entry = cache[key]
    try:
        mean, std = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in entry["channel"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}[{key!r}] has no per-channel ('channel') statistics ({e})") from None
    if mean.numel() not in (channels, 2 * channels):
        raise CheckpointError(f"{path}[{key!r}] has {mean.numel()} channel statistics for a {channels}-channel latent")
    mean, std = mean[:channels], std[:channels]  # upstream keeps the first C of the 2C moments: the means
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise CheckpointError(f"{path}[{key!r}]: the latent statistics must be finite with std > 0")
    return tuple(mean.tolist()), tuple(std.tolist()), key


def to_detok(state: dict[str, torch.Tensor], source_name: str, heads: dict[str, int]) -> DeTok:
    """An official DeTok state dict as a detok `DeTok` (eval mode)."""
    config = config_from_state(state, source_name, heads)
    weights, _ = KEYMAP.to_detok(state, source_name)
    model = DeTok(config)
    model.load_state_dict(weights)
    return model.eval()


def to_upstream(model: DeTok) -> dict[str, torch.Tensor]:
    """A detok `DeTok` in the official architecture as upstream's state dict (weights only)."""
    arch = model.config.architecture
    if arch != "official" or model.config.distill is not None:
        raise ValueError(
            f"only the official architecture without distillation has an upstream layout; this tokenizer is {arch!r}"
            + (" with a distillation projector" if model.config.distill is not None else "")
        )
    cfg = model.config
    state = {k: v for k, v in model.state_dict().items()}

    def shape(name: str, tensor: torch.Tensor) -> tuple:
        assert name == "encoder.patch_embed.0.weight"
        return (cfg.enc_width, cfg.channels, cfg.patch_size, cfg.patch_size)

    return KEYMAP.to_upstream(state, shape)


def stats_cache(model: DeTok, key: str) -> dict[str, Any]:
    """The tokenizer's latent statistics as upstream's `stats.pkl` entry {key: {"single", "channel"}}.

    upstream's "channel" pair covers the 2C posterior moments; detok keeps only the C means' statistics, so the
    log-variance half is written as mean 0, std 1 (upstream reads only the first C). "single" is exact: every channel
    has the same count, so the global mean is the mean of the channel means and the global variance follows.
    """
    cfg = model.config
    if cfg.latent_mean is None or cfg.latent_std is None:
        raise ValueError("this tokenizer has no latent statistics to export; compute them with `detok tokenizer stats`")
    mean = torch.tensor(cfg.latent_mean, dtype=torch.float32)
    std = torch.tensor(cfg.latent_std, dtype=torch.float32)
    single_mean = mean.mean()
    single_std = ((std**2 + mean**2).mean() - single_mean**2).sqrt()
    channel = (torch.cat([mean, torch.zeros_like(mean)]), torch.cat([std, torch.ones_like(std)]))
    return {key: {"single": (single_mean, single_std), "channel": channel}}
