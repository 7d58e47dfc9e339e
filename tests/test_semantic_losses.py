"""Semantic alignment: l-DeTok's distillation (App. A.4) and VA-VAE's VF loss, against hand-computed values, and
both trained through the CLI with an offline teacher."""

import json
import math

import numpy as np
import pytest
import torch

from detok import create_model
from detok.cli import main as cli_main
from detok.losses.semantic import DistillConfig, cosine_distill_loss, vf_losses
from detok.losses.tokenizer import LossConfig, TokenizerLoss


def test_cosine_distillation_by_hand():
    pred = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [3.0, 0.0]]])  # (1, 3, 2)
    target = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [2.0, 0.0]]])
    # 1 − cos per token: orthogonal 1, 45° 1 − 1/√2, parallel 0
    expected = (1.0 + (1 - 1 / math.sqrt(2)) + 0.0) / 3
    assert cosine_distill_loss(pred, target).item() == pytest.approx(expected, abs=1e-6)


def test_vf_margin_terms_by_hand():
    """z = (e1, e2), f = (e1, e1) in one image. Marginal cosine: ReLU(1 − 0.5 − 1) = 0 and ReLU(0.5 − 0) = 0.5 →
    mean 0.25. Cosine matrices [[1, 0], [0, 1]] vs [[1, 1], [1, 1]]: |Δ| = [[0, 1], [1, 0]], ReLU(|Δ| − 0.25) mean
    = (0.75 + 0.75) / 4 = 0.375. Scaling z or f changes nothing (cosines)."""
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    f = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    parts = vf_losses(z, f, 0.5, 0.25)
    assert parts["vf_mcos"].item() == pytest.approx(0.25) and parts["vf_mdms"].item() == pytest.approx(0.375)
    scaled = vf_losses(3 * z, 0.5 * f, 0.5, 0.25)
    assert all(scaled[k].item() == pytest.approx(parts[k].item()) for k in parts)
    aligned = vf_losses(f, f, 0.5, 0.25)
    assert aligned["vf_mcos"].item() == 0.0 and aligned["vf_mdms"].item() == 0.0


def test_the_adaptive_vf_weight_is_the_ratio_of_gradient_norms_at_the_encoder():
    """recon = w·1 on a zero image: MSE = w², ∂/∂w = 2w = 4 at w = 2; vf = 3w, ∂/∂w = 3. The tokenizer loss weights
    vf by λ·4 / (3 + 1e-4) and adds it after MSE."""
    w = torch.nn.Parameter(torch.tensor([2.0]))
    x = torch.zeros(1, 1, 2, 2)
    recon = w * torch.ones(1, 1, 2, 2)
    out = {"recon": recon, "aux": {"vf": 3 * w.sum()}, "aux_adaptive": {"vf": 0.1}}
    loss_fn = TokenizerLoss(LossConfig(perceptual_weight=0.0, gan_weight=0.0), 1, total_steps=10)
    loss, terms = loss_fn.generator_loss(x, out, step=0, encoder_layer=w)
    ratio = 4.0 / (3.0 + 1e-4)
    assert terms["vf_weight"].item() == pytest.approx(ratio, rel=1e-5)
    assert loss.item() == pytest.approx(4.0 + 0.1 * ratio * 6.0, rel=1e-5)
    with pytest.raises(ValueError, match="encoder's last layer"):
        loss_fn.generator_loss(x, {"recon": recon, "aux": {"vf": 3 * w.sum()}, "aux_adaptive": {"vf": 0.1}}, step=0)


