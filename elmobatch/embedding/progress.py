"""Progress reporting for every long command: a live bar on a terminal, plain lines otherwise.

    progress = Progress(label="score")      # bar on stderr if it is a terminal, else log lines
    progress.update(rows_done, fraction)    # after each batch or chunk; fraction in [0, 1]
    progress.close()

The plain lines (one every `every_s` seconds, and one at the end) go to the `elmobatch.progress`
logger at INFO, so `--quiet` silences them and a program using the library decides where they go;
given a `stream`, they are written there instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
import sys
import time

logger = logging.getLogger("elmobatch.progress")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """`update(rows, fraction)` after each batch or chunk; `close()` at the end. fraction is in [0, 1]."""

    def __init__(self, stream=None, *, label: str = "embed", unit: str = "rows", tty: bool | None = None,
                 every_s: float = 5.0):
        self.stream = stream
        self.tty = self._bar_stream.isatty() if tty is None else tty
        self.label, self.unit, self.every_s = label, unit, every_s
        self.start = self.last = time.monotonic()
        self.rows, self.fraction, self.unreported = 0, 0.0, False

    @property
    def _bar_stream(self):
        """The stream given, else sys.stderr as it is now (a test runner may have replaced it)."""
        return self.stream or sys.stderr

    def line(self, rows: int, fraction: float) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = rows / elapsed
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else 0.0
        return f"{self.label}: {rows:,} {self.unit}  {fraction:6.1%}  {rate:,.0f} {self.unit}/s  ETA {_clock(eta)}"

    def update(self, rows: int, fraction: float) -> None:
        now = time.monotonic()
        self.rows, self.fraction, self.unreported = rows, fraction, True
        if self.tty:
            width = 24
            done = int(width * min(fraction, 1.0))
            self._bar_stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {self.line(rows, fraction)}   ")
            self._bar_stream.flush()
        elif now - self.last >= self.every_s:
            self._plain(self.line(rows, fraction))
            self.last, self.unreported = now, False

    def close(self) -> None:
        """End the bar's line; without a terminal, report the last update if no line showed it."""
        if self.tty:
            self._bar_stream.write("\n")
            self._bar_stream.flush()
        elif self.unreported:
            elapsed = time.monotonic() - self.start
            self._plain(f"{self.line(self.rows, self.fraction)}  (done in {_clock(elapsed)})")
            self.unreported = False

    def _plain(self, text: str) -> None:
        if self.stream is None:
            logger.info(text)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()


def within_chunk(progress: Progress | None, rows_before: int, chunk_rows: int, start: float,
                 end: float) -> Callable[[float], None] | None:
    """A callback for the encoder's batches inside one chunk: given the fraction of the chunk's
    computing done, it moves `progress` that far between the chunk's first and last row (and
    between the run fractions `start` and `end`), so a long chunk shows progress before it ends.
    None without a progress."""
    if progress is None:
        return None

    def update(fraction: float) -> None:
        progress.update(rows_before + int(chunk_rows * fraction), start + (end - start) * fraction)

    return update
