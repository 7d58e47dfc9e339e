"""Diffusion Loss: MAR's per-token diffusion head that models p(x | z) for a continuous token x.

Paper: "Autoregressive Image Generation without Vector Quantization" (Li et al., arXiv:2406.11838), §3.
An autoregressive or masked generator produces a condition vector z per token; a small MLP ε_θ(x_t | t, z)
is trained with the DDPM loss on that token (Eq. 2, with the learned-variance hybrid loss of improved DDPM)
and sampled by a reverse diffusion chain with a temperature τ on the noise (§3.3). The head owns its
diffusion process (`objectives/diffusion.py`): the training chain and a respaced chain for sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from detok.config import PositiveFloat, PositiveInt, check_fields
from detok.layers import TimestepEmbedder
from detok.objectives.diffusion import DDPMConfig, GaussianDiffusion
from detok.objectives.guidance import guide


@dataclass(frozen=True)
class DiffLossConfig:
    """Size of the denoising MLP and its diffusion process.

    `batch_mul` is MAR's `diffusion_batch_mul`: each token is noised at `batch_mul` independent timesteps per
    training step, which is cheap (the MLP is small) and reduces the variance of the loss.

    `clip_denoised` clamps x̂_0 to [−c, c] at every sampling step; None (MAR's choice) leaves it unbounded. With
    the cosine schedule the first step has ᾱ ≈ 2.4e-9, so x̂_0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ multiplies an ε error δ by
    ~2·10⁴: a head trained for minutes rather than days (δ ≈ 0.03 after 48k FMNIST images) then starts the chain
    from latents of std ~600 and samples noise (measured FID 175 → 31 with c = 5 on normalised latents).
    """

    width: PositiveInt = 1024
    depth: PositiveInt = 3
    train_steps: PositiveInt = 1000
    sample_steps: PositiveInt = 100
    schedule: Literal["linear", "cosine"] = "cosine"
    batch_mul: PositiveInt = 4
    clip_denoised: PositiveFloat | None = None

    def __post_init__(self):
        check_fields(self)
        _ = self.diffusion  # DDPMConfig validates train_steps, sample_steps and schedule

    @property
    def diffusion(self) -> DDPMConfig:
        """The DDPM of the head: learned variances, as in MAR."""
        return DDPMConfig(
            train_steps=self.train_steps, schedule=self.schedule, learn_sigma=True, sample_steps=self.sample_steps
        )


# --------------------------------------------------------------------------------------------------
# Denoising MLP with adaLN
# --------------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation x·(1 + scale) + shift (Peebles & Xie, 2023)."""
    return x * (1 + scale) + shift


class ResBlock(nn.Module):
    """Residual MLP block: LayerNorm with adaLN shift/scale, Linear–SiLU–Linear, gated residual."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.modulated(x, self.ada(c))  # (M, D)

    def modulated(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """The block given its adaLN output mod = [shift, scale, gate] (M, 3D)."""
        shift, scale, gate = mod.chunk(3, dim=-1)  # (M, D) each
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))  # (M, D)


class FinalLayer(nn.Module):
    """Affine-free LayerNorm with adaLN shift/scale, then a linear map to the output channels."""

    def __init__(self, width: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_dim)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.modulated(x, self.ada(c))  # (M, out)

    def modulated(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """The layer given its adaLN output mod = [shift, scale] (M, 2D)."""
        shift, scale = mod.chunk(2, dim=-1)  # (M, D) each
        return self.linear(modulate(self.norm(x), shift, scale))  # (M, out)


class DenoiserMLP(nn.Module):
    """ε_θ(x_t | t, z): the token is projected to `width`, conditioned on embed(t) + linear(z) through adaLN."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int):
        super().__init__()
        self.input_proj = nn.Linear(token_dim, width)
        self.t_embedder = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.final = FinalLayer(width, 2 * token_dim)  # [ε, v]: learned variances

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x: (M, token_dim) noisy tokens; t: (M,) timesteps; cond: (M, cond_dim). Returns (M, 2·token_dim)."""
        return self.forward_conditioned(x, self.t_embedder(t) + self.cond_embed(cond))  # (M, 2·token_dim)

    def forward_conditioned(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The network given its conditioning c = embed(t) + linear(z), (M, D); sampling reuses linear(z)."""
        h = self.input_proj(x)  # (M, D)
        for block in self.blocks:
            h = block(h, c)  # (M, D)
        return self.final(h, c)  # (M, 2·token_dim)

    def stacked_modulation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every adaLN projection (blocks, then the final layer) stacked: weight ((3·depth + 2)·D, D) and bias.

        They all read the same SiLU(c), so one GEMM per step replaces depth + 1 small ones.
        """
        layers = [block.ada[-1] for block in self.blocks] + [self.final.ada[-1]]
        return torch.cat([layer.weight for layer in layers]), torch.cat([layer.bias for layer in layers])

    def forward_stacked(
        self, x: torch.Tensor, c: torch.Tensor, stacked: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """forward_conditioned with the adaLN projections of `stacked_modulation()` run as one linear map."""
        mods = F.linear(F.silu(c), *stacked)  # (M, (3·depth + 2)·D)
        d = c.shape[-1]
        h = self.input_proj(x)  # (M, D)
        for k, block in enumerate(self.blocks):
            h = block.modulated(h, mods[:, 3 * d * k : 3 * d * (k + 1)])  # (M, D)
        return self.final.modulated(h, mods[:, 3 * d * len(self.blocks) :])  # (M, 2·token_dim)


# --------------------------------------------------------------------------------------------------
# The loss head
# --------------------------------------------------------------------------------------------------


class DiffLoss(nn.Module):
    """MAR's Diffusion Loss: a conditional per-token DDPM trained and sampled on token vectors (M, token_dim)."""

    def __init__(self, token_dim: int, cond_dim: int, cfg: DiffLossConfig):
        super().__init__()
        self.token_dim = token_dim
        self.cfg = cfg
        self.net = DenoiserMLP(token_dim, cond_dim, cfg.width, cfg.depth)
        # One process serves both: training uses its full chain, `sample` the chain respaced to sample_steps.
        self.diffusion = GaussianDiffusion(cfg.diffusion)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def init_linear(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

        self.apply(init_linear)
        for layer in self.net.t_embedder.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02)
        # adaLN-Zero: every block starts as the identity and the head predicts ε = 0, v = 0.
        for block in self.net.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        for layer in (self.net.final.ada[-1], self.net.final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, target: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Masked mean of the per-token diffusion loss.

        Args:
            target: (M, token_dim) clean tokens.
            cond: (M, cond_dim) conditions from the generator.
            mask: (M,) weights, 1 = the token counts; None counts every token.

        Returns:
            A scalar loss. Timesteps and noise come from the global torch RNG.
        """
        b = self.cfg.batch_mul
        target = target.repeat(b, 1)  # (b·M, token_dim)
        cond = cond.repeat(b, 1)  # (b·M, cond_dim)
        loss = self.diffusion.training_loss(lambda x, t: self.net(x, t, cond), target)  # (b·M,)
        if mask is None:
            return loss.mean()
        mask = mask.to(loss.dtype).repeat(b)  # (b·M,)
        # an all-zero mask gives 0, not NaN
        return (loss * mask).sum() / mask.sum().clamp(min=torch.finfo(loss.dtype).tiny)

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        temperature: float = 1.0,
        cfg_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw one token per condition by the respaced reverse chain.

        Args:
            cond: (M, cond_dim), or (2M, cond_dim) = [conditional; unconditional] when cfg_scale != 1.
            temperature: τ of MAR §3.3, multiplying the std of the noise added at each step.
            cfg_scale: classifier-free guidance on ε (Ho & Salimans, 2022); the variance channels come from the
                conditional half. Both halves share the same x_t at every step.
            generator: the source of the initial noise and of every per-step draw.

        Returns:
            (M, token_dim) tokens (the conditional half when guided).
        """
        guided = cfg_scale != 1.0
        if guided and cond.shape[0] % 2:
            raise ValueError(f"guided sampling needs [cond; uncond] rows, got an odd count {cond.shape[0]}")
        m = cond.shape[0] // 2 if guided else cond.shape[0]
        noise = torch.randn(m, self.token_dim, generator=generator, device=cond.device, dtype=cond.dtype)
        # z is the same at every step and all rows share t: project z once, embed t once per step; the adaLN
        # projections of all blocks run as one GEMM
        cond_emb = self.net.cond_embed(cond)  # (M or 2M, D)
        stacked = self.net.stacked_modulation()

        def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            c = self.net.t_embedder(t[:1]) + cond_emb  # (M or 2M, D)
            if not guided:
                return self.net.forward_stacked(x, c, stacked)  # (M, 2·token_dim)
            out = self.net.forward_stacked(torch.cat([x, x]), c, stacked)  # (2M, 2·token_dim)
            return guide(out[:m], out[m:], cfg_scale, channels=self.token_dim)  # (M, 2·token_dim)

        return self.diffusion.sample(
            model_fn, noise, temperature=temperature, generator=generator, clip_denoised=self.cfg.clip_denoised
        )
