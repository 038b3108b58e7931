"""The embedding job: message files -> chunked reading -> cache -> Parquet dataset + rejects + manifest.

    manifest = embed_files(["day.csv"], "out/", encoder)   # the dict written to out/_manifest.json

Each chunk of each input is written as part-<file>-<chunk>.parquet plus _rejects/part-<file>-<chunk>.parquet,
then recorded in _state/. A run killed at any point and started again with the same inputs and
options skips the recorded chunks and writes the rest, so the result equals an uninterrupted run.
A directory that holds a completed run (_SUCCESS) is rewritten from scratch (the cache makes that
cheap); so is one left by a run with other inputs, model or options. A directory is taken for
elmobatch's only when its own marker says so (output.is_output_dir); any other non-empty one is
refused untouched. One run writes a directory at a time: it holds DIR/.lock (flock) throughout.
Inputs and `out` may be s3:// URIs (elmobatch.storage): the same layout under a key prefix, each
file uploaded whole (files.upload), and a lease object for DIR/.lock (locking.ObjectLease).

The pieces, shared with the Spark engine (elmobatch/embedding/spark.py): `plan_run` (decisions,
checksums, the lock, resume state), `write_chunk` (one chunk -> its files), `finish_run` (manifest,
_SUCCESS).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from elmobatch.caching import EmbeddingCache, text_hash
from elmobatch.embedding import output as o
from elmobatch.embedding.progress import within_chunk
from elmobatch.errors import ElmobatchError
from elmobatch.settings import VECTOR_DTYPES, VECTORS
from elmobatch.files import file_sha256, sweep_uploads, utc_now
from elmobatch.locking import JobLock, LockHeld, ObjectLease
from elmobatch.reading.inputs import source_name
from elmobatch.storage import StoredPath, as_path, parquet_source, remove_tree
from elmobatch.reading import DEFAULT_CHUNK_ROWS, ReadError, ReadOptions, read_messages

MAX_ID_BUCKETS = 256  # bucket files open at once while counting duplicate ids
COUNTS = ("rows_read", "rows_embedded", "rows_rejected", "cache_hits", "computed")


@dataclass(frozen=True)
class EmbedOptions(ReadOptions):
    """Everything besides inputs and model that decides the output (part of the resume signature):
    how inputs are read (ReadOptions' fields), then how the output is written."""

    chunk_rows: int = DEFAULT_CHUNK_ROWS
    keep_text: bool = False
    vectors: str = VECTORS[0]  # pooled, or layers: also write the per-layer vectors (settings.VECTORS)
    vector_dtype: str = VECTOR_DTYPES[0]  # float32, or float16

    @classmethod
    def of(cls, read: ReadOptions, **settings) -> EmbedOptions:
        """The embed options for input settings `read` (flat here: their names are in the resume signature)."""
        return cls(**asdict(read), **settings)

    def read_options(self) -> ReadOptions:
        return ReadOptions(**{f.name: getattr(self, f.name) for f in fields(ReadOptions)})


class OutputError(ElmobatchError, ValueError):
    """An output directory that cannot be used, with why."""


class OutputLocked(OutputError):
    """Another live process is writing the output directory (it holds DIR/.lock)."""


def embed_files(inputs, out, encoder, *, options: EmbedOptions | None = None, cache: EmbeddingCache | None = None,
                batch_size: int | None = None, progress=None) -> dict:
    """Embed every input into `out`; returns the manifest. Raises ReadError/OutputError before any work."""
    options = options or EmbedOptions()
    cache = cache if cache is not None else EmbeddingCache()
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"--batch-size {batch_size}: expected a positive number of messages")
        encoder.batch_size = batch_size
    started, clock = utc_now(), time.monotonic()
    with plan_run(inputs, out, encoder, options) as plan:
        return _embed_planned(plan, encoder, options, cache, progress, started, clock)


