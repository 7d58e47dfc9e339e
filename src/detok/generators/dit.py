"""DiT and SiT: a transformer with adaLN-Zero conditioning, trained as a DDPM or as a flow.

Papers: "Scalable Diffusion Models with Transformers" (Peebles & Xie, arXiv:2212.09748) for the backbone and
its DDPM objective (ε-prediction with learned variances, §3.2); "SiT: Exploring Flow and Diffusion-based
Generative Models with Scalable Interpolant Transformers" (Ma et al., arXiv:2401.08740) for the same backbone
trained on the linear interpolant with velocity prediction.

The backbone patchifies the latent grid (or a 1-D token sequence), adds a fixed sin-cos position embedding and
runs blocks whose LayerNorms are modulated by the sum of timestep and class embeddings (adaLN-Zero: the
residual gates start at zero, so every block starts as the identity). The objectives (`objectives/diffusion.py`,
`objectives/flow.py`) own noising, losses and samplers; this file only wires them to the backbone and to
classifier-free guidance.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from detok.config import FractionBelowOne, PositiveFloat, PositiveInt, check_fields
from detok.layers import (
    Attention,
    LabelEmbedder,
    TimestepEmbedder,
    check_token_layout,
    latents_to_tokens,
    sincos_pos_embed,
    tokens_to_latents,
)
from detok.objectives.diffusion import DDPMConfig, GaussianDiffusion
from detok.objectives.flow import FlowConfig, FlowMatching
from detok.objectives.guidance import guided_model_fn
from detok.registry import register_with_tiny

# --------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------


def check_backbone(cfg) -> None:
    """The checks of a DiT-style backbone config (DiT, SiT, T2I-SiT): its fields, then the token grid, heads and
    sin-cos widths, and `cfg_channels`."""
    check_fields(cfg)
    check_token_layout(cfg.input_size, cfg.patch_size)
    if cfg.width % cfg.heads:
        raise ValueError(f"width {cfg.width} is not divisible by {cfg.heads} heads")
    if len(cfg.input_size) == 2 and cfg.width % 4:
        raise ValueError(f"the 2-D sin-cos embedding needs a width divisible by 4, got {cfg.width}")
    if cfg.cfg_channels is not None and not 1 <= cfg.cfg_channels <= cfg.latent_channels:
        raise ValueError(f"cfg_channels must be None or in [1, {cfg.latent_channels}], got {cfg.cfg_channels}")


@dataclass(frozen=True)
class DiTBackboneConfig:
    """Backbone fields shared by DiT and SiT (the generator contract's first four, then the architecture).

    `cfg_channels` guides only the leading channels of the prediction (None = all latent channels); the original
    DiT/SiT sampling code guided 3, kept here as a named option that is off by default.
    """

    latent_channels: PositiveInt = 16
    input_size: tuple[int, ...] = (16, 16)
    num_classes: PositiveInt = 1000
    class_dropout: FractionBelowOne = 0.1
    patch_size: PositiveInt = 1
    width: PositiveInt = 1152
    depth: PositiveInt = 28
    heads: PositiveInt = 16
    mlp_ratio: PositiveFloat = 4.0
    qk_norm: bool = False
    cfg_channels: PositiveInt | None = None

    def __post_init__(self):
        check_backbone(self)


@dataclass(frozen=True)
class DiTConfig(DiTBackboneConfig):
    """DiT: the backbone trained as a DDPM (ε-prediction, learned variances, 1000 linear-β steps)."""

    diffusion: DDPMConfig = field(default_factory=DDPMConfig)


@dataclass(frozen=True)
class SiTConfig(DiTBackboneConfig):
    """SiT: the backbone trained on the linear interpolant with velocity prediction.

    The default sampler is a deterministic Heun ODE with 50 steps (SiT's best FID used an SDE sampler with 250
    steps; `flow.sampler="sde"` restores it). The ODE ignores `temperature`.
    """

    flow: FlowConfig = field(default_factory=lambda: FlowConfig(t_dist="uniform", sampler="heun", sample_steps=50))


# --------------------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x·(1 + scale) + shift, with per-sample (N, D) modulation broadcast over tokens."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning (§3.2): LayerNorm → modulate → attention/MLP → gate."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qk_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)  # (N, D) each
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))  # (N, T, D)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (N, T, D)


class FinalLayer(nn.Module):
    """Final adaLN (shift and scale, no gate) and a linear projection to patch values."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)  # (N, D) each
        return self.linear(modulate(self.norm(x), shift, scale))  # (N, T, out_dim)


def init_adaln_zero(net: nn.Module) -> None:
    """DiT's initialisation of an adaLN-Zero network (`x_embedder`, `t_embedder`, `y_embedder`, `blocks` with
    `adaLN_modulation`, `final_layer`): xavier linears, N(0, 0.02) embeddings, and zeroed modulation and output
    so that every block starts as the identity and the prediction starts at zero."""

    def init_linear(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    net.apply(init_linear)
    if getattr(net, "y_embedder", None) is not None:  # the T2I backbone has a text embedder instead (generators/t2i.py)
        nn.init.normal_(net.y_embedder.table.weight, std=0.02)
    nn.init.normal_(net.t_embedder.mlp[0].weight, std=0.02)
    nn.init.normal_(net.t_embedder.mlp[2].weight, std=0.02)
    for m in [*(b.adaLN_modulation[-1] for b in net.blocks), net.final_layer.adaLN_modulation[-1]]:
        nn.init.zeros_(m.weight)
        nn.init.zeros_(m.bias)
    nn.init.zeros_(net.final_layer.linear.weight)
    nn.init.zeros_(net.final_layer.linear.bias)


class DiTNet(nn.Module):
    """The DiT backbone: patch embedding + sin-cos positions, adaLN-Zero blocks, final adaLN layer, unpatchify."""

    def __init__(self, config: DiTBackboneConfig, out_channels: int):
        super().__init__()
        self.config = config
        self.out_channels = out_channels
        self.num_classes = config.num_classes
        p, d = config.patch_size, config.width
        axes = len(config.input_size)
        grid = tuple(s // p for s in config.input_size)
        self.x_embedder = nn.Linear(p**axes * config.latent_channels, d)
        self.t_embedder = TimestepEmbedder(d)
        self.y_embedder = LabelEmbedder(config.num_classes, d)
        if axes == 1:  # 1-D tokens (l-DeTok Sec. 5): learned absolute positions
            self.pos_embed = nn.Parameter(torch.zeros(1, grid[0], d))  # (1, T, D)
        else:
            self.register_buffer("pos_embed", sincos_pos_embed(d, grid)[None], persistent=False)  # (1, T, D)
        self.blocks = nn.ModuleList(
            DiTBlock(d, config.heads, config.mlp_ratio, config.qk_norm) for _ in range(config.depth)
        )
        self.final_layer = FinalLayer(d, p**axes * out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        init_adaln_zero(self)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (N, C, *input_size) noisy latents; t: (N,) timesteps in the objective's units; y: (N,) labels,
        `num_classes` = null. Returns (N, C_out, *input_size)."""
        cfg = self.config
        h = self.x_embedder(latents_to_tokens(x, cfg.patch_size)) + self.pos_embed  # (N, T, D)
        c = self.t_embedder(t) + self.y_embedder(y)  # (N, D)
        for block in self.blocks:
            h = block(h, c)  # (N, T, D)
        h = self.final_layer(h, c)  # (N, T, p^A·C_out)
        return tokens_to_latents(h, cfg.patch_size, self.out_channels, cfg.input_size)  # (N, C_out, *input_size)


# --------------------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------------------


class BackboneGenerator(nn.Module):
    """Plumbing shared by DiT, SiT and LightningDiT: label dropout, the training loss and guided sampling through
    the objective. `net(x, t, y)` is the backbone; it owns `y_embedder` (the class table) and `pos_embed`.

    The conditioning is reached through `drop_condition` and `null_condition` only, so that the text-conditioned
    SiT (generators/t2i.py) shares the rest.
    """

    kind = "generator"
    latent_kind = "continuous"  # normalised continuous latents (grids or 1-D sequences), not code indices
    conditioning = "class"  # what `forward` and `sample` are conditioned on: class labels (N,)

    def __init__(self, config, objective: GaussianDiffusion | FlowMatching, net: nn.Module):
        super().__init__()
        self.config = config
        self.objective = objective
        self.net = net

    def drop_condition(self, labels: torch.Tensor) -> torch.Tensor:
        """Training-time CFG dropout: each label replaced by the null class with probability `class_dropout`."""
        return self.net.y_embedder.drop(labels, self.config.class_dropout)  # from the global RNG

    def null_condition(self, labels: torch.Tensor) -> torch.Tensor:
        """The null class for each label: the unconditional branch of guidance."""
        return torch.full_like(labels, self.config.num_classes)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean training loss for normalised latents z (N, C, *input_size) and labels (N,) in [0, K)."""
        if self.training:
            labels = self.drop_condition(labels)
        return self.objective.training_loss(lambda x, t: self.net(x, t, labels), z).mean()

    def position_grids(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """Learned positions, by state-dict name: (leading tokens, grid), resampled by `init_from` at another latent
        size; only 1-D token sequences have them (a grid's sin-cos and RoPE tables are buffers, rebuilt)."""
        pos = self.net.pos_embed
        return {"net.pos_embed": (0, (pos.shape[1],))} if isinstance(pos, nn.Parameter) else {}

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor,
        cfg_scale: float = 1.0,
        cfg_interval: tuple[float, float] | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Normalised latents (N, C, *input_size) for labels (N,); see docs/generator-contract.md.

        `cfg_interval=None` uses the config's `cfg_interval` where the config has one (LightningDiT), else
        guidance at every noise level.
        """
        cfg = self.config
        device = self.net.pos_embed.device
        labels = labels.to(device)
        if cfg_interval is None:
            cfg_interval = getattr(cfg, "cfg_interval", (0.0, 1.0))
        noise = torch.randn(len(labels), cfg.latent_channels, *cfg.input_size, generator=generator, device=device)
        channels = cfg.latent_channels if cfg.cfg_channels is None else cfg.cfg_channels
        model_fn = guided_model_fn(
            self.net, labels, self.null_condition(labels), cfg_scale, cfg_interval, self.objective.noise_level, channels
        )
        return self.objective.sample(model_fn, noise, temperature=temperature, generator=generator, progress=progress)


class DiT(BackboneGenerator):
    """DiT (Peebles & Xie, 2023): the adaLN-Zero transformer as a DDPM ε-predictor with learned variances."""

    config_cls = DiTConfig

    def __init__(self, config: DiTConfig):
        diffusion = GaussianDiffusion(config.diffusion)
        super().__init__(config, diffusion, DiTNet(config, config.latent_channels * diffusion.out_mult))


class SiT(BackboneGenerator):
    """SiT (Ma et al., 2024): the same backbone as a velocity field on the linear interpolant."""

    config_cls = SiTConfig

    def __init__(self, config: SiTConfig):
        super().__init__(config, FlowMatching(config.flow), DiTNet(config, config.latent_channels))


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------

# width, depth, heads (Table 1 of the DiT paper)
_SIZES = {"s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16), "xl": (1152, 28, 16)}
_FAMILIES = {"dit": (DiT, DiTConfig), "sit": (SiT, SiTConfig)}
_TITLES = {"dit": "DiT", "sit": "SiT"}


def _paper(cls: type, size: str) -> DiTBackboneConfig:
    """The l-DeTok paper's setting (App. A.2): QK-Norm in SiT "to stabilize training", and the original
    implementations' default samplers with 250 steps (DiT: 250 respaced DDPM steps; SiT: its SDE sampler).
    SiT's 50-step Heun ODE stays reachable as `--set model.flow.sampler=heun model.flow.sample_steps=50`."""
    width, depth, heads = _SIZES[size]
    cfg = cls(
        latent_channels=16,
        input_size=(16, 16),
        num_classes=1000,
        patch_size=1,
        width=width,
        depth=depth,
        heads=heads,
    )
    if isinstance(cfg, SiTConfig):
        cfg = dataclasses.replace(
            cfg, qk_norm=True, flow=dataclasses.replace(cfg.flow, sampler="sde", sample_steps=250)
        )
    return cfg


def _fast_sampling(cfg: DiTBackboneConfig, steps: int) -> DiTBackboneConfig:
    """`cfg` with its objective's sampler shortened to `steps`."""
    if isinstance(cfg, DiTConfig):
        return dataclasses.replace(cfg, diffusion=dataclasses.replace(cfg.diffusion, sample_steps=steps))
    return dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, sample_steps=steps))


def _tiny(cfg: DiTBackboneConfig) -> DiTBackboneConfig:
    """Tiny twin for tests: width 32, one block, a 4×4 grid, p=1, 4 sampling steps."""
    small = dataclasses.replace(cfg, input_size=(4, 4), patch_size=1, width=32, depth=1, heads=2, mlp_ratio=2.0)
    return _fast_sampling(small, 4)


_register_pair = functools.partial(register_with_tiny, kind="generator", tiny=_tiny)


for _family, (_cls, _cfg_cls) in _FAMILIES.items():
    for _size, (_w, _d, _h) in _SIZES.items():
        _register_pair(
            f"{_family}-{_size}",
            lambda c=_cfg_cls, s=_size: _paper(c, s),
            f"{_TITLES[_family]}-{_size.upper()} ({_w}×{_d}, {_h} heads) on "
            "l-DeTok's 256-px latents: 16×16×16, so p=1 (DiT's /2 patches were for 32×32 SD-VAE latents), "
            "1000 classes; 250 sampling steps"
            + ("; QK-Norm and the SDE sampler, as the l-DeTok paper uses SiT (App. A.2)." if _family == "sit" else "."),
            model_cls=_cls,
        )


def _fmnist32(cls: type) -> DiTBackboneConfig:
    cfg = cls(
        latent_channels=8,
        input_size=(8, 8),
        num_classes=10,
        patch_size=2,
        width=256,
        depth=6,
        heads=4,
    )
    return _fast_sampling(cfg, 100 if cls is DiTConfig else 25)


_FMNIST_DOC = (
    "FMNIST-32 latents (8×8×8 from detok-fmnist32), 10 classes: p=2, i.e. 16 tokens of 2·2·8 values (p=1's 64 "
    "tokens made a step ~4× slower), width 256, 6 blocks, 4 heads, 7.4M parameters. "
    "A training step at batch 64 on 2 CPU threads took {ms} ms ({ips} img/s), so the FMNIST recipe's 96,000 "
    "images take ~{mins} minutes, inside the 5–10 minute budget (width 192 took ~4). {steps}"
)
_register_pair(
    "dit-fmnist32",
    lambda: _fmnist32(DiTConfig),
    _FMNIST_DOC.format(ms="240–290", ips="220–265", mins="6–7", steps="Samples with 100 respaced DDPM steps."),
    model_cls=DiT,
)
_register_pair(
    "sit-fmnist32",
    lambda: _fmnist32(SiTConfig),
    _FMNIST_DOC.format(
        ms="245–300", ips="215–260", mins="6–7.5", steps="Samples with 25 Heun steps (49 network evaluations)."
    ),
    model_cls=SiT,
)
