"""Training-time corruptions of l-DeTok: random masking and latent noise.

Paper: "Latent Denoising Makes Good Visual Tokenizers" (Yang et al., arXiv:2507.15856), §3.2, Alg. 1.
Per-image draws use the global RNG (the trainer reseeds it per step and data shard, so a seed fixes the
corruption); the per-batch masking ratio can take its own generator. Evaluation reuses these with fixed τ, m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch

from detok.config import ConfigError, FractionBelowOne, NonNegativeFloat, PositiveFloat, Range, check_fields


@dataclass(frozen=True)
class CorruptionConfig:
    """How latents are corrupted during training. `noise_gamma=0` and `mask_max=0` give the plain baseline.

    Attributes:
        mask_max: M in m = max(0, U(mask_min, M)).
        mask_min: lower end of the uniform draw (−0.1 in the paper, so ~1/8 of batches are unmasked at M=0.7).
        mask_mode: "random" draws m per batch as above; "constant" always masks exactly `mask_max`.
        noise_gamma: γ, the standard deviation of the noise ε.
        noise_form: "interpolative" z' = (1−τ)z + τε (Eq. 4) or "additive" z' = z + τε (Fig. 2a ablation).
        tau_dist: "uniform" τ ~ U(0,1), or "logit_normal" τ = sigmoid(N(tau_mu, tau_sigma²)) (Table 1).
        warmup_frac: share of training before the corruptions switch on (0: from the start).
        warmup_epochs: when set, the corruptions switch on after this many epochs of the training set instead (the
            paper warms its 1-D tokenizers up for 10 epochs without denoising, past their "grokking" phase, App. A.6:
            a length in data seen, so a run shorter than 10 epochs never switches them on, as the paper's schedule
            would not). Exclusive with a non-zero `warmup_frac`.
    """

    mask_max: FractionBelowOne = 0.7
    mask_min: Annotated[float, Range(ge=-1, lt=1)] = -0.1
    mask_mode: Literal["random", "constant"] = "random"
    noise_gamma: NonNegativeFloat = 3.0
    noise_form: Literal["interpolative", "additive"] = "interpolative"
    tau_dist: Literal["uniform", "logit_normal"] = "uniform"
    tau_mu: float = 0.8
    tau_sigma: PositiveFloat = 1.0
    warmup_frac: FractionBelowOne = 0.0
    warmup_epochs: NonNegativeFloat | None = None

    def __post_init__(self):
        check_fields(self)
        if self.warmup_epochs is not None and self.warmup_frac > 0:
            raise ConfigError(
                "warmup_frac",
                f"must be 0 when warmup_epochs is set ({self.warmup_epochs}); set one of them, the other to 0 / null",
            )
        if self.mask_min > self.mask_max:
            raise ValueError(f"mask_min ({self.mask_min}) must not exceed mask_max ({self.mask_max})")

    def check_unmasked(self, family: str) -> None:
        """Refuse masking for a family that does not mask (`family` names it and says why)."""
        if self.mask_max > 0:
            raise ConfigError("corruption.mask_max", f"must be 0: {family}; got {self.mask_max}")

    def active(self, step: int, total_steps: int, steps_per_epoch: float | None = None) -> bool:
        """Whether the corruptions apply at optimiser step `step` (0-based) of `total_steps`; `steps_per_epoch`
        (training images / global batch) places a warm-up given in epochs."""
        if self.warmup_epochs is None:
            return step >= int(self.warmup_frac * total_steps)
        if steps_per_epoch is None:
            raise ValueError("corruption.warmup_epochs needs the run's steps per epoch")
        return step >= math.ceil(self.warmup_epochs * steps_per_epoch)

    @property
    def enabled(self) -> bool:
        return self.mask_max > 0 or self.noise_gamma > 0


def sample_mask_ratio(cfg: CorruptionConfig, generator: torch.Generator | None = None) -> float:
    """One masking ratio for the whole batch: m = max(0, U(mask_min, M)), or M in constant mode."""
    if cfg.mask_mode == "constant" or cfg.mask_max == 0:
        return cfg.mask_max
    u = cfg.mask_min + (cfg.mask_max - cfg.mask_min) * torch.rand((), generator=generator).item()
    return max(0.0, u)


def random_masking(num: int, length: int, ratio: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random subsets of tokens to keep (MAE-style shuffle).

    Returns:
        ids_keep: (N, L_keep) indices of the visible tokens, sorted ascending (keeps raster order).
        mask: (N, L) with 1 = removed, 0 = kept.
    """
    num_keep = max(1, round(length * (1.0 - ratio)))
    if num_keep >= length:
        ids = torch.arange(length, device=device).expand(num, length)
        return ids, torch.zeros(num, length, device=device)
    scores = torch.rand(num, length, device=device)
    ids_keep = scores.argsort(dim=1)[:, :num_keep].sort(dim=1).values  # (N, L_keep)
    mask = torch.ones(num, length, device=device)
    mask.scatter_(1, ids_keep, 0.0)
    return ids_keep, mask


def keep_tokens(x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """The tokens (N, T_keep, D) of x (N or 1, T, D) at `ids_keep` (N, T_keep), as `random_masking` returns it.

    A gather, not x[..., ids_keep, :]: that indexing's backward (index_put_ with accumulate) adds in thread order on
    CPU, so training through it does not reproduce bitwise at 2 threads; gather's backward does.
    """
    idx = ids_keep[..., None].expand(-1, -1, x.shape[-1])  # (N, T_keep, D)
    return torch.gather(x.expand(len(ids_keep), -1, -1), 1, idx)


def sample_tau(cfg: CorruptionConfig, num: int, device: torch.device) -> torch.Tensor:
    """Per-image noise level τ ∈ (0, 1): (N,)."""
    if cfg.tau_dist == "uniform":
        return torch.rand(num, device=device)
    return torch.sigmoid(cfg.tau_mu + cfg.tau_sigma * torch.randn(num, device=device))


def add_latent_noise(z: torch.Tensor, tau: torch.Tensor, gamma: float, form: str = "interpolative") -> torch.Tensor:
    """Corrupt latents z (N, ...) at per-image levels tau (N,) with ε ~ N(0, γ²I).

    Interpolative (Eq. 4): z' = (1 − τ)·z + τ·ε. Additive (Fig. 2a): z' = z + τ·ε.
    """
    tau = tau.view(-1, *([1] * (z.dim() - 1)))
    eps = gamma * torch.randn_like(z)
    if form == "interpolative":
        return (1.0 - tau) * z + tau * eps
    if form == "additive":
        return z + tau * eps
    raise ValueError(f"unknown noise form {form!r}; expected 'interpolative' or 'additive'")


def corrupt_posterior(
    mean: torch.Tensor, logvar: torch.Tensor | None, cfg: CorruptionConfig, corrupt: bool, sample_posterior: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The latents a tokenizer's decoder trains on, and the noise level τ (N,) of each image (0 when clean).

    z = mean + exp(logvar / 2)·ε₀ (a reparameterised posterior sample, when `sample_posterior` and the model is
    variational), then z' = (1 − τ)·z + τ·ε with ε ~ N(0, γ²I) when `corrupt` and γ > 0 (Eq. 4).
    """
    z = mean
    if logvar is not None and sample_posterior:
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)  # reparameterised posterior sample
    tau = mean.new_zeros(len(mean))
    if corrupt and cfg.noise_gamma > 0:
        tau = sample_tau(cfg, len(mean), mean.device)
        z = add_latent_noise(z, tau, cfg.noise_gamma, cfg.noise_form)  # Eq. 4
    return z, tau
