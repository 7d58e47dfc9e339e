"""Pretrained ViTs as teachers, built by timm and filled from a local weights file: never a download.

The field's semantic teachers are ViT image encoders: DINOv2 ("DINOv2: Learning Robust Visual Features without
Supervision", Oquab et al., arXiv:2304.07193) for REPA and VA-VAE, and the image towers of CLIP (Radford et al.,
arXiv:2103.00020) and SigLIP (Zhai et al., arXiv:2303.15343). timm implements them all as `VisionTransformer`s, so one
loader serves: `timm.create_model(name, pretrained=False)` builds the architecture and the weights come from the file
given in the spec `timm:MODEL[@SIZE]:WEIGHTS` (safetensors, or a torch file read with `weights_only=True`), in timm's
own key layout — what timm's hub repositories hold (`timm/<model>/model.safetensors`).

Input: the tokenizer's images (N, C, H, W) in [-1, 1] are mapped to [0, 1], grey is repeated to RGB, resized to the
model's input size (SIZE, or the model's default) with its interpolation, and normalised with its own mean and std
(its pretrained config). Output: the final-norm tokens without the prefix tokens ([CLS], registers:
`num_prefix_tokens`), (N, gh·gw, D) on the model's patch grid.

timm needs torchvision, which the core install leaves out: `pip install 'detok[teachers]'`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from detok.checkpoint import read_plain_state, read_weights
from detok.teachers.base import Teacher

# Keys a feature extractor never uses; timm's hub files of some models carry them (a classifier head).
_HEAD_PREFIXES = ("head.", "head_dist.")
_RESIZE_MODES = ("bicubic", "bilinear")


def _import_timm():
    try:
        import timm
    except ImportError as e:  # timm itself, or its torchvision
        raise ImportError(
            f"the timm:MODEL:WEIGHTS teacher needs timm (and torchvision, which timm imports): "
            f"pip install 'detok[teachers]' ({e})"
        ) from e
    return timm


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or a torch file of tensors (possibly under "state_dict", "model"
    or "module") loaded with `weights_only=True`."""
    state = read_weights(path) if path.suffix == ".safetensors" else read_plain_state(path)
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a mapping of parameter names to tensors")
    return {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}


def check_fits(state: dict[str, torch.Tensor], model: torch.nn.Module, name: str, path: Path) -> None:
    """Raise one `ValueError` naming `path` and the mismatch if `state` is not a set of weights for timm's `name`.

    The patch size and the width are checked first (the usual mistakes: a /14 file for a /16 model, a ViT-B file
    for a ViT-L name); then the keys; then every other shape, except a position embedding's token count (a file made
    for another input size: resampled by the caller).
    """
    target = model.state_dict()
    kernel = state.get("patch_embed.proj.weight")
    if kernel is not None and kernel.dim() == 4:
        want = target["patch_embed.proj.weight"]
        if kernel.shape[-2:] != want.shape[-2:]:
            (fh, fw), (mh, mw) = kernel.shape[-2:], want.shape[-2:]
            raise ValueError(
                f"{path} holds {fh}x{fw} patch kernels, but timm's {name} uses {mh}x{mw} patches: the file is for a "
                "model of another patch size"
            )
        if kernel.shape[0] != want.shape[0]:
            raise ValueError(
                f"{path} holds width-{kernel.shape[0]} weights, but timm's {name} has width {want.shape[0]}: the "
                "file is for a model of another size"
            )
    missing, unexpected = sorted(target.keys() - state.keys()), sorted(state.keys() - target.keys())
    if missing or unexpected:
        raise ValueError(
            f"{path} does not hold timm {name} weights in timm's layout (missing: {', '.join(missing[:5]) or 'none'}"
            f"{' …' if len(missing) > 5 else ''}; unexpected: {', '.join(unexpected[:5]) or 'none'}"
            f"{' …' if len(unexpected) > 5 else ''})"
        )
    # A position embedding for another input size (token count) is resampled to the model's grid, as timm does.
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in target.items()
        if state[k].shape != v.shape and not (k == "pos_embed" and state[k].shape[::2] == v.shape[::2])
    ]
    if wrong:
        raise ValueError(f"{path} does not fit timm's {name}: {'; '.join(wrong[:3])}{' …' if len(wrong) > 3 else ''}")


