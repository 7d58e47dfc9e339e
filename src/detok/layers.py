"""Primitives shared verbatim by several model families.

Only pieces that are truly identical across models live here (norms, RoPE, the SwiGLU feed-forward, patchify,
the generators' latent token layout and sin-cos position embedding, timestep/label embedders). Blocks that
differ between families stay in their model files.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------------
# Norms and feed-forward
# --------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned gain (Zhang & Sennrich, 2019)."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def swiglu_hidden_dim(dim: int, mlp_ratio: float, multiple_of: int = 8) -> int:
    """Hidden width that gives a SwiGLU the parameter count of a GELU MLP with `mlp_ratio` (2/3 rule), rounded up
    to a multiple of `multiple_of`. `multiple_of=1` is the official l-DeTok's `int(2/3 · dim · mlp_ratio)` (S 1365,
    B 2048, L 2730), computed in the same order so that float rounding agrees."""
    if multiple_of == 1:
        return int(2 / 3 * dim * mlp_ratio)
    hidden = int(2 * dim * mlp_ratio / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


class SwiGLU(nn.Module):
    """SwiGLU feed-forward (Shazeer, 2020): w2(silu(w1 x) * w3 x), with w1 and w3 fused in one matmul."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * hidden_dim)
        self.w2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w13(x).chunk(2, dim=-1)  # (..., H) each
        return self.w2(F.silu(gate) * value)


# --------------------------------------------------------------------------------------------------
# Rotary position embedding (1-D or N-D axial)
# --------------------------------------------------------------------------------------------------


def grid_positions(*sizes: int, device: torch.device | None = None) -> torch.Tensor:
    """Integer coordinates of a row-major grid: (prod(sizes), len(sizes)). `grid_positions(L)` is 1-D."""
    axes = [torch.arange(s, device=device, dtype=torch.float32) for s in sizes]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation table for axial RoPE (Su et al., 2021; axial form as in Heo et al., 2024).

    The head dimension is split evenly between the position axes; each axis rotates its share with the
    usual geometric frequencies. Channels (2i, 2i+1) form the i-th rotated pair. The table is stored real, as
    (cos, sin) pairs: models keep it as a buffer, and NCCL cannot broadcast complex tensors (DDP syncs buffers)
    while `.to(dtype)` would drop a complex buffer's imaginary part.

    Args:
        positions: (T, A) coordinates of each token along A axes.
        head_dim: per-head channel count; must be divisible by 2·A.
        theta: frequency base.

    Returns:
        (cos, sin) of each rotation angle, (T, head_dim/2, 2) float32.
    """
    num_axes = positions.shape[-1]
    if head_dim % (2 * num_axes):
        raise ValueError(f"RoPE needs head_dim divisible by 2*num_axes, got head_dim={head_dim}, axes={num_axes}")
    per_axis = head_dim // (2 * num_axes)  # frequencies per axis
    freqs = theta ** (-torch.arange(per_axis, device=positions.device, dtype=torch.float32) / per_axis)
    angles = torch.cat([positions[:, a : a + 1] * freqs for a in range(num_axes)], dim=-1)  # (T, head_dim/2)
    return torch.view_as_real(torch.polar(torch.ones_like(angles), angles)).clone()  # real storage, polar's values


def rope_tables_unit_grid(
    grid: tuple[int, int], head_dim: int, max_freq: float = 7.0, min_freq: float = 7e-4
) -> torch.Tensor:
    """Per-channel RoPE table of the official l-DeTok (Jiawei-Yang/DeTok `models/detok.py`, `get_rope_tensor`).

    Differs from `rope_tables` in three ways, kept because the released weights were trained with them: coordinates
    run over [0, 1] on each axis (not integer positions); head_dim/4 frequencies fall geometrically from `max_freq`
    to `min_freq` and are multiplied by 2π; and each *channel* gets an angle — the frequency list is repeated
    (`cat([f, f])`) over the first half of the head (row axis) and the second half (column axis), so the two
    channels of a rotated pair (2i, 2i+1) turn by different angles. The result is therefore not a product of
    plane rotations and is applied by `apply_rope` in the "rotate half" form.

    Args:
        grid: (h, w) token grid, row-major.
        head_dim: per-head channels; divisible by 4.

    Returns:
        (cos, sin) of each channel's angle, (h·w, head_dim, 2) float32.
    """
    if head_dim % 4:
        raise ValueError(f"the unit-grid RoPE needs head_dim divisible by 4, got {head_dim}")
    freqs = max_freq * (max_freq / min_freq) ** torch.linspace(0, -1, head_dim // 4)  # (hd/4,) as upstream
    freqs = torch.cat([freqs, freqs])  # (hd/2,)
    h, w = grid
    rows = torch.linspace(0, 1, h).repeat_interleave(w)  # (T,)
    cols = torch.linspace(0, 1, w).repeat(h)  # (T,)
    freqs = freqs * 2 * torch.pi  # in upstream's order, so that float32 rounding agrees
    angles = torch.cat([rows[:, None] * freqs, cols[:, None] * freqs], dim=-1)  # (T, hd)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate `x` (..., T, head_dim) by a RoPE table broadcastable to (..., T, K, 2).

    A `rope_tables` table (K = head_dim/2: one angle per channel pair) is applied as one complex multiply — about
    half the memory traffic of the cos/sin form on CPU. A `rope_tables_unit_grid` table (K = head_dim: one angle
    per channel) is applied in the "rotate half" form x·cos + rot(x)·sin, rot((a, b)) = (−b, a) over pairs.
    """
    if rope.shape[-2] == x.shape[-1]:  # per-channel angles
        cos, sin = rope.float().unbind(-1)  # (..., T, hd) each
        pairs = x.float().unflatten(-1, (-1, 2))  # (..., T, hd/2, 2)
        rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (..., T, hd)
        return (x.float() * cos + rotated * sin).type_as(x)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (..., T, hd/2)
    rotation = torch.view_as_complex(rope.float().contiguous())  # (..., T, hd/2), a view for a float32 table
    return torch.view_as_real(pairs * rotation).flatten(-2).type_as(x)


