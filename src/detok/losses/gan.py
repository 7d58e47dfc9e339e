"""PatchGAN discriminator and hinge losses for tokenizer training.

Papers: "Image-to-Image Translation with Conditional Adversarial Networks" (Isola et al., arXiv:1611.07004) for the
PatchGAN; "Taming Transformers for High-Resolution Image Synthesis" (Esser et al., arXiv:2012.09841), Eq. 7, for the
adaptive GAN weight. The layout follows taming-transformers' `NLayerDiscriminator`, as reused by LDM.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PatchDiscriminator", "adaptive_weight", "hinge_d_loss", "hinge_g_loss"]


# --------------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------------


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    # 32 groups as usual, or fewer for narrow test-size discriminators (gcd keeps the division exact).
    return nn.GroupNorm(math.gcd(32, channels), channels)


class PatchDiscriminator(nn.Module):
    """PatchGAN: a fully convolutional classifier giving one real/fake logit per overlapping image patch."""

    def __init__(
        self,
        in_channels: int,
        base_channels: int = 64,
        n_layers: int = 3,
        norm: Literal["batch", "group"] = "group",
    ):
        """Build the discriminator.

        Args:
            in_channels: image channels.
            base_channels: width of the first conv; doubled by each later stride-2 conv, capped at 8x.
            n_layers: number of stride-2 convs; the receptive field is 70 px for 3, 34 px for 2.
            norm: "group" (GroupNorm with gcd(32, C) groups; the default, since BatchNorm's batch statistics
                make multi-process training differ from one process) or "batch" (taming-transformers' choice).
        """
        super().__init__()
        if norm not in ("batch", "group"):
            raise ValueError(f"unknown norm {norm!r}; expected 'batch' or 'group'")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.n_layers = n_layers
        widths = [base_channels * min(2**i, 8) for i in range(n_layers + 1)]
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        for i in range(1, n_layers):
            # No conv bias where a norm follows: the norm's shift replaces it.
            layers += [
                nn.Conv2d(widths[i - 1], widths[i], kernel_size=4, stride=2, padding=1, bias=False),
                _norm(norm, widths[i]),
                nn.LeakyReLU(0.2),
            ]
        layers += [
            nn.Conv2d(widths[n_layers - 1], widths[n_layers], kernel_size=4, stride=1, padding=1, bias=False),
            _norm(norm, widths[n_layers]),
            nn.LeakyReLU(0.2),
            nn.Conv2d(widths[n_layers], 1, kernel_size=4, stride=1, padding=1),
        ]
        self.net = nn.Sequential(*layers)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DCGAN init (as in taming-transformers): convs N(0, 0.02), norm scales N(1, 0.02), biases zero."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    @staticmethod
    def min_size_for(n_layers: int) -> int:
        """Smallest side length giving a 1x1 logit map: n_layers halvings must leave >= 3 px (k=4, p=1 convs)."""
        return 3 * 2**n_layers

    @property
    def min_image_size(self) -> int:
        return self.min_size_for(self.n_layers)

    def output_size(self, size: int) -> int:
        """Side of the logit map for an input side `size` (<= 0 if the image is too small)."""
        for _ in range(self.n_layers):
            size //= 2  # k=4, s=2, p=1
        return size - 2  # two k=4, s=1, p=1 convs, each losing one pixel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits.

        Args:
            x: images, (N, C, H, W), H and W >= `min_image_size`.

        Returns:
            Logits, (N, 1, H', W') with H' = H // 2**n_layers - 2.
        """
        if min(x.shape[-2:]) < self.min_image_size:
            raise ValueError(
                f"PatchDiscriminator with n_layers={self.n_layers} needs images of at least "
                f"{self.min_image_size}x{self.min_image_size}, got {tuple(x.shape[-2:])}; lower loss.disc_layers"
            )
        return self.net(x)  # (N, 1, H', W')


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss, 0.5 · (E[relu(1 − D(x))] + E[relu(1 + D(x̂))]).

    Args:
        logits_real: discriminator logits on real images, any shape.
        logits_fake: discriminator logits on reconstructions, any shape.

    Returns:
        Scalar loss.
    """
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss, −E[D(x̂)].

    Args:
        logits_fake: discriminator logits on reconstructions, any shape.

    Returns:
        Scalar loss.
    """
    return -logits_fake.mean()


def adaptive_weight(
    rec_loss: torch.Tensor,
    g_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Adaptive GAN weight λ = ‖∇_L rec_loss‖ / (‖∇_L g_loss‖ + eps), L the decoder's last layer (taming Eq. 7).

    The gradients are taken with `torch.autograd.grad(..., retain_graph=True)` and no `create_graph`: the graph
    stays usable for the caller's `backward()` and λ is a constant (detached), so no second-order terms arise.
    Both losses must therefore still have their graphs when this is called.

    Args:
        rec_loss: scalar reconstruction loss (e.g. MSE + perceptual).
        g_loss: scalar generator loss.
        last_layer: weight of the decoder's last layer, a leaf with requires_grad=True.
        max_weight: upper clamp of λ.
        eps: added to the generator gradient norm.

    Returns:
        λ, a detached scalar in [0, max_weight].
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (g_grad.norm() + eps)
    return weight.clamp(0.0, max_weight).detach()
