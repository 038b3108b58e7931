"""Writing files so that a reader (or a run killed half-way) never sees part of one."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


def write_atomically(path: str | Path, write: Callable[[Path], object], tmp_dir: str | Path | None = None) -> Path:
    """Write `path` whole or not at all: `write(tmp)` writes a temporary file (in `tmp_dir`, on
    the same file system, or beside `path`), which is fsynced and renamed over `path`. A reader
    sees the old file or the new one; on failure the temporary file is removed. Temporary names
    start with ".tmp-", so sweeps can find what a killed writer left behind."""
    path = Path(path)
    tmp = Path(tmp_dir or path.parent) / f".tmp-{uuid.uuid4().hex[:8]}-{path.name}"
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
