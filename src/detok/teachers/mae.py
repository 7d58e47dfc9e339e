"""A label-free teacher detok trains itself: a small masked autoencoder on the training images.

Paper: "Masked Autoencoders Are Scalable Vision Learners" (MAE; He et al., arXiv:2111.06377), §3, following
facebookresearch/mae `models_mae.py`: a ViT encoder sees only a random 25% of the patches (no mask tokens), a light
decoder fills the removed positions with a shared [MASK] token, and the loss is the MSE of the masked patches' pixels,
each patch normalised by its own mean and variance (`norm_pix_loss`). Fixed 2-D sin-cos position embeddings. Unlike
the paper there is no [CLS] token: a teacher gives patch features, and the linear probe mean-pools them (the paper's
`global_pool` variant).

As a teacher (`MAETeacher`, spec `detok:FOLDER`) the encoder sees every patch, unmasked, and returns its normalised
patch features (N, T, D) on its (image / patch)² grid. `load_teacher` refuses networks trained with labels: distilling
from a classifier would leak labels into the tokenizer and inflate the classifier-feature scores (FD, IS, precision,
recall and the class consistency all read a classifier's features).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from detok.config import ConfigError, FractionBelowOne, PositiveFloat, PositiveInt, check_fields
from detok.layers import Attention, patchify, sincos_pos_embed
from detok.registry import register_with_tiny
from detok.teachers.base import Teacher
from detok.tokenizers.corruption import random_masking

# The opt-in suffix of a `detok:FOLDER` spec that lets a network trained with labels be a teacher.
ALLOW_SUPERVISED = "allow-supervised"
LABEL_LEAK = (
    "distilling from a classifier trained on labels would leak labels and inflate the classifier-feature scores"
)


@dataclass(frozen=True)
class MAEConfig:
    """Architecture and pretext task of a masked autoencoder; `image_size`/`channels` are the images it takes."""

    image_size: PositiveInt = 32
    channels: PositiveInt = 1
    patch_size: PositiveInt = 4
    enc_width: PositiveInt = 192
    enc_depth: PositiveInt = 12
    enc_heads: PositiveInt = 3
    dec_width: PositiveInt = 128
    dec_depth: PositiveInt = 2
    dec_heads: PositiveInt = 4
    mlp_ratio: PositiveFloat = 4.0
    mask_ratio: FractionBelowOne = 0.75
    norm_pix_loss: bool = True

    def __post_init__(self):
        check_fields(self)
        if self.channels not in (1, 3):
            raise ConfigError("channels", f"must be 1 or 3, got {self.channels}")
        if self.image_size % self.patch_size:
            problem = f"patch size {self.patch_size} does not divide {self.image_size}"
            raise ConfigError("image_size", f"must be a multiple of the patch size ({problem})")
        for side in ("enc", "dec"):
            width, heads = getattr(self, f"{side}_width"), getattr(self, f"{side}_heads")
            if width % heads or width % 4:  # whole heads; the 2-D sin-cos embedding splits the width in 4
                raise ValueError(f"{side}_width {width} must be divisible by 4 and by {side}_heads {heads}")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


class Block(nn.Module):
    """Pre-norm ViT block as in MAE (timm's `Block`): LayerNorm → attention, LayerNorm → GELU MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (N, T, D)
        return x + self.mlp(self.norm2(x))  # (N, T, D)


class MaskedAutoencoder(nn.Module):
    """MAE: a ViT encoder over the visible patches and a light decoder predicting the masked patches' pixels."""

    kind = "teacher"
    config_cls = MAEConfig
    # Trained on images alone; `load_teacher` refuses models whose class or config.json says otherwise.
    trained_with_labels = False

    def __init__(self, config: MAEConfig):
        super().__init__()
        self.config = config
        g, patch_dim = config.grid_size, config.patch_size**2 * config.channels

        # Encoder
        self.patch_embed = nn.Linear(patch_dim, config.enc_width)  # a stride-p p×p convolution on patchified pixels
        self.register_buffer("enc_pos", sincos_pos_embed(config.enc_width, (g, g))[None], persistent=False)
        self.enc_blocks = nn.ModuleList(
            Block(config.enc_width, config.enc_heads, config.mlp_ratio) for _ in range(config.enc_depth)
        )
        self.enc_norm = nn.LayerNorm(config.enc_width, eps=1e-6)

        # Decoder
        self.dec_embed = nn.Linear(config.enc_width, config.dec_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.dec_width))
        self.register_buffer("dec_pos", sincos_pos_embed(config.dec_width, (g, g))[None], persistent=False)
        self.dec_blocks = nn.ModuleList(
            Block(config.dec_width, config.dec_heads, config.mlp_ratio) for _ in range(config.dec_depth)
        )
        self.dec_norm = nn.LayerNorm(config.dec_width, eps=1e-6)
        self.dec_pred = nn.Linear(config.dec_width, patch_dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """MAE's initialisation: Xavier-uniform linear weights, zero biases, unit LayerNorms, N(0, 0.02²) [MASK]."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    @property
    def grid(self) -> tuple[int, int]:
        return (self.config.grid_size,) * 2

    # ----------------------------------------------------------------------------------------------
    # Stages
    # ----------------------------------------------------------------------------------------------

    def forward_encoder(self, x: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images (N, C, H, W) in [-1, 1] → encoded visible patches, with a fresh random mask per image.

        Returns:
            latent (N, T_keep, D), mask (N, T) with 1 = removed, ids_keep (N, T_keep) in raster order.
        """
        tokens = self.patch_embed(patchify(x, self.config.patch_size)) + self.enc_pos  # (N, T, D)
        n, t, d = tokens.shape
        ids_keep, mask = random_masking(n, t, mask_ratio, x.device)  # (N, T_keep), (N, T)
        tokens = tokens.gather(1, ids_keep[..., None].expand(-1, -1, d))  # (N, T_keep, D)
        for block in self.enc_blocks:
            tokens = block(tokens)  # (N, T_keep, D)
        return self.enc_norm(tokens), mask, ids_keep

    def forward_decoder(self, latent: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Encoded visible patches (N, T_keep, D) → pixel predictions of every patch (N, T, p·p·C)."""
        x = self.dec_embed(latent)  # (N, T_keep, Dd)
        n, _, dd = x.shape
        full = self.mask_token.expand(n, self.dec_pos.shape[1], dd)  # (N, T, Dd): [MASK] everywhere
        x = full.scatter(1, ids_keep[..., None].expand(-1, -1, dd), x) + self.dec_pos  # visible tokens back in place
        for block in self.dec_blocks:
            x = block(x)  # (N, T, Dd)
        return self.dec_pred(self.dec_norm(x))  # (N, T, p·p·C)

    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE over the masked patches only (mask: 1 = removed), against per-patch normalised pixels if
        `norm_pix_loss` (MAE §3, "Reconstruction target")."""
        target = patchify(x, self.config.patch_size)  # (N, T, p·p·C)
        if self.config.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = (pred - target).pow(2).mean(-1)  # (N, T)
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, x: torch.Tensor, mask_ratio: float | None = None) -> dict[str, torch.Tensor]:
        """Training forward: {"loss", "pred" (N, T, p·p·C), "mask" (N, T)}; `mask_ratio` defaults to the config's."""
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_keep = self.forward_encoder(x, ratio)
        pred = self.forward_decoder(latent, ids_keep)
        return {"loss": self.forward_loss(x, pred, mask), "pred": pred, "mask": mask}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] → encoder features of every patch (N, T, D), none masked, raster order."""
        tokens = self.patch_embed(patchify(x, self.config.patch_size)) + self.enc_pos  # (N, T, D)
        for block in self.enc_blocks:
            tokens = block(tokens)  # (N, T, D)
        return self.enc_norm(tokens)


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


def _fmnist32() -> MAEConfig:
    return MAEConfig(
        image_size=32,
        channels=1,
        patch_size=4,
        enc_width=192,
        enc_depth=6,
        enc_heads=3,
        dec_width=128,
        dec_depth=2,
        dec_heads=4,
        mlp_ratio=4.0,
        mask_ratio=0.75,
    )


def _tiny(cfg: MAEConfig) -> MAEConfig:
    """Tiny twin for tests: the same geometry and task, width 32, one block each side."""
    width = {"enc_width": 32, "enc_depth": 1, "enc_heads": 2, "dec_width": 32, "dec_depth": 1, "dec_heads": 2}
    return dataclasses.replace(cfg, mlp_ratio=2.0, **width)


register_with_tiny(
    "mae-teacher-fmnist32",
    _fmnist32,
    "Label-free MAE teacher for Fashion-MNIST-32: ViT-Tiny width (192, 3 heads) at depth 6, patch 4 (8×8 grid), "
    "75% masking, 128×2 decoder, normalised-pixel targets.",
    kind="teacher",
    model_cls=MaskedAutoencoder,
    tiny=_tiny,
)


# --------------------------------------------------------------------------------------------------
# Loading as a teacher
# --------------------------------------------------------------------------------------------------


class MAETeacher(Teacher):
    """A trained MAE's encoder behind the teacher interface: every patch visible, features after the final norm."""

    def __init__(self, model: MaskedAutoencoder):
        super().__init__()
        # the encoder only: the pixel decoder is a pre-training device (and would be dead weight in a tokenizer that
        # trains this encoder, AlignTok)
        for name in ("dec_embed", "dec_blocks", "dec_norm", "dec_pred", "mask_token"):
            setattr(model, name, None)
        self.model = model
        self.feature_dim = model.config.enc_width

    def grid(self) -> tuple[int, int]:
        return self.model.grid

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)  # (N, T, D)

    def last_layer(self) -> torch.Tensor:
        return self.model.enc_blocks[-1].mlp[-1].weight

    def architecture(self) -> dict:
        from detok.config import to_dict

        return {"arch": type(self.model).__name__, "model": to_dict(self.model.config)}


