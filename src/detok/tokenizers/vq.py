"""VQ tokenizer: the l-DeTok ViT with its bottleneck head replaced by vector quantisation (paper App. A.7).

Paper: "Latent Denoising Makes Good Visual Tokenizers" (Yang et al., arXiv:2507.15856), Sec. 5.5 and App. A.7:
the continuous tokenizer's encoder and decoder unchanged; a linear projection to 64-d per token, quantised against
an ℓ2-normalised learnable codebook of 4,096 × 64 (ViT-VQGAN / TiTok), trained with the reconstruction loss plus
the codebook loss and a commitment loss of weight β = 0.25, with straight-through gradients. l-DeTok for VQ uses
masking only (M = 0.95; 0.7 was also swept): the latents are discrete, so there is no latent noise.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn

from detok.config import ConfigError, NonNegativeFloat, NonNegativeInt, PositiveInt
from detok.registry import register_with_tiny
from detok.tokenizers.base import LatentLayout
from detok.tokenizers.corruption import CorruptionConfig, random_masking, sample_mask_ratio
from detok.tokenizers.detok import ARCHITECTURES, DeTok, DeTokConfig, _paper, _tiny
from detok.tokenizers.quantizers import VectorQuantizer

INDEX_DTYPES = {"int16": torch.int16, "int32": torch.int32, "int64": torch.int64}


def _masking_only(mask_max: float = 0.95) -> CorruptionConfig:
    """l-DeTok for VQ (App. A.7): random masking with M = 0.95, no latent noise.

    App. A.7 says only "we sweep masking ratios of 0.7 and 0.95 ... We therefore adopt a masking ratio of 0.95". We
    read 0.95 as M, the maximum of Eq. 5's random draw m = max(0, U(−0.1, M)), not a constant ratio: the paper's
    "masking ratio" is M wherever it gives one number (Sec. 5.1.2 "the maximal masking ratio M (Eq. 5)", Sec. 5.1.3
    "the masking ratio to M = 0.7"), A.7 reuses "the same training hyperparameters" as the continuous tokenizers,
    whose masking is random, and a constant ratio would need the 10-epoch decoder fine-tuning on visible latents
    (Sec. 5.1.2, App. B.1) that A.7 does not mention. The sweep's other value, 0.7, is the continuous default M.
    """
    return CorruptionConfig(mask_max=mask_max, mask_min=-0.1, mask_mode="random", noise_gamma=0.0)


@dataclass(frozen=True)
class DeTokVQConfig(DeTokConfig):
    """The ViT tokenizer's config with a VQ bottleneck: `latent_channels` is the code dimension (64 in the paper).

    Attributes:
        codebook_size: number of codes (4,096 in the paper).
        commitment_beta: β of the commitment loss.
        index_dtype: integer type of the code indices `encode` returns and latent caches store.
        dead_code_restart: every this many training steps, re-initialise the codes unused since the last restart
            from random encoder outputs of the current batch (`VectorQuantizer`); 0 (default): off, as the paper
            (A.7 names no remedy for unused codes). Counted in forwards: with train.grad_accum > 1, in micro-batches.
    """

    latent_channels: PositiveInt = 64
    variational: bool = False
    corruption: CorruptionConfig = field(default_factory=_masking_only)
    codebook_size: PositiveInt = 4096
    commitment_beta: NonNegativeFloat = 0.25
    index_dtype: Literal["int16", "int32", "int64"] = "int16"
    dead_code_restart: NonNegativeInt = 0

    def __post_init__(self):
        super().__post_init__()
        if self.variational:
            raise ConfigError("variational", "must be false for a VQ tokenizer (its bottleneck is the quantiser)")
        if self.corruption.noise_gamma > 0:
            raise ConfigError(
                "corruption.noise_gamma",
                f"must be 0: VQ latents are discrete codes (App. A.7); got {self.corruption.noise_gamma}",
            )
        largest = torch.iinfo(INDEX_DTYPES[self.index_dtype]).max
        if self.codebook_size - 1 > largest:
            raise ConfigError(
                "codebook_size",
                f"{self.codebook_size} does not fit index_dtype {self.index_dtype} (max index {largest})",
            )
        if self.latent_mean is not None or self.latent_std is not None:
            raise ConfigError("latent_mean", "must be null: code indices are not normalised")


class DeTokVQ(DeTok):
    """ViT tokenizer with a VQ bottleneck; training masks the encoder's input (l-DeTok) and quantises its tokens."""

    config_cls = DeTokVQConfig
    non_architecture_fields = DeTok.non_architecture_fields + ("commitment_beta", "index_dtype", "dead_code_restart")

    def __init__(self, config: DeTokVQConfig):
        super().__init__(config)  # enc_head: width → code dim; dec_embed: code dim → width
        self.quantizer = VectorQuantizer(
            config.codebook_size, config.latent_channels, config.commitment_beta, config.dead_code_restart
        )

    @property
    def latent_layout(self) -> LatentLayout:
        """Code indices on the (h, w) patch grid."""
        g = self.config.grid_size
        return LatentLayout("discrete", (g, g), codebook_size=self.config.codebook_size)

    def forward(
        self,
        x: torch.Tensor,
        corrupt: bool | None = None,
        mask_ratio: float | None = None,
        sample_posterior: bool = True,
    ) -> dict:
        """Training forward: mask → encode the visible patches → quantise → decode with [MASK] in removed slots.

        Args:
            corrupt: apply masking; defaults to `self.training`.
            mask_ratio: use this ratio instead of drawing one.
            sample_posterior: unused (the bottleneck is deterministic).

        Returns:
            dict with "recon", "aux" ({"codebook", "commitment"}), "logs" ({"code_usage", "perplexity"} of the
            batch), "indices" (N, T_keep), "mask" (N, T) with 1 = removed and "mask_ratio".
        """
        self.check_images(x)
        cfg = self.config.corruption
        corrupt = self.training if corrupt is None else corrupt
        n, t = x.shape[0], self.config.grid_size**2
        ratio = (sample_mask_ratio(cfg) if mask_ratio is None else mask_ratio) if corrupt else 0.0
        ids_keep, mask = random_masking(n, t, ratio, x.device) if ratio > 0 else (None, x.new_zeros(n, t))
        q, indices, losses = self.quantizer(self.forward_encoder(x, ids_keep))  # (N, T_keep, D), (N, T_keep)
        logs = VectorQuantizer.usage(indices, self.config.codebook_size)
        if self.config.dead_code_restart:
            logs["codes_restarted"] = torch.tensor(float(self.quantizer.restarted))  # by the last restart
        return {
            "recon": self.forward_decoder(q, ids_keep),
            "aux": losses,
            "logs": logs,
            "indices": indices,
            "mask": mask,
            "mask_ratio": torch.tensor(ratio),
        }

    # ----------------------------------------------------------------------------------------------
    # Tokenizer interface
    # ----------------------------------------------------------------------------------------------

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Images → code indices (N, h, w) in `index_dtype`."""
        _, indices, _ = self.quantizer(self.forward_encoder(x))  # (N, T)
        g = self.config.grid_size
        return indices.view(len(x), g, g).to(INDEX_DTYPES[self.config.index_dtype]), None

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Code indices (N, h, w) → images (N, C_img, H, W)."""
        if z.is_floating_point():
            raise ValueError(f"a VQ tokenizer decodes integer code indices, got {z.dtype} latents")
        if int(z.min()) < 0 or int(z.max()) >= self.config.codebook_size:
            raise ValueError(
                f"code indices must lie in [0, {self.config.codebook_size}), got {int(z.min())}…{int(z.max())}"
            )
        return self.forward_decoder(self.quantizer.lookup(z.flatten(1)))  # (N, C_img, H, W)

    def analysis_features(self, z: torch.Tensor) -> torch.Tensor:
        """The code vectors (N, h, w, D) of indices z: what the decoder sees, and what a probe can read."""
        return self.quantizer.lookup(z)

    def reconstruct_visible(self, x: torch.Tensor, ids_keep: torch.Tensor | None) -> torch.Tensor:
        q, _, _ = self.quantizer(self.forward_encoder(x, ids_keep))  # (N, T_keep, D)
        return self.forward_decoder(q, ids_keep)

    def decoder_finetune_frozen(self) -> list[nn.Parameter]:
        return super().decoder_finetune_frozen() + list(self.quantizer.parameters())


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


