"""Semantic alignment of tokenizer latents with a frozen teacher's patch features.

Two published forms, each a config a tokenizer family carries and a loss it returns among its auxiliary terms:

- **Distillation** (l-DeTok App. A.4, after REPA, arXiv:2410.06940): a three-layer MLP projector on the *noised*
  latents, Linear(C, 2048) → SiLU → Linear(2048, 2048) → SiLU → Linear(2048, D_teacher), trained to maximise the
  cosine similarity to the teacher's patch features at the visible positions; loss 1 − cos, weight 1.0.
- **VA-VAE's vision-foundation (VF) loss** ("Reconstruction vs. Generation", Yao & Wang, arXiv:2501.01423;
  hustvl/LightningDiT): a 1×1 projection z' of the latent to the teacher's width and two margin terms,
      L_mcos = mean_ij ReLU(1 − m1 − cos(z'_ij, f_ij))                      (m1 = 0.5)
      L_mdms = mean_i,j,k ReLU(|cos(z'_j, z'_k) − cos(f_j, f_k)| − m2)      (m2 = 0.25, pairs within image i)
  weighted adaptively, w = λ_vf · ‖∇L_nll‖ / (‖∇L_vf‖ + 1e-4) at the encoder's last layer (λ_vf = 0.1); the
  tokenizer loss computes w (`TokenizerLoss`, from the term's entry in the forward's "aux_adaptive").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from detok.config import FractionBelowOne, NonNegativeFloat, PositiveInt, check_fields


@dataclass(frozen=True)
class DistillConfig:
    """l-DeTok's semantic distillation (App. A.4).

    Attributes:
        teacher: teacher spec (`detok.teachers.specs.build_teacher`): at paper size DINOv2-B through timm from a local
            weights file, at FMNIST size the offline teacher detok trains itself (never a label-trained classifier).
        teacher_dim: the teacher's feature width D (768 for DINOv2-B); checked against the teacher when it is built.
        hidden: the projector's hidden width (2048 in the paper).
        weight: λ of the 1 − cos term (1.0 in the paper, "not swept or tuned").
    """

    teacher: str
    teacher_dim: PositiveInt = 768
    hidden: PositiveInt = 2048
    weight: NonNegativeFloat = 1.0

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class VFConfig:
    """VA-VAE's vision-foundation loss.

    Attributes:
        teacher: teacher spec (DINOv2-L in VA-VAE).
        teacher_dim: the teacher's width (1024 for DINOv2-L).
        margin_cos: m1 of the marginal cosine term.
        margin_dist: m2 of the marginal distance-matrix term.
        weight: λ_vf, multiplied by the adaptive ratio of gradient norms at the encoder's last layer.
        adaptive: use the adaptive ratio (VA-VAE's default); off, the terms enter with `weight` alone.
    """

    teacher: str
    teacher_dim: PositiveInt = 1024
    margin_cos: FractionBelowOne = 0.5
    margin_dist: FractionBelowOne = 0.25
    weight: NonNegativeFloat = 0.1
    adaptive: bool = True

    def __post_init__(self):
        check_fields(self)


def check_teacher_width(teacher: nn.Module, expected: int, field_name: str) -> None:
    """Refuse a teacher whose feature width is not what the projector was built for."""
    if teacher.feature_dim != expected:
        raise ValueError(
            f"the teacher gives {teacher.feature_dim}-d features but {field_name} is {expected}; "
            f"set {field_name}={teacher.feature_dim} (the output width of the head that predicts them)"
        )


def square_side(tokens: int) -> int:
    """The side of a square grid of `tokens` tokens (teachers of square images give square grids)."""
    side = round(tokens**0.5)
    if side * side != tokens:
        raise ValueError(f"teacher features of {tokens} tokens do not form a square grid")
    return side


class Projector(nn.Sequential):
    """REPA's three-layer MLP: Linear(C, H) → SiLU → Linear(H, H) → SiLU → Linear(H, D)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__(
            nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out_dim)
        )


def cosine_distill_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − cos(pred, target) per token, averaged: pred and target (N, T, D) at the same positions."""
    return (1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1)).mean()


def vf_losses(z: torch.Tensor, f: torch.Tensor, margin_cos: float, margin_dist: float) -> dict[str, torch.Tensor]:
    """VA-VAE's marginal cosine and distance-matrix terms for projected latents z and teacher features f, both
    (N, T, D) at the same positions. Returns {"vf_mcos", "vf_mdms"}."""
    z, f = F.normalize(z.float(), dim=-1), F.normalize(f.float(), dim=-1)
    mcos = F.relu(1.0 - margin_cos - (z * f).sum(-1)).mean()  # (N, T) → scalar
    sim_z = z @ z.transpose(1, 2)  # (N, T, T) cosine similarities within each image
    sim_f = f @ f.transpose(1, 2)  # (N, T, T)
    mdms = F.relu((sim_z - sim_f).abs() - margin_dist).mean()
    return {"vf_mcos": mcos, "vf_mdms": mdms}