def random_teacher(preset: str, channels: int, image_size: int) -> Teacher:
    """An untrained (randomly initialised under the current seed) network of teacher preset `preset`."""
    from detok.registry import get_preset

    p = get_preset(preset)
    if p.kind != "teacher":
        raise ValueError(f"random:{preset}: {preset!r} is a {p.kind} preset, not a teacher")
    cfg = p.make_config()
    if (cfg.channels, cfg.image_size) != (channels, image_size):
        raise ValueError(
            f"teacher preset {preset} takes {cfg.channels}-channel {cfg.image_size}-px images, the tokenizer "
            f"{channels}-channel {image_size}-px ones"
        )
    return MAETeacher(p.model_cls(cfg))


class ClassifierTeacher(Teacher):
    """The reference classifier's last convolutional feature map as patch features — only by explicit opt-in."""

    supervised = True

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        cfg = model.config
        self.side = cfg.image_size // 2 ** len(cfg.widths)  # one 2× pooling per stage
        self.feature_dim = cfg.widths[-1]

    def grid(self) -> tuple[int, int]:
        return (self.side, self.side)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.trunk(x).flatten(2).transpose(1, 2)  # (N, h·w, C_last)

    def architecture(self) -> dict:
        from detok.config import to_dict

        return {"arch": type(self.model).__name__, "model": to_dict(self.model.config)}


