"""Writing files so that a reader (or a run killed half-way) never sees part of one, and CSV
that reads back exactly.

A file is written under a temporary name, then renamed into place. Temporary names start with
".tmp-" and end with ".tmp", so no reader's `*.parquet` / `*.csv` glob matches one, and outputs
put them in a `_tmp/` folder (`staging`), which Spark, Hive, pyarrow and DuckDB globs skip.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import os
import re
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from collections.abc import Callable, Iterator, Mapping
from typing import TextIO

from elmobatch.errors import ElmobatchError
from elmobatch.storage import StoredPath, open_binary

STAGING = "_tmp"


class WriteError(ElmobatchError, OSError):
    """A file could not be written (e.g. the disk is full); the message names the file."""


def temporary_name(name: str) -> str:
    """.tmp-<random>-<name>.tmp: what sweeps look for, and what no `*.parquet`/`*.csv` glob matches."""
    return f".tmp-{uuid.uuid4().hex[:8]}-{name}.tmp"


def temporary_path(path: str | Path, tmp_dir: str | Path | None = None) -> Path:
    """Where to write `path` before renaming it into place: in `tmp_dir` (same file system) or
    beside `path`, named by temporary_name, so sweeps can find what a killed writer left."""
    path = Path(path)
    return Path(tmp_dir or path.parent) / temporary_name(path.name)


@contextlib.contextmanager
def staging(path: str | Path) -> Iterator[Path]:
    """The `_tmp/` folder beside `path` while in use; removed afterwards when this call made it and
    it is empty (a `_tmp/` made by another writer is theirs to remove)."""
    directory = Path(path).parent / STAGING
    made = not directory.is_dir()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        yield directory
    finally:
        if made:
            remove_if_empty(directory)


def remove_if_empty(directory: Path) -> None:
    """Drop a staging folder nobody is using any more (a folder still in use is kept)."""
    with contextlib.suppress(OSError):
        directory.rmdir()


def sweep_temporaries(directory: str | Path, name: str | None = None) -> list[Path]:
    """Remove temporary files a killed writer left in `directory` or its `_tmp/` (those of the
    file `name` only, if given; else all). Only for a directory no live writer uses. Returns them."""
    # this version's names end in .tmp; earlier versions' did not
    patterns = [f".tmp-????????-{glob.escape(name)}{end}" for end in ("", ".tmp")] if name else [".tmp-*"]
    directory = Path(directory)
    found = [tmp for where in (directory, directory / STAGING) for pattern in patterns for tmp in where.glob(pattern)]
    for tmp in found:
        tmp.unlink(missing_ok=True)
    remove_if_empty(directory / STAGING)
    return found


def only_temporaries(directory: Path | StoredPath) -> bool:
    """Whether the folder (or prefix) `directory` holds nothing but temporaries (temporary_name)."""
    return all(entry.name.startswith(".tmp-") for entry in directory.iterdir())


def sweep_uploads(prefix: StoredPath) -> list[StoredPath]:
    """Remove the temporary objects of `upload` that a writer killed during its copy left anywhere
    under `prefix`. Only for a prefix no live writer uses (its lease held). Returns them."""
    found = list(prefix.sizes(".tmp-*.tmp", recursive=True))
    for tmp in found:
        tmp.unlink(missing_ok=True)
    return found


def write_error(exc: OSError, path: str | Path) -> WriteError:
    """`exc` as a WriteError naming `path` (a failed write on an open file names no file), in the
    system's words for its errno (pyarrow gives that only inside its message)."""
    found = re.search(r"\[errno (\d+)\]", str(exc), re.IGNORECASE)
    code = exc.errno or (int(found.group(1)) if found else None)
    return WriteError(f"{path}: cannot write ({os.strerror(code) if code else exc})")


def commit(tmp: Path, path: str | Path) -> Path:
    """fsync `tmp`, rename it over `path`, then fsync the folder: a reader sees the old file or the
    whole new one, and after a power cut the rename is not lost."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_directory(Path(path).parent)
    return Path(path)


def _fsync_directory(directory: Path) -> None:
    """Make the folder's entries durable (POSIX); where a folder cannot be opened or synced (Windows), skip it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: str | Path | StoredPath, write: Callable[[Path], object],
                     tmp_dir: str | Path | StoredPath | None = None) -> Path | StoredPath:
    """Write `path` whole or not at all: `write(tmp)` writes a temporary file (`temporary_path`),
    which is then committed; on failure the temporary file is removed, and an OSError (e.g. disk
    full) is raised as a WriteError naming `path`. A stored object (s3://) is written to a local
    temporary file, then uploaded whole (`upload`)."""
    if isinstance(path, StoredPath):
        return _upload_atomically(path, write)
    tmp = temporary_path(path, None if isinstance(tmp_dir, StoredPath) else tmp_dir)
    try:
        with named_write_errors(path):
            write(tmp)
            return commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _upload_atomically(path: StoredPath, write: Callable[[Path], object]) -> StoredPath:
    with tempfile.TemporaryDirectory(prefix="elmobatch-upload-") as directory:
        tmp = Path(directory) / path.name
        write(tmp)
        return upload(tmp, path)


