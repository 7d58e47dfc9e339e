"""MAR: masked autoregressive generation of continuous tokens with a per-token diffusion head.

Paper: "Autoregressive Image Generation without Vector Quantization" (Li et al., arXiv:2406.11838), §3.4–3.5
and App. A. The latent grid (or a 1-D token sequence) is cut into tokens; a bidirectional MAE-style
encoder–decoder sees `buffer_size` buffer tokens that carry the class embedding plus the unmasked tokens, the
decoder fills the masked slots with a learned [MASK] token, and its output at each masked token conditions the
Diffusion Loss (`objectives/diffloss.py`) that models that token's distribution. Training masks a fraction of
the tokens drawn from a truncated normal on [0.7, 1] (mean 1, std 0.25); sampling unmasks the tokens
in a random order over `num_iter` steps on a cosine schedule, with classifier-free guidance whose scale rises
linearly with the fraction of generated tokens.

Guidance intervals (`cfg_interval`, in noise level) have no meaning for MAR's token order and are ignored.

Length (~490 lines): one model family in the paper's order (config, masking schedule, backbone, training loss,
sampling, presets), within STYLE's 300–500 for a model file.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn

from detok.config import Fraction, FractionBelowOne, PositiveFloat, PositiveInt, check_fields
from detok.layers import Attention, LabelEmbedder, check_token_layout, latents_to_tokens, tokens_to_latents
from detok.objectives.diffloss import DiffLoss, DiffLossConfig
from detok.objectives.guidance import check_interval, linear_cfg_scale
from detok.progress import tqdm
from detok.registry import register_with_tiny

# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MARBackboneConfig:
    """MAR's encoder–decoder, its masking and sampling schedule, and its Diffusion Loss head: everything but what the
    buffer tokens hold (`MARConfig`: the class embedding; `T2IMARConfig` in generators/t2i.py: the caption's tokens).

    Attributes:
        dropout: MAR's `attn_dropout` and `proj_dropout` (0.1): attention probabilities and branch outputs of
            every block.
        mlp_dropout: dropout of the MLP layers (hidden activations and output); None = `dropout`, as in MAR's timm
            blocks. The l-DeTok paper disables it for every AR model (App. A.2), so its presets set 0.
        mask_ratio_min, mask_ratio_max: the training mask ratio is a normal(1, mask_ratio_std²) truncated to
            [min, max]; MAR uses [0.7, 1], so a batch is occasionally masked completely, as at the first sampling
            step. The tiny twins cap it at 0.9 so that every batch keeps a visible token (and every parameter
            gets a gradient in the contract test).
        num_iter: sampling steps; the number of tokens still masked follows a cosine schedule (64 in MAR).
        cfg_schedule: "linear" raises the guidance scale from 1 with the fraction of generated tokens (MAR's
            default, `guidance.linear_cfg_scale`) as the official code does (LTH14/mar and Jiawei-Yang/DeTok
            `models/mar.py` `sample_tokens`: the count is the tokens masked after the step, at least one, so the
            last step guides with 1 + (s − 1)(L − 1)/L, not s); "linear-full" is the same ramp reaching s on the
            last step (detok's schedule up to round 2; MAR's paper, §3.5, says only "linear"); "constant" uses the
            full scale at every step.
    """

    latent_channels: PositiveInt = 16
    input_size: tuple[int, ...] = (16, 16)
    patch_size: PositiveInt = 1
    enc_width: PositiveInt = 768
    enc_depth: PositiveInt = 12
    enc_heads: PositiveInt = 12
    dec_width: PositiveInt = 768
    dec_depth: PositiveInt = 12
    dec_heads: PositiveInt = 12
    mlp_ratio: PositiveFloat = 4.0
    dropout: FractionBelowOne = 0.1
    mlp_dropout: FractionBelowOne | None = None
    mask_ratio_min: Fraction = 0.7
    mask_ratio_max: Fraction = 1.0
    mask_ratio_std: PositiveFloat = 0.25
    num_iter: PositiveInt = 64
    cfg_schedule: Literal["linear", "linear-full", "constant"] = "linear"
    diffloss: DiffLossConfig = field(default_factory=lambda: DiffLossConfig(width=1024, depth=6))

    def __post_init__(self):
        check_fields(self)
        check_token_layout(self.input_size, self.patch_size)
        for name, width, heads in (("enc", self.enc_width, self.enc_heads), ("dec", self.dec_width, self.dec_heads)):
            if width % heads:
                raise ValueError(f"{name}_width {width} is not divisible by {name}_heads {heads}")
        if not 0.0 <= self.mask_ratio_min < self.mask_ratio_max <= 1.0 or self.mask_ratio_std <= 0:
            raise ValueError(
                "need 0 <= mask_ratio_min < mask_ratio_max <= 1 and mask_ratio_std > 0, got "
                f"{self.mask_ratio_min}, {self.mask_ratio_max}, {self.mask_ratio_std}"
            )

    @property
    def num_tokens(self) -> int:
        return math.prod(s // self.patch_size for s in self.input_size)

    @property
    def token_dim(self) -> int:
        return self.latent_channels * self.patch_size ** len(self.input_size)


@dataclass(frozen=True)
class MARConfig(MARBackboneConfig):
    """Class-conditional MAR: `buffer_size` buffer tokens prepended to the sequence, all of them carrying the class
    embedding (64 in MAR); label K is the null class of classifier-free guidance."""

    num_classes: PositiveInt = 1000
    class_dropout: FractionBelowOne = 0.1
    buffer_size: PositiveInt = 64


# --------------------------------------------------------------------------------------------------
# Masking and schedules
# --------------------------------------------------------------------------------------------------


def truncated_normal_mask_ratio(
    low: float, high: float, std: float, mean: float = 1.0, generator: torch.Generator | None = None
) -> float:
    """One draw from normal(mean, std²) truncated to [low, high], by the inverse CDF (no scipy)."""
    a = torch.special.ndtr(torch.tensor((low - mean) / std, dtype=torch.float64))
    b = torch.special.ndtr(torch.tensor((high - mean) / std, dtype=torch.float64))
    u = a + (b - a) * torch.rand((), generator=generator, dtype=torch.float64)
    return float((mean + std * torch.special.ndtri(u)).clamp(low, high))


def random_orders(num: int, length: int, device: torch.device, generator: torch.Generator | None = None):
    """An independent random permutation of range(length) per sample: (N, L)."""
    return torch.rand(num, length, device=device, generator=generator).argsort(dim=1)


def mask_from_orders(orders: torch.Tensor, num_masked: int) -> torch.Tensor:
    """(N, L) float mask with 1 = masked at the last `num_masked` positions of each order."""
    mask = torch.zeros(orders.shape, device=orders.device)
    return mask.scatter(1, orders[:, orders.shape[1] - num_masked :], 1.0)


def cosine_mask_schedule(num_tokens: int, num_iter: int) -> list[int]:
    """How many tokens are still masked after each sampling step (MAR §3.5: ⌊L·cos(π/2·(k+1)/K)⌋).

    Every step but the last keeps at least one token masked and, where it can, unmasks at least one; the last
    step unmasks the rest, so the list ends with 0.
    """
    remaining, counts = num_tokens, []
    for step in range(num_iter):
        if step == num_iter - 1:
            remaining = 0
        else:
            target = math.floor(num_tokens * math.cos(math.pi / 2 * (step + 1) / num_iter))
            remaining = max(1, min(remaining - 1, target))
        counts.append(remaining)
    return counts


# --------------------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------------------


class Block(nn.Module):
    """Pre-norm ViT block (LayerNorm → attention, LayerNorm → GELU MLP), dropping out where MAR's timm blocks do:
    attention probabilities, both branch outputs and the MLP's hidden activations."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float, mlp_dropout: float | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)
        self.mlp_drop = nn.Dropout(dropout if mlp_dropout is None else mlp_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))  # (N, T, D)
        fc1, act, fc2 = self.mlp
        h = self.mlp_drop(act(fc1(self.norm2(x))))  # (N, T, hidden)
        return x + self.mlp_drop(fc2(h))  # (N, T, D)


