"""HOG targets as MaskFeat computes them and MAETok predicts them: a deterministic teacher without weights.

Papers: "Masked Feature Prediction for Self-Supervised Visual Pre-Training" (MaskFeat; Wei et al., arXiv:2112.09133),
§3–4: per-channel histograms of oriented gradients — Sobel gradients, 9 unsigned orientation bins weighted by the
gradient magnitude, a Gaussian window over each patch, histograms summed over cells and ℓ2-normalised per cell;
"Masked Autoencoders Are Effective Tokenizers for Diffusion Models" (MAETok; Chen et al., arXiv:2502.03444) uses
them as one of its auxiliary targets.

Geometry: a patch of p pixels holds (p / cell)² cells, so each patch gets a (p / cell)² · C · 9 feature (at 256 px,
p = 16, cell 8: 2 × 2 cells × 3 channels × 9 bins = 108). The Gaussian window spans one patch (σ = p / 2) and repeats
over the image.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

_SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))


def gaussian_window(size: int, std: float) -> torch.Tensor:
    """A (size, size) Gaussian centred on the window, normalised to sum 1."""
    n = torch.arange(size, dtype=torch.float32)
    w = torch.exp(-0.5 * ((n - n.mean()) / std) ** 2)  # (size,)
    w2 = w[:, None] * w[None, :]
    return w2 / w2.sum()


class HOGTeacher(nn.Module):
    """Patch features (N, T, D) of images (N, C, H, W) in [-1, 1]: per-cell orientation histograms per patch."""

    def __init__(self, patch_size: int, cell_size: int = 8, bins: int = 9):
        super().__init__()
        if patch_size % cell_size:
            raise ValueError(f"HOG cells of {cell_size} px must tile the {patch_size}-px patches")
        self.patch_size, self.cell_size, self.bins = patch_size, cell_size, bins
        sobel = torch.tensor(_SOBEL_X)
        self.register_buffer("kernel", torch.stack([sobel, sobel.t()])[:, None], persistent=False)  # (2, 1, 3, 3)
        self.register_buffer("window", gaussian_window(patch_size, patch_size / 2), persistent=False)

    def feature_dim(self, channels: int) -> int:
        return (self.patch_size // self.cell_size) ** 2 * channels * self.bins

    def histograms(self, x: torch.Tensor) -> torch.Tensor:
        """Per-cell histograms (N, C, bins, H / cell, W / cell), ℓ2-normalised over the bins of each cell."""
        n, c, h, w = x.shape
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"HOG needs images divisible by the patch size {self.patch_size}, got {h}x{w}")
        g = F.conv2d(F.pad(x.reshape(n * c, 1, h, w).float(), (1, 1, 1, 1), mode="reflect"), self.kernel)
        gx, gy = g[:, 0].reshape(n, c, h, w), g[:, 1].reshape(n, c, h, w)  # (N, C, H, W) each
        magnitude = torch.sqrt(gx**2 + gy**2)
        # unsigned orientation: angles θ and θ + π fall in the same one of `bins` bins over [0, π)
        angle = torch.atan2(gx, gy)  # (-π, π]
        bin_index = torch.floor(angle / math.pi * self.bins).long() % self.bins  # (N, C, H, W)
        repeats = (h // self.patch_size, w // self.patch_size)
        magnitude = magnitude * self.window.repeat(*repeats)  # the Gaussian window of each patch
        hist = x.new_zeros(n, c, self.bins, h, w, dtype=torch.float32)
        hist.scatter_add_(2, bin_index[:, :, None], magnitude[:, :, None])  # (N, C, bins, H, W)
        k = self.cell_size
        cells = hist.reshape(n, c, self.bins, h // k, k, w // k, k).sum((4, 6))  # (N, C, bins, H/k, W/k)
        return F.normalize(cells, p=2, dim=2)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] → patch features (N, T, (p/cell)² · C · bins), patches in raster order."""
        cells = self.histograms(x)  # (N, C, B, H/k, W/k)
        n, c, b = cells.shape[:3]
        per = self.patch_size // self.cell_size
        gh, gw = cells.shape[3] // per, cells.shape[4] // per
        cells = cells.reshape(n, c, b, gh, per, gw, per)  # split cells into patches
        return cells.permute(0, 3, 5, 4, 6, 1, 2).reshape(n, gh * gw, per * per * c * b)  # (N, T, D)
