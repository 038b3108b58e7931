"""The output directory contract: Parquet schemas and atomic writes.

    DIR/part-*.parquet      the embeddings dataset (the only data files at the top level)
    DIR/_rejects/*.parquet  rejected rows (one file per chunk, maybe empty)
    DIR/_manifest.json      counts, model, inputs with checksums, parts, decisions, timings
    DIR/_SUCCESS            written last, only when the run completed
    DIR/_state/, DIR/_tmp/  while running: resume bookkeeping and files being written (removed at the end)
    DIR/.lock               the writer's flock: one run per directory at a time

On an object store (--out s3://bucket/prefix) the same names are keys under the prefix; each file is
uploaded to a temporary object beside its name and copied into place by the store (files.upload),
and .lock is a lease object (locking.ObjectLease).

A directory is elmobatch's only when its marker says so: `format` in _manifest.json (a completed
run) or in _state/run.json (written first by every run).
"""

from __future__ import annotations

import json
from pathlib import Path

from elmobatch.files import STAGING, only_temporaries, write_atomically
from elmobatch.locking import output_lock
from elmobatch.settings import VECTOR_DTYPES, VECTORS
from elmobatch.storage import StoredPath, remove_tree

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SUCCESS, MANIFEST, REJECTS, STATE, TMP, LOCK = "_SUCCESS", "_manifest.json", "_rejects", "_state", STAGING, ".lock"
RUN = "run.json"  # in _state/: the marker and resume signature of the run in progress
FORMAT = "elmobatch-embeddings"  # the `format` of _manifest.json and _state/run.json
REJECTS_SCHEMA = pa.schema([("source_file", pa.string()), ("row_number", pa.int64()), ("reason", pa.string()),
                            ("detail", pa.string()), ("raw", pa.string())])


ARROW_TYPES = {"float32": pa.float32(), "float16": pa.float16()}  # each of VECTOR_DTYPES as Arrow stores it


def embeddings_schema(dim: int, n_layers: int, keep_text: bool, fingerprint: str, vectors: str = "pooled",
                      vector_dtype: str = "float32") -> pa.Schema:
    """`embedding` is the mean of the n_layers + 1 per-layer token means (the hub "default");
    `layers` (with vectors="layers") holds those per-layer means. Floats are `vector_dtype`."""
    if vectors not in VECTORS or vector_dtype not in VECTOR_DTYPES:
        raise ValueError(f"vectors={vectors!r}, vector_dtype={vector_dtype!r}: expected one of {VECTORS} "
                         f"and one of {tuple(VECTOR_DTYPES)}")
    value = ARROW_TYPES[vector_dtype]
    fields = [("id", pa.string()), ("source_file", pa.string()), ("row_number", pa.int64()),
              ("text_hash", pa.string()), ("n_tokens", pa.int32()),
              ("embedding", pa.list_(value, dim))]
    if vectors == "layers":
        fields.append(("layers", pa.list_(pa.list_(value, dim), n_layers + 1)))
    fields.append(("model_fingerprint", pa.string()))
    if keep_text:
        fields.append(("text", pa.string()))
    metadata = {"elmobatch.dim": str(dim), "elmobatch.layers": str(n_layers + 1),
                "elmobatch.model_fingerprint": fingerprint, "elmobatch.vectors": vectors}
    return pa.schema(fields, metadata=metadata)


def _fixed_lists(values: np.ndarray, value_type: pa.DataType, *sizes: int) -> pa.Array:
    """float array (n, *sizes) -> nested fixed_size_list array of length n, of `value_type` floats."""
    array = pa.array(np.ascontiguousarray(values, value_type.to_pandas_dtype()).reshape(-1), value_type)
    for size in reversed(sizes):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return array


