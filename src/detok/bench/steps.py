"""One resumable step of a suite: run it unless its `done.json` says it is done with the same settings; record its
result, settings, wall-clock time (interrupted attempts included) and commit."""

from __future__ import annotations

import json
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
    store its result, spec, wall-clock seconds and commit in the marker.

    A finished step made with other settings is an error, never silently reused or redone: a table must not mix
    budgets. The commit matters because a suite may be resumed by a later checkout: the table names every commit.
    """
    spec = json.loads(json.dumps(spec))  # tuples → lists, as they come back from the marker
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
    result = {**result, "spec": spec, "seconds": round(seconds, 1), "commit": commit()}
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
