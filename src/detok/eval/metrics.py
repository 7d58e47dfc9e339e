"""Distribution metrics on feature vectors: Fréchet distance, Inception Score, precision/recall, KID.

Feature extraction is separate (any extractor yielding (N, D) features or (N, K) class probabilities);
everything here is numpy float64 so that results do not depend on the extractor's device or dtype.
"""

from __future__ import annotations

import numpy as np
import torch


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D)."""
    f = _np(features)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be (N >= 2, D), got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues clipped)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) (Heusel et al., 2017).

    Tr((Σ1Σ2)^½) is computed as Tr((AΣ2A)^½) with A = Σ1^½: AΣ2A is symmetric PSD and similar to Σ1Σ2,
    so an eigendecomposition gives a real answer even for singular or ill-conditioned covariances (where
    the general `sqrtm` of Σ1Σ2 returns complex parts or NaN).
    """
    mu1, mu2, s1, s2 = _np(mu1), _np(mu2), _np(sigma1), _np(sigma2)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    a = _sqrtm_psd(s1)
    m = a @ s2 @ a
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    fd = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
    scale = max(1.0, float(np.trace(s1) + np.trace(s2)))
    if fd < -1e-6 * scale:
        raise ArithmeticError(f"Fréchet distance came out negative ({fd}); the covariances are not PSD")
    return max(fd, 0.0)


def inception_score(probs, splits: int = 10) -> tuple[float, float]:
    """Mean and std over `splits` of exp(E_x KL(p(y|x) ‖ p(y))) for class probabilities (N, K)."""
    p = _np(probs)
    if p.ndim != 2 or (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError("probs must be (N, K) non-negative rows summing to 1")
    if not 1 <= splits <= len(p):
        raise ValueError(f"splits must be in [1, N={len(p)}], got {splits}")
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(0, keepdims=True)
        kl = (part * (np.log(np.clip(part, 1e-30, None)) - np.log(np.clip(marginal, 1e-30, None)))).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _kth_radius(x: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    radii = []
    for start in range(0, len(x), batch):
        d = torch.cdist(x[start : start + batch], x)  # (b, N)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # k+1: the point itself is at distance 0
    return torch.cat(radii)


def _coverage(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor, batch: int) -> float:
    inside = []
    for start in range(0, len(query), batch):
        d = torch.cdist(query[start : start + batch], ref)  # (b, M)
        inside.append((d <= radii[None]).any(dim=1))
    return torch.cat(inside).double().mean().item()


def precision_recall(real, fake, k: int = 3, batch: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) with k-NN hyperspheres, in float64.

    Precision: share of fake samples inside some real sample's k-NN ball; recall: share of real samples
    inside some fake sample's k-NN ball.
    """
    r = torch.as_tensor(_np(real))
    f = torch.as_tensor(_np(fake))
    if min(len(r), len(f)) <= k:
        raise ValueError(f"need more than k={k} samples in each set, got {len(r)} real and {len(f)} fake")
    precision = _coverage(f, r, _kth_radius(r, k, batch), batch)
    recall = _coverage(r, f, _kth_radius(f, k, batch), batch)
    return precision, recall


def kid(real, fake, subsets: int = 10, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al., 2018): unbiased MMD² with k(x, y) = (x·y/d + 1)³."""
    r, f = _np(real), _np(fake)
    m = min(subset_size, len(r), len(f))
    if m < 2:
        raise ValueError("KID needs at least 2 samples per set")
    d = r.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = r[rng.choice(len(r), m, replace=False)]
        y = f[rng.choice(len(f), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        off = ~np.eye(m, dtype=bool)
        values.append(kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))
