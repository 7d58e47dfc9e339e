"""Gaussian diffusion (DDPM) with learned variances, as trained and sampled by DiT and by MAR's DiffLoss.

Papers: "Denoising Diffusion Probabilistic Models" (Ho et al., arXiv:2006.11239) for the forward process,
ε-prediction and ancestral sampling; "Improved Denoising Diffusion Probabilistic Models" (Nichol & Dhariwal,
arXiv:2102.09672) for the cosine schedule (§3.2), the learned interpolated variance and the hybrid loss
(§3.1) and respaced sampling chains (§4). DiT (Peebles & Xie, arXiv:2212.09748) trains with the linear
schedule; MAR's DiffLoss (Li et al., arXiv:2406.11838) with the cosine one.

Conventions: timesteps are integer indices t ∈ {0, …, T−1} of the training schedule (t = 0 is the least
noisy); `model_fn(x_t, t)` always receives the *original* indices as a float tensor (N,), also when a
respaced chain is sampled. With learned variances the model returns (N, 2C, ...) = [ε, v] along dim 1,
where v ∈ [−1, 1] (not enforced) interpolates the log-variance between β̃_t and β_t.
The schedule is computed in float64 on the CPU and cast to the data's dtype/device where used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from detok.config import PositiveInt, check_fields

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DDPMConfig:
    """Noise schedule, parameterisation and sampling chain of a DDPM.

    `decoder_nll` picks the likelihood of the t = 0 VLB term: "discretized" is the 256-bin Gaussian of
    Ho et al. (what DiT and MAR's DiffLoss inherit from the image-space code); "continuous" is a Gaussian
    density, the better fit for unbounded latents. It changes only the t = 0 term of the learned-variance loss.
    """

    train_steps: PositiveInt = 1000
    schedule: Literal["linear", "cosine"] = "linear"
    learn_sigma: bool = True
    sample_steps: PositiveInt = 250
    decoder_nll: Literal["discretized", "continuous"] = "discretized"

    def __post_init__(self):
        check_fields(self)
        if self.sample_steps > self.train_steps:
            raise ValueError(f"sample_steps ({self.sample_steps}) exceeds train_steps ({self.train_steps})")


# --------------------------------------------------------------------------------------------------
# Schedules (float64)
# --------------------------------------------------------------------------------------------------


def linear_betas(steps: int) -> torch.Tensor:
    """Ho et al.'s linear β from 1e-4 to 2e-2, both scaled by 1000/steps so other lengths keep ᾱ_T ≈ 0."""
    scale = 1000.0 / steps
    return torch.linspace(scale * 1e-4, scale * 2e-2, steps, dtype=torch.float64)


def cosine_betas(steps: int, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved DDPM's cosine schedule (Eq. 17): ᾱ(t) = f(t)/f(0), f(t) = cos²(π/2 · (t/T + s)/(1 + s)).

    β_t = 1 − ᾱ(t+1)/ᾱ(t), clipped at `max_beta` to avoid the singularity at the end of the chain.
    """
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


@dataclass(frozen=True)
class Chain:
    """Per-step coefficients of one Markov chain (the training chain or a respaced one), all float64 (S,).

    `timesteps` maps the chain's step i to the original training index that the model sees.
    """

    timesteps: torch.Tensor
    betas: torch.Tensor
    alphabar: torch.Tensor
    alphabar_prev: torch.Tensor
    posterior_var: torch.Tensor  # β̃_t, Eq. 7 of Ho et al.
    posterior_logvar: torch.Tensor  # log β̃_t with β̃_0 := β̃_1 (β̃_0 = 0 would give −inf)
    posterior_coef_x0: torch.Tensor  # Eq. 7: μ̃ = coef_x0·x_0 + coef_xt·x_t
    posterior_coef_xt: torch.Tensor
    recip_sqrt_alphabar: torch.Tensor  # x̂_0 = √(1/ᾱ)·x_t − √(1/ᾱ − 1)·ε̂
    recipm1_sqrt_alphabar: torch.Tensor
    log_betas: torch.Tensor


def make_chain(alphabar: torch.Tensor, timesteps: torch.Tensor) -> Chain:
    """Build a chain from ᾱ at its steps; β is recomputed as 1 − ᾱ_t/ᾱ_{t−1} (improved DDPM §4)."""
    alphabar_prev = torch.cat([alphabar.new_ones(1), alphabar[:-1]])
    betas = 1 - alphabar / alphabar_prev
    posterior_var = betas * (1 - alphabar_prev) / (1 - alphabar)
    # β̃_0 = 0 exactly; a single-step chain has no β̃_1 to borrow, so fall back to β_0 there.
    clip = posterior_var[1] if len(posterior_var) > 1 else betas[0]
    posterior_logvar = torch.log(torch.cat([clip.reshape(1), posterior_var[1:]]))
    return Chain(
        timesteps=timesteps,
        betas=betas,
        alphabar=alphabar,
        alphabar_prev=alphabar_prev,
        posterior_var=posterior_var,
        posterior_logvar=posterior_logvar,
        posterior_coef_x0=betas * alphabar_prev.sqrt() / (1 - alphabar),
        posterior_coef_xt=(1 - alphabar_prev) * (1 - betas).sqrt() / (1 - alphabar),
        recip_sqrt_alphabar=(1 / alphabar).sqrt(),
        recipm1_sqrt_alphabar=(1 / alphabar - 1).sqrt(),
        log_betas=betas.log(),
    )


def respaced_timesteps(train_steps: int, steps: int) -> torch.Tensor:
    """`steps` evenly spaced training indices from 0 to T−1 (both ends kept; a 1-step chain uses T−1)."""
    if not 0 < steps <= train_steps:
        raise ValueError(f"cannot respace {train_steps} training steps to {steps}")
    if steps == 1:
        return torch.tensor([train_steps - 1])
    return torch.linspace(0, train_steps - 1, steps, dtype=torch.float64).round().long()


# --------------------------------------------------------------------------------------------------
# Gaussian KL and decoder likelihoods (nats, elementwise)
# --------------------------------------------------------------------------------------------------


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) per element, in nats."""
    return 0.5 * (logvar2 - logvar1 - 1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(x) = ½(1 + erf(x/√2)), exact (the upstream code uses a tanh approximation)."""
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def continuous_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, e^logvar) per element, in nats."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 * torch.exp(-logvar))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, bins: int = 256
) -> torch.Tensor:
    """log P(x) of a Gaussian integrated over the bin of x, for data in [−1, 1] in `bins` bins (Ho et al. §3.3).

    The two edge bins extend to ±∞ so that the probabilities sum to one.
    """
    half = 1.0 / (bins - 1)  # half the bin width 2/(bins−1)
    inv_std = torch.exp(-0.5 * logvar)
    cdf_hi = standard_normal_cdf(inv_std * (x - mean + half))
    cdf_lo = standard_normal_cdf(inv_std * (x - mean - half))
    tiny = 1e-12
    log_cdf_hi = torch.log(cdf_hi.clamp(min=tiny))  # lowest bin: (−∞, x + half]
    log_sf_lo = torch.log((1 - cdf_lo).clamp(min=tiny))  # highest bin: [x − half, ∞)
    log_mid = torch.log((cdf_hi - cdf_lo).clamp(min=tiny))
    edge = 1 - half  # ±0.999 for 256 bins
    return torch.where(x < -edge, log_cdf_hi, torch.where(x > edge, log_sf_lo, log_mid))


# --------------------------------------------------------------------------------------------------
# Diffusion process
# --------------------------------------------------------------------------------------------------


def _per_sample(values: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor | float:
    """values[t] for a batch of indices t (N,), shaped (N, 1, ..., 1) to broadcast against x (N, ...).

    An int t (every row at the same step, as in sampling) gives a Python float instead: the same float32 value,
    hence the same products, without the gather and reshape kernels at every step.
    """
    if isinstance(t, int):
        return float(values[t].to(torch.float32))
    # Cast on the CPU first: float64 is not supported on every accelerator (MPS).
    picked = values.to(torch.float32).to(x.device)[t.to(x.device).long()].to(x.dtype)  # (N,)
    return picked.view(-1, *([1] * (x.dim() - 1)))


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dim but the batch: (N, ...) -> (N,)."""
    return x.flatten(1).mean(dim=1)


class GaussianDiffusion:
    """A DDPM: forward noising, the (hybrid) training loss and the respaced ancestral sampler."""

    def __init__(self, cfg: DDPMConfig):
        self.cfg = cfg
        self.num_timesteps = cfg.train_steps
        betas = linear_betas(cfg.train_steps) if cfg.schedule == "linear" else cosine_betas(cfg.train_steps)
        self.betas = betas  # (T,) float64
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)  # ᾱ_t, (T,)
        self.chain = make_chain(self.alphas_cumprod, torch.arange(cfg.train_steps))
        self._respaced: dict[int, Chain] = {}

    @property
    def out_mult(self) -> int:
        """Backbones output C·out_mult channels: [ε] or [ε, v]."""
        return 2 if self.cfg.learn_sigma else 1

    def respaced(self, steps: int) -> Chain:
        """The chain over `steps` evenly spaced training timesteps (cached)."""
        if steps not in self._respaced:
            timesteps = respaced_timesteps(self.num_timesteps, steps)
            self._respaced[steps] = make_chain(self.alphas_cumprod[timesteps], timesteps)
        return self._respaced[steps]

    def noise_level(self, t: torch.Tensor) -> torch.Tensor:
        """√(1 − ᾱ_t) for original timestep indices t (N,): 0 = clean, ~1 = pure noise."""
        return (1 - self.alphas_cumprod).sqrt().to(torch.float32).to(t.device)[t.long()]

    # ----------------------------------------------------------------------------------------------
    # Forward process and posterior
    # ----------------------------------------------------------------------------------------------

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε (Ho et al. Eq. 4) for training indices t (N,)."""
        ab = self.alphas_cumprod
        return _per_sample(ab.sqrt(), t, x0) * x0 + _per_sample((1 - ab).sqrt(), t, x0) * noise

    def _posterior(
        self, chain: Chain, i: torch.Tensor | int, x0: torch.Tensor, xt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Mean and clipped log-variance of q(x_{t−1} | x_t, x_0) at chain steps i (Ho et al. Eq. 6–7).

        i is (N,) step indices, or one int for the whole batch; then the log-variance is a float.
        """
        mean = _per_sample(chain.posterior_coef_x0, i, xt) * x0 + _per_sample(chain.posterior_coef_xt, i, xt) * xt
        logvar = _per_sample(chain.posterior_logvar, i, xt)
        return mean, (logvar if isinstance(logvar, float) else logvar.expand_as(xt))

    def _p_mean_variance(
        self,
        chain: Chain,
        i: torch.Tensor | int,
        xt: torch.Tensor,
        out: torch.Tensor,
        clip_denoised: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, log-variance and x̂_0 of p(x_{t−1} | x_t) from the model output (N, C·out_mult, ...).

        Args:
            chain: the chain being run; i (N,) are its step indices (not the model's timesteps), or one int
                when every row is at the same step.
            clip_denoised: clamp x̂_0 to [−c, c]; None for unbounded latents.
        """
        c = xt.shape[1]
        if out.shape[1] != c * self.out_mult:
            raise ValueError(f"model output has {out.shape[1]} channels, expected {c * self.out_mult}")
        eps = out[:, :c]
        # x̂_0 = (x_t − √(1 − ᾱ_t)·ε̂) / √ᾱ_t, inverting Eq. 4.
        a, b = _per_sample(chain.recip_sqrt_alphabar, i, xt), _per_sample(chain.recipm1_sqrt_alphabar, i, xt)
        x0 = a * xt - b * eps
        if clip_denoised is not None:
            x0 = x0.clamp(-clip_denoised, clip_denoised)
        mean, min_log = self._posterior(chain, i, x0, xt)
        if self.cfg.learn_sigma:
            # Improved DDPM Eq. 15: log Σ = frac·log β_t + (1 − frac)·log β̃_t, frac = (v + 1)/2.
            frac = (out[:, c:] + 1) / 2
            max_log = _per_sample(chain.log_betas, i, xt)
            logvar = frac * max_log + (1 - frac) * min_log
        else:
            # Fixed "large" variance β_t (β̃_1 at t = 0), as DiT's sigma_small=False.
            large = torch.cat([chain.posterior_var[1:2], chain.betas[1:]]) if len(chain.betas) > 1 else chain.betas
            logvar = _per_sample(large.log(), i, xt)
            logvar = torch.full_like(xt, logvar) if isinstance(logvar, float) else logvar.expand_as(xt)
        return mean, logvar, x0

    # ----------------------------------------------------------------------------------------------
    # Training
    # ----------------------------------------------------------------------------------------------

    def vlb_terms(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The VLB term L_t in bits per dim (N,) at training indices t (N,).

        L_t = KL(q(x_{t−1} | x_t, x_0) ‖ p(x_{t−1} | x_t)) for t > 0 and the decoder NLL −log p(x_0 | x_1) at t = 0
        (Ho et al. Eq. 5).
        """
        true_mean, true_logvar = self._posterior(self.chain, t, x0, xt)
        mean, logvar, _ = self._p_mean_variance(self.chain, t, xt, out)
        kl = _mean_flat(normal_kl(true_mean, true_logvar, mean, logvar)) / math.log(2.0)
        if self.cfg.decoder_nll == "discretized":
            log_lik = discretized_gaussian_log_likelihood(x0, mean, logvar)
        else:
            log_lik = continuous_gaussian_log_likelihood(x0, mean, logvar)
        nll = -_mean_flat(log_lik) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def training_loss(self, model_fn: ModelFn, x0: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (N,) at uniform random timesteps: ε-MSE, plus the VLB term if variances are learned.

        The hybrid loss of improved DDPM (§3.1): L_simple + λ·L_vlb with λ = 1e−3 and L_vlb = T·E_t[L_t], i.e.
        L_t·T/1000 per sample — exactly the unscaled term of DiT and MAR at their T = 1000. The mean's gradient
        is stopped in L_vlb so that it trains only the variance. t and ε come from the global torch RNG.
        """
        n = x0.shape[0]
        t = torch.randint(0, self.num_timesteps, (n,), device=x0.device)
        noise = torch.randn_like(x0)
        xt = self.q_sample(x0, t, noise)  # (N, C, ...)
        out = model_fn(xt, t.float()).float()  # (N, C·out_mult, ...)
        c = x0.shape[1]
        loss = _mean_flat((out[:, :c] - noise.float()) ** 2)  # Ho et al. Eq. 14, (N,)
        if self.cfg.learn_sigma:
            frozen = torch.cat([out[:, :c].detach(), out[:, c:]], dim=1)
            vb = self.vlb_terms(x0.float(), xt.float(), t, frozen)
            loss = loss + vb * (self.num_timesteps / 1000.0)
        return loss

    # ----------------------------------------------------------------------------------------------
    # Sampling
    # ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        model_fn: ModelFn,
        noise: torch.Tensor,
        steps: int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
        clip_denoised: float | None = None,
    ) -> torch.Tensor:
        """Ancestral sampling (Ho et al. Alg. 2) along a respaced chain, from x_{T−1} = `noise` down to x_0.

        Args:
            model_fn: (x_t, t) -> [ε, v]; t holds original training indices (float).
            noise: starting point (N, C, ...).
            steps: chain length; defaults to `cfg.sample_steps`.
            temperature: multiplies the std of the noise added at each step (MAR's convention).
            generator: the source of every per-step noise draw.
            progress: show a tqdm bar.
            clip_denoised: clamp x̂_0 to [−c, c] at each step; None (default) for unbounded latents.

        Returns:
            The sample x_0 (N, C, ...). No noise is added at the final step.
        """
        chain = self.respaced(self.cfg.sample_steps if steps is None else steps)
        x = noise
        n = x.shape[0]
        order = range(len(chain.timesteps) - 1, -1, -1)
        if progress:
            from detok.progress import tqdm

            order = tqdm(order, desc="ddpm")
        for i in order:
            t = torch.full((n,), float(chain.timesteps[i]), device=x.device)  # what the model sees
            out = model_fn(x, t)
            # every row is at chain step i: scalar coefficients
            mean, logvar, _ = self._p_mean_variance(chain, i, x, out.to(x.dtype), clip_denoised)
            if i == 0:
                x = mean
            else:
                z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = mean + temperature * torch.exp(0.5 * logvar) * z
        return x
