"""The findings index: a suite run writes its own block of docs/results/README.md between marker comments, and a
rerun replaces that block without touching the hand-written rows (issue 38 item 2)."""

from __future__ import annotations

import json

from detok.bench.findings import SUITES_END, begin_marker, budget_name, end_marker, update_findings
from detok.bench.suites import BUDGETS
from detok.config import to_dict

HAND_WRITTEN = """# Findings at a glance

| claim | paper | short | verdict |
|---|---|---|---|
| Table 2, SiT | 5.50 | 40.23 ± 2.40 | reproduced |

## Suite runs

{end}

## Notes kept by hand
"""


def _cell(variant: str, seed: int, rfid: float, sit: float) -> dict:
    final = {"fid": sit, "is": 3.0, "precision": 0.5, "recall": 0.1, "cfg": 3.0, "class_consistency": 0.4}
    return {
        "variant": variant,
        "seed": seed,
        "paper": {"SiT-B": 5.5},
        "preset": "detok-fmnist32",
        "tokenizer": {"recon": {"rfid": rfid, "psnr": 20.0 + seed, "code_usage": None}},
        "sit": {"eval": {"final": final, "no_cfg": {"fid": sit + 5}}},
    }


def _record(budget: str, cells: list[dict]) -> dict:
    return {
        "suite": "table2",
        "budget": to_dict(BUDGETS[budget]),
        "evaluator": "reference-9f94d1b9bf8f",
        "environment": {"date": "2026-12-07 10:00 UTC", "machine": "AMD EPYC, 2 cores, x86_64"},
        "planned_cells": 3,
        "cells": cells,
    }


def test_a_run_writes_its_block_and_a_rerun_replaces_only_that(tmp_path):
    index = tmp_path / "README.md"
    index.write_text(HAND_WRITTEN.format(end=SUITES_END))
    out = tmp_path / "table2-x"
    record = _record("cpu", [_cell("baseline", 0, 4.0, 43.0), _cell("joint", 0, 18.5, 40.25)])
    assert update_findings(record, out) == index
    text = index.read_text()
    block = text[text.index(begin_marker("table2-x")) : text.index(end_marker("table2-x"))]
    assert "suite `table2`, budget `cpu` (regime: short), seeds 0; **partial: 2 of 3 cells**" in block
    assert "| joint | 0 | 18.50 | 20.00 | 40.25 | 45.25 |" in block and "[table2-x](table2-x/results.md)" in block
    assert text.index(end_marker("table2-x")) < text.index(SUITES_END)  # new blocks go before the end marker
    assert text.startswith(HAND_WRITTEN.format(end="").split("\n\n\n")[0])

    record["cells"].append(_cell("baseline", 1, 6.0, 45.0))  # the rerun finishes the suite: the block is replaced
    update_findings(record, out)
    again = index.read_text()
    assert again.count(begin_marker("table2-x")) == 1 and "partial" not in again
    assert "| baseline | 0, 1 | 5.00 ± 1.00 (n=2) | 20.50 ± 0.50 (n=2) | 44.00 ± 1.00 (n=2) |" in again
    assert again.replace(again[again.index(begin_marker("table2-x")) : again.index(SUITES_END)], "") == (
        HAND_WRITTEN.format(end=SUITES_END)
    )
    update_findings(record, out)
    assert index.read_text() == again  # idempotent

    update_findings(_record("quality", [_cell("baseline", 0, 0.14, 2.46)]), tmp_path / "table2-q")
    both = index.read_text()
    assert both.index(end_marker("table2-x")) < both.index(begin_marker("table2-q")) < both.index(SUITES_END)
    assert "budget `quality` (regime: quality)" in both


def test_no_index_no_write_and_budgets_are_named(tmp_path):
    assert update_findings(_record("cpu", [_cell("baseline", 0, 4.0, 43.0)]), tmp_path / "out") is None
    assert list(tmp_path.iterdir()) == []
    for name in BUDGETS:
        assert budget_name(to_dict(BUDGETS[name])) == name
    assert budget_name(json.loads(json.dumps(to_dict(BUDGETS["cpu-long"])))) == "cpu-long"  # as read back from JSON
