"""Training-loop contracts: overfitting, exact resume, DDP equivalence, decoder fine-tuning, CLI."""

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

from detok.cli import main as cli_main
from detok.config import apply_overrides
from detok.training.tokenizer import default_run_config, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def npz_data(tmp_path_factory):
    """32 synthetic 32×32 greyscale images: blobs of random position and size (structured, learnable)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    imgs = []
    for _ in range(32):
        cy, cx, r = rng.uniform(8, 24), rng.uniform(8, 24), rng.uniform(3, 8)
        imgs.append(np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, 220, 20).astype(np.uint8))
    path = tmp_path_factory.mktemp("data") / "blobs.npz"
    np.savez(path, images=np.stack(imgs), labels=rng.integers(0, 4, 32))
    return path


def _cfg(npz, *extra):
    base = [
        "data.name=npz",
        f"data.root={npz}",
        "train.progress=false",
        "train.log_every=1",
        "train.threads=1",
        "train.sample_every=1000",
    ]
    return apply_overrides(default_run_config("detok-fmnist32-tiny"), base + list(extra))


def _log(run):
    return [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines()]


def test_single_batch_overfit(npz_data, tmp_path):
    cfg = _cfg(
        npz_data,
        "train.images=4800",
        "train.batch_size=16",
        "train.blr=0.03",
        "train.warmup_frac=0.05",
        "model.corruption.noise_gamma=0",
        "model.corruption.mask_max=0",
        "model.corruption.mask_min=0",
        "train.ckpt_every=100000",
    )
    # 16 images in the data set would still be shuffled; restrict it to one fixed batch of 16
    imgs = np.load(npz_data)["images"][:16]
    one = tmp_path / "one.npz"
    np.savez(one, images=imgs)
    cfg = apply_overrides(cfg, [f"data.root={one}"])
    train_tokenizer(cfg, tmp_path / "run")
    mse = [r["mse"] for r in _log(tmp_path / "run")]
    assert mse[-1] * 10 <= mse[0], (mse[0], mse[-1])


def _weights(run):
    return load_file(str(Path(run) / "model.safetensors"))


def test_resume_equals_uninterrupted_run(npz_data, tmp_path):
    cfg = _cfg(npz_data, "train.images=96", "train.batch_size=8", "train.ckpt_every=6", "train.keep_checkpoints=5")
    full = tmp_path / "full"
    train_tokenizer(cfg, full)
    # "kill" after step 6: a fresh run directory holding only what existed at that moment
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step-00000006", cut / "checkpoints" / "step-00000006")
    train_tokenizer(cfg, cut)
    a, b = _weights(full), _weights(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in _log(full)][6:] == [r["loss"] for r in _log(cut)]


def test_decoder_finetune_freezes_encoder(npz_data, tmp_path):
    from detok.checkpoint import read_model_config
    from detok.latents import store_latent_stats

    train_tokenizer(_cfg(npz_data, "train.images=32", "train.batch_size=8"), tmp_path / "base")
    c = read_model_config(tmp_path / "base")[1].latent_channels
    store_latent_stats(tmp_path / "base", [0.25] * c, [1.5] * c)
    cfg = _cfg(
        npz_data, "train.images=32", "train.batch_size=8", "decoder_finetune=true", f"init_from={tmp_path / 'base'}"
    )
    train_tokenizer(cfg, tmp_path / "ft")
    before, after = _weights(tmp_path / "base"), _weights(tmp_path / "ft")
    enc = [k for k in before if k.startswith(("patch_embed", "enc_"))]
    dec = [k for k in before if k.startswith(("dec_", "mask_token"))]
    assert enc and all(torch.equal(before[k], after[k]) for k in enc)
    assert any(not torch.equal(before[k], after[k]) for k in dec)
    tuned = read_model_config(tmp_path / "ft")[1]  # the frozen encoder's latent statistics carry over
    assert tuned.latent_mean == (0.25,) * c and tuned.latent_std == (1.5,) * c
    with pytest.raises(ValueError, match="init_from"):
        _cfg(npz_data, "decoder_finetune=true")


DDP_SCRIPT = """
import sys
from detok.config import apply_overrides
from detok.training.tokenizer import default_run_config, train_tokenizer
cfg = apply_overrides(default_run_config("detok-fmnist32-tiny"), sys.argv[2:])
train_tokenizer(cfg, sys.argv[1])
"""


def test_ddp_two_processes_match_one_process(npz_data, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(DDP_SCRIPT)
    common = [
        "data.name=npz",
        f"data.root={npz_data}",
        "train.progress=false",
        "train.threads=1",
        "train.images=48",
        "train.batch_size=8",
        "train.sample_every=1000",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one"), "train.grad_accum=2", *common],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29533",
            str(script),
            str(tmp_path / "two"),
            *common,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    assert json.loads((tmp_path / "two" / "run_config.json").read_text())["world_size"] == 2


def test_cli_dry_run_and_presets(capsys, npz_data):
    assert (
        cli_main(
            [
                "tokenizer",
                "train",
                "--preset",
                "detok-fmnist32",
                "--dry-run",
                "--set",
                "model.corruption.noise_gamma=1.5",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["corruption"]["noise_gamma"] == 1.5 and out["preset"] == "detok-fmnist32"
    assert cli_main(["presets", "detok-*"]) == 0
    assert "detok-bb" in capsys.readouterr().out
    assert cli_main(["tokenizer", "train", "--preset", "detok-fmnist32", "--dry-run", "--set", "model.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert (
        cli_main(
            [
                "tokenizer",
                "train",
                "--preset",
                "detok-fmnist32",
                "--dry-run",
                "--set",
                "model.corruption.noise_form=multiplicative",
            ]
        )
        == 2
    )
    assert "noise_form: 'multiplicative' is not one of ['interpolative', 'additive']" in capsys.readouterr().err
    gan = ["tokenizer", "train", "--preset", "detok-fmnist32", "--dry-run", "--set", "loss.gan_weight=0.1"]
    assert cli_main([*gan, "--set", "loss.disc_layers=4"]) == 2  # 32 px images, 48 px needed: caught before training
    assert "loss.disc_layers=4 needs images of at least 48px" in capsys.readouterr().err
    assert cli_main([*gan, "--set", "loss.disc_layers=3"]) == 0


def test_cli_train_eval_stats_and_load(npz_data, tmp_path, capsys):
    import detok

    run = tmp_path / "run"
    args = ["tokenizer", "train", "--preset", "detok-fmnist32-tiny", "--out", str(run)]
    for s in (
        "data.name=npz",
        f"data.root={npz_data}",
        "train.images=16",
        "train.batch_size=8",
        "train.progress=false",
        "train.threads=1",
    ):
        args += ["--set", s]
    assert cli_main(args) == 0
    assert (run / "model.safetensors").exists() and (run / "samples").is_dir()
    assert cli_main(["tokenizer", "eval", str(run), "--threads", "1"]) == 0
    metrics = json.loads((run / "eval-test.json").read_text())
    assert metrics["images"] == 32 and np.isfinite(metrics["psnr"])
    assert cli_main(["tokenizer", "stats", str(run), "--threads", "1"]) == 0
    tok = detok.load_tokenizer(run)
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    z = tok.encode(x, normalize=True)
    assert z.shape == (3, *tok.latent_shape)
    assert torch.allclose(tok.decode(z, normalized=True), tok.decode(tok.encode(x)), atol=1e-5)


def test_gan_and_perceptual_terms_train(npz_data, tmp_path):
    pytest.importorskip("torchmetrics")
    from safetensors.torch import save_file

    from detok.losses.perceptual import vgg16_features

    torch.manual_seed(0)
    vgg = tmp_path / "vgg.safetensors"
    save_file({k: v.contiguous() for k, v in vgg16_features().state_dict().items()}, str(vgg))
    cfg = _cfg(
        npz_data,
        "train.images=24",
        "train.batch_size=8",
        "loss.gan_weight=0.1",
        "loss.gan_start_step=1",
        "loss.adaptive_gan_weight=true",
        "loss.perceptual_weight=1.0",
        f"loss.perceptual_backbone={vgg}",
        "loss.disc_channels=16",
    )
    train_tokenizer(cfg, tmp_path / "run")
    log = _log(tmp_path / "run")
    assert log[0]["gan_d"] == 0 and log[0]["perceptual"] > 0  # GAN off before gan_start_step
    assert all(r["gan_d"] > 0 for r in log[1:]) and all(r["perceptual"] > 0 for r in log)
    assert (tmp_path / "run" / "checkpoints" / "step-00000003" / "disc.safetensors").exists()


def test_bf16_switch_computes_in_bf16_close_to_fp32(npz_data, tmp_path):
    runs = {}
    for precision in ("fp32", "bf16"):
        cfg = _cfg(npz_data, "train.images=16", "train.batch_size=8", f"train.precision={precision}")
        train_tokenizer(cfg, tmp_path / precision)
        runs[precision] = _log(tmp_path / precision)[0]["mse"]  # first step: same weights, same batch
    # bf16 has an 8-bit mantissa: the loss moves (autocast is on) but stays within a few parts in a thousand
    assert runs["bf16"] != runs["fp32"]
    assert runs["bf16"] == pytest.approx(runs["fp32"], rel=2e-2)


def test_init_from_checkpoint_with_other_channels_is_refused(npz_data, tmp_path):
    from detok import create_model
    from detok.checkpoint import save_model_folder

    save_model_folder(tmp_path / "rgb", create_model("detok-fmnist32-tiny", channels=3))
    cfg = _cfg(npz_data, "train.images=8", "train.batch_size=8", f"init_from={tmp_path / 'rgb'}")
    with pytest.raises(ValueError, match="channel mismatch"):
        train_tokenizer(cfg, tmp_path / "run")


def test_written_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through temporary files; the renamed files must not stay owner-only (0600)."""
    import os
    import stat

    from detok import create_model
    from detok.checkpoint import save_model_folder, save_training_state, write_json

    old = os.umask(0o022)
    try:
        save_model_folder(tmp_path / "m", create_model("detok-fmnist32-tiny"))
        write_json(tmp_path / "x.json", {"a": 1})
        save_training_state(tmp_path / "run", 3, {"model": create_model("detok-fmnist32-tiny")}, {}, {"step": 3})
    finally:
        os.umask(old)
    for f in (tmp_path / "m" / "model.safetensors", tmp_path / "m" / "config.json", tmp_path / "x.json"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    assert stat.S_IMODE((tmp_path / "run" / "checkpoints" / "step-00000003").stat().st_mode) == 0o755


def test_compile_switch_matches_eager_without_recompiling(npz_data, tmp_path):
    """train.compile gives eager's losses, and the per-batch mask ratio does not recompile the model every step."""
    losses = {}
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        for compiled in ("false", "true"):
            cfg = _cfg(npz_data, "train.images=80", "train.batch_size=8", f"train.compile={compiled}")
            train_tokenizer(cfg, tmp_path / compiled)
            losses[compiled] = [r["loss"] for r in _log(tmp_path / compiled)]
    torch._dynamo.reset()
    assert len(losses["true"]) == 10
    np.testing.assert_allclose(losses["true"], losses["false"], rtol=1e-3)


def test_threads_default_to_the_cores_this_process_may_use(monkeypatch):
    """threads=0 divides the CPU affinity (a container's or taskset's limit), not the host's core count."""
    from detok.runtime import set_threads

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    try:
        assert set_threads(0) == 2 and torch.get_num_threads() == 2
        assert set_threads(3) == 3
    finally:
        torch.set_num_threads(before)


def test_a_commands_threads_hold_in_the_loops_it_runs(npz_data, tmp_path):
    """`--threads 1` (for_process) is what a nested training loop's default threads=0 means: two suites started with
    --threads 1 side by side must not run two threads each on a 2-core machine."""
    from detok.runtime import set_threads

    seen, before = [], torch.get_num_threads()
    real = torch.Tensor.backward

    def backward(self, *a, **k):
        seen.append(torch.get_num_threads())
        return real(self, *a, **k)

    try:
        set_threads(1, for_process=True)
        torch.set_num_threads(3)  # as if something else had changed it since
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.Tensor, "backward", backward)
            train_tokenizer(_cfg(npz_data, "train.images=16", "train.batch_size=8", "train.threads=0"), tmp_path / "r")
        assert seen and set(seen) == {1}
        assert set_threads(0) == 1 and set_threads(2) == 2  # an explicit number still wins
        set_threads(0, for_process=True)  # cleared: 0 is the usable cores again
        assert set_threads(0) == max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    finally:
        set_threads(0, for_process=True)
        torch.set_num_threads(before)