def _embed_planned(plan: RunPlan, encoder, options, cache, progress, started: str, clock: float) -> dict:
    """The local engine's work once the output is locked and prepared; returns the manifest."""
    out, readers, inputs_info = plan.out, plan.readers, plan.inputs_info

    total_bytes = sum(i["bytes"] for i in inputs_info) or 1
    bytes_before, rows_seen, written, resumed = 0, 0, 0, 0
    records = []
    for file_index, (reader, info) in enumerate(zip(readers, inputs_info, strict=True)):
        done = bytes_before / total_bytes  # the fraction of the run done before this chunk
        for chunk in reader:
            name = part_name(file_index, chunk.index)
            ends_at = (bytes_before + info["bytes"] * reader.fraction(chunk)) / total_bytes
            record = plan.done.get(name)
            if record is None:
                on_batch = within_chunk(progress, rows_seen, chunk.rows_read, done, ends_at)
                renew_lease(plan.lease, out)  # before its files go up: a run that lost the lease uploads nothing more
                record = write_chunk(chunk, name, out, reader, encoder, cache, plan.schema, options, on_batch=on_batch)
                written += 1
            else:
                resumed += 1
            records.append(record)
            rows_seen += chunk.rows_read
            done = ends_at
            if progress:
                progress.update(rows_seen, ends_at)
        bytes_before += info["bytes"]
    if progress:
        progress.close()
    return finish_run(out, records, inputs_info, encoder, cache, options, plan.signature,
                      started=started, seconds=time.monotonic() - clock, written=written, resumed=resumed,
                      lease=plan.lease)


@dataclass
class RunPlan:
    """What every engine settles before any work: readers (decisions made), inputs with checksums,
    the resume signature, the Parquet schema, and the chunks an interrupted identical run finished."""

    out: Any  # a Path, or a StoredPath for an s3:// --out (either engine)
    readers: list
    inputs_info: list[dict]
    signature: str
    schema: pa.Schema
    done: dict[str, dict]
    lease: ObjectLease | None = None  # an object store's stand-in for the flock (None: out is local)


@contextmanager
def plan_run(inputs, out: Any, encoder, options: EmbedOptions) -> Iterator[RunPlan]:
    """Open every input, lock and prepare `out`; yields the plan and holds the lock until the block ends.
    Raises ReadError/OutputError (OutputLocked: another run holds the lock) before any work."""
    paths = [as_path(p) for p in inputs]
    if not paths:
        raise ReadError("no input files given")
    _check_names(paths, options.id_column)
    readers = [open_reader(p, options, encoder.tokenizer) for p in paths]
    inputs_info = [{"path": str(p), "name": p.name, "sha256": file_sha256(p), "bytes": p.stat().st_size,
                    "decisions": r.decisions.to_dict()} for p, r in zip(paths, readers, strict=True)]
    signature = _signature(inputs_info, encoder.cache_key, options)  # model and precision
    out = as_path(out)  # a Path or StoredPath
    _check_output(out)  # before creating anything: a directory not ours stays untouched
    out.mkdir(parents=True, exist_ok=True)
    with _lock_output(out) as lease:
        done = _prepare(out, signature)
        schema = o.embeddings_schema(encoder.dim, encoder.n_layers, options.keep_text, encoder.fingerprint,
                                     options.vectors, options.vector_dtype)
        yield RunPlan(out, readers, inputs_info, signature, schema, done, lease)


@contextmanager
def _lock_output(out: Path | StoredPath) -> Iterator[ObjectLease | None]:
    """Hold out/.lock (flock; on an object store, a lease object): a second writer is refused at once,
    naming the holder. Yields the lease (None for a local directory)."""
    try:
        if isinstance(out, StoredPath):
            with ObjectLease(out / o.LOCK) as lease:
                yield lease
        else:
            with JobLock(out / o.LOCK):
                yield None
    except LockHeld as exc:
        raise _locked(out, exc) from None


def renew_lease(lease: ObjectLease | None, out) -> None:
    """Renew an object store's lease (before each chunk); OutputLocked if another run took it over."""
    if lease is not None:
        try:
            lease.renew()
        except LockHeld as exc:
            raise _locked(out, exc) from None


