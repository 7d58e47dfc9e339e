"""Failure behaviour through the CLI: every unusable input is one clear line and exit code 2, a diverged run exits 3
without saving anything non-finite, no data file runs code, and a killed run resumes to the same log.

Each case runs `detok` as a user would (in-process through `cli.main`, or as a subprocess where a real process
matters) and checks the exit code, that exactly one error line names the setting or file, and that no traceback
reached the user.
"""

import gzip
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import detok.data as data_mod
from detok.checkpoint import save_model_folder
from detok.cli import main as cli_main
from detok.registry import create_model

ROOT = Path(__file__).resolve().parents[1]
TINY = "detok-fmnist32-tiny"
QUIET = ["train.progress=false", "train.threads=1", "train.sample_every=1000"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """32 random 32×32 greyscale images with 4 classes."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(path, images=rng.integers(0, 256, (32, 32, 32), dtype=np.uint8), labels=rng.integers(0, 4, 32))
    return path


@pytest.fixture(scope="module")
def tok_folder(tmp_path_factory):
    """A tiny (untrained) tokenizer model folder."""
    folder = tmp_path_factory.mktemp("tok")
    torch.manual_seed(0)
    save_model_folder(folder, create_model(TINY))
    return folder


def run(capsys, *argv) -> tuple[int, str]:
    """Run `detok argv…`; returns (exit code, the single error line)."""
    rc = cli_main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("detok: error:")]
    assert len(errors) == (rc != 0), err
    return rc, errors[0] if errors else ""


def train_args(out, *sets, data=None):
    data = ["data.name=npz", f"data.root={data}"] if data is not None else []
    return ["tokenizer", "train", "--preset", TINY, "--out", out] + [
        a for s in [*data, *QUIET, *sets] for a in ("--set", s)
    ]


def strict_records(path: Path) -> list[dict]:
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------------------
# 1. No code runs from a data set; no unrestricted unpickling anywhere
# ---------------------------------------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar_batch_runs_nothing(capsys, tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    marker = tmp_path / "pwned"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    for name in names:
        with open(root / name, "wb") as f:
            pickle.dump({b"data": _Payload(marker), b"labels": [0]}, f)
    rc, line = run(capsys, *train_args(tmp_path / "run", "data.name=cifar10", f"data.root={tmp_path}"))
    assert rc == 2 and "data_batch_1" in line and "refused" in line and "os" in line
    assert not marker.exists()
    assert not (tmp_path / "run").exists()  # the failed run removed the folder it created


def test_no_unrestricted_unpickling_in_the_code():
    """No pickle.load/loads, np.load(allow_pickle=True) or torch.load without weights_only=True in src/."""
    offenders = []
    for path in (ROOT / "src").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"pickle\.loads?\(", code) or "allow_pickle=True" in code:
                offenders.append(f"{path}:{n}")
            if "torch.load(" in code and "weights_only=True" not in code:
                offenders.append(f"{path}:{n}")
    assert not offenders, offenders


# ---------------------------------------------------------------------------------------------------------------
# 2. A diverged run fails and saves nothing non-finite; NaN/Infinity are refused as settings
# ---------------------------------------------------------------------------------------------------------------


def test_a_diverged_run_exits_3_and_keeps_the_last_good_checkpoint(capsys, tmp_path, npz):
    out = tmp_path / "run"
    argv = train_args(out, "train.lr=1000", "train.images=320", "train.batch_size=8", "train.log_every=1", data=npz)
    rc, line = run(capsys, *argv, "--set", "train.ckpt_every=1")
    assert rc == 3 and re.search(r"diverged at step \d+: .*(loss|grad_norm) = (nan|inf)", line), line
    assert "last finite values (step" in line
    records = strict_records(out / "log.jsonl")  # strict JSON: no bare NaN
    diverged_at = int(re.search(r"step (\d+)", line).group(1))
    assert records[-1]["step"] == diverged_at - 1
    newest = sorted((out / "checkpoints").iterdir())[-1]
    assert newest.name == f"step-{diverged_at - 1:08d}" and newest.name in line
    for file in [out / "model.safetensors", *newest.glob("*.safetensors")]:
        assert all(torch.isfinite(t).all() for t in load_file(str(file)).values()), file


@pytest.mark.parametrize("setting", ["train.lr=Infinity", "train.lr=NaN", "train.grad_clip=NaN", "train.blr=-Infinity"])
def test_non_finite_settings_are_refused(capsys, tmp_path, setting):
    rc, line = run(capsys, *train_args(tmp_path / "run", setting), "--dry-run")
    assert rc == 2 and setting.split("=")[0] in line and "finite" in line


# ---------------------------------------------------------------------------------------------------------------
# 3, 4, 7, 9. Paths, ranges, labels: checked up front and named
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fashion-mnist", "cifar10", "npz", "image-folder"])
def test_an_explicit_root_that_does_not_exist_is_an_error(capsys, tmp_path, kind):
    rc, line = run(capsys, *train_args(tmp_path / "run", f"data.name={kind}", f"data.root={tmp_path}/nonexistent"))
    assert rc == 2 and f"{tmp_path}/nonexistent" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind, words", [("cifar10", "needs data.root"), ("npz", "needs data.root"),
                                         ("image-folder", "needs data.root")])  # fmt: skip
def test_a_dataset_kind_that_needs_a_root_says_so(capsys, tmp_path, kind, words):
    rc, line = run(capsys, *train_args(tmp_path / "run", f"data.name={kind}"))
    assert rc == 2 and words in line


@pytest.mark.parametrize(
    "setting, words",
    [
        ("model.latent_channels=0", "model.latent_channels must be ≥ 1, got 0"),
        ("model.latent_channels=-2", "model.latent_channels must be ≥ 1, got -2"),
        ("train.blr=-0.004", "train.blr must be > 0, got -0.004"),
        ("model.corruption.mask_max=1.5", "model.corruption.mask_max must be in [0, 1), got 1.5"),
        ("train.warmup_frac=2", "train.warmup_frac must be in [0, 1], got 2"),
        ("loss.kl_weight=-1", "loss.kl_weight must be ≥ 0"),
        ("model.patch_size=5", "patch size 5 does not divide"),
        ("train.foo=1", "unknown config key 'train.foo'"),
        ("train.batch_size=abc", "train.batch_size: expected an integer"),
    ],
)
def test_bad_settings_are_named_before_anything_runs(capsys, tmp_path, setting, words):
    rc, line = run(capsys, *train_args(tmp_path / "run", setting), "--dry-run")
    assert rc == 2 and words in line, line
    assert not line.startswith("detok: error: '")  # KeyError messages without repr quotes


def test_generator_model_settings_are_named_with_their_prefix(capsys, tok_folder):
    rc, line = run(capsys, "generator", "train", "--preset", "sit-fmnist32-tiny", "--tokenizer", tok_folder,
                   "--set", "model.depth=0", "--dry-run")  # fmt: skip
    assert rc == 2 and "model.depth must be ≥ 1, got 0" in line


def test_a_preset_typo_is_one_line(capsys, tmp_path):
    rc, line = run(
        capsys, "tokenizer", "train", "--preset", "detok-fmnist32-tiyn", "--out", tmp_path / "r", "--dry-run"
    )
    assert rc == 2 and "detok-fmnist32-tiyn" in line


def _npz(tmp_path, **arrays) -> Path:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "arrays, words",
    [
        ({"images": np.zeros((0, 28, 28), np.uint8)}, "holds no images"),
        ({"images": np.zeros((8, 28, 28), np.uint8), "labels": np.zeros(5, np.int64)}, "8 images but labels"),
        ({"images": np.zeros((4, 28, 28), np.uint8), "labels": np.array([0, 1, -1, 2])}, "non-negative"),
        ({"images": np.zeros((4, 28, 28), np.uint8), "labels": np.array([0.5, 1, 1, 2])}, "must be integers"),
        ({"images": np.zeros((4, 28, 28), np.float32)}, "must be uint8"),
        ({"images": np.zeros((4, 5, 28, 28), np.uint8)}, "channel axis"),
        ({"pictures": np.zeros((4, 28, 28), np.uint8)}, "no 'images' array"),
    ],
)
def test_bad_npz_datasets_are_one_line(capsys, tmp_path, arrays, words):
    path = _npz(tmp_path, **arrays)
    rc, line = run(capsys, *train_args(tmp_path / "run", data=path))
    assert rc == 2 and words in line and str(path) in line, line
    assert not (tmp_path / "run").exists()


def test_an_npz_with_object_arrays_is_refused_without_unpickling(capsys, tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, images=np.array([_Payload(tmp_path / "pwned")], dtype=object))
    rc, line = run(capsys, *train_args(tmp_path / "run", data=path))
    assert rc == 2 and str(path) in line and not (tmp_path / "pwned").exists()


def test_image_folders_are_scanned_before_training(capsys, tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "b" / "3.png").write_bytes(b"\x89PNG truncated")
    args = train_args(tmp_path / "run", "data.name=image-folder", f"data.root={tmp_path / 'imgs'}", "data.resize=pad")
    rc, line = run(capsys, *args)
    assert rc == 2 and "3.png" in line and "data.verify=false" in line
    assert not (tmp_path / "run").exists()
    (tmp_path / "imgs" / "empty").mkdir()  # an empty class folder still leaves images; an empty root does not
    rc, line = run(capsys, *train_args(tmp_path / "run", "data.name=image-folder", f"data.root={tmp_path / 'empty'}"))
    assert rc == 2


def test_an_empty_image_folder_is_one_line(capsys, tmp_path):
    (tmp_path / "imgs").mkdir()
    rc, line = run(capsys, *train_args(tmp_path / "run", "data.name=image-folder", f"data.root={tmp_path / 'imgs'}"))
    assert rc == 2 and "no images found" in line


# ---------------------------------------------------------------------------------------------------------------
# 5. A killed run resumes to the same log, line for line
# ---------------------------------------------------------------------------------------------------------------


def _spawn(out: Path, npz: Path) -> subprocess.Popen:
    argv = train_args(out, "train.images=1600", "train.batch_size=8", "train.log_every=1", "train.ckpt_every=10",
                      "train.keep_checkpoints=50", data=npz)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "detok.cli", *map(str, argv)], env=env, stderr=subprocess.PIPE)


def _comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time", "img_per_s", "data_wait")} for r in records]


def test_kill_9_between_checkpoints_then_rerun_gives_the_uninterrupted_log(tmp_path, npz):
    full = tmp_path / "full"
    assert _spawn(full, npz).wait(timeout=300) == 0
    cut = tmp_path / "cut"
    proc = _spawn(cut, npz)
    log = cut / "log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until a few steps past the first checkpoint, then kill -9
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= 13:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(line)["step"] for line in log.read_text().splitlines() if line.endswith("}")]
    newest = max(int(p.name[5:]) for p in (cut / "checkpoints").glob("step-*"))
    assert before[-1] > newest, "the kill must fall between two checkpoints for this test to mean anything"
    assert _spawn(cut, npz).wait(timeout=300) == 0
    assert _comparable(strict_records(cut / "log.jsonl")) == _comparable(strict_records(full / "log.jsonl"))


# ---------------------------------------------------------------------------------------------------------------
# 6. Damaged and foreign files name themselves; resume skips a damaged newest checkpoint
# ---------------------------------------------------------------------------------------------------------------


def _eval_args(folder, npz):
    return ["tokenizer", "eval", folder, "--evaluator", "none", "--lpips", "off", "--max-images", "8",
            "--set", "data.name=npz", "--set", f"data.root={npz}", "--threads", "1"]  # fmt: skip


def _copy_folder(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:100]), "truncated"),
        (lambda f: (f / "model.safetensors").write_bytes(pickle.dumps({"a": 1})), "not a safetensors file"),
        (lambda f: (f / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda f: (f / "config.json").write_text(json.dumps({"kind": "tokenizer", "model": {}})), "no 'arch'"),
        (lambda f: (f / "config.json").write_text(json.dumps({"arch": "Nope", "model": {}})), "unknown model arch"),
    ],
)
def test_damaged_model_folders_name_the_file(capsys, tmp_path, tok_folder, npz, damage, words):
    folder = _copy_folder(tok_folder, tmp_path / "tok")
    damage(folder)
    rc, line = run(capsys, *_eval_args(folder, npz))
    assert rc == 2 and words in line and str(folder) in line, line


def test_a_generator_folder_is_not_a_tokenizer(capsys, tmp_path, npz):
    save_model_folder(tmp_path / "gen", create_model("sit-fmnist32-tiny"))
    rc, line = run(capsys, *_eval_args(tmp_path / "gen", npz))
    assert rc == 2 and "not a tokenizer" in line


def test_a_latent_cache_of_another_shape_is_refused(capsys, tmp_path, tok_folder):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "latents.json").write_text(json.dumps({"latent_shape": [3, 2, 2], "num_classes": 4, "shards": 0}))
    rc, line = run(capsys, "generator", "train", "--preset", "sit-fmnist32-tiny", "--tokenizer", tok_folder,
                   "--latents", cache, "--dry-run")  # fmt: skip
    assert rc == 2 and "shape" in line and str(cache) in line


def test_resume_skips_a_damaged_newest_checkpoint(capsys, tmp_path, npz):
    out = tmp_path / "run"
    argv = train_args(out, "train.images=48", "train.batch_size=8", "train.ckpt_every=2", "train.keep_checkpoints=5",
                      data=npz)  # fmt: skip
    assert run(capsys, *argv)[0] == 0
    weights = out / "checkpoints" / "step-00000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    rc = cli_main([str(a) for a in argv])
    out_err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in out_err.err
    assert "skipping damaged checkpoint step-00000006" in out_err.out + out_err.err
    assert "resumed from" in out_err.out + out_err.err and "step-00000004" in out_err.out + out_err.err


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def test_pickled_objects_are_refused_in_every_weights_path(capsys, tmp_path, npz, tok_folder):
    out = tmp_path / "run"
    argv = train_args(out, "train.images=16", "train.batch_size=8", "train.ckpt_every=2", data=npz)
    assert run(capsys, *argv)[0] == 0
    torch.save({"optimizers": {}, "rng_cpu": _Evil()}, out / "checkpoints" / "step-00000002" / "state.pt")
    rc, line = run(capsys, *argv)  # training state (the only checkpoint): refused, named, no torch advice
    assert rc == 2 and "state.pt" in line and "refused" in line and "weights_only=False" not in line
    evil = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": _Evil()}, evil)  # perceptual-loss backbone
    vgg = ["loss.perceptual_weight=1", f"loss.perceptual_backbone={evil}"]
    rc, line = run(capsys, *train_args(tmp_path / "run2", *vgg, data=npz))
    assert rc == 2 and str(evil) in line and "refused" in line
    ref = _copy_folder(tok_folder, tmp_path / "ref")  # reference classifier folder with a pickle as its weights
    (ref / "config.json").write_text(json.dumps({"kind": "evaluator", "arch": "ReferenceNet", "model": {}}))
    (ref / "model.safetensors").write_bytes(pickle.dumps(_Evil()))
    samples = tmp_path / "s.npz"
    np.savez(samples, images=np.zeros((8, 32, 32, 1), np.uint8), labels=np.zeros(8, np.int64))
    rc, line = run(capsys, "eval", "samples", samples, "--evaluator", f"reference:{ref}", "--threads", "1")
    assert rc == 2 and "model.safetensors" in line


# ---------------------------------------------------------------------------------------------------------------
# 10. Downloads are verified
# ---------------------------------------------------------------------------------------------------------------


def test_a_download_that_does_not_match_the_published_checksum_is_deleted(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "DEBIAN_FMNIST", str(tmp_path / "nowhere"))
    monkeypatch.delenv("DETOK_DATA", raising=False)

    def fake_download(url, path):
        with gzip.open(path, "wb") as f:
            f.write(b"tampered")

    monkeypatch.setattr(data_mod.urllib.request, "urlretrieve", fake_download)
    target = tmp_path / "fm"
    rc, line = run(capsys, *train_args(tmp_path / "run", "data.download=true", f"data.root={target}"))
    assert rc == 2 and "published checksum" in line and "train-images-idx3-ubyte.gz" in line
    assert not any(target.iterdir())  # nothing unverified is left behind


def test_the_published_checksums_are_those_of_the_four_files():
    assert set(data_mod.FMNIST_MD5) == {n for pair in data_mod.FMNIST_FILES.values() for n in pair}
    assert all(re.fullmatch(r"[0-9a-f]{32}", v) for v in data_mod.FMNIST_MD5.values())


# ---------------------------------------------------------------------------------------------------------------
# 11. A run folder belongs to one run of one kind, and to one writer at a time (issue 39)
# ---------------------------------------------------------------------------------------------------------------


def _checksums(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def tok_with_stats(tmp_path_factory):
    """A tiny (untrained) tokenizer model folder with latent statistics, and the data set it is cached from."""
    from detok.latents import store_latent_stats

    root = tmp_path_factory.mktemp("tokstats")
    torch.manual_seed(0)
    tok = create_model(TINY)
    save_model_folder(root / "tok", tok)
    store_latent_stats(root / "tok", [0.0] * tok.config.latent_channels, [1.0] * tok.config.latent_channels)
    rng = np.random.default_rng(0)
    np.savez(root / "d.npz", images=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), labels=np.arange(8) % 4)
    return root


def _gen_args(tok, out, *sets):
    sets = ["train.images=8", "train.batch_size=4", *QUIET, *sets]
    return ["generator", "train", "--preset", "sit-fmnist32-tiny", "--tokenizer", tok, "--out", out] + [
        a for s in sets for a in ("--set", s)
    ]


def test_a_generator_out_onto_its_tokenizer_changes_nothing(capsys, tmp_path, tok_with_stats):
    tok = _copy_folder(tok_with_stats / "tok", tmp_path / "tok")
    data = {"name": "npz", "root": str(tok_with_stats / "d.npz"), "resize": "pad"}
    (tok / "run_config.json").write_text(json.dumps({"run": {"preset": TINY, "data": data}}))  # a tokenizer *run*
    before = _checksums(tok)
    rc, line = run(capsys, *_gen_args(tok, tok))
    assert rc == 2 and "holds a tokenizer model" in line and str(tok / "config.json") in line, line
    assert _checksums(tok) == before


def test_a_run_of_another_kind_or_a_bare_model_folder_is_not_trained_into(capsys, tmp_path, tok_with_stats, npz):
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "run_config.json").write_text(json.dumps({"run": {"preset": "sit-fmnist32-tiny"}}))  # a generator run
    rc, line = run(capsys, *train_args(gen, data=npz))
    assert rc == 2 and "holds a generator run" in line and str(gen / "run_config.json") in line, line
    model = _copy_folder(tok_with_stats / "tok", tmp_path / "model")  # a tokenizer model folder, not a run
    before = _checksums(model)
    rc, line = run(capsys, *train_args(model, data=npz))
    assert rc == 2 and "not a run" in line and str(model) in line, line
    assert _checksums(model) == before


def _finished_run(capsys, out, npz):
    argv = train_args(out, "train.images=16", "train.batch_size=8", data=npz)
    assert run(capsys, *argv)[0] == 0
    return argv


def test_a_second_writer_into_a_live_run_folder_is_refused(capsys, tmp_path, npz):
    out = tmp_path / "run"
    argv = _finished_run(capsys, out, npz)
    argv[argv.index("train.images=16")] = "train.images=32"  # would train on: a real change if it ran
    argv += ["--set", "train.images=32"]
    owner = subprocess.Popen(["sleep", "60"])  # a live process on this host holds the lock
    try:
        (out / "run.lock").write_text(json.dumps({"pid": owner.pid, "host": os.uname().nodename, "kind": "tokenizer"}))
        before = _checksums(out)
        rc, line = run(capsys, *argv)
        assert rc == 2 and "in use by a tokenizer run" in line and f"process {owner.pid}" in line, line
        assert str(out / "run.lock") in line and _checksums(out) == before
    finally:
        owner.kill()
        owner.wait()


def test_a_lock_from_another_host_is_refused_and_a_stale_one_taken_over(capsys, tmp_path, npz):
    out = tmp_path / "run"
    argv = _finished_run(capsys, out, npz)
    (out / "run.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere.invalid", "kind": "tokenizer"}))
    rc, line = run(capsys, *argv)
    assert rc == 2 and "elsewhere.invalid" in line and f"delete {out / 'run.lock'}" in line, line
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is no longer a process
    (out / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "kind": "tokenizer"}))
    rc = cli_main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 0 and f"took over the stale lock {out / 'run.lock'}" in err and "Traceback" not in err
    assert not (out / "run.lock").exists()  # given back at the end


def test_two_writers_started_at_once_leave_one_log(tmp_path, npz):
    out = tmp_path / "run"
    procs = [_spawn(out, npz) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1].decode() for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], errs
    refused = next(e for p, e in zip(procs, errs) if p.returncode == 2)
    assert "in use by a tokenizer run" in refused and "Traceback" not in refused
    steps = [r["step"] for r in strict_records(out / "log.jsonl")]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


# ---------------------------------------------------------------------------------------------------------------
# 12. Labels are checked by value and dtype; a latent cache is bound to the tokenizer weights that made it
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, words",
    [
        (np.array([0, 1, 2**63 + 7, 1], np.uint64), "label 9223372036854775815 is beyond"),
        (np.array([0, 1, 1e20, 1]), "beyond the limit of 1,000,000 classes"),
        (np.array([0, 1, 9e12, 1], np.int64), "label 9000000000000 is beyond"),
        (np.array([0, 1, np.inf, 1]), "beyond"),
        (np.array([0, 1, np.nan, 1]), "must be integers"),
        (np.array([True, False, True, True]), "must be integers"),
    ],
)
def test_labels_are_checked_by_value_and_dtype(capsys, tmp_path, labels, words):
    path = _npz(tmp_path, images=np.zeros((4, 28, 28), np.uint8), labels=labels)
    rc, line = run(capsys, *train_args(tmp_path / "run", data=path))
    assert rc == 2 and words in line and str(path) in line, line
    assert not (tmp_path / "run").exists()


def _latent_cache(capsys, root: Path, tok: Path, out: Path) -> Path:
    argv = ["latents", "cache", "--tokenizer", tok, "--out", out, "--shard-size", "4", "--threads", "1",
            "--set", "name=npz", "--set", f"root={root / 'd.npz'}"]  # fmt: skip
    assert run(capsys, *argv)[0] == 0
    return out


def test_a_latent_shard_label_beyond_the_class_count_is_refused(capsys, tmp_path, tok_with_stats):
    cache = _latent_cache(capsys, tok_with_stats, tok_with_stats / "tok", tmp_path / "cache")
    shard = cache / "shard-00001.safetensors"
    from safetensors.torch import save_file

    tensors = load_file(str(shard))
    tensors["labels"][2] = 57  # the cache has 4 classes
    save_file(tensors, str(shard))
    rc, line = run(capsys, *_gen_args(tok_with_stats / "tok", tmp_path / "gen"), "--latents", cache)
    assert rc == 2 and "label 57 is beyond the 4 classes" in line and str(shard) in line, line


def test_a_latent_cache_of_other_tokenizer_weights_is_refused(capsys, tmp_path, tok_with_stats):
    other = _copy_folder(tok_with_stats / "tok", tmp_path / "other")  # same statistics, other weights
    weights = load_file(str(other / "model.safetensors"))
    from safetensors.torch import save_file

    save_file(
        {k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}, str(other / "model.safetensors")
    )
    cache = _latent_cache(capsys, tok_with_stats, other, tmp_path / "cache")
    rc, line = run(capsys, *_gen_args(tok_with_stats / "tok", tmp_path / "gen"), "--latents", cache)
    assert rc == 2 and "other tokenizer weights" in line and str(cache) in line, line
    assert not (tmp_path / "gen").exists()


# ---------------------------------------------------------------------------------------------------------------
# 13. Every numeric option is checked as config fields are; a usage error is one line
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, words",
    [
        (["generator", "sample", "g", "--out", "x.npz", "--num", "0"], "argument --num: must be ≥ 1, got 0"),
        (["generator", "sample", "g", "--out", "x.npz", "--cfg", "nan"], "argument --cfg: must be a finite number"),
        (["generator", "sample", "g", "--out", "x.npz", "--cfg", "inf"], "argument --cfg: must be a finite number"),
        (["generator", "sample", "g", "--out", "x.npz", "--cfg", "-1"], "argument --cfg: must be ≥ 0, got -1"),
        (["generator", "sample", "g", "--out", "x.npz", "--cfg-interval", "0.5,nan"], "--cfg-interval takes two"),
        (["generator", "sample", "g", "--out", "x.npz", "--temperature", "0"], "argument --temperature: must be > 0"),
        (["generator", "sample", "g", "--out", "x.npz", "--batch-size", "-4"], "argument --batch-size: must be ≥ 1"),
        (["generator", "sample", "g", "--out", "x.npz", "--num", "1e3"], "argument --num: expected an integer"),
        (["captions", "make", "--out", "c", "--per-image", "0"], "argument --per-image: must be ≥ 1, got 0"),
        (["captions", "make", "--out", "c", "--per-image", "-3"], "argument --per-image: must be ≥ 1, got -3"),
        (
            ["captions", "make", "--out", "c", "--held-out-per-class", "-1"],
            "argument --held-out-per-class: must be ≥ 0",
        ),
        (["latents", "cache", "--tokenizer", "t", "--out", "c", "--shard-size", "0"], "argument --shard-size"),
        (["eval", "generation", "g", "--final-num", "0"], "argument --final-num: must be ≥ 1"),
        (["tokenizer", "eval", "t", "--threads", "-1"], "argument --threads: must be ≥ 0"),
        (["bench", "reproduce", "--suite", "nosuch"], "argument --suite: invalid choice: 'nosuch'"),
        (["generator", "sample", "g"], "the following arguments are required: --out"),
    ],
)
def test_numeric_options_are_checked_like_config_fields(capsys, tmp_path, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    rc, line = run(capsys, *argv)
    assert rc == 2 and words in line, line
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_report_of_a_folder_that_is_not_a_run_is_refused(capsys, tmp_path):
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "notes.txt").write_text("hello")
    rc, line = run(capsys, "report", tmp_path / "notarun", "--out", tmp_path / "rep")
    assert rc == 2 and "is not a run directory" in line and "notarun" in line
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("setting", ["train.lr=nan", "train.grad_clip=nan", "train.lr=inf", "train.blr=-inf"])
def test_a_lower_case_nan_is_refused_as_not_finite(capsys, tmp_path, setting):
    rc, line = run(capsys, *train_args(tmp_path / "run", setting), "--dry-run")
    assert rc == 2 and f"{setting.split('=')[0]} must be a finite number" in line and "typing" not in line, line


# ---------------------------------------------------------------------------------------------------------------
# 14. Settings that scale memory are bounded by an estimate before allocation; config.json is checked before building
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [10**12, 10**9])
def test_a_batch_size_beyond_memory_is_refused_by_dry_run(capsys, tmp_path, batch):
    rc, line = run(capsys, *train_args(tmp_path / "run", f"train.batch_size={batch}"), "--dry-run")
    assert rc == 2 and f"train.batch_size={batch} needs at least" in line and "more than this machine's" in line


def test_a_sample_count_beyond_memory_is_refused_before_sampling(capsys, tmp_path, tok_with_stats):
    gen = tmp_path / "gen"
    assert run(capsys, *_gen_args(tok_with_stats / "tok", gen))[0] == 0
    rc, line = run(capsys, "generator", "sample", gen, "--out", tmp_path / "s.npz", "--num", 10**10, "--threads", 1)
    assert rc == 2 and "num=10000000000 needs at least" in line
    assert not list(tmp_path.glob("s*"))


def test_a_config_json_describing_a_huge_model_is_refused_before_building_it(capsys, tmp_path, tok_folder, npz):
    folder = _copy_folder(tok_folder, tmp_path / "tok")
    raw = json.loads((folder / "config.json").read_text())
    raw["model"]["enc_width"] = 262144  # 550 G parameters: ~2 TB if built
    (folder / "config.json").write_text(json.dumps(raw))
    rc, line = run(capsys, *_eval_args(folder, npz))
    assert rc == 2 and str(folder / "config.json") in line and "nothing was built" in line, line


def test_a_tokenizer_whose_latent_std_is_zero_is_refused_naming_its_config(capsys, tmp_path, tok_with_stats):
    tok = _copy_folder(tok_with_stats / "tok", tmp_path / "tok")
    raw = json.loads((tok / "config.json").read_text())
    raw["model"]["latent_std"] = [0.0] * len(raw["model"]["latent_std"])
    (tok / "config.json").write_text(json.dumps(raw))
    rc, line = run(capsys, *_gen_args(tok, tmp_path / "gen"))
    assert rc == 2 and f"{tok / 'config.json'}: model.latent_std must be positive" in line and "stats" in line, line
    assert not (tmp_path / "gen").exists()


# ---------------------------------------------------------------------------------------------------------------
# 15. Messages that named no file, or misled: now one line naming it
# ---------------------------------------------------------------------------------------------------------------


def _samples_file(tmp_path: Path, name: str, make) -> Path:
    path = tmp_path / name
    make(path)
    return path


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: np.savez(p, images=np.zeros((8, 17, 5), np.uint8)), "'images' must be uint8 (N, H, W, C)"),
        (lambda p: p.write_bytes(b"not a zip archive at all " * 4), "is not an .npz archive"),
        (lambda p: np.savez(p, images=np.array([object()], dtype=object)), "holds Python objects"),
        (lambda p: np.savez(p, images=np.zeros((8, 32, 32, 1), np.uint8), labels=np.full(8, 2.0**70)), "beyond"),
    ],
)
def test_eval_samples_of_a_bad_npz_is_one_line_naming_it(capsys, tmp_path, make, words):
    path = _samples_file(tmp_path, "s.npz", make)
    rc, line = run(capsys, "eval", "samples", path, "--threads", "1")
    assert rc == 2 and words in line and str(path) in line, line
    assert "allow_pickle" not in line and "pickle.load" not in line  # never advise an unsafe load


def test_a_non_zip_npz_data_set_is_never_advised_to_be_unpickled(capsys, tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(pickle.dumps({"images": [1, 2]}))
    rc, line = run(capsys, *train_args(tmp_path / "run", data=path))
    assert rc == 2 and str(path) in line and "allow_pickle" not in line, line


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: p.write_text("[1, 2]"), "holds a JSON list"),
        (lambda p: p.write_text('{"suite": "tab'), "not valid JSON"),
        (lambda p: np.savez(p, images=np.array([object()], dtype=object)), "not valid JSON"),
    ],
)
def test_bench_restore_of_something_that_is_not_a_results_json_names_it(capsys, tmp_path, make, words):
    path = _samples_file(tmp_path, "r.npz" if "savez" in repr(make.__code__.co_names) else "r.json", make)
    rc, line = run(capsys, "bench", "reproduce", "--budget", "smoke", "--restore", path,
                   "--out", tmp_path / "o", "--work", tmp_path / "w")  # fmt: skip
    assert rc == 2 and f"--restore {path} is not a results.json" in line and words in line, line
    assert not (tmp_path / "o").exists()


def test_text_encoder_training_on_an_empty_caption_set_is_one_line(capsys, tmp_path):
    from detok.text.captions import CaptionSet

    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(12) % 3)
    data = {"name": "npz", "root": str(tmp_path / "d.npz"), "image_size": 32, "channels": 1, "resize": "pad"}
    empty = CaptionSet([], {"train": np.full((12, 1), -1, np.int32)}, {}, {}, data)
    empty.save(tmp_path / "caps")
    rc, line = run(capsys, "text-encoder", "train", "--preset", "text-encoder-fmnist32-tiny", "--captions",
                   tmp_path / "caps", "--out", tmp_path / "enc", "--set", "train.threads=1")  # fmt: skip
    assert rc == 2 and f"caption set {tmp_path / 'caps'} has no training image with a caption" in line, line
    assert not (tmp_path / "enc").exists()


def test_an_image_size_the_patch_does_not_divide_names_the_setting(capsys, tmp_path):
    rc, line = run(capsys, *train_args(tmp_path / "run", "model.image_size=30", "data.image_size=30"), "--dry-run")
    assert rc == 2 and "model.image_size must be a multiple of the patch size" in line, line


def test_a_named_pipe_called_png_in_an_image_folder_does_not_hang(capsys, tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(tmp_path / "imgs" / "a" / f"{i}.png")
    os.mkfifo(tmp_path / "imgs" / "a" / "x.png")
    argv = train_args(tmp_path / "run", "data.name=image-folder", f"data.root={tmp_path / 'imgs'}", "data.resize=pad",
                      "train.images=8", "train.batch_size=4")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "detok.cli", *map(str, argv)], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("detok: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "x.png is not a regular file" in errors[0]
