"""facebookresearch/DiT and willisma/SiT convert into detok's `DiT` and `SiT` and compute what the upstream computes.

Fixtures: benchmarks/upstream/make_fixtures.py runs each repository's `models.DiT` / `models.SiT` (with timm's
PatchEmbed, Attention and Mlp) at tiny size (8×8×4 latents, p = 2, width 32, two blocks, learn_sigma=True as the
releases) with seeded, perturbed weights; SiT is also sampled through its own transport (an Euler ODE with CFG).
Tolerance 1e-5 of the largest value, fp32.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from detok.checkpoint import CheckpointError, load_model_folder, read_model_config
from detok.convert import convert_checkpoint, export_checkpoint
from detok.convert import dit as converter
from detok.convert.safe_load import load_checkpoint
from detok.generators.dit import DiT, DiTConfig, SiT
from detok.objectives.guidance import guided_model_fn

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
HEADS = ["model.heads=2"]  # the tiny width is in no upstream table
FORMATS = {"dit": converter.DIT, "sit": converter.SIT}


def assert_close(actual, expected, what):
    assert actual.shape == expected.shape, what
    err = (actual - expected).abs().max() / expected.abs().max()
    assert err <= 1e-5, f"{what}: max error {err:.2e} of the largest value"


def convert(tmp_path, name, raw=False, path=None):
    path = path or FIXTURES / name / "checkpoint.pth"
    return convert_checkpoint(path, tmp_path / f"{name}{'-raw' if raw else ''}", fmt=name, ema=not raw, overrides=HEADS)


@pytest.mark.parametrize("name", ["dit", "sit"])
@pytest.mark.parametrize("tag", ["ema", "raw"])
def test_converted_network_matches_upstream(tmp_path, name, tag):
    meta = json.loads((FIXTURES / name / "meta.json").read_text())
    assert meta["commit"] == FORMATS[name].VERIFIED_COMMIT
    io = load_file(str(FIXTURES / name / "io.safetensors"))
    model = load_model_folder(convert(tmp_path, name, raw=tag == "raw"))
    cfg = model.config
    x, t, y, null = io["x"], io["t"], io["y"], io["null"]
    with torch.no_grad():
        assert_close(model.net(x, t, y), io[f"{tag}.forward"], "forward")
        assert_close(model.net(x, t, null), io[f"{tag}.forward_null"], "forward, null class")
        for i in range(len(t)):  # forward_with_cfg: the first 3 channels guided, the rest (and the variances) not
            one = slice(i, i + 1)
            guided = guided_model_fn(model.net, y[one], null[one], meta["cfg_scale"], (0.0, 1.0),
                                     model.objective.noise_level, cfg.cfg_channels)  # fmt: skip
            assert_close(guided(x[one], t[one]), io[f"{tag}.cfg.{i}"], f"guided forward at t={t[i]}")


def test_dit_respaced_chain_matches_upstream(tmp_path):
    """p(x_{t-1} | x_t) on sample.py's 250-step respaced chain (clip_denoised=False), plain and guided: the converted
    DDPM's chain, timesteps and learned variances, with forward_with_cfg's 3 guided channels."""
    meta = json.loads((FIXTURES / "dit" / "meta.json").read_text())
    io = load_file(str(FIXTURES / "dit" / "io.safetensors"))
    model = load_model_folder(convert(tmp_path, "dit"))
    diffusion, cfg = model.objective, model.config
    chain = diffusion.respaced(cfg.diffusion.sample_steps)
    assert cfg.diffusion.sample_steps == meta["respaced"]["steps"]
    x, y, null = io["x"][:2], io["y"][:2], io["null"][:2]
    guided = guided_model_fn(model.net, y, null, meta["cfg_scale"], (0.0, 1.0), diffusion.noise_level, cfg.cfg_channels)
    with torch.no_grad():
        for i in meta["respaced"]["recorded"]:
            t = torch.full((2,), float(chain.timesteps[i]))
            for tag, fn in (("", lambda x, t: model.net(x, t, y)), (".cfg", guided)):
                mean, logvar, _ = diffusion._p_mean_variance(chain, i, x, fn(x, t))
                assert_close(mean, io[f"step{i}{tag}.mean"], f"step {i}{tag} mean")
                assert_close(logvar.expand_as(mean), io[f"step{i}{tag}.log_variance"], f"step {i}{tag} log-variance")


def test_sit_sampling_matches_upstreams_euler_ode(tmp_path):
    """SiT's own sampler (Euler, 6 time points) with forward_with_cfg: model time t ∈ [0, 1], 3 guided channels."""
    io = load_file(str(FIXTURES / "sit" / "io.safetensors"))
    model = load_model_folder(convert(tmp_path, "sit"))
    flow = dataclasses.replace(model.config.flow, sampler="euler", sample_steps=5)
    euler = SiT(dataclasses.replace(model.config, flow=flow))
    euler.load_state_dict(model.state_dict())
    out = euler.eval().sample(io["sample.y"], cfg_scale=4.0, generator=torch.Generator().manual_seed(5))
    assert_close(out, io["sample.euler5"], "Euler sample")


def test_guiding_every_channel_differs_from_upstream(tmp_path):
    """detok's default guidance (every channel) is not the upstream's forward_with_cfg: cfg_channels=3 is needed."""
    io = load_file(str(FIXTURES / "sit" / "io.safetensors"))
    model = load_model_folder(convert(tmp_path, "sit"))
    one = slice(2, 3)
    everything = guided_model_fn(model.net, io["y"][one], io["null"][one], 4.0, (0.0, 1.0), model.objective.noise_level,
                                 model.config.latent_channels)  # fmt: skip
    with torch.no_grad():
        assert (everything(io["x"][one], io["t"][one]) - io["ema.cfg.2"]).abs().max() > 1e-3


