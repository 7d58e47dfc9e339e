"""Run reports: one Markdown and one HTML page for a run, or a comparison of several runs.

Both pages are rendered from one `Document` (eval/document.py), so the two pages always show the same content.

Number formats: PSNR, rFID, gFID, IS and GMM NLL with 2 decimals; SSIM and LPIPS with 3; precision and
recall with 2; accuracies (fractions in the JSON) as percentages with 1 decimal; CFG scales with `:g`.
A number a run lacks is shown as "—"; a file a run lacks becomes a one-line note naming its command.

Length (~545 lines): one document (Markdown and HTML) built from one set of rows; the formatting rules above hold
for both renderings.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from detok.eval.document import Document, Image, Section, Table, render_html, render_markdown

DASH = "—"
# Bookkeeping and schedules rather than training signals: reported in the text, never plotted.
_NOT_CURVES = ("step", "time", "images", "lr", "img_per_s", "data_wait", "skipped_files", "mask_ratio")

# ---------------------------------------------------------------- number formatting


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _num(x: Any, digits: int = 2, err: Any = None) -> str:
    """`x` with `digits` decimals, followed by "± err" when an error is given; "—" when `x` is not a number."""
    if not _is_num(x):
        return DASH
    return f"{x:.{digits}f} ± {err:.{digits}f}" if _is_num(err) else f"{x:.{digits}f}"


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if _is_num(x) else DASH


def _cfg(x: Any) -> str:
    return f"{x:g}" if _is_num(x) else DASH


def _text(x: Any) -> str:
    return DASH if x is None else str(x)


def _code(name: str) -> str:
    """A code span, which Markdown shows literally (so `<&>` in a run name is safe there too)."""
    return "`" + name.replace("`", "'") + "`"  # a backtick inside would end the span early


def _sub(d: dict | None, key: str) -> dict:
    value = (d or {}).get(key)
    return value if isinstance(value, dict) else {}


def _points(rows: Any, xkey: str, ykey: str) -> tuple[list, list]:
    """(xs, ys) sorted by x, from the dicts in `rows` that hold numbers under both keys."""
    ok = [r for r in rows or [] if isinstance(r, dict) and _is_num(r.get(xkey)) and _is_num(r.get(ykey))]
    pts = sorted((r[xkey], r[ykey]) for r in ok)
    return [x for x, _ in pts], [y for _, y in pts]


# ---------------------------------------------------------------- plots (Agg canvas, no pyplot state)


def _figure(ncols: int = 1, nrows: int = 1):
    """A matplotlib Figure on an Agg canvas; pyplot is avoided so a caller's backend is never switched."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("Report plots need matplotlib: pip install 'detok[eval]'") from e
    fig = Figure(figsize=(4.5 * ncols, 3.2 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _draw(ax, series: dict[str, tuple[list, list]], xlabel: str, ylabel: str, title: str) -> None:
    """One line per label; an empty label adds no legend entry."""
    ys = [y for _, yv in series.values() for y in yv]
    for label, (x, y) in series.items():
        if not x:  # a run that never logged this metric gets no empty legend entry
            continue
        ax.plot(x, y, marker="o" if len(x) <= 20 else None, markersize=3, label=label or None)
    # Losses span decades; a log axis keeps the late-training tail readable.
    if ys and min(ys) > 0 and max(ys) / min(ys) > 20:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if any(label and x for label, (x, _) in series.items()):
        ax.legend(fontsize=7)


def plot_lines(series: dict[str, tuple[list, list]], path: str | Path, xlabel: str, ylabel: str, title: str) -> Path:
    """One axes with a line per label (x values, y values), as a PNG."""
    fig = _figure()
    _draw(fig.add_subplot(), series, xlabel, ylabel, title)
    return _save(fig, path)


def plot_bars(groups: dict[str, list[tuple[str, list[float]]]], path: str | Path, ylabel: str) -> Path:
    """Grouped bars: for each group label, (category, values) pairs; a bar shows the mean, its error bar half
    the range of the values."""
    import numpy as np

    fig = _figure(2)
    ax = fig.add_subplot()
    categories = list(dict.fromkeys(c for pairs in groups.values() for c, _ in pairs))
    width = 0.8 / max(1, len(groups))
    for i, (label, pairs) in enumerate(groups.items()):
        values = dict(pairs)
        xs = [categories.index(c) + (i - (len(groups) - 1) / 2) * width for c in values]
        means = [float(np.mean(v)) for v in values.values()]
        errs = [(max(v) - min(v)) / 2 for v in values.values()]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=label)
    ax.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 4 else 0, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_training_curves(logs: dict[str, list[dict]], metrics: list[str], path: str | Path) -> Path:
    """One subplot per logged metric against images seen (steps if a log lacks them), overlaying the runs."""
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = _figure(ncols, nrows)
    by_images = all(_is_num(r.get("images")) for records in logs.values() for r in records)
    xkey = "images" if by_images else "step"
    for i, metric in enumerate(metrics):
        series = {name if len(logs) > 1 else "": _points(records, xkey, metric) for name, records in logs.items()}
        _draw(fig.add_subplot(nrows, ncols, i + 1), series, "images seen" if by_images else "step", metric, metric)
    return _save(fig, path)


def _temperature(row: dict) -> float:
    """The sampling temperature of a generation row (1.0: a record from before the temperature search)."""
    return row["temperature"] if _is_num(row.get("temperature")) else 1.0


def _sweep_rows(rows: Any) -> list[dict]:
    """The rows of a CFG (× temperature) search that name a scale, by temperature, then scale."""
    rows = [r for r in rows or [] if isinstance(r, dict) and _is_num(r.get("cfg"))]
    return sorted(rows, key=lambda r: (_temperature(r), r["cfg"]))


def plot_sweeps(sweeps: dict[str, list[dict]], path: str | Path) -> Path:
    """FID (left) and IS (right) against the CFG scale: one line per label, sample count and temperature."""
    fig = _figure(2)
    for i, key in enumerate(("fid", "is")):
        series = {}
        for label, rows in sweeps.items():
            rows = _sweep_rows(rows)
            # FID is biased by the sample count: points of different counts (or temperatures) are never joined
            groups = sorted({(r.get("num"), _temperature(r)) for r in rows}, key=str)
            nums, temps = {n for n, _ in groups}, {t for _, t in groups}
            for n, t in groups:
                tags = ([f"n={n}"] if len(nums) > 1 else []) + ([f"T={t:g}"] if len(temps) > 1 else [])
                name = f"{label} ({', '.join(tags)})".strip() if tags else label
                same = [r for r in rows if r.get("num") == n and _temperature(r) == t]
                series[name] = _points(same, "cfg", key)
        _draw(fig.add_subplot(1, 2, i + 1), series, "CFG scale", key.upper(), f"{key.upper()} vs CFG")
    return _save(fig, path)


def plot_fid_vs_cfg(rows: list[dict], path: str | Path, label: str | None = None) -> Path:
    """Plot a CFG sweep (the rows of `eval/generation.json`): FID and IS against the CFG scale, as a PNG.

    Args:
        rows: Dicts with "cfg" and "fid"; "is" and "num" are used when present.
        path: Where to write the PNG.
        label: Legend entry (e.g. the run name); no legend when omitted.

    Returns:
        The path written.
    """
    return plot_sweeps({label or "": rows}, path)


# ---------------------------------------------------------------- reading runs

# Which optional pieces a run of each kind should have: tokenizers are not sampled, generators not reconstructed.
_EXPECTED = {"tokenizer": {"recon", "latents"}, "generator": {"generation"}}
_FILES = {"recon": "eval-test.json", "latents": "analysis/latent_analysis.json", "generation": "eval/generation.json"}


@dataclass
class _Run:
    name: str
    given: str
    path: Path
    slug: str  # file-name-safe and unique: prefixes the images copied for this run
    config: dict | None = None
    log: list[dict] = field(default_factory=list)
    recon: dict | None = None
    latents: dict | None = None
    generation: dict | None = None
    problems: dict[str, str] = field(default_factory=dict)  # file → why it could not be read

    @property
    def kind(self) -> str | None:
        kind = (self.config or {}).get("kind")
        return kind if isinstance(kind, str) else None

    def expects(self, piece: str) -> bool:
        """Whether a missing `piece` deserves a note; an unreadable file always does."""
        return piece in _EXPECTED.get(self.kind or "", _FILES) or _FILES[piece] in self.problems

    def read_json(self, rel: str) -> dict | None:
        path = self.path / rel
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            self.problems[rel] = f"{type(e).__name__}: {e}"
            return None
        if not isinstance(data, dict):
            self.problems[rel] = "not a JSON object"
        return data if isinstance(data, dict) else None

    def read_log(self) -> None:
        path = self.path / "log.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        for line in filter(str.strip, lines):
            # A run still training may have a half-written last line: skip it rather than fail the report.
            try:
                record = json.loads(line)
            except ValueError:
                self.problems["log.jsonl"] = "lines that are not JSON were skipped"
                continue
            if isinstance(record, dict):
                self.log.append(record)


def _load_runs(runs: list[str | Path]) -> list[_Run]:
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    if not runs:
        raise ValueError("no runs given: pass at least one run directory")
    loaded: list[_Run] = []
    for given in runs:
        path = Path(os.path.abspath(given))  # abspath, not resolve: a symlinked run keeps its own name
        if not path.is_dir():
            raise ValueError(f"{given} is not a run directory (it does not exist or is not a directory)")
        twin = next((r for r in loaded if r.name == path.name), None)
        if twin is not None:
            raise ValueError(
                f"runs {twin.given} and {given} share the display name {path.name!r} (their directory name); "
                "rename one of them (or compare a symlink with another name)"
            )
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", path.name).strip("._") or "run"
        if any(r.slug == slug for r in loaded):  # names that differ only in unsafe characters
            slug = f"{slug}-{len(loaded)}"
        marks = ["config.json", "run_config.json", "log.jsonl", *_FILES.values()]
        if not any((path / rel).is_file() for rel in marks):
            raise ValueError(
                f"{given} is not a run directory: it holds none of {', '.join(marks)} (give a tokenizer or generator "
                "run, or a model folder)"
            )
        run = _Run(path.name, str(given), path, slug)
        run.config = run.read_json("config.json")
        for piece, rel in _FILES.items():
            setattr(run, piece, run.read_json(rel))
        run.read_log()
        loaded.append(run)
    return loaded


def _note(run: _Run, rel: str, what: str) -> str:
    """A one-line note for a missing or unreadable file of `run`, naming the command that writes it."""
    if rel == "eval-test.json":
        command = f"`detok tokenizer eval {shlex.quote(run.given)}`"
    elif rel.startswith(("analysis/", "eval/")):
        action = "latents" if rel.startswith("analysis/") else "generation"
        command = f"`detok eval {action} {shlex.quote(run.given)}`"
    elif run.kind in ("tokenizer", "generator"):
        command = f"`detok {run.kind} train`"
    else:
        command = "`detok tokenizer train` / `detok generator train`"
    if rel in run.problems:
        return f"{_code(run.name)}: {rel} could not be read ({run.problems[rel]}); re-create it with {command}."
    return f"{_code(run.name)}: no {what} ({rel}); produced by {command}."


# ---------------------------------------------------------------- sections


class _Assets:
    """Writes images into the output folder and remembers their paths."""

    def __init__(self, out: Path):
        self.out, self.written = out, {}

    def path(self, name: str) -> Path:
        self.written[name] = self.out / name
        return self.out / name

    def copy(self, src: Path, name: str) -> str:
        shutil.copyfile(src, self.path(name))
        return name


# Below this many training images a Fashion-MNIST-32 run is in the short-training regime of docs/results.md, where
# reconstructions are blurred and samples often off-class (tokenizers reached ~22 dB at 24k images, 33.7 dB at 128k).
SHORT_REGIME_IMAGES = {"tokenizer": 100_000, "generator": 200_000}


def _runs_section(runs: list[_Run], assets: _Assets) -> Section:
    rows, regimes = [], []
    for run in runs:
        cfg = run.config or {}
        step = cfg.get("step", run.log[-1].get("step") if run.log else None)
        images = run.log[-1].get("images") if run.log else None
        rows.append([_code(run.name), _text(run.kind), _text(cfg.get("preset")), _text(step), _text(images)])
        rows[-1] += [_code(run.given), _code(str(run.path))]
        limit = SHORT_REGIME_IMAGES.get(run.kind)
        if _is_num(images) and limit and "fmnist" in str(cfg.get("preset")):
            regime = "short-training" if images < limit else "longer-training"
            regimes.append(f"{_code(run.name)}: {regime} regime ({images:,} training images; see docs/results.md)")
    header = ["Run", "kind", "preset", "step", "images seen", "path (as given)", "absolute path"]
    sec = Section("Runs", [Table(header, rows), *regimes])
    sec.blocks += [_note(r, "config.json", "model config") for r in runs if r.config is None]
    return sec


def _headline(gen: dict | None) -> dict:
    """The generation row that stands for a run: the final evaluation, else the sweep's lowest FID."""
    if isinstance((gen or {}).get("final"), dict):
        return gen["final"]
    rows = [r for r in _sweep_rows((gen or {}).get("rows")) if _is_num(r.get("fid"))]
    return min(rows, key=lambda r: r["fid"]) if rows else {}


def _summary_section(runs: list[_Run], assets: _Assets) -> Section:
    header = ["Run", "kind", "PSNR", "SSIM", "rFID", "LPIPS", "probe acc.", "gFID (cfg)", "IS", "precision", "recall"]
    header += ["class consistency"]
    rows = []
    for run in runs:
        rec, gen, probe = run.recon or {}, _headline(run.generation), _sub(run.latents, "linear_probe")
        gfid = f"{_num(gen.get('fid'))} (cfg {_cfg(gen.get('cfg'))})" if _is_num(gen.get("fid")) else DASH
        rows.append([_code(run.name), _text(run.kind), _num(rec.get("psnr")), _num(rec.get("ssim"), 3)])
        rows[-1] += [_num(rec.get("rfid")), _num(rec.get("lpips"), 3), _pct(probe.get("test_accuracy")), gfid]
        rows[-1] += [_num(gen.get("is")), _num(gen.get("precision")), _num(gen.get("recall"))]
        rows[-1] += [_pct(gen.get("class_consistency"))]
    return Section("Summary", [Table(header, rows)])


def _training_section(runs: list[_Run], assets: _Assets) -> Section:
    sec = Section("Training")
    for run in runs:
        if not run.log:
            sec.blocks.append(_note(run, "log.jsonl", "training log"))
            continue
        last = run.log[-1]
        values = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k not in _NOT_CURVES and _is_num(v))
        speeds = [r["img_per_s"] for r in run.log if _is_num(r.get("img_per_s"))]
        line = f"{_code(run.name)}: last logged step {_text(last.get('step'))}"
        line += f", {last['images']:,} images seen" if _is_num(last.get("images")) else ""
        line += f": {values}" + (f"; mean {sum(speeds) / len(speeds):.1f} img/s" if speeds else "") + "."
        sec.blocks.append(line + (f" ({run.problems['log.jsonl']})" if "log.jsonl" in run.problems else ""))
    logs = {r.name: r.log for r in runs if r.log}
    # Metrics that stay zero are disabled loss terms (e.g. the GAN before it starts): their plots would be empty.
    metrics = dict.fromkeys(k for rs in logs.values() for r in rs for k, v in r.items() if _is_num(v) and v != 0)
    metrics = sorted((m for m in metrics if m not in _NOT_CURVES), key=lambda m: m != "loss")
    if metrics and len(runs) == 1:
        plot_training_curves(logs, metrics, assets.path(f"training-{runs[0].slug}.png"))
        sec.blocks.append(Image(f"training-{runs[0].slug}.png", f"{_code(runs[0].name)}: training curves"))
    for metric in metrics if len(runs) > 1 else []:
        name = "training-" + re.sub(r"[^A-Za-z0-9_-]", "_", metric) + ".png"
        plot_training_curves(logs, [metric], assets.path(name))
        sec.blocks.append(Image(name, f"{metric} of every run that logs it"))
    for run in runs:
        grids = sorted((run.path / "samples").glob("step-*.png"))  # zero-padded steps: name order is step order
        if grids:
            src = assets.copy(grids[-1], f"samples-{run.slug}.png")
            sec.blocks.append(Image(src, f"{_code(run.name)}: samples/{grids[-1].name} (latest of {len(grids)})"))
        else:
            sec.blocks.append(_note(run, "samples/step-*.png", "training previews"))
    return sec


