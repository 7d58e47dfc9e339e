"""`detok bench reproduce` at the smoke budget: every cell runs, the table is written, reruns resume."""

import json
import os
import shutil
import time

import numpy as np
import pytest
import torch

from detok.bench.reproduce import BUDGETS, SUITES, parse_budget
from detok.bench.results import _guidance, _seconds, _total_seconds, write_results
from detok.checkpoint import save_model_folder
from detok.cli import main as cli_main
from detok.eval.reference import ReferenceNet, ReferenceNetConfig


def _smoke_args(root, suite: str) -> list[str]:
    """CLI arguments running `suite` at the smoke budget on a 3-class npz (written into `root`), scored by an untrained
    tiny reference classifier."""
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (48, 32, 32), dtype=np.uint8), np.arange(48) % 3
    np.savez(
        root / "d.npz",
        images_train=images[:36],
        labels_train=labels[:36],
        images_test=images[36:],
        labels_test=labels[36:],
    )
    torch.manual_seed(0)
    save_model_folder(root / "ref", ReferenceNet(ReferenceNetConfig(widths=(4, 8), feature_dim=8, num_classes=3)))
    data = json.dumps(["name=npz", f"root={root / 'd.npz'}"])
    train = json.dumps(["train.progress=false", "train.threads=1", "train.batch_size=8", "train.sample_every=1000"])
    args = ["bench", "reproduce", "--suite", suite, "--budget", "smoke", "--set", f"data={data}"]
    args += ["--set", f"train={train}", "--evaluator", f"reference:{root / 'ref'}", "--threads", "1"]
    return args + ["--out", str(root / "results"), "--work", str(root / "work")]


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    """The table2 suite at the smoke budget on a 3-class npz, scored by an untrained tiny reference classifier."""
    root = tmp_path_factory.mktemp("bench")
    args = _smoke_args(root, "table2")
    patch = pytest.MonkeyPatch()
    patch.setenv("DETOK_CACHE", str(root / "cache"))
    assert cli_main(args) == 0
    patch.undo()
    return root, args


def test_every_cell_is_run_with_the_same_budget(suite_run):
    root, _ = suite_run
    record = json.loads((root / "results" / "results.json").read_text())
    expected = [(v.name, s) for v in SUITES["table2"] for s in v.seeds]
    assert [(c["variant"], c["seed"]) for c in record["cells"]] == expected
    assert len({c["seed"] for c in record["cells"] if c["variant"] in ("baseline", "joint")}) == 2
    scale = {v.name: v.tokenizer_scale for v in SUITES["table2"]}
    for cell in record["cells"]:
        overrides = cell["tokenizer"]["train"]["overrides"]
        assert (
            f"train.images={scale[cell['variant']] * BUDGETS['smoke'].tokenizer_images}" in overrides
            and f"train.seed={cell['seed']}" in overrides
        )
        for g in ("sit", "mar"):
            ev = cell[g]["eval"]
            assert ev["no_cfg"]["num"] == BUDGETS["smoke"].no_cfg_num and ev["no_cfg"]["cfg"] == 1.0
            temperatures = [r["temperature"] for r in ev["no_cfg_rows"]]
            assert temperatures == (list(BUDGETS["smoke"].no_cfg_temperatures) if g == "mar" else [1.0])
            # the AR generators search every scale at each temperature, the others at 1.0 only
            temperatures = BUDGETS["smoke"].ar_search_temperatures if g == "mar" else (1.0,)
            searched = [(r["temperature"], r["cfg"]) for r in ev["rows"]]
            assert searched == [(t, c) for t in temperatures for c in BUDGETS["smoke"].search_cfgs]
            assert cell[g]["eval"]["spec"].get("temperatures") == (list(temperatures) if g == "mar" else None)
            best = min(ev["rows"], key=lambda r: r["fid"])
            assert (ev["final"]["temperature"], ev["final"]["cfg"]) == (best["temperature"], best["cfg"])
            assert ev["final"]["num"] == BUDGETS["smoke"].final_num
            npz = root / "work" / f"{cell['variant']}-seed{cell['seed']}" / g / "eval" / ev["final"]["samples"]
            with np.load(npz) as f:
                assert f["images"].shape == (BUDGETS["smoke"].final_num, 32, 32, 1)
    joint = next(c for c in record["cells"] if c["variant"] == "joint")
    assert "model.corruption.noise_gamma=3" in joint["tokenizer"]["train"]["overrides"]
    config = json.loads((root / "work" / "joint-seed0" / "tokenizer" / "config.json").read_text())
    assert config["model"]["corruption"]["noise_gamma"] == 3 and config["model"]["corruption"]["mask_max"] == 0.7


