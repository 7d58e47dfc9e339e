"""Generator training and sampling end to end: cache → train → sample, exact resume, DDP, clear errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from detok import create_model
from detok.checkpoint import save_model_folder
from detok.cli import main as cli_main
from detok.latents import store_latent_stats
from detok.training.generator import default_run_config, train_generator

PRESET = "sit-fmnist32-tiny"
TOKENIZER = "detok-fmnist32-tiny"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny tokenizer with latent statistics, 24 labelled 32×32 images (3 classes) and their latent cache."""
    root = tmp_path_factory.mktemp("gen")
    torch.manual_seed(0)
    tok = create_model(TOKENIZER).eval()
    save_model_folder(root / "tok", tok)
    store_latent_stats(root / "tok", [0.1] * tok.config.latent_channels, [0.5] * tok.config.latent_channels)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 32, 32), dtype=np.uint8)
    np.savez(root / "d.npz", images=images, labels=np.arange(24) % 3)
    args = ["latents", "cache", "--tokenizer", str(root / "tok"), "--out", str(root / "cache"), "--threads", "1"]
    assert cli_main([*args, "--set", "name=npz", "--set", f"root={root / 'd.npz'}"]) == 0
    return root


def _overrides(root, *extra):
    base = [
        f"data.root={root / 'd.npz'}",
        "data.name=npz",
        "train.progress=false",
        "train.threads=1",
        "train.log_every=1",
        "train.batch_size=8",
        "train.sample_every=1000",
    ]
    return base + list(extra)


def _cfg(root, *extra, latents=True):
    cache = str(root / "cache") if latents else None
    return default_run_config(PRESET, str(root / "tok"), cache, _overrides(root, *extra))


def _weights(run):
    return load_file(str(Path(run) / "model.safetensors"))


def _log(run):
    return [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines()]


def test_layout_and_classes_come_from_tokenizer_and_data(setup):
    cfg = _cfg(setup)
    tok_shape = create_model(TOKENIZER).latent_shape
    assert cfg.model.latent_channels == tok_shape[0] and cfg.model.input_size == tuple(tok_shape[1:])
    assert cfg.model.num_classes == 3
    assert cfg.train.lr_schedule == "constant" and cfg.train.warmup_frac == 0 and cfg.train.weight_decay == 0


def test_cached_latents_equal_on_the_fly_encoding(setup):
    """The cache holds each image and its flip; both paths draw flips from the same stream, so their batches agree."""
    from detok.checkpoint import load_tokenizer
    from detok.latents import LatentDataset
    from detok.training.generator import _OnTheFlyLatents

    cfg = _cfg(setup)
    cached = LatentDataset(setup / "cache")
    fly = _OnTheFlyLatents(cfg.data, load_tokenizer(setup / "tok"), torch.device("cpu"))
    idx = torch.tensor([5, 0, 17, 3, 3, 22])
    za, ya = cached.get_batch(idx, torch.Generator().manual_seed(7))
    zb, yb = fly.get_batch(idx, torch.Generator().manual_seed(7))
    assert torch.equal(ya, yb)
    assert torch.allclose(za, zb, atol=1e-5)
    zc, _ = cached.get_batch(idx, torch.Generator().manual_seed(8))
    assert not torch.allclose(za, zc)  # another stream flips other images


def test_resume_equals_uninterrupted_run(setup, tmp_path):
    cfg = _cfg(setup, "train.images=64", "train.ckpt_every=4", "train.keep_checkpoints=3")
    full = tmp_path / "full"
    train_generator(cfg, full)
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step-00000004", cut / "checkpoints" / "step-00000004")
    train_generator(cfg, cut)
    a, b = _weights(full), _weights(cut)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in _log(full)][4:] == [r["loss"] for r in _log(cut)]


def test_resume_under_another_tokenizer_or_lr_is_refused(setup, tmp_path):
    run = tmp_path / "run"
    train_generator(_cfg(setup, "train.images=16", "train.ckpt_every=1"), run)
    with pytest.raises(ValueError, match=r"other settings \(train\.lr: 0\.001 → 0\.01\)"):
        train_generator(_cfg(setup, "train.images=16", "train.ckpt_every=1", "train.lr=0.01"), run)
    other = tmp_path / "tok2"
    shutil.copytree(setup / "tok", other)
    with pytest.raises(ValueError, match=r"other settings \(tokenizer: "):
        train_generator(default_run_config(PRESET, str(other), str(setup / "cache"), _overrides(setup)), run)


