"""MAR, RandomAR and RasterAR specifics (the shared generator contract lives in test_generator_contract.py).

KV-cache sampling equals recomputation, causality, MAR's mask-ratio distribution and cosine schedule, the
generation order of each model, 1-D token sequences, and MAR's class-carrying buffer.
"""

import math

import pytest
import torch

from detok import create_model
from detok.generators.mar import cosine_mask_schedule, truncated_normal_mask_ratio


def _perturbed(name: str, std: float = 0.05, **overrides):
    """A tiny model in eval mode with its weights moved off their (partly zero) initialisation."""
    torch.manual_seed(0)
    model = create_model(name, **overrides).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


def _hook_head(model) -> list[int]:
    """Replace the DiffLoss sampler by one that returns the call index (as every channel) and logs row counts."""
    rows = []

    def fake_sample(cond, temperature=1.0, cfg_scale=1.0, generator=None):
        m = len(cond) // 2 if cfg_scale != 1.0 else len(cond)
        rows.append(m)
        return torch.full((m, model.config.token_dim), float(len(rows) - 1))

    model.diffloss.sample = fake_sample
    return rows


def _steps_per_position(out: torch.Tensor) -> torch.Tensor:
    """(N, T) call index that produced each raster position of hooked samples (N, C, *input_size)."""
    return out.flatten(2)[:, 0].round().long()


# --------------------------------------------------------------------------------------------------
# Causal AR
# --------------------------------------------------------------------------------------------------


def _linear_head(model) -> None:
    """Replace the DiffLoss sampler by a well-conditioned one: a fixed linear map of the condition, guided on the
    [class; null] halves, plus seeded noise.

    An untrained DDPM head is useless here: its first reverse step divides ε by √ᾱ_T ≈ 1e-4, so its tokens
    (~1e4 in size) are dominated by the initial noise and hardly depend on the condition, and float32 rounding
    of the condition still moves them by ~1e-3.
    """
    w = torch.randn(model.config.width, model.config.token_dim, generator=torch.Generator().manual_seed(5)) * 0.3

    def sample(cond, temperature=1.0, cfg_scale=1.0, generator=None):
        eps = cond @ w  # (M or 2M, token_dim)
        if cfg_scale != 1.0:
            c, u = eps.chunk(2)
            eps = u + cfg_scale * (c - u)
        return eps + temperature * torch.randn(eps.shape, generator=generator)

    model.diffloss.sample = sample