# --------------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention with a fused QKV projection, optional RoPE and QK-norm, via SDPA."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.dropout = dropout  # on the attention probabilities, in training only
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """x: (N, T, D); rope: a table broadcastable to (N, heads, T, K, 2) (`apply_rope`). Returns (N, T, D)."""
        n, t, d = x.shape
        qkv = self.qkv(x).view(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, N, h, T, hd)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(torch.stack([q, k]), rope).unbind(0)  # one rotation for both
        drop = self.dropout if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=drop)
        return self.proj(x.transpose(1, 2).reshape(n, t, d))


# --------------------------------------------------------------------------------------------------
# Patchify
# --------------------------------------------------------------------------------------------------


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, H/p·W/p, p·p·C), patches in row-major order, channels last within a patch."""
    n, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
    x = images.reshape(n, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of `patchify`: (N, gh·gw, p·p·C) -> (N, C, gh·p, gw·p)."""
    n = patches.shape[0]
    p = patch_size
    gh, gw = grid
    x = patches.reshape(n, gh, gw, p, p, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(n, channels, gh * p, gw * p)


# --------------------------------------------------------------------------------------------------
# Latent token layout and position embeddings (generators: 2-D grids or 1-D sequences; resampling)
# --------------------------------------------------------------------------------------------------


def sincos_pos_embed(dim: int, sizes: tuple[int, ...]) -> torch.Tensor:
    """Fixed sin-cos position embedding (Vaswani et al., 2017) of a row-major grid: (prod(sizes), dim).

    Each axis gets dim/A channels laid out as [sin(pos·ω), cos(pos·ω)] with ω_i = 10000^(−i/(dim/2A)). For a
    2-D grid the first half encodes the column and the second half the row, as in MAE and DiT.
    """
    pos = grid_positions(*sizes).flip(-1)  # (T, A): (col, row) for a grid, (l,) for a sequence
    half = dim // (2 * len(sizes))  # frequencies per axis
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float32) / half)  # (half,)
    parts = []
    for a in range(pos.shape[1]):
        angles = pos[:, a : a + 1] * omega  # (T, half)
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=-1)  # (T, dim)


def resample_pos_embed(
    pos: torch.Tensor, old_grid: tuple[int, ...], new_grid: tuple[int, ...], prefix_tokens: int = 0
) -> torch.Tensor:
    """Learned position embeddings (1, P + prod(old_grid), D) of a row-major grid resampled to `new_grid`.

    The method of timm's `resample_abs_pos_embed` (used to fine-tune ViTs at another resolution): the embeddings are
    laid out on their grid and interpolated bicubically (linearly for a 1-D sequence) with antialiasing and
    align_corners=False, i.e. the grid is stretched over the same field of view; the `prefix_tokens` leading
    embeddings (class or buffer tokens) are kept as they are. The same grid returns `pos` itself.
    """
    if len(old_grid) != len(new_grid) or len(old_grid) not in (1, 2):
        raise ValueError(f"can resample between grids of the same 1 or 2 axes, not {old_grid} → {new_grid}")
    if pos.shape[1] != prefix_tokens + math.prod(old_grid):
        raise ValueError(f"{pos.shape[1]} embeddings do not make {prefix_tokens} + a {old_grid} grid")
    if tuple(old_grid) == tuple(new_grid):
        return pos
    prefix, grid = pos[:, :prefix_tokens], pos[:, prefix_tokens:]
    grid = grid.float().transpose(1, 2).reshape(1, -1, *old_grid)  # (1, D, *old_grid)
    mode = "bicubic" if len(old_grid) == 2 else "linear"
    grid = F.interpolate(grid, size=tuple(new_grid), mode=mode, antialias=mode == "bicubic", align_corners=False)
    grid = grid.flatten(2).transpose(1, 2).to(pos.dtype)  # (1, prod(new_grid), D)
    return torch.cat([prefix, grid], dim=1)


