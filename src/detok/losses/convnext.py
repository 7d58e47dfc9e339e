"""The ConvNeXt-based perceptual term of the l-DeTok tokenizer loss (App. A.1: "VGG- and ConvNeXt-based").

The paper's reconstruction loss follows TiTok's code (Yu et al., arXiv:2406.07550), whose perceptual loss combines
LPIPS-VGG with a ConvNeXt-S term: the mean squared difference between the ImageNet *logits* of ConvNeXt-S
("A ConvNet for the 2020s", Liu et al., arXiv:2201.03545) for the reconstruction and for the original, both resized
to 224 px and ImageNet-normalised, mixed as (1·LPIPS + w·ConvNeXt) / (1 + w) with w = 0.1.

The weights are torchvision's `ConvNeXt_Small_Weights.IMAGENET1K_V1`: from a local file (`weights_path`, or
$DETOK_CONVNEXT_WEIGHTS), else downloaded by torchvision. Without either the term is unavailable, with a message
saying how to provide it or turn it off (`loss.convnext_weight=0`) — never a silent zero.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from detok.checkpoint import read_plain_state, read_weights
from detok.losses.perceptual import PerceptualUnavailableError

ENV_CONVNEXT_WEIGHTS = "DETOK_CONVNEXT_WEIGHTS"
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class LogitDistance(nn.Module):
    """Frozen classifier; distance = mean over classes of (f(x̂) − f(x))² at `size` px, ImageNet-normalised."""

    def __init__(self, classifier: nn.Module, size: int = 224):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.size = size
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> LogitDistance:  # the classifier stays in eval mode (no BN/dropout drift)
        super().train(mode)
        self.classifier.eval()
        return self

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float().clamp(-1, 1) + 1) / 2  # (N, C, H, W) in [0, 1]
        x = x.expand(-1, 3, -1, -1)  # grey replicated to RGB
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)  # (N, 3, s, s)
        return self.classifier((x - self.mean) / self.std)  # (N, K)

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image distance (N,) between reconstructions and originals, both (N, C, H, W) in [-1, 1]."""
        return (self._logits(recon) - self._logits(target)).pow(2).mean(1)  # (N,)


def build_convnext_perceptual(weights_path: str | os.PathLike | None = None) -> LogitDistance:
    """ConvNeXt-S (ImageNet-1k) logit distance with pretrained weights, frozen, on CPU.

    Raises:
        PerceptualUnavailableError: torchvision is missing, or the weights can be neither read nor downloaded.
    """
    try:
        from torchvision.models import ConvNeXt_Small_Weights, convnext_small
    except ImportError as err:
        raise _unavailable("torchvision is not installed (pip install 'detok[perceptual]')") from err
    model = convnext_small(weights=None)
    path = weights_path or os.environ.get(ENV_CONVNEXT_WEIGHTS)
    if path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise _unavailable(f"the ConvNeXt-S weights file {path} does not exist")
        state = read_weights(path) if path.suffix == ".safetensors" else read_plain_state(path)
    else:
        try:
            state = torch.hub.load_state_dict_from_url(
                ConvNeXt_Small_Weights.IMAGENET1K_V1.url, map_location="cpu", check_hash=True, weights_only=True
            )
        except Exception as err:  # network, disk and hash failures all mean the same thing to the user
            raise _unavailable(f"downloading them with torchvision failed ({type(err).__name__}: {err})") from err
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path or 'the downloaded file'} is not a torchvision convnext_small state dict") from err
    return LogitDistance(model)


def _unavailable(why: str) -> PerceptualUnavailableError:
    return PerceptualUnavailableError(
        f"the ConvNeXt-S perceptual term needs ImageNet weights, but {why}. Give a local torchvision "
        f"convnext_small checkpoint with loss.convnext_backbone=PATH or ${ENV_CONVNEXT_WEIGHTS}, or train without "
        "the term: --set loss.convnext_weight=0"
    )
