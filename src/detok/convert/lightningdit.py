"""hustvl/LightningDiT (`models/lightningdit.py`, checked at 2725fed) ⇄ detok's `LightningDiT`.

Released as `lightningdit-xl-imagenet256-64ep.pt` and `…-800ep.pt`: LightningDiT-XL/1 on VA-VAE f16d32 latents,
train.py's {"model", "ema", "opt", "config"} (the EMA weights are taken by default). The released configuration
(`configs/lightningdit_xl_vavae_f16d32.yaml`) is SwiGLU, RoPE and RMSNorm without QK-norm, p = 1, 32 channels.

The network is detok's `LightningDiTNet` exactly (tests/test_convert_lightningdit.py), given `swiglu_multiple=1`:
upstream's SwiGLU width is `int(2/3 · mlp_hidden_dim)` without rounding up. Layout differences:
- the patch embedding is a stride-p Conv2d upstream, a Linear over (p, p, C) patches in detok;
- the sin-cos position table (a frozen parameter) and the RoPE tables `feat_rope.freqs_cos/sin` (buffers) are stored
  in the file; detok builds the same tables (the RoPE one per channel pair: the same angles — EVA's 2-D RoPE with
  θ = 10000, rows on the first half of a head, columns on the second, pairs interleaved), so a conversion checks
  the stored ones and export writes detok's;
- the SwiGLU's fused `w12` / `w3` are detok's `w13` / `w2`; the final norm `norm_final` is `norm`.
Upstream's other flags are refused by name: `use_rmsnorm=False` (LayerNorm), `use_rope=False`, `use_swiglu=False`,
`wo_shift=True` (adaLN without shifts) — detok's LightningDiT has none of these.

Sampling as the released config: the Euler ODE with 250 time points (249 steps), `timestep_shift=0.3` on upstream's
noise→data time (detok's SD3-form shift on noise levels: 1/0.3; see `_PAPER_SHIFT` in generators/lightningdit.py),
guidance off while t < `cfg_interval_start` 0.11 (noise levels [0, 0.89]) and on the first 3 channels only
(`cfg_channels=3`), the model time t ∈ [0, 1] itself (`time_scale=1`). The training objective as its config: linear
interpolant, velocity, logit-normal t (its cosine-similarity loss term is not in detok's objective).
"""

from __future__ import annotations

from typing import Any

import torch

from detok.checkpoint import CheckpointError
from detok.convert.dit import (
    CFG_CHANNELS,
    check_table,
    count_blocks,
    heads_for,
    no_stats,
    no_stats_export,
    patch_shape,
    read_layout,
    sigma_notes,
    sincos_table,
    without_sigma,
)
from detok.convert.keymap import PATCH_CONV, SAME, KeyMap
from detok.generators.lightningdit import LightningDiT, LightningDiTConfig
from detok.layers import grid_positions, rope_tables, swiglu_hidden_dim
from detok.objectives.flow import FlowConfig

NAME = "lightningdit"
MODEL_CLS = LightningDiT
UPSTREAM = "hustvl/LightningDiT models/lightningdit.py + transport/"
VERIFIED_COMMIT = "2725fed42a14898744433809949834e26957bcdd"
SETTABLE = ("heads",)  # not in the weights: upstream's table by width unless --set model.heads=N
EXPORT_ENTRIES = ("model", "ema")  # train.py's names; inference.py takes "ema"
read_stats, stats_cache = no_stats, no_stats_export

# configs/lightningdit_xl_vavae_f16d32.yaml, `sample:`
STEPS = 249  # num_sampling_steps 250 time points
SHIFT = 1 / 0.3  # timestep_shift 0.3 on the noise→data time
CFG_INTERVAL = (0.0, 0.89)  # cfg_interval_start 0.11
# its cfg_scale, with the comment's two checkpoints: 10.0 for the 64-epoch model (FID 2.11), 6.7 for 800 (FID 1.35)
SAMPLING = {"cfg": 10.0, "cfg_800ep": 6.7, "vae": "vavae_f16d32, latents_stats.pt, latent_multiplier 1.0"}
FIXED = ("pos_embed", "feat_rope.freqs_cos", "feat_rope.freqs_sin")  # tables detok builds; checked, not kept

KEYMAP = KeyMap(
    [
        ("x_embedder.proj.weight", "net.x_embedder.weight", PATCH_CONV),
        ("x_embedder.proj.bias", "net.x_embedder.bias", SAME),
        ("t_embedder.mlp.{i}.{w}", "net.t_embedder.mlp.{i}.{w}", SAME),
        ("y_embedder.embedding_table.weight", "net.y_embedder.table.weight", SAME),
        ("blocks.{i}.norm1.weight", "net.blocks.{i}.norm1.weight", SAME),
        ("blocks.{i}.norm2.weight", "net.blocks.{i}.norm2.weight", SAME),
        ("blocks.{i}.attn.qkv.{w}", "net.blocks.{i}.attn.qkv.{w}", SAME),
        ("blocks.{i}.attn.q_norm.weight", "net.blocks.{i}.attn.q_norm.weight", SAME),
        ("blocks.{i}.attn.k_norm.weight", "net.blocks.{i}.attn.k_norm.weight", SAME),
        ("blocks.{i}.attn.proj.{w}", "net.blocks.{i}.attn.proj.{w}", SAME),
        ("blocks.{i}.mlp.w12.{w}", "net.blocks.{i}.mlp.w13.{w}", SAME),
        ("blocks.{i}.mlp.w3.{w}", "net.blocks.{i}.mlp.w2.{w}", SAME),
        ("blocks.{i}.adaLN_modulation.1.{w}", "net.blocks.{i}.adaLN_modulation.1.{w}", SAME),
        ("final_layer.norm_final.weight", "net.final_layer.norm.weight", SAME),
        ("final_layer.linear.{w}", "net.final_layer.linear.{w}", SAME),
        ("final_layer.adaLN_modulation.1.{w}", "net.final_layer.adaLN_modulation.1.{w}", SAME),
    ]
)

