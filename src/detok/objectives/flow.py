"""Flow matching with the linear interpolant, as trained by SiT and LightningDiT, and its ODE/SDE samplers.

Papers: "SiT: Exploring Flow and Diffusion-based Generative Models with Scalable Interpolant Transformers"
(Ma et al., arXiv:2401.08740) for the linear interpolant, velocity prediction and the SDE sampler with a
velocity-derived score (§2–3); "Scaling Rectified Flow Transformers" (SD3, Esser et al., arXiv:2403.03206)
for logit-normal timestep sampling (§3.1) and the timestep shift (§5.3.2); "Reconstruction vs. Generation"
(LightningDiT, Yao et al., arXiv:2501.01423), which trains with both.

Convention (shared with every backbone that uses this module):

    t ∈ [0, 1], t = 0 pure noise, t = 1 data;   x_t = t·x_1 + (1 − t)·ε,   ε ~ N(0, I)
    the model predicts the velocity v = dx_t/dt = x_1 − ε and is called as model_fn(x_t, time_scale·t)

so the backbones see timesteps in [0, 1000] like DiT's. The *noise level* s = 1 − t (0 = data, 1 = noise) is
what `noise_level` returns and what guidance intervals use. Samplers integrate from t = 0 to t = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from detok.config import FractionBelowOne, NonNegativeFloat, PositiveFloat, PositiveInt, check_fields

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FlowConfig:
    """Training-time t distribution and the sampler of a linear-interpolant flow.

    `t_mu`/`t_sigma` parameterise the logit-normal in SD3's sense, on the noise level: s = 1 − t =
    sigmoid(N(t_mu, t_sigma²)), so t_mu > 0 spends more training on noisy inputs, as in SD3.

    The SDE sampler uses SiT's "sigma" diffusion w(t) = sde_diffusion_norm·(1 − t) (see `FlowMatching.sample`)
    and ends with a deterministic ODE step of length `sde_last_step` in t (SiT's last step of 0.04), which maps
    x_t to the posterior mean E[x_1 | x_t] and so removes the last step's noise. ODE samplers ignore both.
    """

    t_dist: Literal["uniform", "logit_normal"] = "uniform"
    t_mu: float = 0.0
    t_sigma: PositiveFloat = 1.0
    sampler: Literal["euler", "heun", "sde"] = "heun"
    sample_steps: PositiveInt = 50
    shift: PositiveFloat = 1.0
    time_scale: PositiveFloat = 1000.0
    sde_diffusion_norm: NonNegativeFloat = 1.0
    sde_last_step: FractionBelowOne = 0.04

    def __post_init__(self):
        check_fields(self)


def shift_noise_level(s: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's timestep shift (Esser et al. 2024, §5.3.2): s' = shift·s / (1 + (shift − 1)·s) on noise levels s.

    Maps 0 → 0 and 1 → 1 monotonically; shift > 1 pushes every s towards 1, i.e. more steps at high noise.
    """
    return shift * s / (1 + (shift - 1) * s)


def time_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """Integration times 0 = t_0 < … < t_steps = 1 (float64): a uniform grid shifted in noise level."""
    t = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    return 1 - shift_noise_level(1 - t, shift)


class FlowMatching:
    """Linear-interpolant flow matching: velocity regression and Euler / Heun / Euler–Maruyama samplers."""

    def __init__(self, cfg: FlowConfig):
        self.cfg = cfg

    def sample_t(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Training times t (N,) in [0, 1] (t = 1 data) from the global torch RNG."""
        if self.cfg.t_dist == "uniform":
            return torch.rand(n, device=device)
        s = torch.sigmoid(self.cfg.t_mu + self.cfg.t_sigma * torch.randn(n, device=device))  # noise level
        return 1 - s

    def noise_level(self, t_model: torch.Tensor) -> torch.Tensor:
        """1 − t for model times t_model = time_scale·t (N,): 0 = data, 1 = noise."""
        return 1 - t_model / self.cfg.time_scale

    def training_loss(self, model_fn: ModelFn, x1: torch.Tensor) -> torch.Tensor:
        """Per-sample velocity MSE (N,), averaged over non-batch dims; t and ε from the global torch RNG."""
        n = x1.shape[0]
        t = self.sample_t(n, x1.device)  # (N,)
        noise = torch.randn_like(x1)
        tb = t.view(-1, *([1] * (x1.dim() - 1))).to(x1.dtype)
        xt = tb * x1 + (1 - tb) * noise  # the interpolant, (N, C, ...)
        pred = model_fn(xt, self.cfg.time_scale * t)
        if pred.shape != x1.shape:
            raise ValueError(f"velocity has shape {tuple(pred.shape)}, expected {tuple(x1.shape)}")
        return ((pred.float() - (x1 - noise).float()) ** 2).flatten(1).mean(dim=1)

    # ----------------------------------------------------------------------------------------------
    # Sampling
    # ----------------------------------------------------------------------------------------------

    def _grid(self, steps: int) -> torch.Tensor:
        """The sampler's times; the SDE's last interval is [1 − sde_last_step, 1]."""
        if steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        last = self.cfg.sde_last_step
        if self.cfg.sampler != "sde" or last == 0 or steps == 1:
            return time_grid(steps, self.cfg.shift)
        body = time_grid(steps - 1, self.cfg.shift) * (1 - last)  # [0, 1 − last]
        return torch.cat([body, body.new_ones(1)])

    @torch.no_grad()
    def sample(
        self,
        model_fn: ModelFn,
        noise: torch.Tensor,
        steps: int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Integrate from noise (t = 0) to data (t = 1) with the configured sampler.

        Args:
            model_fn: (x_t, time_scale·t) -> velocity.
            noise: x at t = 0, (N, C, ...).
            steps: number of intervals (model calls for Euler/SDE, ~2× for Heun); defaults to cfg.sample_steps.
            temperature: multiplies the SDE's Brownian increments; must be 1 for the deterministic ODE samplers,
                where it would have no effect.
            generator: the source of the SDE's noise (unused by the ODE samplers).
            progress: show a tqdm bar.

        Returns:
            x at t = 1, (N, C, ...).
        """
        cfg = self.cfg
        if temperature != 1.0 and cfg.sampler != "sde":
            raise ValueError(
                f"temperature {temperature} has no effect on the deterministic {cfg.sampler!r} sampler; "
                "use flow.sampler=sde or temperature 1"
            )
        grid = self._grid(cfg.sample_steps if steps is None else steps).tolist()
        x = noise
        n = x.shape[0]

        def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
            return model_fn(x, torch.full((n,), cfg.time_scale * t, device=x.device)).to(x.dtype)

        order = range(len(grid) - 1)
        if progress:
            from detok.progress import tqdm

            order = tqdm(order, desc=f"flow-{cfg.sampler}")
        for i in order:
            t, t_next = grid[i], grid[i + 1]
            dt = t_next - t
            last = i == len(grid) - 2
            v = velocity(x, t)
            if cfg.sampler == "euler" or last:
                # Heun's corrector would evaluate the model at t = 1; the SDE's last step is the ODE's (see below).
                x = x + dt * v
            elif cfg.sampler == "heun":
                x_pred = x + dt * v
                x = x + dt * 0.5 * (v + velocity(x_pred, t_next))  # trapezoidal corrector
            else:
                # Score from velocity for this interpolant: x_t = t·E[x_1|x] + (1 − t)·E[ε|x] and
                # v = E[x_1|x] − E[ε|x] give E[ε|x] = x − t·v, and ∇log p_t(x) = −E[ε|x]/(1 − t), so
                #     score = (t·v − x) / (1 − t).
                # dx = [v + ½g²·score] dt + g dW has the ODE's marginals for any g (Fokker–Planck); SiT's
                # "sigma" form ½g² = w(t) = norm·(1 − t) cancels the 1/(1 − t) and keeps the drift finite:
                #     drift = v + norm·(t·v − x).
                drift = v + cfg.sde_diffusion_norm * (t * v - x)
                z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                g = math.sqrt(2 * cfg.sde_diffusion_norm * (1 - t))
                x = x + dt * drift + temperature * g * math.sqrt(dt) * z  # Euler–Maruyama
        # The final ODE Euler step from t to 1 is x + (1 − t)·v = E[x_1 | x_t] (from E[ε|x] = x − t·v above):
        # the posterior-mean denoiser, so the SDE ends without leftover noise.
        return x
