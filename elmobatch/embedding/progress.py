"""Progress reporting: a live bar on a terminal, plain periodic log lines otherwise."""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """`update(rows, fraction)` after each chunk; `close()` at the end. fraction is in [0, 1]."""

    def __init__(self, stream=None, *, tty: bool | None = None, every_s: float = 10.0):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s
        self.start = self.last = time.monotonic()

    def line(self, rows: int, fraction: float) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = rows / elapsed
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else 0.0
        return f"embed: {rows:,} rows  {fraction:6.1%}  {rate:,.0f} rows/s  ETA {_clock(eta)}"

    def update(self, rows: int, fraction: float) -> None:
        now = time.monotonic()
        if self.tty:
            width = 24
            done = int(width * min(fraction, 1.0))
            self.stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {self.line(rows, fraction)}   ")
            self.stream.flush()
        elif now - self.last >= self.every_s:
            self.stream.write(self.line(rows, fraction) + "\n")
            self.stream.flush()
            self.last = now

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
