"""Contracts of the auxiliary tokenizer losses: LPIPS-VGG (offline, random weights) and the PatchGAN terms."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from detok.losses.gan import PatchDiscriminator, adaptive_weight, hinge_d_loss, hinge_g_loss
from detok.losses.perceptual import (
    ENV_VGG16_WEIGHTS,
    LPIPS,
    PerceptualUnavailableError,
    build_perceptual,
    vgg16_features,
)

# --------------------------------------------------------------------------------------------------
# LPIPS
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg_state():
    """A random VGG16 `features` state dict; He init keeps activations alive through all 13 convs."""
    torch.manual_seed(0)
    features = vgg16_features()
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features.state_dict()


@pytest.fixture(scope="module")
def weight_files(vgg_state, tmp_path_factory):
    """A torchvision-style vgg16 .pth (`features.` prefix plus a classifier key) and an LPIPS-format lin .pth."""
    root = tmp_path_factory.mktemp("weights")
    full = {f"features.{k}": v for k, v in vgg_state.items()}
    full["classifier.6.bias"] = torch.zeros(3)
    torch.save(full, root / "vgg16.pth")
    g = torch.Generator().manual_seed(1)
    lins = {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate((64, 128, 256, 512, 512))
    }
    torch.save(lins, root / "lin.pth")
    return root / "vgg16.pth", root / "lin.pth"


@pytest.fixture(scope="module")
def lpips(weight_files):
    return build_perceptual(backbone_path=weight_files[0], lin_path=weight_files[1])


def _pair(n=2, c=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, n, c, size, size, generator=g) * 2 - 1


def test_lpips_is_a_symmetric_distance(lpips):
    x, y = _pair()
    d = lpips(x, y)
    assert d.shape == (2,)
    assert torch.all(d > 0)
    assert torch.equal(lpips(x, x), torch.zeros(2))
    torch.testing.assert_close(lpips(y, x), d)


def test_lpips_matches_eq1_computed_by_slices(lpips):
    # Reference layout of the lpips package: five backbone slices ending at relu1_2 … relu5_3.
    x, y = _pair(seed=1)
    bounds = (0, 4, 9, 16, 23, 30)
    ref = torch.zeros(2)
    # the lpips package's ScalingLayer constants, written out here rather than read from the module under test
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    h = (torch.cat([x, y]) - shift) / scale
    for s, lin in enumerate(lpips.lins):
        h = lpips.backbone[bounds[s] : bounds[s + 1]](h)
        f = h / (h.square().sum(1, keepdim=True).sqrt() + 1e-10)
        ref = ref + (lin.weight[0, :, 0, 0].view(1, -1, 1, 1) * (f[:2] - f[2:]).square()).sum(1).mean((1, 2))
    torch.testing.assert_close(lpips(x, y), ref, rtol=1e-4, atol=1e-6)


def test_lpips_gradients_reach_inputs_only(lpips):
    x, y = _pair(seed=2)
    x.requires_grad_(True)
    lpips(x, y).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in lpips.parameters())


def test_lpips_greyscale_is_replicated_rgb(lpips):
    x, y = _pair(c=1, seed=3)
    torch.testing.assert_close(lpips(x, y), lpips(x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)))


def test_lpips_stays_frozen_in_eval(lpips):
    lpips.train()
    assert not lpips.training and not any(m.training for m in lpips.modules())
    assert not any(p.requires_grad for p in lpips.parameters())


def test_lpips_rejects_bad_inputs(lpips):
    x, y = _pair(size=16)
    lpips(x, y)  # 16 px is the minimum
    with pytest.raises(ValueError, match="at least 16"):
        lpips(x[..., :8, :8], y[..., :8, :8])
    with pytest.raises(ValueError, match="differ in shape"):
        lpips(x, y[:1])


def test_env_var_safetensors_features_only(lpips, vgg_state, weight_files, tmp_path, monkeypatch):
    path = tmp_path / "features.safetensors"
    save_file({k: v.contiguous() for k, v in vgg_state.items()}, path)
    monkeypatch.setenv(ENV_VGG16_WEIGHTS, str(path))
    from_env = build_perceptual(lin_path=weight_files[1])
    x, y = _pair(seed=4)
    torch.testing.assert_close(from_env(x, y), lpips(x, y))


def test_missing_weights_name_the_switch(weight_files, monkeypatch):
    monkeypatch.delenv(ENV_VGG16_WEIGHTS, raising=False)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(PerceptualUnavailableError, match=r"loss\.perceptual_weight=0") as info:
        build_perceptual(lin_path=weight_files[1])
    assert "detok[perceptual]" in str(info.value) and ENV_VGG16_WEIGHTS in str(info.value)


def test_env_var_to_missing_file_raises(weight_files, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VGG16_WEIGHTS, str(tmp_path / "nope.pth"))
    with pytest.raises(PerceptualUnavailableError, match="does not exist"):
        build_perceptual(lin_path=weight_files[1])


def test_wrong_backbone_keys_raise(weight_files, tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad)
    with pytest.raises(ValueError, match="not a torchvision vgg16"):
        build_perceptual(backbone_path=bad, lin_path=weight_files[1])


def test_missing_torchmetrics_names_the_extra(weight_files, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    with pytest.raises(PerceptualUnavailableError, match=r"detok\[perceptual\]") as info:
        build_perceptual(backbone_path=weight_files[0])
    assert "loss.perceptual_weight=0" in str(info.value)


def test_lin_weights_come_from_torchmetrics(weight_files):
    torchmetrics = pytest.importorskip("torchmetrics")
    model = build_perceptual(backbone_path=weight_files[0])
    shipped = Path(torchmetrics.__file__).parent / "functional" / "image" / "lpips_models" / "vgg.pth"
    state = torch.load(shipped, map_location="cpu", weights_only=True)
    for i, lin in enumerate(model.lins):
        assert torch.equal(lin.weight, state[f"lin{i}.model.1.weight"])
    assert isinstance(model, LPIPS)


# --------------------------------------------------------------------------------------------------
# GAN
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "n_layers", "out"), [((2, 1, 32, 32), 2, 6), ((2, 3, 64, 64), 3, 6)])
def test_discriminator_shapes(shape, n_layers, out):
    torch.manual_seed(0)
    disc = PatchDiscriminator(shape[1], base_channels=8, n_layers=n_layers)
    logits = disc(torch.randn(shape))
    assert logits.shape == (shape[0], 1, out, out)
    assert disc.output_size(shape[-1]) == out


def test_discriminator_size_limits():
    disc = PatchDiscriminator(1, base_channels=4, n_layers=3)
    assert disc.min_image_size == 24
    for size in range(24, 41):
        assert disc(torch.zeros(1, 1, size, size)).shape[-1] == disc.output_size(size) >= 1
    with pytest.raises(ValueError, match="at least 24x24"):
        disc(torch.zeros(1, 1, 23, 23))
    with pytest.raises(ValueError, match="unknown norm"):
        PatchDiscriminator(1, norm="instance")


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_discriminator_every_parameter_gets_a_gradient(norm):
    torch.manual_seed(0)
    disc = PatchDiscriminator(3, base_channels=8, n_layers=2, norm=norm)
    real, fake = disc(torch.randn(2, 3, 32, 32)), disc(torch.randn(2, 3, 32, 32))
    # The d-loss alone gives the last bias an exactly zero gradient at init (+1 and −1 cancel), so add the g-loss.
    (hinge_d_loss(real, fake) + hinge_g_loss(fake)).backward()
    for name, p in disc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_discriminator_init():
    torch.manual_seed(0)
    disc = PatchDiscriminator(3, base_channels=64, n_layers=3)
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5
    assert abs(convs[2].weight.std().item() - 0.02) < 2e-3


def test_hinge_losses_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - real) = 0, 0.5, 2
    fake = torch.tensor([-2.0, 0.0, 0.5])  # relu(1 + fake) = 0, 1, 1.5
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(0.5 * (2.5 / 3 + 2.5 / 3)))
    torch.testing.assert_close(hinge_g_loss(fake), torch.tensor(0.5))


def test_adaptive_weight_by_hand():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    x = torch.tensor([3.0, 4.0])
    out = w @ x  # 11
    rec = (out - 1.0).square()  # d/dw = 2·10·x = (60, 80), norm 100
    g = -3.0 * out  # d/dw = -3·x = (-9, -12), norm 15
    lam = adaptive_weight(rec, g, w)
    torch.testing.assert_close(lam, torch.tensor(100.0 / (15.0 + 1e-4)))
    assert not lam.requires_grad
    assert adaptive_weight(rec, g, w, max_weight=2.0).item() == 2.0
    (rec + lam * g).backward()  # the graph was retained for the caller
    torch.testing.assert_close(w.grad, torch.tensor([60.0, 80.0]) - lam * torch.tensor([9.0, 12.0]))


def test_adaptive_weight_leaves_the_generator_graph_usable():
    torch.manual_seed(0)
    decoder_out = nn.Conv2d(4, 3, 1)
    disc = PatchDiscriminator(3, base_channels=8, n_layers=2)
    recon = decoder_out(torch.randn(2, 4, 32, 32))
    rec = F.mse_loss(recon, torch.zeros_like(recon))
    disc.requires_grad_(False)
    g = hinge_g_loss(disc(recon))
    lam = adaptive_weight(rec, g, decoder_out.weight)
    assert torch.isfinite(lam) and lam > 0
    (rec + lam * g).backward()
    assert decoder_out.weight.grad is not None


def test_convnext_term_is_a_logit_distance_mixed_with_lpips(monkeypatch):
    """The paper's VGG+ConvNeXt perceptual loss: (LPIPS + c·‖f(x̂) − f(x)‖²_mean) / (1 + c), f a frozen classifier
    seeing 224-px ImageNet-normalised RGB; unavailable weights are an error that names the fix, never a zero."""
    import torch.nn as nn

    from detok.losses.convnext import LogitDistance, build_convnext_perceptual
    from detok.losses.perceptual import PerceptualUnavailableError
    from detok.losses.tokenizer import LossConfig, TokenizerLoss

    torch.manual_seed(0)
    classifier = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 10))
    dist = LogitDistance(classifier)
    x, y = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    seen = []
    classifier.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    d = dist(x, y)
    assert d.shape == (2,) and torch.all(d > 0) and torch.allclose(dist(x, x), torch.zeros(2))
    assert seen[0] == (2, 3, 224, 224)  # grey replicated to RGB, resized
    dist.train()
    assert not classifier.training and not any(p.requires_grad for p in classifier.parameters())

    loss = TokenizerLoss(LossConfig(perceptual_weight=0.0, gan_weight=0.0), 1, 10)
    loss.perceptual, loss.convnext = (lambda a, b: torch.full((2,), 0.5)), dist  # a stand-in LPIPS
    loss.cfg = LossConfig(perceptual_weight=1.0, convnext_weight=0.1, gan_weight=0.0)
    assert loss.perceptual_distance(x, y) == pytest.approx(((0.5 + 0.1 * d.mean()) / 1.1).item(), rel=1e-6)

    monkeypatch.setenv("DETOK_CONVNEXT_WEIGHTS", "/nonexistent/convnext.pth")
    with pytest.raises(PerceptualUnavailableError, match="loss.convnext_weight=0"):
        build_convnext_perceptual()
