"""What each tokenizer family adds to the shared contract: the CNN's noise-only corruption, the 1-D tokenizer's
learned latent tokens and warm-up, the VQ tokenizer's quantiser and codebook statistics."""

import pytest
import torch

from detok import create_model
from detok.cli import main as cli_main
from detok.tokenizers.corruption import CorruptionConfig


def _images(model, n=4, seed=0):
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, cfg.channels, cfg.image_size, cfg.image_size, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------------------------------------
# CNN (App. A.5)
# ---------------------------------------------------------------------------------------------------------------


def test_cnn_fmnist32_has_the_latent_grid_of_detok_fmnist32():
    assert create_model("cnn-fmnist32").latent_shape == create_model("detok-fmnist32").latent_shape == (8, 8, 8)
    assert create_model("cnn-f16c16-tiny").latent_layout.kind == "grid"


def test_cnn_corrupts_with_noise_only_and_refuses_masking(capsys):
    torch.manual_seed(0)
    model = create_model("cnn-fmnist32-tiny").train()
    x = _images(model)
    torch.manual_seed(1)
    noisy = model(x, corrupt=True, sample_posterior=False)
    torch.manual_seed(1)
    clean = model(x, corrupt=False, sample_posterior=False)
    assert (noisy["tau"] > 0).all() and (clean["tau"] == 0).all()
    assert not torch.allclose(noisy["recon"], clean["recon"])
    with pytest.raises(ValueError, match="does not mask"):
        model(x, mask_ratio=0.5)
    with pytest.raises(ValueError, match="corruption.mask_max must be 0"):
        create_model("cnn-fmnist32", corruption=CorruptionConfig(mask_max=0.5))
    rc = cli_main(["tokenizer", "train", "--preset", "cnn-fmnist32", "--set", "model.corruption.mask_max=0.5",
                   "--dry-run"])  # fmt: skip
    assert rc == 2 and "model.corruption.mask_max must be 0" in capsys.readouterr().err


def test_cnn_paper_recipe_turns_the_gan_on_after_a_fifth_of_training(capsys):
    assert cli_main(["tokenizer", "train", "--preset", "cnn-f16c16", "--dry-run"]) == 0
    assert '"gan_start_frac": 0.2' in capsys.readouterr().out
