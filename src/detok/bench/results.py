"""The results of a `detok bench reproduce` suite: the per-variant summary, `results.md` in the paper's layout (through
`eval/document`), `results.json` and the gFID bar plot.

Length (~460 lines): the summary, the Markdown table and the JSON of one suite read the same per-cell records; split
apart they would each re-derive the same fields.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from detok.checkpoint import write_json

# The budget's generators by the name a variant uses, with the label of their table column.
GENERATORS = {
    "sit": "SiT", "mar": "MAR", "dit": "DiT", "lightningdit": "LightningDiT", "randomar": "RandomAR",
    "rasterar": "RasterAR", "randomar_vq": "RandomAR (VQ)", "rasterar_vq": "RasterAR (VQ)",
    "sit_ft": "SiT ft from 32 px", "t2i_sit": "T2I-SiT", "t2i_mar": "T2I-MAR",
}  # fmt: skip
PAPER_COLUMNS = {k: v if k.endswith(("_vq", "_ft")) else f"{v}-B" for k, v in GENERATORS.items()}


@functools.lru_cache(maxsize=1)
def commit() -> str:
    """HEAD when the suite process first asked, i.e. the code it imported, even if commits land while it runs. Asked of
    the checkout detok was imported from, not of the working directory (a suite run from a work folder elsewhere
    recorded "unknown")."""
    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.strip()


def _cell_steps(cell: dict) -> list[dict]:
    """The done records of a cell's steps (a fine-tuned tokenizer's base training, a staged tokenizer's earlier
    stages and the second evaluator's rescoring included)."""
    steps = []
    for tok in (cell["tokenizer"], *cell["tokenizer"].get("retrained", [])):  # trained again for a later part
        steps += [tok[k] for k in ("base", "train", "recon", "cache") if k in tok] + tok.get("stages", [])[:-1]
    steps += [cell[g][k] for g in GENERATORS if g in cell for k in ("train", "eval")]
    return steps + [s["second"] for s in steps if isinstance(s.get("second"), dict) and "seconds" in s["second"]]


def _cell_commits(cell: dict) -> set[str]:
    return {s.get("commit", "unrecorded") for s in _cell_steps(cell)}


def _machine() -> str:
    """CPU model and core count (from /proc/cpuinfo where there is one), e.g. "AMD EPYC, 2 cores, x86_64"."""
    model = platform.processor() or ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{model or 'unknown CPU'}, {os.cpu_count()} cores, {platform.machine()}"


def environment() -> dict:
    """Where and with what code a suite ran: commit, machine, device, torch, date."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    return {
        "commit": commit(),
        "machine": _machine(),
        "device": device,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# --------------------------------------------------------------------------------------------------
# Results: table, plot, record
# --------------------------------------------------------------------------------------------------


def _seconds(cell: dict) -> float:
    """Wall-clock of a cell's steps; a fine-tuned cell also counts its base tokenizer. Steps shared with another
    cell of the work folder (`shared_from`) cost nothing here and are not counted."""
    return sum(s["seconds"] for s in _cell_steps(cell) if "shared_from" not in s)


def _total_seconds(record: dict) -> float:
    """Wall-clock of a run: each step once, so the base tokenizer that a fine-tuned cell and its base cell both
    list (the same training, told apart from another of its spec by `finished`) counts once."""
    steps = {}
    for cell in record["cells"]:
        for s in _cell_steps(cell):
            if "shared_from" not in s:
                steps[(s["finished"], s["seconds"]) if "finished" in s else id(s)] = s["seconds"]
    return sum(steps.values())


def _shared_note(cell: dict) -> str:
    """ ", steps shared with cell X: tokenizer, sit" for a cell that links to another cell's steps, else ""."""
    twin = cell["tokenizer"].get("shared_from")
    if twin is None:
        return ""
    names = ["tokenizer"] + [g for g in GENERATORS if g in cell and "shared_from" in cell[g]["train"]]
    return f", sharing {twin}'s {', '.join(names)} (the same settings; not counted here)"


def _spread(values: list[float], fmt: str) -> str:
    """One value, or the mean ± half the range over seeds (with the seed count); "—" for none."""
    if not values:
        return "—"
    if len(values) == 1:
        return format(values[0], fmt)
    half = (max(values) - min(values)) / 2
    return f"{format(float(np.mean(values)), fmt)} ± {format(half, fmt)} (n={len(values)})"


