"""The tokenizer interface every family implements (l-DeTok ViT, and the CNN, 1-D and VQ variants to come).

Modelled on diffusers' `AutoencoderKL` / `VQModel`: one `encode` / `decode` contract, with the latent scaling
owned by the model (its per-channel statistics live in its config and are saved with it). The trainer, the latent
cache, latent analysis, evaluation and the generators talk to a tokenizer only through this interface; the written
contract is docs/tokenizer-contract.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from detok.config import ConfigError, PositiveInt, check_fields


@dataclass(frozen=True)
class LatentLayout:
    """How one image's latent is laid out.

    Attributes:
        kind: "grid" — continuous (C, h, w), channels first; "sequence" — continuous (K, C), K tokens of C
            channels (1-D tokenizers: generators use learned 1-D positions and no RoPE); "discrete" — integer
            code indices of `shape` (the token grid or sequence), for discrete AR generators.
        shape: the per-image latent shape as `encode` returns it.
        codebook_size: number of codes (discrete layouts only).
    """

    kind: Literal["grid", "sequence", "discrete"]
    shape: tuple[PositiveInt, ...]
    codebook_size: PositiveInt | None = None

    def __post_init__(self):
        check_fields(self)
        rank = {"grid": 3, "sequence": 2}.get(self.kind)
        if rank is not None and len(self.shape) != rank:
            raise ValueError(f"a {self.kind} latent has {rank} axes, got shape {self.shape}")
        if (self.kind == "discrete") != (self.codebook_size is not None):
            raise ValueError("codebook_size is given exactly for discrete layouts")

    @property
    def channels(self) -> int | None:
        """Channels per latent position (None for discrete indices)."""
        return {"grid": self.shape[0], "sequence": self.shape[-1]}.get(self.kind)

    @property
    def channel_axis(self) -> int | None:
        """The channel axis of a batch of latents (N, *shape): 1 for grids, -1 for sequences, None for indices."""
        return {"grid": 1, "sequence": -1}.get(self.kind)

    @property
    def num_tokens(self) -> int:
        """Latent positions per image: h·w, K, or the number of code indices."""
        return math.prod(
            self.shape[1:] if self.kind == "grid" else self.shape[:1] if self.kind == "sequence" else self.shape
        )

    @property
    def generator_input(self) -> tuple[int, tuple[int, ...]]:
        """(channels, input_size) of the generators that consume these latents: (C, (h, w)) for a grid, (C, (K,))
        for a sequence (generators take channels first), (codebook_size, shape) for code indices."""
        if self.kind == "grid":
            return self.shape[0], tuple(self.shape[1:])
        if self.kind == "sequence":
            return self.shape[1], (self.shape[0],)
        return self.codebook_size, tuple(self.shape)

    def to_generator(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, *shape) → the generators' channels-first layout (N, C, *input_size)."""
        return z.transpose(1, 2) if self.kind == "sequence" else z

    def from_generator(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of `to_generator`."""
        return z.transpose(1, 2) if self.kind == "sequence" else z

    def per_channel(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, *shape) → (C, N·positions): every value of each channel in one row."""
        return z.movedim(self.channel_axis, 0).flatten(1)


def check_tokenizer_config(cfg, patch_size: int | None = None, head_multiple: int = 1) -> None:
    """The checks every tokenizer config shares: its fields (`check_fields`), 1 or 3 image channels, latent
    statistics of `latent_channels` values, and for ViTs a patch size dividing the image and heads dividing each
    width (into head sizes divisible by `head_multiple`: 4 for 2-D RoPE)."""
    check_fields(cfg)
    if cfg.channels not in (1, 3):
        raise ConfigError("channels", f"must be 1 or 3, got {cfg.channels}")
    if patch_size is not None and cfg.image_size % patch_size:
        problem = f"must be a multiple of the patch size (patch size {patch_size} does not divide {cfg.image_size})"
        raise ConfigError("image_size", problem)
    for side in ("enc", "dec") if patch_size is not None else ():
        width, heads = getattr(cfg, f"{side}_width"), getattr(cfg, f"{side}_heads")
        if width % heads or (width // heads) % head_multiple:
            raise ValueError(
                f"{side}_width {width} / {side}_heads {heads} must give a whole head size divisible by {head_multiple}"
            )
    for stat in (cfg.latent_mean, cfg.latent_std):
        if stat is not None and len(stat) != cfg.latent_channels:
            raise ValueError(f"latent statistics need {cfg.latent_channels} channels, got {len(stat)}")


def init_vit_weights(module: nn.Module, embeddings: tuple[nn.Parameter, ...]) -> None:
    """The ViT tokenizers' initialisation: Xavier-uniform linear weights, zero biases, N(0, 0.02²) embeddings."""

    def init_linear(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    module.apply(init_linear)
    for param in embeddings:
        nn.init.normal_(param, std=0.02)


class Tokenizer(nn.Module):
    """Base class of every tokenizer family.

    A family implements `latent_layout`, `encode_moments`, `decode_latents` and the training `forward`; the base
    class provides `encode` / `decode` with the tokenizer's own latent normalisation. Its config has `channels`,
    `image_size`, `latent_mean` and `latent_std` fields (the statistics are None until `detok tokenizer stats`).

    Training forward contract: `forward(x, corrupt=None, mask_ratio=None, sample_posterior=True)` returns a dict
    with "recon" (N, C_img, H, W) and "aux", a dict of named auxiliary loss terms (scalars) — "kl" for a
    variational model, codebook/commitment terms for VQ, … — that the tokenizer loss (`detok.losses.tokenizer`)
    weights; other entries are logged when they are scalars. A family that learns from teachers (`build_teachers`)
    also takes `teacher_features=[...]`.
    """

    kind = "tokenizer"
    config_cls: type
    # Config fields that do not change the architecture (a checkpoint made under other values can initialise it).
    non_architecture_fields: tuple[str, ...] = ("corruption", "latent_mean", "latent_std")
    # What the family's paper recipe changes in the default run config of its paper-size presets (`key=value`).
    paper_recipe: tuple[str, ...] = ()

    @classmethod
    def recipe_for(cls, config) -> tuple[str, ...]:
        """The paper recipe for a model of `config` (a family whose recipe depends on the config, such as
        AlignTok's stages, overrides it); `paper_recipe` by default."""
        return cls.paper_recipe

    # ----------------------------------------------------------------------------------------------
    # What a family implements
    # ----------------------------------------------------------------------------------------------

    @property
    def latent_layout(self) -> LatentLayout:
        raise NotImplementedError

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (N, C_img, H, W) → raw posterior (mean, logvar) in the layout (N, *shape); logvar None if
        the encoder is deterministic. No corruption is applied."""
        raise NotImplementedError

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents (N, *shape) → images (N, C_img, H, W)."""
        raise NotImplementedError

    def decoder_finetune_frozen(self) -> list[nn.Parameter]:
        """Parameters that decoder fine-tuning on clean latents (paper App. A.3) keeps frozen: the encoder side."""
        raise NotImplementedError

    def last_decoder_layer(self) -> torch.Tensor:
        """The decoder's last weight, where the adaptive GAN weight compares gradient norms."""
        raise NotImplementedError

    def position_grids(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """Learned position embeddings laid out on the image's token grid, by state-dict name: (leading non-grid
        tokens, grid). `init_from` at another image size resamples them (training/init_from.py); none by default
        (RoPE, a CNN and K learned 1-D latent tokens need nothing)."""
        return {}

    def check_init_source(self, source: nn.Module) -> None:
        """Refuse an `init_from` model of this family that this run cannot continue (e.g. AlignTok's stage order);
        the architecture itself is compared by the trainer."""

    def last_encoder_layer(self) -> torch.Tensor | None:
        """The encoder's last weight, where adaptively weighted auxiliary terms (VA-VAE's VF loss) compare gradient
        norms; None for families without such terms."""
        return None

    def build_teachers(self) -> list[nn.Module]:
        """The frozen teachers (`detok.teachers`) whose features the training forward takes, in order, as
        `teacher_features` (a list of (N, T_i, D_i) tensors); none by default. The trainer builds them once, keeps
        them out of the checkpoint, and skips them during decoder fine-tuning."""
        return []

    def mask_ratio_at(
        self, step: int, total_steps: int, generator: torch.Generator, decoder_finetune: bool = False
    ) -> float | None:
        """The masking ratio of optimiser step `step` of `total_steps` (one per global batch, so that data-parallel
        shards agree), drawn with `generator`; None for a family without masking. The default draws l-DeTok's
        m = max(0, U(mask_min, M)) from the config's `corruption`; a family with its own schedule overrides it."""
        from detok.tokenizers.corruption import sample_mask_ratio

        corruption = getattr(self.config, "corruption", None)
        return None if corruption is None else sample_mask_ratio(corruption, generator)

    # Masking robustness (latent analysis) is defined for families that encode a subset of tokens.
    maskable_tokens: int | None = None

    def reconstruct_visible(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Encode only tokens `ids_keep` (N, T_keep) of x; decode with the family's fill-in for the rest."""
        raise NotImplementedError(f"{type(self).__name__} does not encode a subset of its tokens")

    def analysis_features(self, z: torch.Tensor) -> torch.Tensor:
        """Continuous per-image vectors of latents z (N, *shape) for latent analysis (linear probe, GMM): the latents
        themselves; a discrete family returns its code vectors instead of the indices."""
        return z.float()

    # ----------------------------------------------------------------------------------------------
    # Provided
    # ----------------------------------------------------------------------------------------------

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one image's latent as `encode` returns it."""
        return tuple(self.latent_layout.shape)

    @property
    def token_layout(self) -> str:
        """ "2d" for grids, "1d" for sequences and discrete indices (what position scheme a generator needs)."""
        return "2d" if self.latent_layout.kind == "grid" else "1d"

    def check_images(self, x: torch.Tensor) -> None:
        """Raise for images that are not (N, C_img, image_size, image_size)."""
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg.channels:
            raise ValueError(
                f"expected images of shape (N, {cfg.channels}, {cfg.image_size}, {cfg.image_size}); "
                f"got {tuple(x.shape)} (channel mismatch with this tokenizer?)"
            )
        if x.shape[-2:] != (cfg.image_size, cfg.image_size):
            raise ValueError(
                f"this tokenizer was built for {cfg.image_size}x{cfg.image_size} images, "
                f"got {x.shape[-2]}x{x.shape[-1]}"
            )

    def latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel (mean, std), shaped to broadcast over latents like `like` (N, *shape)."""
        cfg, layout = self.config, self.latent_layout
        if layout.kind == "discrete":
            raise ValueError("discrete latents (code indices) are not normalised")
        if cfg.latent_mean is None or cfg.latent_std is None:
            raise RuntimeError(
                "this tokenizer has no latent statistics yet; compute them with "
                "`detok tokenizer stats RUN` (or `compute_latent_stats`) before normalising"
            )
        view = [1] * like.dim()
        view[layout.channel_axis] = -1
        mean = torch.tensor(cfg.latent_mean, device=like.device, dtype=like.dtype).view(view)
        std = torch.tensor(cfg.latent_std, device=like.device, dtype=like.dtype).view(view)
        return mean, std

    @torch.no_grad()
    def encode(self, x: torch.Tensor, normalize: bool = False, sample: bool = False) -> torch.Tensor:
        """Images (N, C_img, H, W) in [-1, 1] → latents (N, *latent_shape): the posterior mean, uncorrupted.

        Args:
            normalize: standardise each channel with the tokenizer's own latent statistics.
            sample: draw from the posterior instead of taking its mean.
        """
        self.check_images(x)
        mean, logvar = self.encode_moments(x)
        z = mean if (logvar is None or not sample) else mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        if normalize:
            mu, std = self.latent_stats(z)
            z = (z - mu) / std
        return z

    @torch.no_grad()
    def decode_generated(self, z: torch.Tensor) -> torch.Tensor:
        """A generator's output (N, C, *input_size) — normalised latents, or code indices — → images."""
        layout = self.latent_layout
        return self.decode(layout.from_generator(z), normalized=layout.kind != "discrete")

    @torch.no_grad()
    def decode(self, z: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """Latents (N, *latent_shape) → images (N, C_img, H, W), roughly in [-1, 1].

        Args:
            normalized: the latents were produced with `encode(..., normalize=True)`.
        """
        if tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(
                f"expected latents of shape (N, {', '.join(map(str, self.latent_shape))}), got {tuple(z.shape)}"
            )
        if normalized:
            mu, std = self.latent_stats(z)
            z = z * std + mu
        return self.decode_latents(z)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) ‖ N(0, I)) summed over latent elements, averaged over images."""
    mean, logvar = mean.float(), logvar.float()
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()


def posterior_output(recon: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor | None, **extra) -> dict:
    """A continuous tokenizer's training output: "recon", "aux" ({"kl"} if variational), "mean", "logvar"."""
    out = {"recon": recon, "aux": {} if logvar is None else {"kl": gaussian_kl(mean, logvar)}, "mean": mean, **extra}
    if logvar is not None:
        out["logvar"] = logvar
    return out


class NoiseOnlyTokenizer(Tokenizer):
    """A continuous family that corrupts its latents with noise only (the paper's CNN and 1-D tokenizers): its
    `forward_encoder(x)` gives (mean, logvar) in the layout, `forward_decoder(z)` images; `no_masking` says why
    a mask ratio is refused."""

    no_masking: str = "this tokenizer family does not mask"

    def forward(
        self,
        x: torch.Tensor,
        corrupt: bool | None = None,
        mask_ratio: float | None = None,
        sample_posterior: bool = True,
        teacher_features: list[torch.Tensor] | None = None,
    ) -> dict:
        """Training forward: encode → sample the posterior → interpolative noise (Eq. 4) → decode.

        Args:
            x: images (N, C_img, H, W) in [-1, 1].
            corrupt: apply latent noise; defaults to `self.training` (the trainer also honours the warm-up).
            mask_ratio: must be None or 0.
            sample_posterior: draw z from the posterior; False uses its mean (decoder fine-tuning).
            teacher_features: features of `build_teachers()`'s teachers; `teacher_terms` turns them into losses.

        Returns:
            dict with "recon" (N, C_img, H, W), "aux" ({"kl"} for a variational model), "mean", "logvar" (in the
            layout), "tau" (N,) and "mask_ratio" (0).
        """
        from detok.tokenizers.corruption import corrupt_posterior

        self.check_images(x)
        if mask_ratio:
            raise ValueError(f"mask_ratio={mask_ratio}: {self.no_masking}")
        corrupt = self.training if corrupt is None else corrupt
        mean, logvar = self.forward_encoder(x)  # (N, *latent_shape)
        z, tau = corrupt_posterior(mean, logvar, self.config.corruption, corrupt, sample_posterior)  # Eq. 4
        out = posterior_output(self.forward_decoder(z), mean, logvar, tau=tau, mask_ratio=torch.tensor(0.0))
        if teacher_features:
            self.teacher_terms(out, z, teacher_features)
        return out

    def teacher_terms(self, out: dict, z: torch.Tensor, teacher_features: list[torch.Tensor]) -> None:
        """Add the losses against teacher features to the training output `out` (z: the decoder's input)."""
        raise ValueError(f"{type(self).__name__} was given teacher features but learns from no teacher")

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.forward_encoder(x)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_decoder(z)