def test_table_is_in_the_papers_layout(suite_run):
    root, _ = suite_run
    record = json.loads((root / "results" / "results.json").read_text())
    table = (root / "results" / "results.md").read_text()
    # expected cells straight from the per-cell records (not through `summarize`, which the table is made with)
    cells = {(c["variant"], c["seed"]): c for c in record["cells"]}
    masking = cells["masking", 0]["tokenizer"]["recon"]
    header = (
        "| Tokenizer | rFID | PSNR (dB) | SiT gFID | MAR gFID | SiT w/o CFG | MAR w/o CFG | paper SiT-B | paper MAR-B |"
    )
    assert header in table
    assert f"| masking | {masking['rfid']:.2f} | {masking['psnr']:.2f} |" in table
    a, b = (cells["baseline", seed]["sit"]["eval"]["final"]["fid"] for seed in (0, 1))
    assert a != b  # two tokenizer seeds, two numbers: the spread below is not trivially 0
    assert f"{(a + b) / 2:.2f} ± {abs(a - b) / 2:.2f} (n=2)" in table
    assert "| joint |" in table and "6.97" in table and record["environment"]["commit"]
    assert "Partial" not in table and "commits**" not in table  # one commit ran every step
    assert "- gFID: CFG searched over" in table and "- text-to-image:" not in table
    assert all(c["tokenizer"]["train"]["commit"] == record["environment"]["commit"] for c in record["cells"])
    assert f"- command: `{record['command']}`" in table and "detok bench reproduce" in record["command"]
    from_python = write_results({**record, "command": ""}, root / "from-python")
    assert "- command: none (run from Python" in from_python["md"].read_text()


def test_an_unfinished_run_is_labelled_partial(suite_run, tmp_path):
    root, _ = suite_run
    record = json.loads((root / "results" / "results.json").read_text())
    cells = json.loads(json.dumps(record["cells"][:2]))
    cells[1]["mar"]["eval"]["commit"] = "0123456789abcdef"  # as if resumed from another checkout
    table = write_results(dict(record, cells=cells), tmp_path)["md"].read_text()
    assert "**Partial: 2 of 7 cells finished**" in table
    assert "**the cells ran on 2 commits**" in table and "01234567" in table


def test_rerun_resumes_from_finished_steps(suite_run, monkeypatch):
    root, args = suite_run
    before = json.loads((root / "results" / "results.json").read_text())
    marker = root / "work" / "noise-seed0" / "mar" / "eval" / "done.json"
    marker.unlink()  # as if interrupted during the last-but-two cell's MAR evaluation
    # the interrupted attempt started 100 s ago and last wrote a file 40 s ago: it ran for (at least) 60 s
    now = time.time()
    (marker.parent / "attempt.json").write_text(json.dumps({"started": now - 100, "earlier_seconds": 0.0}))
    for f in marker.parent.rglob("*"):
        if f.is_file() and f.name != "attempt.json":
            os.utime(f, (now - 40, now - 40))

    def refuse(*a, **k):
        raise AssertionError("finished training must not run again")

    monkeypatch.setattr("detok.training.tokenizer.train_tokenizer", refuse)
    monkeypatch.setattr("detok.training.generator.train_generator", refuse)
    monkeypatch.setenv("DETOK_CACHE", str(root / "cache"))
    assert cli_main(args) == 0
    after = json.loads((root / "results" / "results.json").read_text())
    cell = next(c for c in after["cells"] if c["variant"] == "noise")
    old = next(c for c in before["cells"] if c["variant"] == "noise")
    assert cell["mar"]["eval"]["final"]["fid"] == old["mar"]["eval"]["final"]["fid"]  # samples reused, same score
    done = json.loads(marker.read_text())
    assert done["interrupted_seconds"] == pytest.approx(60, abs=1) and done["seconds"] >= done["interrupted_seconds"]
    assert not (marker.parent / "attempt.json").exists()
    assert "interrupted_seconds" not in json.loads((marker.parent.parent / "done.json").read_text())
    assert [c["tokenizer"] for c in after["cells"]] == [c["tokenizer"] for c in before["cells"]]


def test_a_changed_budget_is_refused_not_mixed(suite_run, monkeypatch, capsys):
    root, args = suite_run
    monkeypatch.setenv("DETOK_CACHE", str(root / "cache"))
    assert cli_main([*args, "--set", "mar_images=24"]) == 2
    err = capsys.readouterr().err
    assert "baseline-seed0/mar was made with" in err and "another --work folder" in err