def _generators(record: dict) -> list[str]:
    """The generators scored in any cell of `record`, in GENERATORS order."""
    return [g for g in GENERATORS if any(g in cell for cell in record["cells"])]


def summarize(record: dict) -> list[dict]:
    """One row per tokenizer variant, seeds pooled: lists of the per-seed numbers."""
    rows: dict[str, dict] = {}
    for cell in record["cells"]:
        row = rows.setdefault(cell["variant"], {"variant": cell["variant"], "paper": cell["paper"], "seeds": []})
        row["seeds"].append(cell["seed"])
        row["preset"] = cell.get("preset")
        recon = cell["tokenizer"]["recon"]
        for key in ("rfid", "psnr", "code_usage"):
            row.setdefault(key, []).append(recon.get(key))
        for g in GENERATORS:
            for key in ("fid", "is", "precision", "recall", "cfg", "class_consistency"):
                row.setdefault(f"{g}_{key}", [])
                if g in cell:
                    row[f"{g}_{key}"].append(cell[g]["eval"]["final"].get(key))
            row.setdefault(f"{g}_temperature", [])  # of the final samples (1.0: a record from before the search)
            if g in cell:
                row[f"{g}_temperature"].append(cell[g]["eval"]["final"].get("temperature", 1.0))
            for key in ("alignment_seen", "alignment_held_out"):  # text-conditioned generators (eval/t2i.py)
                row.setdefault(f"{g}_{key}", [])
                if g in cell and cell[g]["eval"]["final"].get(key) is not None:
                    row[f"{g}_{key}"].append(cell[g]["eval"]["final"][key])
            row.setdefault(f"{g}_fid_no_cfg", [])
            if g in cell and cell[g]["eval"].get("no_cfg"):
                row[f"{g}_fid_no_cfg"].append(cell[g]["eval"]["no_cfg"]["fid"])
            second = cell[g]["eval"].get("second", {}).get("final") if g in cell else None
            for key in ("fid", "class_consistency"):
                row.setdefault(f"{g}_{key}_2", [])
                if second is not None:
                    row[f"{g}_{key}_2"].append(second.get(key))
        if "second" in recon:
            row.setdefault("rfid_2", []).append(recon["second"].get("rfid"))
    return list(rows.values())


def _guidance(scales: list[float], temperatures: list[float]) -> str:
    """The CFG scale of each seed's final samples, with its temperature where that is not 1: "3/1.5 (T 0.4/1)"."""
    text = "/".join(f"{c:g}" for c in scales)
    if any(t != 1.0 for t in temperatures):
        text += " (T " + "/".join(f"{t:g}" for t in temperatures) + ")"
    return text


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def rank_agreement(rows: list[dict], first: str, second: str) -> float | None:
    """Kendall's τ between the tokenizers' orders under two columns of per-seed values (row[first], row[second],
    compared by their means); None with fewer than two tokenizers scored by both. 1: the same ranking."""
    pairs = [(_mean(r.get(first, [])), _mean(r.get(second, []))) for r in rows]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if len(pairs) < 2:
        return None
    score = total = 0
    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            da, db = pairs[i][0] - pairs[j][0], pairs[i][1] - pairs[j][1]
            score += (da * db > 0) - (da * db < 0)
            total += 1
    return score / total


