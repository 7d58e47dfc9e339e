"""What MAETok (arXiv:2502.03444) adds to the tokenizer contract: in-place encoder masking with a truncated-normal
ratio, auxiliary decoders trained at the masked tokens only, the decoder fine-tuning stage, and its latents as a
sequence for the generators."""

import json

import numpy as np
import pytest
import torch

from detok import create_model
from detok.cli import main as cli_main
from detok.config import apply_overrides
from detok.tokenizers.maetok import MAETok
from detok.training.tokenizer import default_run_config, train_tokenizer


def _images(model, n=4, seed=0):
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, cfg.channels, cfg.image_size, cfg.image_size, generator=g) * 2 - 1


def _npz(tmp_path, n=16):
    npz = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, images=rng.integers(0, 256, (n, 32, 32), dtype=np.uint8), labels=np.arange(n) % 2)
    return npz


QUIET = ["train.progress=false", "train.threads=1", "train.log_every=1", "train.sample_every=1000"]


# ---------------------------------------------------------------------------------------------------------------
# The paper's numbers
# ---------------------------------------------------------------------------------------------------------------


def test_paper_preset_and_recipe():
    with torch.device("meta"):  # counts without allocating
        model = create_model("maetok-b")
    cfg = model.config
    assert (cfg.image_size, cfg.patch_size, cfg.latent_tokens, cfg.latent_channels) == (256, 16, 128, 32)  # Sec. 4
    assert (cfg.enc_width, cfg.enc_depth, cfg.dec_width, cfg.dec_depth, cfg.aux_depth) == (768, 12, 768, 12, 3)
    assert [s.partition(":")[0] for s in cfg.aux_targets] == ["hog", "timm", "timm"]  # HOG, DINOv2-L, SigLIP
    assert "dinov2" in cfg.aux_targets[1] and "siglip" in cfg.aux_targets[2]
    assert (cfg.mask_mean, cfg.mask_std, cfg.mask_min, cfg.mask_max, cfg.finetune_mask_start) == (
        0.6, 0.25, 0.4, 0.6, 0.6
    )  # fmt: skip
    # Sec. 4: ViT-B encoder and pixel decoder, 176M parameters together (ours: no MoVQ modulation, SwiGLU)
    encoder = sum(p.numel() for p in model.decoder_finetune_frozen())
    decoder = sum(p.numel() for p in model.decoder.parameters())
    assert encoder + decoder == pytest.approx(176e6, rel=0.03)
    assert model.latent_layout.kind == "sequence" and model.token_layout == "1d"
    run = default_run_config("maetok-b")
    t, loss = run.train, run.loss
    assert (t.batch_size, t.peak_lr(), t.min_lr, t.warmup_frac, t.grad_clip) == (512, 2e-4, 2e-5, 0.01, 1.0)
    assert t.total_steps == 500_000 and (t.beta1, t.beta2, t.weight_decay) == (0.9, 0.95, 1e-4)
    assert (loss.perceptual_weight, loss.convnext_weight, loss.gan_weight) == (1.0, 0.0, 0.4)
    assert loss.adaptive_gan_weight and loss.gan_start_step == 30_000 and loss.gan_start_frac is None


# ---------------------------------------------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------------------------------------------


