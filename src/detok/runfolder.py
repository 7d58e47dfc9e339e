"""Run folders: one folder belongs to one run of one kind, and to one writer at a time.

A training run claims its folder before it writes anything: the folder must be empty, new, or a run of the same kind
(a resume), never a model folder or a run of another kind (a generator's `--out` onto its tokenizer would overwrite
the tokenizer's weights), and no other live process may be writing there. The writer is recorded in `run.lock`
(pid, host, kind), created atomically as git creates `index.lock`; a second writer is refused naming the owner. A lock
left by a process that died on this host is stale: it is taken over with a note. A lock from another host cannot be
checked and is refused, saying to delete it if no run is using the folder.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_FILE = "run.lock"
RECORD_FILE = "run_config.json"
MODEL_CONFIG = "config.json"
LATENT_CACHE = "latents.json"

_held: set[Path] = set()  # the run folders whose lock this process holds


def check_run_kind(run_dir: Path, kind: str) -> None:
    """Refuse `run_dir` if it holds a model or run of another kind than `kind`, a model folder that is not a run (no
    run record and no checkpoints), or a latent cache; changes nothing on disk."""
    from detok.registry import get_preset

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} is a file, not a folder")
    if (run_dir / LATENT_CACHE).is_file():
        raise ValueError(f"{run_dir} holds a latent cache ({run_dir / LATENT_CACHE}): a {kind} run would overwrite it")
    config, record = run_dir / MODEL_CONFIG, run_dir / RECORD_FILE
    if config.is_file():
        other = _read_json(config).get("kind")
        if other != kind:
            raise ValueError(
                f"{run_dir} holds a {other or 'non-detok'} model ({config}): a {kind} run would overwrite it; "
                "give the run a folder of its own"
            )
        checkpoints = run_dir / "checkpoints"
        has_checkpoints = checkpoints.is_dir() and any(p.name.startswith("step-") for p in checkpoints.iterdir())
        if not record.is_file() and not has_checkpoints:  # a run whose record was lost still has its checkpoints
            raise ValueError(
                f"{run_dir} holds a {kind} model folder that is not a run (no {RECORD_FILE}): training into it would "
                "overwrite the model; give the run a folder of its own"
            )
    if record.is_file():
        preset = _read_json(record).get("run", {}).get("preset")
        try:
            other = get_preset(preset).kind if isinstance(preset, str) else None
        except KeyError:
            other = None
        if other is not None and other != kind:
            raise ValueError(f"{run_dir} holds a {other} run ({record}): a {kind} run would overwrite it")


def check_cache_folder(out_dir: Path) -> None:
    """Refuse to write a latent cache into a folder that holds a model or a training run (its shards and
    latents.json would sit among the run's files, and a later run into the folder would take them for its own)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"latent cache folder {out_dir} is a file, not a folder")
    for name in (MODEL_CONFIG, RECORD_FILE):
        if (out_dir / name).is_file():
            kind = _read_json(out_dir / name).get("kind") if name == MODEL_CONFIG else None
            what = f"{kind or 'non-detok'} model" if name == MODEL_CONFIG else "training run"
            raise ValueError(
                f"{out_dir} holds a {what} ({out_dir / name}): a latent cache would be written among its files; "
                "give the cache a folder of its own"
            )


def claim_run_folder(run_dir: Path, kind: str) -> None:
    """Check the folder's kind (`check_run_kind`), create it and take its lock; raises if another live process holds
    the lock. The lock is given back by `release_run_folder` (at the latest when this process exits)."""
    run_dir = Path(run_dir)
    check_run_kind(run_dir, kind)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_FILE
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "kind": kind, "started": round(time.time(), 3)}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            _take_over_if_stale(lock)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(mine) + "\n")
        _held.add(run_dir.resolve())
        return
    raise RuntimeError(f"could not take the lock {lock}: other processes keep taking it")


def release_run_folder(run_dir: Path) -> None:
    """Give back this process's lock on `run_dir` (nothing if it holds none)."""
    key = Path(run_dir).resolve()
    if key not in _held:
        return
    _held.discard(key)
    lock = Path(run_dir) / LOCK_FILE
    if _owner(lock).get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


@atexit.register
def _release_all() -> None:
    for run_dir in list(_held):
        release_run_folder(run_dir)


def _take_over_if_stale(lock: Path) -> None:
    """Remove `lock` if its owner is this process (an earlier run in it) or a process that died on this host; else
    raise naming the owner."""
    owner = _owner(lock)
    if not owner:
        if not lock.exists():
            return  # given back meanwhile
        raise RuntimeError(
            f"{lock} exists but is unreadable (a writer starting this instant, or a damaged lock): if no run is using "
            f"{lock.parent}, delete {lock}"
        )
    pid, host = owner.get("pid"), owner.get("host")
    here = host == socket.gethostname()
    if here and pid == os.getpid():
        reason = None  # an earlier run of this process that did not give it back
    elif here and isinstance(pid, int) and not _alive(pid):
        reason = f"process {pid} on {host} is gone"
    elif here:
        raise RuntimeError(
            f"{lock.parent} is in use by a {owner.get('kind', 'detok')} run (process {pid}, lock {lock}): wait for "
            "it to finish, or train into another folder"
        )
    else:
        raise RuntimeError(
            f"{lock.parent} is in use by a {owner.get('kind', 'detok')} run on host {host} (process {pid}, lock "
            f"{lock}), which this host cannot check: if no run is using the folder, delete {lock}"
        )
    # Move the stale lock aside before deleting it, and check that what moved is the lock read above: two processes
    # taking over the same stale lock must not remove each other's new one.
    aside = lock.with_name(f".{LOCK_FILE}.{os.getpid()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return
    if _owner(aside) != owner:  # another process took it over first: put its lock back
        try:
            os.link(aside, lock)
        except FileExistsError:
            pass
        aside.unlink(missing_ok=True)
        return
    aside.unlink(missing_ok=True)
    if reason:
        print(f"detok: note: took over the stale lock {lock} ({reason})", file=sys.stderr)


def _owner(lock: Path) -> dict:
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): this folder does not hold a detok run") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object: this folder does not hold a detok run")
    return data