def upload(local: Path, path: StoredPath) -> StoredPath:
    """Copy the local file `local` to the object `path`, whole or not at all, through a temporary
    object beside it (StoredPath.upload; not in a `_tmp/` prefix, which pyarrow would leave behind as
    an empty marker); a failure is a WriteError naming `path`."""
    try:
        path.upload(local, via=path.parent / temporary_name(path.name))
    except OSError as exc:
        raise WriteError(f"{path}: cannot write ({exc})") from exc
    return path


def file_sha256(path) -> str:
    """Hex sha256 of a file's (or stored object's) bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open_binary(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_file_set(directory: str | Path, writers: Mapping[str, Callable[[Path], object]],
                   write_manifest: Callable[[dict[str, str]], object]) -> None:
    """Write several files of `directory` as one unit, told apart from a mix of old and new.

    Each `writers[name](tmp)` writes a temporary file; then `write_manifest({name: sha256})` commits
    the file that records them (head.json, model.json), and only then are the files renamed into
    place. A writer killed at any moment leaves the old set whole, the new set whole, or a manifest
    whose sha256s do not match: `mismatched_files` finds that, so loading refuses it clearly.
    An OSError (e.g. disk full) while writing or renaming is raised as a WriteError naming the file.
    """
    directory = Path(directory)
    temporaries: dict[str, Path] = {}
    try:
        with named_write_errors(directory):
            directory.mkdir(parents=True, exist_ok=True)
        for name, write in writers.items():
            temporaries[name] = tmp = temporary_path(directory / name)
            with named_write_errors(directory / name):
                write(tmp)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
        write_manifest({name: file_sha256(tmp) for name, tmp in temporaries.items()})
        for name, tmp in temporaries.items():
            with named_write_errors(directory / name):
                os.replace(tmp, directory / name)
        _fsync_directory(directory)
    finally:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def named_write_errors(path: str | Path) -> Iterator[None]:
    """An OSError inside as a WriteError naming `path` (one already naming its file passes as it is)."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        raise write_error(exc, path) from exc


def mismatched_files(directory: str | Path, recorded: dict[str, str],
                     contents: Mapping[str, bytes] | None = None) -> list[str]:
    """Names of `recorded` ({file name: sha256}) whose file in `directory` is missing or differs.
    Only plain names count as found: a recorded path never makes this read outside `directory`.
    A file already read into `contents` ({file name: bytes}) is checked as those bytes, so what is
    checked is what gets loaded (a file swapped between a check and a second read goes unnoticed)."""
    directory, contents = Path(directory), contents or {}

    def matches(name: str, sha: str) -> bool:
        if name in contents:
            return hashlib.sha256(contents[name]).hexdigest() == sha
        return (directory / name).is_file() and file_sha256(directory / name) == sha

    return [name for name, sha in recorded.items() if Path(name).name != name or not matches(name, sha)]


def file_set_problem(directory: str | Path, manifest: str, recorded, contents: Mapping[str, bytes]) -> str | None:
    """Why the files that `manifest` (head.json, model.json) records as `recorded` ({name: sha256})
    are not the ones in `directory`, or None when they are (see `write_file_set`)."""
    directory = Path(directory)
    if not isinstance(recorded, dict):
        return f"{directory / manifest}: 'files' must map file names to sha256, got {recorded!r}"
    mismatched = mismatched_files(directory, recorded, contents)
    if mismatched:
        return (f"{directory / mismatched[0]}: missing or not the file whose sha256 {manifest} records: it was "
                "written only in part (a writer stopped between its files?)")
    return None


def write_csv(frame, path: str | Path | TextIO, *, append: bool) -> None:
    """Write a pandas DataFrame to the CSV file `path` (or an open text stream) with a header, or append its rows.

    Every CSV elmobatch writes goes through here. Every non-numeric field is quoted, so a value
    holding a bare \\r, a newline, a quote or a comma reads back exactly with Python's csv module
    and pandas (csv's minimal quoting leaves a lone \\r bare when lines end in \\n). Values are
    never altered: a field starting with = + - @ stays as it is (see README on spreadsheets).
    """
    frame.to_csv(path, mode="a" if append else "w", header=not append, index=False, encoding="utf-8",
                 quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")


def utc_now() -> str:
    """Now, as the timestamps in manifests and metadata give it: ISO 8601 in UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")
