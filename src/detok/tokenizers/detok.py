"""l-DeTok: a ViT tokenizer trained to reconstruct clean images from corrupted latents.

Paper: "Latent Denoising Makes Good Visual Tokenizers" (Yang et al., arXiv:2507.15856), §3.2, App. A.1.
The encoder sees only the visible patches (MAE-style); its latents are noised by interpolation with
Gaussian noise (Eq. 4); the decoder fills masked positions with a learned [MASK] token and reconstructs
the whole image. Both corruptions apply only in training; `encode` returns the posterior mean.

Length (~510 lines): one model family in the paper's order, now with both architectures (official and r2) and the
paper's presets; under STYLE's ~600 split point.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn as nn

from detok.config import PositiveFloat, PositiveInt
from detok.layers import (
    Attention,
    RMSNorm,
    SwiGLU,
    grid_positions,
    patchify,
    rope_tables,
    rope_tables_unit_grid,
    swiglu_hidden_dim,
    unpatchify,
)
from detok.losses.semantic import DistillConfig, Projector, check_teacher_width, cosine_distill_loss, square_side
from detok.registry import register_with_tiny
from detok.tokenizers.base import LatentLayout, Tokenizer, check_tokenizer_config, init_vit_weights, posterior_output
from detok.tokenizers.corruption import (
    CorruptionConfig,
    corrupt_posterior,
    keep_tokens,
    random_masking,
    sample_mask_ratio,
)


@dataclass(frozen=True)
class DeTokConfig:
    """Architecture of an l-DeTok tokenizer, its training corruptions and its latent statistics.

    `latent_mean`/`latent_std` are per-channel statistics of `encode` outputs over the training set,
    filled in by `detok tokenizer stats`; `encode(..., normalize=True)` uses them. `distill` adds App. A.4's
    semantic distillation (a projector on the noised latents, trained towards a teacher's patch features).

    Five fields choose between the two architectures detok knows (`ARCHITECTURES`; docs/checkpoints.md). The
    defaults are the official l-DeTok — Jiawei-Yang/DeTok `models/detok.py` at 706f7ac, the paper's implementation,
    whose released weights `detok convert` loads; the paper's text (§3.2, App. A.1) does not fix these details.
    `ARCHITECTURES["r2"]` is detok's own variant, used for every result up to round 2:

    Attributes:
        rope: "unit-grid" — the official per-channel RoPE on [0, 1] coordinates (`layers.rope_tables_unit_grid`);
            "axial" — axial RoPE on integer positions with base `rope_theta` (`layers.rope_tables`).
        pre_norm: an RMSNorm on the tokens before the first block of the encoder and the decoder (upstream `ln_pre`).
        conv_out: a 3×3 convolution over the decoded image after the per-patch projection (upstream `conv_out`).
        swiglu_multiple: round the SwiGLU width int(2/3 · mlp_ratio · width) up to a multiple of this (1: none, as
            upstream: S 1365, B 2048, L 2730; 8 gives 1368, 2048, 2736).
        init: "official" — truncated N(0, 0.02²) linear/conv weights and N(0, 1/width) position embeddings and
            [MASK] token (upstream `_init_weights`); "xavier" — `init_vit_weights`.
    """

    image_size: PositiveInt = 256
    channels: PositiveInt = 3
    patch_size: PositiveInt = 16
    latent_channels: PositiveInt = 16
    enc_width: PositiveInt = 768
    enc_depth: PositiveInt = 12
    enc_heads: PositiveInt = 12
    dec_width: PositiveInt = 768
    dec_depth: PositiveInt = 12
    dec_heads: PositiveInt = 12
    mlp_ratio: PositiveFloat = 4.0
    variational: bool = True
    rope_theta: PositiveFloat = 100.0
    rope: Literal["unit-grid", "axial"] = "unit-grid"
    pre_norm: bool = True
    conv_out: bool = True
    swiglu_multiple: PositiveInt = 1
    init: Literal["official", "xavier"] = "official"
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)
    distill: DistillConfig | None = None
    latent_mean: tuple[float, ...] | None = None
    latent_std: tuple[float, ...] | None = None

    # A config.json written before these fields existed describes the round-2 architecture (`config.from_dict`).
    absent_fields_mean: ClassVar[dict] = {}  # filled in below, once ARCHITECTURES exists

    def __post_init__(self):
        check_tokenizer_config(self, self.patch_size, head_multiple=4)  # 2-D RoPE splits each head in 4

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def architecture(self) -> str:
        """The name of this config's architecture in `ARCHITECTURES`, or "custom" for another mix of the fields."""
        mine = {k: getattr(self, k) for k in ARCH_FIELDS}
        return next((name for name, arch in ARCHITECTURES.items() if arch == mine), "custom")


# The fields that tell the official l-DeTok from detok's round-2 variant, and the two settings of them.
ARCH_FIELDS = ("rope", "pre_norm", "conv_out", "swiglu_multiple", "init")
ARCHITECTURES: dict[str, dict] = {
    "official": {"rope": "unit-grid", "pre_norm": True, "conv_out": True, "swiglu_multiple": 1, "init": "official"},
    "r2": {"rope": "axial", "pre_norm": False, "conv_out": False, "swiglu_multiple": 8, "init": "xavier"},
}
DeTokConfig.absent_fields_mean = ARCHITECTURES["r2"]


class Block(nn.Module):
    """Pre-norm transformer block: RMSNorm → attention with 2-D RoPE, RMSNorm → SwiGLU."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, swiglu_multiple: int = 8):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, swiglu_hidden_dim(dim, mlp_ratio, swiglu_multiple))

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)  # (N, T, D)
        return x + self.mlp(self.norm2(x))  # (N, T, D)


class DeTok(Tokenizer):
    """ViT encoder/decoder tokenizer with masking and latent-noise corruption (l-DeTok)."""

    config_cls = DeTokConfig

    def __init__(self, config: DeTokConfig):
        super().__init__()
        self.config = config
        c, p, g = config.latent_channels, config.patch_size, config.grid_size
        num_tokens = g * g
        patch_dim = p * p * config.channels

        # Encoder
        self.patch_embed = nn.Linear(patch_dim, config.enc_width)
        self.enc_pos = nn.Parameter(torch.zeros(1, num_tokens, config.enc_width))
        self.enc_ln_pre = RMSNorm(config.enc_width) if config.pre_norm else None
        self.enc_blocks = nn.ModuleList(
            Block(config.enc_width, config.enc_heads, config.mlp_ratio, config.swiglu_multiple)
            for _ in range(config.enc_depth)
        )
        self.enc_norm = RMSNorm(config.enc_width)
        self.enc_head = nn.Linear(config.enc_width, 2 * c if config.variational else c)

        # Decoder
        self.dec_embed = nn.Linear(c, config.dec_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.dec_width))
        self.dec_pos = nn.Parameter(torch.zeros(1, num_tokens, config.dec_width))
        self.dec_ln_pre = RMSNorm(config.dec_width) if config.pre_norm else None
        self.dec_blocks = nn.ModuleList(
            Block(config.dec_width, config.dec_heads, config.mlp_ratio, config.swiglu_multiple)
            for _ in range(config.dec_depth)
        )
        self.dec_norm = RMSNorm(config.dec_width)
        self.dec_head = nn.Linear(config.dec_width, patch_dim)
        self.dec_conv_out = nn.Conv2d(config.channels, config.channels, 3, padding=1) if config.conv_out else None

        # App. A.4: the distillation projector (training only; unused by encode/decode)
        self.distill_proj = None
        if config.distill is not None:
            self.distill_proj = Projector(c, config.distill.hidden, config.distill.teacher_dim)

        positions = grid_positions(g, g)
        for name, width, heads in (
            ("enc", config.enc_width, config.enc_heads),
            ("dec", config.dec_width, config.dec_heads),
        ):
            if config.rope == "axial":
                rope = rope_tables(positions, width // heads, config.rope_theta)  # (T, hd/2, 2)
            else:
                rope = rope_tables_unit_grid((g, g), width // heads)  # (T, hd, 2)
            self.register_buffer(f"{name}_rope", rope, persistent=False)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        if self.config.init == "xavier":
            init_vit_weights(self, (self.enc_pos, self.dec_pos, self.mask_token))
            return
        for m in self.modules():  # upstream `DeTok._init_weights`
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for param, width in ((self.enc_pos, self.config.enc_width), (self.dec_pos, self.config.dec_width)):
            nn.init.normal_(param, std=width**-0.5)  # upstream: width^-0.5 · randn
        nn.init.normal_(self.mask_token, std=self.config.dec_width**-0.5)

    # ----------------------------------------------------------------------------------------------
    # Layout
    # ----------------------------------------------------------------------------------------------

    @property
    def latent_layout(self) -> LatentLayout:
        """A (C, h, w) grid: one C-channel latent per patch."""
        g = self.config.grid_size
        return LatentLayout("grid", (self.config.latent_channels, g, g))

    @property
    def maskable_tokens(self) -> int:
        return self.config.grid_size**2

    def position_grids(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        g = self.config.grid_size
        return {"enc_pos": (0, (g, g)), "dec_pos": (0, (g, g))}

    def decoder_finetune_frozen(self) -> list[nn.Parameter]:
        parts = [self.patch_embed, self.enc_ln_pre, self.enc_blocks, self.enc_norm, self.enc_head, self.distill_proj]
        return [self.enc_pos] + [p for m in parts if m is not None for p in m.parameters()]

    def build_teachers(self) -> list[nn.Module]:
        """The distillation teacher (App. A.4), if this tokenizer distils."""
        from detok.teachers.specs import build_teacher

        distill, cfg = self.config.distill, self.config
        if distill is None:
            return []
        teacher = build_teacher(distill.teacher, cfg.channels, cfg.image_size, cfg.patch_size)
        check_teacher_width(teacher, distill.teacher_dim, "model.distill.teacher_dim")
        return [teacher]

    def last_decoder_layer(self) -> torch.Tensor:
        return self.dec_head.weight if self.dec_conv_out is None else self.dec_conv_out.weight

    # ----------------------------------------------------------------------------------------------
    # Stages
    # ----------------------------------------------------------------------------------------------

    def forward_encoder(self, x: torch.Tensor, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encode the visible patches of images x (N, C_img, H, W).

        Args:
            ids_keep: (N, T_keep) indices of visible patches in raster order; None keeps all.

        Returns:
            Posterior moments (N, T_keep, 2C) as [mean, logvar], or latents (N, T_keep, C) for a plain AE.
        """
        patches = patchify(x, self.config.patch_size)  # (N, T, p·p·C_img)
        rope = self.enc_rope  # (T, K, 2): K = hd/2 (axial) or hd (unit-grid)
        pos = self.enc_pos  # (1, T, D)
        if ids_keep is not None:
            patches, pos = keep_tokens(patches, ids_keep), keep_tokens(pos, ids_keep)  # (N, T_keep, ·)
            rope = rope[ids_keep].unsqueeze(1)  # (N, 1, T_keep, K, 2)
        h = self.patch_embed(patches) + pos  # (N, T_keep, D)
        if self.enc_ln_pre is not None:
            h = self.enc_ln_pre(h)  # (N, T_keep, D)
        for block in self.enc_blocks:
            h = block(h, rope)  # (N, T_keep, D)
        return self.enc_head(self.enc_norm(h))  # (N, T_keep, 2C or C)

    def forward_decoder(self, z: torch.Tensor, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Decode latent tokens z (N, T_keep, C) into images (N, C_img, H, W); masked slots get [MASK]."""
        cfg = self.config
        h = self.dec_embed(z)  # (N, T_keep, D)
        if ids_keep is not None:
            n, t = z.shape[0], self.dec_pos.shape[1]
            full = self.mask_token.to(h.dtype).expand(n, t, -1).clone()  # (N, T, D)
            h = full.scatter(1, ids_keep[..., None].expand(-1, -1, h.shape[-1]), h)  # (N, T, D)
        h = h + self.dec_pos  # (N, T, D)
        if self.dec_ln_pre is not None:
            h = self.dec_ln_pre(h)  # (N, T, D)
        for block in self.dec_blocks:
            h = block(h, self.dec_rope)  # (N, T, D)
        patches = self.dec_head(self.dec_norm(h))  # (N, T, p·p·C_img)
        images = unpatchify(patches, cfg.patch_size, cfg.channels, (cfg.grid_size, cfg.grid_size))  # (N, C_img, H, W)
        return images if self.dec_conv_out is None else self.dec_conv_out(images)  # (N, C_img, H, W)

    def split_moments(self, moments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, logvar) of the diagonal Gaussian posterior; logvar is None for a plain autoencoder."""
        if not self.config.variational:
            return moments, None
        mean, logvar = moments.chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)

    def forward(
        self,
        x: torch.Tensor,
        corrupt: bool | None = None,
        mask_ratio: float | None = None,
        sample_posterior: bool = True,
        teacher_features: list[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training forward pass (Alg. 1): mask → encode → sample posterior → noise → decode.

        Args:
            x: images (N, C_img, H, W) in [-1, 1].
            corrupt: apply masking and latent noise; defaults to `self.training`.
            mask_ratio: use this ratio instead of drawing one (the trainer draws it once per global batch so
                that data-parallel shards agree).
            sample_posterior: draw z from the posterior; False uses its mean (decoder fine-tuning, App. A.3).
            teacher_features: [(N, T_teacher, D)] of the distillation teacher (`build_teachers`): adds the
                "distill" auxiliary term (App. A.4).

        Returns:
            dict with "recon" (N, C_img, H, W), "aux" ({"kl": KL(q(z|x) ‖ N(0, I)) summed over latent elements,
            averaged over images} for the variational model, else {}), "mean" and "logvar" (N, T_keep, C; logvar
            absent for a plain AE), "mask" (N, T) with 1 = removed, "mask_ratio" and "tau" (N,) actually used.
        """
        self.check_images(x)
        cfg = self.config.corruption
        corrupt = self.training if corrupt is None else corrupt
        n, t = x.shape[0], self.config.grid_size**2
        ratio = 0.0
        if corrupt:
            ratio = sample_mask_ratio(cfg) if mask_ratio is None else mask_ratio
        ids_keep, mask = random_masking(n, t, ratio, x.device) if ratio > 0 else (None, x.new_zeros(n, t))

        mean, logvar = self.split_moments(self.forward_encoder(x, ids_keep))  # (N, T_keep, C)
        z, tau = corrupt_posterior(mean, logvar, cfg, corrupt, sample_posterior)  # Eq. 4
        recon = self.forward_decoder(z, ids_keep)  # (N, C_img, H, W)
        out = posterior_output(recon, mean, logvar, mask=mask, tau=tau, mask_ratio=torch.tensor(ratio))
        if teacher_features:
            out["aux"]["distill"] = self.distill_loss(z, teacher_features[0], ids_keep)
        return out

    def distill_loss(self, z: torch.Tensor, feats: torch.Tensor, ids_keep: torch.Tensor | None) -> torch.Tensor:
        """App. A.4: λ·(1 − cos(proj(z_noised), f)) at the visible positions.

        Args:
            z: the noised latents of the visible tokens (N, T_keep, C) — Alg. 1's z_noised.
            feats: the teacher's patch features (N, T_teacher, D), pooled here to the tokenizer's grid.
            ids_keep: (N, T_keep) visible positions, None when nothing is masked.
        """
        from detok.teachers.base import pool_to_grid

        if self.distill_proj is None:
            raise ValueError("teacher features were given to a tokenizer without model.distill")
        g, side = self.config.grid_size, square_side(feats.shape[1])
        target = pool_to_grid(feats, (side, side), (g, g))  # (N, T, D)
        if ids_keep is not None:
            target = keep_tokens(target, ids_keep)  # (N, T_keep, D)
        return self.config.distill.weight * cosine_distill_loss(self.distill_proj(z), target)

    # ----------------------------------------------------------------------------------------------
    # Tokenizer interface
    # ----------------------------------------------------------------------------------------------

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (N, C_img, H, W) → posterior (mean, logvar) as grids (N, C, h, w); no mask, no noise."""
        mean, logvar = self.split_moments(self.forward_encoder(x))  # (N, T, C)
        g = self.config.grid_size
        to_grid = lambda t: t.transpose(1, 2).reshape(x.shape[0], -1, g, g)  # noqa: E731  (N, C, h, w)
        return to_grid(mean), None if logvar is None else to_grid(logvar)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latent grids (N, C, h, w) → images (N, C_img, H, W)."""
        return self.forward_decoder(z.flatten(2).transpose(1, 2))  # (N, C_img, H, W)

    def reconstruct_visible(self, x: torch.Tensor, ids_keep: torch.Tensor | None) -> torch.Tensor:
        """Encode only the patches `ids_keep` (N, T_keep) of x (None: all); decode with [MASK] in the rest."""
        mean, _ = self.split_moments(self.forward_encoder(x, ids_keep))  # (N, T_keep, C)
        return self.forward_decoder(mean, ids_keep)  # (N, C_img, H, W)


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------

_SIZES = {"s": (512, 8, 8), "b": (768, 12, 12), "l": (1024, 24, 16)}


def _paper(enc: str, dec: str, arch: str = "official") -> DeTokConfig:
    ew, ed, eh = _SIZES[enc]
    dw, dd, dh = _SIZES[dec]
    return DeTokConfig(
        **ARCHITECTURES[arch],
        image_size=256,
        channels=3,
        patch_size=16,
        latent_channels=16,
        enc_width=ew,
        enc_depth=ed,
        enc_heads=eh,
        dec_width=dw,
        dec_depth=dd,
        dec_heads=dh,
    )


def _tiny(cfg: DeTokConfig) -> DeTokConfig:
    """Tiny twin for tests: same shape conventions, width 32, one block each side, 32-px images at most (large
    enough for the default 3-layer PatchGAN, so a paper preset's twin trains with its own recipe)."""
    p = min(cfg.patch_size, 4)
    size = 8 * p if cfg.image_size > 32 else cfg.image_size
    width = {"enc_width": 32, "enc_depth": 1, "enc_heads": 2, "dec_width": 32, "dec_depth": 1, "dec_heads": 2}
    if cfg.distill is not None:  # an offline teacher: HOG on the twin's patches (2×2 cells × channels × 9 bins)
        width["distill"] = DistillConfig(teacher="hog", teacher_dim=4 * cfg.channels * 9, hidden=32)
    return dataclasses.replace(cfg, image_size=size, patch_size=p, mlp_ratio=2.0, **width)


_register_pair = functools.partial(register_with_tiny, kind="tokenizer", model_cls=DeTok, tiny=_tiny)


for _enc, _dec in (("s", "s"), ("s", "b"), ("b", "b"), ("l", "l")):
    _register_pair(
        f"detok-{_enc}{_dec}",
        lambda e=_enc, d=_dec: _paper(e, d),
        f"Paper size {_enc.upper()}{_dec.upper()} (encoder {_SIZES[_enc]}, decoder {_SIZES[_dec]} as "
        "width×depth×heads), 256 px, p=16, C=16, γ=3, M=0.7; the official architecture (Jiawei-Yang/DeTok "
        "models/detok.py @706f7ac: unit-grid RoPE, ln_pre, 3×3 conv_out, SwiGLU int(2/3·4d)), which `detok convert` "
        "fills with the released weights.",
    )
    _register_pair(
        f"detok-{_enc}{_dec}-r2",
        lambda e=_enc, d=_dec: _paper(e, d, "r2"),
        f"detok-{_enc}{_dec} in detok's round-2 architecture (axial RoPE θ=100 on integer positions, no ln_pre, "
        "per-patch linear head, SwiGLU width rounded up to a multiple of 8), kept for the results made with it.",
    )


# App. A.4: DINOv2-B's patch features (768-d). timm's name; its weights are read from a local file only, so the run
# fails with a message naming this path until it holds them (or model.distill.teacher names another file).
DINOV2_B_TEACHER = "timm:vit_base_patch14_dinov2.lvd142m@224:weights/dinov2-vitb14.safetensors"  # 224/14: 16×16

_register_pair(
    "detok-bb-distill",
    lambda: dataclasses.replace(_paper("b", "b"), distill=DistillConfig(teacher=DINOV2_B_TEACHER, teacher_dim=768)),
    "detok-bb with App. A.4's semantic distillation: projector Linear(16, 2048) → SiLU → Linear(2048, 2048) → SiLU → "
    "Linear(2048, 768) on the noised latents, 1 − cos to DINOv2-B's patch features at the visible positions, weight "
    "1.0; trained with the '+Extended' recipe (200 epochs, GAN from epoch 100). The teacher is read from "
    f"{DINOV2_B_TEACHER.split(':')[-1]}, fed 224-px inputs: a 16×16 grid, the tokenizer's (set "
    "model.distill.teacher=timm:MODEL@SIZE:PATH).",
)


def _fmnist32(arch: str = "r2") -> DeTokConfig:
    return DeTokConfig(
        **ARCHITECTURES[arch],
        image_size=32,
        channels=1,
        patch_size=4,
        latent_channels=8,
        enc_width=192,
        enc_depth=4,
        enc_heads=4,
        dec_width=192,
        dec_depth=4,
        dec_heads=4,
        mlp_ratio=4.0,
    )


_register_pair(
    "detok-fmnist32",
    _fmnist32,
    "Fashion-MNIST padded to 32×32×1: p=4 (an 8×8 token grid, fine enough for the thin strokes of clothing "
    "outlines), C=8 (512 latent numbers for 1,024 pixels; C=16 made the latent no smaller than the image), "
    "width 192 with 4+4 blocks and 4 heads: 74–102 img/s on 2 CPU cores (measured 2026-11-22/24), so the "
    "default 40,000 training images take 7–9 minutes and reach 23.6 dB test PSNR; the README demo trains "
    "32,000 (22.9 dB) to leave room for its generator (docs/results.md); γ=3, M=0.7 as in the paper. detok's "
    "round-2 architecture (docs/checkpoints.md); detok-fmnist32-official is the official one at the same size.",
)
_register_pair(
    "detok-fmnist32-official",
    lambda: _fmnist32("official"),
    "detok-fmnist32 in the official l-DeTok architecture (unit-grid RoPE, ln_pre, 3×3 conv_out, SwiGLU "
    "int(2/3·4d) = 512, upstream initialisation); everything else as detok-fmnist32.",
)


def _tiny_twice(cfg: DeTokConfig) -> DeTokConfig:
    """Tiny twin of a preset at twice its base's image size (App. A.3's fine-tuning presets): the base preset's twin
    at twice its size, so that the two twins differ in nothing else and one fine-tunes from the other."""
    base = _tiny(dataclasses.replace(cfg, image_size=cfg.image_size // 2))
    return dataclasses.replace(base, image_size=2 * base.image_size)


# App. A.3: the 512-px tokenizer, fine-tuned from a 256-px detok-bb run (its default run config is that recipe and
# needs init_from; training/tokenizer.py RESOLUTION_FINETUNES).
_register_pair(
    "detok-bb-512",
    lambda: dataclasses.replace(_paper("b", "b"), image_size=512),
    "detok-bb at 512 px (p=16, a 32×32 token grid), fine-tuned from a 256-px detok-bb run (App. A.3): "
    "--set init_from=RUN; learned position embeddings resampled bicubically from 16×16, RoPE rebuilt; lr 2e-4, "
    "25 epochs, GAN from the start; add --set decoder_finetune=true for the decoder-only variant.",
    tiny=_tiny_twice,
)
_register_pair(
    "detok-fmnist64",
    lambda: dataclasses.replace(_fmnist32(), image_size=64),
    "detok-fmnist32 at 64 px, the FMNIST analogue of App. A.3's 256 → 512 fine-tuning: p=4 stays, so the token grid "
    "grows from 8×8 to 16×16 as the paper's from 16×16 to 32×32 (p=8 would keep 8×8 and change the patch "
    "embedding instead); Fashion-MNIST padded to 32 px as detok-fmnist32 sees it, then resized to 64. Fine-tuned "
    "from a detok-fmnist32 run (--set init_from=RUN) with half its learning rate for 1/8 of its images, GAN on.",
    tiny=_tiny_twice,
)


# The offline, label-free teacher detok trains itself (`detok teacher train --preset mae-teacher-fmnist32`; its
# default cache folder): 192-d patch features on the same 8×8 grid as the tokenizer's.
OFFLINE_TEACHER = "detok:mae-teacher-fmnist32"

_register_pair(
    "detok-fmnist32-distill",
    lambda: dataclasses.replace(
        _fmnist32(), distill=DistillConfig(teacher=OFFLINE_TEACHER, teacher_dim=192, hidden=512)
    ),
    "detok-fmnist32 with App. A.4's distillation scaled to it: projector Linear(8, 512) → SiLU → Linear(512, 512) → "
    "SiLU → Linear(512, 192) on the noised latents (the paper's 16 → 2048 → 2048 → 768 with the hidden width cut "
    "to fit 2 CPU cores), 1 − cos to the offline MAE teacher's patch features (never a label-trained network), "
    "weight 1.0.",
)
