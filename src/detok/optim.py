"""Optimiser helpers: AdamW parameter groups, warm-up + cosine learning rate, EMA of weights."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices decay; biases, norm gains, position embeddings and tokens do not."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or name.endswith(("_pos", "pos_embed", "mask_token", "token"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(
    step: int, total_steps: int, peak_lr: float, warmup_steps: int, min_lr: float = 0.0, schedule: str = "cosine"
) -> float:
    """Learning rate at `step` (0-based): linear warm-up to `peak_lr`, then cosine decay to `min_lr` or constant."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak_lr
    if schedule != "cosine":
        raise ValueError(f"unknown lr schedule {schedule!r}; expected 'cosine' or 'constant'")
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


class EMA:
    """Exponential moving average of a model's parameters and buffers.

    With `warmup=True` the decay ramps as min(decay, (1 + n) / (10 + n)) over updates n, so short runs are
    not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.updates += 1
