"""`detok convert` for generators: the converted folder names its tokenizer and samples end to end."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from detok import create_model
from detok.checkpoint import save_model_folder
from detok.cli import main

MAR = Path(__file__).parent / "fixtures" / "upstream" / "detok_mar" / "checkpoint.pth"
HEADS = ["--set", "model.enc_heads=4", "--set", "model.dec_heads=4"]


def _tokenizer(folder: Path, image_size: int) -> Path:
    """A tiny l-DeTok with 4 latent channels and statistics; 16 px gives the fixture MAR's 4×4 grid."""
    model = create_model("detok-fmnist32-tiny", latent_channels=4, image_size=image_size)
    model.config = dataclasses.replace(model.config, latent_mean=(0.0,) * 4, latent_std=(1.0,) * 4)
    save_model_folder(folder, model)
    return folder


def test_converted_generator_records_its_tokenizer_and_samples(tmp_path, capsys):
    tok = _tokenizer(tmp_path / "tok", 16)
    out = tmp_path / "mar"
    assert main(["convert", str(MAR), "--out", str(out), "--tokenizer", str(tok), *HEADS]) == 0
    assert f"tokenizer {tok}" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["tokenizer"] == str(tok)
    samples = tmp_path / "s.npz"
    assert main(["generator", "sample", str(out), "--num", "2", "--out", str(samples), "--threads", "1"]) == 0
    images = np.load(samples)["images"]
    assert images.shape == (2, 16, 16, 1) and images.dtype == np.uint8


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _tokenizer(p, 32), "makes latents of shape (4, 8, 8); the generator models (4, 4, 4)"),
        (lambda p: save_model_folder(p, create_model("detok-fmnist32-tiny", latent_channels=4, image_size=16)) or p,
         "has no latent statistics"),
    ],
)  # fmt: skip
def test_a_tokenizer_that_does_not_fit_is_refused(tmp_path, capsys, make, message):
    tok = make(tmp_path / "tok")
    assert main(["convert", str(MAR), "--out", str(tmp_path / "mar"), "--tokenizer", str(tok), *HEADS]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "mar").exists()


def test_tokenizer_flag_is_for_generators(tmp_path, capsys):
    tok = _tokenizer(tmp_path / "tok", 16)
    src = Path(__file__).parent / "fixtures" / "upstream" / "detok_tokenizer" / "checkpoint.pth"
    args = ["convert", str(src), "--out", str(tmp_path / "t"), "--tokenizer", str(tok)]
    assert main([*args, "--set", "model.enc_heads=2", "--set", "model.dec_heads=4"]) == 2
    assert "--tokenizer is for generators" in capsys.readouterr().err
