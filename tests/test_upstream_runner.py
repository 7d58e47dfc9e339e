"""The pure parts of benchmarks/upstream/train_official.py: data layout, upstream arguments, the settings table.

Neither the upstream checkout nor torchvision is needed: those are imported only when the runner trains.
"""

import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "upstream" / "train_official.py"


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("train_official", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x800 | array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip(runner, tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 256
    labels = np.array([7, 0, 9])
    _write_idx(tmp_path / "x.gz", images)
    _write_idx(tmp_path / "y.gz", labels)
    assert np.array_equal(runner.read_idx(tmp_path / "x.gz"), images)
    assert np.array_equal(runner.read_idx(tmp_path / "y.gz"), labels)


def test_pad_centres_as_detok(runner):
    images = np.full((2, 28, 28), 255, dtype=np.uint8)
    out = runner.pad_to(images, 32)
    assert out.shape == (2, 32, 32)
    assert out[:, 2:30, 2:30].min() == 255
    assert out.sum() == images.sum()  # two zero rows and columns on each side


def test_train_subset_is_one_pass(runner):
    first = runner.train_subset(100, 60, seed=8)
    assert len(set(first)) == 60  # distinct images within one pass
    assert first == runner.train_subset(100, 60, seed=8)
    assert first != runner.train_subset(100, 60, seed=9)
    longer = runner.train_subset(100, 250, seed=8)  # more images than the set: whole permutations, then a cut
    assert len(longer) == 250
    assert sorted(longer[:100]) == list(range(100))


def test_upstream_argv_matches_the_budget(runner, tmp_path):
    argv = runner.upstream_argv(
        data_path=tmp_path / "train", out=tmp_path, images=16_000, gamma=3.0, mask=0.7, seed=8, workers=1
    )
    pairs = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert pairs["--epochs"] == "1" and pairs["--batch_size"] == "64"
    assert float(pairs["--blr"]) * 64 / 256 == pytest.approx(1e-3)
    assert float(pairs["--kl_loss_weight"]) == pytest.approx(2.5e-7)  # detok's 1e-6 on a loss 4× larger
    assert float(pairs["--grad_clip"]) == pytest.approx(0.75)
    assert pairs["--perceptual_weight"] == "0.0"
    assert int(pairs["--discriminator_start_epoch"]) >= int(pairs["--epochs"])  # the GAN never starts
    assert pairs["--gamma"] == "3.0" and pairs["--mask_ratio"] == "0.7"
    assert pairs["--patch_size"] == "4" and pairs["--token_channels"] == "8" and pairs["--img_size"] == "32"


def test_settings_table(runner):
    rows = runner.settings_table(16_000, 3.0, 0.7)
    by_name = {r["setting"]: r for r in rows}
    assert {r["status"] for r in rows} <= {"matched", "rescaled", "unmatched"}
    assert by_name["channels"]["status"] == "matched"
    assert runner.settings_table(16_000, 3.0, 0.7, channels=3)[3]["status"] == "unmatched"
    assert by_name["EMA"]["status"] == "unmatched" and "29%" in by_name["EMA"]["note"]  # 0.995^250
    warm = {r["setting"]: r for r in runner.settings_table(16_000, 3.0, 0.7, ema_warmup=True)}
    assert warm["EMA"]["status"] == "matched"
    table = runner.format_table(rows, ("setting", "status"))
    assert table.count("\n") == len(rows) + 1


def test_cache_path_must_not_hold_train_or_val(runner, tmp_path):
    with pytest.raises(ValueError, match="must not contain"):
        runner.write_image_folder(tmp_path, tmp_path / "train-cache")


def test_each_budget_s_recipe_is_detok_s(runner, tmp_path):
    """The runner's budgets are detok's tokenizer budgets: images, warm-up share and EMA decay (quality: 128k images,
    2% warm-up, EMA 0.999), read from src/detok/bench/suites.py so that a change there shows here."""
    from detok.bench.suites import BUDGETS
    from detok.config import apply_overrides
    from detok.training.tokenizer import default_run_config

    for name in runner.BUDGETS:
        budget = BUDGETS[name]
        train = apply_overrides(default_run_config(budget.tokenizer), list(budget.tokenizer_train)).train
        d = runner.recipe(name)
        assert runner.BUDGETS[name]["images"] == budget.tokenizer_images
        assert (d["warmup_frac"], d["ema_decay"], d["blr"]) == (train.warmup_frac, train.ema_decay, train.blr)
        argv = runner.upstream_argv(data_path=tmp_path, out=tmp_path, images=budget.tokenizer_images, gamma=0,
                                    mask=0, seed=0, workers=0, d=d)  # fmt: skip
        pairs = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
        assert (float(pairs["--warmup_rate"]), float(pairs["--ema_rate"])) == (d["warmup_frac"], d["ema_decay"])
    ema = {r["setting"]: r for r in runner.settings_table(128_000, 0, 0, d=runner.recipe("quality"))}["EMA"]
    assert "0.999^2000 = 14%" in ema["note"]