def test_flips_do_not_reuse_the_models_random_stream(npz_data, tmp_path, monkeypatch):
    """Flips seeded like the masking/noise randomness would draw the same uniforms as the mask scores."""
    from detok.data import TensorImageDataset

    flip_seeds, model_seeds = [], []
    get_batch, manual_seed = TensorImageDataset.get_batch, torch.manual_seed
    monkeypatch.setattr(
        TensorImageDataset,
        "get_batch",
        lambda self, i, g=None: (g is not None and flip_seeds.append(g.initial_seed())) or get_batch(self, i, g),
    )
    monkeypatch.setattr(torch, "manual_seed", lambda s: model_seeds.append(s) or manual_seed(s))
    train_tokenizer(_cfg(npz_data, "train.images=16", "train.batch_size=8", "data.hflip=true"), tmp_path / "run")
    assert len(flip_seeds) == 2 and model_seeds
    assert not set(flip_seeds) & set(model_seeds)


def test_resume_with_other_settings_says_so_and_stale_temp_checkpoints_go(npz_data, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / ".tmp-killed").mkdir(parents=True)  # a checkpoint write cut short
    train_tokenizer(_cfg(npz_data, "train.images=16", "train.batch_size=8", "train.ckpt_every=1"), run)
    assert not list((run / "checkpoints").glob(".tmp-*"))
    gan = _cfg(npz_data, "train.images=32", "train.batch_size=8", "loss.gan_weight=0.1", "loss.disc_layers=2")
    with pytest.raises(ValueError, match=r"loss\.gan_weight: 0\.0 → 0\.1.*train\.images: 16 → 32"):
        train_tokenizer(gan, run)
    (run / "run_config.json").unlink()  # a checkpoint without its run record: the state itself is checked
    with pytest.raises(ValueError, match="has no disc.safetensors, the opt_d optimizer"):
        train_tokenizer(gan, run)


