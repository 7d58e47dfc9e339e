"""Fine-tuning to another resolution through `init_from` (l-DeTok App. A.3): learned grid positions resampled, RoPE
and sin-cos tables rebuilt, everything else loaded unchanged; the recipes; and the refusals."""

import json

import numpy as np
import pytest
import torch

from detok import create_model
from detok.checkpoint import load_model_folder, load_tokenizer, save_model_folder
from detok.cli import main as cli_main
from detok.layers import grid_positions, resample_pos_embed, rope_tables, sincos_pos_embed
from detok.training.init_from import matching_state_dict
from detok.training.tokenizer import default_run_config

QUIET = ["train.progress=false", "train.threads=1", "train.log_every=1", "train.sample_every=1000"]


def _fitted(source, target, size_field="image_size", tmp="x"):
    """`target` with the weights of `source` fitted to it."""
    target.load_state_dict(matching_state_dict(source, target, tmp, size_field))
    return target


def _images(size, n=2):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


# ---------------------------------------------------------------------------------------------------------------
# The resampling
# ---------------------------------------------------------------------------------------------------------------


def test_resample_pos_embed_shapes_prefix_and_identity():
    pos = torch.randn(1, 3 + 8 * 8, 16)
    out = resample_pos_embed(pos, (8, 8), (16, 16), prefix_tokens=3)
    assert out.shape == (1, 3 + 16 * 16, 16) and torch.equal(out[:, :3], pos[:, :3])
    assert resample_pos_embed(pos, (8, 8), (8, 8), prefix_tokens=3) is pos  # the same grid: the identity
    constant = torch.ones(1, 64, 4) * torch.arange(4.0)  # bicubic weights sum to one: a constant field stays
    assert torch.allclose(resample_pos_embed(constant, (8, 8), (16, 16)), torch.ones(1, 256, 4) * torch.arange(4.0))
    assert resample_pos_embed(torch.randn(1, 8, 4), (8,), (16,)).shape == (1, 16, 4)  # 1-D: linear
    with pytest.raises(ValueError, match="do not make"):
        resample_pos_embed(pos, (8, 8), (16, 16))  # the 3 leading tokens not declared


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer families
# ---------------------------------------------------------------------------------------------------------------


def test_detok_at_twice_the_size_resamples_positions_and_rebuilds_rope():
    torch.manual_seed(0)
    source = create_model("detok-fmnist32-tiny")
    model = _fitted(source, create_model("detok-fmnist64-tiny"))
    assert model.enc_pos.shape == model.dec_pos.shape == (1, 16 * 16, 32) and model.latent_shape == (8, 16, 16)
    assert torch.equal(model.enc_pos, resample_pos_embed(source.enc_pos, (8, 8), (16, 16)))
    head_dim = model.config.enc_width // model.config.enc_heads
    assert torch.equal(model.enc_rope, rope_tables(grid_positions(16, 16), head_dim, model.config.rope_theta))
    mine, theirs = model.state_dict(), source.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in theirs.items() if k not in ("enc_pos", "dec_pos"))
    assert model(_images(64), mask_ratio=0.5)["recon"].shape == (2, 1, 64, 64)
    # at the same size nothing is resampled: the function is the checkpoint's
    same = _fitted(source, create_model("detok-fmnist32-tiny"))
    assert torch.equal(same.encode(_images(32)), source.encode(_images(32)))


def test_a_rope_only_family_loads_unchanged_and_keeps_its_function_at_the_old_size():
    """MAETok: 2-D RoPE on the patches and K learned latent tokens, no learned grid positions; its weights at 64 px are
    the 32-px ones, so going back to 32 px gives the checkpoint's function exactly."""
    torch.manual_seed(0)
    source = create_model("maetok-fmnist32-tiny").eval()
    big = _fitted(source, create_model("maetok-fmnist32-tiny", image_size=64))
    assert big.latent_shape == source.latent_shape  # K tokens whatever the size
    assert big.enc_rope.shape[0] == 16 * 16 + source.config.latent_tokens
    back = _fitted(big, create_model("maetok-fmnist32-tiny")).eval()
    assert torch.equal(back.encode(_images(32)), source.encode(_images(32)))


