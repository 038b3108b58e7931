"""The embedding cache: a message embedded once with a model is never computed again.

Key: (model fingerprint, sha256 of the normalized text). Normalizing collapses runs of whitespace
and strips the ends; both tokenizers split on whitespace, so normalized-equal texts have the same
tokens and the same vectors. Each model has its own directory, so another model never sees them.

Layout: CACHE_DIR/v1/<fingerprint>/seg-<time>-<id>.ebc, one segment file per batch of newly
computed vectors, written to a temporary name and renamed (readers never see a partial file):

    b"EBCACHE1" | u32 header length | u32 crc32(header) | header JSON {fingerprint, n, layers, dim,
    index_sha256} | index: n x (32-byte key, int32 n_tokens, u32 crc32 of the entry) |
    data: n x layers x dim float32

Opening a segment checks magic, header crc, size and index sha256; serving an entry checks its crc.
A segment failing any check is renamed to *.corrupt and its entries are recomputed, never served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import time
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path

from elmobatch.files import write_atomically

import numpy as np

log = logging.getLogger(__name__)

MAGIC = b"EBCACHE1"
FORMAT_DIR = "v1"
INDEX_DTYPE = np.dtype([("key", "V32"), ("n_tokens", "<i4"), ("crc", "<u4")])


class CorruptSegment(Exception):
    """A segment file whose bytes do not match its checksums."""


class CacheWriteError(OSError):
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


def default_cache_dir() -> Path:
    """$ELMOBATCH_CACHE, else ~/.cache/elmobatch."""
    return Path(os.environ.get("ELMOBATCH_CACHE") or Path.home() / ".cache" / "elmobatch")


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
    """Per-layer pooled vectors by (model, text). Counts `hits`, `computed` and `corrupt` segments."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.hits = 0
        self.computed = 0
        self.corrupt = 0

    def model_dir(self, fingerprint: str) -> Path:
        if not fingerprint or not all(c in "0123456789abcdef" for c in fingerprint):
            raise ValueError(f"model fingerprint {fingerprint!r}: expected a hex digest")
        return self.directory / FORMAT_DIR / fingerprint

    def embed(self, encoder, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> (layers float32 (n, n_layers + 1, dim), n_tokens int32 (n,)).

        Only texts not cached (and each only once, however often it repeats) go to the encoder.
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
            pooled = encoder.pool_tokens(tokens)
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
        info = {"fingerprint": encoder.fingerprint, "precision": encoder.precision, "path": encoder.path,
                "dim": encoder.dim, "layers": encoder.n_layers + 1, "tokenizer": encoder.tokenizer}
        with _writing(path):
            write_atomically(path, lambda tmp: tmp.write_text(json.dumps(info, indent=2)))

    def models(self) -> list[dict]:
        """The models with vectors in this cache: their model.json, plus `vectors` and `bytes` cached."""
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
        wanted, found = set(keys), {}
        for path in self.segments(fingerprint):
            if not wanted:
                break
            try:
                hits = _read_segment(path, fingerprint, wanted)
            except (CorruptSegment, OSError, ValueError) as exc:
                self._quarantine(path, exc)
                continue
            found.update(hits)
            wanted.difference_update(hits)
        return found

    def store(self, fingerprint: str, keys: list[bytes], layers: np.ndarray, n_tokens: np.ndarray) -> Path | None:
        """Write one segment atomically; returns its path (None when there is nothing to store)."""
        if not keys:
            return None
        layers = np.ascontiguousarray(layers, "<f4")
        index = np.zeros(len(keys), INDEX_DTYPE)
        index["key"] = np.frombuffer(b"".join(keys), "V32")
        index["n_tokens"] = n_tokens
        index["crc"] = [_entry_crc(int(n), v) for n, v in zip(n_tokens, layers, strict=True)]
        index_bytes = index.tobytes()
        header = json.dumps({"fingerprint": fingerprint, "n": len(keys), "layers": layers.shape[1],
                             "dim": layers.shape[2], "index_sha256": hashlib.sha256(index_bytes).hexdigest()}).encode()
        directory = self.model_dir(fingerprint)
        path = directory / f"seg-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.ebc"

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                f.write(MAGIC + struct.pack("<II", len(header), zlib.crc32(header)) + header)
                f.write(index_bytes)
                f.write(layers.tobytes())

        with _writing(path):
            directory.mkdir(parents=True, exist_ok=True)
            _sweep_tmp(directory)
            return write_atomically(path, write)

    def _quarantine(self, path: Path, exc: Exception) -> None:
        self.corrupt += 1
        log.warning("cache segment %s is damaged (%s): set aside as .corrupt; its vectors will be recomputed",
                    path, exc)
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(path.name + ".corrupt"))


def _sweep_tmp(directory: Path, older_than_s: float = 3600) -> None:
    """Remove temporary files that killed writers left behind (a live writer's are recent)."""
    for tmp in directory.glob(".tmp-*"):
        try:
            if time.time() - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
        except OSError:
            pass


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


def _read_segment(path: Path, fingerprint: str, wanted: set[bytes]) -> dict[bytes, tuple[np.ndarray, int]]:
    """The entries of `wanted` in one segment, every check passed; raises CorruptSegment otherwise."""
    with open(path, "rb") as f:
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
        if os.fstat(f.fileno()).st_size != data_offset + n * n_layers * dim * 4:
            raise CorruptSegment("wrong file size")
        index_bytes = f.read(n * INDEX_DTYPE.itemsize)
        if hashlib.sha256(index_bytes).hexdigest() != header["index_sha256"]:
            raise CorruptSegment("index checksum mismatch")
        index = np.frombuffer(index_bytes, INDEX_DTYPE)
        rows = [i for i, key in enumerate(index["key"]) if key.tobytes() in wanted]
        out = {}
        entry_bytes = n_layers * dim * 4
        for i in rows:
            f.seek(data_offset + i * entry_bytes)
            vectors = np.frombuffer(f.read(entry_bytes), "<f4").reshape(n_layers, dim)
            n_tokens = int(index["n_tokens"][i])
            if _entry_crc(n_tokens, vectors) != int(index["crc"][i]):
                raise CorruptSegment(f"entry {i} checksum mismatch")
            out[index["key"][i].tobytes()] = (vectors, n_tokens)
        return out
