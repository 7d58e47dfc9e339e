"""facebookresearch/DiT and willisma/SiT (`models.py`, checked at ed81ce2 and 947f95b) ⇄ detok's `DiT` and `SiT`.

Released as `DiT-XL-2-256x256.pt` / `DiT-XL-2-512x512.pt` and `SiT-XL-2-256.pt`: bare state dicts of the EMA weights
(their train.py saves {"model", "ema", "opt", "args"}). SiT's network is DiT's line for line; only the objective
differs (DDPM ε-prediction with learned variances vs the linear interpolant's velocity), so the weights cannot tell
the two apart and a conversion names its format (`--format dit` or `--format sit`).

The network is detok's `DiTNet` exactly (tests/test_convert_dit.py); the layouts differ as follows:
- the patch embedding is a stride-p Conv2d upstream (timm's PatchEmbed), a Linear over (p, p, C) patches in detok;
- upstream's sin-cos position table is a frozen parameter, stored in the file; detok builds the same table as a
  buffer, so a conversion checks the stored one against it and export writes detok's;
- timm's Mlp names `fc1`/`fc2`, detok's Sequential `0`/`2`;
- SiT's XL/2 release carries learn-sigma rows in its output layer (2C channels per patch position), which SiT's
  forward discards (`x, _ = x.chunk(2, dim=1)`); detok's SiT outputs C channels, so the rows are dropped and
  `converted_from.dropped_learn_sigma_rows` says how many. Export writes the C-channel layout, which is what
  upstream's sample.py builds for a `--ckpt` file (`learn_sigma=False`); the dropped rows are not restored.

What the weights cannot tell is upstream's: 1000 training steps on the linear β schedule, 250 respaced DDPM sampling
steps (DiT); the SDE sampler of SiT's sample.py with its defaults (250 steps: Euler–Maruyama, the "sigma" diffusion
of norm 1, a last step of 0.04) and the model time t ∈ [0, 1] (SiT feeds t itself to the timestep embedder, not
1000·t); guidance of the first 3 channels only (`forward_with_cfg`, "for exact reproducibility reasons"), kept as
`cfg_channels=3`. The guidance scale is a sampling argument: the upstream's values are recorded under
`converted_from.upstream_sampling`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from detok.checkpoint import CheckpointError
from detok.convert.keymap import PATCH_CONV, SAME, KeyMap
from detok.generators.dit import DiT, DiTConfig, SiT, SiTConfig
from detok.layers import sincos_pos_embed
from detok.objectives.diffusion import DDPMConfig
from detok.objectives.flow import FlowConfig

# --------------------------------------------------------------------------------------------------
# Pieces shared by the DiT family's converters (DiT, SiT, LightningDiT)
# --------------------------------------------------------------------------------------------------

# The upstream tables' heads by width (DiT_models, SiT_models, LightningDiT_models): heads are not in the weights.
HEADS_BY_WIDTH = {384: 6, 768: 12, 1024: 16, 1152: 16, 1536: 24, 1792: 28}
SETTABLE = ("heads",)
CFG_CHANNELS = 3  # forward_with_cfg: `eps, rest = model_out[:, :3], model_out[:, 3:]`
TABLE_ATOL = 1e-5  # a stored fixed table (sin-cos, RoPE) must be detok's within this


def count_blocks(state: dict[str, torch.Tensor]) -> int:
    found = {int(m.group(1)) for k in state for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
    return max(found) + 1 if found else 0


def heads_for(width: int, settings: dict[str, int]) -> int:
    if "heads" in settings:
        return settings["heads"]
    if width not in HEADS_BY_WIDTH:
        raise CheckpointError(
            f"width {width} is not one of the upstream model tables' widths {sorted(HEADS_BY_WIDTH)}, and the number "
            "of attention heads is not stored in the weights: give it with --set model.heads=N"
        )
    return HEADS_BY_WIDTH[width]


def read_layout(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Latent channels, width, patch size, grid side, classes and output channels per patch, off the tensor shapes."""
    width, channels, p, _ = state["x_embedder.proj.weight"].shape
    tokens = state["pos_embed"].shape[1]
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise CheckpointError(f"pos_embed holds {tokens} positions: not a square grid")
    out = state["final_layer.linear.weight"].shape[0] // (p * p)
    if out not in (channels, 2 * channels):
        raise CheckpointError(f"the output layer gives {out} channels per position for {channels}-channel latents")
    classes = state["y_embedder.embedding_table.weight"].shape[0] - 1  # the last row is the null class
    return {"channels": channels, "width": width, "patch": p, "grid": grid, "classes": classes, "out": out}


