"""Progress of long loops: tqdm's bar on a terminal, plain lines in a log.

Written to a file, a pipe or a CI console (anything but a terminal), a redrawn bar is carriage-return frames that
`less`, `grep` and log viewers cannot read. There the same loop writes one line when it starts, one every
`INTERVAL_S` seconds, and one when it ends, each with the step, the rate and the time left:

    tokenizer: 120/400 step (30%), 2.31 step/s, elapsed 00:52, ETA 02:01, loss=0.1234, img_s=450

Every loop of detok takes its bar from here (`from detok.progress import tqdm`), with tqdm's own arguments.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm as _terminal_bar

INTERVAL_S = 30.0  # between two lines of a log; a terminal's bar redraws as tqdm decides


def tqdm(iterable=None, *args, **kwargs) -> _terminal_bar:
    """A progress bar with tqdm's interface: tqdm's own when its stream (`file`, default stderr) is a terminal,
    else `LogLines`."""
    stream = kwargs.get("file") or sys.stderr
    isatty = getattr(stream, "isatty", None)
    terminal = bool(isatty and isatty())
    return (_terminal_bar if terminal else LogLines)(iterable, *args, **kwargs)


class LogLines(_terminal_bar):
    """tqdm's counting with plain lines for a log: at the start, every INTERVAL_S seconds and at the end; never a
    carriage return or a cursor movement."""

    def __init__(self, *args, **kwargs):
        # tqdm calls display() at most once a mininterval; its monitor thread forces one after maxinterval
        kwargs.update(mininterval=INTERVAL_S, maxinterval=INTERVAL_S, miniters=1)
        self._last_line = None  # when display() last wrote (set_postfix and refresh call it at any time)
        super().__init__(*args, **kwargs)

    def __str__(self) -> str:
        d = self.format_dict
        n, total, elapsed, unit = d["n"], d["total"], d["elapsed"], d["unit"]
        rate = (n - d["initial"]) / elapsed if elapsed > 0 else None  # the average since this process started
        parts = [f"{n}/{total} {unit} ({100 * n / total:.0f}%)" if total else f"{n} {unit}"]
        parts.append(f"{self.format_sizeof(rate)} {unit}/s" if rate else f"? {unit}/s")
        parts.append(f"elapsed {self.format_interval(elapsed)}")
        if total and rate:
            parts.append(f"ETA {self.format_interval(max(0.0, (total - n) / rate))}")
        if d["postfix"]:
            parts.append(d["postfix"])
        return (f"{d['prefix']}: " if d["prefix"] else "") + ", ".join(parts)

    def display(self, msg: str | None = None, pos: int | None = None, last: bool = False) -> bool:
        if msg == "":  # tqdm clearing its bar: a log has nothing to clear
            return False
        now = time.monotonic()
        if not last and self._last_line is not None and now - self._last_line < INTERVAL_S:
            return False
        self._last_line = now
        self.fp.write(f"{self if msg is None else msg}\n")
        self.fp.flush()
        return True

    def clear(self, nolock: bool = False) -> None:
        pass

    def close(self) -> None:
        if not self.disable:
            self.display(last=True)  # the last line: the whole count, its average rate and time
            self.leave = False  # tqdm's own close then only clears, which display() makes a no-op
        super().close()
