"""Feature extractors, reference statistics, generation/reconstruction scoring, the CFG sweep and its CLI."""

import json
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn

from detok import create_model
from detok.checkpoint import save_model_folder
from detok.cli import main as cli_main
from detok.data import DataConfig, build_dataset
from detok.eval.features import (
    ReferenceExtractor,
    ReferenceSet,
    build_extractor,
    extract,
    load_adm_stats,
    reference_set,
    to_uint8_nchw,
)
from detok.eval.generation import GenerationEvalConfig, evaluate_generation, score_images
from detok.eval.metrics import feature_stats, frechet_distance
from detok.eval.recon import evaluate_reconstruction
from detok.eval.reference import ReferenceNet, ReferenceNetConfig
from detok.latents import store_latent_stats
from detok.training.generator import default_run_config, train_generator

TOKENIZER = "detok-fmnist32-tiny"
GENERATOR = "sit-fmnist32-tiny"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny tokenizer (with latent stats), a 3-class npz dataset, an untrained tiny reference classifier and a
    generator trained for one step — enough to exercise every piece of plumbing."""
    root = tmp_path_factory.mktemp("evalgen")
    torch.manual_seed(0)
    tok = create_model(TOKENIZER).eval()
    save_model_folder(root / "tok", tok)
    store_latent_stats(root / "tok", [0.0] * tok.config.latent_channels, [1.0] * tok.config.latent_channels)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 32, 32), dtype=np.uint8)
    labels = np.arange(40) % 3
    np.savez(
        root / "d.npz",
        images_train=images[:30],
        labels_train=labels[:30],
        images_test=images[30:],
        labels_test=labels[30:],
    )
    torch.manual_seed(1)
    save_model_folder(root / "ref", ReferenceNet(ReferenceNetConfig(widths=(4, 8), feature_dim=8, num_classes=3)))
    data = [f"data.root={root / 'd.npz'}", "data.name=npz"]
    train = ["train.progress=false", "train.threads=1", "train.batch_size=8", "train.images=8"]
    cfg = default_run_config(GENERATOR, str(root / "tok"), None, data + train + ["train.sample_every=1000"])
    train_generator(cfg, root / "gen")
    return root


def _data(root):
    return DataConfig(name="npz", root=str(root / "d.npz"))


def _extractor(root):
    return ReferenceExtractor.from_folder(root / "ref")


# --------------------------------------------------------------------------------------------------
# Extractors and reference statistics
# --------------------------------------------------------------------------------------------------


def test_reference_extractor_scores_uint8_like_the_classifier(setup):
    ex = _extractor(setup)
    x = build_dataset(_data(setup), "test").get_batch(torch.arange(5))[0]  # (5, 1, 32, 32) in [-1, 1]
    feats, probs = ex(to_uint8_nchw(x))
    u8 = to_uint8_nchw(x).float() / 127.5 - 1
    assert torch.allclose(feats, ex.model.features(u8), atol=1e-6)
    assert torch.allclose(probs.sum(1), torch.ones(5), atol=1e-5)
    assert ex.name.startswith("reference-") and len(ex.name) > len("reference-")
    with pytest.raises(ValueError, match="inception"):
        ex(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        ex(x)


def test_extract_accepts_npz_layout(setup):
    ex = _extractor(setup)
    x = to_uint8_nchw(build_dataset(_data(setup), "test").get_batch(torch.arange(6))[0])
    a, pa = extract(ex, x, batch_size=4, progress=False)
    b, pb = extract(ex, x.permute(0, 2, 3, 1).numpy(), batch_size=6, progress=False)
    assert a.shape == (6, 8) and np.allclose(a, b, atol=1e-6) and np.allclose(pa, pb, atol=1e-6)


def test_reference_set_is_cached_per_count(setup, tmp_path):
    ex, ds = _extractor(setup), build_dataset(_data(setup), "train")
    first = reference_set(ex, ds, "toy-train", max_images=20, cache=tmp_path, progress=False)
    files = sorted((tmp_path / "refstats").glob("*.npz"))
    assert [f.name for f in files] == [f"toy-train-n20-{ex.name}.npz"]
    again = reference_set(ex, ds, "toy-train", max_images=20, cache=tmp_path, progress=False)
    assert np.array_equal(first.features, again.features) and np.array_equal(first.sigma, again.sigma)
    mu, sigma = feature_stats(first.features)
    assert np.allclose(mu, first.mu) and np.allclose(sigma, first.sigma)
    reference_set(ex, ds, "toy-train", max_images=25, cache=tmp_path, progress=False)
    assert len(list((tmp_path / "refstats").glob("*.npz"))) == 2


def test_adm_statistics_give_the_same_fid(setup, tmp_path):
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(50, 8)), rng.normal(0.5, 1.2, size=(30, 8))
    ref = ReferenceSet.from_features(real, "toy")
    np.savez(tmp_path / "adm.npz", mu=ref.mu, sigma=ref.sigma)
    adm = load_adm_stats(tmp_path / "adm.npz")
    assert adm.features is None
    expected = frechet_distance(*feature_stats(fake), ref.mu, ref.sigma)
    assert frechet_distance(*feature_stats(fake), adm.mu, adm.sigma) == pytest.approx(expected)
    np.savez(tmp_path / "bad.npz", arr_0=real)
    with pytest.raises(ValueError, match="mu, sigma"):
        load_adm_stats(tmp_path / "bad.npz")


def test_unknown_evaluator_and_missing_torch_fidelity(setup, monkeypatch):
    with pytest.raises(ValueError, match="unknown evaluator"):
        build_extractor("clip")
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    with pytest.raises(ImportError, match=r"detok\[inception\]"):
        build_extractor("inception")


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


class _Pixels:
    """An extractor with informative features: 8×8 average-pooled pixels, and a softmax over their quadrants."""

    name = "pixels"

    def __call__(self, images):
        f = nn.functional.avg_pool2d(images.float() / 255, 4).flatten(1)  # (N, 64)
        return f, torch.softmax(4 * f.view(len(f), 4, 16).mean(2), dim=1)


class _Stub(nn.Module):
    """A 'tokenizer' whose latents are the images; `blur` makes its reconstructions imperfect."""

    def __init__(self, blur: bool = False):
        super().__init__()
        self.blur = blur

    def encode(self, x):
        return x

    def decode(self, z):
        return nn.functional.avg_pool2d(z, 3, 1, 1) if self.blur else z


class _L1(nn.Module):
    def forward(self, x, y):
        return (x - y).abs().flatten(1).mean(1)


def test_reconstruction_rfid_and_lpips(setup):
    ex, ds = _Pixels(), build_dataset(_data(setup), "train")
    perfect = evaluate_reconstruction(_Stub(), ds, 8, progress=False, extractor=ex, lpips=_L1())
    assert perfect["rfid"] < 1e-6 and perfect["lpips"] == 0.0
    blurred = evaluate_reconstruction(_Stub(blur=True), ds, 8, progress=False, extractor=ex, lpips=_L1())
    assert blurred["rfid"] > 1e-3 and blurred["lpips"] > 0.01
    assert "rfid" not in evaluate_reconstruction(_Stub(), ds, 8, progress=False)


def test_scoring_the_reference_against_itself(setup, monkeypatch):
    ex = _Pixels()
    x = to_uint8_nchw(build_dataset(_data(setup), "train").get_batch(torch.arange(30))[0])
    images = x.permute(0, 2, 3, 1).numpy()
    ref = ReferenceSet.from_features(extract(ex, x, progress=False)[0], "toy")
    same = score_images(images, ex, ref, progress=False)
    assert same["fid"] < 1e-6 and same["precision"] == 1.0 and same["recall"] == 1.0
    assert same["num"] == 30 and same["is"] >= 1.0
    other = score_images(255 - images[:12], ex, ref, progress=False)  # the larger reference set is subsampled
    assert other["fid"] > 1e-3 and other == score_images(255 - images[:12], ex, ref, progress=False)
    adm = ReferenceSet(ref.mu, ref.sigma, None, "adm")
    assert score_images(images, ex, adm, progress=False)["precision"] is None
    small = ReferenceSet.from_features(extract(ex, x[:10], progress=False)[0], "toy-10")
    calls = []
    import detok.eval.generation as generation

    real_pr = generation.precision_recall
    monkeypatch.setattr(generation, "precision_recall", lambda r, f: calls.append((len(r), len(f))) or real_pr(r, f))
    score_images(images, ex, small, progress=False)  # 30 samples against 10 reference images
    assert calls == [(10, 10)]  # the larger set, here the samples, is subsampled


class _ClassReader(_Pixels):
    """Reads the class off the mean brightness: dark (< 85) = 0, middle = 1, bright = 2; it classifies the dataset's
    own classes, so class consistency is defined."""

    dataset_classes = True

    def __call__(self, images):
        f, _ = super().__call__(images)
        level = (images.float().mean((1, 2, 3)) / 85).floor().clamp(0, 2).long()  # (N,)
        return f, torch.nn.functional.one_hot(level, 3).double()


def test_class_consistency_is_the_classifiers_agreement_with_the_labels(setup, tmp_path):
    images = np.stack([np.full((32, 32, 1), v, np.uint8) for v in (10, 120, 250, 10, 120, 250, 10, 120)])
    labels = np.array([0, 1, 2, 0, 1, 1, 2, 2])  # the reader agrees on the first five of eight
    ex = _ClassReader()
    ref = reference_set(ex, build_dataset(_data(setup), "train"), "toy", cache=tmp_path, progress=False)
    assert score_images(images, ex, ref, progress=False, labels=labels)["class_consistency"] == 5 / 8
    assert score_images(images, ex, ref, progress=False)["class_consistency"] is None  # no labels
    pixels = reference_set(_Pixels(), build_dataset(_data(setup), "train"), "toy", cache=tmp_path, progress=False)
    assert score_images(images, _Pixels(), pixels, progress=False, labels=labels)["class_consistency"] is None
    with pytest.raises(ValueError, match="labels of shape"):
        score_images(images, ex, ref, progress=False, labels=labels[:3])


def test_cfg_sweep_picks_the_best_scale_and_resumes(setup, tmp_path, monkeypatch):
    from detok.checkpoint import load_generator, load_tokenizer

    gen, tok, ex = load_generator(setup / "gen"), load_tokenizer(setup / "tok"), _extractor(setup)
    ref = reference_set(ex, build_dataset(_data(setup), "train"), "toy", cache=tmp_path, progress=False)
    cfg = GenerationEvalConfig(cfg_scales=(1.0, 3.0), num=6, final_num=9, batch_size=4)
    record = evaluate_generation(gen, tok, ex, ref, tmp_path / "eval", cfg, progress=False)
    assert [r["cfg"] for r in record["rows"]] == [1.0, 3.0] and all(r["num"] == 6 for r in record["rows"])
    assert record["best_cfg"] == min(record["rows"], key=lambda r: r["fid"])["cfg"]
    final = record["final"]
    assert final["num"] == 9 and final["seed"] == 1 and final["cfg"] == record["best_cfg"]
    with np.load(tmp_path / "eval" / final["samples"]) as f:
        assert f["images"].shape == (9, 32, 32, 1) and np.bincount(f["labels"]).tolist() == [3, 3, 3]
    assert json.loads((tmp_path / "eval" / "generation.json").read_text()) == json.loads(json.dumps(record))
    assert all(0 <= r["class_consistency"] <= 1 for r in record["rows"])  # the reference classifier reads classes

    def refuse(*args, **kwargs):
        raise AssertionError("resumed evaluation must not sample again")

    monkeypatch.setattr("detok.generate.sample_images", refuse)
    for sidecar in (tmp_path / "eval").glob("samples-cfg1-*.json"):
        sidecar.unlink()  # scores are recomputed from the kept samples, identically
    assert evaluate_generation(gen, tok, ex, ref, tmp_path / "eval", cfg, progress=False) == record
    with pytest.raises(ValueError, match="at least 4"):
        GenerationEvalConfig(num=3)
    # the same folder with other sampling settings or other weights: the kept samples are not this run's
    from detok.generate import with_sampling_settings

    fewer_steps = with_sampling_settings(gen, [f"{_steps_key(gen)}=2"])
    with pytest.raises(ValueError, match="sampled by other models or settings"):
        evaluate_generation(fewer_steps, tok, ex, ref, tmp_path / "eval", cfg, progress=False)
    for scores in (tmp_path / "eval").glob("samples-*.json"):
        scores.unlink()
    retrained = load_generator(setup / "gen")
    with torch.no_grad():
        next(retrained.parameters()).add_(0.01)
    with pytest.raises(ValueError, match="sampled by other models or settings"):
        evaluate_generation(retrained, tok, ex, ref, tmp_path / "eval", cfg, progress=False)


def test_temperature_search_tries_every_scale_at_every_temperature(setup, tmp_path):
    from detok.checkpoint import load_generator, load_tokenizer
    from detok.generate import with_sampling_settings

    gen, tok, ex = load_generator(setup / "gen"), load_tokenizer(setup / "tok"), _extractor(setup)
    ref = reference_set(ex, build_dataset(_data(setup), "train"), "toy", cache=tmp_path, progress=False)
    cfg = GenerationEvalConfig(cfg_scales=(1.0, 3.0), num=6, final_num=9, batch_size=6, temperatures=(0.5, 1.0))
    with pytest.raises(ValueError, match="no effect on the deterministic"):  # the ODE sampler has no temperature
        evaluate_generation(gen, tok, ex, ref, tmp_path / "ode", cfg, progress=False)
    sde = with_sampling_settings(gen, ["flow.sampler=sde", "flow.sample_steps=3"])
    record = evaluate_generation(sde, tok, ex, ref, tmp_path / "eval", replace(cfg, no_cfg_num=4), progress=False)
    pairs = [(r["temperature"], r["cfg"]) for r in record["rows"]]
    assert pairs == [(0.5, 1.0), (0.5, 3.0), (1.0, 1.0), (1.0, 3.0)]
    best = min(record["rows"], key=lambda r: r["fid"])
    assert (record["best_temperature"], record["best_cfg"]) == (best["temperature"], best["cfg"])
    final = record["final"]
    assert (final["temperature"], final["cfg"], final["num"], final["seed"]) == (best["temperature"], best["cfg"], 9, 1)
    assert ("-t0.5" in final["samples"]) == (best["temperature"] == 0.5)
    assert [r["temperature"] for r in record["no_cfg_rows"]] == [1.0]  # without a no-CFG sweep: 1.0 only
    # the same seed and scale at two temperatures: the same labels, other images (the temperature reached the sampler)
    with np.load(tmp_path / "eval" / record["rows"][0]["samples"]) as cold:
        with np.load(tmp_path / "eval" / record["rows"][2]["samples"]) as warm:
            assert (cold["labels"] == warm["labels"]).all() and not (cold["images"] == warm["images"]).all()
    with pytest.raises(ValueError, match="not both"):
        GenerationEvalConfig(temperature=0.8, temperatures=(0.5, 1.0))
    with pytest.raises(ValueError, match="repeat"):
        GenerationEvalConfig(temperatures=(0.5, 0.5))


def _steps_key(gen) -> str:
    return "flow.sample_steps" if hasattr(gen.config, "flow") else "diffusion.sample_steps"


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def test_cli_eval_generation_and_samples(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETOK_CACHE", str(tmp_path / "cache"))
    data = ["--set", "name=npz", "--set", f"root={setup / 'd.npz'}", "--threads", "1"]
    args = ["eval", "generation", str(setup / "gen"), "--evaluator", f"reference:{setup / 'ref'}", "--cfg", "1,2"]
    args += ["--num", "6", "--final-num", "6", "--batch-size", "6", "--out", str(tmp_path / "ev"), *data]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "ev" / "generation.json").read_text())
    assert f"{record['final']['fid']:.3f}" in out and "<- final" in out
    assert list((tmp_path / "cache" / "refstats").glob("npz-train-32x1-*-n30-reference-*.npz"))
    npz = tmp_path / "ev" / record["final"]["samples"]
    score = [
        "eval",
        "samples",
        str(npz),
        "--evaluator",
        f"reference:{setup / 'ref'}",
        "--out",
        str(tmp_path / "s.json"),
    ]
    assert cli_main([*score, *data]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "s.json").read_text())["fid"] == pytest.approx(record["final"]["fid"])
    ref = np.load(next((tmp_path / "cache" / "refstats").glob("*.npz")))
    np.savez(tmp_path / "adm.npz", mu=ref["mu"], sigma=ref["sigma"])  # published statistics: no features
    assert cli_main([*score, "--ref-stats", str(tmp_path / "adm.npz"), *data]) == 0
    capsys.readouterr()
    adm = json.loads((tmp_path / "s.json").read_text())
    assert adm["fid"] == pytest.approx(record["final"]["fid"]) and adm["precision"] is None
    assert adm["reference"] == "adm:adm.npz"
    assert cli_main([*args[:3], "--cfg", "1,x", *data]) == 2
    assert "comma-separated" in capsys.readouterr().err
    searched = [*args, "--temperatures", "0.5,1", "--sampling", "flow.sampler=sde", "--out", str(tmp_path / "t")]
    assert cli_main([*searched, *data]) == 0
    printed = capsys.readouterr().out
    rows = json.loads((tmp_path / "t" / "generation.json").read_text())["rows"]
    assert [(r["temperature"], r["cfg"]) for r in rows] == [(0.5, 1.0), (0.5, 2.0), (1.0, 1.0), (1.0, 2.0)]
    assert " temp " in printed and f"{rows[0]['fid']:.3f}" in printed


def test_cli_tokenizer_eval_notes_what_it_skipped(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETOK_CACHE", str(tmp_path / "empty"))
    base = ["tokenizer", "eval", str(setup / "tok"), "--set", "name=npz", "--set", f"root={setup / 'd.npz'}"]
    base += ["--threads", "1", "--lpips", "off", "--out", str(tmp_path / "e.json")]
    assert cli_main(base) == 0
    capsys.readouterr()
    record = json.loads((tmp_path / "e.json").read_text())
    assert record["rfid"] is None and "--evaluator inception" in record["rfid_note"]  # npz: no default evaluator
    assert record["lpips"] is None and "--lpips off" in record["lpips_note"]
    assert cli_main([*base, "--evaluator", f"reference:{setup / 'ref'}"]) == 0
    capsys.readouterr()
    record = json.loads((tmp_path / "e.json").read_text())
    assert record["rfid"] > 0 and record["evaluator"].startswith("reference-") and "rfid_note" not in record


def test_the_shipped_evaluator_is_the_default_everywhere(monkeypatch, tmp_path):
    """A fresh install scores Fashion-MNIST with the evaluator shipped in the package, whatever the cache holds."""
    from detok.commands.tokenizer import _reconstruction_evaluator
    from detok.eval.features import SHIPPED_REFERENCE, build_extractor, file_digest

    monkeypatch.setenv("DETOK_CACHE", str(tmp_path))  # an empty cache: nothing trained on this machine
    extractor, note = _reconstruction_evaluator(None, "fashion-mnist", "cpu")
    assert note is None and extractor.name == f"reference-{file_digest(SHIPPED_REFERENCE / 'model.safetensors')}"
    assert extractor.name == "reference-9f94d1b9bf8f" == build_extractor("reference", "cpu").name  # the docs' id
    assert json.loads((SHIPPED_REFERENCE / "config.json").read_text())["test_accuracy"] == 0.9195


def test_uint8_conversion_round_trips_every_value():
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(to_uint8_nchw(values.float() / 127.5 - 1), values)
    assert to_uint8_nchw(torch.tensor([[[[-3.0, 3.0]]]])).tolist() == [[[[0, 255]]]]  # clamped like a PNG writer


def test_cli_latent_analysis_and_report(setup, tmp_path, capsys):
    import shutil

    tok, gen = tmp_path / "tok", tmp_path / "gen"
    shutil.copytree(setup / "tok", tok)
    shutil.copytree(setup / "gen", gen)
    data = ["--set", "name=npz", "--set", f"root={setup / 'd.npz'}", "--threads", "1"]
    assert cli_main(["eval", "latents", str(tok), *data]) == 0
    analysis = json.loads((tok / "analysis" / "latent_analysis.json").read_text())
    assert {"linear_probe", "gmm", "robustness"} <= set(analysis)
    args = ["eval", "generation", str(gen), "--evaluator", f"reference:{setup / 'ref'}", "--cfg", "1,2", "--num", "6"]
    assert cli_main([*args, "--final-num", "6", "--tokenizer", str(tok), "--ref-split", "test", *data]) == 0
    assert (gen / "eval" / "fid_vs_cfg.png").is_file()
    final = json.loads((gen / "eval" / "generation.json").read_text())["final"]
    assert cli_main(["report", str(tok), str(gen), "--out", str(tmp_path / "report")]) == 0
    capsys.readouterr()
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"{analysis['linear_probe']['test_accuracy']:.1%}" in md and f"{final['fid']:.2f}" in md
    assert (tmp_path / "report" / "report.html").is_file()


def test_sampling_to_file_in_pieces_equals_one_call_and_resumes(setup, tmp_path, monkeypatch):
    import detok.generate as generate
    from detok.checkpoint import load_generator, load_tokenizer

    gen, tok = load_generator(setup / "gen"), load_tokenizer(setup / "tok")
    kwargs = dict(batch_size=3, seed=5, progress=False, cfg_scale=2.0)
    whole, labels = generate.sample_images(gen, tok, 10, **kwargs)
    images, got = generate.sample_to_file(tmp_path / "a.npz", gen, tok, 10, chunk_batches=2, **kwargs)
    assert np.array_equal(images, whole) and np.array_equal(got, labels)
    with np.load(tmp_path / "a.npz") as f:
        assert np.array_equal(f["images"], whole)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "a.png"]  # pieces removed once complete

    real, calls = generate.sample_images, []

    def interrupted(*args, **kw):
        calls.append(kw["first_batch"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(generate, "sample_images", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate.sample_to_file(tmp_path / "b.npz", gen, tok, 10, chunk_batches=2, **kwargs)
    assert (tmp_path / "b.part0.npz").is_file() and not (tmp_path / "b.npz").exists()
    for changed in ({**kwargs, "seed": 6}, {**kwargs, "cfg_scale": 1.5}, {**kwargs, "batch_size": 2}):
        with pytest.raises(ValueError, match="other settings"):  # a leftover part is never mixed into other samples
            generate.sample_to_file(tmp_path / "b.npz", gen, tok, 10, chunk_batches=2, **changed)
    calls.clear()
    monkeypatch.setattr(generate, "sample_images", lambda *a, **kw: calls.append(kw["first_batch"]) or real(*a, **kw))
    images, _ = generate.sample_to_file(tmp_path / "b.npz", gen, tok, 10, chunk_batches=2, **kwargs)
    assert np.array_equal(images, whole) and calls == [2]  # only the unfinished piece (batches 2-3) was sampled


def test_sampling_settings_change_only_how_a_model_samples():
    from detok import create_model
    from detok.generate import with_sampling_settings

    sit, mar = create_model("sit-fmnist32-tiny").eval(), create_model("mar-fmnist32-tiny").eval()
    faster = with_sampling_settings(sit, ["model.flow.sample_steps=3", "flow.sampler=euler"])
    assert faster.config.flow.sample_steps == 3 and faster.config.flow.sampler == "euler"
    assert with_sampling_settings(mar, ["num_iter=2", "diffloss.sample_steps=4"]).config.diffloss.sample_steps == 4
    for trained in (["flow.time_scale=1.0"], ["flow.sample_steps=3", "class_dropout=0.2"]):
        with pytest.raises(ValueError, match="not a sampling setting"):
            with_sampling_settings(sit, trained)
    with pytest.raises(ValueError, match="diffloss.schedule"):
        with_sampling_settings(mar, ["diffloss.schedule=linear"])


def test_reference_cache_names_everything_that_changes_the_images(tmp_path):
    from detok.data import DataConfig
    from detok.eval.features import dataset_key

    base = DataConfig()
    assert dataset_key(base, "train") == "fashion-mnist-train-32x1"  # the default keeps its established name
    keys = {
        dataset_key(d, "train")
        for d in (
            base,
            DataConfig(resize="resize"),
            DataConfig(name="npz", root=str(tmp_path / "a.npz")),
            DataConfig(name="npz", root=str(tmp_path / "b.npz")),
        )
    }
    assert len(keys) == 4 and dataset_key(base, "test") != dataset_key(base, "train")