def _intro(record: dict) -> list[str]:
    env, budget = record["environment"], record["budget"]
    total = _total_seconds(record)
    done, planned = len(record["cells"]), record.get("planned_cells", len(record["cells"]))
    commits = {c[:8] for cell in record["cells"] for c in _cell_commits(cell)}
    command = f"`{record['command']}`" if record["command"] else "none (run from Python, `run_suite`)"
    lines = [
        "Generated by the command below; numbers are not edited. Spread: mean ± half the range over the tokenizer "
        "seeds (the generators train and sample with the same seeds in every cell, so their own run-to-run "
        "variation is not in it).",
        *(
            [
                f"**Partial: {done} of {planned} cells finished** — rerun the command to continue (add "
                "`--restore` with this results.json if its work folder is gone)."
            ]
            if done < planned
            else []
        ),
        f"- command: {command}",
        f"- commit {env['commit']}, {env['date']}, {env['device']} ({env['machine']}), torch {env['torch']}",
        f"- wall-clock: {total / 60:.1f} min over {len(record['cells'])} cells (sum of step times; an interrupted "
        "attempt counts up to the last file it wrote)",
        *([f"- **the cells ran on {len(commits)} commits**: {', '.join(sorted(commits))}"] if len(commits) > 1 else []),
        *_restored_note(record),
        *_parts_note(record),
        *_shared_models_note(record),
        f"- evaluator: {record['evaluator']} on {record['reference']} (Fashion-MNIST-32 reference classifier "
        "features; not Inception — not comparable with ImageNet FIDs)",
    ]
    generators = {g for cell in record["cells"] for g in cell if g in GENERATORS}
    if generators - {"t2i_sit", "t2i_mar"}:  # class-conditional generators (the t2i ones have their own line)
        lines.append(
            f"- gFID: CFG searched over {tuple(budget['search_cfgs'])} on {budget['search_num']} samples, best scale "
            f"reported on {budget['final_num']} fresh samples"
            + (
                f"; the AR generators search each scale at temperatures {budget['ar_search_temperatures']} (the "
                "final at the best pair)"
                if budget.get("ar_search_temperatures")
                else ""
            )
        )
    teacher = record.get("teacher")
    if teacher:
        probe = teacher.get("probe", {}).get("test_accuracy")
        lines.append(
            f"- teacher (every `{{teacher}}` of the suite): `{teacher['spec']['preset']}`, label-free, "
            + (f"linear-probe test accuracy {100 * probe:.2f}%, " if probe is not None else "")
            + f"trained once in {teacher['seconds'] / 60:.1f} min (not in the cells' times)"
        )
    if generators & {"t2i_sit", "t2i_mar"}:
        lines.append(
            f"- text-to-image: samples of the test images' captions, CFG searched on {budget['t2i_search_num']} and "
            f"the best scale reported on {budget['t2i_final_num']} fresh samples; FID against the test images"
        )
    return lines


def _shared_models_note(record: dict) -> list[str]:
    """A warning when the cells used different copies of a model the suite trains once per work folder (the teacher,
    the text encoder): a restored cell's came from its lost work folder. A cell recorded before these digests were
    (no `shared_models`) counts as "not recorded" in a suite that has the model."""
    lines = []
    for key, record_key, name in (("teacher", "teacher", "teacher"), ("text_encoder", "text", "text encoder")):
        by_digest: dict[str, list[str]] = {}
        for cell in record["cells"]:
            if "shared_models" in cell:
                digest = cell["shared_models"].get(key)
            else:
                digest = "not recorded" if record.get(record_key) else None
            if digest is not None:
                by_digest.setdefault(digest, []).append(f"{cell['variant']}-seed{cell['seed']}")
        if len(by_digest) > 1:
            lines.append(
                f"- **the cells used {len(by_digest)} copies of the {name}** (one per work folder; retrained with "
                "the same settings and seed, but not bitwise the same on another machine): "
                + "; ".join(f"`{d}`: {', '.join(cells)}" for d, cells in by_digest.items())
            )
    return lines


def _parts_note(record: dict) -> list[str]:
    """Lines for cells run in parts (the budget's `generators` selection): the generators a cell still lacks, and
    for each part added on a tokenizer trained again, whether its weights are those the first part used."""
    lines = []
    for cell in record["cells"]:
        name, tok = f"{cell['variant']}-seed{cell['seed']}", cell["tokenizer"]
        lacking = [GENERATORS.get(g, g) for g in cell.get("generators", []) if g not in cell]
        if lacking:
            lines.append(f"- {name} has not run {', '.join(lacking)} yet (a cell run in parts: `--set generators=...`)")
        for again in tok.get("retrained", []):
            added = ", ".join(GENERATORS.get(g, g) for g in again["for"])
            first, now = tok.get("digest"), again.get("digest")
            same = (
                "the same weights as the first training"
                if first == now
                else f"**other weights** than the first training (`{first or 'not recorded'}` then, `{now}` again)"
            )
            lines.append(
                f"- {name}: {added} added in a later session on its tokenizer trained again with the same settings "
                f"and seed — {same}; rFID {tok['recon'].get('rfid', float('nan')):.2f} then, "
                f"{again['recon'].get('rfid', float('nan')):.2f} again"
            )
    return lines


