"""Jiawei-Yang/DeTok's MAR generator (`models/mar.py` + `models/diffloss.py`, checked at 706f7ac) ⇄ detok's `MAR`.

Released as `mar_base.pth` and `mar_large.pth` (huggingface.co/jjiaweiyang/l-DeTok): a `torch.save` of
{"model", "model_ema", …} in the layout below, trained on the latents of `detok-BB-gamm3.0-m0.7-decoder_tuned`
normalised by its `stats.pkl` entry. The network is detok's `MAR` with its `DiffLoss` head exactly; the weights differ
in layout only: upstream keeps the null class of guidance as a separate `fake_latent` row beside its class table,
detok as the last row of one table (a `Join`). Upstream ties the decoder's width and depth to the encoder's
(`MAR_SIZE_DICT`); detok reads both from the weights.

What the weights cannot tell is set to what the upstream README trains and evaluates with: `--no_dropout_in_mlp`
(attention and projection dropout 0.1), DiffLoss on the cosine schedule with `--diffusion_batch_mul 4`, and the
evaluation's 256 AR steps (`main_diffusion.py` sets `num_iter` 256 for the final FID), 100 DiffLoss sampling steps and
the linear CFG schedule. The guidance scale and temperature are sampling arguments in detok, not config fields: the
README's values (`SAMPLING`) are recorded in the folder's config.json under `converted_from.upstream_sampling`.

Tokens: upstream's `patchify` orders a token's values (C, p, p), detok's (p, p, C); the released models use p = 1,
where the two agree, and the weights cannot tell p from C, so a conversion takes p = 1 (C = token width).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from detok.checkpoint import CheckpointError
from detok.convert.keymap import SAME, Join, KeyMap, count_indexed, heads_for, join_tensors, split_tensors
from detok.generators.mar import MAR, MARConfig
from detok.objectives.diffloss import DiffLossConfig

NAME = "detok-mar"
MODEL_CLS = MAR
UPSTREAM = "Jiawei-Yang/DeTok models/mar.py + models/diffloss.py"
VERIFIED_COMMIT = "706f7ac6ed681a85ee2210234df3576e49005f53"

_BLOCK = [
    ("norm1.{w}", "norm1.{w}"),
    ("attn.qkv.{w}", "attn.qkv.{w}"),
    ("attn.proj.{w}", "attn.proj.{w}"),
    ("norm2.{w}", "norm2.{w}"),
    ("mlp.fc1.{w}", "mlp.0.{w}"),
    ("mlp.fc2.{w}", "mlp.2.{w}"),
]
_RES_BLOCK = [
    ("in_ln.{w}", "norm.{w}"),
    ("mlp.0.{w}", "mlp.0.{w}"),
    ("mlp.2.{w}", "mlp.2.{w}"),
    ("adaLN_modulation.1.{w}", "ada.1.{w}"),
]

# upstream's class table and its null-class row, joined into detok's one table (null class last)
JOINS = [Join(parts=("class_emb.weight", "fake_latent"), rows=(None, 1))]

KEYMAP = KeyMap(
    [
        ("class_emb.weight+fake_latent", "class_emb.table.weight", SAME),
        ("z_proj.{w}", "z_proj.{w}", SAME),
        ("z_proj_ln.{w}", "z_proj_ln.{w}", SAME),
        ("encoder_pos_embed_learned", "enc_pos", SAME),
        *[(f"encoder_blocks.{{i}}.{u}", f"enc_blocks.{{i}}.{d}", SAME) for u, d in _BLOCK],
        ("encoder_norm.{w}", "enc_norm.{w}", SAME),
        ("decoder_embed.{w}", "dec_embed.{w}", SAME),
        ("mask_token", "mask_token", SAME),
        ("decoder_pos_embed_learned", "dec_pos", SAME),
        *[(f"decoder_blocks.{{i}}.{u}", f"dec_blocks.{{i}}.{d}", SAME) for u, d in _BLOCK],
        ("decoder_norm.{w}", "dec_norm.{w}", SAME),
        ("diffusion_pos_embed_learned", "diffusion_pos", SAME),
        ("diffloss.net.input_proj.{w}", "diffloss.net.input_proj.{w}", SAME),
        ("diffloss.net.time_embed.mlp.0.{w}", "diffloss.net.t_embedder.mlp.0.{w}", SAME),
        ("diffloss.net.time_embed.mlp.2.{w}", "diffloss.net.t_embedder.mlp.2.{w}", SAME),
        ("diffloss.net.cond_embed.{w}", "diffloss.net.cond_embed.{w}", SAME),
        *[(f"diffloss.net.res_blocks.{{i}}.{u}", f"diffloss.net.blocks.{{i}}.{d}", SAME) for u, d in _RES_BLOCK],
        ("diffloss.net.final_layer.linear.{w}", "diffloss.net.final.linear.{w}", SAME),
        ("diffloss.net.final_layer.adaLN_modulation.1.{w}", "diffloss.net.final.ada.1.{w}", SAME),
    ]
)

# Upstream's MAR_SIZE_DICT: heads are not in the weights, so a width names them (models/mar.py).
HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 16}

# The upstream README's evaluation settings by model width (MAR-B, MAR-L): guidance scale with the linear schedule, and
# the temperature it gives for sampling without guidance.
SAMPLING = {
    768: {"cfg": 3.9, "temperature": 1.0, "temperature_without_cfg": 0.95},
    1024: {"cfg": 3.4, "temperature": 1.0, "temperature_without_cfg": 0.97},
}
NUM_ITER, SAMPLE_STEPS, BATCH_MUL = 256, 100, 4


def matches(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict looks like an official MAR (DeTok's, whose layout LTH14/mar's shares)."""
    return {"fake_latent", "z_proj.weight", "diffloss.net.input_proj.weight"} <= set(state)


