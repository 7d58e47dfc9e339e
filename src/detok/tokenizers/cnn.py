"""The convolutional KL-VAE tokenizer of LDM / MAR-VAE, with l-DeTok's latent denoising (paper App. A.5), and
VA-VAE's vision-foundation alignment on the same architecture.

Papers: "High-Resolution Image Synthesis with Latent Diffusion Models" (Rombach et al., arXiv:2112.10752: the
KL-regularised autoencoder — ResNet blocks, strided-conv down-sampling, nearest up-sampling, a mid-block with
self-attention), as MAR (Li et al., arXiv:2406.11838) configures it for 16×16×16 latents of 256-px images; and
"Latent Denoising Makes Good Visual Tokenizers" (Yang et al., arXiv:2507.15856), App. A.5, which adds interpolative
latent noise (γ = 3; γ = 0 is the baseline) to it and turns the GAN on from epoch 10 of 50.

VA-VAE ("Reconstruction vs. Generation: Taming Optimization Dilemma in Latent Diffusion Models", Yao & Wang,
arXiv:2501.01423; hustvl/LightningDiT): the f16d32 KL-VAE with its latents, projected 1×1 to the teacher's width,
aligned to DINOv2-L's patch features by the VF loss (losses/semantic.py); no latent noise.

Masking: the paper does not mask its CNN tokenizers — a convolutional encoder has no set of tokens to drop, and
zeroing input patches would be a different corruption. `corruption.mask_max` must therefore be 0 here.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from detok.config import ConfigError, FractionBelowOne, PositiveInt
from detok.losses.semantic import VFConfig, check_teacher_width, square_side, vf_losses
from detok.registry import register_with_tiny
from detok.tokenizers.base import LatentLayout, NoiseOnlyTokenizer, check_tokenizer_config
from detok.tokenizers.corruption import CorruptionConfig

NO_MASKING = "the CNN tokenizer does not mask (l-DeTok App. A.5 corrupts CNN latents with noise only)"


@dataclass(frozen=True)
class CNNTokenizerConfig:
    """Architecture of the KL-VAE (LDM's `ddconfig` names), its latent noise and its latent statistics.

    Attributes:
        base_channels: `ch`, the width of the first stage; stage i has base_channels · channel_mults[i].
        channel_mults: one entry per resolution stage; every stage but the last halves the resolution, so the
            latent grid is image_size / 2^(len(channel_mults) − 1).
        res_blocks: ResNet blocks per encoder stage (the decoder has one more per stage, as in LDM).
        enc_attn_resolutions, dec_attn_resolutions: LDM's `attn_resolutions`: feature-map sides (in pixels of the
            stage, 256 … 16 for a 256-px f16) whose every ResNet block is followed by a self-attention block, in the
            encoder and the decoder; the mid-block's attention is `mid_attention`. MAR's KL-16 (LTH14/mar
            `models/vae.py`): encoder (16,), decoder (); VA-VAE f16d32 (hustvl/LightningDiT `tokenizer/vavae.py`):
            (16,) in both; SD-VAE (KL-8): none.
        vf: VA-VAE's vision-foundation loss on the latents (None: off).
    """

    image_size: PositiveInt = 256
    channels: PositiveInt = 3
    latent_channels: PositiveInt = 16
    base_channels: PositiveInt = 128
    channel_mults: tuple[PositiveInt, ...] = (1, 1, 2, 2, 4)
    res_blocks: PositiveInt = 2
    enc_attn_resolutions: tuple[PositiveInt, ...] = ()
    dec_attn_resolutions: tuple[PositiveInt, ...] = ()
    mid_attention: bool = True
    dropout: FractionBelowOne = 0.0
    variational: bool = True
    corruption: CorruptionConfig = field(default_factory=lambda: CorruptionConfig(mask_max=0.0, mask_min=0.0))
    vf: VFConfig | None = None
    latent_mean: tuple[float, ...] | None = None
    latent_std: tuple[float, ...] | None = None

    def __post_init__(self):
        check_tokenizer_config(self)
        if not self.channel_mults or any(m <= 0 for m in self.channel_mults):
            raise ValueError(f"channel_mults must be a non-empty list of positive integers, got {self.channel_mults}")
        if self.image_size % self.downsampling:
            raise ValueError(f"image_size {self.image_size} is not divisible by the down-sampling {self.downsampling}")
        self.corruption.check_unmasked(NO_MASKING)
        sides = self.stage_resolutions
        for name in ("enc_attn_resolutions", "dec_attn_resolutions"):
            wrong = [r for r in getattr(self, name) if r not in sides]
            if wrong:
                raise ConfigError(name, f"{wrong} are no stage's resolution; the stages are {list(sides)} px")

    @property
    def stage_resolutions(self) -> tuple[int, ...]:
        """The feature-map side of each encoder stage (the decoder's in reverse): image_size, /2, …, grid_size."""
        return tuple(self.image_size // 2**i for i in range(len(self.channel_mults)))

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.downsampling


# --------------------------------------------------------------------------------------------------
# Building blocks (LDM's `model.py`)
# --------------------------------------------------------------------------------------------------


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with LDM's 32 groups, or fewer for narrow (tiny) stages."""
    groups = 32 if channels % 32 == 0 else next(g for g in (16, 8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """GroupNorm → SiLU → 3×3 conv, twice (dropout before the second), with a 1×1 skip when widths differ."""

    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (N, C_out, H, W)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))  # (N, C_out, H, W)
        return self.skip(x) + h  # (N, C_out, H, W)


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map (LDM's mid-block attention)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=-1)  # 3 × (N, HW, C)
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # (N, HW, C)
        return x + self.proj(a.transpose(1, 2).reshape(n, c, h, w))  # (N, C, H, W)


class Downsample(nn.Module):
    """Stride-2 3×3 conv with LDM's asymmetric (0, 1, 0, 1) padding: H → H/2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # (N, C, H/2, W/2)


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv: H → 2H."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (N, C, 2H, 2W)


def _mid(channels: int, attention: bool, dropout: float) -> nn.Sequential:
    attn = AttnBlock(channels) if attention else nn.Identity()
    return nn.Sequential(ResnetBlock(channels, channels, dropout), attn, ResnetBlock(channels, channels, dropout))


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------


class CNNTokenizer(NoiseOnlyTokenizer):
    """Convolutional KL-VAE tokenizer; training corrupts its latents with interpolative noise (l-DeTok)."""

    no_masking = NO_MASKING
    config_cls = CNNTokenizerConfig
    paper_recipe = ("loss.gan_weight=0.1", "loss.gan_start_frac=0.2")  # GAN from epoch 10 of 50 (App. A.5)

    def __init__(self, config: CNNTokenizerConfig):
        super().__init__()
        self.config = config
        cfg, widths = config, [config.base_channels * m for m in config.channel_mults]
        moments = 2 * cfg.latent_channels if cfg.variational else cfg.latent_channels

        # Encoder: conv_in, stages of ResNet blocks with down-sampling between them, mid-block, head
        self.enc_in = nn.Conv2d(cfg.channels, cfg.base_channels, 3, padding=1)
        stages, c = [], cfg.base_channels
        for i, width in enumerate(widths):
            blocks = []
            for _ in range(cfg.res_blocks):
                blocks.append(ResnetBlock(c, width, cfg.dropout))
                c = width
                if cfg.stage_resolutions[i] in cfg.enc_attn_resolutions:
                    blocks.append(AttnBlock(c))
            if i < len(widths) - 1:
                blocks.append(Downsample(c))
            stages.append(nn.Sequential(*blocks))
        self.enc_stages = nn.ModuleList(stages)
        self.enc_mid = _mid(c, cfg.mid_attention, cfg.dropout)
        self.enc_out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, moments, 3, padding=1))
        self.quant_conv = nn.Conv2d(moments, moments, 1)

        self.decoder = CNNDecoder(
            cfg.latent_channels, cfg.channels, cfg.base_channels, cfg.channel_mults, cfg.res_blocks,
            cfg.mid_attention, cfg.dropout, attn_at=[r in cfg.dec_attn_resolutions for r in cfg.stage_resolutions],
        )  # fmt: skip

        # VA-VAE: the 1×1 projection of the latent to the teacher's width (training only)
        self.vf_proj = None if cfg.vf is None else nn.Conv2d(cfg.latent_channels, cfg.vf.teacher_dim, 1)

    # ----------------------------------------------------------------------------------------------
    # Layout
    # ----------------------------------------------------------------------------------------------

    @property
    def latent_layout(self) -> LatentLayout:
        """A (C, h, w) grid, h = w = image_size / 2^(stages − 1)."""
        g = self.config.grid_size
        return LatentLayout("grid", (self.config.latent_channels, g, g))

    def decoder_finetune_frozen(self) -> list[nn.Parameter]:
        parts = [self.enc_in, self.enc_stages, self.enc_mid, self.enc_out, self.quant_conv]
        return [p for m in parts for p in m.parameters()]

    def last_decoder_layer(self) -> torch.Tensor:
        return self.decoder.dec_out.weight

    def last_encoder_layer(self) -> torch.Tensor | None:
        """The encoder's output convolution, where VA-VAE balances the VF loss against the NLL."""
        return self.enc_out[-1].weight if self.config.vf is not None else None

    def build_teachers(self) -> list[nn.Module]:
        """VA-VAE's vision-foundation teacher, if the VF loss is on (its grid is pooled to the latent grid)."""
        from detok.teachers.specs import build_teacher

        vf, cfg = self.config.vf, self.config
        if vf is None:
            return []
        teacher = build_teacher(vf.teacher, cfg.channels, cfg.image_size, cfg.downsampling)
        check_teacher_width(teacher, vf.teacher_dim, "model.vf.teacher_dim")
        return [teacher]

    def teacher_terms(self, out: dict, z: torch.Tensor, teacher_features: list[torch.Tensor]) -> None:
        """VA-VAE's VF loss on the decoder's input z (N, C, h, w): "vf" = marginal cosine + distance-matrix term,
        weighted adaptively by the tokenizer loss ("aux_adaptive"); the two parts are logged."""
        from detok.teachers.base import pool_to_grid

        if self.vf_proj is None:
            super().teacher_terms(out, z, teacher_features)
        vf, g = self.config.vf, self.config.grid_size
        side = square_side(teacher_features[0].shape[1])
        target = pool_to_grid(teacher_features[0], (side, side), (g, g))  # (N, h·w, D)
        proj = self.vf_proj(z).flatten(2).transpose(1, 2)  # (N, h·w, D)
        parts = vf_losses(proj, target, vf.margin_cos, vf.margin_dist)
        out["aux"]["vf"] = parts["vf_mcos"] + parts["vf_mdms"]
        if vf.adaptive:
            out["aux_adaptive"] = {"vf": vf.weight}
        else:
            out["aux"]["vf"] = vf.weight * out["aux"]["vf"]
        out["logs"] = {**out.get("logs", {}), **parts}

    # ----------------------------------------------------------------------------------------------
    # Stages
    # ----------------------------------------------------------------------------------------------

    def forward_encoder(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (N, C_img, H, W) → posterior (mean, logvar), each (N, C, h, w); logvar None for a plain AE."""
        h = self.enc_in(x)  # (N, ch, H, W)
        for stage in self.enc_stages:
            h = stage(h)  # (N, ch·mult, H/2^i, W/2^i)
        moments = self.quant_conv(self.enc_out(self.enc_mid(h)))  # (N, 2C or C, h, w)
        if not self.config.variational:
            return moments, None
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def forward_decoder(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, C, h, w) → images (N, C_img, H, W)."""
        return self.decoder(z)


class CNNDecoder(nn.Module):
    """LDM's decoder: post-quant 1×1 conv, conv_in, mid-block, then the stages in reverse (one more ResNet block
    each than the encoder's) with nearest up-sampling between them, GroupNorm → SiLU → conv_out. Also AlignTok's
    decoder (VA-VAE's architecture)."""

    def __init__(
        self,
        latent_channels: int,
        out_channels: int,
        base_channels: int,
        channel_mults: tuple[int, ...],
        res_blocks: int,
        mid_attention: bool,
        dropout: float = 0.0,
        attn_at: list[bool] | None = None,
    ):
        """`attn_at[i]`: stage i (in encoder order, 0 = full resolution) follows each ResNet block by attention."""
        super().__init__()
        widths = [base_channels * m for m in channel_mults]
        attn_at = attn_at or [False] * len(widths)
        c = widths[-1]
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        self.dec_in = nn.Conv2d(latent_channels, c, 3, padding=1)
        self.dec_mid = _mid(c, mid_attention, dropout)
        stages = []
        for i, width in reversed(list(enumerate(widths))):
            blocks = []
            for _ in range(res_blocks + 1):
                blocks.append(ResnetBlock(c, width, dropout))
                c = width
                if attn_at[i]:
                    blocks.append(AttnBlock(c))
            if i > 0:
                blocks.append(Upsample(c))
            stages.append(nn.Sequential(*blocks))
        self.dec_stages = nn.ModuleList(stages)
        self.dec_norm = _norm(c)
        self.dec_out = nn.Conv2d(c, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, C, h, w) → images (N, C_img, h·2^(stages−1), w·2^(stages−1))."""
        h = self.dec_mid(self.dec_in(self.post_quant_conv(z)))  # (N, ch·mult_last, h, w)
        for stage in self.dec_stages:
            h = stage(h)  # (N, ch·mult, 2h, 2w) after each up-sampling
        return self.dec_out(F.silu(self.dec_norm(h)))  # (N, C_img, H, W)


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


def _tiny(cfg: CNNTokenizerConfig) -> CNNTokenizerConfig:
    """Tiny twin for tests: width 8, two stages of one block, at most 32-px images; a VF teacher becomes HOG on the
    twin's 2-px latent cells (1-px HOG cells: 2×2 cells × channels × 9 bins)."""
    vf = None if cfg.vf is None else dataclasses.replace(cfg.vf, teacher="hog", teacher_dim=4 * cfg.channels * 9)
    size = min(cfg.image_size, 32)
    last = lambda attn: (size // 2,) if cfg.grid_size in attn else ()  # noqa: E731  attention at the last stage stays
    return dataclasses.replace(
        cfg, image_size=size, base_channels=8, channel_mults=(1, 2), res_blocks=1, vf=vf,
        enc_attn_resolutions=last(cfg.enc_attn_resolutions), dec_attn_resolutions=last(cfg.dec_attn_resolutions),
    )  # fmt: skip


_register_pair = functools.partial(register_with_tiny, kind="tokenizer", model_cls=CNNTokenizer, tiny=_tiny)

_register_pair(
    "cnn-f16c16",
    lambda: CNNTokenizerConfig(
        enc_attn_resolutions=(16,), corruption=CorruptionConfig(mask_max=0.0, mask_min=0.0, noise_gamma=3.0)
    ),
    "MAR-VAE's KL-16 architecture (l-DeTok App. A.5; LTH14/mar models/vae.py): 256 px → 16×16×16 latents, ch 128 × "
    "(1, 1, 2, 2, 4), 2 ResNet blocks per stage, attention after each encoder block at 16×16 and in the mid-blocks "
    "(none in the decoder's stages); l-DeTok noise γ = 3, no masking (γ = 0 is the paper's baseline). The default "
    "run recipe turns the GAN on after 20% of training (epoch 10 of 50 in the paper).",
)
_register_pair(
    "cnn-fmnist32",
    lambda: CNNTokenizerConfig(
        image_size=32,
        channels=1,
        latent_channels=8,
        base_channels=32,
        channel_mults=(1, 2, 2),
        res_blocks=1,
        corruption=CorruptionConfig(mask_max=0.0, mask_min=0.0, noise_gamma=3.0),
    ),
    "Fashion-MNIST-32: 32 px → 8×8×8 latents, the layout of detok-fmnist32, so the two compare cell for cell; ch 32 × "
    "(1, 2, 2), one ResNet block per stage, mid-block attention; noise γ = 3, no masking.",
)

# VA-VAE: DINOv2-L's patch features (1024-d, timm's name; weights read from a local file only — the run fails with a
# message naming this path until it holds them, or model.vf.teacher names another file). Fed 224-px images: /14 gives
# the tokenizer's 16×16 grid (timm's default 518 px would give 37×37, which no pooling maps onto 16×16).
DINOV2_L_TEACHER = "timm:vit_large_patch14_dinov2.lvd142m@224:weights/dinov2-vitl14.safetensors"

_register_pair(
    "vavae-f16d32",
    lambda: CNNTokenizerConfig(
        latent_channels=32,
        enc_attn_resolutions=(16,),
        dec_attn_resolutions=(16,),
        corruption=CorruptionConfig(mask_max=0.0, mask_min=0.0, noise_gamma=0.0),
        vf=VFConfig(teacher=DINOV2_L_TEACHER, teacher_dim=1024),
    ),
    "VA-VAE (arXiv:2501.01423): LDM's KL-16 architecture with 32 latent channels (256 px → 16×16×32) and attention "
    "after every ResNet block at 16×16 in encoder and decoder (hustvl/LightningDiT tokenizer/vavae.py), the VF loss "
    "to DINOv2-L (1×1 projection, margins m1 = 0.5, m2 = 0.25, adaptive weight 0.1·‖∇nll‖ / (‖∇vf‖ + 1e-4) at the "
    "encoder's last layer), no latent noise. The run recipe is the CNN family's (GAN after 20% of training).",
)
_register_pair(
    "sd-vae-f8c4",
    lambda: CNNTokenizerConfig(
        latent_channels=4,
        channel_mults=(1, 2, 4, 4),
        corruption=CorruptionConfig(mask_max=0.0, mask_min=0.0, noise_gamma=0.0),
    ),
    "Stable Diffusion's KL-8 VAE (LDM kl-f8; the `sd-vae-ft-ema/mse` weights DiT and SiT were trained on): 256 px → "
    "32×32×4 latents, ch 128 × (1, 2, 4, 4), 2 ResNet blocks per stage, attention only in the mid-blocks, no latent "
    "noise. Its users scale latents by 0.18215; in detok that constant is the tokenizer's latent statistics "
    "(mean 0, std 1/0.18215), not a number in a training loop.",
)
_register_pair(
    "vavae-fmnist32",
    lambda: CNNTokenizerConfig(
        image_size=32,
        channels=1,
        latent_channels=8,
        base_channels=32,
        channel_mults=(1, 2, 2),
        res_blocks=1,
        corruption=CorruptionConfig(mask_max=0.0, mask_min=0.0, noise_gamma=0.0),
        vf=VFConfig(teacher="detok:mae-teacher-fmnist32", teacher_dim=192),
    ),
    "VA-VAE at Fashion-MNIST-32: cnn-fmnist32's architecture and 8×8×8 latents (so it compares cell for cell with "
    "the CNN baseline; VA-VAE's own point, a wider latent, is the paper preset's), the VF loss to the offline MAE "
    "teacher's 192-d patch features (label-free; `detok teacher train --preset mae-teacher-fmnist32`), no noise.",
)
