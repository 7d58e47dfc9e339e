"""RandomAR and RasterAR: causal autoregressive transformers over continuous tokens with a diffusion head.

Papers: the two autoregressive generators evaluated in "Latent Denoising Makes Good Visual Tokenizers" (Yang et
al., arXiv:2507.15856, §4 and App. A.2), built from "Autoregressive Image Generation without Vector
Quantization" (Li et al., arXiv:2406.11838: a causal transformer whose output at each position conditions a
per-token Diffusion Loss) and "Randomized Autoregressive Visual Generation" (Yu et al., arXiv:2411.00776: a
random factorisation order made learnable by adding the embedding of the next *target* position to each input).

One decoder-only model serves both: RasterAR trains and samples in raster order; RandomAR draws a fresh random
permutation per image, in training and in sampling, and tells the model which position it predicts next. The
input is [class token(s)] + the tokens in generation order; the output at the last class token predicts the
first token, the output at token i predicts token i + 1. Sampling is token by token, with a key/value cache by
default (`kv_cache`) or by recomputing the prefix at every step; both give the same tokens.

Guidance intervals (`cfg_interval`, in noise level) have no meaning for a token order and are ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from detok.config import FractionBelowOne, PositiveFloat, PositiveInt, check_fields
from detok.generators.mar import random_orders
from detok.layers import LabelEmbedder, check_token_layout, latents_to_tokens, tokens_to_latents
from detok.objectives.diffloss import DiffLoss, DiffLossConfig
from detok.objectives.guidance import check_interval, linear_cfg_scale
from detok.progress import tqdm
from detok.registry import register_with_tiny

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per block: keys and values (N, heads, S, head_dim)

# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CausalARConfig:
    """A causal transformer with a DiffLoss head, in random (RandomAR) or raster (RasterAR) token order.

    Attributes:
        order: "random" trains and samples each image in its own random permutation, with next-target position
            embeddings (RandomAR); "raster" uses row-major order and no target embedding (RasterAR).
        class_tokens: how many tokens at the front of the sequence carry the class embedding.
        cfg_schedule: "linear" raises the guidance scale from 1 at the first token to the full scale
            (`guidance.linear_cfg_scale`, counting the tokens generated before each step); "constant" uses
            the full scale throughout.
        kv_cache: sample with a key/value cache (O(T) work per token) instead of recomputing the prefix.
    """

    latent_channels: PositiveInt = 16
    input_size: tuple[int, ...] = (16, 16)
    num_classes: PositiveInt = 1000
    class_dropout: FractionBelowOne = 0.1
    order: Literal["random", "raster"] = "random"
    patch_size: PositiveInt = 1
    width: PositiveInt = 768
    depth: PositiveInt = 24
    heads: PositiveInt = 12
    mlp_ratio: PositiveFloat = 4.0
    dropout: FractionBelowOne = 0.0
    class_tokens: PositiveInt = 1
    cfg_schedule: Literal["linear", "constant"] = "linear"
    kv_cache: bool = True
    diffloss: DiffLossConfig = field(default_factory=lambda: DiffLossConfig(width=1024, depth=6))

    def __post_init__(self):
        check_fields(self)
        check_token_layout(self.input_size, self.patch_size)
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by {self.heads} heads")

    @property
    def num_tokens(self) -> int:
        return math.prod(self.token_grid)

    @property
    def token_grid(self) -> tuple[int, ...]:
        return tuple(s // self.patch_size for s in self.input_size)

    @property
    def token_dim(self) -> int:
        return self.latent_channels * self.patch_size ** len(self.input_size)


# --------------------------------------------------------------------------------------------------
# Backbone: causal attention that can extend a key/value cache
# --------------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (fused QKV, SDPA) over new tokens appended to cached keys and values."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x: (N, t, D) new tokens; cache: keys and values (N, h, S, hd) of the S tokens before them.

        Returns the attention output (N, t, D) and the extended cache (N, h, S + t, hd).
        """
        n, t, d = x.shape
        qkv = self.qkv(x).view(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, N, h, t, hd)
        q, k, v = qkv.unbind(0)
        if cache is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (N, h, t, hd)
        else:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)  # (N, h, S+t, hd)
            past = k.shape[2] - t
            # new token i may see every cached token and new tokens up to itself
            allowed = torch.arange(k.shape[2], device=x.device) <= past + torch.arange(t, device=x.device)[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if t == 1 else allowed)  # (N, h, t, hd)
        return self.proj(out.transpose(1, 2).reshape(n, t, d)), (k, v)