def test_a_1d_tokenizer_keeps_its_k_tokens_and_a_cnn_has_nothing_to_resample():
    torch.manual_seed(0)
    source = create_model("detok1d-fmnist32-k8-tiny")
    model = _fitted(source, create_model("detok1d-fmnist32-k8-tiny", image_size=64))
    assert model.latent_shape == source.latent_shape  # a generator on its latents needs no change
    assert model.enc_pos.shape[1] == 16 * 16 and torch.equal(model.enc_latent_pos, source.enc_latent_pos)
    cnn = create_model("cnn-fmnist32-tiny")
    big = _fitted(cnn, create_model("cnn-fmnist32-tiny", image_size=64))
    assert all(torch.equal(a, b) for a, b in zip(big.state_dict().values(), cnn.state_dict().values()))
    assert big.latent_shape[1:] == tuple(2 * s for s in cnn.latent_shape[1:])


# ---------------------------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------------------------


def test_generators_resample_learned_positions_and_rebuild_fixed_ones():
    torch.manual_seed(0)
    mar = create_model("mar-fmnist32-tiny")
    big = _fitted(mar, create_model("mar-fmnist32-tiny", input_size=(8, 8)), "input_size")
    b = mar.config.buffer_size
    assert big.enc_pos.shape[1] == b + 64 and torch.equal(big.enc_pos[:, :b], mar.enc_pos[:, :b])  # buffer kept
    assert big.diffusion_pos.shape[1] == 64
    ar = create_model("randomar-fmnist32-tiny")
    big_ar = _fitted(ar, create_model("randomar-fmnist32-tiny", input_size=(8, 8)), "input_size")
    assert big_ar.pos_embed.shape[1] == big_ar.target_pos.shape[1] == 64
    sit = create_model("sit-fmnist32-tiny")  # sin-cos buffers: the weights are the same, the table is the new grid's
    big_sit = _fitted(sit, create_model("sit-fmnist32-tiny", input_size=(8, 8)), "input_size")
    assert torch.equal(big_sit.net.pos_embed[0], sincos_pos_embed(sit.config.width, (8, 8)))
    seq = create_model("sit-fmnist32-tiny", input_size=(8,))  # 1-D tokens: learned, resampled linearly
    assert _fitted(seq, create_model("sit-fmnist32-tiny", input_size=(16,)), "input_size").net.pos_embed.shape[1] == 16
    samples = big_sit.sample(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, sit.config.latent_channels, 8, 8)


# ---------------------------------------------------------------------------------------------------------------
# Recipes and the command line
# ---------------------------------------------------------------------------------------------------------------