def test_cli_train_then_sample(setup, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["generator", "train", "--preset", PRESET, "--tokenizer", str(setup / "tok")]
    args += ["--latents", str(setup / "cache"), "--out", str(run)]
    for o in _overrides(setup, "train.images=16", "train.sample_every=2"):
        args += ["--set", o]
    assert cli_main(args) == 0
    for f in ("config.json", "model.safetensors", "run_config.json", "log.jsonl"):
        assert (run / f).is_file(), f
    assert sorted((run / "samples").glob("*.png"))
    out = tmp_path / "s.npz"
    sample = ["generator", "sample", str(run), "--num", "7", "--cfg", "2.0", "--batch-size", "3", "--seed", "4"]
    assert cli_main([*sample, "--out", str(out), "--threads", "1"]) == 0
    capsys.readouterr()
    data = np.load(out)
    assert data["images"].shape == (7, 32, 32, 1) and data["images"].dtype == np.uint8
    assert np.bincount(data["labels"], minlength=3).tolist() == [3, 2, 2]  # balanced over 3 classes
    assert out.with_suffix(".png").is_file()
    again = tmp_path / "t.npz"
    assert cli_main([*sample, "--out", str(again), "--threads", "1"]) == 0
    assert np.array_equal(np.load(again)["images"], data["images"])  # same seed, same images
    assert cli_main([*sample, "--out", str(again), "--cfg-interval", "0.5", "--threads", "1"]) == 2
    assert "cfg-interval" in capsys.readouterr().err


def test_sampling_a_model_that_does_not_record_its_tokenizer_asks_for_one(setup, tmp_path, capsys):
    torch.manual_seed(0)
    save_model_folder(tmp_path / "gen", create_model(PRESET))  # saved by hand: no "tokenizer" in config.json
    args = ["generator", "sample", str(tmp_path / "gen"), "--num", "2", "--out", str(tmp_path / "s"), "--threads", "1"]
    assert cli_main(args) == 2
    assert "does not record its tokenizer; pass --tokenizer" in capsys.readouterr().err


def test_dry_run_and_override_errors(setup, capsys):
    base = ["generator", "train", "--preset", PRESET, "--tokenizer", str(setup / "tok"), "--dry-run"]
    sets = [x for o in _overrides(setup) for x in ("--set", o)]
    assert cli_main([*base, *sets, "--set", "model.class_dropout=0.2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["class_dropout"] == 0.2 and out["model"]["num_classes"] == 3
    assert cli_main([*base, *sets, "--set", "model.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli_main(["generator", "train", "--preset", TOKENIZER, "--tokenizer", str(setup / "tok"), "--dry-run"]) == 2
    assert "not a generator" in capsys.readouterr().err


def test_tokenizer_without_statistics_is_refused(setup, tmp_path):
    torch.manual_seed(0)
    save_model_folder(tmp_path / "bare", create_model(TOKENIZER).eval())
    cfg = default_run_config(PRESET, str(tmp_path / "bare"), None, _overrides(setup, "train.images=8"))
    with pytest.raises(RuntimeError, match="tokenizer stats"):
        train_generator(cfg, tmp_path / "run")


def test_cache_from_another_tokenizer_is_refused(setup, tmp_path):
    torch.manual_seed(0)
    other = create_model(TOKENIZER, latent_channels=4).eval()
    save_model_folder(tmp_path / "other", other)
    with pytest.raises(ValueError, match="re-cache"):
        default_run_config(PRESET, str(tmp_path / "other"), str(setup / "cache"), _overrides(setup))


DDP_SCRIPT = """
import sys
from detok.training.generator import default_run_config, train_generator
cfg = default_run_config(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
train_generator(cfg, sys.argv[1])
"""


def test_ddp_two_processes_match_one_process(setup, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(DDP_SCRIPT)
    common = [PRESET, str(setup / "tok"), str(setup / "cache"), *_overrides(setup, "train.images=32")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one"), *common, "train.grad_accum=2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541"]
    two = subprocess.run(
        [*launcher, str(script), str(tmp_path / "two"), *common], env=env, capture_output=True, text=True, timeout=300
    )
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


def test_sampling_keeps_the_models_own_guidance_interval(setup):
    """Without an explicit interval, sample_images leaves LightningDiT's configured interval in force."""
    from detok.checkpoint import load_tokenizer
    from detok.generate import sample_images

    tok = load_tokenizer(setup / "tok")
    c, *size = tok.latent_shape
    torch.manual_seed(0)
    model = create_model(
        "lightningdit-fmnist32-tiny", latent_channels=c, input_size=tuple(size), num_classes=3, cfg_interval=(0.9, 1.0)
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)

    def run(interval):
        return sample_images(model, tok, 3, cfg_scale=4.0, cfg_interval=interval, progress=False)[0]

    default = run(None)
    assert np.array_equal(default, run((0.9, 1.0)))
    assert not np.array_equal(default, run((0.0, 1.0)))


def test_compile_switch_matches_eager_without_recompiling(setup, tmp_path):
    """train.compile gives eager's losses; MAR's per-batch mask ratio does not recompile the model every step."""
    losses = {}
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        for compiled in ("false", "true"):
            overrides = _overrides(setup, "train.images=80", f"train.compile={compiled}")
            cfg = default_run_config("mar-fmnist32-tiny", str(setup / "tok"), str(setup / "cache"), overrides)
            train_generator(cfg, tmp_path / compiled)
            losses[compiled] = [r["loss"] for r in _log(tmp_path / compiled)]
    torch._dynamo.reset()
    assert len(losses["true"]) == 10
    np.testing.assert_allclose(losses["true"], losses["false"], rtol=1e-3)


def test_flips_do_not_reuse_the_models_random_stream(setup, tmp_path, monkeypatch):
    """Flips seeded like the model's randomness drew its first uniforms: dropped labels fell on flipped latents."""
    from detok.latents import LatentDataset

    flip_seeds, model_seeds = [], []
    get_batch, manual_seed = LatentDataset.get_batch, torch.manual_seed
    monkeypatch.setattr(
        LatentDataset, "get_batch", lambda self, i, g=None: flip_seeds.append(g.initial_seed()) or get_batch(self, i, g)
    )
    monkeypatch.setattr(torch, "manual_seed", lambda s: model_seeds.append(s) or manual_seed(s))
    train_generator(_cfg(setup, "train.images=16"), tmp_path / "run")
    assert len(flip_seeds) == 2 and model_seeds
    assert not set(flip_seeds) & set(model_seeds)
