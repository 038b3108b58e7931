"""The embedding cache: a message embedded once with a model is never computed again.

Key: (model fingerprint, sha256 of the normalized text). Normalizing collapses runs of whitespace
and strips the ends; both tokenizers split on whitespace, so normalized-equal texts have the same
tokens and the same vectors. Each model has its own directory, so another model never sees them.

Layout: CACHE_DIR/v1/<fingerprint>/seg-<time>-<id>.ebc, one segment file per batch of newly
computed vectors, written to a temporary name and renamed (readers never see a partial file). An
s3:// CACHE_DIR holds the same segments without the index below (see stored.py):

    b"EBCACHE1" | u32 header length | u32 crc32(header) | header JSON {fingerprint, n, layers, dim,
    index_sha256} | index: n x (32-byte key, int32 n_tokens, u32 crc32 of the entry) |
    data: n x layers x dim float32

Opening a segment checks magic, header crc, size and index sha256; serving an entry checks its crc.
A segment failing any check is renamed to *.corrupt and its entries are recomputed, never served.

Index: CACHE_DIR/v1/<fingerprint>/index/keys.sqlite maps each key to (segment, row), so a lookup
costs a B-tree probe per key however large the cache grows. The segments stay the source of truth:
the index only says where to look. Serving an entry checks that the segment's own index row at
that position holds the key and that the entry's crc matches; a segment changed since it was
indexed (size, mtime) is checked whole again. A missing or damaged index is rebuilt from the
segments; a segment no writer indexed (one killed in between) is indexed on the next miss.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from elmobatch.errors import ElmobatchError
from elmobatch.files import write_atomically
from elmobatch.storage import StoredPath, as_path

import numpy as np

log = logging.getLogger(__name__)

MAGIC = b"EBCACHE1"
FORMAT_DIR = "v1"
INDEX_DTYPE = np.dtype([("key", "V32"), ("n_tokens", "<i4"), ("crc", "<u4")])
INDEX_DIR = "index"
INDEX_FILE = "keys.sqlite"
SETUP_LOCK = "setup.lock"  # held while a connection switches the index to WAL and creates its tables
COMPACT_TARGET_BYTES = 256 << 20  # compaction merges segments into files of up to this size
DAY_NS = 86_400 * 10**9


class CorruptSegment(Exception):
    """A segment file whose bytes do not match its checksums."""


class CacheWriteError(ElmobatchError, OSError):
    """A cache file that could not be written (disk full, no permission), named in the message."""


@contextmanager
def _writing(path: Path):
    """Turn an OSError while writing `path` into a CacheWriteError that names it: "No space left
    on device" alone does not say which disk."""
    try:
        yield
    except CacheWriteError:
        raise
    except OSError as exc:
        raise CacheWriteError(f"embedding cache: cannot write {path} ({exc.strerror or exc}); free space "
                              "there or use another cache directory (--cache-dir, cache_dir)") from exc


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str | int) -> int:
    """'500M', '10G', '1.5T', '4096' or 4096 (bytes; K/M/G/T are powers of 1024) -> bytes."""
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    number = str(text).strip().upper().removesuffix("B")
    unit = number[-1] if number and number[-1] in SIZE_UNITS else ""
    try:
        value = float(number.removesuffix(unit) if unit else number)
    except ValueError:
        value = -1
    if isinstance(text, bool) or not value >= 0:
        raise ValueError(f"{text!r}: expected a size such as 500M, 10G or 1.5T (bytes if no unit)")
    return int(value * SIZE_UNITS[unit])


def default_cache_dir() -> Path | StoredPath:
    """$ELMOBATCH_CACHE (a directory, file:///PATH or s3://BUCKET/PREFIX), else ~/.cache/elmobatch.
    ValueError for another scheme (never a local folder named "gs:")."""
    return as_path(os.environ.get("ELMOBATCH_CACHE") or Path.home() / ".cache" / "elmobatch")