def _restored_note(record: dict) -> list[str]:
    """A line naming the cells kept from an earlier run's results (`--restore`), which ran in another session."""
    by_source: dict[str, list[str]] = {}
    for cell in record["cells"]:
        if "restored_from" in cell:
            by_source.setdefault(cell["restored_from"], []).append(f"{cell['variant']}-seed{cell['seed']}")
    return [
        f"- restored from `{source}` (an earlier run of the same settings; what it measured is kept as it was): "
        + ", ".join(cells)
        for source, cells in by_source.items()
    ]


def _second_evaluator_blocks(record: dict, rows: list[dict], gens: list[str]) -> list:
    """The table of the second evaluator (same reconstructions and samples, another classifier's features) and
    whether it ranks the tokenizers as the first does (Kendall's τ per column)."""
    from detok.eval.document import Table

    if not record.get("second_evaluator"):
        return []
    header = [
        "Tokenizer",
        "rFID",
        *(f"{GENERATORS[g]} gFID" for g in gens),
        *(f"{GENERATORS[g]} class cons." for g in gens),
    ]
    body = [
        [r["variant"], _spread([v for v in r.get("rfid_2", []) if v is not None], ".2f")]
        + [_spread([v for v in r[f"{g}_fid_2"] if v is not None], ".2f") for g in gens]
        + [_spread([v for v in r[f"{g}_class_consistency_2"] if v is not None], ".3f") for g in gens]
        for r in rows
    ]
    taus = [("rFID", rank_agreement(rows, "rfid", "rfid_2"))]
    taus += [(f"{GENERATORS[g]} gFID", rank_agreement(rows, f"{g}_fid", f"{g}_fid_2")) for g in gens]
    agreement = ", ".join(f"{name} {tau:+.2f}" for name, tau in taus if tau is not None) or "—"
    return [
        f"Second evaluator, {record['second_evaluator']} (another architecture and seed; the same reconstructions "
        "and the same final samples, at the CFG scale the first evaluator chose):",
        Table(header, body),
        f"Rank agreement between the two evaluators (Kendall's τ over the tokenizers; 1 = same order): {agreement}.",
    ]


def repository_of(path: str | Path) -> Path | None:
    """The git checkout that holds `path` (the nearest folder at or above it with a `.git`), if any."""
    path = Path(path).resolve()
    return next((p for p in (path, *path.parents) if (p / ".git").exists()), None)


