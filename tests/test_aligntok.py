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