def cache_location(directory: str | os.PathLike | None = None) -> Path | StoredPath:
    """Where a cache lives: `directory` (a path, file:///PATH or s3:// URI), else default_cache_dir()."""
    return as_path(directory) if directory is not None else default_cache_dir()


def normalize_text(text: str) -> str:
    """Whitespace runs -> one space, ends stripped: the same tokens, so the same vectors."""
    return " ".join(text.split())


def text_key(text: str) -> bytes:
    """32-byte sha256 of the normalized text (UTF-8)."""
    return hashlib.sha256(normalize_text(text).encode("utf-8", "surrogatepass")).digest()


def text_hash(text: str) -> str:
    """Hex form of `text_key`: the `text_hash` column of the embeddings dataset."""
    return text_key(text).hex()


def _entry_crc(n_tokens: int, vectors: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(vectors, "<f4").tobytes(), zlib.crc32(struct.pack("<i", n_tokens)))


class EmbeddingCache:
    """Per-layer pooled vectors by (model, text). Counts `hits`, `computed` and `corrupt` segments.

    EmbeddingCache("s3://BUCKET/PREFIX") (or no directory, with ELMOBATCH_CACHE=s3://BUCKET/PREFIX) is
    the object store's cache (caching/stored.py), so every command, engine and Spark task that makes
    a cache from a directory name works with either."""

    def __new__(cls, directory: str | os.PathLike | None = None):
        if cls is EmbeddingCache and isinstance(cache_location(directory), StoredPath):
            from elmobatch.caching.stored import StoredEmbeddingCache

            return super().__new__(StoredEmbeddingCache)
        return super().__new__(cls)

    def __init__(self, directory: str | os.PathLike | None = None):
        location = cache_location(directory)
        assert isinstance(location, Path), "an object store's cache is a StoredEmbeddingCache (see __new__)"
        self.directory = location
        self.hits = 0
        self.computed = 0
        self.corrupt = 0
        self._indexes: dict[str, KeyIndex] = {}

    def model_dir(self, fingerprint: str) -> Path:
        if not _is_fingerprint(fingerprint):
            raise ValueError(f"model fingerprint {fingerprint!r}: expected a hex digest")
        return self.directory / FORMAT_DIR / fingerprint

    def embed(self, encoder, texts: list[str],
              on_batch: Callable[[float], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> (layers float32 (n, n_layers + 1, dim), n_tokens int32 (n,)).

        Only texts not cached (and each only once, however often it repeats) go to the encoder;
        `on_batch(fraction)` after each of its batches: the fraction of the texts to compute done.
        """
        keys = [text_key(t) for t in texts]
        unique = list(dict.fromkeys(keys))
        found = self.lookup(encoder.cache_key, unique)
        missing = [k for k in unique if k not in found]
        if missing:
            first_text: dict[bytes, str] = {}
            for key, text in zip(keys, texts, strict=True):
                first_text.setdefault(key, text)
            tokens = [encoder.tokenize(first_text[k]) for k in missing]
            pooled = encoder.pool_tokens(tokens, on_batch)
            counts = np.array([len(t) for t in tokens], np.int32)
            self.store(encoder.cache_key, missing, pooled, counts)
            self._describe(encoder)
            found.update((k, (pooled[i], counts[i])) for i, k in enumerate(missing))
        self.computed += len(missing)
        self.hits += len(texts) - len(missing)
        layers = np.zeros((len(texts), encoder.n_layers + 1, encoder.dim), np.float32)
        n_tokens = np.zeros(len(texts), np.int32)
        for i, key in enumerate(keys):
            layers[i], n_tokens[i] = found[key]
        return layers, n_tokens

    def _describe(self, encoder) -> None:
        """Write the model's model.json beside its segments once, for `elmobatch models`."""
        path = self.model_dir(encoder.cache_key) / "model.json"
        if path.is_file():
            return
        info = self._model_info(encoder)
        with _writing(path):
            write_atomically(path, lambda tmp: tmp.write_text(json.dumps(info, indent=2)))

    @staticmethod
    def _model_info(encoder) -> dict:
        return {"fingerprint": encoder.fingerprint, "precision": encoder.precision, "path": encoder.path,
                "dim": encoder.dim, "layers": encoder.n_layers + 1, "tokenizer": encoder.tokenizer}

    def models(self) -> list[dict]:
        """The models with vectors in this cache: their model.json, plus `vectors`, `bytes` and
        `segments` cached, `index_bytes` and `set_aside` (damaged segments renamed *.corrupt)."""
        root = self.directory / FORMAT_DIR
        out = []
        for directory in sorted(root.iterdir()) if root.is_dir() else []:
            try:
                info = json.loads((directory / "model.json").read_text())
            except (OSError, ValueError):
                info = {"fingerprint": directory.name}
            segments = list(directory.glob("seg-*.ebc"))
            info["vectors"] = sum(_segment_count(p) for p in segments)
            info["bytes"] = sum(p.stat().st_size for p in segments)
            info["segments"] = len(segments)
            info["index_bytes"] = sum(p.stat().st_size for p in (directory / INDEX_DIR).glob(INDEX_FILE + "*"))
            info["set_aside"] = len(list(directory.glob("*.corrupt")))
            info["cache_dir"] = str(directory)
            out.append(info)
        return out

    # ---- segments ------------------------------------------------------------------------

    def segments(self, fingerprint: str) -> list[Path]:
        """This model's segment files, newest first."""
        directory = self.model_dir(fingerprint)
        return sorted(directory.glob("seg-*.ebc"), reverse=True) if directory.is_dir() else []

    def lookup(self, fingerprint: str, keys: list[bytes]) -> dict[bytes, tuple[np.ndarray, int]]:
        """{key: (vectors (layers, dim), n_tokens)} for the keys that are cached and intact."""
        if not keys or not self.model_dir(fingerprint).is_dir():
            return {}
        found, moved = self._serve(fingerprint, keys)
        missing = [k for k in keys if k not in found]
        if missing and (self._sync(fingerprint) or moved):
            found.update(self._serve(fingerprint, missing)[0])
        return found

    def store(self, fingerprint: str, keys: list[bytes], layers: np.ndarray,
              n_tokens: np.ndarray) -> Path | StoredPath | None:
        """Write one segment atomically and index it; returns its path (None when there is nothing to store)."""
        return self._write_segment(fingerprint, keys, layers, n_tokens)

    def _write_segment(self, fingerprint: str, keys: list[bytes], layers: np.ndarray, n_tokens: np.ndarray,
                       mtime_ns: int | None = None) -> Path | None:
        """`store`, with the file's mtime set to `mtime_ns` when given (compaction keeps the age)."""
        if not keys:
            return None
        header, index, blocks = encode_segment(fingerprint, keys, layers, n_tokens)
        directory = self.model_dir(fingerprint)
        path = directory / segment_name()

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                for block in blocks:
                    f.write(block)
            if mtime_ns is not None:
                os.utime(tmp, ns=(mtime_ns, mtime_ns))

        with _writing(path):
            directory.mkdir(parents=True, exist_ok=True)
            _sweep_tmp(directory)
            write_atomically(path, write)
        self._index(fingerprint).add(path.name, _record(header, len(blocks[0]) + len(blocks[1]), path.stat()), index)
        return path

    def _quarantine(self, path: Path, exc: Exception) -> None:
        self.corrupt += 1
        log.warning("cache segment %s is damaged (%s): set aside as .corrupt; its vectors will be recomputed",
                    path, exc)
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(path.name + ".corrupt"))

    # ---- the key index -------------------------------------------------------------------

    def _index(self, fingerprint: str) -> KeyIndex:
        if fingerprint not in self._indexes:
            self._indexes[fingerprint] = KeyIndex(self.model_dir(fingerprint))
        return self._indexes[fingerprint]

    def __getstate__(self) -> dict:
        """Pickled (e.g. to a Spark task) without open database connections."""
        return {**self.__dict__, "_indexes": {}}

    def _serve(self, fingerprint: str, keys: list[bytes]) -> tuple[dict[bytes, tuple[np.ndarray, int]], bool]:
        """The indexed, intact entries of `keys`, and whether an indexed segment had gone (compacted
        or pruned by another process: its keys may be in a newer segment)."""
        index = self._index(fingerprint)
        found: dict[bytes, tuple[np.ndarray, int]] = {}
        moved = False
        for segment, rows in index.locate(keys).items():
            path = self.model_dir(fingerprint) / segment.name
            try:
                found.update(self._serve_segment(fingerprint, path, segment, rows))
            except FileNotFoundError:
                index.drop([segment.name])
                moved = True
            except (CorruptSegment, OSError, ValueError) as exc:
                index.drop([segment.name])
                self._quarantine(path, exc)
        return found, moved

    def _serve_segment(self, fingerprint: str, path: Path, segment: SegmentRecord,
                       rows: list[tuple[bytes, int]]) -> dict[bytes, tuple[np.ndarray, int]]:
        """`rows` [(key, row)] read from one segment; the whole segment is checked again (and
        re-indexed) when it changed since it was indexed or an entry does not match the index."""
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())
            if (stat.st_size, stat.st_mtime_ns) == (segment.size, segment.mtime_ns):
                served = _read_rows(f.fileno(), segment, rows)
                if served is not None:
                    return served
            header, table, data_offset = verify_segment(f, fingerprint)
            self._index(fingerprint).add(path.name, _record(header, data_offset, stat), table, again=True)
            wanted = {key for key, _ in rows}
            positions = [i for i, key in enumerate(table["key"]) if key.tobytes() in wanted]
            return _read_entries(f, header, table, data_offset, positions)

    def _sync(self, fingerprint: str, force: bool = False) -> bool:
        """Index segments the index lacks (a killed writer's, or all after the index was lost) and
        forget those gone; True if anything changed. Skipped while the directory is unchanged."""
        directory, index = self.model_dir(fingerprint), self._index(fingerprint)
        mtime = directory.stat().st_mtime_ns
        if mtime == index.synced_mtime and not force:
            return False
        on_disk = {name for name in os.listdir(directory) if name.startswith("seg-") and name.endswith(".ebc")}
        known = index.names()
        for name in sorted(on_disk - known):
            path = directory / name
            try:
                with open(path, "rb") as f:
                    header, table, data_offset = verify_segment(f, fingerprint)
                    index.add(name, _record(header, data_offset, os.fstat(f.fileno())), table)
            except FileNotFoundError:
                continue
            except (CorruptSegment, OSError, ValueError) as exc:
                self._quarantine(path, exc)
        index.drop(known - on_disk)
        if time.time_ns() - mtime > 2 * 10**9:  # a change in the same clock tick as `mtime` would be missed
            index.synced_mtime = mtime
        return bool(on_disk - known or known - on_disk)

    # ---- housekeeping ----------------------------------------------------------------------

    def fingerprints(self) -> list[str]:
        """The models with vectors here (a folder under v1/ not named by a fingerprint is not one)."""
        root = self.directory / FORMAT_DIR
        return sorted(d.name for d in root.iterdir() if d.is_dir() and _is_fingerprint(d.name)) if root.is_dir() else []

    def compact(self, target_bytes: int = COMPACT_TARGET_BYTES) -> dict:
        """Merge each day's small segments of every model into files of up to `target_bytes`
        (a day's segments stay together, so `prune --older-than` keeps its meaning); drops entries
        stored twice and index rows of vanished segments. Returns {segments_before, segments_after}."""
        before = after = 0
        for fingerprint in self.fingerprints():
            directory = self.model_dir(fingerprint)
            with _housekeeping_lock(directory):
                self._sync(fingerprint, force=True)
                segments = [(p, p.stat()) for p in directory.glob("seg-*.ebc")]
                before += len(segments)
                for batch in _compaction_batches(segments, target_bytes):
                    self._merge(fingerprint, batch)
                self._index(fingerprint).forget_dangling()
                after += len(list(directory.glob("seg-*.ebc")))
        return {"segments_before": before, "segments_after": after}

    def _merge(self, fingerprint: str, paths: list[Path]) -> None:
        """Write the intact entries of `paths` as one segment (as old as the newest), then remove them."""
        entries: dict[bytes, tuple[np.ndarray, int]] = {}
        newest = 0
        for path in paths:
            try:
                with open(path, "rb") as f:
                    header, table, data_offset = verify_segment(f, fingerprint)
                    entries.update(_read_entries(f, header, table, data_offset, range(len(table))))
                    newest = max(newest, os.fstat(f.fileno()).st_mtime_ns)
            except FileNotFoundError:
                continue
            except (CorruptSegment, OSError, ValueError) as exc:
                self._quarantine(path, exc)
        if entries:
            keys = list(entries)
            self._write_segment(fingerprint, keys, np.stack([entries[k][0] for k in keys]),
                                np.array([entries[k][1] for k in keys], np.int32), mtime_ns=newest)
        self._index(fingerprint).drop(p.name for p in paths)
        for path in paths:
            path.unlink(missing_ok=True)

    def prune(self, older_than_days: float | None = None, max_bytes: int | None = None) -> dict:
        """Remove segments written more than `older_than_days` ago, then the oldest until all models'
        segments total at most `max_bytes`. Returns {segments, vectors, bytes} removed."""
        segments = sorted((p.stat().st_mtime_ns, p.stat().st_size, fingerprint, p)
                          for fingerprint in self.fingerprints() for p in self.segments(fingerprint))
        doomed = []
        if older_than_days is not None:
            cutoff = time.time_ns() - int(older_than_days * DAY_NS)
            doomed = [s for s in segments if s[0] < cutoff]
            segments = segments[len(doomed):]
        total = sum(s[1] for s in segments)
        while max_bytes is not None and segments and total > max_bytes:
            doomed.append(segments.pop(0))
            total -= doomed[-1][1]
        removed = {"segments": len(doomed), "vectors": sum(_segment_count(s[3]) for s in doomed),
                   "bytes": sum(s[1] for s in doomed)}
        for fingerprint in {s[2] for s in doomed}:
            paths = [s[3] for s in doomed if s[2] == fingerprint]
            with _housekeeping_lock(self.model_dir(fingerprint)):
                self._index(fingerprint).drop(p.name for p in paths)
                for path in paths:
                    path.unlink(missing_ok=True)
        return removed