def test_resume_refuses_other_optimisation_settings_but_not_other_execution_settings(npz_data, tmp_path):
    run = tmp_path / "run"
    base = ("train.images=16", "train.batch_size=8", "train.ckpt_every=1")
    train_tokenizer(_cfg(npz_data, *base), run)
    for change in ("train.blr=0.001", "train.batch_size=4", "model.corruption.noise_gamma=1.0", "data.hflip=true"):
        with pytest.raises(ValueError, match=f"other settings \\({change.split('=')[0]}: "):
            train_tokenizer(_cfg(npz_data, *base, change), run)
    before = _weights(run)
    # how the same run executes and reports may change; finished, it stays as it was
    train_tokenizer(_cfg(npz_data, *base, "train.grad_accum=2", "train.log_every=5", "train.keep_checkpoints=3"), run)
    after = _weights(run)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_batch_that_does_not_split_over_accumulation_steps_is_refused(npz_data, tmp_path):
    cfg = _cfg(npz_data, "train.images=16", "train.batch_size=8", "train.grad_accum=3")
    with pytest.raises(ValueError, match=r"batch_size 8 is not divisible by processes × grad_accum = 3"):
        train_tokenizer(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_only_the_newest_checkpoints_are_kept(npz_data, tmp_path):
    from detok.checkpoint import latest_checkpoint

    run = tmp_path / "run"
    cfg = _cfg(npz_data, "train.images=32", "train.batch_size=8", "train.ckpt_every=1", "train.keep_checkpoints=2")
    train_tokenizer(cfg, run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000003", "step-00000004"]
    assert latest_checkpoint(run).name == "step-00000004"
