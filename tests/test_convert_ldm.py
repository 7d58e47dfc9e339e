"""LDM's KL autoencoder — MAR's KL-16 (LTH14/mar) and VA-VAE (hustvl/LightningDiT) — converts into detok's
`CNNTokenizer` and computes what the upstream computes.

Fixtures: benchmarks/upstream/make_fixtures.py, the upstream Encoder/Decoder classes at tiny size (16 px, two levels,
attention where each upstream puts it) with seeded, perturbed weights. Tolerance 1e-5 of the largest value, fp32.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from detok import create_model
from detok.checkpoint import CheckpointError, load_tokenizer, read_model_config
from detok.convert import convert_checkpoint, export_checkpoint, ldm_vae
from detok.convert.safe_load import load_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
SIZE = ["model.image_size=16"]  # the tiny fixtures' image size (not in the weights; upstream's is 256)


def assert_close(actual, expected, what):
    assert actual.shape == expected.shape, what
    err = (actual - expected).abs().max() / expected.abs().max()
    assert err <= 1e-5, f"{what}: max error {err:.2e} of the largest value"


@pytest.mark.parametrize("name, upstream", [("mar_kl16", "LTH14/mar"), ("vavae", "hustvl/LightningDiT")])
def test_converted_autoencoder_matches_upstream(tmp_path, name, upstream):
    meta = json.loads((FIXTURES / name / "meta.json").read_text())
    assert meta["upstream"] == upstream and meta["commit"].startswith(ldm_vae.VERIFIED_COMMIT[upstream])
    io = load_file(str(FIXTURES / name / "io.safetensors"))
    model = load_tokenizer(convert_checkpoint(FIXTURES / name / "checkpoint.pth", tmp_path / name, overrides=SIZE))
    cfg = model.config
    assert (cfg.enc_attn_resolutions, cfg.dec_attn_resolutions) == tuple(
        tuple(meta["args"][k]) for k in ("enc_attn_resolutions", "dec_attn_resolutions")
    )
    with torch.no_grad():
        mean, logvar = model.forward_encoder(io["x"])
        assert_close(mean, io["mean"], "posterior mean")
        assert_close(logvar, io["logvar"], "posterior logvar")
        assert_close(model.forward_decoder(io["z"]), io["decode"], "decode")
        assert_close(model.decode(model.encode(io["x"])), io["forward"], "encode → decode")


def test_attention_placement_matters(tmp_path):
    """Without the encoder's attention blocks (detok's `cnn` before round 3) the KL-16 weights do not fit."""
    model = load_tokenizer(convert_checkpoint(FIXTURES / "mar_kl16" / "checkpoint.pth", tmp_path / "k", overrides=SIZE))
    import dataclasses

    from detok.tokenizers.cnn import CNNTokenizer

    with pytest.raises(RuntimeError, match="Unexpected key"):
        CNNTokenizer(dataclasses.replace(model.config, enc_attn_resolutions=())).load_state_dict(model.state_dict())


@pytest.mark.parametrize("name", ["mar_kl16", "vavae"])
def test_import_export_import_is_bit_exact(tmp_path, name):
    folder = convert_checkpoint(FIXTURES / name / "checkpoint.pth", tmp_path / "a", overrides=SIZE)
    exported = export_checkpoint(folder, tmp_path / "up.pth")[0]
    original = next(iter(load_checkpoint(FIXTURES / name / "checkpoint.pth").values()))
    back = load_checkpoint(exported)["model"]
    assert sorted(back) == sorted(original)
    assert all(torch.equal(back[k], v) for k, v in original.items())
    again = load_tokenizer(convert_checkpoint(exported, tmp_path / "b", overrides=SIZE))
    first = load_tokenizer(folder)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def test_release_with_one_weight_set_needs_no_flag(tmp_path):
    folder = convert_checkpoint(FIXTURES / "mar_kl16" / "checkpoint.pth", tmp_path / "k", overrides=SIZE)
    assert read_model_config(folder)[2]["converted_from"]["weights"].startswith("model (the release's one set")


def test_vavae_training_weights_are_listed_not_lost(tmp_path):
    state = load_checkpoint(FIXTURES / "vavae" / "checkpoint.pth")["state_dict"]
    extra = {"loss.discriminator.main.0.weight": torch.zeros(2), "loss.logvar": torch.zeros(()),
             "foundation_model.model.cls_token": torch.zeros(3), "linear_proj.weight": torch.zeros(4, 4)}  # fmt: skip
    torch.save({"state_dict": {**state, **extra}}, tmp_path / "vavae.pt")
    torch.save({"mean": torch.randn(1, 4, 1, 1), "std": torch.rand(1, 4, 1, 1) + 0.5}, tmp_path / "latents_stats.pt")
    folder = convert_checkpoint(
        tmp_path / "vavae.pt", tmp_path / "v", stats=tmp_path / "latents_stats.pt", overrides=SIZE
    )
    info = read_model_config(folder)[2]["converted_from"]
    assert info["dropped_training_weights"] == {"foundation_model.": 1, "linear_proj.": 1, "loss.": 2}
    stats = load_checkpoint(tmp_path / "latents_stats.pt")
    cfg = load_tokenizer(folder).config
    assert cfg.latent_mean == pytest.approx(stats["mean"].flatten().tolist())
    assert cfg.latent_std == pytest.approx(stats["std"].flatten().tolist())


def test_an_unknown_weight_is_refused(tmp_path):
    state = load_checkpoint(FIXTURES / "mar_kl16" / "checkpoint.pth")["model"]
    torch.save({"model": {**state, "encoder.extra.weight": torch.zeros(1)}}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match="does not know: encoder.extra.weight"):
        convert_checkpoint(tmp_path / "x.ckpt", tmp_path / "out", overrides=SIZE)


def test_only_settable_fields_are_taken(tmp_path):
    with pytest.raises(CheckpointError, match="takes only model.image_size"):
        convert_checkpoint(FIXTURES / "mar_kl16" / "checkpoint.pth", tmp_path / "o", overrides=["model.enc_heads=2"])


def test_mar_kl16_carries_mars_latent_scale():
    """MAR multiplies KL-16 latents by 0.2325 (LTH14/mar engine_mar.py): as statistics, mean 0 and std 1/0.2325."""
    with torch.device("meta"):
        model = create_model("cnn-f16c16")
    mean, std, source = ldm_vae.default_stats(model)
    assert mean == (0.0,) * 16 and std == pytest.approx((1 / 0.2325,) * 16) and "0.2325" in source
    with torch.device("meta"):
        assert ldm_vae.default_stats(create_model("vavae-f16d32")) is None  # VA-VAE's come from latents_stats.pt


def test_full_size_architectures_are_read_back():
    """The KL-16 and VA-VAE presets' own weight layouts are recognised as those architectures."""
    for preset in ("cnn-f16c16", "vavae-f16d32"):
        with torch.device("meta"):
            model = create_model(preset)
        upstream = ldm_vae.to_upstream(model) if model.config.vf is None else None
        if upstream is None:  # the VF projection is training-only; the autoencoder alone is what upstream releases
            import dataclasses

            with torch.device("meta"):
                upstream = ldm_vae.to_upstream(type(model)(dataclasses.replace(model.config, vf=None)))
        cfg = ldm_vae.config_from_state(upstream, {})
        for field in ("latent_channels", "channel_mults", "res_blocks", "enc_attn_resolutions", "dec_attn_resolutions"):
            assert getattr(cfg, field) == getattr(model.config, field), (preset, field)