def embeddings_table(schema: pa.Schema, *, ids, source_file: str, row_numbers, hashes, n_tokens: np.ndarray,
                     layers: np.ndarray, texts=None) -> pa.Table:
    """One chunk's rows; `layers` is (n, n_layers + 1, dim) float32 (the mean is taken in float32)."""
    n, n_layer, dim = layers.shape
    value_type = schema.field("embedding").type.value_type
    columns = {
        "id": pa.array(ids, pa.string()),
        "source_file": pa.array([source_file] * n, pa.string()),
        "row_number": pa.array(row_numbers, pa.int64()),
        "text_hash": pa.array(hashes, pa.string()),
        "n_tokens": pa.array(n_tokens, pa.int32()),
        "embedding": _fixed_lists(layers.mean(axis=1), value_type, dim),
        "model_fingerprint": pa.array([schema.metadata[b"elmobatch.model_fingerprint"].decode()] * n, pa.string()),
    }
    if "layers" in schema.names:
        columns["layers"] = _fixed_lists(layers, value_type, n_layer, dim)
    if "text" in schema.names:
        columns["text"] = pa.array(texts, pa.string())
    return pa.Table.from_pydict(columns, schema=schema)


def read_layers(table: pa.Table) -> np.ndarray:
    """The `layers` column of an embeddings table -> float32 (n, n_layers + 1, dim)."""
    if "layers" not in table.column_names:
        raise ValueError("this embeddings dataset has no `layers` column (written with --vectors pooled, the "
                         "default): embed with --vectors layers for per-layer vectors")
    column = table.column("layers").combine_chunks()
    n_layers, dim = column.type.list_size, column.type.value_type.list_size
    values = column.flatten().flatten().to_numpy().astype(np.float32, copy=False)
    return values.reshape(len(column), n_layers, dim)


def read_embedding(table: pa.Table) -> np.ndarray:
    """The `embedding` column -> float32 (n, dim)."""
    column = table.column("embedding").combine_chunks()
    values = column.flatten().to_numpy().astype(np.float32, copy=False)
    return values.reshape(len(column), column.type.list_size)


def write_parquet(table: pa.Table, final: Path | StoredPath, tmp_dir: Path | StoredPath) -> None:
    """Write to tmp_dir, then rename: a reader never sees a partial file."""
    write_atomically(final, lambda tmp: pq.write_table(table, tmp), tmp_dir)


def write_json(data: dict, final: Path | StoredPath, tmp_dir: Path | StoredPath) -> None:
    write_atomically(final, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n"), tmp_dir)


def is_output_dir(out: Path | StoredPath) -> bool:
    """Whether `out` may be written by elmobatch embed: empty, marked as ours, or holding only what a
    first run killed before its marker leaves (its lock file; _state/ with temporary files)."""
    return _marked(out / MANIFEST) or _marked(out / STATE / RUN) or _only_leftovers(out)


def _marked(path: Path | StoredPath) -> bool:
    """`path` is a JSON object with our `format`."""
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _only_leftovers(out: Path | StoredPath) -> bool:
    for entry in out.iterdir():
        if entry.name == LOCK:
            ours = entry.is_file() and (entry.stat().st_size == 0 or "pid" in _lock_record(entry))
        else:
            ours = entry.name == STATE and entry.is_dir() and only_temporaries(entry)
        if not ours:
            return False
    return True


def _lock_record(path: Path | StoredPath) -> dict:
    return output_lock(path).holder()


def write_success(out: Path | StoredPath) -> None:
    """The empty _SUCCESS, appearing at once (renamed from _tmp/ locally, one upload on a store)."""
    if isinstance(out, StoredPath):
        (out / SUCCESS).write_bytes(b"")
        return
    (out / TMP / SUCCESS).write_text("")
    (out / TMP / SUCCESS).replace(out / SUCCESS)


def clear_output(out: Path | StoredPath) -> None:
    """Remove what a previous run wrote, all but the new run's marker (_state/run.json, written before);
    _SUCCESS first, so no reader trusts a half-cleared directory."""
    for name in (SUCCESS, MANIFEST):
        (out / name).unlink(missing_ok=True)
    for part in out.glob("part-*.parquet"):
        part.unlink()
    for name in (REJECTS, TMP):
        remove_tree(out / name)
    for entry in (out / STATE).iterdir():
        if entry.name != RUN:
            remove_tree(entry) if entry.is_dir() else entry.unlink()
