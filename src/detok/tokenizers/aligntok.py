"""AlignTok: a pretrained visual encoder aligned, in three stages, into a tokenizer for latent diffusion.

Paper: "Aligning Visual Foundation Encoders to Tokenizers for Diffusion Models" (AlignTok; arXiv:2509.25162; no
public code). The tokenizer is a pretrained encoder E (DINOv2-L/14 at paper size, images resized to 224 px → a
16×16 grid), a two-layer MLP adapter A from its width to a C = 32-channel latent, and VA-VAE's CNN decoder D.
Each stage is its own run, started from the previous stage's model (`init_from`), chosen by `model.stage`:

1. Latent alignment — E frozen; A and D trained on reconstruction (Eq. 1: L1 + perceptual + GAN from 5K steps), no KL.
2. Perceptual alignment — everything trained; the loss adds λ·‖z − z_prev‖² (Eq. 4–5; λ = 1), z_prev the latent of
   the *stage-1* encoder + adapter (kept frozen: built from the `init_from` weights as this run's teacher). The term
   is rescaled by the ratio of gradient norms at the encoder's last layer, as VA-VAE's VF loss (App. A), so its
   normalisation (we average over latent elements) does not matter. lr 1e-5; EMA on.
3. Decoder refinement — E and A frozen, D trained on reconstruction.

Paper lengths: 6 / 11 / 5 epochs (120K / 220K / 100K steps). What the extracted text leaves unreadable (the symbols of
the adversarial and preservation weights, the adapter's hidden width) is a config field here: `preservation_weight`
(1.0, the main text's "moderate weight of 1"), `adapter_hidden` (the encoder's width).

Loading: a saved AlignTok records its encoder's architecture (`encoder_arch`) and holds the encoder's weights, so it
loads without the encoder spec's source (the teacher folder, the timm weights file; timm itself is still needed for a
timm encoder). Training — every stage, and resuming one — builds the encoder from the spec, so needs the source.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from detok.config import ConfigError, NonNegativeFloat, PositiveInt, check_fields
from detok.losses.semantic import square_side
from detok.registry import register_with_tiny
from detok.teachers.base import Teacher
from detok.teachers.specs import build_teacher
from detok.tokenizers.base import LatentLayout, Tokenizer, check_tokenizer_config
from detok.tokenizers.cnn import CNNDecoder

STAGES = {1: "latent alignment", 2: "perceptual alignment", 3: "decoder refinement"}
IMAGENET_TRAIN_IMAGES = 1_281_167


@dataclass(frozen=True)
class AlignTokConfig:
    """A pretrained encoder, its adapter to a `latent_channels` latent, a CNN decoder, and the training stage.

    Attributes:
        encoder: teacher spec of the pretrained encoder (`detok.teachers.specs.build_teacher`): timm:MODEL@SIZE:WEIGHTS
            at paper size, the offline MAE teacher at FMNIST size, `random:PRESET` for an uninitialised one.
        encoder_dim: the encoder's feature width (1024 for DINOv2-L), checked when it is built.
        adapter_hidden: hidden width of the two-layer MLP adapter.
        base_channels, channel_mults, res_blocks, mid_attention: the CNN decoder (LDM / VA-VAE names); it up-samples
            the encoder's grid by 2^(len(channel_mults) − 1) to the image size.
        stage: 1, 2 or 3 (module docstring); 2 and 3 start from the previous stage's run (`init_from`).
        preservation_weight: λ of the semantic-preservation term (stage 2).
        preservation_adaptive: rescale it by the gradient-norm ratio at the encoder's last layer (the paper's).
        encoder_arch: filled in when the model is built: the encoder's architecture as JSON
            (`Teacher.architecture`), so that a saved AlignTok loads without the encoder spec's source.
    """

    image_size: PositiveInt = 256
    channels: PositiveInt = 3
    encoder: str = "timm:vit_large_patch14_dinov2.lvd142m@224:weights/dinov2-vitl14.safetensors"
    encoder_dim: PositiveInt = 1024
    latent_channels: PositiveInt = 32
    adapter_hidden: PositiveInt = 1024
    base_channels: PositiveInt = 128
    channel_mults: tuple[PositiveInt, ...] = (1, 1, 2, 2, 4)
    res_blocks: PositiveInt = 2
    mid_attention: bool = True
    stage: Literal[1, 2, 3] = 1
    preservation_weight: NonNegativeFloat = 1.0
    preservation_adaptive: bool = True
    latent_mean: tuple[float, ...] | None = None
    latent_std: tuple[float, ...] | None = None
    encoder_arch: str | None = None

    def __post_init__(self):
        check_tokenizer_config(self)
        check_fields(self)
        if self.image_size % self.upsampling:
            raise ConfigError("channel_mults", f"up-sample by {self.upsampling}, not a divisor of {self.image_size}")

    @property
    def upsampling(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.upsampling

    @property
    def requires_init_from(self) -> str | None:
        """Why this run needs `init_from` (stages 2 and 3 continue the previous stage), or None."""
        if self.stage == 1:
            return None
        return (
            f"AlignTok stage {self.stage} ({STAGES[self.stage]}) continues stage {self.stage - 1}: set "
            f"init_from=<the stage-{self.stage - 1} run>"
        )


class Adapter(nn.Sequential):
    """Two-layer MLP from the encoder's width to the latent channels (AlignTok Eq. 3), applied per token."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class StageOneLatents(Teacher):
    """The frozen stage-1 encoder + adapter: z_prev (N, h·w, C) of the semantic-preservation loss."""

    def __init__(self, encoder: Teacher, adapter: nn.Module):
        super().__init__()
        self.encoder, self.adapter = encoder, adapter
        self.feature_dim = adapter[-1].out_features

    def grid(self) -> tuple[int, int]:
        return self.encoder.grid()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.encoder.features(x))  # (N, T, C)


