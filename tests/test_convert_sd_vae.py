"""diffusers' AutoencoderKL (the SD-VAE of DiT and SiT) converts into detok's `CNNTokenizer` and computes what
diffusers computes. Fixture: benchmarks/upstream/make_fixtures.py --diffusers (a tiny AutoencoderKL, seeded and
perturbed, saved as the release's bare `diffusion_pytorch_model.safetensors`)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from detok import create_model
from detok.checkpoint import load_tokenizer, read_model_config
from detok.convert import convert_checkpoint, diffusers_vae, export_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "sd_vae"
WEIGHTS = FIXTURE / "diffusion_pytorch_model.safetensors"
SIZE = ["model.image_size=16"]


def assert_close(actual, expected, what):
    err = (actual - expected).abs().max() / expected.abs().max()
    assert actual.shape == expected.shape and err <= 1e-5, f"{what}: {err:.2e}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return convert_checkpoint(WEIGHTS, tmp_path_factory.mktemp("sd") / "vae", overrides=SIZE)


def test_converted_vae_matches_diffusers(folder):
    assert json.loads((FIXTURE / "meta.json").read_text())["upstream"] == "huggingface/diffusers"
    io = load_file(str(FIXTURE / "io.safetensors"))
    model = load_tokenizer(folder)
    with torch.no_grad():
        mean, logvar = model.forward_encoder(io["x"])
        assert_close(mean, io["mean"], "posterior mean")
        assert_close(logvar, io["logvar"], "posterior logvar")
        assert_close(model.forward_decoder(io["z"]), io["decode"], "decode")
    assert read_model_config(folder)[2]["converted_from"]["format"] == "diffusers-vae"


def test_older_attention_names_convert_the_same(tmp_path, folder):
    """Files saved by older diffusers name the mid-block attention query/key/value/proj_attn."""
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = load_file(str(WEIGHTS))
    old = {}
    for key, tensor in state.items():
        for new, legacy in renames.items():
            key = key.replace(f".attentions.0.{new}.", f".attentions.0.{legacy}.")
        old[key] = tensor
    save_file(old, str(tmp_path / "old.safetensors"))
    again = load_tokenizer(convert_checkpoint(tmp_path / "old.safetensors", tmp_path / "o", overrides=SIZE))
    assert all(
        torch.equal(a, b) for a, b in zip(load_tokenizer(folder).state_dict().values(), again.state_dict().values())
    )


def test_import_export_import_is_bit_exact(tmp_path, folder):
    exported = export_checkpoint(folder, tmp_path / "vae.pth")[0]
    back = torch.load(exported, weights_only=True)["model"]
    original = load_file(str(WEIGHTS))
    assert sorted(back) == sorted(original) and all(torch.equal(back[k], v) for k, v in original.items())


def test_the_sd_vae_preset_is_diffusers_layout_with_its_scaling_factor():
    with torch.device("meta"):
        model = create_model("sd-vae-f8c4")
        cfg = diffusers_vae.config_from_state(diffusers_vae.to_upstream(model), {})
    assert (cfg.channel_mults, cfg.res_blocks, cfg.latent_channels) == ((1, 2, 4, 4), 2, 4)
    mean, std, source = diffusers_vae.default_stats(model)
    assert mean == (0.0,) * 4 and std == pytest.approx((1 / 0.18215,) * 4) and "0.18215" in source


def test_a_cnn_folder_of_no_conversion_names_its_layouts(tmp_path):
    from detok.checkpoint import save_model_folder

    save_model_folder(tmp_path / "cnn", create_model("sd-vae-f8c4-tiny"))
    with pytest.raises(
        ValueError, match=r"several upstream layouts \(ldm-kl, diffusers-vae\): choose one with --format"
    ):
        export_checkpoint(tmp_path / "cnn", tmp_path / "x.pth")
    written = export_checkpoint(tmp_path / "cnn", tmp_path / "x.pth", fmt="diffusers-vae")[0]
    assert "encoder.mid_block.attentions.0.to_q.weight" in torch.load(written, weights_only=True)["model"]
