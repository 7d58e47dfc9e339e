"""The prepared device check (benchmarks/paper_step.py) runs its CPU smoke configuration and measures consistently."""

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_step.py"


@pytest.fixture(scope="module")
def paper_step():
    spec = importlib.util.spec_from_file_location("paper_step", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(paper_step, tmp_path, batch, *presets):
    out = tmp_path / f"rows-{batch}.json"
    argv = ["--device", "cpu", "--precision", "fp32", "--threads", "1", "--steps", "1", "--warmup", "0"]
    argv += ["--flop-draws", "1", "--per-gpu-batch", str(batch), "--json", str(out), "--presets", *presets]
    rows = paper_step.main(argv)
    assert json.loads(out.read_text()) == rows
    return {r["row"]: r for r in rows}


def test_paper_step_times_tokenizers_and_generators_with_flops_per_image_independent_of_batch(paper_step, tmp_path):
    small = _run(paper_step, tmp_path, 2, "detok-fmnist32-tiny", "sit-fmnist32-tiny", "mar-fmnist32-tiny")
    large = _run(paper_step, tmp_path, 4, "sit-fmnist32-tiny")
    assert set(small) == {"detok-fmnist32-tiny", "sit-fmnist32-tiny", "mar-fmnist32-tiny"}
    for row in small.values():
        assert row["img_per_s"] > 0 and row["gflop_per_image"] > 0 and 0 < row["mfu_measured_peak"] < 1
        assert row["mfu_datasheet"] is None  # no datasheet peak for a CPU
    # SiT's work per image does not depend on the batch: the count is per image, not per step
    sit_small, sit_large = small["sit-fmnist32-tiny"]["gflop_per_image"], large["sit-fmnist32-tiny"]["gflop_per_image"]
    assert sit_large == pytest.approx(sit_small, rel=0.01)


def test_a_preset_with_gan_part_way_is_timed_with_and_without_it_and_discrete_generators_are_refused(paper_step):
    assert [gan for _, gan in paper_step.rows_for("detok-bb")] == [False, True]
    assert [gan for _, gan in paper_step.rows_for("detok-fmnist32")] == [False]
    with pytest.raises(ValueError, match="code indices"):
        paper_step.GeneratorStep("rasterar-vq-fmnist32-tiny", 2, paper_step.torch.device("cpu"), "fp32")
