"""Classifier-free guidance (Ho & Salimans, 2022) shared by every generator, and class-balanced labels.

Convention for guidance intervals: the *noise level* runs from 0 (clean data) to 1 (pure noise), whatever
the objective's own time variable; guidance is applied only while the noise level lies in the interval
(Kynkäänniemi et al., 2024, "Applying guidance in a limited interval").
"""

from __future__ import annotations

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


def in_interval(noise_level: float, interval: tuple[float, float]) -> bool:
    """Whether guidance is on at this noise level (0 = data, 1 = noise); the interval is closed."""
    lo, hi = interval
    return lo <= noise_level <= hi


def check_interval(interval: tuple[float, float]) -> tuple[float, float]:
    """Validate a guidance interval (0 ≤ lo ≤ hi ≤ 1) and return it as a tuple of floats."""
    lo, hi = float(interval[0]), float(interval[1])
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"cfg interval must satisfy 0 <= lo <= hi <= 1, got ({lo}, {hi})")
    return lo, hi


def linear_cfg_scale(scale: float, generated: int, total: int) -> float:
    """MAR/RAR's linear CFG schedule: 1 at the first token, rising linearly to `scale` as tokens are generated.

    Args:
        generated: how many tokens are already generated before this step.
        total: tokens in the sequence.
    """
    return 1.0 + (scale - 1.0) * generated / total


def balanced_labels(num: int, num_classes: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """`num` labels cycling through the classes (0, 1, …, K−1, 0, …): counts differ by at most one."""
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    return torch.arange(num, device=device) % num_classes
