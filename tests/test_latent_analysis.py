"""Latent analysis: the linear probe learns and is deterministic, the GMM finds the modes, robustness is exact."""

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from detok import create_model
from detok.data import TensorImageDataset
from detok.eval.latent_analysis import (
    RESULT_FILE,
    analyze_latents,
    denoising_robustness,
    gmm_modes,
    latent_features,
    linear_probe,
)
from detok.eval.recon import psnr

TINY = "detok-fmnist32-tiny"


def _squares(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (n, 1, 32, 32): a bright square in one of three places on a dark noisy background."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    images = torch.randint(0, 40, (n, 1, 32, 32), generator=g, dtype=torch.uint8)
    for img, y in zip(images, labels):
        r, c = [(3, 3), (3, 19), (19, 11)][int(y)]
        img[:, r : r + 10, c : c + 10] = 230
    return images, labels


def _unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    return create_model(TINY).eval()


@pytest.fixture(scope="module")
def overfit():
    """A tiny tokenizer trained briefly (clean round trips only) on 8 images, and those images."""
    torch.manual_seed(0)
    model = create_model(TINY)
    x = _unit(_squares(8, seed=1)[0])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = F.mse_loss(model(x, corrupt=False, sample_posterior=False)["recon"], x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), x


# --------------------------------------------------------------------------------------------------
# Linear probe
# --------------------------------------------------------------------------------------------------


def _blobs(n: int, seed: int, separation: float = 6.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    feats = torch.randn(n, 20, generator=g) + 5.0  # an offset the standardisation must remove
    feats[torch.arange(n), labels] += separation
    return feats, labels


def test_probe_separates_separable_features():
    result = linear_probe(*_blobs(300, seed=0), *_blobs(300, seed=1), epochs=20)
    assert result["test_accuracy"] >= 0.95, result
    assert (result["train_images"], result["test_images"], result["feature_dim"]) == (300, 300, 20)
    assert result["epochs"] == 20 and result["num_classes"] == 3
    json.dumps(result)


def test_probe_on_random_labels_is_near_chance():
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(1400, 50, generator=g), torch.randint(0, 4, (1400,), generator=g)
    result = linear_probe(feats[:400], labels[:400], feats[400:], labels[400:], epochs=20)
    assert abs(result["test_accuracy"] - 0.25) < 0.07, result
    assert result["train_accuracy"] > result["test_accuracy"] + 0.1  # it memorises the training labels


def test_probe_is_deterministic_under_a_seed():
    # One epoch of small, large steps on overlapping classes: the minibatch order shows in the accuracies.
    data = (*_blobs(200, seed=0, separation=1.0), *_blobs(200, seed=1, separation=1.0))
    kwargs = {"epochs": 1, "batch_size": 8, "lr": 0.1}
    assert linear_probe(*data, seed=5, **kwargs) == linear_probe(*data, seed=5, **kwargs)
    assert linear_probe(*data, seed=5, **kwargs) != linear_probe(*data, seed=6, **kwargs)


def test_probe_rejects_bad_inputs():
    feats, labels = _blobs(50, seed=0)
    with pytest.raises(ValueError, match="labels"):
        linear_probe(feats, labels[:-1], feats, labels)
    with pytest.raises(ValueError, match="differ in size"):
        linear_probe(feats, labels, feats[:, :10], labels)
    with pytest.raises(ValueError, match="positive"):
        linear_probe(feats, labels, feats, labels, epochs=0)


def test_latent_features_use_the_tokenizer_statistics(tokenizer):
    images, labels = _squares(10, seed=0)
    dataset = TensorImageDataset(images, labels, ["a", "b", "c"])
    raw, y = latent_features(tokenizer, dataset, max_images=7, batch_size=4, progress=False)
    assert raw.shape == (7, 8 * 8 * 8) and raw.dtype == torch.float32 and torch.equal(y, labels[:7])
    assert torch.allclose(raw, tokenizer.encode(_unit(images[:7])).flatten(1), atol=1e-5)

    normed = create_model(TINY, latent_mean=(1.0,) * 8, latent_std=(2.0,) * 8)
    normed.load_state_dict(tokenizer.state_dict())
    feats, _ = latent_features(normed, dataset, max_images=7, progress=False)
    assert torch.allclose(feats, (raw - 1.0) / 2.0, atol=1e-5)

    with pytest.raises(ValueError, match="hflip"):
        latent_features(tokenizer, TensorImageDataset(images, labels, ["a", "b", "c"], hflip=True))


# --------------------------------------------------------------------------------------------------
# GMM modes
# --------------------------------------------------------------------------------------------------


def _clusters(n_per: int = 100, seed: int = 0) -> np.ndarray:
    """Four unit-variance Gaussian clusters in 10-D at the corners of a square of side 16."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((4, 10))
    centres[:, :2] = [[8, 8], [8, -8], [-8, 8], [-8, -8]]
    return np.concatenate([c + rng.standard_normal((n_per, 10)) for c in centres])


def test_gmm_recovers_the_number_of_modes():
    result = gmm_modes(torch.from_numpy(_clusters()).float(), ks=(1, 2, 4, 8))
    assert result["best_k_bic"] == 4, result
    nll = {r["k"]: r["nll"] for r in result["rows"]}
    assert nll[1] > nll[2] > nll[4], nll
    assert result["images"] == 400 and result["feature_dim"] == 10
    assert result["pca_dims"] == 2 and result["explained_variance"] >= 0.9
    json.dumps(result)


def test_gmm_is_deterministic_and_honours_max_images():
    x = _clusters()
    a, b = gmm_modes(x, ks=(2, 4), seed=3), gmm_modes(x, ks=(2, 4), seed=3)
    assert a == b
    assert gmm_modes(x, ks=(2,), max_images=100)["images"] == 100


def test_gmm_rejects_bad_inputs(monkeypatch):
    x = _clusters(n_per=5)
    with pytest.raises(ValueError, match="ks"):
        gmm_modes(x, ks=(1, 40))
    with pytest.raises(ValueError, match="variance"):
        gmm_modes(x, ks=(1,), variance=0.0)
    with pytest.raises(ValueError, match="covariance"):
        gmm_modes(x, ks=(1,), covariance="diagonal")
    monkeypatch.setitem(sys.modules, "sklearn.mixture", None)
    with pytest.raises(ImportError, match=r"detok\[eval\]"):
        gmm_modes(x, ks=(1,))


# --------------------------------------------------------------------------------------------------
# Denoising robustness
# --------------------------------------------------------------------------------------------------


def test_zero_corruption_is_the_plain_round_trip(tokenizer):
    x = _unit(_squares(6, seed=0)[0])
    expected = psnr(tokenizer.decode(tokenizer.encode(x)).clamp(-1, 1), x).mean().item()
    result = denoising_robustness(tokenizer, x, taus=(0.0, 0.5), mask_ratios=(0.0, 0.5))
    assert result["noise"][0]["psnr"] == pytest.approx(expected, abs=1e-4)
    assert result["mask"][0]["psnr"] == pytest.approx(expected, abs=1e-4)
    assert result["noise"][1]["psnr"] != pytest.approx(expected, abs=1e-3)
    assert [m["masked_tokens"] for m in result["mask"]] == [0, 32]
    assert result["images"] == 6 and result["gamma"] == 3.0
    json.dumps(result)


def test_noise_lowers_psnr_of_a_trained_tokenizer(overfit):
    model, x = overfit
    result = denoising_robustness(model, x, taus=(0.0, 0.5, 1.0), mask_ratios=(0.0,), gamma=10.0)
    clean, half, pure = (r["psnr"] for r in result["noise"])
    assert clean > half > pure, result["noise"]
    assert clean > pure + 5.0, result["noise"]


def test_masking_decodes_with_the_mask_token(tokenizer):
    x = _unit(_squares(4, seed=0)[0])
    ratios = (0.0, 0.3, 0.7)
    base = [r["psnr"] for r in denoising_robustness(tokenizer, x, taus=(0.0,), mask_ratios=ratios)["mask"]]
    loud = create_model(TINY)
    loud.load_state_dict(tokenizer.state_dict())
    with torch.no_grad():
        loud.mask_token.fill_(5.0)
    changed = [r["psnr"] for r in denoising_robustness(loud, x, taus=(0.0,), mask_ratios=ratios)["mask"]]
    assert changed[0] == pytest.approx(base[0], abs=1e-5)  # nothing masked: [MASK] unused
    assert all(abs(c - b) > 1e-3 for c, b in zip(changed[1:], base[1:])), (base, changed)


def test_robustness_is_seeded_and_leaves_the_global_rng_alone(tokenizer):
    x = _unit(_squares(4, seed=0)[0])
    kwargs = {"taus": (0.5,), "mask_ratios": (0.5,)}
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = denoising_robustness(tokenizer, x, seed=1, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    assert a == denoising_robustness(tokenizer, x, seed=1, **kwargs)
    b = denoising_robustness(tokenizer, x, seed=2, **kwargs)
    assert a["noise"] != b["noise"] and a["mask"] != b["mask"]


def test_strips_are_written(tokenizer, tmp_path):
    x = _unit(_squares(5, seed=0)[0])
    result = denoising_robustness(tokenizer, x, strip_path_prefix=f"{tmp_path}/r_")
    assert (result["noise_strip"], result["mask_strip"]) == ("r_noise.png", "r_mask.png")
    with Image.open(tmp_path / "r_noise.png") as im:  # 4 rows (images) × 11 columns (τ), 32 px + 2 px padding
        assert im.format == "PNG" and im.mode == "L" and im.size == (11 * 34 + 2, 4 * 34 + 2)
    with Image.open(tmp_path / "r_mask.png") as im:
        assert im.size == (10 * 34 + 2, 4 * 34 + 2)


def test_pure_noise_column_ignores_the_image(tokenizer, tmp_path):
    # At τ = 1 the decoder sees γε alone, the same ε for any input under one seed.
    for name, seed in (("a", 0), ("b", 1)):
        x = _unit(_squares(2, seed=seed)[0])
        denoising_robustness(tokenizer, x, taus=(0.0, 1.0), mask_ratios=(0.0,), strip_path_prefix=f"{tmp_path}/{name}")
    a, b = (np.asarray(Image.open(tmp_path / f"{n}noise.png")) for n in "ab")
    half = a.shape[1] // 2
    assert np.array_equal(a[:, half:], b[:, half:]) and not np.array_equal(a[:, :half], b[:, :half])


def test_robustness_rejects_bad_inputs(tokenizer):
    x = _unit(_squares(2, seed=0)[0])
    for kwargs, match in (
        ({"taus": (0.0, 1.5)}, "taus"),
        ({"taus": ()}, "taus"),
        ({"mask_ratios": (0.5, 1.0)}, "mask_ratios"),
        ({"mask_ratios": (-0.1,)}, "mask_ratios"),
        ({"gamma": -1.0}, "gamma"),
    ):
        with pytest.raises(ValueError, match=match):
            denoising_robustness(tokenizer, x, **kwargs)
    with pytest.raises(ValueError, match="images"):
        denoising_robustness(tokenizer, x[0])


# --------------------------------------------------------------------------------------------------
# All three
# --------------------------------------------------------------------------------------------------


def test_analyze_latents_writes_all_sections(tokenizer, tmp_path):
    classes = ["a", "b", "c"]
    train = TensorImageDataset(*_squares(48, seed=0), classes)
    test = TensorImageDataset(*_squares(24, seed=1), classes)
    result = analyze_latents(
        tokenizer,
        train,
        test,
        tmp_path / "analysis",
        probe_train_images=32,
        probe_test_images=16,
        gmm_images=48,
        robustness_images=3,
        ks=(1, 2),
        progress=False,
    )
    saved = json.loads((tmp_path / "analysis" / RESULT_FILE).read_text())
    assert saved == json.loads(json.dumps(result))
    assert set(saved) == {"linear_probe", "gmm", "robustness", "settings"}
    assert saved["linear_probe"]["train_images"] == 32 and saved["linear_probe"]["test_images"] == 16
    assert saved["gmm"]["images"] == 48 and [r["k"] for r in saved["gmm"]["rows"]] == [1, 2]
    assert saved["robustness"]["images"] == 3 and len(saved["robustness"]["noise"]) == 11
    assert saved["settings"]["latents"] == "raw" and saved["settings"]["ks"] == [1, 2]
    for key in ("noise_strip", "mask_strip"):
        assert (tmp_path / "analysis" / saved["robustness"][key]).is_file()
    with pytest.raises(ValueError, match="positive"):
        analyze_latents(tokenizer, train, test, tmp_path / "x", robustness_images=0)
    with pytest.raises(ValueError, match="ks"):
        analyze_latents(tokenizer, train, test, tmp_path / "x", gmm_images=8, ks=(1, 16))
