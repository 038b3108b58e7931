"""Writing files so that a reader (or a run killed half-way) never sees part of one."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Callable


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


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_file_set(directory: str | Path, writers: dict[str, Callable[[Path], object]],
                   write_manifest: Callable[[dict[str, str]], object]) -> None:
    """Write several files of `directory` as one unit, told apart from a mix of old and new.

    Each `writers[name](tmp)` writes a temporary file; then `write_manifest({name: sha256})` commits
    the file that records them (head.json, model.json), and only then are the files renamed into
    place. A writer killed at any moment leaves the old set whole, the new set whole, or a manifest
    whose sha256s do not match: `mismatched_files` finds that, so loading refuses it clearly.
    """
    directory = Path(directory)
    temporaries: dict[str, Path] = {}
    try:
        for name, write in writers.items():
            temporaries[name] = tmp = temporary_path(directory / name)
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        write_manifest({name: file_sha256(tmp) for name, tmp in temporaries.items()})
        for name, tmp in temporaries.items():
            os.replace(tmp, directory / name)
    finally:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)


def mismatched_files(directory: str | Path, recorded: dict[str, str]) -> list[str]:
    """Names of `recorded` ({file name: sha256}) whose file in `directory` is missing or differs.
    Only plain names count as found: a recorded path never makes this read outside `directory`."""
    directory = Path(directory)
    return [name for name, sha in recorded.items()
            if Path(name).name != name or not (directory / name).is_file() or file_sha256(directory / name) != sha]
