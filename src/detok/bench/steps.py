"""One resumable step of a suite: run it unless its `done.json` says it is done with the same settings; record its
result, settings, wall-clock time (interrupted attempts included) and commit. Cells of one work folder that would
repeat another cell's steps exactly share them instead."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from detok.bench.results import commit
from detok.checkpoint import write_json

# --------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------


def run_step(marker: Path, spec: dict, fn: Callable[[], dict], log: Callable[[str], None]) -> dict:
    """Run `fn` unless `marker` records it as done with the same `spec` (the settings that decide its outcome);
    store its result, spec, wall-clock seconds, commit and finishing time in the marker.

    A finished step made with other settings is an error, never silently reused or redone: a table must not mix
    budgets. The commit matters because a suite may be resumed by a later checkout: the table names every commit.
    """
    spec = as_stored(spec)
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("spec") != spec:
            raise ValueError(
                f"{marker.parent} was made with {done.get('spec', 'unrecorded settings')}, but this run asks for "
                f"{spec}; use another --work folder, or delete {marker.parent} (and what was made from it) to redo it"
            )
        return done
    log(f"→ {marker.parent}")
    marker.parent.mkdir(parents=True, exist_ok=True)
    attempt = marker.parent / "attempt.json"
    earlier = interrupted_seconds(attempt)
    write_json(attempt, {"started": time.time(), "earlier_seconds": earlier})
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start + earlier
    # `finished` (Unix time) tells this training from another of the same spec (a cell completed in a later session)
    result = {
        **result,
        "spec": spec,
        "seconds": round(seconds, 1),
        "commit": commit(),
        "finished": round(time.time(), 3),
    }
    if earlier:
        result["interrupted_seconds"] = round(earlier, 1)
    write_json(marker, result)
    attempt.unlink()
    return result


def interrupted_seconds(attempt: Path) -> float:
    """Time spent by earlier, interrupted attempts of a step: each counted from its start to the newest file
    written beside `attempt` (0 when there was none)."""
    if not attempt.is_file():
        return 0.0
    record = json.loads(attempt.read_text())
    files = [f for f in attempt.parent.rglob("*") if f.is_file() and f != attempt]
    last = max((f.stat().st_mtime for f in files), default=record["started"])
    return record.get("earlier_seconds", 0.0) + max(0.0, last - record["started"])


# --------------------------------------------------------------------------------------------------
# Steps shared between cells of one work folder
# --------------------------------------------------------------------------------------------------
# Suites overlap: table2's baseline is the noise suite's g0 and the mask suite's m0 (the same overrides, seed and
# budget). Run in one --work folder, a cell whose tokenizer would be trained exactly as another cell's was links to
# that cell's steps instead of redoing them; each shared step keeps its one set of files and its one done.json.


def as_stored(spec):
    """`spec` as it comes back from a JSON record (tuples become lists)."""
    return json.loads(json.dumps(spec))


def _done_with(marker: Path, spec: dict) -> bool:
    """Whether `marker` records its step as done with exactly `spec`."""
    return marker.is_file() and json.loads(marker.read_text()).get("spec") == as_stored(spec)


def find_twin(work_dir: Path, cell: Path, tokenizer_spec: dict) -> Path | None:
    """The cell of `work_dir` (other than `cell`) whose own tokenizer is done with exactly `tokenizer_spec`, if any;
    a cell that itself links to another's tokenizer is not a twin (links never chain)."""
    if not work_dir.is_dir():
        return None
    for other in sorted(work_dir.iterdir()):
        tokenizer = other / "tokenizer"
        if other != cell and not other.is_symlink() and not tokenizer.is_symlink():
            if _done_with(tokenizer / "done.json", tokenizer_spec):
                return other
    return None


def share_step(folder: Path, twin: Path | None, specs: dict[str, dict], log: Callable[[str], None]) -> bool:
    """Link `folder` (a step folder of a cell) to the same folder of cell `twin` when every marker named in `specs`
    ({path under the folder: spec}) is done there with that spec. True when `folder` is (now) such a link.

    A folder already made in this cell is never replaced; one linked by an earlier run stays linked.
    """
    if folder.is_symlink():
        return True
    if twin is None or folder.exists():
        return False
    other = twin / folder.name
    if not all(_done_with(other / rel, spec) for rel, spec in specs.items()):
        return False
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(os.path.relpath(other, folder.parent), target_is_directory=True)
    log(f"↺ {folder} shares {other}")
    return True
