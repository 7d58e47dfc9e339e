"""Latent cache: shards equal the tokenizer's encodings (and of the flips), resume skips finished shards."""

import copy

import numpy as np
import pytest
import torch

from detok import create_model
from detok.checkpoint import save_model_folder
from detok.cli import main as cli_main
from detok.data import DataConfig, build_dataset
from detok.latents import LatentDataset, cache_latents, store_latent_stats


@pytest.fixture
def tokenizer_and_data(tmp_path):
    torch.manual_seed(0)
    tok = create_model("detok-fmnist32-tiny").eval()
    save_model_folder(tmp_path / "tok", tok)
    c = tok.config.latent_channels
    store_latent_stats(tmp_path / "tok", [0.5] * c, [2.0] * c)
    imgs = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=imgs, labels=np.arange(10) % 3)
    return tmp_path, tok, imgs


def _cache(tmp_path, out, *extra):
    args = [
        "latents",
        "cache",
        "--tokenizer",
        str(tmp_path / "tok"),
        "--out",
        str(out),
        "--shard-size",
        "4",
        "--batch-size",
        "3",
        "--threads",
        "1",
        "--set",
        "name=npz",
        "--set",
        f"root={tmp_path / 'd.npz'}",
        *extra,
    ]
    assert cli_main(args) == 0


def test_cache_matches_encode_and_resumes(tokenizer_and_data):
    tmp_path, tok, imgs = tokenizer_and_data
    out = tmp_path / "cache"
    _cache(tmp_path, out)
    shards = sorted(out.glob("shard-*.safetensors"))
    assert len(shards) == 3  # 10 images in shards of 4
    raw = LatentDataset(out, normalize=False)
    x = torch.nn.functional.pad(torch.from_numpy(imgs).float().div(127.5).sub(1).unsqueeze(1), (2, 2, 2, 2), value=-1)
    assert torch.allclose(raw.latents, tok.encode(x), atol=1e-5)
    assert torch.allclose(raw.latents_flip, tok.encode(x.flip(-1)), atol=1e-5)
    assert raw.labels.tolist() == (np.arange(10) % 3).tolist() and raw.num_classes == 3
    norm = LatentDataset(out)
    assert torch.allclose(norm.latents, (raw.latents - 0.5) / 2.0)
    z, y = norm.get_batch(torch.arange(10), torch.Generator().manual_seed(0))
    picked_flip = [not torch.equal(z[i], norm.latents[i]) for i in range(10)]
    assert 0 < sum(picked_flip) < 10
    # resume: only the missing shard is written again
    kept = shards[0].stat().st_mtime_ns
    shards[1].unlink()
    _cache(tmp_path, out)
    assert shards[1].exists() and shards[0].stat().st_mtime_ns == kept
    assert torch.equal(LatentDataset(out, normalize=False).latents, raw.latents)


def test_max_images_caches_a_prefix(tokenizer_and_data):
    tmp_path, tok, _ = tokenizer_and_data
    out = tmp_path / "part"
    _cache(tmp_path, out, "--max-images", "6")
    full = tmp_path / "full"
    _cache(tmp_path, full)
    part = LatentDataset(out, normalize=False)
    assert len(part) == 6 and part.meta["count"] == 6
    assert torch.equal(part.latents, LatentDataset(full, normalize=False).latents[:6])
    with pytest.raises(ValueError, match="another size"):
        cache_latents(tok, build_dataset(DataConfig(name="npz", root=str(tmp_path / "d.npz")), "train"), out)


def test_missing_cache_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="detok latents cache"):
        LatentDataset(tmp_path)


