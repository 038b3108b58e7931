"""Object storage (s3://bucket/key) through pyarrow.fs, behind the few Path methods elmobatch uses.

    path = as_path("s3://bucket/in/day.csv")   # a StoredPath; "file:///x" and plain names give a Path
    with open_binary(path) as f: ...           # a buffered byte stream (readline, tell) for either

Credentials, region and endpoint come from where the AWS tools look: AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY / AWS_REGION, ~/.aws/credentials and ~/.aws/config, and AWS_ENDPOINT_URL
(passed on as pyarrow's endpoint_override, which older pyarrow versions do not read themselves).
An object store has no folders and no rename: a "directory" is a key prefix. An upload cannot be
abandoned half-way (pyarrow completes it when its stream closes), so a whole file goes to a
temporary object first, which the store copies to the final name (StoredPath.upload).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import io
import os
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import BinaryIO
from urllib.parse import quote, urlsplit

OBJECT_SCHEMES = ("s3",)
READ_BUFFER = 1 << 20  # bytes fetched from the store at a time
COPY_LIMIT = 5 << 30  # the largest object one S3 copy request makes


def is_object_uri(name) -> bool:
    """`name` is an object store URI (s3://...)."""
    return isinstance(name, str) and urlsplit(name).scheme in OBJECT_SCHEMES and "://" in name


def as_path(name) -> Path | StoredPath:
    """A Path for a local name or file:// URI, a StoredPath for an s3:// URI; a StoredPath stays one."""
    if isinstance(name, StoredPath | Path):
        return name
    name = str(name)
    scheme = urlsplit(name).scheme
    if "://" in name and scheme not in (*OBJECT_SCHEMES, "file"):  # never a local folder named "gs:"
        raise ValueError(f"{name}: {scheme}:// is not supported; expected a local path, file:///PATH or "
                         "s3://BUCKET/KEY (S3 and S3-compatible stores)")
    if name.startswith("file://"):
        parts = urlsplit(name)
        if parts.netloc not in ("", "localhost"):  # file://data/x.csv would silently be /x.csv
            raise ValueError(f"{name}: expected file:///ABSOLUTE/PATH (three slashes), not a host {parts.netloc!r}")
        return Path(parts.path)
    if is_object_uri(name):
        parts = urlsplit(name)
        if not parts.netloc:
            raise ValueError(f"{name}: expected s3://BUCKET/KEY")
        return StoredPath(parts.scheme, f"{parts.netloc}{parts.path}".rstrip("/"))
    return Path(name)


@functools.cache
def _filesystem(scheme: str, bucket: str, endpoint: str | None):
    """One pyarrow file system per bucket (and endpoint), as pyarrow builds it from the URI."""
    from pyarrow.fs import FileSystem

    query = f"?endpoint_override={quote(endpoint, safe='')}" if endpoint else ""
    return FileSystem.from_uri(f"{scheme}://{bucket}{query}")[0]


class StoredPath:
    """An object or key prefix in a store, as "bucket/key" (pyarrow's form), with Path's methods that
    elmobatch's readers and output writers use. str() is the URI."""

    def __init__(self, scheme: str, path: str):
        self.scheme, self.path = scheme, path
        self._pure = PurePosixPath(path)

    @property
    def fs(self):
        return _filesystem(self.scheme, self.bucket, os.environ.get("AWS_ENDPOINT_URL") or None)

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0]

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}"

    def __repr__(self) -> str:
        return f"StoredPath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, StoredPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: StoredPath) -> bool:
        return self.path < other.path

    def __truediv__(self, name: str) -> StoredPath:
        return StoredPath(self.scheme, f"{self.path}/{name}")

    name = property(lambda self: self._pure.name)
    suffix = property(lambda self: self._pure.suffix)
    suffixes = property(lambda self: self._pure.suffixes)
    stem = property(lambda self: self._pure.stem)
    parent = property(lambda self: StoredPath(self.scheme, str(self._pure.parent)))

    # ---- looking ------------------------------------------------------------------------------

    def _type(self):
        return self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        from pyarrow.fs import FileType

        return self._type() != FileType.NotFound

    def is_file(self) -> bool:
        from pyarrow.fs import FileType

        return self._type() == FileType.File

    def is_dir(self) -> bool:
        """A bucket, or a prefix some object's key starts with (PREFIX/...)."""
        from pyarrow.fs import FileType

        return self._type() == FileType.Directory

    def bucket_exists(self) -> bool:
        from pyarrow.fs import FileType

        return self.fs.get_file_info(self.bucket).type != FileType.NotFound

    def iterdir(self) -> list[StoredPath]:
        """The objects and prefixes directly under this prefix, sorted."""
        from pyarrow.fs import FileSelector

        infos = self.fs.get_file_info(FileSelector(self.path, allow_not_found=True))
        return sorted(StoredPath(self.scheme, info.path) for info in infos)

    def sizes(self, pattern: str = "*", recursive: bool = False) -> dict[StoredPath, int]:
        """{object: size in bytes} for the objects directly under this prefix (anywhere under it, if
        `recursive`) whose name matches `pattern`: one listing request per 1,000 objects."""
        from pyarrow.fs import FileSelector, FileType

        infos = self.fs.get_file_info(FileSelector(self.path, recursive=recursive, allow_not_found=True))
        return {StoredPath(self.scheme, i.path): i.size for i in infos
                if i.type == FileType.File and fnmatch.fnmatchcase(i.base_name, pattern)}

    def read_range(self, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (one ranged request; fewer bytes at the object's end)."""
        with self.fs.open_input_file(self.path) as f:
            return f.read_at(length, offset)

    def write_blocks(self, blocks) -> None:
        """One upload of the byte strings `blocks`, in order. A process killed while uploading leaves
        nothing, but an exception raised in this one (Ctrl-C) can leave the bytes so far: pyarrow's
        stream completes the upload when it closes, and cannot abort it. For whole files use
        `upload`; the cache's segments, written here, carry checksums and are checked when read."""
        with self.fs.open_output_stream(self.path, compression=None) as f:
            for block in blocks:
                f.write(block)

    def copy_to(self, other: StoredPath) -> None:
        """A copy made by the store (no bytes through this machine)."""
        self.fs.copy_file(self.path, other.path)

    def glob(self, pattern: str) -> list[StoredPath]:
        """Entries directly under this prefix whose name matches `pattern` (no `/` in it)."""
        return [p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern)]

    def stat(self) -> SimpleNamespace:
        """The object's size and last-modified time, as os.stat names them (one request)."""
        from pyarrow.fs import FileType

        info = self.fs.get_file_info(self.path)
        if info.type == FileType.NotFound:
            raise FileNotFoundError(f"{self}: no such object")
        return SimpleNamespace(st_size=info.size, st_mtime_ns=info.mtime_ns)

    # ---- reading and writing ------------------------------------------------------------------

    def open_stream(self) -> BinaryIO:
        """The object's bytes as a buffered stream (readline, tell), fetched as read."""
        return io.BufferedReader(_RawStream(self.fs.open_input_stream(self.path, compression=None)), READ_BUFFER)

    def open_random(self):
        """A seekable pyarrow file (what Parquet needs: it reads the footer first)."""
        return self.fs.open_input_file(self.path)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path, compression=None) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        """One upload of `data` (see write_blocks)."""
        self.write_blocks([data])

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def upload(self, local: Path, via: StoredPath | None = None) -> None:
        """Copy the local file `local` to this object. With `via` (a temporary name), whole or not at
        all: the bytes go to `via`, which the store then copies to this name in one request and which
        is then deleted (see write_blocks: a stream cannot be abandoned). A file over 5 GiB, more than
        one copy request takes, goes straight to this name."""
        if via is not None and local.stat().st_size > COPY_LIMIT:
            via = None
        target = via or self
        try:
            with open(local, "rb") as source, self.fs.open_output_stream(target.path, compression=None) as f:
                while block := source.read(READ_BUFFER):
                    f.write(block)
            if via is not None:
                via.copy_to(self)
        finally:
            if via is not None:
                with contextlib.suppress(OSError):
                    via.unlink(missing_ok=True)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: a prefix exists once an object under it does."""

    def remove_tree(self) -> None:
        """Delete every object under this prefix."""
        self.fs.delete_dir_contents(self.path, missing_dir_ok=True)


class _RawStream(io.RawIOBase):
    """A pyarrow input stream as a raw Python stream, so io.BufferedReader adds readline."""

    def __init__(self, stream):
        self.stream = stream
        self.position = 0  # pyarrow's tell() wants a seekable file

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        """Bytes read so far (readers report progress from the buffered stream's tell())."""
        return self.position

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)

    def close(self) -> None:
        self.stream.close()
        super().close()


def open_binary(path) -> BinaryIO:
    """A file's bytes for reading: a local file, or a stored object streamed."""
    return path.open_stream() if isinstance(path, StoredPath) else open(path, "rb")


def parquet_source(path):
    """What pyarrow.parquet opens for `path`: the path itself, or the stored object (seekable)."""
    return path.open_random() if isinstance(path, StoredPath) else path


def remove_tree(path) -> None:
    """Delete a directory (or key prefix) and all it holds; nothing if it is not there."""
    import shutil

    if isinstance(path, StoredPath):
        path.remove_tree()
    else:
        shutil.rmtree(path, ignore_errors=True)


AnyPath = Path | StoredPath  # a local file or a stored object