class SegmentRecord(NamedTuple):
    """One indexed segment: where its index rows and data start, and its size and mtime when indexed."""

    name: str
    n: int
    layers: int
    dim: int
    data_offset: int
    size: int
    mtime_ns: int


def _record(header: dict, data_offset: int, stat: os.stat_result) -> SegmentRecord:
    return SegmentRecord("", header["n"], header["layers"], header["dim"], data_offset, stat.st_size,
                         stat.st_mtime_ns)


SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL,
    n INTEGER NOT NULL, layers INTEGER NOT NULL, dim INTEGER NOT NULL, data_offset INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entries (key BLOB PRIMARY KEY, segment INTEGER NOT NULL, row INTEGER NOT NULL)
    WITHOUT ROWID;
"""
KEYS_PER_QUERY = 500  # below SQLite's limit on query parameters
MMAP_BYTES = 1 << 30  # address space only: the index file is mapped up to its size
WAL_LIMIT_BYTES = 64 << 20  # the write-ahead log is cut back to this after a checkpoint


class KeyIndex:
    """text key -> (segment, row) for one model directory, in SQLite (WAL: readers never wait for
    a writer; writers queue on SQLite's lock). Entries of a dropped segment stay until `forget_dangling`
    but are never returned: every query joins on `segments`."""

    def __init__(self, model_dir: Path):
        self.path = model_dir / INDEX_DIR / INDEX_FILE
        self.synced_mtime: int | None = None  # the model directory's mtime when last synced
        self._db: sqlite3.Connection | None = None
        self._pid = 0

    def _connect(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():  # a connection must not cross a fork
            with _writing(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            try:
                # Switching a new file to WAL does not wait on SQLite's busy timeout: two processes
                # opening a fresh index at once would see "database is locked". Take turns here.
                lock = self.path.parent / SETUP_LOCK
                with _writing(lock), _flocked(lock):
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(SCHEMA)
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")  # B-tree pages read in place, not copied
                db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            except BaseException:
                db.close()
                raise
            self._db, self._pid = db, os.getpid()
        return self._db

    @contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """The connection; a damaged database file is deleted (then rebuilt from the segments by
        the next sync) and SQLite's other failures are raised as CacheWriteError naming the file."""
        try:
            try:
                db = self._connect()
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError):
                    raise
                self._discard(exc)
                db = self._connect()
            yield db
        except sqlite3.OperationalError as exc:
            raise CacheWriteError(f"embedding cache: cannot use the index {self.path} ({exc}); free space there "
                                  "or use another cache directory (--cache-dir, cache_dir)") from exc
        except sqlite3.DatabaseError as exc:
            self._discard(exc)

    def _discard(self, exc: Exception) -> None:
        log.warning("cache index %s is damaged (%s): rebuilding it from the segments", self.path, exc)
        if self._db is not None:
            self._db.close()
        self._db, self.synced_mtime = None, None
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)

    def locate(self, keys: list[bytes]) -> dict[SegmentRecord, list[tuple[bytes, int]]]:
        """{segment: [(key, row)]} for the indexed keys among `keys`."""
        out: dict[SegmentRecord, list[tuple[bytes, int]]] = {}
        with self._using() as db:
            for start in range(0, len(keys), KEYS_PER_QUERY):
                chunk = keys[start : start + KEYS_PER_QUERY]
                marks = ",".join("?" * len(chunk))
                query = ("SELECT e.key, e.row, s.name, s.n, s.layers, s.dim, s.data_offset, s.size, s.mtime_ns "
                         f"FROM entries e JOIN segments s ON s.id = e.segment WHERE e.key IN ({marks})")
                for key, row, *segment in db.execute(query, chunk):
                    out.setdefault(SegmentRecord(*segment), []).append((key, row))
        return out

    def add(self, name: str, record: SegmentRecord, table: np.ndarray, again: bool = False) -> None:
        """Index segment `name` (its index rows `table`); a segment already indexed is skipped,
        unless `again` (it was checked again after changing): then it is re-indexed."""
        keys = table["key"].tobytes()
        with self._using() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT id FROM segments WHERE name = ?", (name,)).fetchone()
                if row is None or again:
                    db.execute("DELETE FROM segments WHERE name = ?", (name,))
                    segment_id = db.execute("INSERT INTO segments (name, n, layers, dim, data_offset, size, "
                                            "mtime_ns) VALUES (?, ?, ?, ?, ?, ?, ?)", (name, *record[1:])).lastrowid
                    db.executemany("INSERT OR REPLACE INTO entries (key, segment, row) VALUES (?, ?, ?)",
                                   ((keys[32 * i : 32 * i + 32], segment_id, i) for i in range(len(table))))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def names(self) -> set[str]:
        with self._using() as db:
            return {name for (name,) in db.execute("SELECT name FROM segments")}
        return set()  # the index was damaged and discarded

    def drop(self, names) -> None:
        """Forget segments (gone, damaged or merged); their entries are no longer returned."""
        names = list(names)
        with self._using() as db:
            db.executemany("DELETE FROM segments WHERE name = ?", ((n,) for n in names))

    def forget_dangling(self) -> None:
        """Delete entries whose segment was dropped (an O(entries) pass: for compaction)."""
        with self._using() as db:
            db.execute("DELETE FROM entries WHERE segment NOT IN (SELECT id FROM segments)")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@contextmanager
