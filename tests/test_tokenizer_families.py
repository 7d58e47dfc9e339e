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
    assert (c.noise_gamma, c.mask_max, c.warmup_epochs) == (2.0, 0.0, 10)  # App. A.6: noise from epoch 10 on
    assert not hasattr(model, "enc_rope") and model.maskable_tokens is None


def test_one_dimensional_decoder_sees_only_the_k_latents():
    """The image reaches the decoder through the K latents and nothing else: no state left by encoding another
    image, no patch token beside them in the training forward; each image's reconstruction reads its own K
    latents, every one of them."""
    torch.manual_seed(0)
    model = create_model("detok1d-fmnist32-k8-tiny").eval()
    x = _images(model)
    z = model.encode(x)  # (N, K, C)
    recon = model.decode(z)
    other = _images(model, seed=1)
    model.encode(other)
    assert torch.equal(model.decode(z), recon)  # encoding other images in between changes nothing
    out = model(x, corrupt=False, sample_posterior=False)  # the training path, without noise
    assert torch.allclose(out["recon"], model.decode_latents(out["mean"]), atol=1e-6)
    z_other = model.encode(other)
    mixed = torch.cat([z[:1], z_other[1:]])
    assert torch.allclose(model.decode(mixed)[:1], recon[:1], atol=1e-6)  # image 0 reads only its own latents
    for k in range(z.shape[1]):  # and every one of its K latents
        bumped = z.clone()
        bumped[:, k] += 1.0
        assert not torch.allclose(model.decode(bumped), recon), k
    x2 = x.clone()
    x2[:, :, :4, :4] = 1.0
    assert not torch.allclose(model.encode(x2), z)  # and the latents do see the image


def test_the_corruption_warm_up_keeps_denoising_off_at_first(tmp_path, monkeypatch):
    """With corruption.warmup_frac=0.5 the trainer asks for clean latents in the first half, noisy ones after."""

    sets = ["train.images=40", "model.corruption.warmup_epochs=null", "model.corruption.warmup_frac=0.5"]
    assert _corruption_per_step(tmp_path, monkeypatch, sets) == [False] * 5 + [True] * 5


def test_the_one_dimensional_warm_up_is_ten_epochs_of_data_whatever_the_run_length(tmp_path, monkeypatch):
    """App. A.6: denoising off for the first 10 epochs, on from epoch 10 — counted in data seen, not as a share of
    the run, so a short run keeps the paper's schedule (8 images an epoch, batch 4: 2 steps an epoch, so the noise
    switches on at step 20 of a 24-step run; a 20% warm-up would have switched it on at step 4)."""

    from detok.training.tokenizer import default_run_config

    assert default_run_config("detok1d-fmnist32-k8").model.corruption.warmup_epochs == 10
    sets = ["train.images=96", "train.ckpt_every=1000", "train.sample_every=1000"]
    assert _corruption_per_step(tmp_path, monkeypatch, sets) == [False] * 20 + [True] * 4


def test_a_run_shorter_than_the_one_dimensional_warm_up_trains_exactly_as_the_baseline(tmp_path):
    """Why the `variants` suite does not give its 1-D l-DeTok rows the 10-epoch warm-up (docs/reproduce.md): a run
    shorter than 10 epochs never switches the noise on, so the row would be its baseline row bit for bit (3 steps of
    a 1.5-epoch run here; every CPU budget is < 3 epochs of Fashion-MNIST), while the suite's scaled 20% warm-up does
    train a different tokenizer."""
    sets = ["train.images=12", "train.ckpt_every=1000", "train.sample_every=1000"]
    paper = _train_tiny_1d(tmp_path, sets, tmp_path / "paper")  # γ = 2 from epoch 10 on
    baseline = _train_tiny_1d(tmp_path, [*sets, "model.corruption.noise_gamma=0"], tmp_path / "baseline")
    scaled = [*sets, "model.corruption.warmup_epochs=null", "model.corruption.warmup_frac=0.2"]
    assert paper == baseline and _train_tiny_1d(tmp_path, scaled, tmp_path / "scaled") != baseline


