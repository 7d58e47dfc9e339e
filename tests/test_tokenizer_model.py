"""The l-DeTok ViT tokenizer's own contracts (masking, posterior, corruptions) on its tiny twins; the interface every
family shares is tested in test_tokenizer_contract.py."""

import dataclasses

import pytest
import torch

from detok import create_model, list_models
from detok.checkpoint import load_tokenizer, save_model_folder
from detok.tokenizers.corruption import CorruptionConfig, add_latent_noise, random_masking, sample_mask_ratio

TINY = list_models("detok-*-tiny", kind="tokenizer")


def _images(model, n=4, seed=0):
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, cfg.channels, cfg.image_size, cfg.image_size, generator=g) * 2 - 1


@pytest.mark.parametrize("name", TINY)
def test_shapes(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = _images(model)
    out = model(x, mask_ratio=0.5)
    assert out["recon"].shape == x.shape
    t = model.config.grid_size**2
    assert out["mask"].shape == (4, t) and out["mask"].sum(1).eq(round(t * 0.5)).all()
    model.eval()
    z = model.encode(x)
    assert z.shape == (4, *model.latent_shape)
    assert model.decode(z).shape == x.shape


@pytest.mark.parametrize("name", TINY)
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    x = _images(model)
    teachers = model.build_teachers()  # the distilled presets' projector learns from its teacher's features
    extra = {"teacher_features": [t(x) for t in teachers]} if teachers else {}
    out = model(x, mask_ratio=0.5, **extra)  # masking on, so the [MASK] token is used
    loss = (out["recon"] - x).pow(2).mean() + out["logvar"].mean() * 1e-3 + out["aux"].get("distill", 0.0)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


@pytest.mark.parametrize("name", TINY)
def test_save_load_roundtrip(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name).eval()
    save_model_folder(tmp_path, model)
    loaded = load_tokenizer(tmp_path)
    x = _images(model)
    assert torch.equal(model.encode(x), loaded.encode(x))
    assert torch.equal(model.decode(model.encode(x)), loaded.decode(loaded.encode(x)))


@pytest.mark.parametrize("name", TINY)
def test_same_seed_same_result(name):
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = create_model(name).train()
        outs.append(model(_images(model))["recon"])
    assert torch.equal(outs[0], outs[1])
    torch.manual_seed(124)
    model = create_model(name).train()
    assert not torch.equal(outs[0], model(_images(model))["recon"])


def test_inference_applies_no_corruption():
    torch.manual_seed(0)
    model = create_model("detok-fmnist32-tiny").train()  # even in train mode, encode/decode are clean
    x = _images(model)
    z1, z2 = model.encode(x), model.encode(x)
    assert torch.equal(z1, z2)
    mean = model.split_moments(model.forward_encoder(x))[0]
    assert torch.equal(z1, mean.transpose(1, 2).reshape(z1.shape))
    out = model(x, corrupt=False, sample_posterior=False)
    assert out["mask"].sum() == 0 and out["tau"].abs().sum() == 0
    assert torch.allclose(out["recon"], model.decode(z1), atol=1e-6)


def test_tau_zero_is_exact_and_tau_one_is_pure_noise():
    z = torch.randn(3, 5, 7)
    assert torch.equal(add_latent_noise(z, torch.zeros(3), gamma=3.0), z)
    torch.manual_seed(0)
    pure = add_latent_noise(z, torch.ones(3), gamma=3.0)
    torch.manual_seed(0)
    eps = 3.0 * torch.randn_like(z)
    assert torch.equal(pure, eps)
    big = add_latent_noise(torch.zeros(200_000), torch.ones(1), gamma=3.0)
    assert abs(big.std().item() - 3.0) < 0.03
    additive = add_latent_noise(z, torch.ones(3), gamma=0.0, form="additive")
    assert torch.equal(additive, z)
    with pytest.raises(ValueError, match="noise form"):
        add_latent_noise(z, torch.ones(3), 1.0, form="multiplicative")


def test_masking_ratio_distribution_matches_paper():
    cfg = CorruptionConfig(mask_max=0.7, mask_min=-0.1)
    g = torch.Generator().manual_seed(0)
    ratios = torch.tensor([sample_mask_ratio(cfg, g) for _ in range(20_000)])
    # P(m = 0) = P(U(-0.1, 0.7) < 0) = 1/8; above 0 the density is uniform on (0, 0.7).
    assert abs((ratios == 0).float().mean().item() - 0.125) < 0.01
    pos = ratios[ratios > 0]
    assert pos.max() <= 0.7
    hist = torch.histc(pos, bins=7, min=0, max=0.7) / len(pos)
    assert (hist - 1 / 7).abs().max() < 0.01
    assert sample_mask_ratio(dataclasses.replace(cfg, mask_mode="constant"), g) == 0.7


def test_random_masking_keeps_requested_count():
    ids, mask = random_masking(5, 64, 0.75, torch.device("cpu"))
    assert ids.shape == (5, 16) and mask.sum(1).eq(48).all()
    assert (ids.diff(dim=1) > 0).all()  # sorted, distinct
    assert torch.equal(mask.gather(1, ids), torch.zeros(5, 16))


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="patch size"):
        create_model("detok-fmnist32-tiny", image_size=30)
    with pytest.raises(ValueError, match="mask_max"):
        CorruptionConfig(mask_max=1.0)
    model = create_model("detok-fmnist32-tiny").eval()
    with pytest.raises(ValueError, match="channel mismatch"):
        model.encode(torch.zeros(2, 3, 32, 32))
    with pytest.raises(RuntimeError, match="latent statistics"):
        model.encode(torch.zeros(2, 1, 32, 32), normalize=True)