# upstream flags detok's LightningDiT cannot express, each with the weight that shows it is off
_REQUIRED = {
    "blocks.0.norm1.weight": "use_rmsnorm=True (RMSNorm; LayerNorm without affine has no weight)",
    "feat_rope.freqs_cos": "use_rope=True (2-D RoPE)",
    "blocks.0.mlp.w12.weight": "use_swiglu=True (SwiGLU; timm's GELU Mlp otherwise)",
}


def matches(state: dict[str, torch.Tensor]) -> bool:
    """hustvl's LightningDiT: DiT's embedders and layout with any of its additions (RMSNorm, SwiGLU, RoPE)."""
    return {"x_embedder.proj.weight", "t_embedder.mlp.0.weight"} <= set(state) and any(k in state for k in _REQUIRED)


def rope_cos_sin(config: LightningDiTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """detok's RoPE table as upstream's per-channel `freqs_cos`, `freqs_sin` (T, head_dim): each pair's angle twice."""
    grid = tuple(s // config.patch_size for s in config.input_size)
    table = rope_tables(grid_positions(*grid), config.width // config.heads, config.rope_theta)  # (T, hd/2, 2)
    cos, sin = table.repeat_interleave(2, dim=1).unbind(-1)  # (T, hd) each
    return cos, sin


def config_from_state(state: dict[str, torch.Tensor], settings: dict[str, int]) -> LightningDiTConfig:
    missing = [flag for key, flag in _REQUIRED.items() if key not in state]
    if missing:
        raise CheckpointError(f"a LightningDiT without {'; '.join(missing)}: detok's LightningDiT always has it")
    layout = read_layout(state)
    width, c, p = layout["width"], layout["channels"], layout["patch"]
    if state["blocks.0.adaLN_modulation.1.weight"].shape[0] == 4 * width:
        raise CheckpointError("a LightningDiT with wo_shift=True (adaLN without shifts): detok's modulates with both")
    hidden = state["blocks.0.mlp.w3.weight"].shape[1]
    if swiglu_hidden_dim(width, 4.0, 1) != hidden:
        raise CheckpointError(f"SwiGLU width {hidden} for width {width}: not upstream's int(2/3 · 4 · width)")
    flow = FlowConfig(t_dist="logit_normal", sampler="euler", sample_steps=STEPS, shift=SHIFT, time_scale=1.0)
    return LightningDiTConfig(
        latent_channels=c,
        input_size=(layout["grid"] * p,) * 2,
        num_classes=layout["classes"],
        class_dropout=0.1,
        patch_size=p,
        width=width,
        depth=count_blocks(state),
        heads=heads_for(width, settings),
        mlp_ratio=4.0,
        swiglu_multiple=1,
        qk_norm="blocks.0.attn.q_norm.weight" in state,
        abs_pos=True,
        rope_theta=10000.0,
        cfg_channels=min(CFG_CHANNELS, c),
        cfg_interval=CFG_INTERVAL,
        flow=flow,
    )


def notes(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    return sigma_notes(state, keep_sigma=False)  # learn_sigma=True: its forward discards the second half too


def to_detok(state: dict[str, torch.Tensor], source_name: str, settings: dict[str, int]) -> LightningDiT:
    config = config_from_state(state, settings)
    check_table(state["pos_embed"], sincos_table(config.width, config.input_size[0] // config.patch_size), "pos_embed")
    cos, sin = rope_cos_sin(config)
    check_table(state["feat_rope.freqs_cos"], cos, "feat_rope.freqs_cos")
    check_table(state["feat_rope.freqs_sin"], sin, "feat_rope.freqs_sin")
    weights, _ = KEYMAP.to_detok({k: v for k, v in without_sigma(state).items() if k not in FIXED}, source_name)
    model = LightningDiT(config)
    model.load_state_dict(weights)
    return model.eval()


def to_upstream(model: LightningDiT) -> dict[str, torch.Tensor]:
    cfg = model.config
    side = cfg.input_size[0]
    if len(cfg.input_size) != 2 or cfg.input_size[1] != side or not cfg.abs_pos or cfg.rope_theta != 10000.0:
        raise ValueError(
            "only a LightningDiT on a square grid with the sin-cos table and θ = 10000 has upstream's layout"
        )
    if swiglu_hidden_dim(cfg.width, cfg.mlp_ratio, cfg.swiglu_multiple) != swiglu_hidden_dim(cfg.width, 4.0, 1):
        raise ValueError("upstream's SwiGLU width is int(2/3 · 4 · width); this model's differs")
    cos, sin = rope_cos_sin(cfg)
    state = KEYMAP.to_upstream(dict(model.state_dict()), patch_shape(cfg))
    fixed = {"pos_embed": sincos_table(cfg.width, side // cfg.patch_size)}
    return {**fixed, **state, "feat_rope.freqs_cos": cos, "feat_rope.freqs_sin": sin}


def upstream_sampling(model: LightningDiT) -> dict[str, Any]:
    return dict(SAMPLING)
