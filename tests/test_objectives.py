"""Contracts of the generator objectives: DDPM (`diffusion`), MAR's DiffLoss head (`diffloss`), flow matching (`flow`).

Oracle models (the exact ε or velocity for a point-mass data distribution x = c) check that the samplers
integrate to the data; closed forms check the schedules, the KL and the decoder likelihoods.
"""

import math

import pytest
import torch

from detok.objectives.diffloss import DiffLoss, DiffLossConfig
from detok.objectives.diffusion import (
    DDPMConfig,
    GaussianDiffusion,
    continuous_gaussian_log_likelihood,
    cosine_betas,
    discretized_gaussian_log_likelihood,
    linear_betas,
    normal_kl,
)
from detok.objectives.flow import FlowConfig, FlowMatching, shift_noise_level, time_grid

# --------------------------------------------------------------------------------------------------
# DDPM: schedules, forward process, helpers
# --------------------------------------------------------------------------------------------------


def test_linear_schedule_endpoints_and_scaling():
    betas = linear_betas(1000)
    assert betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(2e-2)
    short = linear_betas(100)  # scaled by 1000/T so the chain still ends near pure noise
    assert short[0].item() == pytest.approx(1e-3) and short[-1].item() == pytest.approx(0.2)
    for schedule in ("linear", "cosine"):
        ab = GaussianDiffusion(DDPMConfig(schedule=schedule)).alphas_cumprod
        assert (ab[1:] < ab[:-1]).all() and 0 < ab[-1] < 1e-4 and ab[0] > 0.999


def test_cosine_schedule_matches_the_formula_by_hand():
    def f(t: float, T: int = 10, s: float = 0.008) -> float:
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    betas = cosine_betas(10)
    assert betas[3].item() == pytest.approx(1 - f(4) / f(3), rel=1e-12)
    alphabar = torch.cumprod(1 - betas, 0)
    assert alphabar[5].item() == pytest.approx(f(6) / f(0), rel=1e-12)  # ᾱ_t = f(t+1)/f(0) before clipping
    assert betas.max().item() <= 0.999


def test_q_sample_statistics():
    diffusion = GaussianDiffusion(DDPMConfig(train_steps=100, sample_steps=10))
    x0 = torch.full((20000, 1), 2.0)
    t = torch.full((20000,), 40)
    gen = torch.Generator().manual_seed(0)
    xt = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
    ab = diffusion.alphas_cumprod[40].item()
    assert xt.mean().item() == pytest.approx(2 * math.sqrt(ab), abs=0.02)
    assert xt.std().item() == pytest.approx(math.sqrt(1 - ab), abs=0.02)


def test_respacing_to_every_step_reproduces_the_training_chain():
    diffusion = GaussianDiffusion(DDPMConfig(train_steps=50, schedule="cosine", sample_steps=50))
    full = diffusion.respaced(50)
    assert torch.equal(full.timesteps, torch.arange(50))
    torch.testing.assert_close(full.betas, diffusion.betas, rtol=1e-12, atol=1e-15)
    short = diffusion.respaced(5)
    assert short.timesteps.tolist() == [0, 12, 24, 37, 49]  # evenly spaced, both ends kept
    # β of the respaced chain is recomputed from ᾱ, so the chain's ᾱ is the subset of the original one
    torch.testing.assert_close(torch.cumprod(1 - short.betas, 0), diffusion.alphas_cumprod[short.timesteps])


def test_normal_kl_and_likelihoods_against_closed_forms():
    normal = torch.distributions.Normal
    m1, lv1, m2, lv2 = (
        torch.tensor([0.3, -1.0]),
        torch.tensor([0.1, -2.0]),
        torch.tensor([1.0, 0.5]),
        torch.tensor([0.4, 1.0]),
    )
    expected = torch.distributions.kl_divergence(normal(m1, (0.5 * lv1).exp()), normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected)
    assert normal_kl(m1, lv1, m1, lv1).abs().max() < 1e-7
    x = torch.tensor([0.2, -0.7])
    torch.testing.assert_close(
        continuous_gaussian_log_likelihood(x, m2, lv2), normal(m2, (0.5 * lv2).exp()).log_prob(x)
    )
    # the 256 bins of [-1, 1] (edge bins open-ended) carry all the probability mass
    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)
    mean, logvar = torch.full_like(bins, 0.1), torch.full_like(bins, math.log(0.3**2))
    assert discretized_gaussian_log_likelihood(bins, mean, logvar).exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    # a very narrow Gaussian centred in a bin puts all its mass there
    sharp = discretized_gaussian_log_likelihood(
        bins[100:101], bins[100:101], torch.tensor([-20.0], dtype=torch.float64)
    )
    assert sharp.item() == pytest.approx(0.0, abs=1e-6)


