"""LTH14/mar's MAR (the original release: `mar_base`, `mar_large`, `mar_huge` on KL-16 latents) ⇄ detok's `MAR`.

LTH14/mar `models/mar.py` (checked at fe470ac) has the state-dict layout of DeTok's MAR (`mar_official.py`, whose key
map and shape reading this format reuses) — its timm blocks and parameter-free DiffLoss final norm store the same
names — so the weights cannot tell the two apart: a checkpoint whose saved `args` name a KL-16 VAE (LTH14's training
script saves them) is recognised as this format, any other needs `--format lth14-mar`. What differs is
what the weights do not hold: LTH14's timm blocks drop out in their MLPs too (`proj_drop` 0.1 applies to the MLP;
DeTok's released MARs were trained with `--no_dropout_in_mlp`), and its README evaluates with other guidance scales
(MAR-B 2.9, MAR-L 3.0, MAR-H 3.2; temperature 1.0, 0.95 without guidance; 256 AR steps, 100 DiffLoss steps).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from detok.convert import mar_official
from detok.generators.mar import MAR

NAME = "lth14-mar"
MODEL_CLS = MAR
UPSTREAM = "LTH14/mar models/mar.py"
VERIFIED_COMMIT = "fe470ac24afbee924668d8c5c83e9fec60af3a73"
HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 16}
SAMPLING = {  # LTH14/mar README, "Evaluation": by encoder width (MAR-B, MAR-L, MAR-H)
    768: {"cfg": 2.9, "temperature": 1.0, "temperature_without_cfg": 0.95},
    1024: {"cfg": 3.0, "temperature": 1.0, "temperature_without_cfg": 0.95},
    1280: {"cfg": 3.2, "temperature": 1.0, "temperature_without_cfg": 0.95},
}


def matches(state: dict[str, torch.Tensor]) -> bool:
    """Never recognised on its own: DeTok's MAR has the same layout (`--format lth14-mar` chooses this one)."""
    return False


def recognise(data: dict[str, Any], state: dict[str, torch.Tensor]) -> bool:
    """LTH14/mar's training checkpoints (its releases among them) keep their `args`, which name the KL-16 VAE
    (`vae_path`, `vae_stride`); DeTok's keep none."""
    args = data.get("args")
    return accepts(state) and hasattr(args, "vae_stride") and hasattr(args, "vae_path")


def accepts(state: dict[str, torch.Tensor]) -> bool:
    """What `--format lth14-mar` accepts: a MAR state dict."""
    return mar_official.matches(state)


def to_detok(state: dict[str, torch.Tensor], source_name: str, heads: dict[str, int]) -> MAR:
    model = mar_official.to_detok(state, source_name, heads)
    cfg = dataclasses.replace(model.config, mlp_dropout=None)  # None: the MLPs drop out at `dropout`, as timm's
    converted = MAR(cfg)
    converted.load_state_dict(model.state_dict())
    return converted.eval()


def to_upstream(model: MAR) -> dict[str, torch.Tensor]:
    return mar_official.to_upstream(model)


def upstream_sampling(model: MAR) -> dict[str, Any]:
    return dict(SAMPLING.get(model.config.enc_width, {}))


def read_stats(path, key, channels):
    return mar_official.read_stats(path, key, channels)


def stats_cache(model: MAR, key: str) -> dict[str, Any]:
    return mar_official.stats_cache(model, key)
