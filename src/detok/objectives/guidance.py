"""Classifier-free guidance (Ho & Salimans, 2022) shared by every generator, and class-balanced labels.

`guided_model_fn` wraps a DiT-style network (x, t, y) into the guided `model_fn(x_t, t)` that the DDPM and
flow samplers call; MAR/AR guide inside their DiffLoss head with `guide` directly.

Convention for guidance intervals: the *noise level* runs from 0 (clean data) to 1 (pure noise), whatever
the objective's own time variable; guidance is applied only while the noise level lies in the interval
(Kynkäänniemi et al., 2024, "Applying guidance in a limited interval").
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float, channels: int | None = None) -> torch.Tensor:
    """uncond + scale·(cond − uncond) on the first `channels` channels (dim 1); the rest is taken from `cond`.

    Args:
        cond, uncond: model outputs (N, C, ...) for the class and for the null class.
        scale: guidance scale; 1 returns `cond` exactly.
        channels: guide only these leading channels. None (the default) guides all of them; the original
            DiT/SiT code guided 3 (`cfg_channels=3`), which models keep as a named option.
    """
    if scale == 1.0:
        return cond
    k = cond.shape[1] if channels is None else channels
    guided = uncond[:, :k] + scale * (cond[:, :k] - uncond[:, :k])
    return guided if k == cond.shape[1] else torch.cat([guided, cond[:, k:]], dim=1)


def check_interval(interval: tuple[float, float]) -> tuple[float, float]:
    """Validate a guidance interval (0 ≤ lo ≤ hi ≤ 1) and return it as a tuple of floats."""
    lo, hi = float(interval[0]), float(interval[1])
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"cfg interval must satisfy 0 <= lo <= hi <= 1, got ({lo}, {hi})")
    return lo, hi


def linear_cfg_scale(scale: float, generated: int, total: int) -> float:
    """MAR/RAR's linear CFG schedule: 1 at the first token, rising linearly to `scale` as tokens are generated.

    Args:
        generated: how many tokens count as generated at this step (the caller's convention: MAR counts them
            once the step is done, the AR models before the token is drawn).
        total: tokens in the sequence.
    """
    return 1.0 + (scale - 1.0) * generated / total


def balanced_labels(num: int, num_classes: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """`num` labels cycling through the classes (0, 1, …, K−1, 0, …): counts differ by at most one."""
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    return torch.arange(num, device=device) % num_classes


def guided_model_fn(
    net: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    null_label: int | torch.Tensor,
    scale: float,
    interval: tuple[float, float],
    noise_level: Callable[[torch.Tensor], torch.Tensor],
    channels: int,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The `model_fn(x_t, t)` handed to an objective's sampler, with classifier-free guidance.

    Scale 1 always runs the conditional batch alone. Otherwise, while some sample's noise level lies in the
    closed `interval` (0 = data, 1 = noise), the batch is doubled as [cond; null] and the first `channels` output
    channels are combined by `guidance.guide`; the remaining channels (DiT's learned variances, or channels left
    unguided by `cfg_channels`) come from the conditional half. Samples outside the interval get the conditional
    output.

    `labels` are the conditions: class labels (N,) with `null_label` the null class, or the token embeddings of captions
    (N, L, D) with `null_label` the null text as a tensor of the same shape (the T2I generators).
    """
    lo, hi = check_interval(interval)
    null = null_label if isinstance(null_label, torch.Tensor) else torch.full_like(labels, null_label)

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if scale == 1.0:
            return net(x, t, labels)
        level = noise_level(t)  # (N,)
        on = (level >= lo) & (level <= hi)  # (N,)
        if not bool(on.any()):
            return net(x, t, labels)
        out = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))  # (2N, C_out, ...)
        cond, uncond = out.chunk(2)  # (N, C_out, ...) each
        guided = guide(cond, uncond, scale, channels=channels)  # (N, C_out, ...)
        return torch.where(on.view(-1, *[1] * (cond.dim() - 1)), guided, cond)

    return model_fn
