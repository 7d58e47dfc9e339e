"""DiT / SiT / LightningDiT specifics (the shared generator contract is in test_generator_contract.py).

Sin-cos positions against hand-computed values, adaLN-Zero identity at init, 1-D sequences with patches,
non-square grids, partial-channel guidance (`cfg_channels`), the guidance interval, the QK-norm switch, RoPE
breaking permutation equivariance, and DiT vs SiT objectives on the same backbone.
"""

import math

import pytest
import torch

from detok import create_model
from detok.generators.dit import DiT, SiT
from detok.generators.lightningdit import LightningDiT
from detok.layers import latents_to_tokens, sincos_pos_embed, tokens_to_latents
from detok.objectives.diffusion import GaussianDiffusion
from detok.objectives.flow import FlowMatching
from detok.objectives.guidance import guided_model_fn

FAMILIES = ("dit-b-tiny", "sit-b-tiny", "lightningdit-b-tiny")


def _jitter(model, std=0.05, seed=0):
    """Move every parameter off its (partly zero) initial value so that all paths carry signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def _capture_model_fn(model):
    """Replace the objective's sampler by one that returns the guided model_fn it is handed."""
    captured = {}

    def fake_sample(model_fn, noise, **kwargs):
        captured["fn"] = model_fn
        return noise

    model.objective.sample = fake_sample
    return captured


# --------------------------------------------------------------------------------------------------
# Positions and token layout
# --------------------------------------------------------------------------------------------------


def test_sincos_embedding_matches_hand_computed_entries():
    emb = sincos_pos_embed(8, (3, 5))  # 2-D: 4 channels per axis, ω = (1, 1/100)
    assert emb.shape == (15, 8)
    row, col = 2, 3
    expected = [math.sin(3), math.sin(0.03), math.cos(3), math.cos(0.03)]  # column first, as in MAE/DiT
    expected += [math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02)]
    assert torch.allclose(emb[row * 5 + col], torch.tensor(expected), atol=1e-6)
    seq = sincos_pos_embed(4, (7,))  # 1-D: ω = (1, 1/100)
    assert torch.allclose(seq[5], torch.tensor([math.sin(5), math.sin(0.05), math.cos(5), math.cos(0.05)]), atol=1e-6)