def test_masking_replaces_patch_embeddings_in_place():
    torch.manual_seed(0)
    model = create_model("maetok-fmnist32-tiny").eval()
    x = _images(model)
    t, k = model.maskable_tokens, model.config.latent_tokens
    seen = []
    model.enc_blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    torch.manual_seed(1)
    out = model(x, mask_ratio=0.5)
    mask = out["mask"].bool()  # (N, T), 1 = masked
    assert (mask.sum(1) == t // 2).all()
    h = seen[-1]
    assert h.shape == (4, t + k, model.config.enc_width)  # every patch position stays in the sequence
    from detok.layers import patchify

    embedded = model.patch_embed(patchify(x, model.config.patch_size))
    assert torch.equal(h[:, :t][mask], model.mask_token[0, 0].expand(int(mask.sum()), -1))
    assert torch.allclose(h[:, :t][~mask], embedded[~mask])
    # the latents see nothing of a masked patch's pixels, and do see the visible ones
    x2 = x.clone()
    x2_patches = patchify(x2, model.config.patch_size)
    x2_patches[mask] = 1.0
    from detok.layers import unpatchify

    g = model.config.grid_size
    x2 = unpatchify(x2_patches, model.config.patch_size, 1, (g, g))
    z = model.forward_encoder(x, out["mask"])
    assert torch.allclose(model.forward_encoder(x2, out["mask"]), z, atol=1e-6)
    assert not torch.allclose(model.forward_encoder(x2), model.forward_encoder(x))


def test_mask_ratio_is_a_truncated_normal_in_training_and_anneals_to_zero_in_decoder_finetuning():
    model = create_model("maetok-fmnist32-tiny")
    draw = lambda seed: model.mask_ratio_at(0, 100, torch.Generator().manual_seed(seed))  # noqa: E731
    ratios = torch.tensor([draw(s) for s in range(400)])
    assert ratios.min() >= 0.4 and ratios.max() <= 0.6 and draw(3) == draw(3)
    # N(0.6, 0.25²) on [0.4, 0.6]: density rising towards 0.6, mean ≈ 0.505
    assert 0.49 < ratios.mean() < 0.52 and (ratios > 0.5).float().mean() > 0.5
    whole_run = create_model("maetok-fmnist32-tiny", finetune_mask_steps=None)  # the anneal before issue 37
    anneal = [whole_run.mask_ratio_at(s, 11, torch.Generator(), decoder_finetune=True) for s in range(11)]
    assert anneal[0] == pytest.approx(0.6) and anneal[5] == pytest.approx(0.3) and anneal[-1] == 0.0
    assert all(a > b for a, b in zip(anneal, anneal[1:]))


def test_decoder_finetuning_anneals_the_mask_ratio_over_the_papers_span_not_the_whole_run():
    """Sec. 4: "linearly decrease the mask ratio from 60% to 0% over 50K iterations" — the span is fixed, so a
    longer fine-tuning run trains unmasked after it; the FMNIST preset keeps the paper's 1/10 of its main run."""
    assert create_model("maetok-b-tiny").config.finetune_mask_steps == 50_000
    model = create_model("maetok-fmnist32-tiny")
    assert model.config.finetune_mask_steps == 62
    ratio = lambda step, total: model.mask_ratio_at(step, total, torch.Generator(), decoder_finetune=True)  # noqa: E731
    assert ratio(0, 200) == pytest.approx(0.6) and ratio(31, 200) == pytest.approx(0.3)
    assert ratio(62, 200) == 0.0 and ratio(150, 200) == 0.0
    assert ratio(31, 1000) == ratio(31, 200)  # the run's length does not stretch the anneal


# ---------------------------------------------------------------------------------------------------------------
# Auxiliary decoders
# ---------------------------------------------------------------------------------------------------------------


def test_aux_losses_read_the_masked_tokens_only():
    """MSE for HOG and 1 − cos for a network's features, at the masked tokens: features at the visible ones can
    change freely without moving the loss."""
    torch.manual_seed(0)
    model = create_model("maetok-fmnist32-tiny", aux_targets=("hog", "timm:any:file"), aux_dims=(36, 12)).train()
    x = _images(model)
    g = torch.Generator().manual_seed(0)
    feats = [torch.rand(4, 64, 36, generator=g), torch.randn(4, 16, 12, generator=g)]  # the second on a 4×4 grid

    def run(features):
        torch.manual_seed(1)
        return model(x, mask_ratio=0.5, teacher_features=features)

    out = run(feats)
    assert set(out["aux"]) == {"aux0_hog", "aux1_timm"}
    mask = out["mask"].bool()  # (N, 64)
    visible_hog = feats[0].clone()
    visible_hog[~mask] = 5.0
    assert torch.equal(run([visible_hog, feats[1]])["aux"]["aux0_hog"], out["aux"]["aux0_hog"])
    masked_hog = feats[0].clone()
    masked_hog[mask] = 5.0
    assert run([masked_hog, feats[1]])["aux"]["aux0_hog"] > out["aux"]["aux0_hog"]
    # a coarser teacher grid is repeated onto the 8×8 patches: a 4×4 cell is visible when its 4 patches are
    coarse_visible = (~mask).view(4, 4, 2, 4, 2).all(4).all(2).flatten(1)  # (N, 16)
    assert coarse_visible.any()
    moved = feats[1].clone()
    moved[coarse_visible] = -moved[coarse_visible]
    assert torch.equal(run([feats[0], moved])["aux"]["aux1_timm"], out["aux"]["aux1_timm"])
    assert not torch.equal(run([feats[0], -feats[1]])["aux"]["aux1_timm"], out["aux"]["aux1_timm"])
    # the terms themselves: HOG's MSE over the masked tokens and channels, 1 − cos in [0, 2]
    pred = model.aux_decoders[0](model.forward_encoder(x, out["mask"]))
    want = (pred - feats[0]).pow(2).mean(-1)[mask].mean()
    assert out["aux"]["aux0_hog"].item() == pytest.approx(want.item(), rel=1e-5)
    assert 0 <= out["aux"]["aux1_timm"] <= 2


def test_no_aux_terms_without_teacher_features_and_teacher_widths_are_checked():
    torch.manual_seed(0)
    model = create_model("maetok-fmnist32-tiny").train()
    x = _images(model)
    out = model(x)
    assert out["aux"] == {} and 0.4 <= float(out["mask_ratio"]) <= 0.6  # drawn when none is given
    assert model.eval()(x)["mask"].sum() == 0  # nothing masked at inference
    with pytest.raises(ValueError, match=r"model.aux_dims\[0\]=36"):
        create_model("maetok-fmnist32-tiny", aux_dims=(35,)).build_teachers()


def test_detoks_offline_mae_teacher_is_a_second_target(tmp_path, capsys):
    """The FMNIST preset's documented way to add the MAE teacher: a 1 − cos term next to HOG's MSE."""
    from detok.checkpoint import save_model_folder

    torch.manual_seed(0)
    save_model_folder(tmp_path / "mae", create_model("mae-teacher-fmnist32-tiny"))
    targets, dims = f'["hog","detok:{tmp_path / "mae"}"]', "[36,32]"
    rc = cli_main(["tokenizer", "train", "--preset", "maetok-fmnist32-tiny", "--set", f"model.aux_targets={targets}",
                   "--set", f"model.aux_dims={dims}", "--dry-run"])  # fmt: skip
    assert rc == 0
    model = create_model("maetok-fmnist32-tiny", aux_targets=("hog", f"detok:{tmp_path / 'mae'}"), aux_dims=(36, 32))
    x = _images(model)
    out = model.train()(x, teacher_features=[t(x) for t in model.build_teachers()])
    assert set(out["aux"]) == {"aux0_hog", "aux1_detok"} and 0 < out["aux"]["aux1_detok"] <= 2


def test_the_hog_width_follows_the_image_channels(tmp_path, capsys):
    """Issue 37 item 8: maetok-fmnist32 on RGB images (model.channels=3) gets RGB HOG's 108-wide head, not the
    greyscale 36, and starts training; a network teacher's width cannot follow from the config and must be given."""
    assert create_model("maetok-fmnist32").config.target_dims == (36,)  # 2×2 cells × 1 channel × 9 bins
    rgb = create_model("maetok-fmnist32", channels=3)
    assert rgb.config.target_dims == (108,) == tuple(t.feature_dim for t in rgb.build_teachers())
    assert create_model("maetok-fmnist32-tiny", channels=3).aux_decoders[0].head.out_features == 108
    npz = tmp_path / "rgb.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, images=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), labels=np.arange(4) % 2)
    sets = ["model.channels=3", "data.channels=3", "data.name=npz", f"data.root={npz}", "data.hflip=false",
            "train.images=2", "train.batch_size=2", *QUIET]  # fmt: skip
    argv = ["tokenizer", "train", "--preset", "maetok-fmnist32", "--out", str(tmp_path / "run")]
    assert cli_main(argv + [a for kv in sets for a in ("--set", kv)]) == 0, capsys.readouterr().err
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert logged and "aux0_hog" in logged[-1]
    with pytest.raises(ValueError, match="aux_dims must give every target's width"):
        create_model("maetok-fmnist32", aux_targets=("hog", "detok:mae-teacher-fmnist32"))


def test_paper_teachers_need_their_weights_files():
    pytest.importorskip("detok.teachers.pretrained")
    with torch.device("meta"):
        model = create_model("maetok-b")
    with pytest.raises((FileNotFoundError, ValueError), match="dinov2-vitl14"):
        model.build_teachers()


@pytest.mark.parametrize(
    "setting, words",
    [("model.aux_dims=[36,12]", "model.aux_dims must give one width per aux_targets entry (1)"),
     ("model.mask_min=0.7", "model.mask_min must be ≤ mask_max=0.6"),
     ("model.aux_targets=[\"dino\"]", "model.aux_targets holds 'dino'"),
     ("model.aux_heads=5", "aux_width 48 / aux_heads 5")],
)  # fmt: skip
def test_bad_settings_are_named(setting, words, capsys):
    rc = cli_main(["tokenizer", "train", "--preset", "maetok-fmnist32", "--set", setting, "--dry-run"])
    assert rc == 2 and words in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Training: masked training with HOG, decoder fine-tuning, and the latents in a generator
# ---------------------------------------------------------------------------------------------------------------


def test_decoder_finetuning_freezes_the_encoder_drops_the_aux_decoders_and_anneals_the_mask(tmp_path, monkeypatch):
    npz = _npz(tmp_path, n=8)
    data = ["data.name=npz", f"data.root={npz}"]
    base = apply_overrides(default_run_config("maetok-fmnist32-tiny"), [*data, *QUIET, "train.images=8",
                                                                       "train.batch_size=4"])  # fmt: skip
    train_tokenizer(base, tmp_path / "base")
    log = [json.loads(line) for line in (tmp_path / "base" / "log.jsonl").read_text().splitlines()]
    assert all("aux0_hog" in r and 0.4 <= r["mask_ratio"] <= 0.6 for r in log)

    calls = []
    forward = MAETok.forward

    def spy(self, x, **kw):
        calls.append((kw["mask_ratio"], kw.get("teacher_features")))
        return forward(self, x, **kw)

    monkeypatch.setattr(MAETok, "forward", spy)
    sets = [*data, *QUIET, "train.images=20", "train.batch_size=4", "decoder_finetune=true",
            f"init_from={tmp_path / 'base'}", "model.finetune_mask_steps=2"]  # fmt: skip
    train_tokenizer(apply_overrides(default_run_config("maetok-fmnist32-tiny"), sets), tmp_path / "ft")
    # 0.6 → 0 over the first 2 of the 5 steps (Sec. 4's fixed span), unmasked after it
    assert [round(r, 6) for r, _ in calls] == [0.6, 0.3, 0.0, 0.0, 0.0] and all(f is None for _, f in calls)
    log = [json.loads(line) for line in (tmp_path / "ft" / "log.jsonl").read_text().splitlines()]
    assert not any(k.startswith("aux") for r in log for k in r)
    from safetensors.torch import load_file

    before, after = (load_file(tmp_path / d / "model.safetensors") for d in ("base", "ft"))
    frozen = ("patch_embed", "enc_", "mask_token", "latent_queries")
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(frozen))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))


