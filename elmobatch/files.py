"""Writing files so that a reader (or a run killed half-way) never sees part of one."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from collections.abc import Callable


def temporary_path(path: str | Path, tmp_dir: str | Path | None = None) -> Path:
    """Where to write `path` before renaming it into place: in `tmp_dir` (same file system) or
    beside `path`. The name starts with ".tmp-", so sweeps can find what a killed writer left."""
    path = Path(path)
    return Path(tmp_dir or path.parent) / f".tmp-{uuid.uuid4().hex[:8]}-{path.name}"


def commit(tmp: Path, path: str | Path) -> Path:
    """fsync `tmp`, then rename it over `path`: a reader sees the old file or the whole new one."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return Path(path)


def write_atomically(path: str | Path, write: Callable[[Path], object], tmp_dir: str | Path | None = None) -> Path:
    """Write `path` whole or not at all: `write(tmp)` writes a temporary file (`temporary_path`),
    which is then committed; on failure the temporary file is removed."""
    tmp = temporary_path(path, tmp_dir)
    try:
        write(tmp)
        return commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
