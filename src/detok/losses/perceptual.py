"""LPIPS-VGG perceptual distance, used as a frozen loss for tokenizer training.

Paper: "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric" (Zhang et al., arXiv:1801.03924),
Eq. 1: d(x, y) = Σ_l mean_hw ‖w_l ⊙ (ŷ_l(x) − ŷ_l(y))‖², with ŷ_l the channel-unit-normalised VGG16 activations
at relu1_2 … relu5_3 and w_l the learned linear calibration ("lin", v0.1 weights).

Weights are never bundled: the VGG16 backbone is torchvision's ImageNet checkpoint (`vgg16-397923af.pth`), and the
lin layers come from the file that the `torchmetrics` wheel ships (`functional/image/lpips_models/vgg.pth`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from detok.checkpoint import read_plain_state, read_weights

__all__ = ["LPIPS", "PerceptualUnavailableError", "build_perceptual", "vgg16_features"]

ENV_VGG16_WEIGHTS = "DETOK_VGG16_WEIGHTS"

# VGG16 configuration "D" up to relu5_3: an int is a conv3x3 (+ReLU) with that many outputs, "M" a 2x2 max-pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices in torchvision's `vgg16().features` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_TAPS = (3, 8, 15, 22, 29)
_STAGE_CHANNELS = (64, 128, 256, 512, 512)
_MIN_SIZE = 16  # four max-pools before relu5_3
_LIN_FILE = ("functional", "image", "lpips_models", "vgg.pth")


class PerceptualUnavailableError(RuntimeError):
    """The VGG16 or LPIPS calibration weights cannot be found; the message says how to provide or disable them."""


def _unavailable(reason: str) -> PerceptualUnavailableError:
    return PerceptualUnavailableError(
        f"LPIPS needs the VGG16 ImageNet weights and the LPIPS calibration weights, but {reason}. "
        "Provide them by installing the extra with internet access (pip install 'detok[perceptual]'; torchvision "
        f"then downloads vgg16-397923af.pth), or by setting {ENV_VGG16_WEIGHTS} / loss.perceptual_backbone to a "
        "local copy of torchvision's vgg16 weights (.pth or .safetensors). "
        "To train without the perceptual loss, pass --set loss.perceptual_weight=0."
    )


# --------------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------------


def vgg16_features() -> nn.Sequential:
    """VGG16 `features` up to relu5_3, indexed like torchvision so its state-dict keys (`0.weight`, …) match.

    torchvision's final max-pool (index 30) is left out: it has no parameters and LPIPS does not use it.
    """
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU()]
            in_ch = v
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """Frozen LPIPS-VGG distance between images in [-1, 1]; build it with `build_perceptual`."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, backbone_state: Mapping[str, torch.Tensor], lin_state: Mapping[str, torch.Tensor]):
        """Build the network and load its weights.

        Args:
            backbone_state: torchvision `vgg16().features` state dict (keys `0.weight`, `0.bias`, …, `28.bias`).
            lin_state: calibration weights with keys `0.weight` … `4.weight`, each (1, C_l, 1, 1).
        """
        super().__init__()
        self.backbone = vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in _STAGE_CHANNELS)
        # The LPIPS "ScalingLayer": ImageNet mean/std re-expressed for inputs in [-1, 1].
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.backbone.load_state_dict(dict(backbone_state))
        self.lins.load_state_dict(dict(lin_state))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """Stay in eval mode whatever the caller asks: LPIPS is a fixed metric."""
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Channel-unit-normalised VGG16 activations at the five taps.

        Args:
            x: images in [-1, 1], (N, 3, H, W).

        Returns:
            Five tensors (N, C_l, H_l, W_l), C_l = 64, 128, 256, 512, 512.
        """
        h = (x - self.shift) / self.scale  # (N, 3, H, W)
        feats = []
        for i, layer in enumerate(self.backbone):
            h = layer(h)
            if i in _TAPS:
                # F.normalize clamps the norm, so all-zero ReLU columns give zero gradients instead of NaN.
                feats.append(F.normalize(h, dim=1, eps=1e-10))  # (N, C_l, H_l, W_l)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image pair (Eq. 1).

        Args:
            x: images in [-1, 1], (N, C, H, W) with C = 1 (replicated to RGB) or 3, H, W >= 16.
            y: images like `x`.

        Returns:
            Distances, (N,).
        """
        if x.shape != y.shape:
            raise ValueError(f"LPIPS inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"LPIPS expects (N, 1 or 3, H, W) images, got {tuple(x.shape)}")
        if min(x.shape[-2:]) < _MIN_SIZE:
            raise ValueError(f"LPIPS-VGG needs images of at least {_MIN_SIZE}x{_MIN_SIZE}, got {tuple(x.shape[-2:])}")
        n = x.shape[0]
        xy = torch.cat([x, y]).expand(-1, 3, -1, -1)  # (2N, 3, H, W); a 1-channel image is replicated
        dist = xy.new_zeros(n)  # (N,)
        for lin, f in zip(self.lins, self.features(xy)):
            diff = (f[:n] - f[n:]).square()  # (N, C_l, H_l, W_l)
            dist = dist + lin(diff).mean(dim=(1, 2, 3))  # (N,)
        return dist


# --------------------------------------------------------------------------------------------------
# Weight resolution
# --------------------------------------------------------------------------------------------------


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return read_weights(path)
    if path.suffix in (".pth", ".pt", ".bin"):
        state = read_plain_state(path)
        if not isinstance(state, dict):
            raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
        return state
    raise ValueError(f"unsupported weights file {path}: expected .pth, .pt, .bin or .safetensors")


def _backbone_from_file(path: str | os.PathLike, origin: str) -> dict[str, torch.Tensor]:
    """Read a torchvision vgg16 (keys `features.*`, `classifier.*`) or vgg16.features state dict."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise _unavailable(f"{origin} points at {path}, which does not exist")
    state = _read_state_dict(path)
    if any(k.startswith("features.") for k in state):
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    expected = set(vgg16_features().state_dict())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"{path} is not a torchvision vgg16 state dict: missing keys {missing}, unexpected {extra}")
    return state


def _backbone_from_torchvision() -> dict[str, torch.Tensor]:
    try:
        from torchvision.models import VGG16_Weights
    except ImportError as err:
        raise _unavailable(
            f"no local weights were given (backbone_path, ${ENV_VGG16_WEIGHTS}) and torchvision is not installed"
        ) from err
    # Same URL, hash check and hub cache as `vgg16(weights=IMAGENET1K_V1)`, without building the 138M-parameter
    # classifier, and read with weights_only=True.
    try:
        state = torch.hub.load_state_dict_from_url(
            VGG16_Weights.IMAGENET1K_V1.url, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except Exception as err:  # network, disk and hash failures all mean the same thing to the user
        raise _unavailable(f"downloading them with torchvision failed ({type(err).__name__}: {err})") from err
    return {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}


def _lin_from_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read LPIPS v0.1 lin weights (keys `lin{l}.model.1.weight`, as in `lpips` and torchmetrics) as `{l}.weight`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise _unavailable(f"the LPIPS calibration file {path} does not exist")
    state = _read_state_dict(path)
    expected = {f"lin{i}.model.1.weight" for i in range(len(_STAGE_CHANNELS))}
    if set(state) != expected:
        raise ValueError(f"{path} is not an LPIPS-VGG lin file: expected keys {sorted(expected)}, got {sorted(state)}")
    return {f"{i}.weight": state[f"lin{i}.model.1.weight"] for i in range(len(_STAGE_CHANNELS))}


def _torchmetrics_lin_path() -> Path:
    # find_spec locates the package without importing it (torchmetrics' import is slow).
    spec = importlib.util.find_spec("torchmetrics")
    if spec is None or not spec.submodule_search_locations:
        raise _unavailable(
            "the LPIPS calibration weights ship with torchmetrics, which is not installed "
            "(it comes with pip install 'detok[perceptual]'; or pass lin_path)"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_LIN_FILE)
    if not path.is_file():
        raise _unavailable(f"the installed torchmetrics has no {'/'.join(_LIN_FILE)}")
    return path


def build_perceptual(
    backbone_path: str | os.PathLike | None = None, lin_path: str | os.PathLike | None = None
) -> LPIPS:
    """Build a frozen LPIPS-VGG module with pretrained weights on CPU.

    The VGG16 backbone comes from, in order: `backbone_path`; the file named by $DETOK_VGG16_WEIGHTS;
    torchvision's `VGG16_Weights.IMAGENET1K_V1` (downloaded once into the torch hub cache).
    The lin layers come from `lin_path`, else from the file shipped in the torchmetrics wheel.

    Args:
        backbone_path: torchvision vgg16 (or vgg16.features) state dict, .pth or .safetensors.
        lin_path: LPIPS v0.1 VGG lin weights with keys `lin{l}.model.1.weight`, l = 0..4.

    Returns:
        The LPIPS module, in eval mode with all parameters frozen.

    Raises:
        PerceptualUnavailableError: weights cannot be found or downloaded; the message names the fixes and
            `--set loss.perceptual_weight=0`.
    """
    # The lin file is local and cheap to check, so a missing torchmetrics fails before any download.
    lins = _lin_from_file(lin_path if lin_path is not None else _torchmetrics_lin_path())
    env_path = os.environ.get(ENV_VGG16_WEIGHTS)
    if backbone_path is not None:
        backbone = _backbone_from_file(backbone_path, "backbone_path")
    elif env_path:
        backbone = _backbone_from_file(env_path, f"${ENV_VGG16_WEIGHTS}")
    else:
        backbone = _backbone_from_torchvision()
    return LPIPS(backbone, lins)
