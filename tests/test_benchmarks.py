"""The prepared device check (benchmarks/paper_step.py) runs its CPU smoke configuration and measures consistently;
the latent-predictability measure (benchmarks/latent_context.py) tells predictable latents from unpredictable ones."""

import importlib.util
import json
from pathlib import Path

import pytest

_BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, _BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def paper_step():
    return _load("paper_step")


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


def test_latent_context_separates_class_and_context_structure_from_noise(tmp_path):
    import torch
    from safetensors.torch import save_file

    latent_context = _load("latent_context")
    gen = torch.Generator().manual_seed(0)
    n, tokens, channels = 4000, 16, 4
    labels = torch.arange(n) % 4
    means = torch.randn(4, tokens, channels, generator=gen)
    noise = torch.randn(n, tokens, channels, generator=gen)
    # class means plus unit noise: the class explains the means' spread over the total
    between = float(((means - means.mean(0)) ** 2).mean())
    expected = between / (between + 1)
    assert latent_context.class_r2(means[labels] + noise, labels) == pytest.approx(expected, abs=0.03)
    # every token a linear function of two per-image factors: the visible half predicts the masked half
    factors = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    mixing = torch.randn(2, tokens * channels, generator=gen, dtype=torch.float64)
    low_rank = (factors @ mixing).view(n, tokens, channels)
    assert latent_context.context_r2(low_rank, labels, 0.5, seed=0) > 0.95
    # nothing to predict: about 0, less the out-of-sample penalty of fitting 86 inputs on ~1,500 images (~p/n)
    assert -0.1 < latent_context.context_r2(noise.double(), labels, 0.5, seed=0) < 0.02
    # a cache folder is read back as (N, tokens, C), normalised with its own statistics
    grid = torch.randn(8, channels, 2, 2, generator=gen) * 3 + 1
    save_file({"latents": grid, "labels": torch.arange(8)}, str(tmp_path / "shard-00000.safetensors"))
    stats = {"latent_mean": [1.0] * channels, "latent_std": [3.0] * channels}
    (tmp_path / "latents.json").write_text(json.dumps(stats))
    read, read_labels = latent_context.load(tmp_path)
    assert read.shape == (8, 4, channels) and read_labels.tolist() == list(range(8))
    torch.testing.assert_close(read, ((grid.double() - 1) / 3).flatten(2).transpose(1, 2))
