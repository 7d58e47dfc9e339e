"""Run logging: JSONL records, PNG grids, and the TensorBoard extra's error message."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from detok.runlog import RunLog, read_log, save_grid


def test_jsonl_log_and_grid(tmp_path):
    log = RunLog(tmp_path)
    log.log(1, loss=0.5, img_per_s=10.0)
    log.log(2, loss=0.25)
    assert [r["loss"] for r in read_log(tmp_path)] == [0.5, 0.25]
    RunLog(tmp_path, enabled=False).log(3, loss=1.0)  # non-main ranks write nothing
    assert len(read_log(tmp_path)) == 2
    images = torch.linspace(-1, 1, 6 * 4 * 4).view(6, 1, 4, 4)
    save_grid(images, tmp_path / "g.png", nrow=3, pad=1)
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1)
    assert grid[1, 1] == 0 and grid[-2, -2] == 255  # first pixel is -1 → 0, last is +1 → 255


def test_tensorboard_missing_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"detok\[tensorboard\]"):
        RunLog(tmp_path, tensorboard=True)


def test_sample_grids_show_ten_per_class_enlarged_to_be_judged_by_eye(tmp_path):
    from detok.generate import save_samples

    images = np.random.default_rng(0).integers(0, 256, (30, 32, 32, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 10)
    path = save_samples(tmp_path / "s.npz", images, labels)
    grid = np.asarray(Image.open(path.with_suffix(".png")))
    assert grid.shape == (3 * (96 + 2) + 2, 10 * (96 + 2) + 2)  # 3 class rows × 10 images, each 32 px ×3
    first = images[0, :, :, 0].repeat(3, 0).repeat(3, 1)
    assert np.array_equal(grid[2 : 2 + 96, 2 : 2 + 96], first)  # nearest-neighbour: the pixels themselves


def test_sample_file_names_keep_their_dots():
    from pathlib import Path

    from detok.generate import npz_path

    assert npz_path("out/samples-cfg1.5") == Path("out/samples-cfg1.5.npz")
    assert npz_path("out/s.npz") == Path("out/s.npz")