@pytest.mark.parametrize("order", ["random", "raster"])
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_kv_cache_sampling_equals_recomputing_the_prefix(order, cfg_scale):
    model = _perturbed(f"{order}ar-b-tiny")
    _linear_head(model)
    y = torch.tensor([0, 3, 7])

    def run(kv_cache):
        g = torch.Generator().manual_seed(11)
        return model.sample(y, cfg_scale=cfg_scale, temperature=0.9, generator=g, kv_cache=kv_cache)

    cached, recomputed = run(True), run(False)
    assert cached.abs().max() > 0.1
    torch.testing.assert_close(cached, recomputed, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("order", ["random", "raster"])
def test_output_at_a_position_ignores_later_tokens(order):
    model = _perturbed(f"{order}ar-b-tiny")
    cfg = model.config
    torch.manual_seed(1)
    x = torch.randn(2, cfg.num_tokens, cfg.token_dim)
    y = torch.tensor([1, 2])
    orders = model.token_orders(2, x.device, torch.Generator().manual_seed(3))
    k = 6  # perturb the tokens generated at steps k, k+1, ...
    later = orders[:, k:]
    x2 = x.clone()
    x2.scatter_(1, later[..., None].expand(-1, -1, cfg.token_dim), torch.randn(2, later.shape[1], cfg.token_dim))
    with torch.no_grad():
        a, b = model.forward_features(x, y, orders), model.forward_features(x2, y, orders)
    torch.testing.assert_close(a[:, : k + 1], b[:, : k + 1], rtol=0, atol=0)  # row k predicts token k: unseen
    assert not torch.allclose(a[:, k + 1], b[:, k + 1])  # row k+1 sees token k


def test_raster_order_is_raster():
    model = _perturbed("rasterar-b-tiny")
    rows = _hook_head(model)
    out = model.sample(torch.tensor([0, 1]), cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    t = model.config.num_tokens
    assert rows == [2] * t  # one token per sample per step
    assert torch.equal(_steps_per_position(out), torch.arange(t).expand(2, t))


def test_random_order_is_a_fresh_permutation_per_image():
    model = _perturbed("randomar-b-tiny")
    _hook_head(model)
    out = model.sample(torch.tensor([0, 0, 1]), generator=torch.Generator().manual_seed(0))
    steps = _steps_per_position(out)  # (N, T)
    t = model.config.num_tokens
    assert all(torch.equal(s.sort().values, torch.arange(t)) for s in steps)
    assert not torch.equal(steps[0], steps[1]) and not torch.equal(steps[0], torch.arange(t))


# --------------------------------------------------------------------------------------------------
# MAR
# --------------------------------------------------------------------------------------------------


def test_mask_ratio_is_a_truncated_normal_on_its_interval():
    low, std = 0.7, 0.25
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([truncated_normal_mask_ratio(low, 1.0, std, generator=g) for _ in range(4000)])
    assert draws.min() >= low and draws.max() <= 1.0
    # mean of N(1, std²) truncated to [low, 1]: 1 + std·(φ(α) − φ(0)) / (Φ(0) − Φ(α)), α = (low − 1)/std
    alpha = (low - 1.0) / std
    pdf = lambda v: math.exp(-v * v / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
    mean = 1.0 + std * (pdf(alpha) - pdf(0.0)) / (cdf(0.0) - cdf(alpha))
    assert abs(mean - 0.8670) < 1e-3
    assert abs(draws.mean().item() - mean) < 4 * draws.std().item() / math.sqrt(len(draws))


def test_cosine_schedule_counts():
    assert cosine_mask_schedule(16, 4) == [14, 11, 6, 0]  # ⌊16·cos(π/2·k/4)⌋ for k = 1, 2, 3, then all
    counts = cosine_mask_schedule(256, 64)
    unmasked = [a - b for a, b in zip([256, *counts], counts)]
    assert counts[-1] == 0 and min(unmasked) >= 1 and sum(unmasked) == 256
    assert counts[0] == math.floor(256 * math.cos(math.pi / 128))
    assert cosine_mask_schedule(3, 8)[-1] == 0  # more steps than tokens still ends fully generated


def test_mar_sampling_unmasks_by_the_schedule_in_a_random_order():
    model = _perturbed("mar-b-tiny")
    rows = _hook_head(model)
    out = model.sample(torch.tensor([0, 1, 2]), cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    t, counts = model.config.num_tokens, cosine_mask_schedule(model.config.num_tokens, model.config.num_iter)
    per_step = [a - b for a, b in zip([t, *counts], counts)]
    assert rows == [3 * c for c in per_step]
    steps = _steps_per_position(out)  # (N, T): the step that generated each position
    for s in steps:
        assert torch.bincount(s, minlength=len(per_step)).tolist() == per_step  # every token generated once
    assert not torch.equal(steps[0], steps[1])


def test_mar_buffer_carries_the_class():
    model = _perturbed("mar-b-tiny")
    cfg = model.config
    x = torch.randn(2, cfg.num_tokens, cfg.token_dim)
    mask = torch.ones(2, cfg.num_tokens)  # all masked, as at the first sampling step: only the buffer informs
    with torch.no_grad():
        cond = [
            model.forward_decoder(model.forward_encoder(x, mask, model.condition_buffer(y)), mask)
            for y in (torch.tensor([0, 0]), torch.tensor([0, 5]))
        ]
    assert torch.equal(cond[0][0], cond[1][0]) and not torch.allclose(cond[0][1], cond[1][1])


# --------------------------------------------------------------------------------------------------
# 1-D token sequences
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mar-b-tiny", "randomar-b-tiny", "rasterar-b-tiny"])
def test_one_dimensional_sequences_size_their_positions_by_length(name):
    model = _perturbed(name, input_size=(10,))
    cfg = model.config
    assert cfg.num_tokens == 10
    pos = model.enc_pos if hasattr(model, "enc_pos") else model.pos_embed
    assert pos.shape[1] == 10 + getattr(cfg, "buffer_size", 0)
    z = torch.randn(3, cfg.latent_channels, 10)
    assert torch.isfinite(model.train()(z, torch.tensor([0, 1, 2])))
    out = model.eval().sample(torch.tensor([0, 1, 2]), cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == z.shape and torch.isfinite(out).all()