def _tiny_vq(cfg: DeTokVQConfig) -> DeTokVQConfig:
    """Tiny twin: the ViT's tiny twin with 16-d codes and a 64-code book."""
    return dataclasses.replace(_tiny(cfg), latent_channels=16, codebook_size=64)


_register_pair = functools.partial(register_with_tiny, kind="tokenizer", model_cls=DeTokVQ, tiny=_tiny_vq)

_register_pair(
    "detokvq-sb",
    lambda: DeTokVQConfig(
        **{
            f.name: getattr(_paper("s", "b"), f.name)
            for f in dataclasses.fields(DeTokConfig)
            if f.name not in ("latent_channels", "variational", "corruption")
        }
    ),  # fmt: skip
    "VQ tokenizer of l-DeTok App. A.7 / Table 9: the S-B ViT (encoder 512×8, decoder 768×12), 256 px, p=16, "
    "codes of 64-d in an ℓ2-normalised 4,096-code book, β = 0.25; l-DeTok masking with A.7's 'masking ratio 0.95' "
    "read as Eq. 5's maximum M (m = max(0, U(−0.1, 0.95)) per batch, not a constant ratio), no noise.",
)
_register_pair(
    "detokvq-fmnist32",
    lambda: DeTokVQConfig(
        **ARCHITECTURES["r2"],  # as detok-fmnist32 (docs/checkpoints.md)
        image_size=32,
        channels=1,
        patch_size=4,
        latent_channels=16,
        codebook_size=512,
        enc_width=192,
        enc_depth=4,
        enc_heads=4,
        dec_width=192,
        dec_depth=4,
        dec_heads=4,
    ),
    "Fashion-MNIST-32 VQ tokenizer: the ViT of detok-fmnist32 (192×4, 4 heads, p=4: an 8×8 grid of codes) with "
    "16-d codes in a 512-code book (4,096 codes would mostly stay unused on 60k small greyscale images); "
    "β = 0.25; l-DeTok masking m = max(0, U(−0.1, 0.95)) per batch (A.7's 0.95 read as Eq. 5's M), no noise.",
)
