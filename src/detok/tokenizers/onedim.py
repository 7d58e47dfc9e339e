"""1-D tokenizer: a ViT that compresses an image into K learnable latent tokens, with l-DeTok's latent denoising.

Papers: "An Image is Worth 32 Tokens for Reconstruction and Generation" (TiTok; Yu et al., arXiv:2406.07550: K
latent tokens appended to the encoder's patch tokens; the decoder reconstructs from learnable mask tokens and the K
latents only) as l-DeTok builds it, "Latent Denoising Makes Good Visual Tokenizers" (Yang et al.,
arXiv:2507.15856), Sec. 5.5 and App. A.6: the 2-D tokenizer's encoder and decoder unchanged, K ∈ {32, 64, 128},
learnable absolute position embeddings only (no RoPE), the latent width of the 2-D tokenizers (C = 16), and for
l-DeTok interpolative noise with γ = 2, no masking, switched on only after a warm-up (10 of 50 epochs) past the
baseline's "grokking" phase (Fig. A.3).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from detok.config import PositiveFloat, PositiveInt
from detok.layers import RMSNorm, patchify, unpatchify
from detok.registry import register_with_tiny
from detok.tokenizers.base import LatentLayout, NoiseOnlyTokenizer, check_tokenizer_config, init_vit_weights
from detok.tokenizers.corruption import CorruptionConfig
from detok.tokenizers.detok import Block

NO_MASKING = "the 1-D tokenizer does not mask (l-DeTok App. A.6 omits masking for 1-D tokens)"


def _ldetok_1d() -> CorruptionConfig:
    """The paper's l-DeTok corruption for 1-D tokens: γ = 2, no masking, after a warm-up of 10 epochs (App. A.6: "we
    warm up the 1D tokenizer for 10 epochs by disabling the denoising task, and then enable it from epoch 10 onward").
    Before issue 37 the warm-up was 20% of the run (10 of 50 epochs only in a 50-epoch run; ~0.05 epoch at the
    `cpu` budget): `corruption.warmup_epochs=null corruption.warmup_frac=0.2` gives it back."""
    return CorruptionConfig(mask_max=0.0, mask_min=0.0, noise_gamma=2.0, warmup_epochs=10.0)


@dataclass(frozen=True)
class DeTok1DConfig:
    """Architecture of a 1-D tokenizer (K latent tokens of C channels), its corruption and latent statistics."""

    image_size: PositiveInt = 256
    channels: PositiveInt = 3
    patch_size: PositiveInt = 16
    latent_tokens: PositiveInt = 32
    latent_channels: PositiveInt = 16
    enc_width: PositiveInt = 512
    enc_depth: PositiveInt = 8
    enc_heads: PositiveInt = 8
    dec_width: PositiveInt = 768
    dec_depth: PositiveInt = 12
    dec_heads: PositiveInt = 12
    mlp_ratio: PositiveFloat = 4.0
    variational: bool = True
    corruption: CorruptionConfig = field(default_factory=_ldetok_1d)
    latent_mean: tuple[float, ...] | None = None
    latent_std: tuple[float, ...] | None = None

    def __post_init__(self):
        check_tokenizer_config(self, self.patch_size)
        self.corruption.check_unmasked(NO_MASKING)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


class DeTok1D(NoiseOnlyTokenizer):
    """ViT encoder over [patches; K latent tokens] → K latents → ViT decoder over [K latents; T mask tokens]."""

    no_masking = NO_MASKING
    config_cls = DeTok1DConfig

    def __init__(self, config: DeTok1DConfig):
        super().__init__()
        self.config = config
        c, k, t = config.latent_channels, config.latent_tokens, config.grid_size**2
        patch_dim = config.patch_size**2 * config.channels

        # Encoder: patch tokens and K learnable latent tokens, learned absolute positions, no RoPE
        self.patch_embed = nn.Linear(patch_dim, config.enc_width)
        self.enc_pos = nn.Parameter(torch.zeros(1, t, config.enc_width))
        self.latent_queries = nn.Parameter(torch.zeros(1, k, config.enc_width))
        self.enc_latent_pos = nn.Parameter(torch.zeros(1, k, config.enc_width))
        self.enc_blocks = nn.ModuleList(
            Block(config.enc_width, config.enc_heads, config.mlp_ratio) for _ in range(config.enc_depth)
        )
        self.enc_norm = RMSNorm(config.enc_width)
        self.enc_head = nn.Linear(config.enc_width, 2 * c if config.variational else c)

        # Decoder: the K latents and T learnable mask tokens; the image is read off the mask tokens
        self.dec_embed = nn.Linear(c, config.dec_width)
        self.dec_latent_pos = nn.Parameter(torch.zeros(1, k, config.dec_width))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.dec_width))
        self.dec_pos = nn.Parameter(torch.zeros(1, t, config.dec_width))
        self.dec_blocks = nn.ModuleList(
            Block(config.dec_width, config.dec_heads, config.mlp_ratio) for _ in range(config.dec_depth)
        )
        self.dec_norm = RMSNorm(config.dec_width)
        self.dec_head = nn.Linear(config.dec_width, patch_dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        embeddings = (self.enc_pos, self.latent_queries, self.enc_latent_pos, self.dec_latent_pos, self.mask_token)
        init_vit_weights(self, (*embeddings, self.dec_pos))

    # ----------------------------------------------------------------------------------------------
    # Layout
    # ----------------------------------------------------------------------------------------------

    @property
    def latent_layout(self) -> LatentLayout:
        """A (K, C) sequence."""
        return LatentLayout("sequence", (self.config.latent_tokens, self.config.latent_channels))

    def position_grids(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """The patch positions; the K latent tokens' positions do not depend on the image size."""
        g = self.config.grid_size
        return {"enc_pos": (0, (g, g)), "dec_pos": (0, (g, g))}

    def decoder_finetune_frozen(self) -> list[nn.Parameter]:
        parts = [self.patch_embed, self.enc_blocks, self.enc_norm, self.enc_head]
        own = [self.enc_pos, self.latent_queries, self.enc_latent_pos]
        return own + [p for m in parts for p in m.parameters()]

    def last_decoder_layer(self) -> torch.Tensor:
        return self.dec_head.weight

    # ----------------------------------------------------------------------------------------------
    # Stages
    # ----------------------------------------------------------------------------------------------

    def forward_encoder(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (N, C_img, H, W) → posterior (mean, logvar) of the K latents, each (N, K, C)."""
        h = self.patch_embed(patchify(x, self.config.patch_size)) + self.enc_pos  # (N, T, D)
        q = (self.latent_queries + self.enc_latent_pos).expand(len(x), -1, -1)  # (N, K, D)
        h = torch.cat([h, q], dim=1)  # (N, T+K, D)
        for block in self.enc_blocks:
            h = block(h, None)  # (N, T+K, D): no RoPE
        moments = self.enc_head(self.enc_norm(h[:, -self.config.latent_tokens :]))  # (N, K, 2C or C)
        if not self.config.variational:
            return moments, None
        mean, logvar = moments.chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)

    def forward_decoder(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, K, C) → images (N, C_img, H, W), read off the T mask tokens."""
        cfg, t = self.config, self.dec_pos.shape[1]
        masks = (self.mask_token + self.dec_pos).expand(len(z), -1, -1)  # (N, T, D)
        h = torch.cat([masks, self.dec_embed(z) + self.dec_latent_pos], dim=1)  # (N, T+K, D)
        for block in self.dec_blocks:
            h = block(h, None)  # (N, T+K, D)
        patches = self.dec_head(self.dec_norm(h[:, :t]))  # (N, T, p·p·C_img)
        return unpatchify(patches, cfg.patch_size, cfg.channels, (cfg.grid_size, cfg.grid_size))


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


def _tiny(cfg: DeTok1DConfig) -> DeTok1DConfig:
    """Tiny twin for tests: width 32, one block each side, 32-px images at most, at most 8 latent tokens."""
    p = min(cfg.patch_size, 4)
    size = 8 * p if cfg.image_size > 32 else cfg.image_size
    width = {"enc_width": 32, "enc_depth": 1, "enc_heads": 2, "dec_width": 32, "dec_depth": 1, "dec_heads": 2}
    return dataclasses.replace(
        cfg, image_size=size, patch_size=p, latent_tokens=min(cfg.latent_tokens, 8), mlp_ratio=2.0, **width
    )


_register_pair = functools.partial(register_with_tiny, kind="tokenizer", model_cls=DeTok1D, tiny=_tiny)

for _k in (32, 64, 128):
    _register_pair(
        f"detok1d-sb-k{_k}",
        lambda k=_k: DeTok1DConfig(latent_tokens=k),
        f"1-D tokenizer of l-DeTok App. A.6 / Table 8: S encoder (512×8, 8 heads), B decoder (768×12, 12 heads), "
        f"256 px, p=16, K={_k} latent tokens of C=16, learned absolute positions (no RoPE); l-DeTok noise γ = 2, no "
        "masking, after a warm-up of 10 epochs (App. A.6); γ = 0 is the baseline.",
    )

for _k in (8, 16, 32):
    _register_pair(
        f"detok1d-fmnist32-k{_k}",
        lambda k=_k: DeTok1DConfig(
            image_size=32,
            channels=1,
            patch_size=4,
            latent_tokens=k,
            latent_channels=8,
            enc_width=192,
            enc_depth=4,
            enc_heads=4,
            dec_width=192,
            dec_depth=4,
            dec_heads=4,
        ),
        f"Fashion-MNIST-32 1-D tokenizer: the encoder/decoder of detok-fmnist32 (192×4, 4 heads, p=4: 64 patches) "
        f"with K={_k} latent tokens of C=8 ({_k * 8} numbers, {_k * 8 / 512:.3g}× the 8×8×8 grid's 512 — the paper's "
        "K·C / grid ratios of 1/8 to 1/2 at K = 32…128); l-DeTok noise γ = 2 after a warm-up of 10 "
        "epochs of the training set (App. A.6: at 60,000 images an epoch, 600,000 images), no masking.",
    )
