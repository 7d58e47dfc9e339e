"""Text-to-image variants of SiT and MAR, as the l-DeTok paper adapts them (App. C, Table 7).

Paper: "Latent Denoising Makes Good Visual Tokenizers" (Yang et al., arXiv:2507.15856), App. C: "(1) For SiT, we
concatenate text and image tokens, computing the loss only on image tokens. The AdaLN modulation input is simplified
from {timestep embedding + class embedding} to only timestep embedding. (2) For MAR, we fill the buffer tokens, which
originally store class embeddings, with text embeddings." Text embeddings are the token-level outputs of a frozen text
encoder (CLIP-L in the paper, following U-ViT, Bao et al., arXiv:2209.12152: all 77 token outputs of its last layer,
padding positions included, no attention mask), projected to the model width by a linear layer (`layers.TextEmbedder`).
Classifier-free guidance replaces the caption by a learned null text: in training with probability `text_dropout`,
in sampling for the unconditional half of the doubled batch.

Both generators keep the generator contract (docs/generator-contract.md) with text in place of labels:
`forward(z, text)` and `sample(text, ...)`, text being (N, text_len, text_dim) token embeddings; `conditioning =
"text"` tells the trainer, sampler and evaluator which kind a model is.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from detok.config import FractionBelowOne, PositiveFloat, PositiveInt
from detok.generators.dit import BackboneGenerator, DiTBlock, FinalLayer, check_backbone, init_adaln_zero
from detok.generators.mar import MAR, PAPER_HEAD, MARBackboneConfig
from detok.layers import TextEmbedder, TimestepEmbedder, latents_to_tokens, sincos_pos_embed, tokens_to_latents
from detok.objectives.diffloss import DiffLossConfig
from detok.objectives.flow import FlowConfig, FlowMatching
from detok.registry import register_with_tiny

CLIP_L_TEXT = (768, 77)  # width and context of CLIP-L's text tower, the paper's text encoder


# --------------------------------------------------------------------------------------------------
# T2I-SiT
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class T2ISiTConfig:
    """SiT over [text tokens; image tokens], modulated by the timestep alone.

    `latent_channels` and `input_size` come from the tokenizer, `text_dim` and `text_len` from the text encoder (its
    width and context); the trainer fills them in. `text_dropout` is the probability of training on the null text.
    """

    latent_channels: PositiveInt = 16
    input_size: tuple[int, ...] = (16, 16)
    text_dim: PositiveInt = CLIP_L_TEXT[0]
    text_len: PositiveInt = CLIP_L_TEXT[1]
    text_dropout: FractionBelowOne = 0.1
    patch_size: PositiveInt = 1
    width: PositiveInt = 768
    depth: PositiveInt = 12
    heads: PositiveInt = 12
    mlp_ratio: PositiveFloat = 4.0
    qk_norm: bool = False
    cfg_channels: PositiveInt | None = None
    flow: FlowConfig = field(default_factory=lambda: FlowConfig(t_dist="uniform", sampler="heun", sample_steps=50))

    def __post_init__(self):
        check_backbone(self)


class T2ISiTNet(nn.Module):
    """The DiT backbone over text + image tokens: projected text tokens with learned positions, then the patch tokens
    with their sin-cos positions; adaLN-Zero blocks modulated by the timestep; the final layer reads image tokens."""

    def __init__(self, config: T2ISiTConfig):
        super().__init__()
        self.config = config
        p, d = config.patch_size, config.width
        axes = len(config.input_size)
        grid = tuple(s // p for s in config.input_size)
        self.x_embedder = nn.Linear(p**axes * config.latent_channels, d)
        self.t_embedder = TimestepEmbedder(d)
        self.text_embedder = TextEmbedder(config.text_dim, config.text_len, d)
        self.text_pos = nn.Parameter(torch.zeros(1, config.text_len, d))  # (1, L, D)
        if axes == 1:  # 1-D latent tokens: learned absolute positions, as DiTNet
            self.pos_embed = nn.Parameter(torch.zeros(1, grid[0], d))  # (1, T, D)
        else:
            self.register_buffer("pos_embed", sincos_pos_embed(d, grid)[None], persistent=False)  # (1, T, D)
        self.blocks = nn.ModuleList(
            DiTBlock(d, config.heads, config.mlp_ratio, config.qk_norm) for _ in range(config.depth)
        )
        self.final_layer = FinalLayer(d, p**axes * config.latent_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        init_adaln_zero(self)
        nn.init.normal_(self.text_pos, std=0.02)
        nn.init.normal_(self.text_embedder.null, std=0.02)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x: (N, C, *input_size) noisy latents; t: (N,) timesteps; text: (N, L, D_text) caption tokens or the null
        text. Returns the velocity (N, C, *input_size), predicted from the image tokens only."""
        cfg = self.config
        img = self.x_embedder(latents_to_tokens(x, cfg.patch_size)) + self.pos_embed  # (N, T, D)
        txt = self.text_embedder(text) + self.text_pos  # (N, L, D)
        h = torch.cat([txt, img], dim=1)  # (N, L+T, D)
        c = self.t_embedder(t)  # (N, D): the timestep alone modulates (App. C)
        for block in self.blocks:
            h = block(h, c)  # (N, L+T, D)
        h = self.final_layer(h[:, cfg.text_len :], c)  # (N, T, p^A·C): image tokens only carry the loss
        return tokens_to_latents(h, cfg.patch_size, cfg.latent_channels, cfg.input_size)  # (N, C, *input_size)


