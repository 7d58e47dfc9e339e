"""Run reports: numbers from the run files, images that exist, notes for missing files, HTML escaping, bad inputs."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detok.eval.document import html_inline
from detok.eval.report import plot_fid_vs_cfg, write_report

pytest.importorskip("matplotlib")

DASH = "—"
RECON = {
    "split": "test",
    "psnr": 22.8134,
    "psnr_sem": 0.0312,
    "ssim": 0.80123,
    "ssim_sem": 0.00141,
    "images": 10000,
    "rfid": 3.14159,
    "lpips": None,
    "lpips_note": "skipped: torchvision VGG16 weights not available",
    "evaluator": "reference-fmnist32:abc123",
}
LATENTS = {
    "linear_probe": {
        "train_accuracy": 0.9012,
        "test_accuracy": 0.8567,
        "train_images": 60000,
        "test_images": 10000,
        "feature_dim": 64,
        "epochs": 10,
    },
    "gmm": {
        "pca_dims": 32,
        "explained_variance": 0.913,
        "images": 5000,
        "best_k_bic": 8,
        "rows": [{"k": 1, "nll": 12.3, "bic": 4567.0}, {"k": 8, "nll": 10.1, "bic": 4001.0}],
    },
    "robustness": {
        "gamma": 3.0,
        "images": 256,
        "noise": [{"tau": 0.0, "psnr": 22.1}, {"tau": 0.5, "psnr": 19.0}],
        "mask": [{"ratio": 0.0, "psnr": 22.1}, {"ratio": 0.5, "psnr": 15.2}],
        "noise_strip": "robustness_noise.png",
        "mask_strip": "robustness_mask.png",
    },
    "settings": {"seed": 0},
}
SWEEP = [
    {"cfg": c, "num": 100, "fid": f, "is": i, "is_std": 0.21, "precision": 0.61, "recall": 0.52, "samples": s}
    for c, f, i, s in [
        (1.0, 30.456, 5.123, "eval/samples-cfg1.0-n100-seed0.npz"),
        (1.5, 25.789, 6.456, "eval/samples-cfg1.5-n100-seed0.npz"),
        (2.0, 27.001, 7.002, "eval/samples-cfg2.0-n100-seed0.npz"),
    ]
]
FINAL = {**SWEEP[1], "num": 500, "fid": 21.987, "is": 6.789, "precision": 0.634, "recall": 0.555}
FINAL["samples"] = "eval/samples-cfg1.5-n500-seed0.npz"
GENERATION = {"evaluator": "reference-fmnist32:abc123", "reference": "fashion-mnist/train", "seed": 0}
GENERATION.update(rows=SWEEP, best_cfg=1.5, final=FINAL)


def _png(path: Path, value: int = 128, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)
    return path


def _json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _log(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


TOK_LOG = [
    {"step": s, "time": 1.7e9 + s, "images": 64 * s, "lr": 1e-3, "loss": 1.0 / s, "grad_norm": 0.5, "img_per_s": v}
    | {"mse": 0.5 / s, "kl": 3.0, "perceptual": 0.0, "gan_g": 0.0, "gan_d": 0.0, "mask_ratio": 0.3}
    for s, v in [(10, 70.0), (20, 80.5), (30, 90.25)]
]


@pytest.fixture
def runs(tmp_path):
    """A tokenizer run with everything, a generator run, and a bare run whose name needs escaping."""
    tok = tmp_path / "runs" / "tok"
    _json(tok / "config.json", {"kind": "tokenizer", "arch": "DeTok", "preset": "detok-fmnist-tiny", "step": 30})
    _log(tok / "log.jsonl", TOK_LOG)
    _png(tok / "samples" / "step-00000010.png", 10)
    _png(tok / "samples" / "step-00000020.png", 200, size=12)
    _json(tok / "eval-test.json", RECON)
    _json(tok / "analysis" / "latent_analysis.json", LATENTS)
    _png(tok / "analysis" / "robustness_noise.png")
    _png(tok / "analysis" / "robustness_mask.png")

    gen = tmp_path / "runs" / "gen"
    _json(gen / "config.json", {"kind": "generator", "preset": "dit-tiny"})
    _log(gen / "log.jsonl", [{"step": s, "images": 32 * s, "loss": 2.0 / s, "img_per_s": 50.0} for s in (1, 2, 3)])
    _json(gen / "eval" / "generation.json", GENERATION)
    _png(gen / "eval" / "samples-cfg1.5-n500-seed0.png", 77, size=10)

    bare = tmp_path / "runs" / "run<&>"
    _json(bare / "config.json", {"kind": "tokenizer"})
    return tok, gen, bare


def _images(out: Path, md: str, html: str) -> list[str]:
    """Every image the two pages reference, after checking both pages reference the same ones."""
    in_md = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert in_md == re.findall(r'<img src="([^"]+)"', html)
    for name in in_md:
        with Image.open(out / name) as im:
            assert im.format == "PNG"
            im.verify()
    return in_md


def _table(md: str, section: str) -> list[list[str]]:
    """Rows (header first) of the first table in a Markdown section."""
    body = md.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in body.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[:1] + lines[2:]]


def test_single_tokenizer_report(runs, tmp_path):
    tok = runs[0]
    out = tmp_path / "report"
    written = write_report([tok], out)
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert set(written) >= {"report.md", "report.html"} and all(p.is_file() for p in written.values())
    assert "## Summary" not in md  # the summary table is for comparisons
    assert "Generated 20" in md and str(tok.resolve()) in md

    r, probe, gmm = RECON, LATENTS["linear_probe"], LATENTS["gmm"]
    row = dict(zip(*_table(md, "Reconstruction")))
    assert row["PSNR (dB)"] == f"{r['psnr']:.2f} ± {r['psnr_sem']:.2f}"
    assert row["SSIM"] == f"{r['ssim']:.3f} ± {r['ssim_sem']:.3f}"
    assert row["rFID"] == f"{r['rfid']:.2f}" and row["LPIPS"] == DASH and row["images"] == str(r["images"])
    assert r["lpips_note"] in md
    row = dict(zip(*_table(md, "Latent analysis")))
    assert row["probe acc. (test)"] == f"{100 * probe['test_accuracy']:.1f}%"
    assert row["probe acc. (train)"] == f"{100 * probe['train_accuracy']:.1f}%"
    assert row["GMM best K (BIC)"] == str(gmm["best_k_bic"])

    last = TOK_LOG[-1]
    mean_speed = sum(rec["img_per_s"] for rec in TOK_LOG) / len(TOK_LOG)
    assert f"loss {last['loss']:.4g}" in md and f"mse {last['mse']:.4g}" in md
    assert f"{last['images']:,} images seen" in md and f"mean {mean_speed:.1f} img/s" in md

    images = _images(out, md, html)
    assert {"latents-nll.png", "latents-noise.png", "latents-mask.png", "training-tok.png"} <= set(images)
    assert {"noise_strip-tok.png", "mask_strip-tok.png"} <= set(images)
    # The latest preview grid is the one shown, byte for byte.
    assert (out / "samples-tok.png").read_bytes() == (tok / "samples" / "step-00000020.png").read_bytes()
    assert html.count("<table>") == md.count("\n|---")


def test_comparison_summary_and_escaping(runs, tmp_path):
    tok, gen, bare = runs
    out = tmp_path / "cmp"
    write_report([tok, gen, bare], out, title="Tokenizers & generators")
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert md.index("## Summary") < md.index("## Runs") < md.index("## Training")

    header, *rows = _table(md, "Summary")
    assert [row[0] for row in rows] == ["`tok`", "`gen`", "`run<&>`"]
    summary = {row[0].strip("`"): dict(zip(header, row)) for row in rows}
    assert summary["tok"]["PSNR"] == f"{RECON['psnr']:.2f}" and summary["tok"]["SSIM"] == f"{RECON['ssim']:.3f}"
    assert summary["tok"]["rFID"] == f"{RECON['rfid']:.2f}" and summary["tok"]["LPIPS"] == DASH
    assert summary["tok"]["probe acc."] == f"{100 * LATENTS['linear_probe']['test_accuracy']:.1f}%"
    assert summary["tok"]["gFID (cfg)"] == DASH
    assert summary["gen"]["gFID (cfg)"] == f"{FINAL['fid']:.2f} (cfg {FINAL['cfg']:g})"
    assert summary["gen"]["IS"] == f"{FINAL['is']:.2f}" and summary["gen"]["recall"] == f"{FINAL['recall']:.2f}"
    assert summary["gen"]["PSNR"] == DASH and summary["gen"]["kind"] == "generator"
    assert all(summary["run<&>"][k] == DASH for k in header[2:])

    # The sweep table lists every row, with the final evaluation in bold.
    assert f"| 1 | 100 | {SWEEP[0]['fid']:.2f} | {SWEEP[0]['is']:.2f} ± {SWEEP[0]['is_std']:.2f} |" in md
    assert f"| **1.5 (final)** | **500** | **{FINAL['fid']:.2f}** |" in md
    assert 'class="hl"' in html

    images = _images(out, md, html)
    assert {"generation-fid-vs-cfg.png", "training-loss.png", "training-kl.png"} <= set(images)
    assert "training-perceptual.png" not in images  # always zero: a disabled loss term
    assert (out / "generation-samples-gen-0.png").read_bytes() == (  # the final evaluation's grid comes first
        gen / "eval" / "samples-cfg1.5-n500-seed0.png"
    ).read_bytes()
    assert "samples-cfg1.5-n500-seed0.png (final, cfg 1.5, 500 samples; a row per class)" in md

    # Notes name the command that produces each missing file, for the runs that should have it.
    assert f"`run<&>`: no reconstruction evaluation (eval-test.json); produced by `detok tokenizer eval '{bare}'`" in md
    assert f"detok eval latents '{bare}'" in md and "`run<&>`: no training log (log.jsonl)" in md
    assert "`detok tokenizer train`" in md
    assert f"detok eval generation {tok}" not in md  # a tokenizer is not expected to be sampled

    assert html.count("<table>") == md.count("\n|---")
    assert "run<&>" not in html and "<code>run&lt;&amp;&gt;</code>" in html
    assert "<title>Tokenizers &amp; generators</title>" in html


def test_missing_and_broken_files_give_notes(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "eval-test.json").write_text("{not json")
    (run / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + '\n{"step": 2, "lo')  # still writing
    md = (write_report([run], tmp_path / "out")["report.md"]).read_text()
    assert "`bare`: eval-test.json could not be read (JSONDecodeError" in md
    assert "re-create it with `detok tokenizer eval" in md
    assert "no model config (config.json); produced by `detok tokenizer train` / `detok generator train`" in md
    assert "last logged step 1: loss 0.5" in md and "were skipped" in md
    assert f"`detok eval latents {run}`" in md and f"`detok eval generation {run}`" in md
    assert "no training previews (samples/step-*.png)" in md


def test_gmm_section_alone_still_plots(tmp_path):
    run = tmp_path / "tok"
    _json(run / "analysis" / "latent_analysis.json", {"gmm": LATENTS["gmm"]})
    assert "latents-nll.png" in write_report([run], tmp_path / "out")


def test_plot_fid_vs_cfg_writes_png(tmp_path):
    for label in ("run", None):
        path = plot_fid_vs_cfg(SWEEP + [FINAL], tmp_path / f"sweep-{label}.png", label=label)
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 100


def test_a_temperature_search_shows_each_rows_temperature_and_the_chosen_pair(tmp_path):
    rows = [{**r, "temperature": t} for t in (0.4, 1.0) for r in SWEEP]
    rows[1] = {**rows[1], "fid": 9.5}  # the best pair: cfg 1.5 at temperature 0.4
    gen = tmp_path / "mar"
    _json(gen / "config.json", {"kind": "generator", "preset": "mar-tiny"})
    record = {**GENERATION, "rows": rows[::-1], "best_cfg": 1.5, "best_temperature": 0.4}
    _json(gen / "eval" / "generation.json", {**record, "final": None})
    out = write_report([gen], tmp_path / "out")
    md = out["report.md"].read_text()
    table = _table(md, "Generation")
    assert table[0][:3] == ["cfg", "temperature", "images"]
    plain = [(r[1].strip("*"), r[0].strip("*")) for r in table[1:]]
    assert plain == [(t, c) for t in ("0.4", "1.0") for c in ("1", "1.5", "2")]
    assert [(i, r[3]) for i, r in enumerate(table[1:]) if r[3].startswith("**")] == [(1, "**9.50**")]  # chosen pair
    assert "best cfg 1.5 at temperature 0.4" in md
    assert "generation-fid-vs-cfg.png" in out  # one line per temperature
    _json(gen / "eval" / "generation.json", GENERATION)  # a search at temperature 1 only: no temperature column
    assert _table(write_report([gen], tmp_path / "out1")["report.md"].read_text(), "Generation")[0][1] == "images"


def test_bad_inputs_raise(runs, tmp_path):
    tok = runs[0]
    with pytest.raises(ValueError, match="no runs"):
        write_report([], tmp_path / "out")
    with pytest.raises(ValueError, match="not a run directory"):
        write_report([tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(ValueError, match="not a run directory"):
        write_report([tok / "config.json"], tmp_path / "out")
    twin = tmp_path / "elsewhere" / "tok"
    twin.mkdir(parents=True)
    with pytest.raises(ValueError, match="display name 'tok'.*rename"):
        write_report([tok, twin], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_matplotlib_names_the_extra(runs, tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"detok\[eval\]"):
        write_report([runs[0]], tmp_path / "out")
    with pytest.raises(ImportError, match=r"detok\[eval\]"):
        plot_fid_vs_cfg(SWEEP, tmp_path / "sweep.png")
    assert not (tmp_path / "out").exists()


def test_html_inline_escapes_and_marks_code():
    assert html_inline("a <b> & `c<d>`") == "a &lt;b&gt; &amp; <code>c&lt;d&gt;</code>"


def test_fmnist_runs_say_which_training_regime_they_are_in(tmp_path):
    for name, kind, preset, images in (("short", "tokenizer", "detok-fmnist32", 24_000),
                                       ("long", "generator", "sit-fmnist32", 480_000)):  # fmt: skip
        run = tmp_path / name
        run.mkdir()
        _json(run / "config.json", {"kind": kind, "arch": "X", "model": {}, "preset": preset, "step": 10})
        _log(run / "log.jsonl", [{"step": 10, "images": images, "loss": 0.5}])
    md = write_report([tmp_path / "short", tmp_path / "long"], tmp_path / "out")["report.md"].read_text()
    assert "`short`: short-training regime (24,000 training images" in md
    assert "`long`: longer-training regime (480,000 training images" in md