class TimmTeacher(Teacher):
    """A pretrained timm ViT's patch tokens (prefix tokens dropped) for the tokenizer's images."""

    def __init__(
        self, model_name: str, weights_path: str | Path | None, channels: int, image_size: int, input_size=None
    ):
        """
        Args:
            weights_path: the local weights file; its absence is an error (detok never downloads weights). None
                builds the architecture only, for a model whose checkpoint holds these weights (AlignTok's encoder).
            channels: the tokenizer's image channels (1 is repeated to the model's 3).
            image_size: the tokenizer's image size (informational: images are resized to the model's input).
            input_size: the model's input size in pixels (None: the model's default); the file's position embedding
                is resampled to its grid, as timm does when it loads weights for another input size.
        """
        super().__init__()
        path = None if weights_path is None else Path(weights_path)
        if path is not None and not path.is_file():
            raise FileNotFoundError(
                f"teacher weights {path} do not exist (timm:{model_name}:{path}); detok never downloads weights: "
                "save the model's file (e.g. the model.safetensors of its timm hub repository) there"
            )
        timm = _import_timm()
        from timm.data import resolve_model_data_config
        from timm.layers import resample_abs_pos_embed

        size = {} if input_size is None else {"img_size": input_size}
        try:
            model = timm.create_model(model_name, pretrained=False, num_classes=0, **size)
        except (RuntimeError, TypeError) as e:  # an unknown name; a model without an img_size argument
            raise ValueError(f"timm cannot build {model_name!r} as a teacher: {e}") from None
        if not hasattr(model, "patch_embed") or not hasattr(model, "num_prefix_tokens"):
            raise ValueError(f"timm's {model_name} is not a ViT with patch tokens; a teacher needs patch features")
        if path is not None:
            state = read_state_dict(path)
            check_fits(state, model, model_name, path)
            pos = state.get("pos_embed")
            if pos is not None and pos.shape != model.pos_embed.shape:  # made for another input size
                prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
                state["pos_embed"] = resample_abs_pos_embed(
                    pos, list(model.patch_embed.grid_size), num_prefix_tokens=prefix
                )
            model.load_state_dict(state)
        self.model = model.eval()

        in_chans = model.patch_embed.proj.in_channels
        if channels not in (1, in_chans):
            raise ValueError(f"timm's {model_name} takes {in_chans}-channel images; the tokenizer's have {channels}")
        data = resolve_model_data_config(model)
        if data["interpolation"] not in _RESIZE_MODES:
            raise ValueError(f"timm's {model_name} resizes with {data['interpolation']!r}; known: {_RESIZE_MODES}")
        self.interpolation, self.in_chans = data["interpolation"], in_chans
        self.input_size = tuple(model.patch_embed.img_size)
        self.register_buffer("mean", torch.tensor(data["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(data["std"]).view(1, -1, 1, 1), persistent=False)
        self.model_name, self.image_size, self.requested_size = model_name, image_size, input_size
        self.feature_dim = model.num_features

    def architecture(self) -> dict:
        return {"timm": self.model_name, "input_size": self.requested_size}

    def grid(self) -> tuple[int, int]:
        return tuple(self.model.patch_embed.grid_size)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] → the model's input (N, 3, h, w), normalised with its mean and std."""
        x = (x.float() + 1) / 2  # [0, 1], the range the model's mean and std refer to
        x = x.expand(-1, self.in_chans, -1, -1) if x.shape[1] == 1 else x  # grey → RGB
        if tuple(x.shape[-2:]) != self.input_size:
            # antialias when shrinking, as PIL resizes; clamped like an 8-bit image after bicubic over-shoot
            x = F.interpolate(x, size=self.input_size, mode=self.interpolation, antialias=True).clamp(0, 1)
        return (x - self.mean) / self.std

    def last_layer(self) -> torch.Tensor:
        return self.model.blocks[-1].mlp.fc2.weight

    def features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(self.preprocess(x))  # (N, P + gh·gw, D) after the final norm
        return tokens[:, self.model.num_prefix_tokens :]  # (N, gh·gw, D)