class T2ISiT(BackboneGenerator):
    """T2I-SiT (l-DeTok App. C): SiT's flow objective on a backbone that reads the caption's tokens."""

    conditioning = "text"  # forward(z, text) and sample(text): (N, text_len, text_dim) token embeddings
    config_cls = T2ISiTConfig

    def __init__(self, config: T2ISiTConfig):
        super().__init__(config, FlowMatching(config.flow), T2ISiTNet(config))

    def drop_condition(self, text: torch.Tensor) -> torch.Tensor:
        """Training-time CFG dropout: each caption replaced by the null text with probability `text_dropout`."""
        return self.net.text_embedder.drop(text, self.config.text_dropout)  # from the global RNG

    def null_condition(self, text: torch.Tensor) -> torch.Tensor:
        """The learned null text, one per caption: the unconditional branch of guidance."""
        return self.net.text_embedder.null_text(len(text)).to(text.dtype)

    def forward(self, z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Mean training loss for normalised latents z (N, C, *input_size) and caption tokens (N, L, D_text)."""
        return super().forward(z, text)

    @torch.no_grad()
    def sample(self, text: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Normalised latents (N, C, *input_size) for caption tokens (N, L, D_text); the other arguments are those of
        every generator's `sample` (docs/generator-contract.md)."""
        return super().sample(text, *args, **kwargs)


# --------------------------------------------------------------------------------------------------
# T2I-MAR
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class T2IMARConfig(MARBackboneConfig):
    """MAR whose buffer holds the caption's tokens: `text_len` buffer tokens, one per text token (77 for CLIP-L, where
    MAR's class buffer had 64)."""

    text_dim: PositiveInt = CLIP_L_TEXT[0]
    text_len: PositiveInt = CLIP_L_TEXT[1]
    text_dropout: FractionBelowOne = 0.1

    @property
    def buffer_size(self) -> int:
        return self.text_len


class T2IMAR(MAR):
    """T2I-MAR (l-DeTok App. C): MAR with the projected caption tokens in its buffer instead of the class embedding."""

    conditioning = "text"  # forward(z, text) and sample(text): (N, text_len, text_dim) token embeddings
    config_cls = T2IMARConfig

    def build_conditioning(self, dim: int) -> None:
        self.text_emb = TextEmbedder(self.config.text_dim, self.config.text_len, dim)

    def init_conditioning(self) -> None:
        nn.init.normal_(self.text_emb.null, std=0.02)  # its projection is initialised with MAR's other linears

    def drop_condition(self, text: torch.Tensor) -> torch.Tensor:
        """Training-time CFG dropout: each caption replaced by the null text with probability `text_dropout`."""
        return self.text_emb.drop(text, self.config.text_dropout)  # from the global RNG

    def condition_buffer(self, text: torch.Tensor, with_null: bool = False) -> torch.Tensor:
        """Buffer tokens (N, L, D_enc): the projected caption tokens; `with_null` appends the null text's N rows."""
        if with_null:
            text = torch.cat([text, self.text_emb.null_text(len(text)).to(text.dtype)])  # (2N, L, D_text)
        return self.text_emb(text)  # (N or 2N, L, De)

    def forward(self, z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Training loss (a scalar) for normalised latents z (N, C, *input_size) and caption tokens (N, L, D_text)."""
        return super().forward(z, text)

    @torch.no_grad()
    def sample(self, text: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Normalised latents (N, C, *input_size) for caption tokens (N, L, D_text); the other arguments are MAR's
        (guidance doubles the batch as [caption; null text])."""
        return super().sample(text, *args, **kwargs)


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------

# The offline text encoder of the FMNIST presets (text/offline.py, `text-encoder-fmnist32`): width and context.
FMNIST_TEXT = (64, 16)


def _sit_b() -> T2ISiTConfig:
    """SiT-B as the l-DeTok paper trains SiT (App. A.2: QK-Norm, SiT's SDE sampler with 250 steps)."""
    return T2ISiTConfig(qk_norm=True, flow=FlowConfig(t_dist="uniform", sampler="sde", sample_steps=250))


def _sit_fmnist32() -> T2ISiTConfig:
    return T2ISiTConfig(
        latent_channels=8,
        input_size=(8, 8),
        text_dim=FMNIST_TEXT[0],
        text_len=FMNIST_TEXT[1],
        patch_size=2,
        width=256,
        depth=6,
        heads=4,
        flow=FlowConfig(t_dist="uniform", sampler="heun", sample_steps=25),
    )


def _sit_tiny(cfg: T2ISiTConfig) -> T2ISiTConfig:
    """Tiny twin for tests: width 32, one block, a 4×4 grid, p=1, 4 text tokens of width 16, 4 sampling steps."""
    flow = dataclasses.replace(cfg.flow, sample_steps=4)
    arch = {"width": 32, "depth": 1, "heads": 2, "mlp_ratio": 2.0, "patch_size": 1}
    return dataclasses.replace(cfg, input_size=(4, 4), text_dim=16, text_len=4, flow=flow, **arch)


def _mar_b() -> T2IMARConfig:
    """MAR-B as the l-DeTok paper trains it (App. A.2): 3×1024 DiffLoss head, no MLP dropout."""
    head_depth, head_width = PAPER_HEAD
    return T2IMARConfig(mlp_dropout=0.0, diffloss=DiffLossConfig(width=head_width, depth=head_depth))


def _mar_fmnist32() -> T2IMARConfig:
    return T2IMARConfig(
        latent_channels=8,
        input_size=(8, 8),
        text_dim=FMNIST_TEXT[0],
        text_len=FMNIST_TEXT[1],
        patch_size=1,
        enc_width=192,
        enc_depth=3,
        enc_heads=4,
        dec_width=192,
        dec_depth=3,
        dec_heads=4,
        dropout=0.0,
        num_iter=16,
        diffloss=DiffLossConfig(width=256, depth=3, sample_steps=50, batch_mul=1, clip_denoised=5.0),
    )


def _mar_tiny(cfg: T2IMARConfig) -> T2IMARConfig:
    """Tiny twin for tests: width 32, one block each side, a 4×4 grid, 4 text tokens of width 16 (the buffer), 4
    steps, a one-block 32-wide head, mask ratio capped at 0.9 (as mar's twins)."""
    arch = {"enc_width": 32, "enc_depth": 1, "enc_heads": 2, "dec_width": 32, "dec_depth": 1, "dec_heads": 2}
    head = dataclasses.replace(cfg.diffloss, width=32, depth=1, sample_steps=4, batch_mul=1)
    return dataclasses.replace(
        cfg,
        input_size=(4, 4),
        patch_size=1,
        mlp_ratio=2.0,
        dropout=0.0,
        text_dim=16,
        text_len=4,
        num_iter=4,
        mask_ratio_max=0.9,
        diffloss=head,
        **arch,
    )


_register = functools.partial(register_with_tiny, kind="generator")
_register(
    "t2i-sit-b",
    _sit_b,
    "T2I-SiT-B (l-DeTok App. C, Table 7): SiT-B (768×12, 12 heads, QK-Norm, SDE sampler, 250 steps) over 77 CLIP-L "
    "text tokens (width 768) concatenated with the 256 tokens of l-DeTok's 16×16×16 latents (p=1); adaLN modulated by "
    "the timestep alone; CFG with a learned null text.",
    model_cls=T2ISiT,
    tiny=_sit_tiny,
)
_register(
    "t2i-sit-fmnist32",
    _sit_fmnist32,
    "sit-fmnist32 (width 256, 6 blocks, p=2: 16 image tokens of FMNIST-32's 8×8×8 latents) over the 16 tokens (width "
    "64) of detok's offline text encoder (text-encoder-fmnist32): 32 tokens in all; 25 Heun steps.",
    model_cls=T2ISiT,
    tiny=_sit_tiny,
)
_register(
    "t2i-mar-b",
    _mar_b,
    "T2I-MAR-B (l-DeTok App. C, Table 7): MAR-B (12 + 12 blocks, width 768, 12 heads; DiffLoss 3 × 1024, no MLP "
    "dropout) whose buffer holds the 77 CLIP-L text tokens (width 768) instead of 64 class embeddings; 16×16×16 "
    "latents (p=1); CFG with a learned null text.",
    model_cls=T2IMAR,
    tiny=_mar_tiny,
)
_register(
    "t2i-mar-fmnist32",
    _mar_fmnist32,
    "mar-fmnist32 (3 + 3 blocks, width 192, DiffLoss 3 × 256, 16 MAR steps) whose buffer holds the 16 tokens (width "
    "64) of detok's offline text encoder (text-encoder-fmnist32) instead of 8 class embeddings.",
    model_cls=T2IMAR,
    tiny=_mar_tiny,
)
