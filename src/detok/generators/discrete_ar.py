"""Discrete RandomAR and RasterAR: causal transformers over VQ code indices (l-DeTok App. A.7, Table 9).

Papers: "Randomized Autoregressive Visual Generation" (RAR; Yu et al., arXiv:2411.00776), which l-DeTok uses
unmodified for its VQ tokenizers: a decoder-only causal transformer trained with cross-entropy and teacher forcing,
the generation order fixed for training and sampling — a random permutation per image with the embedding of the
next target position added to each input (RandomAR), or raster order (RasterAR); "Latent Denoising Makes Good
Visual Tokenizers" (Yang et al., arXiv:2507.15856), App. A.7.

The backbone is the continuous RandomAR/RasterAR's (`generators/ar.py`: class tokens, causal blocks with a key/value
cache, target-position embeddings); only the ends differ: an embedding table for the codes in, a linear classifier
over the codebook out. Sampling draws each code from softmax(logits / temperature), optionally restricted to the
`top_k` most likely, with classifier-free guidance on the logits (ℓ_u + s·(ℓ_c − ℓ_u)).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from detok.config import FractionBelowOne, NonNegativeInt, PositiveFloat, PositiveInt, check_fields
from detok.generators.ar import Block, CausalAR
from detok.layers import LabelEmbedder, check_token_layout
from detok.objectives.guidance import check_interval, linear_cfg_scale
from detok.progress import tqdm
from detok.registry import register_with_tiny


@dataclass(frozen=True)
class DiscreteARConfig:
    """A causal transformer over code indices in random (RandomAR) or raster (RasterAR) order.

    Attributes:
        codebook_size: how many codes a token takes (filled in from the VQ tokenizer).
        input_size: the token grid (h, w) or sequence (L,) of the tokenizer's indices.
        top_k: sample only among the k most likely codes (0: all).
        Other fields as `CausalARConfig`.
    """

    codebook_size: PositiveInt = 4096
    input_size: tuple[PositiveInt, ...] = (16, 16)
    num_classes: PositiveInt = 1000
    class_dropout: FractionBelowOne = 0.1
    order: Literal["random", "raster"] = "random"
    width: PositiveInt = 768
    depth: PositiveInt = 24
    heads: PositiveInt = 12
    mlp_ratio: PositiveFloat = 4.0
    dropout: FractionBelowOne = 0.0
    class_tokens: PositiveInt = 1
    cfg_schedule: Literal["linear", "constant"] = "linear"
    kv_cache: bool = True
    top_k: NonNegativeInt = 0

    def __post_init__(self):
        check_fields(self)
        check_token_layout(self.input_size)
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by {self.heads} heads")
        if self.top_k > self.codebook_size:
            raise ValueError(f"top_k {self.top_k} exceeds the codebook size {self.codebook_size}")

    @property
    def num_tokens(self) -> int:
        return math.prod(self.input_size)

    @property
    def token_grid(self) -> tuple[int, ...]:
        return tuple(self.input_size)


class DiscreteAR(CausalAR):
    """Decoder-only AR generator over code indices (RandomAR / RasterAR) with a softmax head."""

    kind = "generator"
    latent_kind = "discrete"  # consumes a VQ tokenizer's code indices, not continuous latents
    config_cls = DiscreteARConfig

    def __init__(self, config: DiscreteARConfig):
        nn.Module.__init__(self)  # the continuous model's token projection and DiffLoss head are not built
        self.config = config
        d, t = config.width, config.num_tokens
        self.class_emb = LabelEmbedder(config.num_classes, d)
        self.class_pos = nn.Parameter(torch.zeros(1, config.class_tokens, d))
        self.token_embed = nn.Embedding(config.codebook_size, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, t, d))  # position of the token fed in
        self.target_pos = nn.Parameter(torch.zeros(1, t, d)) if config.order == "random" else None
        self.blocks = nn.ModuleList(
            Block(d, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, config.codebook_size)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        super().initialize_weights()
        nn.init.normal_(self.token_embed.weight, std=0.02)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (a scalar) of every code given the codes before it, for indices z (N, *input_size)."""
        x = z.flatten(1).long()  # (N, T)
        orders = self.token_orders(len(x), x.device)  # (N, T), from the global RNG
        if self.training:
            labels = self.class_emb.drop(labels, self.config.class_dropout)  # CFG dropout from the global RNG
        x_ord = x.gather(1, orders)  # (N, T) in generation order
        prefix = self.embed_prefix(labels, orders[:, 0])  # (N, P, D)
        body = self.embed_tokens(x_ord[:, :-1], orders[:, :-1], orders[:, 1:])  # (N, T-1, D)
        h, _ = self.forward_backbone(torch.cat([prefix, body], dim=1))  # (N, P+T-1, D)
        logits = self.head(h[:, self.config.class_tokens - 1 :])  # (N, T, K)
        return F.cross_entropy(logits.flatten(0, 1).float(), x_ord.flatten())

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
        top_k: int | None = None,
    ) -> torch.Tensor:
        """Code indices (N, *input_size) for labels (N,), one token at a time in the configured order.

        Guidance runs a doubled [class; null] batch whenever cfg_scale != 1 and mixes the logits with the per-token
        scale of `cfg_schedule`. `cfg_interval` must be the whole range: token steps have no noise level.
        """
        if check_interval(cfg_interval) != (0.0, 1.0):
            raise ValueError(f"a guidance interval needs noise levels, which {type(self).__name__}'s steps lack")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        cfg = self.config
        top_k = cfg.top_k if top_k is None else top_k
        device = self.pos_embed.device
        labels = labels.to(device)
        n, t = len(labels), cfg.num_tokens
        guided = cfg_scale != 1.0
        use_cache = cfg.kv_cache if kv_cache is None else kv_cache
        double = (lambda a: torch.cat([a, a])) if guided else (lambda a: a)

        orders = double(self.token_orders(n, device, generator))  # (B, T)
        null = torch.full_like(labels, cfg.num_classes)
        prefix = self.embed_prefix(torch.cat([labels, null]) if guided else labels, orders[:, 0])  # (B, P, D)
        generated = torch.zeros(len(orders), t, dtype=torch.long, device=device)  # (B, T), generation order
        cache = None
        for i in tqdm(range(t), disable=not progress, desc=f"{cfg.order} discrete AR"):
            if not use_cache:
                body = self.embed_tokens(generated[:, :i], orders[:, :i], orders[:, 1 : i + 1])  # (B, i, D)
                h, _ = self.forward_backbone(torch.cat([prefix, body], dim=1))  # (B, P+i, D)
            elif i == 0:
                h, cache = self.forward_backbone(prefix)  # (B, P, D)
            else:
                last = self.embed_tokens(generated[:, i - 1 : i], orders[:, i - 1 : i], orders[:, i : i + 1])
                h, cache = self.forward_backbone(last, cache)  # (B, 1, D)
            logits = self.head(h[:, -1]).float()  # (B, K)
            if guided:
                scale = linear_cfg_scale(cfg_scale, i, t) if cfg.cfg_schedule == "linear" else cfg_scale
                cond, uncond = logits.chunk(2)
                logits = uncond + scale * (cond - uncond)  # (N, K)
            logits = logits / temperature
            if top_k:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (N, 1)
                logits = logits.masked_fill(logits < kth, float("-inf"))
            token = torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]  # (N,)
            generated[:, i] = double(token)
        orders, generated = orders[:n], generated[:n]
        tokens = torch.zeros_like(generated).scatter(1, orders, generated)  # (N, T) in raster order
        return tokens.view(n, *cfg.input_size)


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


