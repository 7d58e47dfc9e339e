"""Auxiliary tokenizer losses: LPIPS-VGG perceptual distance and PatchGAN adversarial terms."""

from detok.losses.gan import PatchDiscriminator, adaptive_weight, hinge_d_loss, hinge_g_loss
from detok.losses.perceptual import LPIPS, PerceptualUnavailableError, build_perceptual

__all__ = [
    "LPIPS",
    "PatchDiscriminator",
    "PerceptualUnavailableError",
    "adaptive_weight",
    "build_perceptual",
    "hinge_d_loss",
    "hinge_g_loss",
]