@pytest.mark.parametrize("size", [(4, 6), (8,)])
def test_token_layout_inverts(size):
    z = torch.randn(2, 3, *size)
    tokens = latents_to_tokens(z, 2)
    assert tokens.shape == (2, math.prod(size) // 2 ** len(size), 3 * 2 ** len(size))
    assert torch.equal(tokens_to_latents(tokens, 2, 3, size), z)
    if len(size) == 1:  # a 1-D "patch" groups p consecutive tokens, channels last
        assert torch.equal(tokens[1, 2], z[1, :, 4:6].T.reshape(-1))


# --------------------------------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_adaln_zero_blocks_are_the_identity_at_init(name):
    torch.manual_seed(0)
    model = create_model(name)
    net = model.net
    x = torch.randn(2, 16, net.config.width)  # the 4×4 grid of the tiny twin, p=1
    c = torch.randn(2, net.config.width)
    for block in net.blocks:
        args = (x, c, net.rope) if isinstance(model, LightningDiT) else (x, c)
        assert torch.equal(block(*args), x)
    z = torch.randn(2, net.config.latent_channels, *net.config.input_size)
    out = net(z, torch.rand(2) * 999, torch.tensor([0, 1]))
    assert out.shape[2:] == z.shape[2:] and not out.any()  # zeroed final layer: the prediction starts at zero


@pytest.mark.parametrize("name", FAMILIES)
def test_one_dimensional_sequences_with_patches(name):
    torch.manual_seed(0)
    model = _jitter(create_model(name, input_size=(12,), patch_size=2))
    z, y = torch.randn(3, model.config.latent_channels, 12), torch.tensor([0, 1, 2])
    loss = model(z, y)
    loss.backward()
    assert torch.isfinite(loss)
    out = model.eval().sample(y, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == z.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_non_square_grids(name):
    torch.manual_seed(0)
    model = _jitter(create_model(name, input_size=(4, 6), patch_size=2))
    assert model.net.pos_embed.shape[1] in (1, 6)  # a 2×3 grid of 2×2 patches (LightningDiT may skip abs pos)
    z, y = torch.randn(2, model.config.latent_channels, 4, 6), torch.tensor([0, 1])
    assert torch.isfinite(model(z, y))
    assert model.eval().sample(y, cfg_scale=1.5, generator=torch.Generator().manual_seed(0)).shape == z.shape
    with pytest.raises(ValueError, match="patch size"):
        create_model(name, input_size=(4, 5), patch_size=2)


@pytest.mark.parametrize("name", ["dit-b-tiny", "lightningdit-b-tiny"])
def test_qk_norm_switch_adds_the_norm_parameters(name):
    off = dict(create_model(name, qk_norm=False).named_parameters())
    on = dict(create_model(name, qk_norm=True).named_parameters())
    extra = sorted(set(on) - set(off))
    assert set(off) <= set(on) and extra
    assert all("q_norm" in n or "k_norm" in n for n in extra)
    cfg = create_model(name).config
    assert sum(on[n].numel() for n in extra) == 2 * cfg.depth * cfg.width // cfg.heads


def test_lightningdit_applies_rope():
    """Without absolute positions a transformer is permutation-equivariant; 2-D RoPE must break that."""
    torch.manual_seed(0)
    model = _jitter(create_model("lightningdit-b-tiny", input_size=(4, 4), abs_pos=False)).eval()
    c = model.config.latent_channels
    z, t, y = torch.randn(2, c, 4, 4), torch.full((2,), 500.0), torch.tensor([0, 1])
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    shuffle = lambda a: a.flatten(2)[..., perm].view(2, c, 4, 4)  # noqa: E731
    with torch.no_grad():
        assert not torch.allclose(model.net(shuffle(z), t, y), shuffle(model.net(z, t, y)), atol=1e-5)
        model.net.rope.copy_(torch.tensor([1.0, 0.0]))  # (cos, sin) of zero angles: the control case is equivariant
        assert torch.allclose(model.net(shuffle(z), t, y), shuffle(model.net(z, t, y)), atol=1e-5)


@pytest.mark.parametrize("name", ["dit-b-tiny", "sit-b-tiny", "lightningdit-b-tiny"])
def test_one_dimensional_tokens_get_learned_positions_and_no_rope(name):
    """l-DeTok App. A.2: on 1-D tokens, learned 1-D absolute positions and RoPE disabled (LightningDiT)."""
    torch.manual_seed(0)
    model = _jitter(create_model(name, input_size=(8,)))  # off adaLN-Zero's init, so gradients reach positions
    assert isinstance(model.net.pos_embed, torch.nn.Parameter) and model.net.pos_embed.shape[1] == 8
    assert getattr(model.net, "rope", None) is None
    grid = create_model(name, input_size=(4, 4))
    assert not isinstance(grid.net.pos_embed, torch.nn.Parameter)
    z = torch.randn(2, model.config.latent_channels, 8)
    model(z, torch.tensor([0, 1])).backward()
    assert model.net.pos_embed.grad is not None and model.net.pos_embed.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------------
# Guidance
# --------------------------------------------------------------------------------------------------


def test_cfg_channels_guides_only_the_leading_channels():
    torch.manual_seed(0)
    model = _jitter(create_model("dit-b-tiny", cfg_channels=3)).eval()
    c = model.config.latent_channels
    captured = _capture_model_fn(model)
    y = torch.tensor([0, 1])
    model.sample(y, cfg_scale=4.0)
    x, t = torch.randn(2, c, *model.config.input_size), torch.tensor([500.0, 500.0])
    null = torch.full_like(y, model.config.num_classes)
    with torch.no_grad():
        cond, uncond = model.net(x, t, y), model.net(x, t, null)  # (N, 2C, h, w): [eps, variance]
        out = captured["fn"](x, t)
    assert out.shape == cond.shape == (2, 2 * c, *model.config.input_size)
    assert torch.allclose(out[:, :3], uncond[:, :3] + 4.0 * (cond[:, :3] - uncond[:, :3]), atol=1e-5)
    assert torch.allclose(
        out[:, 3:], cond[:, 3:], atol=1e-6
    )  # the other eps channels and the learned variances: conditional
    assert not torch.allclose(out[:, :3], cond[:, :3])


@pytest.mark.parametrize("name", FAMILIES)
def test_guidance_is_off_outside_the_interval(name):
    torch.manual_seed(0)
    model = _jitter(create_model(name)).eval()
    y = torch.tensor([0, 1])
    level = model.objective.noise_level
    # two timesteps in the objective's own units: one near the data end, one near the noise end
    t = torch.tensor([1.0, 999.0]) if isinstance(model, DiT) else torch.tensor([999.0, 1.0])
    assert level(t)[0] < 0.5 < level(t)[1]
    fn = guided_model_fn(model.net, y, model.config.num_classes, 4.0, (0.5, 1.0), level, model.config.latent_channels)
    x = torch.randn(2, model.config.latent_channels, *model.config.input_size)
    with torch.no_grad():
        cond, out = model.net(x, t, y), fn(x, t)
    assert torch.allclose(out[0], cond[0], atol=1e-6)  # low noise level: outside the interval, conditional output
    assert not torch.allclose(out[1], cond[1])  # high noise level: guided
    # an interval that no step reaches gives exactly the unguided samples
    seed = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    never = model.sample(y, cfg_scale=4.0, cfg_interval=(0.0, 0.0), generator=seed())
    assert torch.equal(never, model.sample(y, cfg_scale=1.0, generator=seed()))


def test_lightningdit_uses_its_configured_interval_by_default():
    torch.manual_seed(0)
    model = _jitter(create_model("lightningdit-b-tiny", cfg_interval=(0.0, 0.0))).eval()
    y, seed = torch.tensor([0, 1]), lambda: torch.Generator().manual_seed(0)  # noqa: E731
    unguided = model.sample(y, generator=seed())
    assert torch.equal(model.sample(y, cfg_scale=4.0, generator=seed()), unguided)
    assert not torch.allclose(model.sample(y, cfg_scale=4.0, cfg_interval=(0.0, 1.0), generator=seed()), unguided)


# --------------------------------------------------------------------------------------------------
# Objectives and presets
# --------------------------------------------------------------------------------------------------


def test_dit_and_sit_train_different_objectives_on_the_same_backbone():
    arch = dict(width=32, depth=1, heads=2, input_size=(4, 4), latent_channels=4, num_classes=3)
    torch.manual_seed(0)
    dit = create_model("dit-b-tiny", **arch)
    torch.manual_seed(0)
    sit = create_model("sit-b-tiny", **arch)
    assert isinstance(dit, DiT) and isinstance(dit.objective, GaussianDiffusion)
    assert isinstance(sit, SiT) and isinstance(sit.objective, FlowMatching)
    z, y = torch.randn(2, 4, 4, 4), torch.tensor([0, 1])
    with torch.no_grad():
        assert dit.net(z, torch.zeros(2), y).shape[1] == 8  # [eps, learned variance]
        assert sit.net(z, torch.zeros(2), y).shape[1] == 4  # velocity
    seen = {}
    for name, model in (("dit", dit), ("sit", sit)):
        hook = model.net.t_embedder.register_forward_pre_hook(lambda m, inp, n=name: seen.update({n: inp[0]}))
        torch.manual_seed(1)
        seen[name + "_loss"] = model(z, y)
        hook.remove()
    assert not torch.equal(seen["dit_loss"], seen["sit_loss"])
    assert torch.equal(seen["dit"], seen["dit"].round()) and seen["dit"].max() < 1000  # DDPM timestep indices


def test_paper_presets():
    for family in ("dit", "sit", "lightningdit"):
        cfg = create_model(f"{family}-b-tiny").config
        assert cfg.cfg_channels is None  # the original's 3-channel guidance is opt-in
    from detok.registry import preset_config

    for size, (width, depth, heads) in {"s": (384, 12, 6), "xl": (1152, 28, 16)}.items():
        cfg = preset_config(f"dit-{size}")
        assert (cfg.width, cfg.depth, cfg.heads, cfg.patch_size, cfg.input_size) == (width, depth, heads, 1, (16, 16))
    light = preset_config("lightningdit-b")
    assert light.flow.t_dist == "logit_normal" and light.flow.sampler == "euler"
    assert light.qk_norm and light.cfg_interval != (0.0, 1.0)
