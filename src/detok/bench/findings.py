"""The findings index, `docs/results/README.md`: beside the hand-written rows that compare each paper claim with what
detok measured, one block per suite run, written by `detok bench reproduce` between marker comments so that a rerun
replaces its own block and leaves the rest of the page alone.

A run writes into `OUT/results.md`; its block goes into `OUT/../README.md` when that file exists (the committed
index), under the name of OUT (`table2-r4`). A new run's block is inserted before `SUITES_END`, or appended.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from detok.bench.results import GENERATORS, _spread, summarize
from detok.bench.suites import BUDGETS

INDEX = "README.md"
SUITES_END = "<!-- suites end -->"
# What a budget trains, in the words the findings use: short (0.27 epoch of tokenizer training), 4x that, or long.
REGIMES = {"cpu": "short", "cpu-v1": "short", "cpu-long": "cpu-long", "quality": "quality", "smoke": "smoke test"}
# The fields that tell the named budgets apart (the rest are per-run choices: seeds, rows, generators).
_BUDGET_KEYS = ("tokenizer", "tokenizer_images", "sit_images", "mar_images", "search_num")


def begin_marker(name: str) -> str:
    return f"<!-- suite:{name} begin (written by `detok bench reproduce`; a rerun replaces it) -->"


def end_marker(name: str) -> str:
    return f"<!-- suite:{name} end -->"


def budget_name(budget: dict) -> str | None:
    """The named budget (`cpu`, `quality`, ...) a recorded budget is, by the fields that tell them apart."""
    from detok.config import to_dict

    for name, preset in BUDGETS.items():
        known = to_dict(preset)
        if all(budget.get(k) == known[k] for k in _BUDGET_KEYS):
            return name
    return None


def suite_block(record: dict, name: str) -> str:
    """The index block of one suite run: where it ran, its regime and seeds, and its tokenizers' numbers (the same
    figures, formatted the same way, as its results.md)."""
    rows, budget = summarize(record), budget_name(record["budget"])
    regime = REGIMES.get(budget, "unnamed budget") if budget else "unnamed budget"
    env = record["environment"]
    done, planned = len(record["cells"]), record.get("planned_cells", len(record["cells"]))
    seeds = sorted({c["seed"] for c in record["cells"]})
    gens = [g for g in GENERATORS if any(r[f"{g}_fid"] for r in rows)]
    header = ["tokenizer", "seeds", "rFID", "PSNR (dB)", *(f"{GENERATORS[g]} gFID" for g in gens)]
    no_cfg = [g for g in gens if any(r[f"{g}_fid_no_cfg"] for r in rows)]
    header += [f"{GENERATORS[g]} w/o CFG" for g in no_cfg]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        rfid = _spread(r["rfid"], ".2f") if None not in r["rfid"] else "—"
        cells = [r["variant"], ", ".join(map(str, r["seeds"])), rfid, _spread(r["psnr"], ".2f")]
        cells += [_spread(r[f"{g}_fid"], ".2f") for g in gens] + [_spread(r[f"{g}_fid_no_cfg"], ".2f") for g in no_cfg]
        table.append("| " + " | ".join(cells) + " |")
    partial = f" **partial: {done} of {planned} cells**;" if done < planned else ""
    lines = [
        begin_marker(name),
        f"**[{name}]({name}/results.md)** — suite `{record['suite']}`, budget `{budget or '?'}` (regime: {regime}), "
        f"seeds {', '.join(map(str, seeds))};{partial} {env['date']}, {env['machine']}; evaluator "
        f"`{record['evaluator']}`.",
        "",
        *table,
        end_marker(name),
    ]
    return "\n".join(lines)


def replace_block(text: str, name: str, block: str) -> str:
    """`text` with the block of `name` replaced by `block` (inserted before SUITES_END, or appended, if absent)."""
    pattern = re.compile(re.escape(begin_marker(name).split(" (")[0]) + r".*?" + re.escape(end_marker(name)), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    if SUITES_END in text:
        return text.replace(SUITES_END, f"{block}\n\n{SUITES_END}", 1)
    return text.rstrip("\n") + f"\n\n{block}\n"


def update_findings(record: dict, out_dir: str | Path) -> Path | None:
    """Write the block of the run in `out_dir` into the findings index beside it; None when there is no index."""
    out_dir = Path(out_dir)
    index = out_dir.parent / INDEX
    if not index.is_file() or not record.get("cells"):
        return None
    text = index.read_text()
    new = replace_block(text, out_dir.name, suite_block(record, out_dir.name))
    if new != text:
        fd, tmp = tempfile.mkstemp(dir=index.parent, prefix=f".{INDEX}.")
        with os.fdopen(fd, "w") as f:
            f.write(new)
        os.chmod(tmp, index.stat().st_mode & 0o777)
        os.replace(tmp, index)
    return index