def _locked(out, exc: LockHeld) -> OutputLocked:
    return OutputLocked(f"--out {out}: another run is writing this directory (pid {exc.holder.get('pid', '?')}, "
                        f"started {exc.holder.get('started', '?')}; lock {out / o.LOCK}); "
                        "this run did nothing" + (" more" if "took over" in str(exc) else ""))


def open_reader(path, options: EmbedOptions, tokenizer: str):
    """The chunked reader for one input, as every engine opens it; `tokenizer`: the model's."""
    return read_messages(path, options.read_options(), chunk_rows=options.chunk_rows, tokenizer=tokenizer)


def part_name(file_index: int, chunk_index: int) -> str:
    """The part file (and rejects file) of one chunk: part-<file>-<chunk>.parquet."""
    return f"part-{file_index:05d}-{chunk_index:06d}.parquet"


def _check_names(paths: list[Path | StoredPath], id_column: str | None) -> None:
    """Ids default to file name + row number (a .gz file's name without .gz), so two inputs may not share one."""
    if id_column is None:
        seen: dict[str, Path | StoredPath] = {}
        for p in paths:
            name = source_name(p)
            if name in seen:
                raise ReadError(f"inputs {seen[name]} and {p} share the file name {name!r}, so their default ids "
                                "(file name:row number) would collide: rename one or pass --id-column")
            seen[name] = p


def _signature(inputs_info, fingerprint: str, options: EmbedOptions) -> str:
    """What decides the output: a rerun resumes only when this is unchanged."""
    settings = asdict(options)
    if settings["delimiter"] is None:  # detected: the signature stays that of outputs written before the option
        del settings["delimiter"]
    data = {"inputs": [(i["name"], i["sha256"]) for i in inputs_info], "model": fingerprint,
            "options": settings, "layout": 1}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _check_output(out: Path | StoredPath) -> None:
    """`out` is missing, empty or elmobatch's; else OutputError (and nothing in it is touched)."""
    if isinstance(out, StoredPath) and not out.bucket_exists():
        raise OutputError(f"--out {out}: no such bucket {out.bucket!r} (or no access to it)")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and not o.is_output_dir(out):
        raise OutputError(f"--out {out}: not empty and not an elmobatch output directory (no {o.MANIFEST} or "
                          f"{o.STATE}/{o.RUN} with format {o.FORMAT!r}); refusing to write into it")


def _prepare(out: Path | StoredPath, signature: str) -> dict[str, dict]:
    """Make the locked `out` ready; returns the finished chunks of an interrupted identical run, by part name."""
    _check_output(out)  # again, now that no other writer can change it
    run_file = out / o.STATE / o.RUN
    try:
        previous = json.loads(run_file.read_text())
    except (OSError, ValueError):
        previous = {}
    resumable = not (out / o.SUCCESS).exists() and previous.get("signature") == signature
    if not resumable:
        (out / o.STATE).mkdir(exist_ok=True)  # the new marker first: a run killed from here on leaves a
        o.write_json({"format": o.FORMAT, "signature": signature, "started": utc_now()}, run_file, out / o.STATE)
        o.clear_output(out)  # directory still known as ours
    (out / o.REJECTS).mkdir(exist_ok=True)
    remove_tree(out / o.TMP)  # files a killed run was writing
    if isinstance(out, StoredPath):
        sweep_uploads(out)  # and on a store, the uploads it was copying into place
    (out / o.TMP).mkdir()
    if not resumable:
        return {}
    done = {}
    states: list = sorted((out / o.STATE).glob("part-*.json"), key=str)
    for state in states:
        record = json.loads(state.read_text())
        if _intact(out, record):
            done[record["part"]] = record
    return done


