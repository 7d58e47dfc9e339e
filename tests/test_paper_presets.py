"""The paper presets carry the paper's text as data (l-DeTok App. A.1/A.2, Table A.1), checked value by value."""

import pytest
import torch

from detok import create_model
from detok.training.generator import IMAGENET_TRAIN_IMAGES, default_train_config
from detok.training.tokenizer import default_run_config

# Table A.1: encoder or decoder parameters of each ViT size (hidden size, blocks, heads as the presets use them).
TABLE_A1 = {"s": 25.75e6, "b": 85.85e6, "l": 303.33e6}


@pytest.mark.parametrize("preset, enc, dec", [("detok-ss", "s", "s"), ("detok-sb", "s", "b"),
                                              ("detok-bb", "b", "b"), ("detok-ll", "l", "l")])  # fmt: skip
@pytest.mark.parametrize("arch, rel", [("", 2e-4), ("-r2", 0.005)])
def test_tokenizer_sizes_match_table_a1(preset, enc, dec, arch, rel):
    """The official architecture (the paper presets' default) gives Table A.1's counts to the table's 4 digits;
    detok's round-2 variant (SwiGLU widths rounded to 8, no ln_pre, no conv_out) within 0.5%."""
    with torch.device("meta"):  # counts without allocating (detok-ll has 608M parameters)
        model = create_model(preset + arch)
    assert model.config.architecture == ("official" if not arch else "r2")
    encoder = sum(p.numel() for p in model.decoder_finetune_frozen())
    decoder = sum(p.numel() for p in model.parameters()) - encoder
    assert encoder == pytest.approx(TABLE_A1[enc], rel=rel) and decoder == pytest.approx(TABLE_A1[dec], rel=rel)


def test_tokenizer_recipes_follow_app_a1():
    ablation, final = default_run_config("detok-sb"), default_run_config("detok-bb")
    for cfg, epochs in ((ablation, 50), (final, 200)):
        t, loss = cfg.train, cfg.loss
        assert t.images == epochs * IMAGENET_TRAIN_IMAGES and t.batch_size == 1024
        assert t.peak_lr() == pytest.approx(4e-4) and t.warmup_frac == 0.25 and t.lr_schedule == "cosine"
        assert (t.beta1, t.beta2, t.weight_decay) == (0.9, 0.95, 1e-4) and cfg.data.hflip
        assert cfg.data.resize == "adm-center-crop"  # ImageNet preprocessing of DiT/MAR (ADM center_crop_arr)
        assert (loss.kl_weight, loss.perceptual_weight, loss.convnext_weight) == (1e-6, 1.0, 0.1)  # VGG + ConvNeXt
    assert ablation.loss.gan_weight == 0  # ablations: GAN off
    assert (final.loss.gan_weight, final.loss.gan_start_frac) == (0.1, 0.5)  # final: GAN from epoch 100 of 200
    cnn = default_run_config("cnn-f16c16").loss
    assert (cnn.gan_weight, cnn.gan_start_frac) == (0.1, 0.2)  # App. A.5: GAN from epoch 10 of 50
    for preset in ("detok1d-sb-k64", "detokvq-sb"):  # App. A.2 Table A.2: 50 epochs, GAN disabled
        cfg = default_run_config(preset)
        assert cfg.train.images == 50 * IMAGENET_TRAIN_IMAGES and cfg.loss.gan_weight == 0


@pytest.mark.parametrize("preset", ["dit-b", "sit-b", "lightningdit-b", "mar-b", "randomar-b", "rasterar-b"])
def test_generator_recipe_follows_app_a2(preset):
    t = default_train_config(preset)
    assert t.batch_size == 1024 and t.peak_lr() == 2e-4 and t.lr_schedule == "constant" and t.warmup_frac == 0
    assert t.grad_clip is None and t.weight_decay == 0 and t.ema_decay == 0.9999
    assert t.images == 100 * IMAGENET_TRAIN_IMAGES  # 100 epochs for the ablations


def test_training_without_gradient_clipping_still_measures_the_norm(tmp_path):
    import json

    import numpy as np

    from detok.config import apply_overrides
    from detok.training.tokenizer import train_tokenizer

    npz = tmp_path / "d.npz"
    np.savez(npz, images=np.random.default_rng(0).integers(0, 256, (8, 32, 32), dtype=np.uint8))
    sets = ["data.name=npz", f"data.root={npz}", "train.images=8", "train.batch_size=4", "train.progress=false",
            "train.threads=1", "train.log_every=1", "train.grad_clip=null", "train.blr=10"]  # fmt: skip
    train_tokenizer(apply_overrides(default_run_config("detok-fmnist32-tiny"), sets), tmp_path / "run")
    norms = [json.loads(line)["grad_norm"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(norms) == 2 and norms[0] > 3.0  # above the default clip: measured, not clipped away
