"""The embedding cache on an object store (--cache-dir s3://BUCKET/PREFIX): no shared disk, no
rename, no locks.

Layout and bytes as on a disk: PREFIX/v1/<fingerprint>/seg-<time>-<id>.ebc, written and checked by
cache.py's own code (`encode_segment`, `verify_segment`, `check_entry`). Each segment is uploaded
whole under its final, unique name (an upload appears whole or not at all) and never changed.

There is no index object: the listing of segment objects is the index. So concurrent writers (Spark
executors, runs on other machines) never update a shared object and never lose each other's
entries. Each process reads the key section (header and index rows) of every segment once,
remembered by name and size for the life of the process (Spark's Python workers keep it across
tasks), to map key -> (segment, row); the vectors of hits come with one ranged read per segment
(first to last wanted row), each entry's crc checked. A lookup lists the model's prefix only when
some key is unknown (a miss), so a warmed run lists once per process and then reads only vectors.

A segment failing a check is copied to NAME.corrupt and deleted; its entries are recomputed, never
served. Compaction and pruning are not done here (a bucket lifecycle rule can expire old segments).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass, field

import numpy as np

from elmobatch.caching.cache import (FORMAT_DIR, CorruptSegment, EmbeddingCache, cache_location, check_entry,
                                     encode_segment, segment_name, verify_segment)
from elmobatch.errors import ElmobatchError
from elmobatch.storage import StoredPath

log = logging.getLogger(__name__)

KEY_SECTION_READ = 1 << 16  # bytes fetched at a time while reading a segment's header and index rows


class StoreCacheUnsupported(ElmobatchError, OSError):
    """A cache command that an object store's cache does not offer (named in the message)."""


@dataclass(frozen=True)
class StoredSegment:
    """A verified segment's key section: its header, index rows and where its vectors start."""

    path: StoredPath
    header: dict
    table: np.ndarray
    data_offset: int

    def read(self, rows: list[int]) -> dict[int, tuple[np.ndarray, int]]:
        """{row: (vectors (layers, dim), n_tokens)} with one ranged read from the first row to the last;
        raises CorruptSegment when an entry's crc does not match (or the object is shorter)."""
        entry_bytes = self.header["layers"] * self.header["dim"] * 4
        first, last = min(rows), max(rows)
        span = self.path.read_range(self.data_offset + first * entry_bytes, (last - first + 1) * entry_bytes)
        out = {}
        for row in rows:
            start = (row - first) * entry_bytes
            data = span[start : start + entry_bytes]
            if len(data) != entry_bytes:
                raise CorruptSegment(f"entry {row} cut short")
            out[row] = check_entry(self.header, self.table, row, data)
        return out


@dataclass
class ModelListing:
    """What this process knows of one model's segments in the store."""

    segments: dict[tuple[str, int], StoredSegment] = field(default_factory=dict)  # (name, size) -> segment
    where: dict[bytes, tuple[tuple[str, int], int]] = field(default_factory=dict)  # key -> ((name, size), row)

    def add(self, ident: tuple[str, int], segment: StoredSegment) -> None:
        self.segments[ident] = segment
        keys = segment.table["key"].tobytes()
        for row in range(len(segment.table)):
            self.where[keys[32 * row : 32 * row + 32]] = (ident, row)

    def forget(self, idents) -> None:
        """Drop segments gone from the store (or set aside), and their keys."""
        gone = {i for i in idents if self.segments.pop(i, None) is not None}
        if gone:
            self.where = {k: v for k, v in self.where.items() if v[0] not in gone}


_LISTINGS: dict[str, ModelListing] = {}  # per process: model prefix URI -> what is known of it


