"""Issue #36's table: the official DeTok code against detok on FMNIST-32 at the `cpu` budget, side by side.

    python benchmarks/upstream/table.py            # prints the markdown table of docs/results/upstream/README.md

Reads the committed results.json files of the suites that ran table2's steps (statistics, cache, SiT and MAR, scored
with and without CFG) on each kind of tokenizer, keyed by (training code, architecture, weights):

- official code, official architecture, raw weights: docs/results/upstream/cpu-official-raw{,-joint8,-joint9}
  (table2's steps on `detok convert`ed checkpoints of benchmarks/upstream/train_official.py, through
  `--set tokenizer_dirs=...`; the two joint seeds ran as runs of their own beside the first);
- detok's loop, official architecture: docs/results/arch-fmnist32 (`tokenizer=detok-fmnist32-official`);
- detok's loop, r2 architecture: docs/results/table2-r4.

Each cell shows the mean over the seeds that ran and, with two or more, ± half their range (max − min) / 2.
Nothing is rounded up; the JSON files hold every digit.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_RAW = "docs/results/upstream/cpu-official-raw"  # baseline seeds 8, 9; joint seeds 8 and 9 ran beside it
SOURCES = (
    (
        "official",
        "official",
        "raw",
        (f"{_RAW}/results.json", f"{_RAW}-joint8/results.json", f"{_RAW}-joint9/results.json"),
    ),
    ("detok", "official", "EMA", ("docs/results/arch-fmnist32/results.json",)),
    ("detok", "r2", "EMA", ("docs/results/table2-r4/results.json",)),
)
COLUMNS = (
    ("PSNR (dB)", ("tokenizer", "recon", "psnr"), 2),
    ("rFID", ("tokenizer", "recon", "rfid"), 2),
    ("SiT gFID (CFG)", ("sit", "eval", "final", "fid"), 2),
    ("SiT w/o CFG", ("sit", "eval", "no_cfg", "fid"), 2),
    ("SiT class cons.", ("sit", "eval", "final", "class_consistency"), 3),
    ("MAR gFID (CFG)", ("mar", "eval", "final", "fid"), 2),
    ("MAR w/o CFG", ("mar", "eval", "no_cfg", "fid"), 2),
    ("MAR class cons.", ("mar", "eval", "final", "class_consistency"), 3),
)


def _get(cell: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(cell, dict) or key not in cell:
            return None
        cell = cell[key]
    return cell


def _fmt(values: list[float], digits: int) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(max(values) - min(values)) / 2:.{digits}f}"


def rows() -> list[list[str]]:
    out = []
    for variant in ("baseline", "joint"):
        for code, arch, weights, sources in SOURCES:
            paths = [ROOT / s for s in sources if (ROOT / s).is_file()]
            cells = [c for p in paths for c in json.loads(p.read_text())["cells"] if c["variant"] == variant]
            cells = sorted({c["seed"]: c for c in cells}.values(), key=lambda c: c["seed"])  # one cell per seed
            seeds = ", ".join(str(c["seed"]) for c in cells) or "not run"
            values = [_fmt([v for c in cells if (v := _get(c, p)) is not None], d) for _, p, d in COLUMNS]
            out.append([variant, code, arch, weights, seeds, *values])
    return out


def main() -> None:
    head = ["tokenizer", "training code", "architecture", "weights", "seeds", *(c for c, _, _ in COLUMNS)]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows():
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
