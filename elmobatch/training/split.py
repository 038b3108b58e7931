"""Which labelled rows train a head and which are held out to measure it.

    parse_split("last:0.2").indices(5572)  # -> (rows 0..4456, rows 4457..5571): the reference split
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from elmobatch.errors import ElmobatchError


class SplitError(ElmobatchError, ValueError):
    """A --split setting that is not last:FRACTION or random:FRACTION[:SEED]."""


@dataclass(frozen=True)
class Split:
    """Which rows are held out: the last `fraction` by position, or a seeded random `fraction`."""

    kind: str
    fraction: float
    seed: int | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.fraction:g}" + (f":{self.seed}" if self.kind == "random" else "")

    def indices(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (train, test) positions in 0..n-1, each sorted. Train is floor((1 - fraction) * n) rows."""
        n_train = math.floor((1 - self.fraction) * n + 1e-9)
        order = np.arange(n) if self.kind == "last" else np.random.default_rng(self.seed).permutation(n)
        return np.sort(order[:n_train]), np.sort(order[n_train:])


def parse_split(spec: str) -> Split:
    """'last:0.2' or 'random:0.2:SEED' (the seed defaults to 0); a fraction of 0 holds nothing out."""
    parts = str(spec).split(":")
    usage = "expected last:FRACTION or random:FRACTION[:SEED] with 0 <= FRACTION < 1, e.g. last:0.2"
    if parts[0] not in ("last", "random") or len(parts) not in ((2,) if parts[0] == "last" else (2, 3)):
        raise SplitError(f"--split {spec!r}: {usage}")
    try:
        fraction = float(parts[1])
        seed = int(parts[2]) if len(parts) == 3 else (0 if parts[0] == "random" else None)
    except ValueError:
        raise SplitError(f"--split {spec!r}: {usage}") from None
    if not 0 <= fraction < 1:
        raise SplitError(f"--split {spec!r}: {usage}")
    return Split(parts[0], fraction, seed)