def test_maetok_latents_feed_sit_as_a_sequence(tmp_path, capsys):
    """train (CLI) → stats → latent analysis → cache → SiT on (K, H) latents as K tokens → samples decoded."""
    npz = _npz(tmp_path)
    data = ["--set", "data.name=npz", "--set", f"data.root={npz}"]
    quiet = ["--set", "train.progress=false", "--set", "train.threads=1"]
    tok = tmp_path / "tok"
    assert cli_main(["tokenizer", "train", "--preset", "maetok-fmnist32-tiny", "--out", str(tok), *data, *quiet,
                     "--set", "train.images=8", "--set", "train.batch_size=4"]) == 0  # fmt: skip
    assert cli_main(["tokenizer", "stats", str(tok), "--threads", "1"]) == 0
    assert cli_main(["eval", "latents", str(tok), "--threads", "1"]) == 0
    analysis = json.loads((tok / "analysis" / "latent_analysis.json").read_text())
    assert analysis["robustness"]["mask"]  # MAETok masks: the masking-robustness curve is reported
    cache = tmp_path / "cache"
    assert cli_main(["latents", "cache", "--tokenizer", str(tok), "--out", str(cache), "--threads", "1"]) == 0
    run = tmp_path / "sit"
    args = ["generator", "train", "--preset", "sit-fmnist32-tiny", "--tokenizer", str(tok), "--latents", str(cache),
            "--out", str(run), *quiet, "--set", "train.images=8", "--set", "train.batch_size=4"]  # fmt: skip
    assert cli_main(args) == 0, capsys.readouterr().err
    cfg = json.loads((run / "run_config.json").read_text())["run"]["model"]
    assert cfg["input_size"] == [8] and cfg["latent_channels"] == 16
    out = tmp_path / "s.npz"
    assert cli_main(["generator", "sample", str(run), "--num", "4", "--out", str(out), "--threads", "1"]) == 0
    assert np.load(out)["images"].shape == (4, 32, 32, 1)