def test_noise_level_and_config_validation():
    diffusion = GaussianDiffusion(DDPMConfig(train_steps=100, sample_steps=10))
    level = diffusion.noise_level(torch.arange(100).float())
    assert (level[1:] > level[:-1]).all() and 0 < level[0] < 0.05 and level[-1] > 0.99
    with pytest.raises(ValueError):
        DDPMConfig(train_steps=10, sample_steps=20)
    with pytest.raises(ValueError):
        DDPMConfig(schedule="quadratic")
    with pytest.raises(ValueError):
        DDPMConfig(train_steps=0)


# --------------------------------------------------------------------------------------------------
# DDPM: oracle, loss, sampling
# --------------------------------------------------------------------------------------------------


def ddpm_oracle(diffusion: GaussianDiffusion, c: float):
    """The exact ε (and v = 0) for data x_0 = c: ε = (x_t − √ᾱ_t·c)/√(1 − ᾱ_t)."""

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = diffusion.alphas_cumprod[t.long()].float().view(-1, *([1] * (x.dim() - 1)))
        eps = (x - ab.sqrt() * c) / (1 - ab).sqrt()
        return eps if diffusion.out_mult == 1 else torch.cat([eps, torch.zeros_like(eps)], dim=1)

    return model_fn


@pytest.mark.parametrize("schedule,learn_sigma", [("linear", True), ("cosine", False)])
def test_ddpm_oracle_samples_the_point_mass(schedule, learn_sigma):
    diffusion = GaussianDiffusion(
        DDPMConfig(train_steps=100, sample_steps=10, schedule=schedule, learn_sigma=learn_sigma)
    )
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(3, 2, 4, 4, generator=gen)
    out = diffusion.sample(ddpm_oracle(diffusion, 0.7), noise, steps=10, generator=gen)
    torch.testing.assert_close(out, torch.full_like(out, 0.7), atol=1e-4, rtol=0)


def test_ddpm_sampler_feeds_original_timesteps_and_token_vectors():
    diffusion = GaussianDiffusion(DDPMConfig(train_steps=100, sample_steps=10))
    seen = []

    def model_fn(x, t):
        seen.append(t[0].item())
        return ddpm_oracle(diffusion, -1.0)(x, t)

    out = diffusion.sample(model_fn, torch.randn(5, 3), steps=4)  # (M, D) tokens, as DiffLoss uses it
    assert seen == [99.0, 66.0, 33.0, 0.0]
    torch.testing.assert_close(out, torch.full_like(out, -1.0), atol=1e-4, rtol=0)


def test_ddpm_oracle_loss_is_zero_and_vlb_does_not_train_the_mean():
    torch.manual_seed(0)
    plain = GaussianDiffusion(DDPMConfig(train_steps=100, sample_steps=10, learn_sigma=False))
    loss = plain.training_loss(ddpm_oracle(plain, 0.5), torch.full((16, 2, 3), 0.5))
    assert loss.shape == (16,) and loss.abs().max() < 1e-8

    # hybrid loss: ε off by a constant p gives d(loss)/dp = 2p from the MSE alone (the VLB sees ε detached)
    hybrid = GaussianDiffusion(DDPMConfig(train_steps=1000, sample_steps=10, learn_sigma=True))  # VLB weight T/1000 = 1
    p = torch.tensor(0.1, requires_grad=True)
    oracle = ddpm_oracle(hybrid, 0.5)

    def model_fn(x, t):
        eps, v = oracle(x, t).chunk(2, dim=1)
        return torch.cat([eps + p, v + 0.3 * p.detach()], dim=1)

    hybrid.training_loss(model_fn, torch.full((16, 2, 3), 0.5)).mean().backward()
    assert p.grad.item() == pytest.approx(0.2, rel=1e-4)