def label_use(raw: dict, model_cls: type) -> str | None:
    """Why the model folder whose config.json is `raw` counts as trained with labels, or None if it does not."""
    if raw.get("trained_with_labels") is True:
        return "its config.json says trained_with_labels"
    if raw.get("kind") == "evaluator":
        return f"it holds a {raw.get('arch')}, the project's reference classifier, trained on class labels"
    if getattr(model_cls, "trained_with_labels", False):
        return f"{model_cls.__name__} is trained with labels"
    return None


def default_teacher_dir(preset: str) -> Path:
    """Where `detok teacher train --preset PRESET` trains by default, and where `detok:PRESET` looks: a cache folder
    that later runs reuse, as the reference classifier's."""
    from detok.eval.features import cache_dir

    return cache_dir() / "teachers" / preset


def _resolve(folder: str | Path) -> Path:
    """`folder` itself, or the default folder of a teacher preset named instead of a path."""
    from detok.registry import list_models

    path = Path(folder)
    if not path.exists() and str(folder) in list_models(kind="teacher"):
        return default_teacher_dir(str(folder))
    return path


def load_teacher(folder: str | Path, channels: int, image_size: int, allow_supervised: bool = False) -> Teacher:
    """The teacher saved in `folder` (a `detok teacher train` run, or a teacher preset's name for its default folder)
    for `channels`-channel `image_size` images.

    Args:
        allow_supervised: accept a network trained with labels (the reference classifier, or any folder whose
            config.json says `trained_with_labels`); refused otherwise, since it would leak labels.
    """
    from detok.checkpoint import load_model_folder, read_model_config

    path = _resolve(folder)
    if not (path / "config.json").is_file():
        from detok.registry import list_models

        if str(folder) in list_models(kind="teacher"):  # a preset's default folder, not trained yet
            raise FileNotFoundError(f"teacher {folder} is not trained yet: run `detok teacher train --preset {folder}`")
        raise FileNotFoundError(
            f"no teacher at {folder}: train one with `detok teacher train --preset mae-teacher-fmnist32 --out {folder}`"
        )
    cls, cfg, raw = read_model_config(path)
    why = label_use(raw, cls)
    if why and not allow_supervised:
        raise ValueError(
            f"refusing teacher {folder}: {why}; {LABEL_LEAK}. Train a label-free teacher with `detok teacher train`, "
            f"or opt in explicitly with the spec detok:{folder}:{ALLOW_SUPERVISED}"
        )
    if why is None and raw.get("kind") != "teacher":
        raise ValueError(f"{folder} holds a {raw.get('kind', 'unknown')} model, not a teacher")
    if (cfg.channels, cfg.image_size) != (channels, image_size):
        raise ValueError(
            f"teacher {folder} takes {cfg.channels}-channel {cfg.image_size}-px images, the tokenizer "
            f"{channels}-channel {image_size}-px ones; train a teacher on the tokenizer's data"
        )
    step, total = raw.get("step"), raw.get("total_steps")
    if step is not None and total is not None and step < total:
        raise ValueError(
            f"teacher {folder} is still in training (step {step} of {total}); finish it by rerunning its "
            "`detok teacher train` command"
        )
    model = load_model_folder(path)
    if isinstance(model, MaskedAutoencoder):
        teacher: Teacher = MAETeacher(model)
    elif hasattr(model, "trunk"):  # the reference classifier (eval/reference.py), by opt-in only
        teacher = ClassifierTeacher(model)
    else:
        raise ValueError(f"{folder} holds a {type(model).__name__}, which gives no patch features")
    teacher.supervised = why is not None
    return teacher