def _tiny(cfg: DiscreteARConfig) -> DiscreteARConfig:
    """Tiny twin for tests: width 32, one block, a 4×4 grid of 64 codes."""
    return DiscreteARConfig(
        codebook_size=64, input_size=(4, 4), num_classes=cfg.num_classes, order=cfg.order, width=32, depth=1,
        heads=2, mlp_ratio=2.0,
    )  # fmt: skip


_register_pair = functools.partial(register_with_tiny, kind="generator", model_cls=DiscreteAR, tiny=_tiny)

for _order, _name in (("random", "RandomAR"), ("raster", "RasterAR")):
    _register_pair(
        f"{_order}ar-vq-b",
        lambda o=_order: DiscreteARConfig(order=o),
        f"Discrete {_name}-B (l-DeTok App. A.7, RAR's model): 24 causal blocks, width 768, 12 heads ({_order} order, "
        "fixed for training and sampling), cross-entropy over a 4,096-code book, on the 16×16 code grid of a 256-px "
        "VQ tokenizer (detokvq-sb), 1000 classes.",
    )
    _register_pair(
        f"{_order}ar-vq-fmnist32",
        lambda o=_order: DiscreteARConfig(
            codebook_size=512, input_size=(8, 8), num_classes=10, order=o, width=192, depth=6, heads=4
        ),
        f"Discrete {_name} for detokvq-fmnist32's 8×8 grid of 512 codes, 10 classes: 6 causal blocks, width 192, "
        "4 heads (the continuous FMNIST-32 AR's backbone without its DiffLoss head).",
    )