def _recon_section(runs: list[_Run], assets: _Assets) -> Section:
    header = ["Run", "split", "images", "PSNR (dB)", "SSIM", "rFID", "LPIPS", "evaluator"]
    rows, notes = [], []
    for run in runs:
        rec = run.recon
        if rec is None:
            if run.expects("recon"):
                notes.append(_note(run, "eval-test.json", "reconstruction evaluation"))
            continue
        rows.append([_code(run.name), _text(rec.get("split")), _text(rec.get("images"))])
        rows[-1] += [_num(rec.get("psnr"), 2, rec.get("psnr_sem")), _num(rec.get("ssim"), 3, rec.get("ssim_sem"))]
        rows[-1] += [_num(rec.get("rfid")), _num(rec.get("lpips"), 3), _text(rec.get("evaluator"))]
        if rec.get("lpips_note"):
            notes.append(f"{_code(run.name)}: LPIPS {rec['lpips_note']}")
    return Section("Reconstruction", ([Table(header, rows)] if rows else []) + notes)


def _latents_section(runs: list[_Run], assets: _Assets) -> Section:
    header = ["Run", "probe acc. (test)", "probe acc. (train)", "feature dim", "GMM best K (BIC)", "PCA dims"]
    header += ["explained var.", "robustness γ"]
    sec, rows, curves = Section("Latent analysis"), [], {"nll": {}, "noise": {}, "mask": {}}
    for run in runs:
        if run.latents is None:
            if run.expects("latents"):
                sec.blocks.append(_note(run, "analysis/latent_analysis.json", "latent analysis"))
            continue
        probe, gmm, rob = (_sub(run.latents, k) for k in ("linear_probe", "gmm", "robustness"))
        rows.append([_code(run.name), _pct(probe.get("test_accuracy")), _pct(probe.get("train_accuracy"))])
        rows[-1] += [_text(probe.get("feature_dim")), _text(gmm.get("best_k_bic")), _text(gmm.get("pca_dims"))]
        rows[-1] += [_pct(gmm.get("explained_variance")), _text(rob.get("gamma"))]
        label = run.name if len(runs) > 1 else ""
        curves["nll"][label] = _points(gmm.get("rows"), "k", "nll")
        curves["noise"][label] = _points(rob.get("noise"), "tau", "psnr")
        curves["mask"][label] = _points(rob.get("mask"), "ratio", "psnr")
        for key in ("noise_strip", "mask_strip"):
            if rob.get(key) and (run.path / "analysis" / str(rob[key])).is_file():
                src = assets.copy(run.path / "analysis" / str(rob[key]), f"{key}-{run.slug}.png")
                sec.blocks.append(Image(src, f"{_code(run.name)}: analysis/{rob[key]}"))
            elif rob.get(key):
                sec.blocks.append(_note(run, f"analysis/{rob[key]}", key.replace("_", " ")))
    sec.blocks[:0] = [Table(header, rows)] if rows else []
    plots = (
        ("nll", "GMM components K", "NLL per image", "GMM NLL vs K (PCA of latents)"),
        ("noise", "noise level τ", "PSNR (dB)", "Decoding noised latents"),
        ("mask", "mask ratio", "PSNR (dB)", "Decoding masked latents"),
    )
    for key, xlabel, ylabel, title in plots:
        series = {label: xy for label, xy in curves[key].items() if xy[0]}
        if series:
            plot_lines(series, assets.path(f"latents-{key}.png"), xlabel, ylabel, title)
            sec.blocks.append(Image(f"latents-{key}.png", title))
    return sec


