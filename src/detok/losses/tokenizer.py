"""The tokenizer loss in one place: reconstruction + weighted auxiliary terms + perceptual + adversarial.

L = R(x̂, x) + Σ_k λ_k·aux_k + λ_p·P(x̂, x) + λ_GAN·w·hinge_G(D(x̂))   (l-DeTok App. A.1; the GAN term from
`gan_start_step`, w the adaptive weight of taming-transformers when `adaptive_gan_weight` is on, else 1), with R the
MSE (l-DeTok, MAETok) or, with `recon="l1"`, the mean absolute error (AlignTok's Eq. 1, LDM's pixel loss)

P is LPIPS-VGG, or with `convnext_weight` c > 0 the paper's mix of VGG- and ConvNeXt-based terms,
(LPIPS + c·ConvNeXt-S logit distance) / (1 + c), as TiTok's "lpips-convnext_s-1.0-0.1" (c = 0.1).

The auxiliary terms are whatever the tokenizer's training forward returns under "aux" (its KL, a VQ codebook
and commitment loss, a distillation loss, …); `kl` is weighted by `kl_weight`, every other term enters with
weight 1 (families fold their own coefficients, such as VQ's β, into the term), except the terms the forward names
under "aux_adaptive" ({name: λ}), which enter as λ·w·term with w = ‖∇_E nll‖ / (‖∇_E term‖ + 1e-4) at the
encoder's last layer E (VA-VAE's VF loss; nll = R + λ_p·P). The loss owns the PatchGAN
discriminator it trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from detok.config import Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, check_fields
from detok.losses.gan import PatchDiscriminator, adaptive_weight, hinge_d_loss, hinge_g_loss


@dataclass(frozen=True)
class LossConfig:
    """Weights of the tokenizer loss terms and the discriminator set-up.

    Attributes:
        perceptual_backbone: local path of torchvision's VGG16 weights (else $DETOK_VGG16_WEIGHTS/torchvision).
        convnext_weight: c of the ConvNeXt-S term inside the perceptual loss (0: LPIPS only; the paper's 0.1).
        convnext_backbone: local path of torchvision's convnext_small weights (else $DETOK_CONVNEXT_WEIGHTS).
        gan_start_step: optimiser step at which the GAN terms switch on.
        gan_start_frac: when set, the GAN terms switch on after this share of training instead (the paper's
            recipes state it in epochs: from epoch 10 of 50 for CNN tokenizers, App. A.5).
        adaptive_gan_weight: scale the GAN term by the ratio of gradient norms at the decoder's last layer.
        recon: the pixel reconstruction term R: "mse" or "l1" (the MSE is logged either way, for PSNR).
    """

    recon: Literal["mse", "l1"] = "mse"
    kl_weight: NonNegativeFloat = 1e-6
    perceptual_weight: NonNegativeFloat = 1.0
    perceptual_backbone: str | None = None
    convnext_weight: NonNegativeFloat = 0.0
    convnext_backbone: str | None = None
    gan_weight: NonNegativeFloat = 0.1
    gan_start_step: NonNegativeInt = 0
    gan_start_frac: Fraction | None = None
    adaptive_gan_weight: bool = False
    disc_channels: PositiveInt = 64
    disc_layers: PositiveInt = 3
    disc_lr_mult: PositiveFloat = 1.0

    def __post_init__(self):
        check_fields(self)

    def check_image_size(self, image_size: int) -> None:
        """Refuse a discriminator too deep for `image_size` (checked before any training)."""
        smallest = PatchDiscriminator.min_size_for(self.disc_layers)
        if self.gan_weight > 0 and image_size < smallest:
            raise ValueError(
                f"loss.disc_layers={self.disc_layers} needs images of at least {smallest}px, the model's are "
                f"{image_size}px; lower loss.disc_layers or set loss.gan_weight=0"
            )

    def aux_weight(self, name: str) -> float:
        """λ of auxiliary term `name`."""
        return self.kl_weight if name == "kl" else 1.0


class TokenizerLoss(nn.Module):
    """The loss of one tokenizer run: its perceptual network (frozen) and discriminator (trained, if GAN is on)."""

    def __init__(self, cfg: LossConfig, image_channels: int, total_steps: int):
        super().__init__()
        self.cfg = cfg
        self.gan_start = cfg.gan_start_step if cfg.gan_start_frac is None else int(cfg.gan_start_frac * total_steps)
        self.perceptual = self.convnext = None
        if cfg.perceptual_weight > 0:
            from detok.losses.perceptual import build_perceptual

            self.perceptual = build_perceptual(backbone_path=cfg.perceptual_backbone)
            if cfg.convnext_weight > 0:
                from detok.losses.convnext import build_convnext_perceptual

                self.convnext = build_convnext_perceptual(cfg.convnext_backbone)
        self.disc = None
        if cfg.gan_weight > 0:
            self.disc = PatchDiscriminator(image_channels, cfg.disc_channels, cfg.disc_layers)

    def gan_active(self, step: int) -> bool:
        """Whether the GAN terms are on at optimiser step `step` (0-based)."""
        return self.disc is not None and step >= self.gan_start

    def generator_loss(
        self,
        x: torch.Tensor,
        out: dict,
        step: int,
        last_layer: torch.Tensor | None = None,
        encoder_layer: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The tokenizer's loss for images x (N, C, H, W) and its training forward `out`.

        Args:
            step: the optimiser step (the GAN term switches on at `gan_start_step`).
            last_layer: the decoder's last weight, for the adaptive GAN weight.
            encoder_layer: the encoder's last weight, for auxiliary terms the forward lists under "aux_adaptive"
                ({name: base weight}: VA-VAE's VF loss, weighted base · ‖∇nll‖ / (‖∇term‖ + 1e-4) there).

        Returns:
            (loss, terms): terms holds "mse" ("l1" too when it is R), each auxiliary term, "perceptual" and "gan_g"
            (unweighted).
        """
        cfg = self.cfg
        recon = out["recon"].float()
        mse = F.mse_loss(recon, x)
        rec, terms = mse, {"mse": mse}
        if cfg.recon == "l1":
            rec = terms["l1"] = F.l1_loss(recon, x)
        loss = rec
        adaptive = out.get("aux_adaptive", {})
        for name, value in out.get("aux", {}).items():
            terms[name] = value
            if name not in adaptive:
                loss = loss + cfg.aux_weight(name) * value
        p_loss = self.perceptual_distance(recon, x)
        loss = loss + cfg.perceptual_weight * p_loss
        for name, base_weight in adaptive.items():  # VA-VAE's VF loss: scaled to the NLL's gradient at the encoder
            if encoder_layer is None:
                raise ValueError(f"the adaptive weight of {name!r} needs the encoder's last layer")
            nll = rec + cfg.perceptual_weight * p_loss
            w = adaptive_weight(nll, out["aux"][name], encoder_layer, max_weight=1e8)
            terms[f"{name}_weight"] = w
            loss = loss + base_weight * w * out["aux"][name]
        g_loss = recon.new_zeros(())
        if self.gan_active(step):
            self.disc.requires_grad_(False)  # the generator's gradient must not train D
            g_loss = hinge_g_loss(self.disc(recon))
            w = cfg.gan_weight
            if cfg.adaptive_gan_weight:
                w = w * adaptive_weight(rec + cfg.perceptual_weight * p_loss, g_loss, last_layer)
            loss = loss + w * g_loss
        terms.update(perceptual=p_loss, gan_g=g_loss)
        return loss, terms

    def perceptual_distance(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """P(x̂, x) averaged over images: LPIPS, mixed with the ConvNeXt-S term when it is on (0 when off)."""
        if self.perceptual is None:
            return recon.new_zeros(())
        p = self.perceptual(recon, x).mean()
        if self.convnext is None:
            return p
        c = self.cfg.convnext_weight
        return (p + c * self.convnext(recon, x).mean()) / (1.0 + c)

    def discriminator_loss(self, x: torch.Tensor, recon: torch.Tensor, disc: nn.Module | None = None) -> torch.Tensor:
        """Hinge loss of the discriminator on real x and detached reconstructions (`disc`: e.g. its DDP wrapper)."""
        disc = disc or self.disc
        self.disc.requires_grad_(True)
        return hinge_d_loss(disc(x), disc(recon.detach()))