def test_a_cache_is_never_mixed_across_tokenizers_or_made_from_flipped_images(tokenizer_and_data):
    tmp_path, tok, _ = tokenizer_and_data
    data = build_dataset(DataConfig(name="npz", root=str(tmp_path / "d.npz")), "train")
    out = tmp_path / "mixed"
    cache_latents(tok, data, out, shard_size=4, progress=False)
    (out / "latents.json").unlink()  # as if interrupted before the last shard
    sorted(out.glob("shard-*.safetensors"))[-1].unlink()
    other = copy.deepcopy(tok)
    with torch.no_grad():
        other.patch_embed.weight.add_(0.01)
    with pytest.raises(ValueError, match="another tokenizer"):
        cache_latents(other, data, out, shard_size=4, progress=False)
    cache_latents(tok, data, out, shard_size=4, progress=False)  # the same tokenizer resumes
    flipping = build_dataset(DataConfig(name="npz", root=str(tmp_path / "d.npz"), hflip=True), "train")
    with pytest.raises(ValueError, match="hflip=False"):
        cache_latents(tok, flipping, tmp_path / "flipped", progress=False)


def test_latent_statistics_are_the_per_channel_moments_of_the_encodings(tokenizer_and_data):
    from detok.latents import compute_latent_stats

    tmp_path, tok, _ = tokenizer_and_data
    data = build_dataset(DataConfig(name="npz", root=str(tmp_path / "d.npz")), "train")
    mean, std = compute_latent_stats(tok, data, batch_size=3, progress=False)  # batches of 3, 3, 3, 1
    with torch.no_grad():
        z = tok.encode(data.get_batch(torch.arange(len(data)))[0]).double()  # (N, C, h, w)
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), z.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), z.std(dim=(0, 2, 3), unbiased=False), atol=1e-5)


def test_half_precision_cache_and_memory_mapped_reading(tmp_path):
    """float16 shards hold half the bytes and read back within fp16 rounding; the memory-mapped reader gives the
    in-memory reader's batches exactly (same rows, same flips, same normalisation)."""
    import numpy as np

    from detok import create_model
    from detok.data import DataConfig, build_dataset
    from detok.latents import LatentDataset, cache_latents

    torch.manual_seed(0)
    tok = create_model("detok-fmnist32-tiny", latent_mean=(0.1,) * 8, latent_std=(0.5,) * 8).eval()
    np.savez(tmp_path / "d.npz", images=np.random.default_rng(0).integers(0, 256, (10, 32, 32), dtype=np.uint8))
    data = build_dataset(DataConfig(name="npz", root=str(tmp_path / "d.npz")))
    full, half = tmp_path / "f32", tmp_path / "f16"
    cache_latents(tok, data, full, progress=False, shard_size=4)
    cache_latents(tok, data, half, progress=False, shard_size=4, dtype="float16")
    sizes = [sum(p.stat().st_size for p in d.glob("shard-*")) for d in (full, half)]
    assert sizes[1] < 0.6 * sizes[0]
    idx = torch.tensor([9, 0, 5, 4, 3])  # across the three shards
    batches = {}
    for name, folder, in_memory in (("f32", full, True), ("f16", half, True), ("mapped", full, False)):
        batches[name] = LatentDataset(folder, in_memory=in_memory).get_batch(idx, torch.Generator().manual_seed(1))
    assert torch.equal(batches["mapped"][0], batches["f32"][0]) and torch.equal(batches["mapped"][1], batches["f32"][1])
    assert batches["f16"][0].dtype == torch.float32
    assert torch.allclose(batches["f16"][0], batches["f32"][0], atol=2e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="dtype"):
        cache_latents(tok, data, tmp_path / "bf16", progress=False, dtype="bfloat16")


def test_a_cache_is_not_written_into_a_model_or_run_folder(tokenizer_and_data):
    """`latents cache --out` onto the tokenizer's own folder (or any run) is refused before a shard is written."""
    tmp_path, tok, _ = tokenizer_and_data
    data = build_dataset(DataConfig(name="npz", root=str(tmp_path / "d.npz")), "train")
    before = sorted(p.name for p in (tmp_path / "tok").iterdir())
    with pytest.raises(ValueError, match="holds a tokenizer model .*give the cache a folder of its own"):
        cache_latents(tok, data, tmp_path / "tok", shard_size=4, progress=False)
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == before
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds a training run"):
        cache_latents(tok, data, run, shard_size=4, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        cache_latents(tok, data, tmp_path / "file", shard_size=4, progress=False)
