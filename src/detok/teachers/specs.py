"""Teachers by name: the spec strings tokenizer configs use (`hog[:CELL]`, `detok:FOLDER[:allow-supervised]`,
`timm:MODEL[@SIZE]:WEIGHTS`, `random:PRESET`; teachers/base.py's docstring describes each), built frozen."""

from __future__ import annotations

from detok.teachers.base import HOGPatchTeacher, Teacher


def build_teacher(spec: str, channels: int, image_size: int, patch_size: int) -> Teacher:
    """The teacher named by `spec` (module docstring), frozen, for `channels`-channel `image_size` images.

    Args:
        patch_size: the tokenizer's patch size (HOG's patch; the grid other teachers are pooled to).
    """
    kind, _, rest = spec.partition(":")
    if kind == "hog":
        teacher: Teacher = HOGPatchTeacher(channels, image_size, patch_size, int(rest) if rest else None)
    elif kind == "detok":
        from detok.teachers.mae import ALLOW_SUPERVISED, load_teacher

        folder, _, option = rest.rpartition(":")
        if option != ALLOW_SUPERVISED:
            folder, option = rest, ""
        if not folder:
            raise ValueError("teacher spec detok:FOLDER needs the folder of a `detok teacher train` run")
        teacher = load_teacher(folder, channels, image_size, allow_supervised=option == ALLOW_SUPERVISED)
    elif kind == "random":  # an untrained network of a teacher preset (tests; AlignTok's "no pretraining" ablation)
        from detok.teachers.mae import random_teacher

        teacher = random_teacher(rest, channels, image_size)
    elif kind == "timm":
        model, _, weights = rest.partition(":")
        model, _, size = model.partition("@")
        if not model or not weights:
            raise ValueError("teacher spec timm:MODEL[@SIZE]:WEIGHTS needs a timm model name and a local weights file")
        if size and not size.isdigit():
            raise ValueError(f"teacher spec {spec!r}: the input size after '@' must be a number of pixels")
        from detok.teachers.pretrained import TimmTeacher

        teacher = TimmTeacher(model, weights, channels, image_size, input_size=int(size) if size else None)
    else:
        raise ValueError(
            f"unknown teacher {spec!r}; known: hog[:CELL], detok:FOLDER[:allow-supervised], timm:MODEL[@SIZE]:WEIGHTS, "
            "random:PRESET"
        )
    teacher.requires_grad_(False)
    return teacher.eval()


def teacher_from_architecture(arch: dict, channels: int, image_size: int) -> Teacher:
    """An untrained, frozen teacher of the architecture `Teacher.architecture()` described, for `channels`-channel
    `image_size` images: the shell a checkpoint's saved teacher weights are loaded into."""
    if "timm" in arch:
        from detok.teachers.pretrained import TimmTeacher

        teacher: Teacher = TimmTeacher(arch["timm"], None, channels, image_size, input_size=arch.get("input_size"))
    else:
        from detok.config import from_dict
        from detok.registry import model_class
        from detok.teachers.mae import ClassifierTeacher, MAETeacher, MaskedAutoencoder

        cls = model_class(arch["arch"])
        model = cls(from_dict(cls.config_cls, arch["model"], "encoder_arch.model."))
        teacher = MAETeacher(model) if isinstance(model, MaskedAutoencoder) else ClassifierTeacher(model)
    teacher.requires_grad_(False)
    return teacher.eval()