def repo_relative(obj, root: Path | None):
    """`obj` (a JSON-like record) with every absolute path inside `root` written relative to it (`runs/x`), and
    every one beside it as `../other/x`, so that committed results name no folder of the machine that ran them."""
    if root is None:
        return obj
    if isinstance(obj, dict):
        return {k: repo_relative(v, root) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [repo_relative(v, root) for v in obj]
    if not isinstance(obj, str):
        return obj
    begins = r"(?<![\w./~-])"  # where a path may begin: at the start, or after a space, quote, `=` or `:`
    text = re.sub(begins + re.escape(str(root)) + r"(/|(?=$|[\s\"'`,;)\]]))", lambda m: "" if m[1] else ".", obj)
    if root.parent != root.parent.parent:  # a folder beside the checkout (never `/` itself)
        text = re.sub(begins + re.escape(str(root.parent)) + r"/(?=[\w.-])", "../", text)
    return text


def write_results(record: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, results.md (paper layout) and gfid.png (if matplotlib is installed) into `out_dir`; paths
    are written relative to the checkout that holds `out_dir` (`repo_relative`)."""
    from detok.eval.document import Document, Image, Section, Table, render_markdown

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = repo_relative(record, repository_of(out_dir))
    write_json(out_dir / "results.json", record)
    rows, gens = summarize(record), _generators(record)
    presets = len({r["preset"] for r in rows}) > 1
    codes = any(v is not None for r in rows for v in r["code_usage"])
    header = ["Tokenizer", *(["preset"] if presets else []), "rFID", "PSNR (dB)", *(["codes used"] if codes else [])]
    no_cfg = [g for g in gens if any(r[f"{g}_fid_no_cfg"] for r in rows)]
    header += [f"{GENERATORS[g]} gFID" for g in gens] + [f"{GENERATORS[g]} w/o CFG" for g in no_cfg]
    header += [f"paper {PAPER_COLUMNS[g]}" for g in gens]
    main = []
    for r in rows:
        rfid = _spread(r["rfid"], ".2f") if None not in r["rfid"] else "—"
        usage = _spread([v for v in r["code_usage"] if v is not None], ".3f")
        row = [r["variant"], *([f"`{r['preset']}`"] if presets else []), rfid, _spread(r["psnr"], ".2f")]
        row += [usage] if codes else []
        row += [_spread(r[f"{g}_fid"], ".2f") for g in gens] + [_spread(r[f"{g}_fid_no_cfg"], ".2f") for g in no_cfg]
        row += [str(r["paper"].get(PAPER_COLUMNS[g], "—")) for g in gens]
        main.append(row)
    details = [
        [r["variant"], GENERATORS[g], _guidance(r[f"{g}_cfg"], r[f"{g}_temperature"]), _spread(r[f"{g}_is"], ".2f"),
         _spread(r[f"{g}_precision"], ".3f"), _spread(r[f"{g}_recall"], ".3f"),
         _spread([v for v in r[f"{g}_class_consistency"] if v is not None], ".3f")]
        for r in rows for g in gens if r[f"{g}_fid"]
    ]  # fmt: skip
    cells = [
        f"- {c['variant']} seed {c['seed']}: `{c['run_dir']}`, {_seconds(c) / 60:.1f} min{_shared_note(c)}, commit "
        + ", ".join(sorted(x[:8] for x in _cell_commits(c)))
        for c in record["cells"]
    ]
    aligned = [g for g in gens if any(r[f"{g}_alignment_seen"] for r in rows)]
    real = next((c[g]["eval"]["real"] for c in record["cells"] for g in aligned if "real" in c[g]["eval"]), None)
    alignment = [
        [r["variant"], GENERATORS[g], _spread(r[f"{g}_alignment_seen"], ".3f"),
         _spread(r[f"{g}_alignment_held_out"], ".3f")]
        for r in rows for g in aligned if r[f"{g}_alignment_seen"]
    ]  # fmt: skip
    blocks = [
        Table(header, main),
        *(
            [
                Table(
                    ["Tokenizer", "generator", "CFG (temperature)", "IS", "precision", "recall", "class consistency"],
                    details,
                )
            ]
            if details
            else []
        ),  # fmt: skip
        *(
            [
                "Text alignment (eval/t2i.py): the share of final samples whose class and measured attribute levels "
                "are those their caption names, for caption combinations seen in training and held out from it:",
                Table(["Tokenizer", "generator", "aligned (seen)", "aligned (held-out)"], alignment),
                *(
                    [
                        f"The test images against their own captions (the ceiling: the classifier's accuracy on them): "
                        f"{real['seen']['alignment']:.3f} seen, {real['held_out']['alignment']:.3f} held-out. Chance "
                        "for the attributes alone: 1/18."
                    ]
                    if real and real["held_out"]["alignment"] is not None
                    else []
                ),
            ]
            if alignment
            else []
        ),
        *_second_evaluator_blocks(record, rows, gens),
        "Per cell (run directories keep checkpoints and the samples as .npz):",
        *cells,
    ]
    paths = {"json": out_dir / "results.json", "md": out_dir / "results.md"}
    if details and _plot(rows, gens, out_dir / "gfid.png") is not None:  # no plot before a generator has run
        blocks.append(Image("gfid.png", "gFID per tokenizer"))
        paths["png"] = out_dir / "gfid.png"
    doc = Document(f"detok bench reproduce --suite {record['suite']}", _intro(record), [Section("Results", blocks)])
    paths["md"].write_text(render_markdown(doc))
    return paths


def _plot(rows: list[dict], gens: list[str], path: Path) -> Path | None:
    """Grouped bars of gFID per tokenizer, one bar per generator (error bars: half the seed range)."""
    try:
        from detok.eval.report import plot_bars
    except ImportError:
        return None
    groups = {GENERATORS[g]: [(r["variant"], r[f"{g}_fid"]) for r in rows if r[f"{g}_fid"]] for g in gens}
    try:
        return plot_bars(groups, path, "gFID (reference features)")
    except ImportError:
        return None