def test_the_variants_suite_scales_the_one_dimensional_warm_up_to_its_budget():
    """The suite's 1-D l-DeTok rows switch the noise on after 20% of the run (the paper's 10 of 50 epochs), as the
    other suites scale the paper's epochs (AlignTok's stages, MAETok's anneal) to the budget."""
    from detok.bench.suites import SUITES, Budget
    from detok.training.tokenizer import default_run_config

    rows = [v for v in SUITES["variants"] if v.name.startswith("1d-") and v.name.endswith("-ldetok")]
    assert len(rows) == 2
    for row in rows:
        c = default_run_config(row.tokenizer, list(row.overrides)).model.corruption
        assert (c.noise_gamma, c.warmup_epochs, c.warmup_frac) == (2.0, None, 0.2)
        steps = Budget().tokenizer_images // 64
        assert [c.active(s, steps) for s in (49, 50)] == [False, True]


@pytest.mark.parametrize(
    "setting, words",
    [("model.latent_tokens=0", "model.latent_tokens must be ≥ 1"),
     ("model.corruption.warmup_frac=1", "model.corruption.warmup_frac must be in [0, 1)"),
     ("model.corruption.warmup_frac=0.2", "model.corruption.warmup_frac must be 0 when warmup_epochs is set"),
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


# ---------------------------------------------------------------------------------------------------------------
# VQ (App. A.7) and the discrete AR generators
# ---------------------------------------------------------------------------------------------------------------


def test_vq_tokenizer_returns_compact_code_indices_and_trains_its_codebook():
    torch.manual_seed(0)
    model = create_model("detokvq-fmnist32-tiny").train()
    layout = model.latent_layout
    assert layout.kind == "discrete" and layout.codebook_size == 64 and layout.shape == (8, 8)
    x = _images(model)
    out = model(x, mask_ratio=0.5)
    assert set(out["aux"]) == {"codebook", "commitment"} and set(out["logs"]) == {"code_usage", "perplexity"}
    assert 0 < out["logs"]["code_usage"] <= 1 and 1 <= out["logs"]["perplexity"] <= 64
    assert out["aux"]["commitment"].item() == pytest.approx(0.25 * out["aux"]["codebook"].item(), rel=1e-5)  # β
    (out["recon"].pow(2).mean() + sum(out["aux"].values())).backward()
    assert model.quantizer.codebook.weight.grad.abs().sum() > 0  # codebook loss
    assert model.enc_head.weight.grad.abs().sum() > 0  # straight-through + commitment
    model.eval()
    z = model.encode(x)
    assert z.dtype == torch.int16 and z.shape == (4, 8, 8) and int(z.min()) >= 0 and int(z.max()) < 64
    assert model.decode(z).shape == x.shape
    with pytest.raises(ValueError, match="integer code indices"):
        model.decode(z.float())
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        model.decode(z + 64)


def test_dead_code_restart_resets_the_unused_codes_from_the_batch_and_is_off_by_default():
    """Every N training forwards, the codes unused since the last restart become rows of the current batch's
    (normalised) inputs; used codes, evaluation and the default (0: off) leave the codebook alone."""
    from detok.tokenizers.quantizers import VectorQuantizer

    assert create_model("detokvq-fmnist32").config.dead_code_restart == 0
    torch.manual_seed(0)
    vq = VectorQuantizer(64, 8, restart_every=2).train()
    z = torch.randn(1, 8).expand(32, 8) + 0.01 * torch.randn(32, 8)  # one tight cluster: one or two codes used
    before = vq.codebook.weight.detach().clone()
    used = set(vq(z)[1].tolist()) | set(vq(z)[1].tolist())
    assert torch.equal(vq.codebook.weight, before) and len(used) <= 2
    vq(z)  # the third forward restarts the codes the first two left unused
    dead = [k for k in range(64) if k not in used]
    assert vq.restarted == len(dead) and all(torch.equal(vq.codebook.weight[k], before[k]) for k in used)
    rows = torch.nn.functional.normalize(z, dim=-1)
    assert all(any(torch.allclose(vq.codebook.weight[k], r) for r in rows) for k in dead)
    with torch.no_grad():
        off = VectorQuantizer(64, 8).train()
        weights = off.codebook.weight.clone()
        for _ in range(5):
            off(z)
        assert torch.equal(off.codebook.weight, weights)


def test_dead_code_restart_raises_code_usage_on_a_small_run(tmp_path):
    """The same short run of the tiny VQ tokenizer with and without restarts (every 2 steps): the codes its encoder
    picks on the training images spread over more of the codebook with them."""
    import numpy as np

    from detok.checkpoint import load_tokenizer
    from detok.config import apply_overrides
    from detok.training.tokenizer import default_run_config, train_tokenizer

    rng, images = np.random.default_rng(0), np.zeros((32, 32, 32), np.uint8)
    for image in images:  # one grey square on black: few distinct patches, so few codes without restarts
        a, b = rng.integers(4, 20, 2)
        image[a : a + 10, b : b + 10] = rng.integers(60, 255)
    npz = tmp_path / "d.npz"
    np.savez(npz, images=images)
    x = torch.tensor(images, dtype=torch.float32)[:, None] / 127.5 - 1
    usage = {}
    for every in (0, 2):
        sets = ["data.name=npz", f"data.root={npz}", "train.images=64", "train.batch_size=8", "train.progress=false",
                "train.threads=1", "train.ema_decay=0", f"model.dead_code_restart={every}"]  # fmt: skip
        run = train_tokenizer(
            apply_overrides(default_run_config("detokvq-fmnist32-tiny"), sets), tmp_path / f"r{every}"
        )
        with torch.no_grad():
            usage[every] = len(torch.unique(load_tokenizer(run).encode(x)))
    assert usage[2] > usage[0], usage


@pytest.mark.parametrize("name", ["detokvq-sb", "detokvq-fmnist32"])
def test_vq_masking_ratio_095_is_the_maximum_of_the_random_draw(name):
    """App. A.7's "masking ratio of 0.95" read as Eq. 5's M (vq.py `_masking_only` gives the reasons): a fresh
    ratio m = max(0, U(−0.1, 0.95)) per batch, so about 1 batch in 10.5 is unmasked and none exceeds 0.95."""
    from detok.registry import get_preset
    from detok.tokenizers.corruption import sample_mask_ratio

    c = create_model(f"{name}-tiny").config.corruption
    assert c == CorruptionConfig(mask_max=0.95, mask_min=-0.1, mask_mode="random", noise_gamma=0.0)
    assert "max(0, U(−0.1, 0.95))" in get_preset(name).doc
    g = torch.Generator().manual_seed(0)
    m = torch.tensor([sample_mask_ratio(c, g) for _ in range(4000)])
    assert m.max() <= 0.95 and m.max() > 0.94 and (m == 0).float().mean() == pytest.approx(0.1 / 1.05, abs=0.02)


def test_vq_paper_setting_and_bad_settings(capsys):
    cfg = create_model("detokvq-sb").config
    assert (cfg.codebook_size, cfg.latent_channels, cfg.commitment_beta) == (4096, 64, 0.25)  # App. A.7
    assert (cfg.corruption.mask_max, cfg.corruption.noise_gamma) == (0.95, 0.0)
    for setting, words in [
        ("model.codebook_size=70000", "model.codebook_size 70000 does not fit index_dtype int16"),
        ("model.corruption.noise_gamma=3", "model.corruption.noise_gamma must be 0"),
        ("model.variational=true", "model.variational must be false"),
    ]:
        rc = cli_main(["tokenizer", "train", "--preset", "detokvq-fmnist32", "--set", setting, "--dry-run"])
        assert rc == 2 and words in capsys.readouterr().err, setting
    assert cli_main(["tokenizer", "train", "--preset", "detokvq-fmnist32", "--set", "model.codebook_size=70000",
                     "--set", "model.index_dtype=int32", "--dry-run"]) == 0  # fmt: skip


@pytest.mark.parametrize("name", ["randomar-vq-fmnist32-tiny", "rasterar-vq-fmnist32-tiny"])
def test_discrete_ar_contract(name, tmp_path):
    from detok.checkpoint import load_generator, save_model_folder

    torch.manual_seed(0)
    model = create_model(name)
    k, size = model.config.codebook_size, model.config.input_size
    g = torch.Generator().manual_seed(0)
    z, y = torch.randint(0, k, (4, *size), generator=g), torch.tensor([0, 1, 2, 3])
    loss = model(z, y)
    assert loss.dim() == 0 and loss.item() == pytest.approx(torch.log(torch.tensor(float(k))).item(), rel=0.3)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing in ([], ["target_pos"]) or (model.config.order == "raster" and not missing), missing
    model.eval()
    sample = lambda **kw: model.sample(y, generator=torch.Generator().manual_seed(3), **kw)  # noqa: E731
    s = sample()
    assert s.shape == (4, *size) and s.dtype == torch.long and int(s.max()) < k
    assert torch.equal(s, sample()) and torch.equal(sample(kv_cache=False), sample(kv_cache=True))
    assert not torch.equal(sample(cfg_scale=4.0), s)
    if model.config.order == "raster":  # greedy decoding in a fixed order: the generator draws nothing that matters
        top1 = sample(top_k=1)
        assert torch.equal(top1, model.sample(y, generator=torch.Generator().manual_seed(9), top_k=1))
    with pytest.raises(ValueError, match="interval"):
        model.sample(y, cfg_interval=(0.2, 0.8))
    save_model_folder(tmp_path, model)
    assert torch.equal(load_generator(tmp_path).sample(y, generator=torch.Generator().manual_seed(3)), s)


def test_discrete_ar_overfits_a_fixed_batch():
    """120 Adam steps on one batch of codes: the cross-entropy must fall by at least 3× (measured ~20×)."""
    torch.manual_seed(0)
    model = create_model("rasterar-vq-fmnist32-tiny")
    z, y = torch.randint(0, 64, (4, 4, 4)), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.eval()  # no label dropout: a fixed target
    first = model(z, y).item()
    for _ in range(120):
        loss = model(z, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first / loss.item() >= 3.0, (first, loss.item())


def test_vq_tokenizer_feeds_only_the_discrete_generators(tmp_path, capsys):
    """VQ tokenizer → code cache → discrete RandomAR → samples; a continuous generator is refused, and the reverse."""
    import numpy as np

    rng = np.random.default_rng(0)
    npz = tmp_path / "d.npz"
    np.savez(npz, images=rng.integers(0, 256, (16, 32, 32), dtype=np.uint8), labels=np.arange(16) % 2)
    quiet = ["--set", "train.progress=false", "--set", "train.threads=1", "--set", "train.images=8",
             "--set", "train.batch_size=4"]  # fmt: skip
    vq, cont = tmp_path / "vq", tmp_path / "cont"
    for preset, out in (("detokvq-fmnist32-tiny", vq), ("detok-fmnist32-tiny", cont)):
        args = ["tokenizer", "train", "--preset", preset, "--out", str(out), "--set", "data.name=npz",
                "--set", f"data.root={npz}", *quiet]  # fmt: skip
        assert cli_main(args) == 0, capsys.readouterr().err
    rc = cli_main(["tokenizer", "stats", str(vq), "--threads", "1"])
    assert rc == 2 and "code indices" in capsys.readouterr().err
    assert cli_main(["tokenizer", "eval", str(vq), "--evaluator", "none", "--lpips", "off", "--threads", "1"]) == 0
    record = json.loads((vq / "eval-test.json").read_text())
    assert 0 < record["code_usage"] <= 1 and record["perplexity"] >= 1
    assert cli_main(["eval", "latents", str(vq), "--threads", "1"]) == 0  # probe and GMM on the code vectors
    analysis = json.loads((vq / "analysis" / "latent_analysis.json").read_text())
    assert analysis["linear_probe"]["feature_dim"] == 8 * 8 * 16 and analysis["robustness"]["noise"] == []
    assert analysis["robustness"]["mask"]  # masking robustness is defined for the ViT-based VQ tokenizer
    cache = tmp_path / "cache"
    assert cli_main(["latents", "cache", "--tokenizer", str(vq), "--out", str(cache), "--threads", "1"]) == 0
    gen = tmp_path / "gen"
    args = ["generator", "train", "--preset", "randomar-vq-fmnist32-tiny", "--tokenizer", str(vq), "--latents",
            str(cache), "--out", str(gen), *quiet]  # fmt: skip
    assert cli_main(args) == 0, capsys.readouterr().err
    model_cfg = json.loads((gen / "run_config.json").read_text())["run"]["model"]
    assert model_cfg["codebook_size"] == 64 and model_cfg["input_size"] == [8, 8]
    out = tmp_path / "s.npz"
    assert cli_main(["generator", "sample", str(gen), "--num", "4", "--cfg", "2", "--out", str(out)]) == 0
    assert np.load(out)["images"].shape == (4, 32, 32, 1)
    capsys.readouterr()
    rc = cli_main(["generator", "train", "--preset", "sit-fmnist32-tiny", "--tokenizer", str(vq), "--dry-run"])
    assert rc == 2 and "use a discrete AR generator" in capsys.readouterr().err
    rc = cli_main(
        ["generator", "train", "--preset", "rasterar-vq-fmnist32-tiny", "--tokenizer", str(cont), "--dry-run"]
    )
    assert rc == 2 and "use a continuous generator" in capsys.readouterr().err


def test_layout_settings_that_disagree_with_the_tokenizer_are_refused(tmp_path, capsys):
    """A 1-D tokenizer's latents and a 2-D layout (or a 2-D-only setting) in the generator: one clear error."""
    from detok.checkpoint import save_model_folder
    from detok.latents import store_latent_stats

    torch.manual_seed(0)
    tok = create_model("detok1d-fmnist32-k8-tiny")
    save_model_folder(tmp_path / "tok", tok)
    store_latent_stats(tmp_path / "tok", [0.0] * 8, [1.0] * 8)
    base = ["generator", "train", "--preset", "sit-fmnist32-tiny", "--tokenizer", str(tmp_path / "tok"), "--dry-run"]
    assert cli_main([*base, "--set", "model.input_size=[4,4]"]) == 2
    err = capsys.readouterr().err
    assert "model.input_size=[4,4] but tokenizer" in err and "sequence latents of shape (8, 8)" in err
    assert cli_main([*base, "--set", "model.input_size=[8]"]) == 0  # agreeing with the tokenizer is fine
    capsys.readouterr()
    light = [*base[:3], "lightningdit-fmnist32-tiny", *base[4:]]
    assert cli_main([*light, "--set", "model.abs_pos=false"]) == 2
    assert "model.abs_pos must be true for 1-D tokens" in capsys.readouterr().err


def test_a_cached_sequence_is_normalised_along_its_channel_axis(tmp_path):
    """(N, K, C) latents with K != C: the cache normalises the last axis, as `encode(normalize=True)` does."""
    import numpy as np

    from detok.checkpoint import load_tokenizer, save_model_folder
    from detok.data import DataConfig, build_dataset
    from detok.latents import LatentDataset, cache_latents, compute_latent_stats, store_latent_stats

    torch.manual_seed(0)
    save_model_folder(tmp_path / "tok", create_model("detok1d-fmnist32-k8-tiny", latent_channels=4))
    np.savez(tmp_path / "d.npz", images=np.random.default_rng(0).integers(0, 256, (6, 32, 32), dtype=np.uint8))
    data = build_dataset(DataConfig(name="npz", root=str(tmp_path / "d.npz")))
    tok = load_tokenizer(tmp_path / "tok")
    store_latent_stats(tmp_path / "tok", *compute_latent_stats(tok, data, progress=False))
    tok = load_tokenizer(tmp_path / "tok")
    cache_latents(tok, data, tmp_path / "cache", progress=False)
    z, _ = LatentDataset(tmp_path / "cache").get_batch(torch.arange(6), torch.Generator().manual_seed(0))
    x = data.get_batch(torch.arange(6))[0]
    flip = torch.rand(6, generator=torch.Generator().manual_seed(0)) < 0.5
    want = torch.where(flip.view(-1, 1, 1), tok.encode(x.flip(-1), normalize=True), tok.encode(x, normalize=True))
    assert z.shape == (6, 8, 4) and torch.allclose(z, want, atol=1e-5)


def _corruption_per_step(tmp_path, monkeypatch, sets: list[str]) -> list:
    """Train detok1d-fmnist32-k8-tiny on 8 random images (batch 4) with `sets`; the `corrupt` flag of every forward."""
    from detok.tokenizers.onedim import DeTok1D

    calls = []
    forward = DeTok1D.forward

    def spy(self, x, corrupt=None, **kw):
        calls.append(corrupt)
        return forward(self, x, corrupt=corrupt, **kw)

    monkeypatch.setattr(DeTok1D, "forward", spy)
    _train_tiny_1d(tmp_path, sets, tmp_path / "run")
    return calls


def _train_tiny_1d(tmp_path, sets: list[str], run) -> bytes:
    """Train detok1d-fmnist32-k8-tiny on 8 random images (batch 4) with `sets` into `run`; its weights' bytes."""
    import numpy as np

    from detok.config import apply_overrides
    from detok.training.tokenizer import default_run_config, train_tokenizer

    npz = tmp_path / "d.npz"
    np.savez(npz, images=np.random.default_rng(0).integers(0, 256, (8, 32, 32), dtype=np.uint8))
    base = ["data.name=npz", f"data.root={npz}", "train.batch_size=4", "train.progress=false", "train.threads=1"]
    train_tokenizer(apply_overrides(default_run_config("detok1d-fmnist32-k8-tiny"), base + sets), run)
    return (run / "model.safetensors").read_bytes()
