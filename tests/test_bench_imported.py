"""`detok bench reproduce --set tokenizer_dirs=[...]`: a suite row takes an already-trained tokenizer (issue #36 runs
table2's steps on tokenizers trained by the official DeTok code this way)."""

import json

import pytest
from test_bench_reproduce import _smoke_args

from detok.bench.reproduce import parse_budget
from detok.bench.suites import suite_cells
from detok.checkpoint import save_model_folder
from detok.cli import main as cli_main
from detok.config import ConfigError
from detok.registry import create_model


def _with(args: list[str], out, work, *sets: str) -> list[str]:
    again = [*args]
    again[again.index("--out") + 1], again[again.index("--work") + 1] = str(out), str(work)
    return again + [x for s in sets for x in ("--set", s)]


def test_an_imported_tokenizer_is_taken_as_trained_and_the_row_s_steps_run_on_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETOK_CACHE", str(tmp_path / "cache"))
    args = _smoke_args(tmp_path, "table2")
    rows = 'rows=["baseline"]'
    # a tokenizer trained by the suite itself (tokenizer only), then imported by a second run of the same row
    assert cli_main(_with(args, tmp_path / "o1", tmp_path / "w1", rows, "max_seeds=1", "generators=[]")) == 0
    source = tmp_path / "w1" / "baseline-seed0" / "tokenizer"
    imported = json.dumps([f"baseline={tmp_path / 'w1' / 'baseline-seed{seed}' / 'tokenizer'}"])
    sets = (rows, "max_seeds=1", 'generators=["sit"]', f"tokenizer_dirs={imported}")
    assert cli_main(_with(args, tmp_path / "o2", tmp_path / "w2", *sets)) == 0

    tok_dir = tmp_path / "w2" / "baseline-seed0" / "tokenizer"
    assert (tok_dir / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert not (tok_dir / "checkpoints").exists()  # nothing was trained in the cell
    done = json.loads((tok_dir / "done.json").read_text())
    assert done["spec"]["imported"] == str(source) and len(done["spec"]["digest"]) == 16
    # the statistics are recomputed as the training cell computed them: the same numbers
    stats = [json.loads((d / "config.json").read_text())["model"] for d in (source, tok_dir)]
    assert stats[1]["latent_mean"] == stats[0]["latent_mean"] and stats[1]["latent_std"] == stats[0]["latent_std"]
    cell = json.loads((tmp_path / "o2" / "results.json").read_text())["cells"][0]
    assert cell["tokenizer"]["train"]["imported_from"] == str(source) and cell["preset"] == "imported"
    assert "sit" in cell
    record = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert record["budget"]["tokenizer_dirs"] == [f"baseline={tmp_path / 'w1' / 'baseline-seed{seed}' / 'tokenizer'}"]

    # a folder that is not a tokenizer, and a tokenizer for other images, are refused naming the folder
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = json.dumps([f"baseline={empty}"])
    capsys.readouterr()
    assert cli_main(_with(args, tmp_path / "o3", tmp_path / "w3", rows, "max_seeds=1", "generators=[]",
                          f"tokenizer_dirs={bad}")) != 0  # fmt: skip
    assert f"{empty} is not a tokenizer folder" in capsys.readouterr().err
    other = tmp_path / "rgb"
    save_model_folder(other, create_model("detok-fmnist32-tiny", channels=3))
    assert cli_main(_with(args, tmp_path / "o4", tmp_path / "w4", rows, "max_seeds=1", "generators=[]",
                          f"tokenizer_dirs={json.dumps([f'baseline={other}'])}")) != 0  # fmt: skip
    assert "takes 3-channel 32-px images, the suite's data are 1-channel 32-px" in capsys.readouterr().err


def test_tokenizer_dirs_entries_are_checked():
    with pytest.raises(ConfigError, match="ROW=FOLDER"):
        parse_budget("smoke", ['tokenizer_dirs=["baseline"]'])
    with pytest.raises(ConfigError, match="more than once"):
        parse_budget("smoke", ['tokenizer_dirs=["baseline=/a", "baseline=/b"]'])
    with pytest.raises(ValueError, match="not variants of the table2 suite"):
        suite_cells("table2", parse_budget("smoke", ['tokenizer_dirs=["nope=/a"]']))
    with pytest.raises(ValueError, match="in stages or from another row"):
        suite_cells("peers", parse_budget("smoke", ['tokenizer_dirs=["aligntok=/a"]']))
    budget = parse_budget("smoke", ['tokenizer_dirs=["joint=/runs/joint-seed{seed}/detok"]'])
    ((joint, seeds),) = [(v, s) for v, s in suite_cells("table2", budget) if v.name == "joint"]
    assert [str(budget.tokenizer_dir(joint, s)) for s in seeds] == [f"/runs/joint-seed{s}/detok" for s in seeds]