def test_converted_configs_hold_upstreams_sampling(tmp_path):
    dit, sit = (load_model_folder(convert(tmp_path, n)).config for n in ("dit", "sit"))
    assert dit.cfg_channels == sit.cfg_channels == 3
    assert (dit.diffusion.learn_sigma, dit.diffusion.sample_steps, dit.diffusion.schedule) == (True, 250, "linear")
    f = sit.flow
    assert (f.sampler, f.sample_steps, f.time_scale, f.sde_diffusion_norm, f.sde_last_step) == (
        "sde",
        250,
        1.0,
        1,
        0.04,
    )
    info = read_model_config(tmp_path / "dit")[2]["converted_from"]
    assert info["upstream_sampling"]["cfg"] == 1.5 and "dropped_learn_sigma_rows" not in info


def test_sit_learn_sigma_rows_are_dropped_and_recorded(tmp_path):
    state = load_checkpoint(FIXTURES / "sit" / "checkpoint.pth")["ema"]
    assert state["final_layer.linear.weight"].shape[0] == 2 * 2 * 2 * 4  # p·p·2C: the release's layout
    folder = convert(tmp_path, "sit")
    assert load_model_folder(folder).net.final_layer.linear.weight.shape[0] == 2 * 2 * 4
    info = read_model_config(folder)[2]["converted_from"]
    assert info["dropped_learn_sigma_rows"] == {"final_layer.linear.weight": 16, "final_layer.linear.bias": 16}


@pytest.mark.parametrize("name", ["dit", "sit"])
def test_import_export_import_is_bit_exact(tmp_path, name):
    folder = convert(tmp_path, name)
    exported = export_checkpoint(folder, tmp_path / "up.pth")[0]
    data = load_checkpoint(exported)
    assert sorted(data) == ["ema", "model"]  # train.py's names; sample.py's find_model takes "ema"
    original, back = load_checkpoint(FIXTURES / name / "checkpoint.pth")["ema"], data["ema"]
    assert sorted(back) == sorted(original)
    for key, value in original.items():
        if key == "pos_embed":  # the sin-cos table detok builds: the same within float rounding
            assert torch.allclose(back[key], value, rtol=0, atol=1e-6)
        elif name == "sit" and key.startswith("final_layer.linear."):  # SiT's learn-sigma rows are not restored
            assert torch.equal(back[key], converter.drop_sigma_rows(value, 2, 4)), key
        else:
            assert torch.equal(back[key], value), key
    again = load_model_folder(convert(tmp_path, name, path=exported))
    first = load_model_folder(folder)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def test_a_bare_release_state_dict_converts(tmp_path):
    """DiT-XL-2-256x256.pt is the EMA state dict itself."""
    torch.save(load_checkpoint(FIXTURES / "dit" / "checkpoint.pth")["ema"], tmp_path / "DiT-tiny.pt")
    folder = convert(tmp_path, "dit", path=tmp_path / "DiT-tiny.pt")
    assert "no EMA/raw distinction" in read_model_config(folder)[2]["converted_from"]["weights"]


def test_dit_or_sit_must_be_named(tmp_path):
    """The two are one network: a file cannot say which objective trained it."""
    with pytest.raises(CheckpointError, match="give --format dit or --format sit"):
        convert_checkpoint(FIXTURES / "dit" / "checkpoint.pth", tmp_path / "a", overrides=HEADS)


def test_wrong_kinds_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="holds a LightningDiT generator .*, not dit"):
        convert_checkpoint(FIXTURES / "lightningdit" / "checkpoint.pth", tmp_path / "a", fmt="dit", overrides=HEADS)
    with pytest.raises(CheckpointError, match="holds a MAR generator, not sit"):
        convert_checkpoint(FIXTURES / "detok_mar" / "checkpoint.pth", tmp_path / "b", fmt="sit", overrides=HEADS)
    with pytest.raises(ValueError, match="only a DiT"):  # a detok DiT with QK-norm has no upstream layout
        converter.DIT.to_upstream(DiT(dataclasses.replace(DiTConfig(), width=32, depth=1, heads=2, qk_norm=True)))


def test_a_learned_position_table_is_refused(tmp_path):
    state = dict(load_checkpoint(FIXTURES / "dit" / "checkpoint.pth")["ema"])
    state["pos_embed"] = state["pos_embed"] + 0.01
    torch.save(state, tmp_path / "learned.pt")
    with pytest.raises(CheckpointError, match="pos_embed is not the fixed table"):
        convert(tmp_path, "dit", path=tmp_path / "learned.pt")


@pytest.mark.parametrize("name, cls", [("dit", DiT), ("sit", SiT)])
def test_released_xl2_layout_is_read_back(name, cls):
    """DiT-XL/2 and SiT-XL/2 on SD-VAE latents (4 × 32 × 32, p = 2, 1152 × 28, learn-sigma rows)."""
    fmt = FORMATS[name]
    cfg = dataclasses.replace(fmt.config_from_state(_xl2_state(), {}), depth=28)
    assert (cfg.width, cfg.depth, cfg.heads, cfg.patch_size, cfg.input_size, cfg.num_classes) == (
        1152, 28, 16, 2, (32, 32), 1000
    )  # fmt: skip
    assert isinstance(cfg, cls.config_cls)


def _xl2_state() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        model = DiT(DiTConfig(latent_channels=4, input_size=(32, 32), patch_size=2, depth=1, cfg_channels=3))
        return converter.DIT.to_upstream(model)
