"""Memory estimates made before allocating: a setting that scales memory is refused, named, when even a lower bound of
what it needs exceeds the machine's memory, instead of dying in the allocator (or taking the machine down) later."""

from __future__ import annotations

import os


def physical_memory() -> int:
    """The machine's physical memory in bytes (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


def check_fits(nbytes: float, setting: str, what: str) -> None:
    """Refuse a lower-bound estimate `nbytes` of what `setting` (as the user gave it: "train.batch_size=…",
    "--num 10000000000") makes detok allocate for `what`, if it exceeds the machine's physical memory."""
    total = physical_memory()
    if total and nbytes > total:
        raise ValueError(
            f"{setting} needs at least {human_bytes(nbytes)} of memory for {what}, more than this machine's "
            f"{human_bytes(total)}: lower it"
        )