class AlignTok(Tokenizer):
    """Pretrained encoder → adapter → C-channel latent grid → CNN decoder; frozen parts follow `stage`."""

    config_cls = AlignTokConfig
    non_architecture_fields = (
        "encoder",
        "encoder_arch",
        "stage",
        "preservation_weight",
        "preservation_adaptive",
        "latent_mean",
        "latent_std",
    )
    # App. A "Tokenizer", every stage: batch 64; one learning rate a stage and no schedule or warm-up stated (constant,
    # as VA-VAE's LDM-based training it follows); Eq. 1's L1 + perceptual (LPIPS, no ConvNeXt term: the paper names
    # none) + adversarial loss, the GAN term "rescaled ... based on the ratio of their gradient norms at the last
    # layer of the decoder" (the adaptive weight; its λ is unreadable in the extracted text: 0.1 kept); no KL (Sec.
    # 3.2). Optimiser betas and weight decay are not stated: the l-DeTok recipe's are kept.
    paper_recipe = (
        "train.batch_size=64", "train.lr_schedule=constant", "train.warmup_frac=0", "loss.recon=l1",
        "loss.convnext_weight=0", "loss.gan_weight=0.1", "loss.adaptive_gan_weight=true",
    )  # fmt: skip
    # Per stage (App. A): "6 epochs in the first stage (120K steps) ... 11 epochs in the second stage (220K steps),
    # and 5 epochs in the third stage (100K steps)"; "learning rate ... 1e-4 for the first and third stages, and 1e-5
    # for the second"; "We enable L_adv after 5K training steps in the first stage, and keep it active throughout the
    # second and third stages": stages 2 and 3 continue the previous stage's discriminator from their first step.
    stage_recipes = {
        1: (f"train.images={6 * IMAGENET_TRAIN_IMAGES}", "train.lr=1e-4", "loss.gan_start_step=5000"),
        2: (
            f"train.images={11 * IMAGENET_TRAIN_IMAGES}",
            "train.lr=1e-5",
            "loss.gan_start_step=0",
            "continue_gan=true",
        ),
        3: (f"train.images={5 * IMAGENET_TRAIN_IMAGES}", "train.lr=1e-4", "loss.gan_start_step=0", "continue_gan=true"),
    }

    @classmethod
    def recipe_for(cls, config: AlignTokConfig) -> tuple[str, ...]:
        """The paper recipe of `config.stage` (App. A)."""
        return (*cls.paper_recipe, *cls.stage_recipes[config.stage])

    def __init__(self, config: AlignTokConfig, encoder: Teacher | None = None):
        """`encoder`: the encoder network to use instead of building it from the spec (`for_weights`)."""
        super().__init__()
        cfg = config
        if encoder is None:
            encoder = build_teacher(cfg.encoder, cfg.channels, cfg.image_size, cfg.upsampling)
        self.encoder = encoder
        arch = self.encoder.architecture()
        if cfg.encoder_arch is None and arch is not None:
            cfg = dataclasses.replace(cfg, encoder_arch=json.dumps(arch, sort_keys=True))
        self.config = cfg
        if self.encoder.feature_dim != cfg.encoder_dim:
            raise ValueError(
                f"the encoder {cfg.encoder} gives {self.encoder.feature_dim}-d features but encoder_dim is "
                f"{cfg.encoder_dim}; set model.encoder_dim={self.encoder.feature_dim}"
            )
        if self.encoder.grid() != (cfg.grid_size, cfg.grid_size):
            raise ValueError(
                f"the encoder {cfg.encoder} gives a {self.encoder.grid()} grid, but the decoder up-samples a "
                f"{cfg.grid_size}x{cfg.grid_size} grid to {cfg.image_size} px; change channel_mults or the encoder's "
                "input size"
            )
        self.adapter = Adapter(cfg.encoder_dim, cfg.adapter_hidden, cfg.latent_channels)
        self.decoder = CNNDecoder(
            cfg.latent_channels, cfg.channels, cfg.base_channels, cfg.channel_mults, cfg.res_blocks, cfg.mid_attention
        )
        # stage 1: the encoder stays as pretrained; stage 3: the latent space (encoder + adapter) stays as aligned
        self.encoder.requires_grad_(cfg.stage == 2)
        self.adapter.requires_grad_(cfg.stage != 3)

    @classmethod
    def for_weights(cls, config: AlignTokConfig) -> AlignTok:
        """The model a checkpoint's weights are loaded into (`checkpoint.load_model_folder`): its encoder rebuilt
        from the recorded architecture, untrained, so the encoder spec's source (a teacher folder, a timm weights
        file) need not exist where the tokenizer is used; the checkpoint holds the encoder's weights."""
        if config.encoder_arch is None:  # saved before the architecture was recorded: built from the spec
            return cls(config)
        from detok.teachers.specs import teacher_from_architecture

        arch = json.loads(config.encoder_arch)
        return cls(config, teacher_from_architecture(arch, config.channels, config.image_size))

    # ----------------------------------------------------------------------------------------------
    # Layout and training hooks
    # ----------------------------------------------------------------------------------------------

    @property
    def latent_layout(self) -> LatentLayout:
        g = self.config.grid_size
        return LatentLayout("grid", (self.config.latent_channels, g, g))

    def decoder_finetune_frozen(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.adapter.parameters()]

    def last_decoder_layer(self) -> torch.Tensor:
        return self.decoder.dec_out.weight

    def last_encoder_layer(self) -> torch.Tensor | None:
        """The encoder's last layer (stage 2 rescales the preservation term there); None while it is frozen."""
        return self.encoder.last_layer() if self.config.stage == 2 else None

    def check_init_source(self, source: nn.Module) -> None:
        """Stage k starts from a stage k − 1 run (stage 3 may also continue a stage-3 run)."""
        stage, before = self.config.stage, getattr(source.config, "stage", None)
        if before != stage - 1 and not (stage == 3 and before == 3):
            raise ValueError(
                f"AlignTok stage {stage} ({STAGES[stage]}) continues stage {stage - 1}, but init_from holds a "
                f"stage-{before} model; run stage {stage - 1} first"
            )

    def build_teachers(self) -> list[nn.Module]:
        """Stage 2: the stage-1 encoder + adapter as they are now (the trainer calls this right after loading
        `init_from`, before any stage-2 step), frozen: z_prev of the preservation loss."""
        if self.config.stage != 2:
            return []
        frozen = StageOneLatents(copy.deepcopy(self.encoder), copy.deepcopy(self.adapter)).requires_grad_(False)
        return [frozen.eval()]

    # ----------------------------------------------------------------------------------------------
    # Stages
    # ----------------------------------------------------------------------------------------------

    def forward_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C_img, H, W) → latent grid (N, C, h, w): E's patch features through the adapter."""
        tokens = self.adapter(self.encoder.features(x))  # (N, h·w, C)
        g = square_side(tokens.shape[1])
        return tokens.transpose(1, 2).reshape(len(x), -1, g, g)  # (N, C, h, w)

    def forward(
        self,
        x: torch.Tensor,
        corrupt: bool | None = None,
        mask_ratio: float | None = None,
        sample_posterior: bool = True,
        teacher_features: list[torch.Tensor] | None = None,
    ) -> dict:
        """Training forward: encode → decode; in stage 2 (`teacher_features` = [z_prev (N, h·w, C)]) also the
        semantic-preservation term "preservation" = mean (z − z_prev)² (adaptively weighted by the loss)."""
        self.check_images(x)
        if mask_ratio:
            raise ValueError(f"mask_ratio={mask_ratio}: AlignTok does not mask (its paper trains on whole images)")
        z = self.forward_encoder(x)  # (N, C, h, w)
        out = {"recon": self.decoder(z), "aux": {}, "mean": z}
        if teacher_features:
            z_prev = teacher_features[0]  # (N, h·w, C)
            term = (z.flatten(2).transpose(1, 2) - z_prev).pow(2).mean()  # Eq. 4
            lam = self.config.preservation_weight
            if self.config.preservation_adaptive:
                out["aux"]["preservation"], out["aux_adaptive"] = term, {"preservation": lam}
            else:
                out["aux"]["preservation"] = lam * term
        return out

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.forward_encoder(x), None  # a deterministic encoder (no KL, AlignTok §3.2)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