def config_from_state(state: dict[str, torch.Tensor], heads: dict[str, int]) -> MARConfig:
    """The `MARConfig` that holds `state`, read off the tensor shapes (p = 1; see the module docstring)."""
    enc_w, token_dim = state["z_proj.weight"].shape
    _, tokens, dec_w = state["diffusion_pos_embed_learned"].shape
    buffer = state["encoder_pos_embed_learned"].shape[1] - tokens
    grid = math.isqrt(tokens)
    # a square count is a latent grid (the released models: 16×16); anything else a 1-D sequence (force_one_d_seq)
    input_size = (grid, grid) if grid * grid == tokens else (tokens,)
    hidden = state["encoder_blocks.0.mlp.fc1.weight"].shape[0]
    if state["decoder_blocks.0.mlp.fc1.weight"].shape[0] * enc_w != hidden * dec_w:
        raise CheckpointError("the encoder's and decoder's MLP ratios differ: not an official MAR")
    head_w = state["diffloss.net.input_proj.weight"].shape[0]
    out = state["diffloss.net.final_layer.linear.weight"].shape[0]
    if out != 2 * token_dim:
        raise CheckpointError(
            f"the DiffLoss head outputs {out} channels for {token_dim}-channel tokens; detok converts the learned-"
            "variance head (2× the token channels), not DeTok's flow-matching (use_transport) variant"
        )
    return MARConfig(
        latent_channels=token_dim,
        input_size=input_size,
        patch_size=1,
        enc_width=enc_w,
        enc_depth=count_indexed(state, "encoder_blocks"),
        enc_heads=heads_for(enc_w, "enc", heads, HEADS_BY_WIDTH, "upstream's MAR sizes"),
        dec_width=dec_w,
        dec_depth=count_indexed(state, "decoder_blocks"),
        dec_heads=heads_for(dec_w, "dec", heads, HEADS_BY_WIDTH, "upstream's MAR sizes"),
        mlp_ratio=hidden / enc_w,
        dropout=0.1,
        mlp_dropout=0.0,
        num_iter=NUM_ITER,
        cfg_schedule="linear",
        diffloss=DiffLossConfig(
            width=head_w,
            depth=count_indexed(state, "diffloss.net.res_blocks"),
            train_steps=1000,
            sample_steps=SAMPLE_STEPS,
            schedule="cosine",
            batch_mul=BATCH_MUL,
        ),
        num_classes=state["class_emb.weight"].shape[0],
        class_dropout=0.1,
        buffer_size=buffer,
    )


def read_stats(path: str | Path, key: str | None, channels: int) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """A generator holds no latent statistics: its tokenizer does (convert the tokenizer with --stats)."""
    raise CheckpointError(
        f"{path}: a MAR generator keeps no latent statistics; give --stats to the tokenizer's conversion (the MAR "
        "reads the latents its tokenizer normalises)"
    )


def to_detok(state: dict[str, torch.Tensor], source_name: str, heads: dict[str, int]) -> MAR:
    """An official MAR state dict as a detok `MAR` (eval mode)."""
    config = config_from_state(state, heads)
    weights, _ = KEYMAP.to_detok(join_tensors(state, JOINS, source_name), source_name)
    model = MAR(config)
    model.load_state_dict(weights)
    return model.eval()


def to_upstream(model: MAR) -> dict[str, torch.Tensor]:
    """A detok class-conditional `MAR` with p = 1 as upstream's state dict (weights only)."""
    if type(model) is not MAR:
        raise ValueError(f"only the class-conditional MAR has an upstream layout; this is a {type(model).__name__}")
    if model.config.patch_size != 1:
        raise ValueError(
            f"patch_size {model.config.patch_size}: upstream orders a token's values (C, p, p), detok (p, p, C); only "
            "p = 1 (every released MAR) is exported"
        )
    state = KEYMAP.to_upstream(dict(model.state_dict()), lambda name, tensor: tuple(tensor.shape))
    return split_tensors(state, JOINS)


def stats_cache(model: MAR, key: str) -> dict[str, Any]:
    raise ValueError("a MAR generator has no latent statistics to export; export its tokenizer's")


def upstream_sampling(model: MAR) -> dict[str, Any]:
    """The upstream README's guidance scale and temperatures for this model size (none for other sizes)."""
    return dict(SAMPLING.get(model.config.enc_width, {}))
