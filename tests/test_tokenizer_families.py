"""What each tokenizer family adds to the shared contract: the CNN's noise-only corruption, the 1-D tokenizer's
learned latent tokens and warm-up, the VQ tokenizer's quantiser and codebook statistics."""

import json

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


# ---------------------------------------------------------------------------------------------------------------
# 1-D (Sec. 5.5, App. A.6)
# ---------------------------------------------------------------------------------------------------------------


def test_one_dimensional_tokenizer_layout_and_paper_corruption():
    model = create_model("detok1d-fmnist32-k16")
    layout = model.latent_layout
    assert layout.kind == "sequence" and model.latent_shape == (16, 8) and model.token_layout == "1d"
    assert layout.generator_input == (8, (16,))
    z = torch.randn(2, 16, 8)
    assert torch.equal(layout.from_generator(layout.to_generator(z)), z)
    c = create_model("detok1d-sb-k64").config.corruption
    assert (c.noise_gamma, c.mask_max, c.warmup_frac) == (2.0, 0.0, 0.2)  # App. A.6
    assert not hasattr(model, "enc_rope") and model.maskable_tokens is None


def test_one_dimensional_decoder_sees_only_the_k_latents():
    torch.manual_seed(0)
    model = create_model("detok1d-fmnist32-k8-tiny").eval()
    x = _images(model)
    z = model.encode(x)
    assert torch.equal(model.decode(z), model.decode(z.clone()))  # a function of the latents alone
    x2 = x.clone()
    x2[:, :, :4, :4] = 1.0
    assert not torch.allclose(model.encode(x2), z)  # and the latents do see the image


def test_the_corruption_warm_up_keeps_denoising_off_at_first(tmp_path, monkeypatch):
    """With corruption.warmup_frac=0.5 the trainer asks for clean latents in the first half, noisy ones after."""
    import numpy as np

    from detok.config import apply_overrides
    from detok.tokenizers.onedim import DeTok1D
    from detok.training.tokenizer import default_run_config, train_tokenizer

    calls = []
    forward = DeTok1D.forward

    def spy(self, x, corrupt=None, **kw):
        calls.append(corrupt)
        return forward(self, x, corrupt=corrupt, **kw)

    monkeypatch.setattr(DeTok1D, "forward", spy)
    npz = tmp_path / "d.npz"
    np.savez(npz, images=np.random.default_rng(0).integers(0, 256, (8, 32, 32), dtype=np.uint8))
    sets = ["data.name=npz", f"data.root={npz}", "train.images=40", "train.batch_size=4", "train.progress=false",
            "train.threads=1", "model.corruption.warmup_frac=0.5"]  # fmt: skip
    train_tokenizer(apply_overrides(default_run_config("detok1d-fmnist32-k8-tiny"), sets), tmp_path / "run")
    assert calls == [False] * 5 + [True] * 5


@pytest.mark.parametrize(
    "setting, words",
    [("model.latent_tokens=0", "model.latent_tokens must be ≥ 1"),
     ("model.corruption.warmup_frac=1", "model.corruption.warmup_frac must be in [0, 1)"),
     ("model.corruption.mask_max=0.7", "model.corruption.mask_max must be 0")],
)  # fmt: skip
def test_one_dimensional_bad_settings_are_named(setting, words, capsys):
    rc = cli_main(["tokenizer", "train", "--preset", "detok1d-fmnist32-k8", "--set", setting, "--dry-run"])
    assert rc == 2 and words in capsys.readouterr().err


def test_a_one_dimensional_tokenizer_feeds_sit_and_mar_as_a_sequence(tmp_path, capsys):
    """train → stats → cache → SiT and MAR on (K, C) latents as K tokens → samples decoded to images."""
    import numpy as np

    rng = np.random.default_rng(0)
    npz = tmp_path / "d.npz"
    np.savez(npz, images=rng.integers(0, 256, (16, 32, 32), dtype=np.uint8), labels=np.arange(16) % 2)
    data = ["--set", "data.name=npz", "--set", f"data.root={npz}"]
    quiet = ["--set", "train.progress=false", "--set", "train.threads=1"]
    tok = tmp_path / "tok"
    assert cli_main(["tokenizer", "train", "--preset", "detok1d-fmnist32-k8-tiny", "--out", str(tok), *data, *quiet,
                     "--set", "train.images=8", "--set", "train.batch_size=4"]) == 0  # fmt: skip
    assert cli_main(["tokenizer", "stats", str(tok), "--threads", "1"]) == 0
    assert cli_main(["tokenizer", "eval", str(tok), "--evaluator", "none", "--lpips", "off", "--threads", "1"]) == 0
    assert cli_main(["eval", "latents", str(tok), "--threads", "1"]) == 0
    analysis = json.loads((tok / "analysis" / "latent_analysis.json").read_text())
    assert analysis["robustness"]["noise"] and analysis["robustness"]["mask"] == []  # a 1-D tokenizer never masks
    cache = tmp_path / "cache"
    assert cli_main(["latents", "cache", "--tokenizer", str(tok), "--out", str(cache), "--threads", "1"]) == 0
    for preset in ("sit-fmnist32-tiny", "mar-fmnist32-tiny", "lightningdit-fmnist32-tiny"):
        run = tmp_path / preset
        args = ["generator", "train", "--preset", preset, "--tokenizer", str(tok), "--latents", str(cache),
                "--out", str(run), *quiet, "--set", "train.images=8", "--set", "train.batch_size=4"]  # fmt: skip
        assert cli_main(args) == 0, capsys.readouterr().err
        cfg = json.loads((run / "run_config.json").read_text())["run"]["model"]
        assert cfg["input_size"] == [8] and cfg["latent_channels"] == 8
        out = tmp_path / f"{preset}.npz"
        assert cli_main(["generator", "sample", str(run), "--num", "4", "--out", str(out), "--threads", "1"]) == 0
        assert np.load(out)["images"].shape == (4, 32, 32, 1)
