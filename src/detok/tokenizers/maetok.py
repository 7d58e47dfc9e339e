"""MAETok: a plain ViT autoencoder with K learnable latent tokens, trained as a masked autoencoder.

Paper: "Masked Autoencoders Are Effective Tokenizers for Diffusion Models" (Chen et al., arXiv:2502.03444; official
code Hhhhhhao/continuous_tokenizer). Sec. 3, "Encoder", "Decoder", "Position Encoding": the encoder reads [image
patches; L learnable latent tokens] and keeps the L latents (H channels each); the pixel decoder reads [N mask tokens;
L latents] and regresses pixels off the mask tokens; 2-D RoPE on the image tokens of both, learned 1-D absolute
positions on the latent tokens. No KL term. "Token Masking at Encoder", "Auxiliary Shallow Decoders": in training
40–60% of the patch embeddings are replaced in place by a learnable mask token, and shallow auxiliary decoders of the
pixel decoder's design predict teacher features (HOG, DINOv2, SigLIP) from the latents, with a loss at the masked
tokens only (L_mask). Decoder fine-tuning (the section's last paragraph; Sec. 4, "Implementation Details"): the
encoder frozen, the auxiliary decoders dropped, the mask ratio annealed linearly from 60% to 0.

Where this implementation departs from the official code: detok's blocks (RMSNorm, SwiGLU) instead of timm's
LayerNorm/GELU; fixed axial 2-D RoPE (`layers.rope_tables`) instead of RoPE-Mixed's learnable frequencies; no MoVQ
modulation of the latent tokens in the decoders; no class token.

Length (~470 lines): one model family as its paper describes it — encoder, pixel decoder and the auxiliary decoders
share the token layout and masking, and the presets sit at the end.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from detok.config import ConfigError, Fraction, FractionBelowOne, NonNegativeFloat, PositiveFloat, PositiveInt
from detok.layers import RMSNorm, grid_positions, patchify, rope_tables, unpatchify
from detok.losses.semantic import check_teacher_width, square_side
from detok.registry import register_with_tiny
from detok.teachers.base import pool_to_grid
from detok.teachers.specs import build_teacher
from detok.tokenizers.base import LatentLayout, Tokenizer, check_tokenizer_config, init_vit_weights, posterior_output
from detok.tokenizers.corruption import random_masking
from detok.tokenizers.detok import Block

TEACHER_KINDS = ("hog", "detok", "timm")


def _feature_dim(spec: str, channels: int, image_size: int, patch_size: int) -> int:
    """The width of an offline teacher's features (HOG: (p / cell)² · channels · 9), without weights to read."""
    return build_teacher(spec, channels, image_size, patch_size).feature_dim