def check_table(stored: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """A fixed table the upstream stores beside its weights must be the one detok builds (then it is not kept)."""
    if stored.shape != expected.shape or not torch.allclose(stored.float(), expected, rtol=0, atol=TABLE_ATOL):
        raise CheckpointError(
            f"{name} is not the fixed table detok builds for this architecture (a learned or differently built "
            "table): this network is not expressible in detok's class"
        )


def sincos_table(width: int, grid: int) -> torch.Tensor:
    """Upstream's `pos_embed` (1, T, D): the sin-cos table detok's backbones build as a buffer."""
    return sincos_pos_embed(width, (grid, grid))[None]


def drop_sigma_rows(tensor: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    """An output layer's weight or bias with 2C channels per patch position, cut to the first C (the prediction):
    rows run over (p, p, 2C), as the upstream's unpatchify reads them."""
    return tensor.reshape(p * p, 2 * channels, *tensor.shape[1:])[:, :channels].reshape(-1, *tensor.shape[1:])


def sigma_notes(state: dict[str, torch.Tensor], keep_sigma: bool) -> dict[str, Any]:
    """What a conversion leaves out of a network that discards half its output: the learn-sigma rows."""
    layout = read_layout(state)
    if keep_sigma or layout["out"] == layout["channels"]:
        return {}
    rows = layout["patch"] ** 2 * layout["channels"]
    return {"dropped_learn_sigma_rows": {"final_layer.linear.weight": rows, "final_layer.linear.bias": rows}}


def without_sigma(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    layout = read_layout(state)
    if layout["out"] == layout["channels"]:
        return state
    p, c = layout["patch"], layout["channels"]
    return {k: drop_sigma_rows(v, p, c) if k.startswith("final_layer.linear.") else v for k, v in state.items()}


def patch_shape(config) -> Callable[[str, torch.Tensor], tuple]:
    """Upstream shapes for `KeyMap.to_upstream`: the patch conv (D, C, p, p); anything else as detok holds it."""

    def shape(name: str, tensor: torch.Tensor) -> tuple:
        if name == "x_embedder.proj.weight":
            return (config.width, config.latent_channels, config.patch_size, config.patch_size)
        return tuple(tensor.shape)

    return shape


def no_stats(path: str | Path, key: str | None, channels: int):
    raise CheckpointError(
        f"{path}: a generator keeps no latent statistics; give them to its tokenizer's conversion (the generator "
        "reads the latents its tokenizer normalises)"
    )


def no_stats_export(model, key: str) -> dict[str, Any]:
    raise ValueError("a generator has no latent statistics to export; export its tokenizer's")


# --------------------------------------------------------------------------------------------------
# DiT and SiT
# --------------------------------------------------------------------------------------------------

KEYMAP = KeyMap(
    [
        ("x_embedder.proj.weight", "net.x_embedder.weight", PATCH_CONV),
        ("x_embedder.proj.bias", "net.x_embedder.bias", SAME),
        ("t_embedder.mlp.{i}.{w}", "net.t_embedder.mlp.{i}.{w}", SAME),
        ("y_embedder.embedding_table.weight", "net.y_embedder.table.weight", SAME),
        ("blocks.{i}.attn.qkv.{w}", "net.blocks.{i}.attn.qkv.{w}", SAME),
        ("blocks.{i}.attn.proj.{w}", "net.blocks.{i}.attn.proj.{w}", SAME),
        ("blocks.{i}.mlp.fc1.{w}", "net.blocks.{i}.mlp.0.{w}", SAME),
        ("blocks.{i}.mlp.fc2.{w}", "net.blocks.{i}.mlp.2.{w}", SAME),
        ("blocks.{i}.adaLN_modulation.1.{w}", "net.blocks.{i}.adaLN_modulation.1.{w}", SAME),
        ("final_layer.linear.{w}", "net.final_layer.linear.{w}", SAME),
        ("final_layer.adaLN_modulation.1.{w}", "net.final_layer.adaLN_modulation.1.{w}", SAME),
    ]
)


def matches_backbone(state: dict[str, torch.Tensor]) -> bool:
    """DiT's (and SiT's) network: timm's Mlp in the blocks, no norm weights (LayerNorm without affine)."""
    return {"x_embedder.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"} <= set(state) and not any(
        k.startswith("blocks.0.norm1.") for k in state
    )


class DiTFamilyFormat:
    """One of this module's two formats: the same network and key map, a different objective."""

    MODEL_CLS: type
    SETTABLE = SETTABLE

    def __init__(self, name: str, model_cls: type, upstream: str, commit: str, sampling: dict[str, Any]):
        self.NAME, self.MODEL_CLS, self.UPSTREAM, self.VERIFIED_COMMIT = name, model_cls, upstream, commit
        self._sampling = sampling

    def matches(self, state: dict[str, torch.Tensor]) -> bool:
        return matches_backbone(state)

    def notes(self, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        return sigma_notes(state, keep_sigma=self.MODEL_CLS is DiT)

    def config_from_state(self, state: dict[str, torch.Tensor], settings: dict[str, int]) -> DiTConfig | SiTConfig:
        layout = read_layout(state)
        width, c = layout["width"], layout["channels"]
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
        common = dict(
            latent_channels=c,
            input_size=(layout["grid"] * layout["patch"],) * 2,
            num_classes=layout["classes"],
            class_dropout=0.1,
            patch_size=layout["patch"],
            width=width,
            depth=count_blocks(state),
            heads=heads_for(width, settings),
            mlp_ratio=hidden / width,
            qk_norm=False,
            cfg_channels=min(CFG_CHANNELS, c),
        )
        if self.MODEL_CLS is DiT:
            learn_sigma = layout["out"] == 2 * c
            return DiTConfig(**common, diffusion=DDPMConfig(learn_sigma=learn_sigma, sample_steps=250))
        flow = FlowConfig(t_dist="uniform", sampler="sde", sample_steps=250, time_scale=1.0, sde_last_step=0.04)
        return SiTConfig(**common, flow=flow)

    def to_detok(self, state: dict[str, torch.Tensor], source_name: str, settings: dict[str, int]):
        config = self.config_from_state(state, settings)
        layout = read_layout(state)
        check_table(state["pos_embed"], sincos_table(layout["width"], layout["grid"]), "pos_embed")
        if self.MODEL_CLS is SiT:
            state = without_sigma(state)
        weights, _ = KEYMAP.to_detok({k: v for k, v in state.items() if k != "pos_embed"}, source_name)
        model = self.MODEL_CLS(config)
        model.load_state_dict(weights)
        return model.eval()

    def to_upstream(self, model) -> dict[str, torch.Tensor]:
        cfg = model.config
        if type(model) is not self.MODEL_CLS or len(cfg.input_size) != 2 or cfg.qk_norm:
            raise ValueError(
                f"only a {self.MODEL_CLS.__name__} on a 2-D latent grid without QK-norm has {self.UPSTREAM}'s layout"
            )
        grid = cfg.input_size[0] // cfg.patch_size
        if cfg.input_size[0] != cfg.input_size[1]:
            raise ValueError(f"upstream's grid is square; this model's latents are {cfg.input_size}")
        state = KEYMAP.to_upstream(dict(model.state_dict()), patch_shape(cfg))
        return {"pos_embed": sincos_table(cfg.width, grid), **state}

    read_stats = staticmethod(no_stats)
    stats_cache = staticmethod(no_stats_export)
    EXPORT_ENTRIES = ("model", "ema")  # train.py's names; sample.py's find_model takes "ema"

    def upstream_sampling(self, model) -> dict[str, Any]:
        return dict(self._sampling)


DIT = DiTFamilyFormat(
    "dit",
    DiT,
    "facebookresearch/DiT models.py",
    "ed81ce2229091fd4ecc9a223645f95cf379d582b",
    # sample_ddp.py's default scale, with which the README reports FID-50K 2.27 (256 px) and 3.04 (512 px);
    # sample.py's 4.0 is for pictures
    {"cfg": 1.5, "cfg_sample_py": 4.0, "steps": 250, "vae": "sd-vae-ft-ema, latents × 0.18215"},
)
SIT = DiTFamilyFormat(
    "sit",
    SiT,
    "willisma/SiT models.py + transport/",
    "947f95bd3a510e9af441d38c1e9f72e0eee873c5",
    # README: FID-50K 2.06 for SiT-XL/2 with the SDE sampler; the scale is the SiT paper's for that number
    # (sample_ddp.py's default is 1.0, sample.py's 4.0)
    {"cfg": 1.5, "cfg_sample_ddp_py": 1.0, "cfg_sample_py": 4.0, "mode": "SDE", "vae": "sd-vae-ft-ema, × 0.18215"},
)