class Block(nn.Module):
    """Pre-norm causal transformer block (LayerNorm → causal attention, LayerNorm → GELU MLP)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = CausalSelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a, cache = self.attn(self.norm1(x), cache)  # (N, t, D)
        x = x + self.drop(a)  # (N, t, D)
        return x + self.drop(self.mlp(self.norm2(x))), cache  # (N, t, D)


# --------------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------------


class CausalAR(nn.Module):
    """Decoder-only autoregressive generator (RandomAR / RasterAR) with a per-token DiffLoss head."""

    kind = "generator"
    latent_kind = "continuous"  # normalised continuous latents (grids or 1-D sequences), not code indices
    config_cls = CausalARConfig

    def __init__(self, config: CausalARConfig):
        super().__init__()
        self.config = config
        d, t = config.width, config.num_tokens
        self.class_emb = LabelEmbedder(config.num_classes, d)
        self.class_pos = nn.Parameter(torch.zeros(1, config.class_tokens, d))
        self.token_embed = nn.Linear(config.token_dim, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, t, d))  # position of the token fed in
        # position of the token to predict next (RAR); raster order makes it implicit
        self.target_pos = nn.Parameter(torch.zeros(1, t, d)) if config.order == "random" else None
        self.blocks = nn.ModuleList(
            Block(d, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.diffloss = DiffLoss(config.token_dim, d, config.diffloss)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def init_module(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

        # the DiffLoss head owns its initialisation
        for name, child in self.named_children():
            if name != "diffloss":
                child.apply(init_module)
        nn.init.normal_(self.class_emb.table.weight, std=0.02)
        for param in (self.class_pos, self.pos_embed, self.target_pos):
            if param is not None:
                nn.init.normal_(param, std=0.02)

    def position_grids(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """Learned positions on the token grid, by state-dict name: (leading non-grid tokens, grid); `init_from` at
        another latent size resamples them (training/init_from.py). The class positions do not depend on it."""
        grids = {"pos_embed": (0, self.config.token_grid)}
        return grids | ({"target_pos": (0, self.config.token_grid)} if self.target_pos is not None else {})

    # ----------------------------------------------------------------------------------------------
    # Stages
    # ----------------------------------------------------------------------------------------------

    def token_orders(self, num: int, device: torch.device, generator: torch.Generator | None = None):
        """Generation order of each sample, (N, T) token indices: a random permutation or raster order."""
        t = self.config.num_tokens
        if self.config.order == "random":
            return random_orders(num, t, device, generator)
        return torch.arange(t, device=device).expand(num, t)

    def embed_prefix(self, labels: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """Class tokens (N, P, D) for labels (N,); the last one also gets the target embedding of `first` (N,)."""
        h = self.class_emb(labels)[:, None] + self.class_pos  # (N, P, D)
        if self.target_pos is not None:
            h = torch.cat([h[:, :-1], h[:, -1:] + self.target_pos[0, first][:, None]], dim=1)  # (N, P, D)
        return h

    def embed_tokens(self, x: torch.Tensor, pos: torch.Tensor, next_pos: torch.Tensor) -> torch.Tensor:
        """Tokens x (N, t, C·p^A) at positions pos (N, t), each followed by the target position next_pos (N, t)."""
        h = self.token_embed(x) + self.pos_embed[0, pos]  # (N, t, D)
        if self.target_pos is not None:
            h = h + self.target_pos[0, next_pos]  # (N, t, D)
        return h

    def forward_backbone(self, h: torch.Tensor, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """Causal blocks over new inputs h (N, t, D) after the cached prefix; returns (N, t, D) and the new cache."""
        new_cache = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, None if cache is None else cache[i])  # (N, t, D)
            new_cache.append(kv)
        return self.norm(h), new_cache  # (N, t, D)

    def forward_features(self, x: torch.Tensor, labels: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        """Conditions for the DiffLoss head: row i (of T) predicts token orders[:, i] from the tokens before it.

        Args:
            x: tokens (N, T, C·p^A) in raster order.
            labels: (N,) classes, num_classes = null.
            orders: (N, T) generation order.

        Returns:
            (N, T, D), in generation order.
        """
        p = self.config.class_tokens
        x_ord = x.gather(1, orders[..., None].expand(-1, -1, x.shape[-1]))  # (N, T, C·p^A) in generation order
        prefix = self.embed_prefix(labels, orders[:, 0])  # (N, P, D)
        body = self.embed_tokens(x_ord[:, :-1], orders[:, :-1], orders[:, 1:])  # (N, T-1, D)
        h, _ = self.forward_backbone(torch.cat([prefix, body], dim=1))  # (N, P+T-1, D)
        return h[:, p - 1 :]  # (N, T, D)

    def forward_loss(self, cond: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Diffusion Loss of every token: cond (N, T, D), target (N, T, C·p^A), both in generation order."""
        return self.diffloss(target.flatten(0, 1), cond.flatten(0, 1), None)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training loss (a scalar) for normalised latents z (N, C, *input_size) and labels (N,) in [0, K)."""
        x = latents_to_tokens(z, self.config.patch_size)  # (N, T, C·p^A)
        orders = self.token_orders(x.shape[0], x.device)  # (N, T), from the global RNG
        if self.training:
            labels = self.class_emb.drop(labels, self.config.class_dropout)  # CFG dropout from the global RNG
        cond = self.forward_features(x, labels, orders)  # (N, T, D)
        target = x.gather(1, orders[..., None].expand(-1, -1, x.shape[-1]))  # (N, T, C·p^A)
        return self.forward_loss(cond, target)

    # ----------------------------------------------------------------------------------------------
    # Sampling
    # ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor,
        cfg_scale: float = 1.0,
        cfg_interval: tuple[float, float] = (0.0, 1.0),
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
        kv_cache: bool | None = None,
    ) -> torch.Tensor:
        """Normalised latents (N, C, *input_size) for labels (N,); see docs/generator-contract.md.

        Tokens are drawn one at a time by the DiffLoss head (with `temperature`) in the configured order; a
        random order is drawn from `generator`. Guidance runs a doubled [class; null] batch whenever
        cfg_scale != 1, with the per-token scale of `cfg_schedule`. `cfg_interval` must be the whole range (0, 1):
        token steps have no noise level to restrict guidance to.

        Args:
            kv_cache: override the config's `kv_cache` (True: cache keys/values; False: recompute the prefix).
        """
        if check_interval(cfg_interval) != (0.0, 1.0):
            raise ValueError(f"a guidance interval needs noise levels, which {type(self).__name__}'s steps lack")
        cfg = self.config
        device = self.pos_embed.device
        labels = labels.to(device)
        n, t = len(labels), cfg.num_tokens
        guided = cfg_scale != 1.0
        use_cache = cfg.kv_cache if kv_cache is None else kv_cache
        double = (lambda a: torch.cat([a, a])) if guided else (lambda a: a)

        orders = double(self.token_orders(n, device, generator))  # (B, T), B = 2N when guided
        null = torch.full_like(labels, cfg.num_classes)
        prefix = self.embed_prefix(torch.cat([labels, null]) if guided else labels, orders[:, 0])  # (B, P, D)
        generated = torch.zeros(len(orders), t, cfg.token_dim, device=device)  # (B, T, C·p^A), generation order
        cache = None
        for i in tqdm(range(t), disable=not progress, desc=f"{cfg.order} AR"):
            if not use_cache:
                body = self.embed_tokens(generated[:, :i], orders[:, :i], orders[:, 1 : i + 1])  # (B, i, D)
                h, _ = self.forward_backbone(torch.cat([prefix, body], dim=1))  # (B, P+i, D)
            elif i == 0:
                h, cache = self.forward_backbone(prefix)  # (B, P, D): the class tokens fill the cache
            else:
                last = self.embed_tokens(generated[:, i - 1 : i], orders[:, i - 1 : i], orders[:, i : i + 1])
                h, cache = self.forward_backbone(last, cache)  # (B, 1, D)
            cond = h[:, -1]  # (B, D)
            scale = linear_cfg_scale(cfg_scale, i, t) if cfg.cfg_schedule == "linear" else cfg_scale
            if not (guided and scale != 1.0):
                cond = cond[:n]  # the null half is only needed while guidance is on
            token = self.diffloss.sample(cond, temperature=temperature, cfg_scale=scale, generator=generator)
            generated[:, i] = double(token.to(generated.dtype))  # (B, C·p^A)
        orders, generated = orders[:n], generated[:n]
        tokens = torch.zeros_like(generated).scatter(1, orders[..., None].expand_as(generated), generated)
        return tokens_to_latents(tokens, cfg.patch_size, cfg.latent_channels, cfg.input_size)


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


def _paper(order: str) -> CausalARConfig:
    return CausalARConfig(
        latent_channels=16,
        input_size=(16, 16),
        num_classes=1000,
        order=order,
        patch_size=1,
        width=768,
        depth=24,
        heads=12,
        diffloss=DiffLossConfig(width=1024, depth=3),  # l-DeTok App. A.2: a 3-layer, 1024-channel head
    )


def _tiny(cfg: CausalARConfig) -> CausalARConfig:
    """Tiny twin for tests: width 32, one block, a 4×4 grid, a one-block 32-wide head with 4 sampling steps."""
    head = dataclasses.replace(cfg.diffloss, width=32, depth=1, sample_steps=4, batch_mul=1)
    return dataclasses.replace(
        cfg, input_size=(4, 4), patch_size=1, width=32, depth=1, heads=2, mlp_ratio=2.0, dropout=0.0, diffloss=head
    )


_register_pair = functools.partial(register_with_tiny, kind="generator", model_cls=CausalAR, tiny=_tiny)


_PAPER_DOC = (
    "{name}-B: a causal transformer of 24 blocks, width 768, 12 heads ({order} order), no dropout — the backbone "
    "budget of MAR-B (12 + 12 blocks of the same width); DiffLoss 3 blocks × 1024 as for every AR model of the l-DeTok "
    "paper (App. A.2); on l-DeTok's 256-px latents (16×16×16, so p=1), 1000 classes."
)
_register_pair("randomar-b", lambda: _paper("random"), _PAPER_DOC.format(name="RandomAR", order="random"))
_register_pair("rasterar-b", lambda: _paper("raster"), _PAPER_DOC.format(name="RasterAR", order="raster"))


def _fmnist32(order: str) -> CausalARConfig:
    return CausalARConfig(
        latent_channels=8,
        input_size=(8, 8),
        num_classes=10,
        order=order,
        patch_size=1,
        width=192,
        depth=6,
        heads=4,
        diffloss=DiffLossConfig(width=256, depth=3, sample_steps=50, batch_mul=1, clip_denoised=5.0),
    )


_FMNIST_DOC = (
    "FMNIST-32 latents (8×8×8 from detok-fmnist32, 64 tokens of 8 values), 10 classes, {order} order: 6 causal "
    "blocks, width 192, 4 heads, DiffLoss 3 blocks × 256 with batch_mul 1 (every token is a target, so the head "
    "sees 4k rows per batch of 64 even so) and 50 sampling steps. Measured on 2 CPU threads: a training step at "
    "batch 64 takes ~{step} s (~{rate} img/s, so 10 minutes ≈ {images} images), and one sampling batch of 64 with "
    "guidance ~{sample} s (64 token steps with the KV cache, each a 50-step DiffLoss chain). The head's x̂_0 is "
    "clamped to ±5 while sampling (see DiffLossConfig.clip_denoised)."
)
_register_pair(
    "randomar-fmnist32",
    lambda: _fmnist32("random"),
    _FMNIST_DOC.format(order="random", step="0.77", rate="83", images="50k", sample="16"),
)
_register_pair(
    "rasterar-fmnist32",
    lambda: _fmnist32("raster"),
    _FMNIST_DOC.format(order="raster", step="0.73", rate="88", images="53k", sample="11-15"),
)