def test_ddpm_sampling_is_reproducible_with_a_generator():
    diffusion = GaussianDiffusion(DDPMConfig(train_steps=50, sample_steps=5))
    model_fn = ddpm_oracle(diffusion, 0.0)

    def draw(seed, temperature=1.0):
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(2, 3, generator=gen)
        return diffusion.sample(lambda x, t: 0.5 * model_fn(x, t), noise, temperature=temperature, generator=gen)

    assert torch.equal(draw(0), draw(0)) and not torch.allclose(draw(0), draw(1))
    # temperature 0 removes every per-step draw: only the starting noise differs between seeds
    cold = GaussianDiffusion(DDPMConfig(train_steps=50, sample_steps=5))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, generator=gen)
    runs = [cold.sample(model_fn, x, temperature=0.0, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert torch.equal(*runs)


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_ddpm_shared_step_coefficients_equal_the_per_row_ones(learn_sigma):
    """The sampler passes one int step for the whole batch (scalar coefficients): the same numbers, exactly."""
    diffusion = GaussianDiffusion(
        DDPMConfig(train_steps=100, schedule="cosine", learn_sigma=learn_sigma, sample_steps=7)
    )
    chain = diffusion.respaced(7)
    torch.manual_seed(0)
    xt = torch.randn(5, 4, 2)
    out = torch.randn(5, 4 * diffusion.out_mult, 2)
    for i in (0, 3, 6):
        per_row = diffusion._p_mean_variance(chain, torch.full((5,), i), xt, out, clip_denoised=2.0)
        shared = diffusion._p_mean_variance(chain, i, xt, out, clip_denoised=2.0)
        for a, b in zip(per_row, shared):
            assert a.shape == b.shape and torch.equal(a, b)


# --------------------------------------------------------------------------------------------------
# DiffLoss
# --------------------------------------------------------------------------------------------------


def tiny_head(token_dim=3, cond_dim=5, **kw) -> DiffLoss:
    kw = {"width": 32, "depth": 2, "train_steps": 100, "sample_steps": 5, "batch_mul": 2} | kw
    return DiffLoss(token_dim, cond_dim, DiffLossConfig(**kw))


def test_diffloss_shapes_and_mask():
    torch.manual_seed(0)
    head = tiny_head()
    target, cond = torch.randn(6, 3), torch.randn(6, 5)
    assert head.net(target, torch.zeros(6), cond).shape == (6, 6)  # [ε, v]
    assert head(target, cond).dim() == 0
    assert head(target, cond, torch.zeros(6)).item() == 0.0  # nothing counts: 0, not NaN
    assert head.sample(cond).shape == (6, 3)
    with pytest.raises(ValueError):
        DiffLossConfig(batch_mul=0)


def test_diffloss_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    head = tiny_head()
    with torch.no_grad():  # leave the zero-initialised adaLN-Zero start, where gates block most gradients
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    head(torch.randn(4, 3), torch.randn(4, 5), torch.tensor([1.0, 1.0, 0.0, 1.0])).backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_diffloss_stacked_adaln_equals_the_per_block_projections():
    torch.manual_seed(0)
    head = tiny_head(depth=3)
    with torch.no_grad():  # away from adaLN-Zero, where every projection is 0 and any stacking would agree
        for p in head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, c = torch.randn(6, 3), torch.randn(6, 32)
    stacked = head.net.stacked_modulation()
    assert stacked[0].shape == ((3 * 3 + 2) * 32, 32)
    torch.testing.assert_close(head.net.forward_stacked(x, c, stacked), head.net.forward_conditioned(x, c))


def test_diffloss_guidance():
    torch.manual_seed(0)
    head = tiny_head()
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    cond, uncond = torch.randn(4, 5), torch.randn(4, 5)

    def draw(c, scale):
        return head.sample(c, cfg_scale=scale, generator=torch.Generator().manual_seed(3))

    # cfg_scale 1 is the plain chain run by the head's own diffusion, with no doubled batch
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(4, 3, generator=gen)
    plain = head.diffusion.sample(lambda x, t: head.net(x, t, cond), noise, generator=gen)
    # (equal up to rounding: sampling embeds the shared timestep on one row instead of every row)
    torch.testing.assert_close(draw(cond, 1.0), plain, atol=1e-5, rtol=1e-5)
    # guided: [cond; uncond] in, the conditional half out; equal halves reduce to the unguided chain
    guided = draw(torch.cat([cond, uncond]), 4.0)
    assert guided.shape == (4, 3) and not torch.allclose(guided, plain)
    torch.testing.assert_close(draw(torch.cat([cond, cond]), 4.0), plain, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        head.sample(torch.randn(3, 5), cfg_scale=2.0)


def test_diffloss_overfits_two_tokens():
    """200 Adam steps on two fixed tokens: the mean loss of the last 20 steps is ~40× below the first 20's
    (measured 42×; asserted ≥ 3×)."""
    torch.manual_seed(0)
    head = tiny_head(token_dim=4, cond_dim=4, width=64, depth=2, train_steps=1000, batch_mul=64)
    target = torch.tensor([[1.0, -0.5, 0.3, 0.8], [-0.7, 0.2, -1.0, 0.4]])
    cond = torch.eye(2, 4)
    opt = torch.optim.Adam(head.parameters(), lr=2e-3)
    losses = []
    for _ in range(200):
        loss = head(target, cond)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert first / last >= 3.0, (first, last)


# --------------------------------------------------------------------------------------------------
# Flow matching
# --------------------------------------------------------------------------------------------------


def flow_oracle(c: float, time_scale: float = 1000.0):
    """The exact velocity for data x_1 = c: v = (c − x_t)/(1 − t)."""

    def model_fn(x: torch.Tensor, t_model: torch.Tensor) -> torch.Tensor:
        s = (1 - t_model / time_scale).clamp(min=1e-12).view(-1, *([1] * (x.dim() - 1)))
        return (c - x) / s

    return model_fn


def test_flow_t_distributions():
    torch.manual_seed(0)
    uniform = FlowMatching(FlowConfig()).sample_t(4000)
    assert uniform.shape == (4000,) and 0 <= uniform.min() and uniform.max() <= 1
    assert uniform.mean().item() == pytest.approx(0.5, abs=0.03)
    noisy = FlowMatching(FlowConfig(t_dist="logit_normal", t_mu=1.0)).sample_t(4000)
    assert 0 < noisy.min() and noisy.max() < 1
    # SD3's sense: μ > 0 favours high noise, i.e. small t (t = 0 is noise here)
    assert noisy.mean().item() == pytest.approx(1 - 0.6958, abs=0.03)  # E[sigmoid(N(1, 1))] ≈ 0.6958


def test_shift_formula_and_grid():
    s = torch.linspace(0, 1, 101, dtype=torch.float64)
    for shift in (0.5, 1.0, 3.0):
        shifted = shift_noise_level(s, shift)
        assert shifted[0] == 0 and shifted[-1] == pytest.approx(1.0) and (shifted[1:] > shifted[:-1]).all()
    assert (shift_noise_level(s[1:-1], 3.0) > s[1:-1]).all()  # shift > 1: more time at high noise
    assert shift_noise_level(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)
    grid = time_grid(10, shift=3.0)
    assert grid[0] == 0 and grid[-1] == 1 and (grid[1:] > grid[:-1]).all()
    assert grid[1] < 0.1 / 2  # the first step (at high noise) is smaller than the unshifted 0.1


@pytest.mark.parametrize("sampler", ["euler", "heun", "sde"])
def test_flow_oracle_samples_the_point_mass(sampler):
    flow = FlowMatching(FlowConfig(sampler=sampler, sample_steps=6, shift=2.0))
    gen = torch.Generator().manual_seed(0)
    out = flow.sample(flow_oracle(-0.4), torch.randn(3, 2, 4, generator=gen), generator=gen)
    torch.testing.assert_close(out, torch.full_like(out, -0.4), atol=1e-5, rtol=0)


def test_flow_oracle_loss_and_noise_level():
    torch.manual_seed(0)
    flow = FlowMatching(FlowConfig(t_dist="logit_normal"))
    loss = flow.training_loss(flow_oracle(0.9), torch.full((8, 2, 3), 0.9))
    assert loss.shape == (8,) and loss.max() < 1e-8
    torch.testing.assert_close(flow.noise_level(torch.tensor([0.0, 250.0, 1000.0])), torch.tensor([1.0, 0.75, 0.0]))
    with pytest.raises(ValueError):
        FlowConfig(sampler="dopri5")


def test_flow_sde_is_seeded_and_temperature_only_moves_the_sde():
    def draw(sampler, seed, temperature=1.0):
        flow = FlowMatching(FlowConfig(sampler=sampler, sample_steps=5))
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
        # a damped oracle keeps the SDE's noise visible in the output
        return flow.sample(lambda x, t: 0.5 * flow_oracle(1.0)(x, t), noise, temperature=temperature, generator=gen)

    assert torch.equal(draw("sde", 0), draw("sde", 0)) and not torch.allclose(draw("sde", 0), draw("sde", 1))
    assert torch.equal(draw("sde", 0, temperature=0.0), draw("sde", 1, temperature=0.0))
    assert torch.equal(draw("heun", 0), draw("heun", 1))  # deterministic: the generator is unused
    with pytest.raises(ValueError, match="no effect on the deterministic 'heun'"):
        draw("heun", 0, temperature=2.0)


def test_diffloss_clip_denoised_bounds_the_first_step_blow_up():
    """With the cosine schedule's first ᾱ ≈ 2.4e-9, a small ε error explodes x̂_0 unless it is clamped."""
    from detok.objectives.diffloss import DiffLoss, DiffLossConfig

    torch.manual_seed(0)
    stds = {}
    for clip in (None, 5.0):
        head = DiffLoss(8, 16, DiffLossConfig(width=32, depth=1, sample_steps=10, clip_denoised=clip)).eval()
        with torch.no_grad():  # an untrained head: its ε is far from x_t at the first step
            x = head.sample(torch.randn(256, 16), generator=torch.Generator().manual_seed(0))
        stds[clip] = x.std().item()
    assert stds[None] > 50 and stds[5.0] < 5
    with pytest.raises(ValueError, match="clip_denoised"):
        DiffLossConfig(clip_denoised=0.0)
