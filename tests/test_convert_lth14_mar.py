"""LTH14/mar's MAR converts into detok's `MAR` and computes what LTH14's code computes.

Fixture: benchmarks/upstream/make_fixtures.py --mar-repo (LTH14/mar's MAR class with timm's blocks, at tiny size with
the released sizes' LayerNorm eps 1e-6, seeded and perturbed). Same layout as DeTok's MAR; other training settings.
"""

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from detok.checkpoint import load_generator, read_model_config
from detok.convert import convert_checkpoint, lth14_mar
from detok.convert.safe_load import load_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "lth14_mar"
HEADS = ["model.enc_heads=4", "model.dec_heads=4"]


def outputs(model, io: dict) -> dict:
    x, mask, labels = io["tokens"], io["mask"], io["labels"]
    with torch.no_grad():
        h = model.forward_encoder(x, mask, model.condition_buffer(labels))
        null = model.forward_encoder(x, mask, model.condition_buffer(torch.full_like(labels, model.config.num_classes)))
        return {
            "encoder": h,
            "decoder": model.forward_decoder(h, mask),
            "diffloss_net": model.diffloss.net(io["x"], io["steps"].float(), io["cond"]),
            "null_encoder": null,
            "null_decoder": model.forward_decoder(null, mask),
        }


@pytest.mark.parametrize("ema, tag", [(True, "ema"), (False, "raw")])
def test_lth14_mar_matches_upstream(tmp_path, ema, tag):
    meta = json.loads((FIXTURE / "meta.json").read_text())
    assert meta["upstream"] == "LTH14/mar" and meta["commit"] == lth14_mar.VERIFIED_COMMIT and not meta["dirty"]
    io = load_file(str(FIXTURE / "io.safetensors"))
    folder = convert_checkpoint(FIXTURE / "checkpoint.pth", tmp_path / "m", fmt="lth14-mar", ema=ema, overrides=HEADS)
    got = outputs(load_generator(folder), io)
    names = [n for n in got if f"{tag}.{n}" in io]
    assert len(names) >= 3
    for name in names:
        err = (got[name] - io[f"{tag}.{name}"]).abs().max() / io[f"{tag}.{name}"].abs().max()
        assert err <= 1e-5, f"{name}: {err:.2e}"


def test_lth14_settings_differ_from_detoks_mar(tmp_path):
    folder = convert_checkpoint(FIXTURE / "checkpoint.pth", tmp_path / "m", fmt="lth14-mar", overrides=HEADS)
    cfg = load_generator(folder).config
    assert cfg.mlp_dropout is None and cfg.dropout == 0.1  # timm's blocks: the MLP drops out too
    assert read_model_config(folder)[2]["converted_from"]["format"] == "lth14-mar"
    assert lth14_mar.SAMPLING[768]["cfg"] == 2.9  # LTH14's README: MAR-B at 2.9 (DeTok's MAR-B: 3.9)


def test_lth14_checkpoints_are_recognised_by_their_saved_args(tmp_path):
    """LTH14's training script saves its args, which name the KL-16 VAE: no --format needed; without them, detok-mar."""
    data = load_checkpoint(FIXTURE / "checkpoint.pth")
    args = argparse.Namespace(vae_path="pretrained_models/vae/kl16.ckpt", vae_stride=16, model="mar_base")
    torch.save({**data, "args": args}, tmp_path / "with-args.pth")
    auto = convert_checkpoint(tmp_path / "with-args.pth", tmp_path / "a", overrides=HEADS)
    assert read_model_config(auto)[2]["converted_from"]["format"] == "lth14-mar"
    plain = convert_checkpoint(FIXTURE / "checkpoint.pth", tmp_path / "p", overrides=HEADS)
    assert read_model_config(plain)[2]["converted_from"]["format"] == "detok-mar"
