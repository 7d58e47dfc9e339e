"""The teacher interface: a frozen network (or fixed transform) giving patch features of an image batch.

A teacher maps images (N, C, H, W) in [-1, 1] — the tokenizer's own input — to patch features (N, T, D) on its own
grid (gh, gw), raster order, with any resizing, normalisation and prefix-token removal done inside. Tokenizers that
learn from a teacher (semantic distillation, MAETok's auxiliary decoders, VA-VAE's VF loss, AlignTok's frozen
encoder) name it in their config by a *spec* string, built by `teachers/specs.py`:

    hog[:CELL]                      MaskFeat's HOG on the tokenizer's patches (teachers/hog.py), no weights
    detok:FOLDER                    a label-free teacher detok trained itself (`detok teacher train`, teachers/mae.py);
                                    FOLDER may also name a teacher preset, for its default cache folder
    detok:FOLDER:allow-supervised   the same, accepting a network trained with labels (the reference classifier): an
                                    explicit opt-in, since distilling from it leaks labels into the tokenizer
    timm:MODEL[@SIZE]:WEIGHTS       a pretrained ViT from a local weights file through timm (teachers/pretrained.py),
                                    fed SIZE-px inputs (default: the model's own input size)

A teacher's grid need not be the tokenizer's: `pool_to_grid` averages (or repeats) features onto it when one grid
is a whole multiple of the other and refuses otherwise.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Teacher(nn.Module):
    """Frozen patch-feature extractor. Subclasses set `feature_dim` and implement `grid` and `features`."""

    feature_dim: int
    # True for a network trained with labels: distilling from it would leak label information into the tokenizer
    # (and inflate a classifier-feature score); builders refuse such teachers unless asked explicitly.
    supervised: bool = False

    def grid(self) -> tuple[int, int]:
        """(gh, gw) of the features `forward` returns."""
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] → (N, gh·gw, feature_dim)."""
        raise NotImplementedError

    def last_layer(self) -> torch.Tensor:
        """The weight of the network's last layer (where a tokenizer that trains this network as its encoder, as
        AlignTok's stage 2, balances gradient norms)."""
        raise ValueError(f"{type(self).__name__} has no trainable last layer")

    def architecture(self) -> dict | None:
        """What rebuilds this network without its weights (`specs.teacher_from_architecture`), for a model that
        saves the teacher's weights as its own (AlignTok's encoder), so that loading it needs no teacher source;
        None when the spec alone rebuilds it (no learned weights)."""
        return None

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # a teacher never leaves eval mode (dropout, batch norm)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).float()


def pool_to_grid(feats: torch.Tensor, grid: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """Patch features (N, gh·gw, D) on `grid` → (N, th·tw, D) on `target`.

    A finer teacher grid is average-pooled over whole blocks; a coarser one is repeated (nearest); anything else —
    grids that are not whole multiples of each other — is refused, since a fractional pooling would blur features
    across the tokenizer's patch borders.
    """
    (gh, gw), (th, tw) = grid, target
    n, t, d = feats.shape
    if t != gh * gw:
        raise ValueError(f"teacher features hold {t} tokens, not the {gh}x{gw} grid they claim")
    if (gh, gw) == (th, tw):
        return feats
    fmap = feats.transpose(1, 2).reshape(n, d, gh, gw)  # (N, D, gh, gw)
    if gh % th == 0 and gw % tw == 0:
        fmap = F.avg_pool2d(fmap, (gh // th, gw // tw))
    elif th % gh == 0 and tw % gw == 0:
        fmap = F.interpolate(fmap, size=(th, tw), mode="nearest")
    else:
        raise ValueError(
            f"the teacher's {gh}x{gw} feature grid cannot be pooled to the tokenizer's {th}x{tw} grid "
            "(neither is a whole multiple of the other); choose a teacher patch size or input size that fits"
        )
    return fmap.flatten(2).transpose(1, 2)  # (N, th·tw, D)


class HOGPatchTeacher(Teacher):
    """MaskFeat's HOG on `patch_size` patches of `image_size` images (teachers/hog.py) behind the interface."""

    def __init__(self, channels: int, image_size: int, patch_size: int, cell_size: int | None = None):
        super().__init__()
        from detok.teachers.hog import HOGTeacher

        cell = cell_size or max(1, patch_size // 2)  # 2×2 cells per patch, as at 256 px / patch 16 / cell 8
        self.hog = HOGTeacher(patch_size, cell)
        self.image_size, self.patch_size = image_size, patch_size
        self.feature_dim = self.hog.feature_dim(channels)

    def grid(self) -> tuple[int, int]:
        return (self.image_size // self.patch_size,) * 2

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.hog(x)
