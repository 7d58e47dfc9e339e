"""Distribution metrics against closed forms, an independent sqrtm reference and constructed cases."""

import numpy as np
import pytest
import torch

from detok.eval.metrics import feature_stats, frechet_distance, inception_score, kid, precision_recall


def test_fd_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(500, 16))
    mu, sigma = feature_stats(f)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8 * np.trace(sigma)


def test_fd_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    v1, v2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    expected = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_fd_agrees_with_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(12, 12)), rng.normal(size=(12, 12))
    s1, s2 = a @ a.T + 0.1 * np.eye(12), b @ b.T + 0.1 * np.eye(12)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_fd_is_finite_on_singular_and_ill_conditioned_covariances():
    rng = np.random.default_rng(3)
    few = rng.normal(size=(10, 64))  # N < D: rank-deficient covariance
    mu1, s1 = feature_stats(few)
    mu2, s2 = feature_stats(rng.normal(size=(10, 64)) + 0.5)
    fd = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(fd) and fd > 0 and isinstance(fd, float)
    q, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    ill = (q * np.logspace(-12, 3, 32)) @ q.T
    fd = frechet_distance(np.zeros(32), ill, np.zeros(32), np.eye(32))
    assert np.isfinite(fd) and fd >= 0


def test_inception_score_bounds():
    assert inception_score(np.full((100, 10), 0.1), splits=5)[0] == pytest.approx(1.0)
    onehot = np.eye(10)[np.arange(100) % 10]
    assert inception_score(onehot, splits=5)[0] == pytest.approx(10.0)
    with pytest.raises(ValueError):
        inception_score(np.full((10, 4), 0.3))


def test_precision_recall_constructed_cases():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(200, 4))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    modes = np.repeat(np.eye(4) * 50, 50, axis=0) + rng.normal(scale=0.5, size=(200, 4))
    half = modes[:100] + rng.normal(scale=0.05, size=(100, 4))  # covers modes 0 and 1 of 4
    precision, recall = precision_recall(modes, half)
    assert precision == 1.0 and recall == pytest.approx(0.5, abs=0.05)


def test_kid_zero_for_same_distribution_positive_when_shifted():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same, _ = kid(a, b, subsets=5, subset_size=200)
    shifted, _ = kid(a, b + 1.0, subsets=5, subset_size=200)
    assert abs(same) < 0.05 and shifted > 10 * abs(same) and shifted > 0.1


def test_ssim_matches_hand_computed_values_on_the_standard_scale():
    """Constant images leave only SSIM's luminance term, (2ab + C1) / (a² + b² + C1) with C1 = (0.01·L)²."""
    from detok.eval.recon import evaluate_reconstruction, ssim

    a, b = torch.full((1, 1, 16, 16), 0.02), torch.zeros(1, 1, 16, 16)
    c1 = 0.01**2
    assert torch.allclose(ssim(a, b), torch.tensor([(2 * 0.02 * 0.0 + c1) / (0.02**2 + c1)]))  # = 0.2
    assert torch.allclose(ssim(a, a), torch.tensor([1.0]))
    # textured images: SSIM equals its two-term formula computed by hand from the windowed moments (flat window)
    x = torch.rand(1, 1, 11, 11, generator=torch.Generator().manual_seed(0))
    y = (0.5 * x + 0.2).clamp(0, 1)
    w = ssim(x, y, window=11, sigma=1e6)  # sigma → ∞: a flat 11×11 window, one value per image
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(unbiased=False), y.var(unbiased=False)
    cxy = ((x - mx) * (y - my)).mean()
    c2 = 0.03**2
    hand = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert torch.allclose(w, hand.reshape(1), atol=1e-5)

    class Brighten(torch.nn.Module):  # reconstructs a flat image 0.04 brighter (in [-1, 1])
        def encode(self, x):
            return x

        def decode(self, z):
            return z + 0.04

    # Fashion-MNIST-like dark images: on the [0, 1] scale 0.02 → 0.04, i.e. luminance (2·0.02·0.04 + C1) / (0.02² +
    # 0.04² + C1) ≈ 0.81; on [-1, 1] the same pair would score ≈ 0.999
    dark = [(torch.full((2, 1, 16, 16), -0.96), torch.zeros(2))]
    got = evaluate_reconstruction(Brighten(), _ListDataset(dark), progress=False)["ssim"]
    assert got == pytest.approx((2 * 0.02 * 0.04 + c1) / (0.02**2 + 0.04**2 + c1), abs=1e-4)


class _ListDataset:
    """The smallest dataset `iter_batches` accepts: fixed batches."""

    def __init__(self, batches):
        self.x = torch.cat([b[0] for b in batches])
        self.y = torch.cat([b[1] for b in batches])
        self.hflip = False

    def __len__(self):
        return len(self.x)

    def get_batch(self, idx, generator=None):
        return self.x[idx], self.y[idx]


def test_psnr_by_hand():
    import math

    from detok.eval.recon import psnr

    x = torch.zeros(2, 1, 4, 4)
    assert torch.allclose(psnr(x + 0.1, x), torch.full((2,), 10 * math.log10(2.0**2 / 0.01)))  # [-1, 1]: range 2
    assert torch.allclose(psnr(x + 0.1, x, data_range=1.0), torch.full((2,), 10 * math.log10(1 / 0.01)))
