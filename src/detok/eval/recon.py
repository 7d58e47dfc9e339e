"""Reconstruction quality of tokenizer round trips over a dataset split: PSNR, SSIM, and optionally rFID, LPIPS."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from detok.data import iter_batches


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-image PSNR in dB between image batches (N, C, H, W); `data_range` is max − min (2 for [-1, 1])."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()  # (C, 1, k, k)


def ssim(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Per-image SSIM (Wang et al., 2004) of [0, data_range] images, 11×11 Gaussian window (σ = 1.5), valid
    convolution; constants K1 = 0.01, K2 = 0.03 scaled by `data_range`; the mean SSIM map over channels and pixels.

    The images must start at 0 (pass [-1, 1] images as (x + 1) / 2): unlike PSNR, SSIM's luminance term
    (2μxμy + C1) / (μx² + μy² + C1) is not shift-invariant, so on [-1, 1] dark images would score near 1.
    """
    x, y = x.float(), y.float()
    c = x.shape[1]
    w = _gaussian_window(window, sigma, c, x.device)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = F.conv2d(x, w, groups=c), F.conv2d(y, w, groups=c)
    sxx = F.conv2d(x * x, w, groups=c) - mu_x**2
    syy = F.conv2d(y * y, w, groups=c) - mu_y**2
    sxy = F.conv2d(x * y, w, groups=c) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).flatten(1).mean(1)


@torch.no_grad()
def evaluate_reconstruction(
    tokenizer: torch.nn.Module,
    dataset,
    batch_size: int = 256,
    max_images: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    extractor=None,
    lpips: torch.nn.Module | None = None,
) -> dict[str, float]:
    """Mean PSNR/SSIM (and rFID, LPIPS when given) of encode → decode over the first `max_images` images.

    PSNR on [-1, 1] with data range 2 (equal to the usual [0, 1] / range-1 value), SSIM on [0, 1] as usual.
    Reconstructions are clamped to [-1, 1] as an image writer would.

    Args:
        extractor: a `FeatureExtractor` (eval/features.py); rFID is the Fréchet distance between its features
            of the originals and of the reconstructions, both rounded to uint8 as image files would be.
        lpips: an LPIPS module (losses/perceptual.py); its mean distance is reported.

    Returns:
        The means, their standard errors, the image count, "rfid"/"lpips" when requested, and for a discrete (VQ)
        tokenizer the codebook usage over all images: "code_usage" (fraction of codes used) and "perplexity".
    """
    from detok.eval.features import to_uint8_nchw
    from detok.eval.metrics import feature_stats, frechet_distance

    tokenizer.eval()
    layout = getattr(tokenizer, "latent_layout", None)  # anything with encode/decode can be evaluated
    discrete = layout is not None and layout.kind == "discrete"
    codes = torch.zeros(layout.codebook_size if discrete else 0, dtype=torch.long)
    psnrs, ssims, dists, feats_real, feats_fake = [], [], [], [], []
    for x, _ in iter_batches(dataset, batch_size, max_images, "reconstruct", progress):
        x = x.to(device)
        z = tokenizer.encode(x)
        if discrete:
            codes += torch.bincount(z.flatten().long().cpu(), minlength=len(codes))
        recon = tokenizer.decode(z).clamp(-1, 1)
        psnrs.append(psnr(recon, x).cpu())
        ssims.append(ssim((recon + 1) / 2, (x + 1) / 2).cpu())
        if lpips is not None:
            dists.append(lpips(recon, x).cpu())
        if extractor is not None:
            feats_real.append(extractor(to_uint8_nchw(x))[0].double())
            feats_fake.append(extractor(to_uint8_nchw(recon))[0].double())
    p, s = torch.cat(psnrs), torch.cat(ssims)
    out = {
        "psnr": p.mean().item(),
        "psnr_sem": (p.std() / math.sqrt(len(p))).item(),
        "ssim": s.mean().item(),
        "ssim_sem": (s.std() / math.sqrt(len(s))).item(),
        "images": len(p),
    }
    if lpips is not None:
        d = torch.cat(dists)
        out["lpips"], out["lpips_sem"] = d.mean().item(), (d.std() / math.sqrt(len(d))).item()
    if extractor is not None:
        real, fake = feature_stats(torch.cat(feats_real)), feature_stats(torch.cat(feats_fake))
        out["rfid"] = frechet_distance(*real, *fake)
    if discrete:
        prob = codes[codes > 0].double() / codes.sum()
        out["code_usage"] = (codes > 0).double().mean().item()
        out["perplexity"] = (-(prob * prob.log()).sum()).exp().item()
    return out