def _tiny(cfg: AlignTokConfig) -> AlignTokConfig:
    """Tiny twin: an untrained tiny MAE encoder (patch 4 on 32 px → 8×8), width-8 decoder of three stages."""
    return dataclasses.replace(
        cfg,
        image_size=32,
        channels=1,
        encoder="random:mae-teacher-fmnist32-tiny",
        encoder_dim=32,
        latent_channels=min(cfg.latent_channels, 8),
        adapter_hidden=32,
        base_channels=8,
        channel_mults=(1, 1, 2),
        res_blocks=1,
    )


_register_pair = functools.partial(register_with_tiny, kind="tokenizer", model_cls=AlignTok, tiny=_tiny)

_register_pair(
    "aligntok-l",
    AlignTokConfig,
    "AlignTok (arXiv:2509.25162): DINOv2-L/14 at 224 px (16×16×1024) → 2-layer MLP adapter → 16×16×32 latents → "
    "VA-VAE's CNN decoder (ch 128 × (1, 1, 2, 2, 4)); three stages chained by init_from (model.stage=1/2/3; "
    "6/11/5 epochs, lr 1e-4/1e-5/1e-4, constant, batch 64; L1 + LPIPS + adaptive GAN from step 5K of stage 1, its "
    "discriminator carried through stages 2 and 3: the run config follows model.stage); the DINOv2 weights are read "
    "from weights/dinov2-vitl14.safetensors.",
)
_register_pair(
    "aligntok-fmnist32",
    lambda: AlignTokConfig(
        image_size=32,
        channels=1,
        encoder="detok:mae-teacher-fmnist32",
        encoder_dim=192,
        latent_channels=8,
        adapter_hidden=192,
        base_channels=32,
        channel_mults=(1, 2, 2),
        res_blocks=1,
    ),
    "Fashion-MNIST-32: the offline MAE teacher detok trains itself (`detok teacher train --preset "
    "mae-teacher-fmnist32`, label-free; patch 4 → 8×8×192) as the pretrained encoder, an adapter to 8×8×8 latents "
    "(the layout of detok-fmnist32) and cnn-fmnist32's decoder; three stages chained by init_from.",
)
