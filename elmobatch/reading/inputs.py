"""Input arguments -> files: `-` (standard input), directories, glob patterns and plain paths.

    with open_inputs(["-", "incoming/", "day-*.csv.gz"], sys.stdin.buffer) as paths:
        ...  # paths: [<tmp>/stdin, incoming/a.csv, incoming/b.csv, day-1.csv.gz, ...]

Directories and patterns expand to their files sorted by name, skipping hidden names and names
starting with `_` (Spark's _SUCCESS, elmobatch's _tmp/); standard input is copied to a temporary
file named `stdin` (readers take several passes), removed when the block ends. An s3:// argument
names an object, a key prefix (its objects) or a pattern in the key's last part, expanded the same
way; file:// names a local path.
"""

from __future__ import annotations

import contextlib
import glob
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from elmobatch.reading.detect import ReadError
from elmobatch.storage import StoredPath, as_path, is_object_uri

STDIN = "-"
STDIN_NAME = "stdin"  # the file standard input is read from: its ids are stdin:ROW, its format detected
SPOOL_PREFIX = "elmobatch-stdin-"  # of the temporary directory holding it


class InputError(ReadError):
    """An input argument that names no file to read, saying what was expected."""


def expand_inputs(arguments: Iterable[str]) -> list[str]:
    """The files the arguments name, in argument order (each file once, however it is spelled:
    `a.csv`, `./a.csv` and its absolute path are one file, named as first given); `-` stays as it is."""
    files: list[str] = []
    seen: set[str] = set()
    for argument in arguments:
        for name in _expand(argument):
            key = name if name == STDIN or is_object_uri(name) else str(Path(name).resolve())
            if key not in seen:
                seen.add(key)
                files.append(name)
    if files.count(STDIN) > 1:
        raise InputError("- (standard input) can be given once")
    return files


def _expand(argument: str) -> list[str]:
    if is_object_uri(argument):
        return _expand_stored(argument)
    if "://" in argument:  # file:///x is a local path; as_path refuses schemes elmobatch does not read
        try:
            return _expand(str(as_path(argument)))
        except ValueError as exc:
            raise InputError(str(exc)) from None
    path = Path(argument)
    if argument == STDIN or path.is_file():
        return [argument]
    if path.is_dir():
        found = _files_in(path)
        if not found:
            raise InputError(f"{argument}: the directory holds no input files (hidden names and names starting "
                             "with _ are skipped)")
        return found
    if glob.has_magic(argument):
        matches = [m for m in sorted(glob.glob(argument, recursive=True)) if _visible(Path(m).name)]
        found = [name for match in matches for name in (_files_in(Path(match)) if Path(match).is_dir() else [match])]
        if not found:
            raise InputError(f"{argument}: the pattern matches no files (hidden names and names starting with _ "
                             "are skipped)")
        return found
    raise InputError(f"{argument}: no such file or directory")


def _expand_stored(argument: str) -> list[str]:
    """An object (s3://bucket/key), a prefix (its objects) or a pattern in the last part of the key,
    expanded like local names: sorted, hidden and _ names skipped."""
    path = as_path(argument)
    assert isinstance(path, StoredPath)
    if not path.bucket_exists():
        raise InputError(f"{argument}: no such bucket {path.bucket!r} (or no access to it)")
    if not path.is_file() and not path.is_dir() and not glob.has_magic(path.name):
        raise InputError(f"{argument}: no such object or prefix")
    found = stored_matches(path)
    if not found:
        raise InputError(f"{argument}: matches no objects (hidden names and names starting with _ are skipped)")
    return found


def stored_matches(path: StoredPath) -> list[str]:
    """The objects an object, a prefix or a pattern in the key's last part names, sorted, hidden and _
    names skipped; [] when none."""
    if path.is_file():
        return [str(path)]
    where, pattern = (path, "*") if path.is_dir() else (path.parent, path.name)
    return [str(p) for p in where.glob(pattern) if _visible(p.name) and p.is_file()]


def shown_name(path) -> str:
    """How an input is named in messages: `-` for standard input's temporary copy, else the path."""
    path = as_path(path)
    return STDIN if path.name == STDIN_NAME and path.parent.name.startswith(SPOOL_PREFIX) else str(path)


def source_name(path) -> str:
    """The file name rows are known by (`source_file`, default ids NAME:ROW): day.csv.gz -> day.csv,
    so compressing a file keeps its ids."""
    name = PurePosixPath(str(path)).name  # the object's name for s3://bucket/key
    return name[:-3] if name.lower().endswith(".gz") else name


def input_stem(path) -> str:
    """The name outputs are named after: day.csv -> day, day.csv.gz -> day, stdin -> stdin."""
    return Path(source_name(path)).stem


def _files_in(directory: Path) -> list[str]:
    """A directory's input files (not its subdirectories'), sorted, hidden and _ names skipped."""
    return [str(p) for p in sorted(directory.iterdir()) if p.is_file() and _visible(p.name)]


def _visible(name: str) -> bool:
    return not name.startswith((".", "_"))


@contextlib.contextmanager
def open_inputs(arguments: Iterable[str], stdin: BinaryIO) -> Iterator[list[Path | StoredPath]]:
    """The input files as paths (StoredPath for s3://), `-` copied from `stdin` to a temporary `stdin`
    file for the block."""
    files = expand_inputs(arguments)
    with contextlib.ExitStack() as stack:
        paths = [spool(stdin, Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=SPOOL_PREFIX))))
                 if name == STDIN else as_path(name) for name in files]
        yield paths


def spool(stdin: BinaryIO, directory: Path) -> Path:
    """Copy standard input to directory/stdin; a terminal is refused (it would wait for typing)."""
    if stdin.isatty():
        raise InputError("- reads the messages from standard input, which is a terminal: pipe or redirect "
                         "a file into it")
    path = directory / STDIN_NAME
    with open(path, "wb") as f:
        shutil.copyfileobj(stdin, f, 1 << 20)
    return path
