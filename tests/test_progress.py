"""Progress output: tqdm's bar on a terminal, plain lines without carriage returns in a log."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm as terminal_bar

from detok import progress

ROOT = Path(__file__).resolve().parents[1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_tqdms_bar_and_a_log_gets_lines(monkeypatch):
    assert type(progress.tqdm(range(2), file=_Terminal())) is terminal_bar
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    log = io.StringIO()
    bar = progress.tqdm(total=4, desc="tokenizer", unit="step", file=log)
    for _ in range(4):
        bar.update(1)
        bar.set_postfix(loss="0.5000")
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    assert lines[0].startswith("tokenizer: 0/4 step (0%)")
    assert lines[-1].startswith("tokenizer: 4/4 step (100%), ") and lines[-1].endswith(", loss=0.5000")
    assert all(" step/s, elapsed " in line for line in lines[1:]) and "ETA" in lines[1]


def test_lines_come_at_most_once_an_interval(monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL_S", 3600.0)
    log = io.StringIO()
    for _ in progress.tqdm(range(1000), desc="features", file=log):
        pass
    assert log.getvalue().count("\n") == 2  # started, finished
    assert progress.tqdm(range(3), disable=True, file=log) is not None and log.getvalue().count("\n") == 2


def test_a_piped_training_log_has_no_carriage_returns(tmp_path):
    """`detok tokenizer train` with stderr to a pipe, as under nohup, CI or `2> log`: bars as lines."""
    rng = np.random.default_rng(0)
    npz = tmp_path / "d.npz"
    np.savez(npz, images=rng.integers(0, 256, (32, 32, 32), dtype=np.uint8), labels=rng.integers(0, 4, 32))
    sets = ["data.name=npz", f"data.root={npz}", "train.threads=1", "train.images=32", "train.batch_size=8",
            "train.sample_every=1000"]  # fmt: skip
    argv = ["tokenizer", "train", "--preset", "detok-fmnist32-tiny", "--out", str(tmp_path / "run")]
    argv += [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-m", "detok.cli", *argv], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    log = done.stderr.decode()
    assert "\r" not in log and "\r" not in done.stdout.decode()
    assert "tokenizer: 4/4 step (100%)" in log, log