def test_the_papers_512_recipe_and_its_fmnist_analogue():
    paper = default_run_config("detok-bb-512")
    assert paper.model.image_size == 512 and paper.model.patch_size == 16 and paper.data.image_size == 512
    assert paper.train.peak_lr() == pytest.approx(2e-4) and paper.train.images == 25 * 1_281_167
    assert paper.loss.gan_weight == 0.1 and paper.loss.gan_start_step == 0 and paper.loss.gan_start_frac is None
    fmnist, base = default_run_config("detok-fmnist64"), default_run_config("detok-fmnist32")
    assert (fmnist.model.image_size, fmnist.model.patch_size, fmnist.model.grid_size) == (64, 4, 16)
    assert (fmnist.data.image_size, fmnist.data.pad_to) == (64, 32)
    assert fmnist.train.blr == base.train.blr / 2 and fmnist.train.images == base.train.images // 8
    assert fmnist.loss.gan_weight == 0.1 and fmnist.loss.gan_start_step == 0


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """16 synthetic 32×32 greyscale images of blobs."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    imgs = [np.where((yy - rng.uniform(8, 24)) ** 2 + (xx - rng.uniform(8, 24)) ** 2 < 30, 220, 20) for _ in range(16)]
    path = tmp_path_factory.mktemp("data") / "blobs.npz"
    np.savez(path, images=np.stack(imgs).astype(np.uint8), labels=rng.integers(0, 2, 16))
    return path


def test_fmnist_at_64px_keeps_the_32px_framing(blobs):
    from detok.config import ConfigError
    from detok.data import DataConfig, build_dataset

    small = build_dataset(DataConfig(name="npz", root=str(blobs)), "train").get_batch(torch.arange(4))[0]
    big = build_dataset(DataConfig(name="npz", root=str(blobs), image_size=64, pad_to=32), "train")
    x = big.get_batch(torch.arange(4))[0]
    assert x.shape == (4, 1, 64, 64)
    assert (torch.nn.functional.avg_pool2d(x, 2) - small).abs().mean() < 0.05  # the same picture, twice the size
    with pytest.raises(ConfigError, match="pad_to"):
        DataConfig(resize="center-crop", pad_to=32)


def _train(out, preset, npz, *sets):
    args = ["tokenizer", "train", "--preset", preset, "--out", str(out)]
    for s in ["data.name=npz", f"data.root={npz}", "train.batch_size=8", *QUIET, *sets]:
        args += ["--set", s]
    return cli_main(args)


def test_cli_fine_tunes_a_32px_tokenizer_to_64px_in_full_and_decoder_only(blobs, tmp_path):
    assert _train(tmp_path / "base", "detok-fmnist32-tiny", blobs, "train.images=16") == 0
    base = load_tokenizer(tmp_path / "base")
    for kind, extra in (("full", []), ("decoder", ["decoder_finetune=true"])):
        run, init = tmp_path / kind, f"init_from={tmp_path / 'base'}"
        assert _train(run, "detok-fmnist64-tiny", blobs, "train.images=16", init, *extra) == 0
        resolved = json.loads((run / "run_config.json").read_text())["run"]
        assert resolved["data"]["image_size"] == 64 and resolved["data"]["pad_to"] == 32
        assert resolved["loss"]["gan_weight"] == 0.1 and resolved["loss"]["gan_start_step"] == 0
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert log[0]["gan_d"] > 0  # the discriminator trains from the first step
        tuned = load_tokenizer(run)
        assert tuned.config.image_size == 64 and tuned.encode(_images(64)).shape == (2, 8, 16, 16)
        frozen = torch.equal(tuned.enc_pos, resample_pos_embed(base.enc_pos, (8, 8), (16, 16)))
        assert frozen == (kind == "decoder") and not torch.equal(tuned.dec_head.weight, base.dec_head.weight)
        # the 32-px statistics do not describe the 64-px latents: `detok tokenizer stats` computes them anew
        assert tuned.config.latent_mean is None


def test_the_decoder_only_arm_can_keep_the_full_arms_corruption_so_the_two_differ_in_what_is_frozen_only(
    blobs, tmp_path, monkeypatch
):
    """App. A.3 leaves open whether its decoder-only 512-px arm trained on clean latents: `finetune_corruption`
    keeps the model's own corruption (masking, noise, posterior sampling) with the encoder frozen; without it the
    decoder trains on clean latents. The resolution suite runs both arms beside the full one."""
    from detok.bench.suites import SUITES
    from detok.tokenizers.detok import DeTok

    arms = {v.name: v for v in SUITES["resolution"]}
    assert arms["64px-decoder-corrupted"].finetune_overrides == ("finetune_corruption=true",)
    assert arms["64px-decoder"].finetune_overrides == () and arms["64px-full"].finetune == "full"
    assert _train(tmp_path / "base", "detok-fmnist32-tiny", blobs, "train.images=16") == 0
    calls = []
    forward = DeTok.forward

    def spy(self, x, corrupt=None, mask_ratio=None, sample_posterior=True, **kw):
        calls.append((corrupt, sample_posterior))
        return forward(self, x, corrupt=corrupt, mask_ratio=mask_ratio, sample_posterior=sample_posterior, **kw)

    monkeypatch.setattr(DeTok, "forward", spy)
    init = f"init_from={tmp_path / 'base'}"
    for extra, expected in (([], (False, False)), (["finetune_corruption=true"], (True, True))):
        calls.clear()
        run = tmp_path / f"dec{len(extra)}"
        assert _train(run, "detok-fmnist64-tiny", blobs, "train.images=16", init, "decoder_finetune=true", *extra) == 0
        assert calls and all(c == expected for c in calls)
        base, tuned = load_tokenizer(tmp_path / "base"), load_tokenizer(run)
        assert torch.equal(tuned.patch_embed.weight, base.patch_embed.weight)  # the encoder frozen either way
    assert _train(tmp_path / "bad", "detok-fmnist64-tiny", blobs, init, "finetune_corruption=true") == 2


def test_init_from_another_architecture_or_none_is_one_clear_error(blobs, tmp_path, capsys):
    save_model_folder(tmp_path / "wide", create_model("detok-fmnist32-tiny", enc_width=64))
    assert _train(tmp_path / "a", "detok-fmnist64-tiny", blobs, f"init_from={tmp_path / 'wide'}") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("detok: error: init_from=")
    assert "enc_width: checkpoint 64 vs run 32" in err and "only image_size may differ" in err
    assert _train(tmp_path / "b", "detok-fmnist64-tiny", blobs) == 2
    assert "set init_from=<a detok-fmnist32-tiny run>" in capsys.readouterr().err
    save_model_folder(tmp_path / "cnn", create_model("cnn-fmnist32-tiny"))
    assert _train(tmp_path / "c", "detok-fmnist64-tiny", blobs, f"init_from={tmp_path / 'cnn'}") == 2
    assert "holds a CNNTokenizer, this run a DeTok" in capsys.readouterr().err


def test_generator_init_from_another_architecture_is_refused(blobs, tmp_path, capsys):
    stats = {"latent_mean": (0.0,) * 8, "latent_std": (1.0,) * 8}
    save_model_folder(tmp_path / "tok", create_model("detok-fmnist32-tiny", image_size=64, **stats))
    save_model_folder(tmp_path / "deep", create_model("sit-fmnist32-tiny", depth=2, num_classes=2, latent_channels=8))
    args = ["generator", "train", "--preset", "sit-fmnist32-tiny", "--tokenizer", str(tmp_path / "tok")]
    args += ["--out", str(tmp_path / "g"), "--set", "data.name=npz", "--set", f"data.root={blobs}"]
    assert cli_main([*args, "--set", f"init_from={tmp_path / 'deep'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "depth: checkpoint 2 vs run 1" in err and "only input_size may differ" in err
    assert load_model_folder(tmp_path / "deep").config.input_size == (4, 4)  # the preset's; the run's is 16×16


def test_a_64px_tokenizer_is_scored_by_the_32px_reference_classifier_through_a_resize(tmp_path, capsys):
    import dataclasses
    import json

    import numpy as np

    from detok import create_model
    from detok.checkpoint import save_model_folder
    from detok.cli import main as cli_main
    from detok.eval.features import SHIPPED_REFERENCE, ResizedExtractor, build_extractor, fit_to_size
    from detok.tokenizers.detok import DeTok

    reference = build_extractor("reference")
    assert fit_to_size(reference, 32) is reference and fit_to_size(None, 64) is None
    assert isinstance(fit_to_size(reference, 64), ResizedExtractor) and fit_to_size(reference, 64).size == 32
    torch.manual_seed(0)
    model = DeTok(dataclasses.replace(create_model("detok-fmnist32-tiny").config, image_size=64))
    save_model_folder(tmp_path / "tok", model)
    rng = np.random.default_rng(0)
    npz = tmp_path / "d.npz"
    images = rng.integers(0, 256, (12, 64, 64), dtype=np.uint8)
    np.savez(npz, images_train=images[:8], labels_train=np.arange(8) % 2, images_test=images[8:],
             labels_test=np.arange(4) % 2)  # fmt: skip
    args = ["tokenizer", "eval", str(tmp_path / "tok"), "--evaluator", f"reference:{SHIPPED_REFERENCE}", "--lpips",
            "off", "--threads", "1", "--set", "name=npz", "--set", f"root={npz}", "--set", "resize=resize"]  # fmt: skip
    assert cli_main(args) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "tok" / "eval-test.json").read_text())
    assert record["rfid"] is not None and record["evaluator"].endswith("-at32px")