def _intact(out: Path | StoredPath, record: dict) -> bool:
    """Both files of a recorded chunk exist with the recorded row counts."""
    def rows(path) -> int:
        return pq.ParquetFile(parquet_source(path)).metadata.num_rows

    try:
        return (rows(out / record["part"]) == record["rows_embedded"]
                and rows(out / o.REJECTS / record["part"]) == record["rows_rejected"])
    except (OSError, pa.ArrowInvalid):
        return False


def write_chunk(chunk, name, out, reader, encoder, cache, schema, options, tmp_dir: Path | None = None,
                on_batch: Callable[[float], None] | None = None) -> dict:
    """Embed one chunk through the cache and write its part, rejects and state record (in that order).

    Returns the chunk's record (counts, reject reasons). `tmp_dir` (default out/_tmp) is where files
    are written before being renamed into place; concurrent writers each pass their own.
    """
    tmp_dir = tmp_dir or out / o.TMP
    hits, computed = cache.hits, cache.computed
    layers, n_tokens = cache.embed(encoder, chunk.texts, on_batch)
    ids = chunk.ids if chunk.ids is not None else [f"{reader.source_name}:{n}" for n in chunk.row_numbers]
    table = o.embeddings_table(schema, ids=ids, source_file=reader.source_name, row_numbers=chunk.row_numbers,
                               hashes=[text_hash(t) for t in chunk.texts], n_tokens=n_tokens, layers=layers,
                               texts=chunk.texts)
    rejects = pa.Table.from_pandas(chunk.rejects, schema=o.REJECTS_SCHEMA, preserve_index=False)
    o.write_parquet(rejects, out / o.REJECTS / name, tmp_dir)
    o.write_parquet(table, out / name, tmp_dir)
    record = {"part": name, "source_file": reader.source_name, "chunk": chunk.index,
              "rows_read": chunk.rows_read, "rows_embedded": len(chunk.rows), "rows_rejected": len(chunk.rejects),
              "cache_hits": cache.hits - hits, "computed": cache.computed - computed,
              "reject_reasons": {k: int(v) for k, v in chunk.rejects["reason"].value_counts().items()}}
    o.write_json(record, out / o.STATE / name.replace(".parquet", ".json"), tmp_dir)
    return record