class StoredEmbeddingCache(EmbeddingCache):
    """EmbeddingCache on an object store (see the module docstring); made by EmbeddingCache("s3://...")."""

    def __init__(self, directory=None):
        root = cache_location(directory)
        assert isinstance(root, StoredPath), f"{directory}: not an object store URI"
        self.root = root
        self.directory = root  # what the manifest and messages show
        self.hits = self.computed = self.corrupt = 0
        self._indexes = {}

    def _prefix(self, fingerprint: str) -> StoredPath:
        """PREFIX/v1/<fingerprint> (the fingerprint checked as model_dir checks it)."""
        self.model_dir(fingerprint)
        return self.root / FORMAT_DIR / fingerprint

    def _listing(self, fingerprint: str) -> ModelListing:
        return _LISTINGS.setdefault(str(self._prefix(fingerprint)), ModelListing())

    def lookup(self, fingerprint: str, keys: list[bytes]) -> dict[bytes, tuple[np.ndarray, int]]:
        """{key: (vectors (layers, dim), n_tokens)} for the keys that are cached and intact."""
        if not keys:
            return {}
        found = self._serve_known(fingerprint, keys)
        missing = [k for k in keys if k not in found]
        if missing and self._list_new(fingerprint):
            found.update(self._serve_known(fingerprint, missing))
        return found

    def _serve_known(self, fingerprint: str, keys: list[bytes]) -> dict[bytes, tuple[np.ndarray, int]]:
        """The entries of `keys` in segments this process knows, read from the store and checked."""
        listing = self._listing(fingerprint)
        wanted: dict[tuple[str, int], list[tuple[bytes, int]]] = {}
        for key in keys:
            if key in listing.where:
                ident, row = listing.where[key]
                wanted.setdefault(ident, []).append((key, row))
        found: dict[bytes, tuple[np.ndarray, int]] = {}
        for ident, rows in wanted.items():
            segment = listing.segments[ident]
            try:
                entries = segment.read([row for _, row in rows])
            except FileNotFoundError:  # removed from the store since it was listed
                listing.forget([ident])
                continue
            except (CorruptSegment, ValueError) as exc:
                self._set_aside(listing, ident, segment.path, exc)
                continue
            except OSError as exc:  # the store, for now: these keys are computed; the segment stays
                log.warning("cache segment %s could not be read (%s): its vectors are recomputed", segment.path, exc)
                continue
            found.update((key, entries[row]) for key, row in rows)
        return found

    def _list_new(self, fingerprint: str) -> bool:
        """List the model's segments; read the key sections of those new to this process and forget
        those gone. True if anything changed."""
        listing, directory = self._listing(fingerprint), self._prefix(fingerprint)
        on_store = {(path.name, size): path for path, size in directory.sizes("seg-*.ebc").items()}
        new = [ident for ident in sorted(on_store) if ident not in listing.segments]
        for ident in new:
            path = on_store[ident]
            try:
                with path.fs.open_input_file(path.path) as raw:
                    header, table, data_offset = verify_segment(io.BufferedReader(raw, KEY_SECTION_READ),
                                                                fingerprint, size=ident[1])
            except FileNotFoundError:
                continue
            except (CorruptSegment, ValueError) as exc:
                self._set_aside(listing, ident, path, exc)
                continue
            listing.add(ident, StoredSegment(path, header, table, data_offset))
        gone = [ident for ident in listing.segments if ident not in on_store]
        listing.forget(gone)
        return bool(new or gone)

    def store(self, fingerprint: str, keys: list[bytes], layers: np.ndarray, n_tokens: np.ndarray) -> StoredPath | None:
        """Upload one segment under a new unique name; returns it (None when there is nothing to store)."""
        if not keys:
            return None
        header, table, blocks = encode_segment(fingerprint, keys, layers, n_tokens)
        path = self._prefix(fingerprint) / segment_name()
        path.write_blocks(blocks)
        self._listing(fingerprint).add((path.name, sum(map(len, blocks))),
                                       StoredSegment(path, header, table, len(blocks[0]) + len(blocks[1])))
        return path

    def _set_aside(self, listing: ModelListing, ident: tuple[str, int], path: StoredPath, exc: Exception) -> None:
        """A damaged segment: copied to NAME.corrupt and deleted (never served; its keys recomputed)."""
        self.corrupt += 1
        listing.forget([ident])
        log.warning("cache segment %s is damaged (%s): set aside as .corrupt; its vectors will be recomputed",
                    path, exc)
        with contextlib.suppress(OSError):
            path.copy_to(path.parent / f"{path.name}.corrupt")
            path.unlink(missing_ok=True)

    def _describe(self, encoder) -> None:
        """The model's model.json beside its segments, once, for `elmobatch models` / `cache info`."""
        path = self._prefix(encoder.cache_key) / "model.json"
        if not path.is_file():
            path.write_text(json.dumps(self._model_info(encoder), indent=2))

    def models(self) -> list[dict]:
        """As EmbeddingCache.models, from the store's listing (`index_bytes` is 0: there is no index)."""
        out = []
        for directory in (self.root / FORMAT_DIR).iterdir():
            try:
                info = json.loads((directory / "model.json").read_text())
            except (OSError, ValueError):
                info = {"fingerprint": directory.name}
            self._list_new(directory.name)
            segments = self._listing(directory.name).segments
            info.update(vectors=sum(s.header["n"] for s in segments.values()), bytes=sum(i[1] for i in segments),
                        segments=len(segments), index_bytes=0, set_aside=len(directory.glob("*.corrupt")),
                        cache_dir=str(directory))
            out.append(info)
        return out

    def compact(self, target_bytes: int = 0) -> dict:
        raise StoreCacheUnsupported(f"{self.root}: compacting a cache on an object store is not supported yet")

    def prune(self, older_than_days: float | None = None, max_bytes: int | None = None) -> dict:
        raise StoreCacheUnsupported(f"{self.root}: pruning a cache on an object store is not supported; "
                                    "a bucket lifecycle rule on the prefix can expire old segments")