def _generation_section(runs: list[_Run], assets: _Assets) -> Section:
    sec, sweeps = Section("Generation"), {}
    for run in runs:
        gen = run.generation
        if gen is None:
            if run.expects("generation"):
                sec.blocks.append(_note(run, "eval/generation.json", "generation evaluation"))
            continue
        rows, final, best = _sweep_rows(gen.get("rows")), _sub(gen, "final") or None, gen.get("best_cfg")
        temp = gen.get("best_temperature")
        # a temperature column where any row was sampled at another temperature than 1 (an AR search)
        temps = any(_temperature(r) != 1.0 for r in rows + ([final] if final else []))
        header = ["cfg", *(["temperature"] if temps else []), "images", "FID", "IS", "precision", "recall"]
        header += ["class consistency", "samples"]
        sec.blocks.append(
            f"{_code(run.name)}: evaluator {_text(gen.get('evaluator'))}, reference {_text(gen.get('reference'))}, "
            f"seed {_text(gen.get('seed'))}, best cfg {_cfg(best)}"
            + (f" at temperature {_text(temp)}" if temps and temp is not None else "")
            + ("; the final evaluation in bold." if final else ".")
        )
        cells = []
        for r in rows + ([final] if final else []):
            cfg = _cfg(r.get("cfg")) + (" (final)" if r is final else "")
            cells.append([cfg, *([f"{_temperature(r)}"] if temps else []), _text(r.get("num"))])
            cells[-1] += [_num(r.get("fid")), _num(r.get("is"), 2, r.get("is_std"))]
            cells[-1] += [_num(r.get("precision")), _num(r.get("recall")), _pct(r.get("class_consistency"))]
            cells[-1] += [_text(r.get("samples"))]
        chosen = (best, 1.0 if temp is None else temp)
        highlight = (
            {len(rows)} if final else {i for i, r in enumerate(rows) if (r.get("cfg"), _temperature(r)) == chosen}
        )
        sec.blocks.append(Table(header, cells, frozenset(highlight)))
        sweeps[run.name if len(runs) > 1 else ""] = rows
        # Each .npz of samples has its grid beside it (same stem): one grid per evaluated setting, final first.
        shown = [r for r in ([final] if final else []) + rows if r.get("samples")]
        for i, r in enumerate(shown):
            grid = Path(str(r["samples"])).with_suffix(".png")
            at = f", temperature {_temperature(r)}" if temps else ""
            what = f"{'final, ' if r is final else ''}cfg {_cfg(r.get('cfg'))}{at}, {_text(r.get('num'))} samples"
            if (run.path / grid).is_file():
                src = assets.copy(run.path / grid, f"generation-samples-{run.slug}-{i}.png")
                sec.blocks.append(Image(src, f"{_code(run.name)}: {grid.name} ({what}; a row per class)"))
            else:
                sec.blocks.append(_note(run, str(grid), f"sample grid ({what})"))
    if any(sweeps.values()):
        plot_sweeps(sweeps, assets.path("generation-fid-vs-cfg.png"))
        sec.blocks.append(Image("generation-fid-vs-cfg.png", "FID and IS against the CFG scale"))
    return sec