@dataclass(frozen=True)
class MAETokConfig:
    """Architecture of a MAETok tokenizer (L latent tokens of H channels), its masking, auxiliary targets and latent
    statistics.

    Attributes:
        latent_tokens, latent_channels: L and H of Sec. 3 (128 and 32, Sec. 4 "Implementation Details").
        aux_width, aux_depth, aux_heads: each auxiliary decoder's ViT ("Each auxiliary decoder has 3 layers", Sec. 4).
        aux_targets: one teacher spec per auxiliary decoder (`detok.teachers.specs.build_teacher`).
        aux_dims: each target's feature width, aligned with `aux_targets` (the decoders' output widths; checked
            against the teachers when they are built). None: each width follows its teacher (`target_dims`), which
            the config alone gives for offline teachers only — HOG's (p / cell)² · channels · 9, so that the same
            preset gets 36 on greyscale and 108 on RGB images; a network teacher's width must be given.
        aux_weight: weight of every auxiliary term; 1.0, as the official loss adds each term unweighted.
        mask_mean, mask_std, mask_min, mask_max: the masking ratio of a training batch is drawn from a normal
            (mean, std) truncated to [min, max] (official `truncnorm` with loc 0.6, scale 0.25 on [0.4, 0.6]).
        finetune_mask_start: decoder fine-tuning anneals the ratio linearly from this value to 0 (Sec. 4: 60%).
        finetune_mask_steps: ... over this many optimiser steps, then trains unmasked (Sec. 4: "we linearly decrease
            the mask ratio from 60% to 0% over 50K iterations", of a fine-tuning of "a small number of additional
            epochs", Sec. 3); None spreads the anneal over the whole fine-tuning run (detok before issue 37).
    """

    image_size: PositiveInt = 256
    channels: PositiveInt = 3
    patch_size: PositiveInt = 16
    latent_tokens: PositiveInt = 128
    latent_channels: PositiveInt = 32
    enc_width: PositiveInt = 768
    enc_depth: PositiveInt = 12
    enc_heads: PositiveInt = 12
    dec_width: PositiveInt = 768
    dec_depth: PositiveInt = 12
    dec_heads: PositiveInt = 12
    aux_width: PositiveInt = 192
    aux_depth: PositiveInt = 3
    aux_heads: PositiveInt = 3
    mlp_ratio: PositiveFloat = 4.0
    rope_theta: PositiveFloat = 10.0
    aux_targets: tuple[str, ...] = ("hog",)
    aux_dims: tuple[int, ...] | None = None
    aux_weight: NonNegativeFloat = 1.0
    mask_mean: Fraction = 0.6
    mask_std: PositiveFloat = 0.25
    mask_min: Fraction = 0.4
    mask_max: FractionBelowOne = 0.6
    finetune_mask_start: FractionBelowOne = 0.6
    finetune_mask_steps: PositiveInt | None = 50_000
    latent_mean: tuple[float, ...] | None = None
    latent_std: tuple[float, ...] | None = None

    def __post_init__(self):
        check_tokenizer_config(self, self.patch_size, head_multiple=4)  # 2-D RoPE splits each head in 4
        if self.aux_width % self.aux_heads or (self.aux_width // self.aux_heads) % 4:
            raise ValueError(
                f"aux_width {self.aux_width} / aux_heads {self.aux_heads} must give a whole head size divisible by 4"
            )
        if self.mask_min > self.mask_max:
            raise ConfigError("mask_min", f"must be ≤ mask_max={self.mask_max}, got {self.mask_min}")
        for spec in self.aux_targets:
            if spec.partition(":")[0] not in TEACHER_KINDS:
                raise ConfigError("aux_targets", f"holds {spec!r}; known teachers: hog[:CELL], detok:FOLDER, timm:…")
        if self.aux_dims is None:
            networks = [s for s in self.aux_targets if target_loss(s) != "mse"]
            if networks:
                raise ConfigError(
                    "aux_dims",
                    f"must give every target's width: only HOG's follows from the config, not {networks[0]!r}'s",
                )
        elif len(self.aux_dims) != len(self.aux_targets):
            raise ConfigError(
                "aux_dims",
                f"must give one width per aux_targets entry ({len(self.aux_targets)}), got {list(self.aux_dims)}",
            )
        if any(d < 1 for d in self.aux_dims or ()):
            raise ConfigError("aux_dims", f"must hold widths ≥ 1, got {list(self.aux_dims)}")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def target_dims(self) -> tuple[int, ...]:
        """The auxiliary decoders' output widths: `aux_dims`, or (None) each offline teacher's own width."""
        if self.aux_dims is not None:
            return self.aux_dims
        return tuple(_feature_dim(s, self.channels, self.image_size, self.patch_size) for s in self.aux_targets)


def target_loss(spec: str) -> str:
    """The auxiliary loss of a target, as the official code computes them: "mse" on HOG histograms, "cosine"
    (1 − cos) on a network's features (DINOv2 and SigLIP there; any `detok:` or `timm:` teacher here)."""
    return "mse" if spec.partition(":")[0] == "hog" else "cosine"


def aux_term_names(targets: tuple[str, ...]) -> list[str]:
    """The forward's "aux" keys, one per target in order: "aux0_hog", "aux1_timm", …"""
    return [f"aux{j}_{spec.partition(':')[0]}" for j, spec in enumerate(targets)]


def truncated_normal(mean: float, std: float, low: float, high: float, generator: torch.Generator | None) -> float:
    """One draw of N(mean, std²) truncated to [low, high], by inverting the CDF (official: scipy's truncnorm)."""
    lo, hi = (torch.tensor((b - mean) / std, dtype=torch.float64) for b in (low, high))
    a, b = torch.special.ndtr(lo), torch.special.ndtr(hi)
    u = torch.rand((), generator=generator, dtype=torch.float64)
    return float((mean + std * torch.special.ndtri(a + u * (b - a))).clamp(low, high))


def image_rope(grid: int, latent_tokens: int, head_dim: int, theta: float) -> torch.Tensor:
    """RoPE table of a [T image tokens; K latent tokens] sequence: (T+K, hd/2, 2). The image tokens rotate with their
    2-D patch position; the latent tokens sit at angle 0, i.e. are not rotated (they carry learned 1-D positions)."""
    positions = torch.cat([grid_positions(grid, grid), torch.zeros(latent_tokens, 2)])  # (T+K, 2)
    return rope_tables(positions, head_dim, theta)


# --------------------------------------------------------------------------------------------------
# Decoders
# --------------------------------------------------------------------------------------------------


class MaskTokenDecoder(nn.Module):
    """ViT over [T mask tokens (2-D RoPE); K projected latents (learned 1-D positions)] read off the mask tokens:
    the pixel decoder and, shallower, each auxiliary decoder (Sec. 3: "the same design … with fewer layers")."""

    def __init__(self, cfg: MAETokConfig, width: int, depth: int, heads: int, out_dim: int):
        super().__init__()
        self.embed = nn.Linear(cfg.latent_channels, width)
        self.latent_pos = nn.Parameter(torch.zeros(1, cfg.latent_tokens, width))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.ModuleList(Block(width, heads, cfg.mlp_ratio) for _ in range(depth))
        self.norm = RMSNorm(width)
        self.head = nn.Linear(width, out_dim)
        rope = image_rope(cfg.grid_size, cfg.latent_tokens, width // heads, cfg.rope_theta)
        self.register_buffer("rope", rope, persistent=False)  # (T+K, hd/2, 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, K, H) → outputs at the T image positions (N, T, out_dim)."""
        n, t = z.shape[0], self.rope.shape[0] - z.shape[1]
        latents = self.embed(z) + self.latent_pos  # (N, K, D)
        masks = self.mask_token.to(latents.dtype).expand(n, t, -1)  # (N, T, D): position from RoPE alone
        h = torch.cat([masks, latents], dim=1)  # (N, T+K, D)
        for block in self.blocks:
            h = block(h, self.rope)  # (N, T+K, D)
        return self.head(self.norm(h[:, :t]))  # (N, T, out_dim)


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


class MAETok(Tokenizer):
    """ViT encoder over [patches, some replaced by [MASK]; K latent tokens] → K latents → pixel decoder, plus
    auxiliary decoders predicting teacher features at the masked patches during training."""

    config_cls = MAETokConfig
    # The teachers' specs (a weights path) and the masking schedule do not change the weights' shapes: aux_dims does.
    non_architecture_fields = (
        "aux_targets", "aux_weight", "mask_mean", "mask_std", "mask_min", "mask_max", "finetune_mask_start",
        "finetune_mask_steps", "latent_mean", "latent_std",
    )  # fmt: skip
    # Official configs/maetok-b-64.yaml: global batch 512, lr 1e-4 per 256 images (scaled by 512 / 256) for 500K
    # iterations (Sec. 4), 2 of 200 epochs warm-up, cosine to 0.1× the peak, AdamW (0.9, 0.95), weight decay 1e-4,
    # clip 1.0; LPIPS-VGG alone (λ1 = 1.0 as the base recipe has it, Sec. 4; twins leave it off), adaptive hinge
    # GAN λ2 = 0.4 (Sec. 4) from step 30,000.
    paper_recipe = (
        "train.batch_size=512", "train.blr=1e-4", "train.images=256000000", "train.warmup_frac=0.01",
        "train.min_lr=2e-5", "train.grad_clip=1.0", "loss.convnext_weight=0",
        "loss.gan_weight=0.4", "loss.adaptive_gan_weight=true", "loss.gan_start_step=30000",
    )  # fmt: skip

    def __init__(self, config: MAETokConfig):
        super().__init__()
        self.config = config
        k, patch_dim = config.latent_tokens, config.patch_size**2 * config.channels

        # Encoder: patch embeddings (some replaced by [MASK]) and K learnable latent tokens with 1-D positions
        self.patch_embed = nn.Linear(patch_dim, config.enc_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.enc_width))
        self.latent_queries = nn.Parameter(torch.zeros(1, k, config.enc_width))
        self.enc_latent_pos = nn.Parameter(torch.zeros(1, k, config.enc_width))
        self.enc_blocks = nn.ModuleList(
            Block(config.enc_width, config.enc_heads, config.mlp_ratio) for _ in range(config.enc_depth)
        )
        self.enc_norm = RMSNorm(config.enc_width)
        self.enc_head = nn.Linear(config.enc_width, config.latent_channels)
        rope = image_rope(config.grid_size, k, config.enc_width // config.enc_heads, config.rope_theta)
        self.register_buffer("enc_rope", rope, persistent=False)  # (T+K, hd/2, 2)

        # Pixel decoder and one shallow auxiliary decoder per teacher target
        self.decoder = MaskTokenDecoder(config, config.dec_width, config.dec_depth, config.dec_heads, patch_dim)
        self.aux_decoders = nn.ModuleList(
            MaskTokenDecoder(config, config.aux_width, config.aux_depth, config.aux_heads, dim)
            for dim in config.target_dims
        )
        self.initialize_weights()

    def initialize_weights(self) -> None:
        decoders = [self.decoder, *self.aux_decoders]
        embeddings = (self.mask_token, self.latent_queries, self.enc_latent_pos)
        init_vit_weights(self, (*embeddings, *(p for d in decoders for p in (d.latent_pos, d.mask_token))))

    # ----------------------------------------------------------------------------------------------
    # Layout, teachers and masking schedule
    # ----------------------------------------------------------------------------------------------

    @property
    def latent_layout(self) -> LatentLayout:
        """A (K, H) sequence."""
        return LatentLayout("sequence", (self.config.latent_tokens, self.config.latent_channels))

    @property
    def maskable_tokens(self) -> int:
        return self.config.grid_size**2

    def decoder_finetune_frozen(self) -> list[nn.Parameter]:
        parts = [self.patch_embed, self.enc_blocks, self.enc_norm, self.enc_head]
        own = [self.mask_token, self.latent_queries, self.enc_latent_pos]
        return own + [p for m in parts for p in m.parameters()]

    def last_decoder_layer(self) -> torch.Tensor:
        return self.decoder.head.weight

    def build_teachers(self) -> list[nn.Module]:
        """One frozen teacher per auxiliary target, its feature width checked against `target_dims`."""
        cfg, teachers = self.config, []
        for j, (spec, dim) in enumerate(zip(cfg.aux_targets, cfg.target_dims)):
            teacher = build_teacher(spec, cfg.channels, cfg.image_size, cfg.patch_size)
            check_teacher_width(teacher, dim, f"model.aux_dims[{j}]")
            teachers.append(teacher)
        return teachers

    def mask_ratio_at(
        self, step: int, total_steps: int, generator: torch.Generator, decoder_finetune: bool = False
    ) -> float:
        """Training: a truncated-normal draw in [mask_min, mask_max]; decoder fine-tuning: linear from
        `finetune_mask_start` at the first step to 0 at step `finetune_mask_steps` and after (Sec. 4), or at the
        run's last step when that is None."""
        if decoder_finetune:
            span = self.config.finetune_mask_steps
            span = max(1, total_steps - 1) if span is None else span
            return self.config.finetune_mask_start * max(0.0, 1.0 - step / span)
        return self.draw_mask_ratio(generator)

    def draw_mask_ratio(self, generator: torch.Generator | None = None) -> float:
        """A training batch's masking ratio: N(mask_mean, mask_std²) truncated to [mask_min, mask_max]."""
        cfg = self.config
        return truncated_normal(cfg.mask_mean, cfg.mask_std, cfg.mask_min, cfg.mask_max, generator)

    # ----------------------------------------------------------------------------------------------
    # Stages
    # ----------------------------------------------------------------------------------------------

    def forward_encoder(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Images (N, C_img, H, W) → latents (N, K, H).

        Args:
            mask: (N, T) with 1 = masked: those patch embeddings are replaced by [MASK] in place (the sequence keeps
                all T positions, and their RoPE); None masks nothing.
        """
        h = self.patch_embed(patchify(x, self.config.patch_size))  # (N, T, D)
        if mask is not None:
            h = torch.where(mask[..., None].bool(), self.mask_token.to(h.dtype), h)  # (N, T, D)
        q = (self.latent_queries + self.enc_latent_pos).expand(len(x), -1, -1)  # (N, K, D)
        h = torch.cat([h, q.to(h.dtype)], dim=1)  # (N, T+K, D)
        for block in self.enc_blocks:
            h = block(h, self.enc_rope)  # (N, T+K, D)
        return self.enc_head(self.enc_norm(h[:, -self.config.latent_tokens :]))  # (N, K, H)

    def forward_decoder(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, K, H) → images (N, C_img, H, W), read off the T mask tokens."""
        cfg = self.config
        patches = self.decoder(z)  # (N, T, p·p·C_img)
        return unpatchify(patches, cfg.patch_size, cfg.channels, (cfg.grid_size, cfg.grid_size))

    def forward_aux(
        self, z: torch.Tensor, teacher_features: list[torch.Tensor], mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The paper's L_mask, one term per target: each auxiliary decoder's prediction from the latents z (N, K, H)
        against its teacher's features (N, T_j, D_j) — pooled to the patch grid — at the masked tokens of `mask`
        (N, T) only: MSE averaged over the masked tokens and channels for HOG, 1 − cos averaged over the masked
        tokens for network features; each times `aux_weight`."""
        cfg, g = self.config, self.config.grid_size
        if len(teacher_features) != len(self.aux_decoders):
            raise ValueError(
                f"got {len(teacher_features)} teacher feature maps for {len(self.aux_decoders)} aux_targets"
            )
        weight = mask.float()  # (N, T)
        count = weight.sum().clamp(min=1.0)
        terms = {}
        for name, spec, decoder, feats in zip(
            aux_term_names(cfg.aux_targets), cfg.aux_targets, self.aux_decoders, teacher_features
        ):
            side = square_side(feats.shape[1])
            target = pool_to_grid(feats.float(), (side, side), (g, g))  # (N, T, D_j)
            pred = decoder(z).float()  # (N, T, D_j)
            if target.shape[-1] != pred.shape[-1]:
                raise ValueError(f"{spec!r} gives {target.shape[-1]}-d features; its decoder predicts {pred.shape[-1]}")
            if target_loss(spec) == "mse":
                per_token = (pred - target).pow(2).mean(-1)  # (N, T)
            else:
                per_token = 1.0 - F.cosine_similarity(pred, target, dim=-1)  # (N, T)
            terms[name] = cfg.aux_weight * (per_token * weight).sum() / count
        return terms

    def forward(
        self,
        x: torch.Tensor,
        corrupt: bool | None = None,
        mask_ratio: float | None = None,
        sample_posterior: bool = True,
        teacher_features: list[torch.Tensor] | None = None,
    ) -> dict:
        """Training forward: mask patches in place → encode → decode pixels (and teacher features).

        Args:
            x: images (N, C_img, H, W) in [-1, 1].
            corrupt: draw a masking ratio when none is given; defaults to `self.training`. MAETok has no latent
                noise, so this is all it decides.
            mask_ratio: mask this share of the patches (the trainer's `mask_ratio_at`, also during decoder
                fine-tuning, where the trainer sets corrupt=False: a given ratio is always applied).
            sample_posterior: unused (a plain autoencoder has no posterior to sample).
            teacher_features: [(N, T_j, D_j)] aligned with `build_teachers()`: adds one auxiliary term per target
                ("aux0_hog", …); none (decoder fine-tuning) adds no term.

        Returns:
            dict with "recon" (N, C_img, H, W), "aux" (the auxiliary terms, weights folded in), "mean" (the latents,
            (N, K, H)), "mask" (N, T) with 1 = masked, and "mask_ratio".
        """
        self.check_images(x)
        corrupt = self.training if corrupt is None else corrupt
        if mask_ratio is None:
            mask_ratio = self.draw_mask_ratio() if corrupt else 0.0
        n, t = x.shape[0], self.maskable_tokens
        mask = random_masking(n, t, mask_ratio, x.device)[1] if mask_ratio > 0 else x.new_zeros(n, t)  # (N, T)

        z = self.forward_encoder(x, mask if mask_ratio > 0 else None)  # (N, K, H)
        recon = self.forward_decoder(z)  # (N, C_img, H, W)
        out = posterior_output(recon, z, None, mask=mask, mask_ratio=torch.tensor(float(mask_ratio)))
        if teacher_features:
            out["aux"].update(self.forward_aux(z, teacher_features, mask))
        return out

    # ----------------------------------------------------------------------------------------------
    # Tokenizer interface
    # ----------------------------------------------------------------------------------------------

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Images (N, C_img, H, W) → latents (N, K, H) and no logvar; nothing masked."""
        return self.forward_encoder(x), None

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_decoder(z)

    def reconstruct_visible(self, x: torch.Tensor, ids_keep: torch.Tensor | None) -> torch.Tensor:
        """Encode with every patch outside `ids_keep` (N, T_keep) replaced by [MASK], as in training; decode."""
        mask = None
        if ids_keep is not None:
            mask = torch.ones(len(x), self.maskable_tokens, device=x.device).scatter(1, ids_keep, 0.0)  # (N, T)
        return self.forward_decoder(self.forward_encoder(x, mask))  # (N, C_img, H, W)


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


def _tiny(cfg: MAETokConfig) -> MAETokConfig:
    """Tiny twin for tests: width 32, one block per decoder, 32-px images at most, at most 8 latent tokens, and only
    the offline (HOG) targets: the others need weights files."""
    p = min(cfg.patch_size, 4)
    size = 8 * p if cfg.image_size > 32 else cfg.image_size
    targets = tuple(s for s in cfg.aux_targets if target_loss(s) == "mse")
    width = {"enc_width": 32, "enc_depth": 1, "enc_heads": 2, "dec_width": 32, "dec_depth": 1, "dec_heads": 2}
    aux = {"aux_width": 32, "aux_depth": 1, "aux_heads": 2, "aux_targets": targets, "aux_dims": None}
    return dataclasses.replace(
        cfg, image_size=size, patch_size=p, latent_tokens=min(cfg.latent_tokens, 8), mlp_ratio=2.0, **width, **aux
    )


_register_pair = functools.partial(register_with_tiny, kind="tokenizer", model_cls=MAETok, tiny=_tiny)

# Sec. 4: HOG, DINOv2-Large and SigLIP targets. timm's names, as the official code builds them (its SigLIP is the
# SO400M tower; the paper says "SigCLIP-Large"), fed 224-px inputs: 16×16 patches of 14 px, the tokenizer's grid (the
# official code resamples their patch embeddings to 16 px at 256 px for the same grid). Their weights are read from
# local files only, so building the teachers fails with a message naming these paths until they hold them (or
# model.aux_targets names other files).
PAPER_TARGETS = (
    "hog",
    "timm:vit_large_patch14_dinov2.lvd142m@224:weights/dinov2-vitl14.safetensors",
    "timm:vit_so400m_patch14_siglip_gap_224@224:weights/siglip-so400m-patch14-224.safetensors",
)
PAPER_DIMS = (108, 1024, 1152)  # HOG 2×2 cells × 3 channels × 9 bins; DINOv2-L's and SO400M's widths

_register_pair(
    "maetok-b",
    lambda: MAETokConfig(aux_targets=PAPER_TARGETS, aux_dims=PAPER_DIMS),
    "MAETok (Sec. 4): ViT-B encoder and pixel decoder (768×12, 12 heads), 256 px, p=16, L=128 latent tokens of "
    "H=32; 3 auxiliary decoders of 3 blocks (192 wide, 3 heads: the official 'tinytiny' decoder, width assumed "
    "ViT-Tiny's) for HOG, DINOv2-L and SigLIP at the masked tokens, weight 1 each; mask ratio ~ N(0.6, 0.25²) "
    "truncated to [0.4, 0.6]; decoder fine-tuning anneals it 0.6 → 0 over 50K iterations (Sec. 4). Teacher weights "
    "are read from "
    f"{', '.join(s.split(':')[-1] for s in PAPER_TARGETS[1:])} (set model.aux_targets to other files).",
)


def _fmnist32() -> MAETokConfig:
    return MAETokConfig(
        image_size=32,
        channels=1,
        patch_size=4,
        latent_tokens=32,
        latent_channels=16,
        enc_width=192,
        enc_depth=4,
        enc_heads=4,
        dec_width=192,
        dec_depth=4,
        dec_heads=4,
        aux_width=48,
        aux_depth=3,
        aux_heads=2,
        aux_targets=("hog",),
        finetune_mask_steps=62,  # 1/10 of the preset's 625-step run, as the paper's 50K of 500K iterations
    )


_register_pair(
    "maetok-fmnist32",
    _fmnist32,
    "Fashion-MNIST-32 MAETok: the encoder/decoder of detok-fmnist32 (192×4, 4 heads, p=4: 64 patches) with K=32 "
    "latent tokens of H=16 — 512 numbers like detok-fmnist32's 8×8×8 grid, and K/T = 1/2 like the paper's 128 latents "
    "for 256 patches; one auxiliary decoder of 3 blocks, 48 wide (1/4 of the pixel decoder's, as in maetok-b), for "
    "HOG (2×2 cells of 2 px × 9 bins × channels: 36 on greyscale, 108 with model.channels=3; the width follows "
    "the teacher) at the masked tokens; decoder fine-tuning anneals the ratio 0.6 → 0 over 62 steps (1/10 of the "
    "default 40,000-image run, as the paper's 50K of 500K iterations). To add detok's offline MAE teacher as a second "
    "target, train it (`detok teacher train --preset mae-teacher-fmnist32`) and pass --set "
    "'model.aux_targets=[\"hog\",\"detok:mae-teacher-fmnist32\"]' --set 'model.aux_dims=[36,192]' (its width).",
)