def _housekeeping_lock(model_dir: Path) -> Iterator[None]:
    """One compaction or prune at a time per model directory (writers and readers need no lock)."""
    path = model_dir / INDEX_DIR / "housekeeping.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _flocked(path):
        yield


@contextmanager
def _flocked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created if missing) while the block runs."""
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _compaction_batches(segments: list[tuple[Path, os.stat_result]], target_bytes: int) -> list[list[Path]]:
    """Groups of two or more segments written on the same (UTC) day, each under `target_bytes`."""
    batches: list[list[Path]] = []
    current: list[Path] = []
    size, day = 0, None
    for path, stat in sorted(segments, key=lambda s: s[1].st_mtime_ns):
        if stat.st_size >= target_bytes // 2:
            continue
        if current and (stat.st_mtime_ns // DAY_NS != day or size + stat.st_size > target_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(path)
        size += stat.st_size
        day = stat.st_mtime_ns // DAY_NS
    batches.append(current)
    return [b for b in batches if len(b) > 1]


def _sweep_tmp(directory: Path, older_than_s: float = 3600) -> None:
    """Remove temporary files that killed writers left behind (a live writer's are recent)."""
    for tmp in directory.glob(".tmp-*"):
        try:
            if time.time() - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
        except OSError:
            pass


def segment_name() -> str:
    """A new segment's name: unique across processes and machines, sorting by time of writing."""
    return f"seg-{time.time_ns():020d}-{uuid.uuid4().hex[:16]}.ebc"


def encode_segment(fingerprint: str, keys: list[bytes], layers: np.ndarray,
                   n_tokens: np.ndarray) -> tuple[dict, np.ndarray, list[bytes]]:
    """One segment's bytes (see the module docstring): (header, index rows, [head + header, index, data])
    from `keys` (n x 32 bytes), `layers` float32 (n, layers, dim) and `n_tokens` int (n,)."""
    layers = np.ascontiguousarray(layers, "<f4")
    index = np.zeros(len(keys), INDEX_DTYPE)
    index["key"] = np.frombuffer(b"".join(keys), "V32")
    index["n_tokens"] = n_tokens
    index["crc"] = [_entry_crc(int(n), v) for n, v in zip(n_tokens, layers, strict=True)]
    index_bytes = index.tobytes()
    header = {"fingerprint": fingerprint, "n": len(keys), "layers": layers.shape[1], "dim": layers.shape[2],
              "index_sha256": hashlib.sha256(index_bytes).hexdigest()}
    header_bytes = json.dumps(header).encode()
    head = MAGIC + struct.pack("<II", len(header_bytes), zlib.crc32(header_bytes)) + header_bytes
    return header, index, [head, index_bytes, layers.tobytes()]


def _segment_count(path: Path) -> int:
    """Entries in one segment, from its header (0 if the header is unreadable)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            length, crc = struct.unpack("<II", head[8:])
            header = f.read(length)
        return _parse_header(header)["n"] if head[:8] == MAGIC and zlib.crc32(header) == crc else 0
    except (OSError, ValueError, CorruptSegment, struct.error):
        return 0


HEADER_FIELDS = {"fingerprint": str, "n": int, "layers": int, "dim": int, "index_sha256": str}


def _parse_header(header_bytes: bytes) -> dict:
    """A segment's header JSON, every field present with its type; raises CorruptSegment otherwise."""
    try:
        header = json.loads(header_bytes)
    except ValueError as exc:
        raise CorruptSegment(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CorruptSegment("header is not a JSON object")
    for key, kind in HEADER_FIELDS.items():
        value = header.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (isinstance(value, int) and value < 0):
            raise CorruptSegment(f"header field {key!r} is missing or not a {kind.__name__} ({value!r})")
    return header


def verify_segment(f, fingerprint: str, size: int | None = None) -> tuple[dict, np.ndarray, int]:
    """Check an open segment (a local file, or a stored object's `size` bytes) whole but its data
    (magic, header crc and fields, model, size, index sha256): (header, index rows, data offset);
    raises CorruptSegment otherwise."""
    f.seek(0)
    head = f.read(16)
    if len(head) < 16 or head[:8] != MAGIC:
        raise CorruptSegment("bad magic")
    length, crc = struct.unpack("<II", head[8:])
    header_bytes = f.read(length)
    if len(header_bytes) != length or zlib.crc32(header_bytes) != crc:
        raise CorruptSegment("header checksum mismatch")
    header = _parse_header(header_bytes)
    n, n_layers, dim = header["n"], header["layers"], header["dim"]
    if header["fingerprint"] != fingerprint:
        raise CorruptSegment("segment belongs to another model")
    data_offset = 16 + length + n * INDEX_DTYPE.itemsize
    if (os.fstat(f.fileno()).st_size if size is None else size) != data_offset + n * n_layers * dim * 4:
        raise CorruptSegment("wrong file size")
    index_bytes = f.read(n * INDEX_DTYPE.itemsize)
    if hashlib.sha256(index_bytes).hexdigest() != header["index_sha256"]:
        raise CorruptSegment("index checksum mismatch")
    return header, np.frombuffer(index_bytes, INDEX_DTYPE), data_offset


def _read_entries(f, header: dict, table: np.ndarray, data_offset: int,
                  positions) -> dict[bytes, tuple[np.ndarray, int]]:
    """Entries at `positions` of a verified segment, each crc checked; raises CorruptSegment otherwise."""
    entry_bytes = header["layers"] * header["dim"] * 4
    out = {}
    for i in positions:
        f.seek(data_offset + i * entry_bytes)
        out[table["key"][i].tobytes()] = check_entry(header, table, i, f.read(entry_bytes))
    return out


def check_entry(header: dict, table: np.ndarray, i: int, data: bytes) -> tuple[np.ndarray, int]:
    """Entry `i` of a verified segment from its data bytes: (vectors (layers, dim), n_tokens);
    raises CorruptSegment when its crc does not match."""
    vectors = np.frombuffer(data, "<f4").reshape(header["layers"], header["dim"])
    n_tokens = int(table["n_tokens"][i])
    if _entry_crc(n_tokens, vectors) != int(table["crc"][i]):
        raise CorruptSegment(f"entry {i} checksum mismatch")
    return vectors, n_tokens


def _read_rows(fd: int, segment: SegmentRecord, rows: list[tuple[bytes, int]]) -> dict | None:
    """Entries at the indexed rows of one segment: each row of the segment's own index must hold
    the key and the entry's crc must match. None if any does not (the caller checks it whole)."""
    entry_bytes = segment.layers * segment.dim * 4
    index_offset = segment.data_offset - segment.n * INDEX_DTYPE.itemsize
    out = {}
    for key, row in rows:
        if not 0 <= row < segment.n:
            return None
        entry = os.pread(fd, INDEX_DTYPE.itemsize, index_offset + row * INDEX_DTYPE.itemsize)
        data = os.pread(fd, entry_bytes, segment.data_offset + row * entry_bytes)
        if len(entry) != INDEX_DTYPE.itemsize or entry[:32] != key or len(data) != entry_bytes:
            return None
        n_tokens, crc = struct.unpack("<iI", entry[32:])
        if zlib.crc32(data, zlib.crc32(struct.pack("<i", n_tokens))) != crc:
            return None
        out[key] = (np.frombuffer(data, "<f4").reshape(segment.layers, segment.dim), n_tokens)
    return out


def _is_fingerprint(name: str) -> bool:
    """A model fingerprint as the cache names its folder: lowercase hex digits."""
    return bool(name) and all(c in "0123456789abcdef" for c in name)
