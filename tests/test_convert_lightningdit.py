"""hustvl/LightningDiT's generator converts into detok's `LightningDiT` and computes what the upstream computes.

Fixtures: benchmarks/upstream/make_fixtures.py runs `models.lightningdit.LightningDiT` from hustvl/LightningDiT at
tiny size (8×8×4 latents, width 32, two blocks) with seeded, perturbed weights, in the released configuration (SwiGLU,
RoPE, RMSNorm, no QK-norm, p = 1) and with QK-norm at p = 2; and samples the released variant through its own
transport (Euler ODE on the shifted grid, guidance interval). Tolerance 1e-5 of the largest value, fp32.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from detok.checkpoint import CheckpointError, load_model_folder, read_model_config
from detok.convert import convert_checkpoint, export_checkpoint
from detok.convert import lightningdit as converter
from detok.convert.safe_load import load_checkpoint
from detok.generators.lightningdit import LightningDiT, LightningDiTConfig
from detok.objectives.guidance import guided_model_fn

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "lightningdit"
CHECKPOINTS = {"released": FIXTURE / "checkpoint.pth", "qknorm": FIXTURE / "qknorm.pth"}
HEADS = ["model.heads=2"]  # the tiny width is in no upstream table


def assert_close(actual, expected, what):
    assert actual.shape == expected.shape, what
    err = (actual - expected).abs().max() / expected.abs().max()
    assert err <= 1e-5, f"{what}: max error {err:.2e} of the largest value"


def convert(tmp_path, variant="released", **kw):
    return convert_checkpoint(CHECKPOINTS[variant], tmp_path / variant, overrides=HEADS, **kw)


@pytest.fixture(scope="module")
def io():
    return load_file(str(FIXTURE / "io.safetensors"))


@pytest.mark.parametrize("variant", ["released", "qknorm"])
def test_converted_network_matches_upstream(tmp_path, io, variant):
    meta = json.loads((FIXTURE / "meta.json").read_text())
    assert meta["upstream"] == "hustvl/LightningDiT" and meta["commit"] == converter.VERIFIED_COMMIT
    model = load_model_folder(convert(tmp_path, variant))
    cfg = model.config
    assert (cfg.patch_size, cfg.qk_norm, cfg.swiglu_multiple) == (meta["args"][variant]["patch_size"],
                                                                   meta["args"][variant]["use_qknorm"], 1)  # fmt: skip
    x, t, y, null = io["x"], io["t"], io["y"], io["null"]
    with torch.no_grad():
        assert_close(model.net(x, t, y), io[f"{variant}.forward"], "forward")
        assert_close(model.net(x, t, null), io[f"{variant}.forward_null"], "forward, null class")
        # forward_with_cfg at each time: guidance only where t ≥ cfg_interval_start, only on the first 3 channels
        for i in range(len(t)):
            one = slice(i, i + 1)
            guided = guided_model_fn(model.net, y[one], null[one], meta["cfg_scale"], cfg.cfg_interval,
                                     model.objective.noise_level, cfg.cfg_channels)  # fmt: skip
            assert_close(guided(x[one], t[one]), io[f"{variant}.cfg.{i}"], f"guided forward at t={t[i]}")


def test_sampling_matches_upstreams_euler_ode(tmp_path, io):
    """The released variant sampled as inference.py samples: Euler on the shifted grid, guidance interval, 3 channels,
    model time t itself — the converted folder's defaults, here with upstream's 6 time points (5 steps)."""
    meta = json.loads((FIXTURE / "meta.json").read_text())
    model = load_model_folder(convert(tmp_path))
    cfg = model.config
    short = dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, sample_steps=meta["sample"]["num_steps"] - 1))
    fast = LightningDiT(short)
    fast.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(5)
    out = fast.eval().sample(io["sample.y"], cfg_scale=meta["cfg_scale"], generator=gen)
    assert torch.equal(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5)), io["sample.noise"])
    assert_close(out, io["sample.euler"], "Euler sample")


def test_converted_config_holds_upstreams_sampling(tmp_path):
    folder = convert(tmp_path)
    cfg = load_model_folder(folder).config
    assert (cfg.flow.sampler, cfg.flow.sample_steps, cfg.flow.time_scale) == ("euler", 249, 1.0)
    assert cfg.flow.shift == pytest.approx(1 / 0.3) and cfg.cfg_interval == (0.0, 0.89) and cfg.cfg_channels == 3
    info = read_model_config(folder)[2]["converted_from"]
    assert info["format"] == "lightningdit" and info["weights"] == "ema"
    assert info["upstream_sampling"]["cfg"] == 10.0 and "dropped_learn_sigma_rows" not in info


def test_detoks_swiglu_width_rule_does_not_hold_the_weights(tmp_path):
    """Before `swiglu_multiple`, detok rounded the SwiGLU width up to a multiple of 8 (88 here, upstream's 85)."""
    model = load_model_folder(convert(tmp_path))
    with pytest.raises(RuntimeError, match="size mismatch"):
        LightningDiT(dataclasses.replace(model.config, swiglu_multiple=8)).load_state_dict(model.state_dict())


def test_model_time_is_upstreams_t_not_1000t(tmp_path, io):
    """Upstream's transport hands t ∈ [0, 1] to the timestep embedder; detok's default time_scale 1000 would not."""
    model = load_model_folder(convert(tmp_path))
    assert model.config.flow.time_scale == 1.0
    with torch.no_grad():
        scaled = model.net(io["x"], 1000 * io["t"], io["y"])
    assert (scaled - io["released.forward"]).abs().max() > 1e-2


@pytest.mark.parametrize("variant", ["released", "qknorm"])
def test_import_export_import_is_bit_exact(tmp_path, variant):
    folder = convert(tmp_path, variant)
    exported = export_checkpoint(folder, tmp_path / "up.pth")[0]
    data = load_checkpoint(exported)
    assert sorted(data) == ["ema", "model"]  # train.py's names, which inference.py reads
    original, back = load_checkpoint(CHECKPOINTS[variant])["ema"], data["ema"]
    assert sorted(back) == sorted(original)
    for key, value in original.items():
        if key in converter.FIXED:  # tables detok builds itself: the same within float rounding
            assert torch.allclose(back[key], value, rtol=0, atol=1e-6), key
        else:
            assert torch.equal(back[key], value), key
    again = load_model_folder(convert_checkpoint(exported, tmp_path / "b", overrides=HEADS))
    first = load_model_folder(folder)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def test_wrong_kinds_are_refused(tmp_path):
    dit = Path(__file__).parent / "fixtures" / "upstream" / "dit" / "checkpoint.pth"
    with pytest.raises(CheckpointError, match="holds a DiT / SiT generator .*, not lightningdit"):
        convert_checkpoint(dit, tmp_path / "a", fmt="lightningdit", overrides=HEADS)
    with pytest.raises(CheckpointError, match="holds a LightningDiT generator .*, not sit"):
        convert_checkpoint(CHECKPOINTS["released"], tmp_path / "b", fmt="sit", overrides=HEADS)


def _with(tmp_path, change) -> Path:
    state = dict(load_checkpoint(CHECKPOINTS["released"])["ema"])
    change(state)
    torch.save({"ema": state}, tmp_path / "changed.pt")
    return tmp_path / "changed.pt"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: [s.pop(k) for k in ("feat_rope.freqs_cos", "feat_rope.freqs_sin")], "without use_rope=True"),
        (lambda s: s.update(pos_embed=s["pos_embed"] + 0.01), "pos_embed is not the fixed table"),
        (lambda s: s.update({"feat_rope.freqs_cos": s["feat_rope.freqs_cos"].flip(0)}), "freqs_cos is not the fixed"),
        (lambda s: s.update({k: s[k][: 4 * 32] for k in s if k.endswith("adaLN_modulation.1.weight")}), "wo_shift"),
    ],
)
def test_variants_detok_cannot_express_are_refused(tmp_path, change, message):
    with pytest.raises(CheckpointError, match=message):
        convert_checkpoint(_with(tmp_path, change), tmp_path / "out", overrides=HEADS)


def test_heads_come_from_upstreams_table_or_the_command_line(tmp_path):
    with pytest.raises(CheckpointError, match="give it with --set model.heads=N"):
        convert_checkpoint(CHECKPOINTS["released"], tmp_path / "a")
    with pytest.raises(CheckpointError, match="takes only model.heads"):
        convert_checkpoint(CHECKPOINTS["released"], tmp_path / "b", overrides=["model.enc_heads=2"])


def test_released_xl1_layout_is_read_back():
    """LightningDiT-XL/1 on VA-VAE (32 channels, 16×16, p = 1, 1152 × 28): its layout gives back its config."""
    cfg = LightningDiTConfig(latent_channels=32, swiglu_multiple=1, qk_norm=False)
    with torch.device("meta"):
        state = converter.to_upstream(LightningDiT(cfg))
    assert state["blocks.0.mlp.w3.weight"].shape == (1152, 3072) and state["pos_embed"].shape == (1, 256, 1152)
    back = converter.config_from_state(state, {})
    assert (back.width, back.depth, back.heads, back.patch_size, back.input_size) == (1152, 28, 16, 1, (16, 16))