# ---------------------------------------------------------------- entry point


def write_report(runs: list[str | Path], out_dir: str | Path, title: str | None = None) -> dict[str, Path]:
    """Write `out_dir/report.md` and `out_dir/report.html` for one run or a comparison of several.

    Every run file is optional (config.json, log.jsonl, samples/, eval-test.json, analysis/latent_analysis.json,
    eval/generation.json); a missing one gives a note naming the command that produces it. Plots and copied
    images are PNG files in `out_dir`, referenced by relative paths.

    Args:
        runs: Run directories (a single path is accepted too); each is shown under its directory name.
        out_dir: Output folder (created if needed).
        title: Page title; by default built from the run names.

    Returns:
        File name (relative to `out_dir`) → path, for the two pages and every image written.

    Raises:
        ValueError: No runs, a run path that is not a directory, or two runs with the same directory name.
        ImportError: matplotlib (the `eval` extra) is missing.
    """
    loaded = _load_runs(runs)
    _figure()  # fail on a missing matplotlib before writing anything
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    assets = _Assets(out)
    names = ", ".join(_code(r.name) for r in loaded)
    title = title or (f"detok report: {names}" if len(loaded) == 1 else f"detok comparison: {names}")
    builders = [_summary_section] if len(loaded) > 1 else []
    builders += [_runs_section, _training_section]
    for piece, build in (("recon", _recon_section), ("latents", _latents_section), ("generation", _generation_section)):
        # A comparison of generators needs no reconstruction section made only of "not produced" notes.
        if any(r.expects(piece) or getattr(r, piece) is not None for r in loaded):
            builders.append(build)
    when = datetime.now().astimezone().isoformat(timespec="seconds")
    intro = [f"Generated {when} by `detok.eval.report` from {len(loaded)} run(s)."]
    doc = Document(title, intro, [build(loaded, assets) for build in builders])
    (out / "report.md").write_text(render_markdown(doc), encoding="utf-8")
    (out / "report.html").write_text(render_html(doc), encoding="utf-8")
    return {"report.md": out / "report.md", "report.html": out / "report.html", **assets.written}