def finish_run(out, records, inputs_info, encoder, cache, options, signature, *, started, seconds,
               written, resumed, engine: dict | None = None, computed_ahead: int = 0,
               lease: ObjectLease | None = None) -> dict:
    """Check the counts, write the manifest, then _SUCCESS; returns the manifest. `records` in part order.

    `computed_ahead`: vectors computed before the chunks were written (the Spark engine's compute-once
    pass), which the chunks then found as hits: counted as computed, not as hits. With `lease` (an
    object store), the manifest is written only while this run still holds it.
    """
    counts = {k: sum(r[k] for r in records) for k in COUNTS}
    moved = min(computed_ahead, counts["cache_hits"])  # more only if the executors' caches are not shared
    counts["cache_hits"] -= moved
    counts["computed"] += moved
    if counts["rows_read"] != counts["rows_embedded"] + counts["rows_rejected"]:
        raise RuntimeError(f"internal error: rows_read {counts['rows_read']} != rows_embedded "
                           f"{counts['rows_embedded']} + rows_rejected {counts['rows_rejected']}")
    scratch = out / o.TMP if isinstance(out, Path) else None  # an object store's: a local temporary directory
    counts["duplicate_ids"] = (count_duplicate_ids([out / r["part"] for r in records], scratch)
                               if options.id_column else 0)
    reasons: dict[str, int] = {}
    for r in records:
        for k, v in r["reject_reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    for info in inputs_info:
        mine = [r for r in records if r["source_file"] == source_name(info["path"])]  # day.csv.gz: day.csv
        info.update({k: sum(r[k] for r in mine) for k in ("rows_read", "rows_embedded", "rows_rejected")})
    manifest = {
        "format": o.FORMAT,
        "counts": counts,
        "reject_reasons": reasons,
        "model": {"fingerprint": encoder.fingerprint, "path": encoder.path, "dim": encoder.dim,
                  "layers": encoder.n_layers + 1, "tokenizer": encoder.tokenizer},
        "inputs": inputs_info,
        "parts": [{"file": r["part"], "rows": r["rows_embedded"]} for r in records],
        "rejects": [{"file": f"{o.REJECTS}/{r['part']}", "rows": r["rows_rejected"]} for r in records],
        "options": asdict(options),
        "cache": {"directory": str(cache.directory), "corrupt_segments": cache.corrupt},
        "signature": signature,
        "engine": engine or {"name": "local"},
        "timings": {"started": started, "finished": utc_now(), "seconds": round(seconds, 3),
                    "rows_per_second": round(sum(r["rows_read"] for r in records) / max(seconds, 1e-9), 1),
                    "chunks_written": written, "chunks_resumed": resumed},
    }
    renew_lease(lease, out)
    o.write_json(manifest, out / o.MANIFEST, out / o.TMP)
    o.write_success(out)
    remove_tree(out / o.TMP)  # bookkeeping: a completed run needs none
    remove_tree(out / o.STATE)
    return manifest


def count_duplicate_ids(parts: list, scratch: Path | None = None, bucket_rows: int = 1 << 18) -> int:
    """Rows whose `id` an earlier row of these part files already has (0: every id is distinct).

    Reads only the id column, one part at a time, as 64-bit hashes. With more than `bucket_rows`
    rows, the hashes go to bucket files under `scratch` (by their top bits) and are counted a
    bucket at a time, so memory stays about `bucket_rows` x 8 bytes however many rows there are.
    """
    rows = sum(pq.ParquetFile(parquet_source(p)).metadata.num_rows for p in parts)
    buckets = min(MAX_ID_BUCKETS, max(1, math.ceil(rows / bucket_rows)))
    if buckets == 1:
        every = [_id_hashes(p) for p in parts]
        return _duplicates(np.concatenate(every) if every else np.zeros(0, np.uint64))
    directory = Path(tempfile.mkdtemp(prefix="id-hashes-", dir=scratch))
    try:
        with ExitStack() as stack:
            files = [stack.enter_context(open(directory / f"{b}.u64", "wb")) for b in range(buckets)]
            for p in parts:
                hashes = _id_hashes(p)
                which = (hashes >> np.uint64(32)) % np.uint64(buckets)
                for b, f in enumerate(files):
                    hashes[which == b].tofile(f)
        return sum(_duplicates(np.fromfile(directory / f"{b}.u64", np.uint64)) for b in range(buckets))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _id_hashes(part) -> np.ndarray:
    """(rows,) uint64: a 64-bit hash of each row's id in one part file."""
    ids = pq.read_table(parquet_source(part), columns=["id"]).column("id")
    return pd.util.hash_array(ids.to_numpy(zero_copy_only=False))


def _duplicates(hashes: np.ndarray) -> int:
    return int(len(hashes) - len(np.unique(hashes)))


def duplicate_ids_warning(manifest: dict) -> str | None:
    """A line for stderr when some embedded rows share an id (they are all kept)."""
    n = manifest["counts"].get("duplicate_ids", 0)
    if not n:
        return None
    return (f"warning: {n:,} row(s) repeat an id already used by an earlier row (--id-column "
            f"{manifest['options']['id_column']!r}); all rows are kept, so `id` is not unique in this dataset")


def summary_line(manifest: dict, out) -> str:
    """One line for the end of a run, with the invariant spelled out."""
    c, t = manifest["counts"], manifest["timings"]
    return (f"rows_read {c['rows_read']:,} = rows_embedded {c['rows_embedded']:,} + rows_rejected "
            f"{c['rows_rejected']:,}; cache_hits {c['cache_hits']:,}, computed {c['computed']:,}; "
            f"{len(manifest['inputs'])} file(s), {t['chunks_written']} chunk(s) written, "
            f"{t['chunks_resumed']} resumed; "
            f"{t['seconds']:.1f} s -> {out}")