class MAR(nn.Module):
    """Masked autoregressive generator: bidirectional encoder–decoder over buffer + tokens, DiffLoss head.

    What the buffer holds is reached through `build_conditioning`, `init_conditioning`, `drop_condition` and
    `condition_buffer` only, so that the text-conditioned MAR (generators/t2i.py) shares the rest.
    """

    kind = "generator"
    latent_kind = "continuous"  # normalised continuous latents (grids or 1-D sequences), not code indices
    conditioning = "class"  # what `forward` and `sample` are conditioned on: class labels (N,)
    config_cls = MARConfig

    def __init__(self, config: MARConfig):
        super().__init__()
        self.config = config
        t, b, de, dd = config.num_tokens, config.buffer_size, config.enc_width, config.dec_width

        # Encoder: token projection, conditioning buffer, learned positions over buffer + tokens
        self.build_conditioning(de)
        self.z_proj = nn.Linear(config.token_dim, de)
        self.z_proj_ln = nn.LayerNorm(de, eps=1e-6)
        self.enc_pos = nn.Parameter(torch.zeros(1, b + t, de))
        self.enc_blocks = nn.ModuleList(
            Block(de, config.enc_heads, config.mlp_ratio, config.dropout, config.mlp_dropout)
            for _ in range(config.enc_depth)
        )
        self.enc_norm = nn.LayerNorm(de, eps=1e-6)

        # Decoder: [MASK] tokens fill the masked slots; a per-token position for the diffusion head
        self.dec_embed = nn.Linear(de, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.dec_pos = nn.Parameter(torch.zeros(1, b + t, dd))
        self.dec_blocks = nn.ModuleList(
            Block(dd, config.dec_heads, config.mlp_ratio, config.dropout, config.mlp_dropout)
            for _ in range(config.dec_depth)
        )
        self.dec_norm = nn.LayerNorm(dd, eps=1e-6)
        self.diffusion_pos = nn.Parameter(torch.zeros(1, t, dd))

        self.diffloss = DiffLoss(config.token_dim, dd, config.diffloss)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def init_module(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

        # the DiffLoss head owns its initialisation
        for name, child in self.named_children():
            if name != "diffloss":
                child.apply(init_module)
        self.init_conditioning()
        for param in (self.enc_pos, self.dec_pos, self.diffusion_pos, self.mask_token):
            nn.init.normal_(param, std=0.02)

    # ----------------------------------------------------------------------------------------------
    # Conditioning: the class embedding in every buffer token
    # ----------------------------------------------------------------------------------------------

    def build_conditioning(self, dim: int) -> None:
        """Create the modules that fill the buffer (here the class table, with the null class as its last row)."""
        self.class_emb = LabelEmbedder(self.config.num_classes, dim)

    def init_conditioning(self) -> None:
        nn.init.normal_(self.class_emb.table.weight, std=0.02)

    def drop_condition(self, labels: torch.Tensor) -> torch.Tensor:
        """Training-time CFG dropout: each label replaced by the null class with probability `class_dropout`."""
        return self.class_emb.drop(labels, self.config.class_dropout)  # from the global RNG

    def condition_buffer(self, labels: torch.Tensor, with_null: bool = False) -> torch.Tensor:
        """Buffer tokens (N, B, D_enc): the class embedding of each label in every buffer token; `with_null` appends
        the null class's N rows ([class; null], one embedding call: the doubled batch of guidance)."""
        if with_null:
            labels = torch.cat([labels, torch.full_like(labels, self.config.num_classes)])
        return self.class_emb(labels)[:, None].expand(-1, self.config.buffer_size, -1)  # (N or 2N, B, De)

    def position_grids(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """Learned positions on the token grid, by state-dict name: (leading buffer tokens, grid); `init_from` at
        another latent size (MAR-L 256 → 512, l-DeTok App. A.3) resamples them (training/init_from.py)."""
        cfg = self.config
        grid, b = tuple(s // cfg.patch_size for s in cfg.input_size), cfg.buffer_size
        return {"enc_pos": (b, grid), "dec_pos": (b, grid), "diffusion_pos": (0, grid)}

    # ----------------------------------------------------------------------------------------------
    # Stages
    # ----------------------------------------------------------------------------------------------

    def forward_encoder(self, x: torch.Tensor, mask: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
        """Encode the buffer and the visible tokens.

        Args:
            x: tokens (N, T, C·p^A) in raster order.
            mask: (N, T), 1 = masked; every sample masks the same number of tokens.
            buffer: (N, B, D_enc) buffer tokens from `condition_buffer` (class or null-class embeddings).

        Returns:
            (N, B + T_keep, D_enc): the buffer followed by the visible tokens in raster order.
        """
        n, b = x.shape[0], self.config.buffer_size
        h = self.z_proj(x)  # (N, T, De)
        h = self.z_proj_ln(torch.cat([buffer, h], dim=1) + self.enc_pos)  # (N, B+T, De)
        keep = torch.cat([mask.new_zeros(n, b), mask], dim=1) == 0  # (N, B+T)
        h = h[keep].view(n, -1, h.shape[-1])  # (N, B+T_keep, De)
        for block in self.enc_blocks:
            h = block(h)  # (N, B+T_keep, De)
        return self.enc_norm(h)  # (N, B+T_keep, De)

    def forward_decoder(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Decode encoder outputs (N, B + T_keep, D_enc) into per-token conditions (N, T, D_dec).

        Masked slots (mask: 1 = masked) start as the [MASK] token; the buffer is dropped at the end and the
        diffusion-position embedding added, so each token's condition knows where it sits.
        """
        n, b = mask.shape[0], self.config.buffer_size
        h = self.dec_embed(h)  # (N, B+T_keep, Dd)
        keep = torch.cat([mask.new_zeros(n, b), mask], dim=1) == 0  # (N, B+T)
        full = self.mask_token.to(h.dtype).expand(n, keep.shape[1], -1)  # (N, B+T, Dd)
        h = full.masked_scatter(keep[..., None], h) + self.dec_pos  # (N, B+T, Dd)
        for block in self.dec_blocks:
            h = block(h)  # (N, B+T, Dd)
        h = self.dec_norm(h)  # (N, B+T, Dd)
        return h[:, b:] + self.diffusion_pos  # (N, T, Dd)

    def forward_loss(self, cond: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Diffusion Loss averaged over the masked tokens.

        Args:
            cond: decoder outputs (N, T, D_dec).
            target: clean tokens (N, T, C·p^A).
            mask: (N, T), 1 = masked; only masked tokens are predicted (the mean over them is MAR's loss).
        """
        keep = mask.bool()  # (N, T)
        return self.diffloss(target[keep], cond[keep], None)  # (M, C·p^A), (M, Dd) → scalar

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training loss (a scalar) for normalised latents z (N, C, *input_size) and labels (N,) in [0, K)."""
        cfg = self.config
        x = latents_to_tokens(z, cfg.patch_size)  # (N, T, C·p^A)
        n, t = x.shape[:2]
        ratio = truncated_normal_mask_ratio(cfg.mask_ratio_min, cfg.mask_ratio_max, cfg.mask_ratio_std)  # per batch
        mask = mask_from_orders(random_orders(n, t, x.device), math.ceil(t * ratio))  # (N, T), 1 = masked
        if self.training:
            labels = self.drop_condition(labels)
        h = self.forward_encoder(x, mask, self.condition_buffer(labels))  # (N, B+T_keep, De)
        cond = self.forward_decoder(h, mask)  # (N, T, Dd)
        return self.forward_loss(cond, x, mask)

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
    ) -> torch.Tensor:
        """Normalised latents (N, C, *input_size) for labels (N,); see docs/generator-contract.md.

        Each sample unmasks its tokens in a random order drawn from `generator`, `num_iter` steps on the cosine
        schedule; the tokens unmasked at a step are drawn by the DiffLoss head with `temperature`. Guidance runs a
        doubled [class; null] batch whenever cfg_scale != 1, with the per-step scale of `cfg_schedule` (linear:
        1 + (s − 1)·generated/T, counting the tokens generated once the step is done but leaving one ungenerated
        on the last step, as the official MAR does). `cfg_interval`
        must be the whole range (0, 1): MAR's steps have no noise level to restrict guidance to.
        """
        if check_interval(cfg_interval) != (0.0, 1.0):
            raise ValueError(f"a guidance interval needs noise levels, which {type(self).__name__}'s steps lack")
        cfg = self.config
        device = self.mask_token.device
        labels = labels.to(device)
        n, t = len(labels), cfg.num_tokens
        guided = cfg_scale != 1.0

        tokens = torch.zeros(n, t, cfg.token_dim, device=device)  # (N, T, C·p^A)
        mask = torch.ones(n, t, device=device)  # (N, T), 1 = still to generate
        orders = random_orders(n, t, device, generator)  # (N, T)
        buffer = self.condition_buffer(labels, with_null=guided)  # (N or 2N, B, De): [cond; null] when guided

        for remaining in tqdm(cosine_mask_schedule(t, cfg.num_iter), disable=not progress, desc="MAR"):
            next_mask = mask_from_orders(orders, remaining)  # (N, T)
            to_pred = mask.bool() & ~next_mask.bool()  # (N, T)
            if not to_pred.any():  # more steps than tokens: nothing new to unmask
                continue
            x_in, m_in = (torch.cat([tokens, tokens]), torch.cat([mask, mask])) if guided else (tokens, mask)
            cond = self.forward_decoder(self.forward_encoder(x_in, m_in, buffer), m_in)  # (N or 2N, T, Dd)
            scale = cfg_scale
            if cfg.cfg_schedule == "linear":  # the official count: masked after this step, at least one
                scale = linear_cfg_scale(cfg_scale, t - max(remaining, 1), t)
            elif cfg.cfg_schedule == "linear-full":
                scale = linear_cfg_scale(cfg_scale, t - remaining, t)
            if guided and scale != 1.0:
                cond_rows = torch.cat([cond[:n][to_pred], cond[n:][to_pred]])  # (2M, Dd): [class; null]
            else:
                cond_rows = cond[:n][to_pred]  # (M, Dd)
            new = self.diffloss.sample(cond_rows, temperature=temperature, cfg_scale=scale, generator=generator)
            tokens[to_pred] = new.to(tokens.dtype)  # (M, C·p^A) written in place
            mask = next_mask
        return tokens_to_latents(tokens, cfg.patch_size, cfg.latent_channels, cfg.input_size)


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------

# encoder = decoder blocks, width, heads, and the MAR repository's DiffLoss depth × width (MAR Table 4 / App. A)
_SIZES = {"b": (12, 768, 12, 6, 1024), "l": (16, 1024, 16, 8, 1280), "h": (20, 1280, 16, 12, 1536)}
PAPER_HEAD = (3, 1024)  # l-DeTok App. A.2: "a 3-layer, 1024-channel MLP head" for every AR model


def _paper(size: str, repo: bool = False) -> MARConfig:
    """MAR at `size`: the l-DeTok paper's recipe (3×1024 DiffLoss, no MLP dropout), or with `repo` the MAR
    repository's (its per-size head, dropout 0.1 everywhere)."""
    depth, width, heads, head_depth, head_width = _SIZES[size]
    if not repo:
        head_depth, head_width = PAPER_HEAD
    return MARConfig(
        mlp_dropout=None if repo else 0.0,
        latent_channels=16,
        input_size=(16, 16),
        num_classes=1000,
        patch_size=1,
        enc_width=width,
        enc_depth=depth,
        enc_heads=heads,
        dec_width=width,
        dec_depth=depth,
        dec_heads=heads,
        diffloss=DiffLossConfig(width=head_width, depth=head_depth),
    )


def _tiny(cfg: MARConfig) -> MARConfig:
    """Tiny twin for tests: width 32, one block each side, a 4×4 grid, 4 steps, a one-block 32-wide head, and a
    mask ratio capped at 0.9 (at most 15 of 16 tokens masked, so the token projection always gets a gradient)."""
    arch = {"enc_width": 32, "enc_depth": 1, "enc_heads": 2, "dec_width": 32, "dec_depth": 1, "dec_heads": 2}
    head = dataclasses.replace(cfg.diffloss, width=32, depth=1, sample_steps=4, batch_mul=1)
    return dataclasses.replace(
        cfg,
        input_size=(4, 4),
        patch_size=1,
        mlp_ratio=2.0,
        dropout=0.0,
        buffer_size=2,
        num_iter=4,
        mask_ratio_max=0.9,
        diffloss=head,
        **arch,
    )


_register_pair = functools.partial(register_with_tiny, kind="generator", model_cls=MAR, tiny=_tiny)


for _size, (_d, _w, _h, _hd, _hw) in _SIZES.items():
    _register_pair(
        f"mar-{_size}",
        lambda s=_size: _paper(s),
        f"MAR-{_size.upper()} as the l-DeTok paper trains it (App. A.2): encoder and decoder of {_d} blocks each, "
        f"width {_w}, {_h} heads, buffer 64; DiffLoss 3 blocks × 1024 and no dropout in the MLP layers (attention "
        "dropout 0.1 as MAR); on l-DeTok's 256-px latents (16×16×16, so p=1), 1000 classes; 64 AR steps, 100 "
        f"denoising steps. The MAR repository's head ({_hd} × {_hw}) and dropout: `mar-{_size}-repo`.",
    )
    _register_pair(
        f"mar-{_size}-repo",
        lambda s=_size: _paper(s, repo=True),
        f"MAR-{_size.upper()} as the MAR repository configures it: DiffLoss {_hd} blocks × {_hw}, dropout 0.1 in "
        "attention, branch outputs and MLP layers; otherwise as `mar-{_size}`.".replace("{_size}", _size),
    )


def _fmnist32() -> MARConfig:
    return MARConfig(
        latent_channels=8,
        input_size=(8, 8),
        num_classes=10,
        patch_size=1,
        enc_width=192,
        enc_depth=3,
        enc_heads=4,
        dec_width=192,
        dec_depth=3,
        dec_heads=4,
        dropout=0.0,
        buffer_size=8,
        num_iter=16,
        diffloss=DiffLossConfig(width=256, depth=3, sample_steps=50, batch_mul=1, clip_denoised=5.0),
    )


_register_pair(
    "mar-fmnist32",
    _fmnist32,
    "FMNIST-32 latents (8×8×8 from detok-fmnist32, 64 tokens of 8 values), 10 classes: encoder and decoder of 3 "
    "blocks, width 192, 4 heads, buffer 8, DiffLoss 3 blocks × 256 with batch_mul 1 (the head is most of a step's "
    "cost: with batch_mul 4 it sees ~14k rows per batch of 64) and 50 sampling steps, 16 MAR steps. Measured on 2 "
    "CPU threads: a training step at batch 64 takes ~0.52 s (~120 img/s, so 10 minutes ≈ 70k images, about one "
    "epoch of Fashion-MNIST), and one sampling batch of 64 with guidance ~12.5 s (buffer 16 and 32 steps made "
    "it ~5× slower). Sampling clamps x̂_0 of the head to ±5 (normalised latents): unclamped, a head trained "
    "for minutes samples noise (see DiffLossConfig.clip_denoised).",
)
