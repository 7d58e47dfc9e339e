"""AlignTok: three stages chained by init_from, each freezing what the paper freezes; the semantic-preservation term
of stage 2 pulls towards the stage-1 latents; bad stage orders are refused with one clear error."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from detok import create_model
from detok.cli import main as cli_main


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("align") / "d.npz"
    np.savez(path, images=rng.integers(0, 256, (8, 32, 32), dtype=np.uint8), labels=np.arange(8) % 2)
    return path


def _train(out, npz, *extra):
    args = ["tokenizer", "train", "--preset", "aligntok-fmnist32-tiny", "--out", str(out), "--set", "data.name=npz",
            "--set", f"data.root={npz}", "--set", "train.progress=false", "--set", "train.threads=1",
            "--set", "train.batch_size=4", "--set", "train.images=12", "--set", "train.ema_decay=0.5"]  # fmt: skip
    for item in extra:
        args += ["--set", item]
    return cli_main(args)


def _weights(run):
    return load_file(str(run / "model.safetensors"))


def _changed(a, b, prefix):
    keys = [k for k in a if k.startswith(prefix)]
    assert keys, prefix
    return any(not torch.equal(a[k], b[k]) for k in keys)


def test_three_stages_freeze_what_the_paper_freezes(npz, tmp_path, capsys):
    torch.manual_seed(0)
    s1, s2, s3 = tmp_path / "s1", tmp_path / "s2", tmp_path / "s3"
    assert _train(s1, npz) == 0
    torch.manual_seed(0)  # as the trainer seeds (train.seed=0) before building the model
    initial = create_model("aligntok-fmnist32-tiny")  # the same random "pretrained" encoder the run started from
    assert _train(s2, npz, "model.stage=2", f"init_from={s1}") == 0
    assert _train(s3, npz, "model.stage=3", f"init_from={s2}") == 0
    w1, w2, w3 = _weights(s1), _weights(s2), _weights(s3)
    # stage 1: the encoder is the pretrained one, untouched; adapter and decoder learn
    assert not _changed(w1, initial.state_dict(), "encoder.") and _changed(w1, initial.state_dict(), "decoder.")
    # stage 2: everything moves; the preservation term is logged with its adaptive weight
    assert _changed(w1, w2, "encoder.") and _changed(w1, w2, "adapter.") and _changed(w1, w2, "decoder.")
    log = [json.loads(line) for line in (s2 / "log.jsonl").read_text().splitlines() if line]
    assert all("preservation" in r and "preservation_weight" in r for r in log)
    assert log[-1]["preservation"] > 0  # the latents left the stage-1 ones, and the term sees it
    # stage 3: the latent space is fixed; only the decoder learns
    assert not _changed(w2, w3, "encoder.") and not _changed(w2, w3, "adapter.") and _changed(w2, w3, "decoder.")
    assert "preservation" not in (s3 / "log.jsonl").read_text()


def test_a_stage_without_its_previous_stage_is_one_clear_error(npz, tmp_path, capsys):
    assert _train(tmp_path / "x", npz, "model.stage=2") == 2
    err = capsys.readouterr().err
    assert "stage 2 (perceptual alignment) continues stage 1: set init_from=" in err and "Traceback" not in err
    assert _train(tmp_path / "s1", npz) == 0
    capsys.readouterr()
    assert _train(tmp_path / "s3", npz, "model.stage=3", f"init_from={tmp_path / 's1'}") == 2
    assert "init_from holds a stage-1 model; run stage 2 first" in capsys.readouterr().err


def test_stage_two_pulls_towards_the_stage_one_latents():
    """The preservation term is mean (z − z_prev)² against a frozen copy of the stage-1 encoder + adapter."""
    import dataclasses

    from detok.tokenizers.aligntok import AlignTok

    torch.manual_seed(0)
    model = AlignTok(dataclasses.replace(create_model("aligntok-fmnist32-tiny").config, stage=2))
    (z_prev_net,) = model.build_teachers()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        model.adapter[-1].bias.add_(0.5)  # move the current latents by 0.5 in every element
    out = model(x, teacher_features=[z_prev_net(x)])
    assert out["aux"]["preservation"].item() == pytest.approx(0.25, rel=1e-5)
    assert out["aux_adaptive"] == {"preservation": 1.0}
    assert model.last_encoder_layer() is model.encoder.last_layer() and model.last_encoder_layer().requires_grad
    assert not any(p.requires_grad for p in z_prev_net.parameters())


def test_a_mismatched_encoder_is_named():
    import dataclasses

    from detok.tokenizers.aligntok import AlignTok

    cfg = create_model("aligntok-fmnist32-tiny").config
    with pytest.raises(ValueError, match="model.encoder_dim=32"):
        AlignTok(dataclasses.replace(cfg, encoder_dim=64))
    with pytest.raises(ValueError, match="up-samples a 4x4 grid"):
        AlignTok(dataclasses.replace(cfg, channel_mults=(1, 1, 2, 2)))


def test_a_saved_aligntok_loads_without_its_encoders_source(npz, tmp_path):
    """The tokenizer folder records the encoder's architecture and holds its weights: deleting the teacher folder
    the encoder came from changes nothing about loading or encoding."""
    import shutil

    from detok.checkpoint import load_tokenizer, save_model_folder

    torch.manual_seed(0)
    teacher = create_model("mae-teacher-fmnist32-tiny")
    save_model_folder(tmp_path / "teacher", teacher)
    assert _train(tmp_path / "s1", npz, f"model.encoder=detok:{tmp_path / 'teacher'}") == 0
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        before = load_tokenizer(tmp_path / "s1").encode(x)
        shutil.rmtree(tmp_path / "teacher")
        tokenizer = load_tokenizer(tmp_path / "s1")
        assert torch.equal(tokenizer.encode(x), before)
    # the encoder is the teacher's (stage 1 keeps it frozen), read from the tokenizer's own checkpoint
    assert torch.equal(tokenizer.encoder.model.patch_embed.weight, teacher.patch_embed.weight)
    assert json.loads(tokenizer.config.encoder_arch)["arch"] == "MaskedAutoencoder"


def test_the_paper_recipe_follows_the_stage():
    """App. A: 6/11/5 epochs at lr 1e-4/1e-5/1e-4, batch 64, no warm-up or schedule stated; Eq. 1's L1 + LPIPS (no
    ConvNeXt term) + a GAN rescaled by the gradient-norm ratio at the decoder's last layer, on after 5K steps of
    stage 1 and "active throughout the second and third stages" with the same discriminator."""
    from detok.training.tokenizer import IMAGENET_TRAIN_IMAGES, default_run_config

    expected = {1: (6, 1e-4, 5000, False), 2: (11, 1e-5, 0, True), 3: (5, 1e-4, 0, True)}
    for stage, (epochs, lr, gan_start, carried) in expected.items():
        sets = [f"model.stage={stage}"] + (["init_from=runs/previous"] if stage > 1 else [])
        cfg = default_run_config("aligntok-l", sets)
        assert cfg.train.images == epochs * IMAGENET_TRAIN_IMAGES and cfg.train.lr == lr
        assert cfg.train.batch_size == 64 and cfg.train.warmup_frac == 0 and cfg.train.lr_schedule == "constant"
        assert cfg.loss.recon == "l1" and cfg.loss.convnext_weight == 0 and cfg.loss.adaptive_gan_weight
        assert cfg.loss.gan_weight > 0 and cfg.loss.gan_start_step == gan_start and cfg.continue_gan == carried
    assert default_run_config("aligntok-l", ["model.stage=2", "init_from=x", "train.lr=3e-5"]).train.lr == 3e-5
    from detok.bench.suites import SUITES

    row = next(v for v in SUITES["peers"] if v.name == "aligntok")  # the FMNIST row: the same where FMNIST allows
    assert {"loss.recon=l1", "train.lr_schedule=constant", "train.warmup_frac=0"} <= set(row.overrides)


def test_the_l1_reconstruction_term_replaces_the_mse():
    from detok.losses.tokenizer import LossConfig, TokenizerLoss

    x, recon = torch.zeros(2, 1, 8, 8), torch.full((2, 1, 8, 8), 0.5)
    for kind, value in (("mse", 0.25), ("l1", 0.5)):
        loss = TokenizerLoss(LossConfig(recon=kind, perceptual_weight=0, gan_weight=0), 1, 10)
        total, terms = loss.generator_loss(x, {"recon": recon}, 0)
        assert float(total) == pytest.approx(value) and float(terms["mse"]) == pytest.approx(0.25)


def test_a_later_stage_continues_the_previous_stages_discriminator(npz, tmp_path, monkeypatch, capsys):
    import detok.training.tokenizer as trainer

    gan = ["loss.gan_weight=0.1", "loss.gan_start_step=0", "loss.disc_layers=2"]
    s1 = tmp_path / "s1"
    assert _train(s1, npz, *gan) == 0
    seen = []
    original = trainer._previous_discriminator
    monkeypatch.setattr(trainer, "_previous_discriminator", lambda run: seen.append(run) or original(run))
    assert _train(tmp_path / "s2", npz, *gan, "model.stage=2", f"init_from={s1}", "continue_gan=true") == 0
    newest = sorted((s1 / "checkpoints").iterdir())[-1]
    assert seen == [str(s1)]
    weights, saved = original(str(s1)), load_file(str(newest / "disc.safetensors"))
    assert weights.keys() == saved.keys() and all(torch.equal(weights[k], saved[k]) for k in saved)
    plain = tmp_path / "plain"
    assert _train(plain, npz) == 0  # no GAN: no discriminator to continue
    assert _train(tmp_path / "x", npz, *gan, "model.stage=2", f"init_from={plain}", "continue_gan=true") == 2
    assert "holds no training checkpoint with a discriminator" in capsys.readouterr().err
    assert _train(tmp_path / "y", npz, "model.stage=2", f"init_from={s1}", "continue_gan=true") == 2