def test_a_lost_work_folder_is_restored_from_its_results_and_only_unfinished_cells_run(
    suite_run, tmp_path, monkeypatch, capsys
):
    """`--restore`: the finished cells of an earlier run's results.json are kept (a later session whose work folder
    is gone runs only what is missing); a results file of other settings is refused."""
    import detok.training.tokenizer as tokenizer_training

    root, args = suite_run
    before = json.loads((root / "results" / "results.json").read_text())
    earlier = tmp_path / "earlier.json"  # as if the session ended during the last cell
    stale = {**before["cells"][0], "paper": {}}  # written before the suite had the paper's numbers for this row
    earlier.write_text(json.dumps({**before, "cells": [stale, *before["cells"][1:-1]]}))
    trained, train = [], tokenizer_training.train_tokenizer
    monkeypatch.setattr(tokenizer_training, "train_tokenizer", lambda cfg, run: (trained.append(run), train(cfg, run)))
    monkeypatch.setenv("DETOK_CACHE", str(root / "cache"))
    out, work = tmp_path / "results", tmp_path / "work"
    assert cli_main([*args, "--restore", str(earlier), "--out", str(out), "--work", str(work)]) == 0
    after = json.loads((out / "results.json").read_text())
    last = before["cells"][-1]
    assert [p.parent.name for p in trained] == [f"{last['variant']}-seed{last['seed']}"]  # only the missing cell
    assert sorted(p.name for p in work.iterdir()) == [f"{last['variant']}-seed{last['seed']}"]
    for old, new in zip(before["cells"][:-1], after["cells"][:-1], strict=True):
        assert new.pop("restored_from") == str(earlier) and new == old
    assert "restored_from" not in after["cells"][-1] and len(after["cells"]) == len(before["cells"])
    table = (out / "results.md").read_text()
    assert f"restored from `{earlier}`" in table and "Partial" not in table
    assert cli_main([*args, "--set", "mar_images=24", "--restore", str(earlier), "--work", str(work)]) == 2
    assert "another budget (mar_images: 16 then, 24 now)" in capsys.readouterr().err
    assert cli_main([*args, "--restore", str(tmp_path / "none.json"), "--work", str(work)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_every_table_written_during_a_restored_run_holds_all_restored_cells(suite_run, tmp_path, monkeypatch):
    """A session can end in the middle of a restored run: the results.json it leaves must still hold every restored
    cell (not only those before the cell that was running), and the cells keep the suite's order."""
    import detok.bench.reproduce as reproduce

    root, args = suite_run
    before = json.loads((root / "results" / "results.json").read_text())
    earlier = tmp_path / "earlier.json"  # the first cell lost, the ones after it finished
    earlier.write_text(json.dumps({**before, "cells": before["cells"][1:]}))
    written, write = [], reproduce.write_results
    monkeypatch.setattr(
        reproduce,
        "write_results",
        lambda r, out: (written.append([(c["variant"], c["seed"]) for c in r["cells"]]), write(r, out))[1],
    )
    monkeypatch.setenv("DETOK_CACHE", str(root / "cache"))
    assert (
        cli_main([*args, "--restore", str(earlier), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w")]) == 0
    )
    order = [(c["variant"], c["seed"]) for c in before["cells"]]
    assert written == [order[1:], order]  # restored ones at once, then the missing first cell in its place


def test_a_budget_runs_only_its_rows_and_seeds_and_a_restore_keeps_the_rest(suite_run, tmp_path, monkeypatch, capsys):
    """`rows` / `max_seeds` choose the cells a budget runs (the quality budget affords two of table2's seven); they
    are not cell settings, so a restore across them keeps every earlier cell, and a budget field added since an
    earlier results.json was written, at its default, does not stop that file from being restored."""
    import detok.training.tokenizer as tokenizer_training

    root, args = suite_run
    before = json.loads((root / "results" / "results.json").read_text())
    trained, train = [], tokenizer_training.train_tokenizer
    monkeypatch.setattr(tokenizer_training, "train_tokenizer", lambda cfg, run: (trained.append(run), train(cfg, run)))
    monkeypatch.setenv("DETOK_CACHE", str(root / "cache"))
    select = ["--set", 'rows=["noise", "joint"]', "--set", "max_seeds=1"]
    out, work = tmp_path / "results", tmp_path / "work"
    assert cli_main([*args, *select, "--out", str(out), "--work", str(work)]) == 0
    record = json.loads((out / "results.json").read_text())
    assert [(c["variant"], c["seed"]) for c in record["cells"]] == [("noise", 0), ("joint", 0)]
    assert record["planned_cells"] == 2 and [p.parent.name for p in trained] == ["noise-seed0", "joint-seed0"]

    earlier = tmp_path / "earlier.json"  # the full smoke table, written before `rows` and `max_seeds` existed
    old = {**before, "budget": {k: v for k, v in before["budget"].items() if k not in ("rows", "max_seeds")}}
    earlier.write_text(json.dumps(old))
    trained.clear()
    out2 = tmp_path / "results2"
    assert (
        cli_main([*args, *select, "--restore", str(earlier), "--out", str(out2), "--work", str(tmp_path / "w2")]) == 0
    )
    after = json.loads((out2 / "results.json").read_text())
    assert trained == [] and after["planned_cells"] == len(before["cells"])
    assert sorted((c["variant"], c["seed"]) for c in after["cells"]) == sorted(
        (c["variant"], c["seed"]) for c in before["cells"]
    )
    assert all(c["restored_from"] == str(earlier) for c in after["cells"])
    assert "outside this budget's rows/seeds" in capsys.readouterr().out

    assert cli_main([*args, "--set", 'rows=["joint", "jiont"]', "--work", str(tmp_path / "w3")]) == 2
    assert "budget rows ['jiont'] are not variants of the table2 suite" in capsys.readouterr().err


def test_a_cell_runs_in_parts_across_sessions_on_a_tokenizer_trained_again(suite_run, tmp_path, monkeypatch, capsys):
    """`generators` runs a part of a cell (the tokenizer alone, or some of its generators) when the whole does not fit
    one session; a later run with `--restore` adds the rest, training the tokenizer again where the work folder is
    gone, and the table says whether the weights came out the same."""
    import detok.training.tokenizer as tokenizer_training
    from detok.bench.reproduce import unfinished_cells

    root, args = suite_run
    trained, train = [], tokenizer_training.train_tokenizer
    monkeypatch.setattr(tokenizer_training, "train_tokenizer", lambda cfg, run: (trained.append(run), train(cfg, run)))
    monkeypatch.setenv("DETOK_CACHE", str(root / "cache"))
    select = ['rows=["baseline"]', "max_seeds=1"]
    run = [*args, *(x for s in select for x in ("--set", s))]

    def part(n: int, generators: str, restore: str | None, work: str) -> dict:
        extra = ["--set", f"generators={generators}", "--out", str(tmp_path / f"r{n}"), "--work", str(tmp_path / work)]
        assert cli_main([*run, *extra, *(["--restore", restore] if restore else [])]) == 0
        return json.loads((tmp_path / f"r{n}" / "results.json").read_text())

    first = part(1, "[]", None, "w1")  # the tokenizer alone
    (cell,) = first["cells"]
    assert (
        "sit" not in cell and "mar" not in cell and cell["generators"] == ["sit", "mar"] and cell["tokenizer"]["digest"]
    )
    table = (tmp_path / "r1" / "results.md").read_text()
    assert "baseline-seed0 has not run SiT, MAR yet" in table and "| baseline |" in table
    assert "| class consistency |" not in table and "gfid.png" not in table  # no empty generator table or plot
    assert unfinished_cells("table2", parse_budget("smoke", select), first["cells"]) == ["baseline-seed0: sit, mar"]

    second = part(2, '["sit"]', str(tmp_path / "r1" / "results.json"), "w2")  # a new session: w1 is gone
    (cell,) = second["cells"]
    assert "sit" in cell and "mar" not in cell and [p.parent.name for p in trained] == ["baseline-seed0"] * 2
    (again,) = cell["tokenizer"]["retrained"]
    assert again["for"] == ["sit"] and again["digest"] == cell["tokenizer"]["digest"]  # one thread, same seed: alike
    table = (tmp_path / "r2" / "results.md").read_text()
    assert "SiT added in a later session on its tokenizer trained again" in table and "the same weights" in table
    assert "has not run MAR yet" in table
    assert unfinished_cells("table2", parse_budget("smoke", select), second["cells"]) == ["baseline-seed0: mar"]

    third = part(3, "null", str(tmp_path / "r2" / "results.json"), "w2")  # the same session: w2's tokenizer is kept
    (cell,) = third["cells"]
    assert "mar" in cell and len(cell["tokenizer"]["retrained"]) == 1 and len(trained) == 2
    assert unfinished_cells("table2", parse_budget("smoke", select), third["cells"]) == []
    assert "yet (a cell run in parts" not in (tmp_path / "r3" / "results.md").read_text()

    other = {**cell, "tokenizer": {**cell["tokenizer"], "digest": "0" * 16}}  # as if another machine's first training
    table = write_results({**third, "cells": [other]}, tmp_path / "r4")["md"].read_text()
    assert f"**other weights** than the first training (`{'0' * 16}` then, `{again['digest']}` again)" in table

    assert cli_main([*run, "--set", 'generators=["dit"]', "--work", str(tmp_path / "w5")]) == 2
    assert "budget generators ['dit'] are not generators of the table2 suite" in capsys.readouterr().err


def test_bad_budget_and_suite_names(capsys, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown budget"):
        parse_budget("huge", [])
    assert parse_budget("cpu", ["final_num=5000"]).final_num == 5000
    assert cli_main(["bench", "reproduce", "--suite", "noise", "--budget", "huge"]) == 2
    assert "unknown budget" in capsys.readouterr().err


def test_the_long_budget_is_four_times_the_cpu_training_with_the_same_evaluation_and_the_baseline_joint_suite():
    cpu, long = BUDGETS["cpu"], BUDGETS["cpu-long"]
    trained = ["tokenizer_images", "cache_images", *(f"{g}_images" for g in ("sit", "mar", "dit", "lightningdit",
               "randomar", "rasterar"))]  # fmt: skip
    assert all(getattr(long, f) == 4 * getattr(cpu, f) for f in trained)
    evaluation = ["stats_images", "recon_images", "search_num", "final_num", "no_cfg_num", "search_cfgs",
                  "sit_sampling", "mar_sampling", "seed_offset"]  # fmt: skip
    assert all(getattr(long, f) == getattr(cpu, f) for f in evaluation)
    table2 = {v.name: v for v in SUITES["table2"]}
    assert SUITES["baseline-joint"] == (table2["baseline"], table2["joint"])  # the same cells, so shared with table2


def test_the_table_names_a_final_temperature_other_than_one():
    assert _guidance([3.0, 1.5], [1.0, 1.0]) == "3/1.5"  # the paper's protocol: no temperature shown
    assert _guidance([3.0, 1.5], [0.4, 1.0]) == "3/1.5 (T 0.4/1)"
    assert BUDGETS["quality"].ar_search_temperatures and not BUDGETS["cpu"].ar_search_temperatures


def test_a_base_tokenizer_listed_by_its_fine_tuned_cell_counts_once_in_the_runs_time():
    step = lambda seconds, finished: {"seconds": seconds, "finished": finished}  # noqa: E731
    base = {"tokenizer": {"train": step(60.0, 1.0), "recon": step(6.0, 2.0)}}
    tuned = {"tokenizer": {"base": step(60.0, 1.0), "train": step(30.0, 3.0), "recon": step(6.0, 4.0)}}
    other = {"tokenizer": {"train": step(60.0, 5.0)}}  # the same spec and time, trained again: another step
    assert _seconds(tuned) == 96.0  # the cell alone needs its base
    assert _total_seconds({"cells": [base, tuned, other]}) == 66.0 + 36.0 + 60.0
    assert _total_seconds({"cells": [tuned]}) == 96.0  # a base cell outside the run: its training counts here


def test_the_ablation_suites_are_the_papers():
    """noise: no masking; mask: no noise; generators: baseline vs joint under all six generators."""
    noise, mask, modes = SUITES["noise"], SUITES["mask"], SUITES["mask-mode"]
    assert all("model.corruption.mask_max=0" in v.overrides for v in noise)
    gammas = {o for v in noise for o in v.overrides if "noise_gamma" in o}
    assert gammas == {f"model.corruption.noise_gamma={g}" for g in (0, 1, 3, 5)}
    additive = next(v for v in noise if "model.corruption.noise_form=additive" in v.overrides)
    assert "model.corruption.noise_gamma=1" in additive.overrides  # Fig. 2a compares the two forms at γ = 1
    assert any(v.overrides == additive.overrides[:2] for v in noise)  # … beside interpolative γ = 1
    assert any("tau_dist=logit_normal" in o for v in noise for o in v.overrides)
    table2 = {v.name: v.paper for v in SUITES["table2"]}  # Table 2, "+Extended" from Sec. 5.1.3's text
    assert table2 == {"baseline": {"MAR-B": 3.31, "SiT-B": 6.97}, "masking": {"MAR-B": 2.90, "SiT-B": 6.43},
                      "noise": {"MAR-B": 2.77, "SiT-B": 5.56}, "joint": {"MAR-B": 2.65, "SiT-B": 5.50},
                      "joint-extended": {"MAR-B": 2.43, "SiT-B": 5.13}}  # fmt: skip
    paper = {v.name: v.paper for v in noise if v.paper}  # Table 1: baseline, uniform τ, logit-normal(0.8) τ at γ = 3
    assert paper == {"g0": {"MAR-B": 3.31, "SiT-B": 6.97}, "interp-g3": {"MAR-B": 2.77, "SiT-B": 5.56},
                     "interp-g3-logitnormal": {"MAR-B": 2.58, "SiT-B": 5.44}}  # fmt: skip
    assert all("model.corruption.noise_gamma=0" in v.overrides for v in (*mask, *modes))
    assert [v.name for v in mask] == ["m0", "m0.3", "m0.5", "m0.7", "m0.9"]
    assert modes[2].finetune_from == "constant-0.7" and modes[2].overrides == modes[1].overrides
    assert modes[3].finetune_from == "random-0.7" and modes[3].overrides == modes[0].overrides  # the control
    assert all(len(v.generators) == 6 for v in SUITES["generators"])


def test_followup_fine_tunes_the_suites_own_tokenizers_and_scores_sit_only(suite_run, tmp_path, monkeypatch):
    from detok.checkpoint import load_tokenizer

    root, args = suite_run
    monkeypatch.setenv("DETOK_CACHE", str(root / "cache"))
    base = root / "work" / "joint-seed0" / "tokenizer"
    before = (base / "done.json").read_text()
    follow = [("table2-followup" if a == "table2" else a) for a in args]
    follow[follow.index("--out") + 1] = str(tmp_path)  # same --work: the table2 tokenizers are reused
    assert cli_main(follow) == 0
    assert (base / "done.json").read_text() == before  # the base tokenizer was not trained again
    cells = {(c["variant"], c["seed"]): c for c in json.loads((tmp_path / "results.json").read_text())["cells"]}
    assert {v for v, _ in cells} == {"baseline-ft", "joint-ft", "baseline-2x", "joint-2x"}
    ft = cells["joint-ft", 0]
    assert ft["tokenizer"]["base"] == json.loads(before) and "mar" not in ft and "sit" in ft
    assert "decoder_finetune=true" in ft["tokenizer"]["train"]["overrides"]
    # decoder fine-tuning: the encoder is the base's, the decoder has moved
    tuned, original = load_tokenizer(root / "work" / "joint-ft-seed0" / "tokenizer"), load_tokenizer(base)
    assert torch.equal(tuned.patch_embed.weight, original.patch_embed.weight)
    assert not torch.equal(tuned.dec_head.weight, original.dec_head.weight)
    doubled = cells["baseline-2x", 0]["tokenizer"]["train"]["overrides"]
    assert f"train.images={2 * BUDGETS['smoke'].tokenizer_images}" in doubled
    table = (tmp_path / "results.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| Tokenizer | rFID"))
    assert "SiT gFID" in header and "MAR" not in header  # SiT only: no MAR column
    assert "| joint-ft | MAR |" not in table and "| joint-ft | SiT |" in table


def test_seed_offset_trains_new_seeds_in_their_own_cells(suite_run, tmp_path, monkeypatch):
    root, args = suite_run
    monkeypatch.setenv("DETOK_CACHE", str(root / "cache"))
    again = [*args, "--set", "seed_offset=2"]
    again[again.index("--out") + 1], again[again.index("--work") + 1] = str(tmp_path / "out"), str(tmp_path / "work")
    assert cli_main(again) == 0
    cells = json.loads((tmp_path / "out" / "results.json").read_text())["cells"]
    assert [(c["variant"], c["seed"]) for c in cells] == [(v.name, s + 2) for v in SUITES["table2"] for s in v.seeds]
    assert all(f"train.seed={c['seed']}" in c["tokenizer"]["train"]["overrides"] for c in cells)
    assert (tmp_path / "work" / "joint-seed3" / "tokenizer").is_dir()
    with pytest.raises(ValueError, match="seed_offset"):
        parse_budget("smoke", ["seed_offset=-1"])


def test_a_suite_in_the_same_work_folder_shares_the_cells_another_suite_already_made(suite_run, tmp_path, monkeypatch):
    """The noise suite's g0 and interp-g3 are table2's baseline and noise cells (same overrides, seed and budget):
    run in table2's work folder they link to those cells' steps, train nothing again and are not charged for them;
    a generator trained with other settings is not shared."""
    import detok.training.tokenizer as tokenizer_training

    root, args = suite_run
    monkeypatch.setenv("DETOK_CACHE", str(root / "cache"))
    trained, real = [], tokenizer_training.train_tokenizer

    def counting(cfg, run):
        trained.append(run.parent.name)
        return real(cfg, run)

    monkeypatch.setattr(tokenizer_training, "train_tokenizer", counting)
    noise = [("noise" if a == "table2" else a) for a in args]
    noise[noise.index("--out") + 1] = str(tmp_path / "noise")
    assert cli_main(noise) == 0
    work = root / "work"
    assert sorted(trained) == sorted(f"{v.name}-seed0" for v in SUITES["noise"] if v.name not in ("g0", "interp-g3"))
    for cell, twin in (("g0-seed0", "baseline-seed0"), ("interp-g3-seed0", "noise-seed0")):
        for step in ("tokenizer", "recon", "latents", "sit", "mar"):
            assert (work / cell / step).is_symlink() and (work / cell / step).resolve() == (work / twin / step)
    record = json.loads((tmp_path / "noise" / "results.json").read_text())
    cells = {c["variant"]: c for c in record["cells"]}
    table2 = {
        (c["variant"], c["seed"]): c for c in json.loads((root / "results" / "results.json").read_text())["cells"]
    }
    assert cells["g0"]["mar"]["eval"]["final"]["fid"] == table2["baseline", 0]["mar"]["eval"]["final"]["fid"]
    assert cells["g0"]["tokenizer"]["shared_from"] == "baseline-seed0" and "shared_from" not in cells["interp-g1"]
    listing = (tmp_path / "noise" / "results.md").read_text()
    assert "- g0 seed 0: " in listing and "0.0 min, sharing baseline-seed0's tokenizer, sit, mar" in listing

    # another MAR budget: the tokenizer and SiT are still shared, MAR is trained in the cell itself
    again = [*noise, "--set", "mar_images=24"]
    again[again.index("--out") + 1], again[again.index("--work") + 1] = str(tmp_path / "o2"), str(tmp_path / "w2")
    for cell in ("baseline-seed0", "noise-seed0"):
        shutil.copytree(work / cell, tmp_path / "w2" / cell)
    trained.clear()
    assert cli_main(again) == 0
    g0 = tmp_path / "w2" / "g0-seed0"
    assert (g0 / "tokenizer").is_symlink() and (g0 / "sit").is_symlink()
    assert not (g0 / "mar").is_symlink() and (g0 / "mar" / "done.json").is_file()


def test_the_variants_suite_runs_every_family_with_its_own_tokenizer_and_generators(suite_run, tmp_path, monkeypatch):
    """CNN, 1-D and VQ rows at the smoke budget: each trains its family's tiny twin; VQ rows are scored by the
    discrete AR generators, the others by SiT and MAR; the table has a preset and a codebook column."""
    root, args = suite_run
    monkeypatch.setenv("DETOK_CACHE", str(root / "cache"))
    again = [*args]
    again[again.index("--suite") + 1] = "variants"
    again[again.index("--out") + 1], again[again.index("--work") + 1] = str(tmp_path / "out"), str(tmp_path / "work")
    assert cli_main(again) == 0
    cells = {c["variant"]: c for c in json.loads((tmp_path / "out" / "results.json").read_text())["cells"]}
    assert set(cells) == {v.name for v in SUITES["variants"]}
    assert cells["cnn-ldetok"]["preset"] == "cnn-fmnist32-tiny" and {"sit", "mar"} <= set(cells["cnn-ldetok"])
    assert cells["1d-k32-baseline"]["preset"] == "detok1d-fmnist32-k32-tiny"
    vq = cells["vq-ldetok"]
    assert {"randomar_vq", "rasterar_vq"} <= set(vq) and "sit" not in vq
    assert 0 < vq["tokenizer"]["recon"]["code_usage"] <= 1
    config = json.loads((tmp_path / "work" / "vq-ldetok-seed0" / "tokenizer" / "config.json").read_text())
    assert config["model"]["corruption"]["mask_max"] == 0.95 and config["arch"] == "DeTokVQ"
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| Tokenizer | preset | rFID | PSNR (dB) | codes used | SiT gFID | MAR gFID | RandomAR (VQ) gFID |" in table
    assert "| RasterAR (VQ) w/o CFG |" in table
    row = next(line for line in table.splitlines() if line.startswith("| vq-ldetok |"))
    assert "`detokvq-fmnist32-tiny`" in row and "7.03" in row and "4.91" in row


def test_the_cli_offers_every_suite():
    from detok.cli import build_parser

    bench = build_parser()._subparsers._group_actions[0].choices["bench"]
    reproduce = bench._subparsers._group_actions[0].choices["reproduce"]
    suite = next(a for a in reproduce._actions if a.dest == "suite")
    assert sorted(suite.choices) == sorted(SUITES)


def test_the_peers_suite_trains_its_teacher_chains_aligntok_and_scores_with_two_evaluators(
    suite_run, tmp_path, monkeypatch
):
    """Every peer at the smoke budget: the offline teacher is trained once and named by every teacher-using row; the
    three AlignTok stages chain; each cell is scored again by a second evaluator, whose table and rank agreement are
    in results.md."""
    root, args = suite_run
    monkeypatch.setenv("DETOK_CACHE", str(root / "cache"))
    torch.manual_seed(1)
    second = root / "ref2"
    if not second.exists():
        from detok.eval.reference import ResidualNet, ResidualNetConfig

        save_model_folder(second, ResidualNet(ResidualNetConfig(stage_widths=(4, 8), embed_dim=8, num_classes=3)))
    again = [*args, "--second-evaluator", f"reference-resnet:{second}"]
    again[again.index("--suite") + 1] = "peers"
    again[again.index("--out") + 1], again[again.index("--work") + 1] = str(tmp_path / "out"), str(tmp_path / "work")
    assert cli_main(again) == 0
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    cells = {c["variant"]: c for c in record["cells"]}
    assert set(cells) == {v.name for v in SUITES["peers"]}
    assert record["second_evaluator"] != record["evaluator"]
    assert record["teacher"]["probe"] and (tmp_path / "work" / "teacher" / "config.json").is_file()
    teacher = f"detok:{tmp_path / 'work' / 'teacher'}"
    config = lambda cell, run="tokenizer": json.loads(
        (tmp_path / "work" / f"{cell}-seed0" / run / "config.json").read_text()
    )  # noqa: E731,E501
    assert config("ldetok-distill")["model"]["distill"]["teacher"] == teacher
    assert config("vavae")["model"]["vf"]["teacher"] == teacher
    assert config("maetok")["model"]["aux_targets"] == ["hog", teacher]
    stages = [config("aligntok", run)["model"]["stage"] for run in ("stage1", "stage2", "tokenizer")]
    assert stages == [1, 2, 3] and config("aligntok")["model"]["encoder"] == teacher
    for cell in cells.values():
        assert set(cell) >= {"sit", "lightningdit", "mar"}
        assert cell["tokenizer"]["recon"]["second"]["rfid"] is not None
        for g in ("sit", "lightningdit", "mar"):
            second_final = cell[g]["eval"]["second"]["final"]
            assert (
                second_final["num"] == BUDGETS["smoke"].final_num
                and second_final["cfg"] == cell[g]["eval"]["final"]["cfg"]
            )
    table = (tmp_path / "out" / "results.md").read_text()
    assert "Second evaluator, reference-" in table and "Rank agreement between the two evaluators" in table
    probe = record["teacher"]["probe"]["test_accuracy"]
    assert f"`mae-teacher-fmnist32-tiny`, label-free, linear-probe test accuracy {100 * probe:.2f}%" in table
    assert cli_main([*args[:2], "--suite", "table2", "--second-evaluator", "reference", "--budget", "smoke",
                     "--work", str(tmp_path / "w2"), "--out", str(tmp_path / "o2")]) == 2  # fmt: skip


def test_the_peers_suite_gives_maetok_its_decoder_fine_tuning_with_the_papers_anneal_span(tmp_path, monkeypatch):
    """MAETok Sec. 3 "Decoder Fine-Tuning" and Sec. 4: `maetok-ft` fine-tunes the `maetok` cell's decoder (encoder
    frozen, auxiliary decoders dropped) with the mask ratio annealed over a fixed span, the base trained once with
    the `maetok` row's own settings; the paper's Table 4 numbers belong to the fine-tuned row."""
    peers = {v.name: v for v in SUITES["peers"]}
    ft, base = peers["maetok-ft"], peers["maetok"]
    assert ft.finetune_from == "maetok" and ft.finetune == "decoder" and ft.overrides == base.overrides
    assert ft.finetune_overrides == ("model.finetune_mask_steps=25",) and ft.paper and not base.paper
    from detok.eval.reference import ResidualNet, ResidualNetConfig

    monkeypatch.setenv("DETOK_CACHE", str(tmp_path / "cache"))
    save_model_folder(
        tmp_path / "ref2", ResidualNet(ResidualNetConfig(stage_widths=(4, 8), embed_dim=8, num_classes=3))
    )
    args = [*_smoke_args(tmp_path, "peers"), "--set", 'rows=["maetok-ft"]', "--set", "generators=[]"]
    args += ["--second-evaluator", f"reference-resnet:{tmp_path / 'ref2'}"]
    assert cli_main(args) == 0
    cell = json.loads((tmp_path / "results" / "results.json").read_text())["cells"][0]
    overrides, work = cell["tokenizer"]["train"]["overrides"], tmp_path / "work"
    assert "decoder_finetune=true" in overrides and "model.finetune_mask_steps=25" in overrides
    assert f"init_from={work / 'maetok-seed0' / 'tokenizer'}" in overrides
    assert "model.finetune_mask_steps=25" not in cell["tokenizer"]["base"]["spec"]["overrides"]
    config = lambda cell: json.loads((work / f"{cell}-seed0" / "tokenizer" / "config.json").read_text())["model"]  # noqa: E731
    assert config("maetok-ft")["finetune_mask_steps"] == 25 and config("maetok")["finetune_mask_steps"] == 62


def test_the_resolution_suite_fine_tunes_32px_tokenizers_and_a_sit_to_64px(tmp_path, monkeypatch):
    """App. A.3 at the smoke budget: one 32-px tokenizer, fine-tuned to 64 px in full and decoder-only for 1/8 of its
    images, each scored at 64 px (the evaluator sees them resized to 32); a SiT fine-tuned from the 32-px cell's."""
    from detok.checkpoint import load_generator, load_tokenizer

    monkeypatch.setenv("DETOK_CACHE", str(tmp_path / "cache"))
    assert cli_main(_smoke_args(tmp_path, "resolution")) == 0
    cells = {c["variant"]: c for c in json.loads((tmp_path / "results" / "results.json").read_text())["cells"]}
    assert set(cells) == {"32px", "64px-full", "64px-decoder", "64px-decoder-corrupted"}
    work, smoke = tmp_path / "work", BUDGETS["smoke"]
    base = load_tokenizer(work / "32px-seed0" / "tokenizer")
    full, decoder = (load_tokenizer(work / f"64px-{k}-seed0" / "tokenizer") for k in ("full", "decoder"))
    assert base.config.image_size == 32 and full.config.image_size == decoder.config.image_size == 64
    assert cells["64px-full"]["preset"] == "detok-fmnist64-tiny"
    for name in ("64px-full", "64px-decoder"):
        overrides = cells[name]["tokenizer"]["train"]["overrides"]
        assert f"init_from={work / '32px-seed0' / 'tokenizer'}" in overrides
        assert f"train.images={smoke.tokenizer_images // 8}" in overrides
        assert ("decoder_finetune=true" in overrides) == (name == "64px-decoder")
        assert cells[name]["tokenizer"]["base"] == cells["32px"]["tokenizer"]["train"]  # trained once, shared
        assert cells[name]["tokenizer"]["recon"]["psnr"] is not None
        with np.load(work / f"{name}-seed0" / "sit" / "eval" / cells[name]["sit"]["eval"]["final"]["samples"]) as f:
            assert f["images"].shape == (smoke.final_num, 64, 64, 1)
    corrupted = cells["64px-decoder-corrupted"]["tokenizer"]
    assert {"decoder_finetune=true", "finetune_corruption=true"} <= set(corrupted["train"]["overrides"])
    assert corrupted["base"] == cells["32px"]["tokenizer"]["train"]
    # decoder-only: the encoder is the 32-px one (positions resampled), the decoder has moved
    assert torch.equal(decoder.patch_embed.weight, base.patch_embed.weight)
    assert not torch.equal(decoder.dec_head.weight, base.dec_head.weight)
    assert not torch.equal(full.patch_embed.weight, base.patch_embed.weight)
    tuned = cells["64px-full"]["sit_ft"]["train"]["overrides"]
    assert f"init_from={work / '32px-seed0' / 'sit'}" in tuned and f"train.images={smoke.sit_ft_images}" in tuned
    assert load_generator(work / "64px-full-seed0" / "sit_ft").config.input_size == full.latent_layout.shape[1:]
    assert "sit_ft" not in cells["64px-decoder"]
    table = (tmp_path / "results" / "results.md").read_text()
    assert "SiT ft from 32 px gFID" in table and "| 64px-full |" in table


def test_a_run_beside_the_findings_index_writes_its_block(suite_run, tmp_path, monkeypatch):
    """`detok bench reproduce --out docs/results/NAME` updates NAME's block of docs/results/README.md (here a restore
    of the smoke run, which trains nothing and writes the table at once)."""
    root, args = suite_run
    monkeypatch.setenv("DETOK_CACHE", str(root / "cache"))
    index = tmp_path / "README.md"
    index.write_text("# Findings\n\nhand-written rows\n\n<!-- suites end -->\n")
    out = tmp_path / "smoke-run"
    restore = ["--restore", str(root / "results" / "results.json"), "--work", str(tmp_path / "w")]
    assert cli_main([*args, *restore, "--out", str(out)]) == 0
    text = index.read_text()
    assert text.startswith("# Findings\n\nhand-written rows\n\n<!-- suite:smoke-run begin")
    assert "[smoke-run](smoke-run/results.md)** — suite `table2`, budget `smoke` (regime: smoke test)" in text
    assert text.endswith("<!-- suite:smoke-run end -->\n\n<!-- suites end -->\n")