def check_token_layout(input_size: tuple[int, ...], patch_size: int = 1) -> None:
    """Refuse a latent shape `latents_to_tokens` cannot cut: a grid (h, w) or a sequence (L,), every side a multiple
    of `patch_size` (a generator config's check)."""
    if len(input_size) not in (1, 2):
        raise ValueError(f"input_size must be (h, w) or (L,), got {input_size}")
    if any(s % patch_size for s in input_size):
        raise ValueError(f"patch size {patch_size} does not divide input_size {input_size}")


def latents_to_tokens(z: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N, C, h, w) → (N, h/p·w/p, p·p·C) patches, or a sequence (N, C, L) → (N, L/p, p·C) groups of p tokens."""
    if z.dim() == 4:
        return patchify(z, patch_size)
    n, c, length = z.shape
    x = z.reshape(n, c, length // patch_size, patch_size)  # (N, C, L/p, p)
    return x.permute(0, 2, 3, 1).reshape(n, length // patch_size, patch_size * c)


def tokens_to_latents(x: torch.Tensor, patch_size: int, channels: int, input_size: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `latents_to_tokens` for latents of spatial shape `input_size`."""
    p = patch_size
    if len(input_size) == 2:
        return unpatchify(x, p, channels, (input_size[0] // p, input_size[1] // p))
    n, length = x.shape[0], input_size[0]
    return x.reshape(n, length // p, p, channels).permute(0, 3, 1, 2).reshape(n, channels, length)


# --------------------------------------------------------------------------------------------------
# Conditioning embedders (used by the generators)
# --------------------------------------------------------------------------------------------------


class TimestepEmbedder(nn.Module):
    """Sinusoidal timestep features followed by a two-layer MLP (DiT, Peebles & Xie 2023)."""

    def __init__(self, dim: int, freq_dim: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: (N,) real-valued timesteps -> (N, D)."""
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]  # (N, half)
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class LabelEmbedder(nn.Module):
    """Class embedding table with one extra row for the null class used by classifier-free guidance."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def drop(self, labels: torch.Tensor, prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Replace each label by the null class with probability `prob` (training-time CFG dropout)."""
        if prob <= 0:
            return labels
        drop = torch.rand(labels.shape, device=labels.device, generator=generator) < prob
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """labels: (N,) ints in [0, num_classes]; num_classes means "no class". Returns (N, D)."""
        return self.table(labels)


class TextEmbedder(nn.Module):
    """Text conditioning of the T2I generators (l-DeTok App. C): a linear projection of a frozen text encoder's
    token outputs to the model width (U-ViT's `context_embed`), and a learned null text that classifier-free guidance
    puts in place of a caption (dropped captions in training, the unconditional branch in sampling)."""

    def __init__(self, text_dim: int, text_len: int, dim: int):
        super().__init__()
        self.null = nn.Parameter(torch.zeros(1, text_len, text_dim))  # (1, L, D_text)
        self.proj = nn.Linear(text_dim, dim)

    def null_text(self, n: int) -> torch.Tensor:
        """The null text for `n` samples: (n, L, D_text)."""
        return self.null.expand(n, -1, -1)

    def check(self, text: torch.Tensor) -> torch.Tensor:
        """`text` itself, after checking it holds (N, text_len, text_dim) token embeddings."""
        if text.dim() != 3 or tuple(text.shape[1:]) != tuple(self.null.shape[1:]):
            raise ValueError(
                f"text of shape {tuple(text.shape)}, but this generator takes (N, {self.null.shape[1]}, "
                f"{self.null.shape[2]}) token embeddings (text_len, text_dim): use the text encoder it was trained with"
            )
        return text

    def drop(self, text: torch.Tensor, prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Replace each caption (N, L, D_text) by the null text with probability `prob` (training-time CFG dropout)."""
        if prob <= 0:
            return self.check(text)
        drop = torch.rand(len(text), device=text.device, generator=generator) < prob  # (N,)
        return torch.where(drop[:, None, None], self.null.to(text.dtype), self.check(text))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """text: (N, L, D_text) token embeddings of the captions (or the null text) → (N, L, D)."""
        return self.proj(self.check(text))  # (N, L, D)
