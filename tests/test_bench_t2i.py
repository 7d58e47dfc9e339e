"""`detok bench reproduce --suite t2i` at the smoke budget: one text encoder, FID and text alignment, caption files."""

import hashlib
import json

import numpy as np
import pytest
from test_bench_reproduce import _smoke_args

from detok.bench.reproduce import BUDGETS, SUITES
from detok.cli import main as cli_main


@pytest.fixture(scope="module")
def t2i_run(tmp_path_factory):
    """The t2i suite at the smoke budget: attribute captions of the 3-class npz, the tiny offline text encoder, and
    T2I-SiT / T2I-MAR twins on the baseline and joint tokenizers (two seeds each)."""
    root = tmp_path_factory.mktemp("t2i")
    args = _smoke_args(root, "t2i")
    patch = pytest.MonkeyPatch()
    patch.setenv("DETOK_CACHE", str(root / "cache"))
    assert cli_main(args) == 0
    patch.undo()
    return root, args


def test_the_t2i_suite_trains_one_text_encoder_and_scores_fid_and_alignment(t2i_run):
    root, _ = t2i_run
    record, smoke = json.loads((root / "results" / "results.json").read_text()), BUDGETS["smoke"]
    assert [(c["variant"], c["seed"]) for c in record["cells"]] == [(v.name, s) for v in SUITES["t2i"] for s in v.seeds]
    assert record["text"]["captions"]["train"]["images"] == 36 and record["text"]["text_encoder"]["probe"]["images"]
    work = root / "work"
    for cell in record["cells"]:
        assert "sit" not in cell and "mar" not in cell
        for g in ("t2i_sit", "t2i_mar"):
            ev = cell[g]["eval"]
            assert [r["cfg"] for r in ev["rows"]] == list(smoke.search_cfgs)
            assert ev["final"]["num"] == smoke.t2i_final_num and ev["final"]["alignment_seen"] is not None
            assert set(ev["final"]["alignment"]) == {"all", "seen", "held_out"}
            assert ev["real"]["all"]["brightness"] == 1.0  # the test images measure as their own captions say
            run = work / f"{cell['variant']}-seed{cell['seed']}" / g
            config = json.loads((run / "config.json").read_text())
            assert (config["text_encoder"], config["captions"]) == (str(work / "text-encoder"), str(work / "captions"))
            with np.load(run / "eval" / ev["final"]["samples"]) as f:
                assert f["images"].shape == (smoke.t2i_final_num, 32, 32, 1) and "labels" not in f.files
                assert len(f["caption_index"]) == smoke.t2i_final_num and f["caption_index"].max() < len(f["captions"])
    table = (root / "results" / "results.md").read_text()
    assert "| T2I-SiT gFID | T2I-MAR gFID |" in table and "| aligned (seen) | aligned (held-out) |" in table
    assert "4.31" in table and "The test images against their own captions" in table
    # only the text-to-image protocol line: the class-conditional gFID protocol does not apply to these cells
    assert "- text-to-image: samples of the test images' captions" in table and "- gFID: CFG searched" not in table


def test_cells_record_the_text_encoder_they_used_and_the_table_flags_a_mix(t2i_run, tmp_path, monkeypatch):
    """The text encoder is trained once per work folder; a cell restored from a lost folder used that folder's copy.
    Each cell records its copy's digest; a restore whose cells used another copy than the one retrained now (as on
    another machine) is named in the table, never mixed silently."""
    root, args = t2i_run
    record = json.loads((root / "results" / "results.json").read_text())
    digest = hashlib.sha256((root / "work" / "text-encoder" / "model.safetensors").read_bytes()).hexdigest()[:16]
    assert {c["shared_models"]["text_encoder"] for c in record["cells"]} == {digest}
    assert "copies of the text encoder" not in (root / "results" / "results.md").read_text()

    earlier = tmp_path / "earlier.json"  # the last cell lost; the others made with another copy of the encoder
    cells = [{**c, "shared_models": {"text_encoder": "0" * 16}} for c in record["cells"][:-1]]
    earlier.write_text(json.dumps({**record, "cells": cells}))
    monkeypatch.setenv("DETOK_CACHE", str(root / "cache"))
    out = tmp_path / "results"
    assert cli_main([*args, "--restore", str(earlier), "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    table = (out / "results.md").read_text()
    last = record["cells"][-1]
    assert "the cells used 2 copies of the text encoder" in table
    assert f"`{digest}`: {last['variant']}-seed{last['seed']}" in table and f"`{'0' * 16}`: baseline-seed0" in table


def test_sampling_a_t2i_generator_from_a_caption_file(t2i_run, tmp_path, capsys):
    """One image per caption (or --num, the captions in turn); a caption longer than the encoder's context is cut at
    the end with a warning saying where; an empty caption file is one clear error."""
    root, _ = t2i_run
    run = root / "work" / "joint-seed0" / "t2i_sit"
    lines = ["a dark narrow plain 0", "a photo of a wide 1 that is bright and patterned" + " and bright" * 8]
    (tmp_path / "captions.txt").write_text("\n".join(lines) + "\n")
    base = ["generator", "sample", str(run), "--threads", "1", "--cfg", "2"]
    assert cli_main([*base, "--captions", str(tmp_path / "captions.txt"), "--out", str(tmp_path / "s.npz")]) == 0
    out = capsys.readouterr()
    assert (
        "1 of 2 captions are longer than the text encoder's context of 12 tokens and were truncated at the end (the "
        "first 12 words kept)" in out.err
    )
    assert json.loads(out.out.strip().splitlines()[-1])["truncated_captions"] == 1
    with np.load(tmp_path / "s.npz") as f:
        assert f["images"].shape == (2, 32, 32, 1) and f["captions"].tolist() == lines
        assert f["caption_index"].tolist() == [0, 1]
    args = [*base, "--captions", str(tmp_path / "captions.txt"), "--num", "5", "--out", str(tmp_path / "five.npz")]
    assert cli_main(args) == 0
    with np.load(tmp_path / "five.npz") as f:
        assert f["caption_index"].tolist() == [0, 1, 0, 1, 0]
    capsys.readouterr()
    (tmp_path / "empty.txt").write_text("")
    assert cli_main([*base, "--captions", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "e.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "caption file" in err and "is empty: write one caption per line" in err
    assert cli_main([*base, "--out", str(tmp_path / "n.npz")]) == 2
    assert "is text-conditioned: give --captions FILE" in capsys.readouterr().err


def test_eval_t2i_scores_fid_and_alignment_and_eval_generation_points_to_it(t2i_run, tmp_path, capsys):
    root, _ = t2i_run
    run = root / "work" / "baseline-seed0" / "t2i_mar"
    ref = ["--evaluator", f"reference:{root / 'ref'}", "--threads", "1"]
    args = ["eval", "t2i", str(run), "--cfg", "1,2", "--num", "6", "--final-num", "8", "--out", str(tmp_path)]
    assert cli_main([*args, *ref]) == 0
    out = capsys.readouterr().out
    assert "<- final" in out and "(the ceiling)" in out
    final = json.loads((tmp_path / "t2i.json").read_text())["final"]
    assert final["num"] == 8 and final["alignment"]["seen"]["num"] + final["alignment"]["held_out"]["num"] == 8
    assert cli_main(["eval", "generation", str(run), *ref, "--num", "6", "--final-num", "6", "--cfg", "1"]) == 2
    assert "evaluate it on captions with `detok eval t2i`" in capsys.readouterr().err