def test_distillation_uses_the_noised_latents_at_visible_positions_only():
    torch.manual_seed(0)
    model = create_model("detok-bb-distill-tiny").train()
    teacher = model.build_teachers()[0]
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    feats = teacher(x)  # (2, 64, 108): the tokenizer's own 8×8 grid
    torch.manual_seed(1)
    out = model(x, mask_ratio=0.5, teacher_features=[feats])
    masked = out["mask"].bool()  # (N, T), 1 = removed
    changed = feats.clone()
    changed[masked] = torch.randn_like(changed[masked])  # features the projector never sees
    torch.manual_seed(1)
    again = model(x, mask_ratio=0.5, teacher_features=[changed])
    assert again["aux"]["distill"].item() == pytest.approx(out["aux"]["distill"].item(), abs=1e-6)
    changed[~masked] = torch.randn_like(changed[~masked])
    torch.manual_seed(1)
    assert model(x, mask_ratio=0.5, teacher_features=[changed])["aux"]["distill"].item() != pytest.approx(
        out["aux"]["distill"].item(), abs=1e-4
    )


@pytest.mark.parametrize("tau", [1.0, 0.0])
def test_the_projector_reads_the_noised_latents(tau, monkeypatch):
    """Alg. 1 distils from z_noised = (1 − τ)·z + τ·ε. With τ forced to 1 the projector reads pure noise γ·ε: the
    term is the same for any image and sends no gradient to the encoder. With τ forced to 0 it reads the image's
    latents: the term depends on the image and trains the encoder."""
    from detok.tokenizers import corruption

    monkeypatch.setattr(corruption, "sample_tau", lambda cfg, n, device: torch.full((n,), tau, device=device))
    torch.manual_seed(0)
    model = create_model("detok-bb-distill-tiny").train()
    feats = model.build_teachers()[0](torch.rand(2, 3, 32, 32) * 2 - 1)  # fixed targets for both images

    def distill(seed: int) -> tuple[float, torch.Tensor]:
        images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        model.zero_grad(set_to_none=False)
        torch.manual_seed(3)  # the same posterior sample and noise ε for every image
        out = model(images, mask_ratio=0.0, teacher_features=[feats])
        assert torch.equal(out["tau"], torch.full((2,), tau))
        out["aux"]["distill"].backward()
        return out["aux"]["distill"].item(), model.patch_embed.weight.grad.abs().sum().item()

    (a, grad_a), (b, _) = distill(1), distill(2)
    if tau == 1.0:
        assert a == pytest.approx(b, abs=1e-6) and grad_a == 0.0
    else:
        assert a != pytest.approx(b, abs=1e-4) and grad_a > 0.0


def test_a_teacher_of_the_wrong_width_is_refused():
    from dataclasses import replace

    from detok.tokenizers.detok import DeTok

    cfg = create_model("detok-bb-distill-tiny").config
    model = DeTok(replace(cfg, distill=DistillConfig(teacher="hog", teacher_dim=100, hidden=8)))
    with pytest.raises(ValueError, match="model.distill.teacher_dim=108"):
        model.build_teachers()
    with pytest.raises(ValueError, match="pooled"):
        from detok.teachers.base import pool_to_grid

        pool_to_grid(torch.zeros(1, 9, 4), (3, 3), (2, 2))


@pytest.mark.parametrize("preset", ["detok-bb-distill-tiny", "vavae-f16d32-tiny"])
def test_semantic_tokenizers_train_through_the_cli_with_their_teacher(preset, tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "d.npz"
    np.savez(npz, images=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), labels=np.arange(8) % 2)
    common = ["tokenizer", "train", "--preset", preset, "--out", str(tmp_path / "tok"), "--set", "data.name=npz",
              "--set", f"data.root={npz}", "--set", "train.progress=false", "--set", "train.threads=1",
              "--set", "train.batch_size=4", "--set", "loss.gan_weight=0"]  # fmt: skip
    assert cli_main([*common, "--set", "train.images=16"]) == 0
    lines = [line for line in (tmp_path / "tok" / "log.jsonl").read_text().splitlines() if line]
    term = "distill" if "distill" in preset else "vf_mcos"
    logged = [json.loads(line) for line in lines]
    assert [r["step"] for r in logged][-1] == 4 and all(term in r for r in logged)
    if term == "vf_mcos":
        assert all(r["vf_weight"] > 0 for r in logged)
