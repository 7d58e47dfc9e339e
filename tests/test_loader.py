"""The scale path: worker input pipeline for image folders (order, flips, resume), bad input, processes sharing the
latent cache, sampling and scoring, and the memory of the memory-mapped cache reader."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detok.cli import main as cli_main
from detok.config import apply_overrides
from detok.data import DataConfig, build_dataset
from detok.imagefolder import ImageFolderDataset, UnreadableImageError
from detok.loader import image_batches, training_plans
from detok.runtime import augment_seed, batch_indices
from detok.training.tokenizer import default_run_config, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TINY = "detok-fmnist32-tiny"


def jpeg_folder(root: Path, classes: int = 3, per_class: int = 8, seed: int = 0) -> Path:
    """ImageNet's layout in miniature: root/<wnid>/<name>.JPEG, images of varied sizes around 40×35."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"n{c:08d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(28, 48, 2)
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(image).save(folder / f"n{c:08d}_{i}.JPEG", quality=90)
    return root


def truncate(path: Path) -> bytes:
    """Cut a file to half its length (a download or copy that stopped); returns the original bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data


def run(capsys, *argv) -> tuple[int, str]:
    """Run `detok argv…` in this process; returns (exit code, the single `detok: error:` line)."""
    rc = cli_main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("detok: error:")]
    assert len(errors) == (rc != 0), err
    return rc, errors[0] if errors else ""


def folder_settings(folder: Path, *extra: str) -> list[str]:
    return [
        "data.name=image-folder",
        f"data.root={folder}",
        "data.resize=adm-center-crop",
        "data.hflip=true",
        "train.progress=false",
        "train.threads=1",
        "train.sample_every=1000",
        "train.log_every=1",
        *extra,
    ]


def train_argv(out: Path, folder: Path, *extra: str) -> list[str]:
    sets = folder_settings(folder, "train.images=16", "train.batch_size=4", *extra)
    return ["tokenizer", "train", "--preset", TINY, "--out", str(out)] + [a for s in sets for a in ("--set", s)]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def comparable(recs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time", "img_per_s", "data_wait")} for r in recs]


# --------------------------------------------------------------------------------------------------
# Order, flips and resume
# --------------------------------------------------------------------------------------------------


def test_worker_batches_are_the_in_process_batches_from_any_step(tmp_path):
    """Worker processes decode exactly the batches the loop would index itself — same images, order, flips and
    labels, for every rank's accumulation slices, across epochs, and from a resumed step on."""
    cfg = DataConfig(name="image-folder", root=str(jpeg_folder(tmp_path)), image_size=32, channels=3,
                     resize="adm-center-crop", hflip=True)  # fmt: skip
    ds = build_dataset(cfg)
    seed, batch, steps, world, accum = 5, 8, 7, 2, 2  # 7 steps of 8 images: more than two epochs of 24

    def in_process(step: int, rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:  # the training loops' split
        idx = batch_indices(step, batch, len(ds), seed).view(world * accum, -1)
        shards = [rank * accum + micro for micro in range(accum)]
        return [ds.get_batch(idx[s], torch.Generator().manual_seed(augment_seed(seed, step, s))) for s in shards]

    flipped = 0
    for rank in range(world):
        want = [b for step in range(steps) for b in in_process(step, rank)]
        for workers, start in ((0, 0), (2, 0), (2, 4)):
            plans = training_plans(start, steps, batch, len(ds), seed, rank, accum, world * accum)
            got = list(image_batches(ds, plans, workers=workers, prefetch=1))
            assert len(got) == len(want) - start * accum
            for (x, y, skipped), (wx, wy) in zip(got, want[start * accum :]):
                assert torch.equal(x, wx) and torch.equal(y, wy) and skipped == []
        plain = [ds.get_batch(p.indices)[0] for p in training_plans(0, steps, batch, len(ds), seed, rank, accum, 4)]
        flipped += sum(not torch.equal(a, b) for (a, _), b in zip(want, plain))
    assert flipped > 0  # the flips were drawn, and drawn alike


def _recording(monkeypatch, seen: list[str]) -> None:
    """Record a digest of every training batch the tokenizer loop receives."""
    import detok.training.tokenizer as loop

    def recorded(*args, **kwargs):
        for x, y, skipped in image_batches(*args, **kwargs):
            seen.append(hashlib.sha1(x.cpu().numpy().tobytes()).hexdigest())
            yield x, y, skipped

    monkeypatch.setattr(loop, "image_batches", recorded)


def test_a_run_stopped_at_any_step_resumes_with_the_same_images(tmp_path, monkeypatch):
    """One process, two loader workers: a run that stops at step 11 (an unreadable file, then replaced) and is
    rerun sees, step for step, the images and flips of an uninterrupted run, and logs the same losses."""
    folder = jpeg_folder(tmp_path / "imgs", classes=3, per_class=16)  # 48 images: 12 steps of 4 are one epoch
    settings = folder_settings(folder, "data.workers=2", "data.verify=false", "train.images=48",
                               "train.batch_size=4", "train.ckpt_every=4")  # fmt: skip
    cfg = apply_overrides(default_run_config(TINY), settings)
    full, seen_full = tmp_path / "full", []
    _recording(monkeypatch, seen_full)
    train_tokenizer(cfg, full)
    assert len(seen_full) == 12

    ds = build_dataset(cfg.data)
    late = [i for i in batch_indices(10, 4, 48, cfg.train.seed).tolist() if i >= 16]  # not in the preview batch
    bad = ds.files[late[0]]
    original = truncate(bad)
    cut, seen_cut = tmp_path / "cut", []
    _recording(monkeypatch, seen_cut)
    with pytest.raises(UnreadableImageError, match=bad.name):
        train_tokenizer(cfg, cut)
    assert seen_cut == seen_full[:10]  # stopped when step 11's batch was due, however far ahead the workers were
    assert [r["step"] for r in records(cut)] == list(range(1, 11))
    bad.write_bytes(original)
    seen_resumed = []
    _recording(monkeypatch, seen_resumed)
    train_tokenizer(cfg, cut)  # resumes from the checkpoint of step 8
    assert seen_resumed == seen_full[8:]
    assert comparable(records(cut)) == comparable(records(full))


DDP_SCRIPT = """
import hashlib, json, sys
import torch
from detok import dist
from detok.config import apply_overrides
import detok.training.tokenizer as loop

real, seen = loop.image_batches, []
def recorded(*args, **kwargs):
    for x, y, skipped in real(*args, **kwargs):
        seen.append(hashlib.sha1(x.cpu().numpy().tobytes()).hexdigest())
        yield x, y, skipped
loop.image_batches = recorded
cfg = apply_overrides(loop.default_run_config("detok-fmnist32-tiny"), sys.argv[3:])
try:
    loop.train_tokenizer(cfg, sys.argv[1])
finally:
    with open(f"{sys.argv[2]}.rank{dist.rank()}.json", "w") as f:
        json.dump(seen, f)
"""


@pytest.mark.slow
def test_two_processes_stopped_and_rerun_see_the_images_of_an_uninterrupted_run(tmp_path):
    """The same under torchrun: 2 processes × 2 loader workers, gloo."""
    script = tmp_path / "train.py"
    script.write_text(DDP_SCRIPT)
    folder = jpeg_folder(tmp_path / "imgs", classes=3, per_class=16)
    settings = folder_settings(folder, "data.workers=2", "data.verify=false", "train.images=48",
                               "train.batch_size=4", "train.ckpt_every=4")  # fmt: skip

    def torchrun(out: Path, tag: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
        return subprocess.run([*argv, str(out), str(tmp_path / tag), *settings], env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    def seen(tag: str) -> list[list[str]]:
        return [json.loads((tmp_path / f"{tag}.rank{r}.json").read_text()) for r in range(2)]

    done = torchrun(tmp_path / "full", "full")
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = apply_overrides(default_run_config(TINY), settings)
    ds = build_dataset(cfg.data)
    bad = ds.files[[i for i in batch_indices(10, 4, 48, 0).tolist() if i >= 16][0]]
    original = truncate(bad)
    stopped = torchrun(tmp_path / "cut", "cut")
    assert stopped.returncode != 0 and bad.name in stopped.stderr
    bad.write_bytes(original)
    done = torchrun(tmp_path / "cut", "resumed")
    assert done.returncode == 0, done.stderr[-3000:]
    full = seen("full")
    assert all(len(f) == 12 for f in full)
    assert seen("resumed") == [f[8:] for f in full]  # each rank: its slices of steps 9-12
    assert comparable(records(tmp_path / "cut")) == comparable(records(tmp_path / "full"))


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreadable_jpeg_stops_the_run_naming_the_file(capsys, tmp_path, workers):
    folder = jpeg_folder(tmp_path / "imgs", classes=2, per_class=4)
    bad = sorted(folder.rglob("*.JPEG"))[5]
    truncate(bad)
    rc, line = run(capsys, *train_argv(tmp_path / "run", folder, "data.verify=false", f"data.workers={workers}"))
    assert rc == 2 and f"cannot read image {bad}" in line
    rc, line = run(capsys, *train_argv(tmp_path / "run", folder, f"data.workers={workers}"))  # found by the scan
    assert rc == 2 and bad.name in line and "data.skip_bad_files=true" in line


def test_skipped_files_are_listed_once_in_the_log_and_counted(capsys, tmp_path):
    folder = jpeg_folder(tmp_path / "imgs", classes=2, per_class=4)
    bad = sorted(folder.rglob("*.JPEG"))[5]
    truncate(bad)
    argv = train_argv(tmp_path / "run", folder, "data.verify=false", "data.workers=2", "data.skip_bad_files=true")
    rc, _ = run(capsys, *argv)  # 16 images in 8: every file is met twice
    assert rc == 0
    recs = records(tmp_path / "run")
    listed = [r for r in recs if "skipped_file" in r]
    assert [r["skipped_file"] for r in listed] == [str(bad)] and "truncated" in listed[0]["error"]
    metrics = [r for r in recs if "loss" in r]
    assert [r["step"] for r in metrics] == [1, 2, 3, 4] and metrics[-1]["skipped_files"] == 1
    assert metrics[0]["skipped_files"] == (listed[0]["step"] == 1)


def test_folders_without_classes_or_with_other_classes_are_one_error(capsys, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30)).save(flat / f"ILSVRC2012_val_{i:08d}.JPEG")
    rc, line = run(capsys, *train_argv(tmp_path / "run", flat))
    assert rc == 2 and "holds 3 images but no class subfolders" in line
    jpeg_folder(tmp_path / "inet" / "train", classes=3, per_class=2)
    jpeg_folder(tmp_path / "inet" / "val", classes=2, per_class=2)
    cfg = DataConfig(name="image-folder", root=str(tmp_path / "inet"), image_size=32, channels=3)
    assert len(build_dataset(cfg, "train")) == 6
    with pytest.raises(ValueError, match=r"1 in train/ only \(n00000002\).*would not mean the same classes"):
        build_dataset(cfg, "test")


def test_a_crashed_worker_is_one_error(capsys, tmp_path, monkeypatch):
    folder = jpeg_folder(tmp_path / "imgs", classes=2, per_class=4)
    real = ImageFolderDataset._load

    def dies_in_a_worker(self, i):
        if torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
        return real(self, i)

    monkeypatch.setattr(ImageFolderDataset, "_load", dies_in_a_worker)
    rc, line = run(capsys, *train_argv(tmp_path / "run", folder, "data.workers=1"))
    assert rc == 2 and "data-loading worker process stopped" in line and "data.workers" in line


# --------------------------------------------------------------------------------------------------
# The memory-mapped cache reader
# --------------------------------------------------------------------------------------------------


# Each measurement runs in a fresh process: in the test process, memory freed earlier (by this or any other test)
# stays resident in the allocator and is handed back without RssAnon growing, which hides a cache loaded into memory.
_MEASURE = """
import sys, torch
from detok.latents import LatentDataset

def anonymous_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))

cache, mode = sys.argv[1], sys.argv[2]
before = anonymous_kib()
if mode == "mapped":
    data, peak = LatentDataset(cache, normalize=False, in_memory=False), 0
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    for start in range(0, len(data), 64):
        z, _ = data.get_batch(order[start : start + 64], torch.Generator().manual_seed(start))
        peak = max(peak, anonymous_kib() - before)
else:
    data = LatentDataset(cache, normalize=False, in_memory=True)
    peak = anonymous_kib() - before
print(peak)
"""


def _anonymous_growth_kib(cache: Path, mode: str) -> int:
    """Peak growth of a fresh process's resident anonymous memory (heap, not the file pages a memory map brings in)
    while it reads every row of `cache` memory-mapped (`mode="mapped"`) or loads it into memory."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(cache), mode], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


def test_the_mapped_cache_reader_stays_within_a_memory_limit_smaller_than_the_cache(tmp_path):
    """Reading every row of a 96 MiB cache through the memory-mapped path grows the process's own memory by less
    than a 16 MiB limit (mapped file pages belong to the kernel's page cache); loading it into memory does not."""
    from safetensors.torch import save_file

    from detok.checkpoint import write_json
    from detok.latents import CACHE_META

    rows, shards, shape = 1024, 3, (16, 16, 16)  # 16 KiB a latent, 2 latents a row: 32 MiB a shard
    gen = torch.Generator().manual_seed(0)
    for s in range(shards):
        plain = torch.randn(rows, *shape, generator=gen)
        save_file({"latents": plain, "latents_flip": plain.flip(-1).contiguous(),
                   "labels": torch.arange(rows) % 10}, str(tmp_path / f"shard-{s:05d}.safetensors"))  # fmt: skip
        del plain
    meta = {"count": rows * shards, "shards": shards, "latent_shape": list(shape), "token_layout": "2d"}
    meta.update(layout="grid", dtype="float32", num_classes=10, latent_mean=None, latent_std=None)
    write_json(tmp_path / CACHE_META, meta)
    cache_kib = sum(p.stat().st_size for p in tmp_path.glob("shard-*")) // 1024
    limit_kib = 16 * 1024
    assert cache_kib > 5 * limit_kib

    peak = _anonymous_growth_kib(tmp_path, "mapped")
    assert peak < limit_kib, f"mapped reading grew anonymous memory by {peak} KiB"
    assert _anonymous_growth_kib(tmp_path, "in-memory") > cache_kib * 0.9  # the measurement sees a cache in memory


# --------------------------------------------------------------------------------------------------
# Processes share the latent cache, sampling and scoring
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny tokenizer with latent statistics, a 3-class npz and a JPEG folder, a tiny untrained reference
    classifier, and a tiny generator trained for one step."""
    from detok import create_model
    from detok.checkpoint import save_model_folder
    from detok.eval.reference import ReferenceNet, ReferenceNetConfig
    from detok.latents import store_latent_stats
    from detok.training.generator import default_run_config as generator_config
    from detok.training.generator import train_generator

    root = tmp_path_factory.mktemp("scale")
    torch.manual_seed(0)
    tok = create_model(TINY).eval()
    save_model_folder(root / "tok", tok)
    store_latent_stats(root / "tok", [0.0] * tok.config.latent_channels, [1.0] * tok.config.latent_channels)
    rng = np.random.default_rng(0)
    np.savez(root / "d.npz", images=rng.integers(0, 256, (30, 32, 32), dtype=np.uint8), labels=np.arange(30) % 3)
    jpeg_folder(root / "imgs", classes=3, per_class=4)
    torch.manual_seed(1)
    save_model_folder(root / "ref", ReferenceNet(ReferenceNetConfig(widths=(4, 8), feature_dim=8, num_classes=3)))
    data = [f"data.root={root / 'd.npz'}", "data.name=npz"]
    train = ["train.progress=false", "train.threads=1", "train.batch_size=8", "train.images=8"]
    cfg = generator_config("sit-fmnist32-tiny", str(root / "tok"), None, data + train + ["train.sample_every=1000"])
    train_generator(cfg, root / "gen")
    return root


def scale_commands(root: Path, out: Path) -> list[list[str]]:
    """`latents cache` (a JPEG folder, one loader worker per process), `generator sample` and `eval generation`."""
    npz = ["--set", "name=npz", "--set", f"root={root / 'd.npz'}", "--threads", "1"]
    folder = ["--set", "name=image-folder", "--set", f"root={root / 'imgs'}", "--set", "resize=adm-center-crop"]
    return [
        ["latents", "cache", "--tokenizer", str(root / "tok"), "--out", str(out / "cache"), "--shard-size", "4",
         "--batch-size", "3", "--threads", "1", *folder, "--set", "workers=1"],
        ["generator", "sample", str(root / "gen"), "--num", "10", "--batch-size", "2", "--cfg", "2",
         "--out", str(out / "samples.npz"), "--threads", "1"],
        ["eval", "generation", str(root / "gen"), "--evaluator", f"reference:{root / 'ref'}", "--cfg", "1,2",
         "--num", "6", "--final-num", "9", "--batch-size", "1", "--out", str(out / "eval"), *npz],
    ]  # fmt: skip


SCALE_SCRIPT = """
import json, sys
from detok.cli import main
for argv in json.loads(sys.argv[1]):
    assert main(argv) == 0, argv
"""


def test_two_processes_cache_sample_and_score_what_one_process_does(models, tmp_path, monkeypatch, capsys):
    """torchrun, 2 processes (gloo): each encodes its shards, samples its parts of the class-balanced seeds and
    extracts their features; the cache, the samples and every score equal those of one process."""
    monkeypatch.setenv("DETOK_CACHE", str(tmp_path / "detok-cache"))
    for argv in scale_commands(models, tmp_path / "one"):
        assert cli_main(argv) == 0
    capsys.readouterr()
    script = tmp_path / "scale.py"
    script.write_text(SCALE_SCRIPT)
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    two = subprocess.run([*argv, json.dumps(scale_commands(models, tmp_path / "two"))], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]

    from safetensors.torch import load_file

    shards = sorted(p.name for p in (tmp_path / "one" / "cache").glob("shard-*"))
    assert shards == sorted(p.name for p in (tmp_path / "two" / "cache").glob("shard-*")) and len(shards) == 3
    for name in shards:
        a, b = load_file(tmp_path / "one" / "cache" / name), load_file(tmp_path / "two" / "cache" / name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "one" / "cache" / "latents.json").read_text() == (
        tmp_path / "two" / "cache" / "latents.json"
    ).read_text()
    with np.load(tmp_path / "one" / "samples.npz") as a, np.load(tmp_path / "two" / "samples.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in ("images", "labels"))
    assert not list((tmp_path / "two").glob("*.part*"))
    one = json.loads((tmp_path / "one" / "eval" / "generation.json").read_text())
    assert json.loads((tmp_path / "two" / "eval" / "generation.json").read_text()) == one
    assert one["final"]["num"] == 9 and one["final"]["fid"] > 0
