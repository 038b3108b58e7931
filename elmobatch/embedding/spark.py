"""The embedding job on Spark: the same reader, cache and output code, with chunks spread over tasks.

    manifest = embed_files_spark(["day.csv"], "out/", "default", master="local[4]")

The driver plans the run exactly as the local engine does (`plan_run`: decisions, checksums,
the output's lock, held by the driver until the end, resume state) and splits each input into
*slices* by its size alone (it never reads an input again to count lines): slice k of n holds the
chunks whose index is k modulo n. Every task reads its whole file with the same chunked reader
(parsing is cheap next to the biLM; so CSV repair, encoding fallback and rejects are exactly the
local engine's). Two Spark jobs follow:

1. Compute once: each slice task looks its chunks' distinct texts up in the shared
   `EmbeddingCache` and emits the missing (key, text) pairs; these are repartitioned by key, so
   every missing text lands in exactly one task, which embeds it (encoder loaded once per Python
   worker) and stores it in the cache.
2. Write: each slice task embeds its chunks through the cache (all hits now, unless the cache is
   not shared by every executor) and writes each chunk's part, rejects and state record straight
   into the output directory (`write_chunk`).

The tasks return records; the driver writes the manifest and `_SUCCESS` (`finish_run`). So the
output directory, the cache and the model must be paths every executor can reach.

Inputs and `out` may be s3:// URIs: tasks read their slices from the store with the same reader and
upload each file whole, as the local engine does; executors find credentials and
endpoint in their environment (AWS_*). The driver holds the output's lease object throughout,
renewing it from a thread while the Spark jobs run (`_renewing`), and checks it once more just
before the manifest.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import threading
import time
import uuid
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from elmobatch.caching import EmbeddingCache, default_cache_dir, text_key
from elmobatch.embedding import output as o
from elmobatch.embedding.job import (EmbedOptions, OutputError, finish_run, open_reader, part_name, plan_run,
                                     write_chunk)
from elmobatch.embedding.job import renew_lease  # the local engine's: OutputLocked when taken over
from elmobatch.errors import ElmobatchError
from elmobatch.files import utc_now
from elmobatch.locking import LockHeld, ObjectLease
from elmobatch.reading.inputs import source_name
from elmobatch.storage import StoredPath, as_path, remove_tree

if TYPE_CHECKING:  # the encoder module imports TensorFlow; the driver may never need it
    from elmobatch.encoding.encoder import Encoder

INSTALL_HINT = "the Spark engine needs pyspark: pip install 'elmobatch[spark]'"
UNIT_SCHEMA = "file_index int, slice int, slices int"
MISSING_SCHEMA = pa.schema([("key", pa.binary()), ("text", pa.string())])  # a text the cache lacks
SEEN_LIMIT = 200_000  # keys a slice task remembers as already sent (bounded memory; a repeat beyond
#                       it is only sent twice: the key partitioning still computes it once)
SPARK_SCRATCH = "_spark_embed"  # warm_cache_with_spark's dataset, inside a job's output
RESULT_SCHEMA = pa.schema([("record", pa.string())])  # one JSON chunk record (or task note) per row


class SparkError(ElmobatchError, RuntimeError):
    """The Spark engine could not run (pyspark missing, a task failed): the message says why."""


@dataclass(frozen=True)
class SparkJob:
    """What every task needs; pickled to the executors with the task."""

    inputs: tuple[str, ...]  # absolute paths, or s3:// URIs
    decisions: tuple[dict, ...]  # the driver's reading decisions, per input: a task must make the same
    out: str  # an absolute path, or an s3:// URI
    model_spec: str  # as the user gave it
    model_path: str | None  # the driver's absolute path for a local model directory
    fingerprint: str
    precision: str  # load_encoder's precision: float32 or bf16
    cache_dir: str
    options: EmbedOptions
    tokenizer: str  # the model's: counts tokens for options.max_tokens
    batch_size: int | None
    done: frozenset[str]  # part names an interrupted identical run already finished
    cache_key: str  # the encoder's name in the cache (fingerprint, plus precision unless float32)
    lease_id: str | None = None  # the driver's lease on an s3:// out: tasks upload only while it holds it


# ---- the session -----------------------------------------------------------------------------


def _require_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise SparkError(INSTALL_HINT) from None


def spark_session(master: str | None = None, app_name: str = "elmobatch-embed"):
    """(session, created): the active session if there is one, else a new one on `master`.

    Python workers run this interpreter unless PYSPARK_PYTHON says otherwise (on a cluster it must
    name an interpreter with elmobatch installed on every node).
    """
    _require_pyspark()
    from pyspark.sql import SparkSession

    # pyspark warns about every pandas newer than it was tested with; mapInArrow does not use pandas
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # what the workers run, unless the user says
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    if master and master.startswith("local"):  # same machine: always this interpreter
        builder = builder.config("spark.pyspark.python", sys.executable)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")  # our errors are raised on the driver with the task's reason
    return session, True


# ---- the driver ------------------------------------------------------------------------------


def embed_files_spark(inputs, out, model_spec: str = "default", *, options: EmbedOptions | None = None,
                      cache_dir=None, batch_size: int | None = None, master: str | None = None, spark=None,
                      encoder=None, precision: str = "float32") -> dict:
    """Embed every input into `out` on Spark; returns the manifest (the local engine's layout and schema).

    `spark`: a session to use (else the active one, else a new one on `master`, stopped at the end).
    `encoder`: the driver's copy of the model, if already loaded (it must be `model_spec` at `precision`).
    Raises ReadError/OutputError/ModelError before any Spark work, SparkError when a task fails.
    """
    from elmobatch.encoding import load_encoder

    _require_pyspark()
    options = options or EmbedOptions()
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: expected a positive number of messages")
    encoder = encoder or load_encoder(model_spec, precision=precision)
    cache = EmbeddingCache(_reachable(cache_dir or default_cache_dir()))  # an s3:// cache as it is
    started, clock = utc_now(), time.monotonic()
    with plan_run(inputs, out, encoder, options) as plan:  # holds out/.lock until the manifest is written
        job = SparkJob(inputs=tuple(_reachable(i["path"]) for i in plan.inputs_info),
                       decisions=tuple(i["decisions"] for i in plan.inputs_info), out=_reachable(plan.out),
                       model_spec=str(model_spec), model_path=_local_model_path(model_spec),
                       fingerprint=encoder.fingerprint, precision=encoder.precision, cache_dir=str(cache.directory),
                       options=options, tokenizer=encoder.tokenizer, batch_size=batch_size,
                       done=frozenset(plan.done), cache_key=encoder.cache_key,
                       lease_id=plan.lease.id if plan.lease else None)
        own = spark is None
        if own:
            spark, own = spark_session(master)
        try:
            units = _units(plan, options.chunk_rows, spark.sparkContext.defaultParallelism)
            engine = {"name": "spark", "master": spark.sparkContext.master, "tasks": len(units),
                      "spark_version": spark.version}
            with _renewing(plan.lease, plan.out):
                ahead = _compute_missing(spark, job, units)
                results = _run(spark, job, units)
        finally:
            if own:
                spark.stop()
        new, notes = [r for r in results if "part" in r], [r for r in results + ahead if "part" not in r]
        cache.corrupt = sum(n["corrupt_segments"] for n in notes)
        computed_ahead = sum(n.get("computed", 0) for n in ahead)
        engine.update(python_workers=len({n["worker"] for n in notes}),
                      model_loads=sum(n["loaded_model"] for n in notes), computed_ahead=computed_ahead)
        records = sorted([*plan.done.values(), *new], key=lambda r: r["part"])
        _check_complete(plan.out, records, len(job.inputs))
        return finish_run(plan.out, records, plan.inputs_info, encoder, cache, options, plan.signature,
                          started=started, seconds=time.monotonic() - clock, written=len(new),
                          resumed=len(plan.done), engine=engine, computed_ahead=computed_ahead,
                          lease=plan.lease)


def warm_cache_with_spark(inputs, scratch, model_spec: str = "default", **kwargs) -> list[dict]:
    """Embed `inputs` on Spark only to fill the cache (`kwargs`: embed_files_spark's, `cache_dir`
    included), for `elmobatch run --engine spark`: scoring then finds every vector there.

    The embeddings datasets go under `scratch` (a shared path, as Spark needs) and are removed once
    complete; a run killed meanwhile resumes them. Inputs of one file name in different folders
    would share default ids (NAME:ROW) in one dataset, so without an id column each pass
    (`scratch/pass-K`, all on one Spark session) embeds inputs of distinct names; ids play no part
    in the cache. Returns each pass's manifest.
    """
    options = kwargs.get("options") or EmbedOptions()
    passes = distinct_name_passes(inputs) if options.id_column is None else [list(inputs)]
    spark, own = kwargs.pop("spark", None), False
    if spark is None and len(passes) > 1:  # one session for every pass, not one each
        spark, own = spark_session(kwargs.get("master"))
    try:
        manifests = [embed_files_spark(group, scratch / f"pass-{k}", model_spec, spark=spark, **kwargs)
                     for k, group in enumerate(passes)]
    finally:
        if own:
            spark.stop()
    remove_tree(scratch)  # a directory, or a prefix of an object store
    return manifests


def distinct_name_passes(inputs: list) -> list[list]:
    """Inputs, in order, cut into passes of distinct file names: pass K holds each name's K-th input."""
    passes: list[list] = []
    seen: Counter[str] = Counter()
    for path in inputs:
        name = source_name(path)
        k, seen[name] = seen[name], seen[name] + 1
        if k == len(passes):
            passes.append([])
        passes[k].append(path)
    return passes


def _reachable(name) -> str:
    """What an executor opens for a driver's input or output: an s3:// URI as it is, a local path made
    absolute (a relative one would be taken from the executor's working directory)."""
    path = as_path(name)
    return str(path) if isinstance(path, StoredPath) else str(path.absolute())


@contextmanager
def _renewing(lease: ObjectLease | None, out):
    """Renew an object store's lease from a thread, every third of its length, while the block runs
    (the Spark jobs: the driver writes nothing meanwhile). Raises OutputLocked at the end, or instead of
    the block's SparkError, when another run took the output over meanwhile; a renewal the store
    failed is tried again at the next tick."""
    if lease is None:
        yield
        return
    stop = threading.Event()

    def keep_renewing() -> None:
        while not stop.wait(lease.lease_seconds / 3):
            try:
                lease.renew()
            except LockHeld:  # taken over: never write over the other run's record (said at the end)
                return
            except OSError:  # the store, for a moment: the lease lasts three ticks
                continue

    renewer = threading.Thread(target=keep_renewing, name="elmobatch-lease", daemon=True)
    renewer.start()

    def stop_renewing() -> None:
        stop.set()
        renewer.join()

    try:
        yield
    except SparkError:  # maybe a task found the lease taken over (check_lease): then OutputLocked says so
        stop_renewing()
        renew_lease(lease, out)
        raise
    finally:
        stop_renewing()
    renew_lease(lease, out)  # raises OutputLocked if taken over (the thread saw it, or it happened since)


def _local_model_path(spec: str) -> str | None:
    """The absolute path of a model directory given as a path that exists here (None otherwise)."""
    if spec == "default" or "://" in spec or not Path(spec).exists():
        return None
    return str(Path(spec).absolute())


def _units(plan, chunk_rows: int, parallelism: int) -> list[tuple[int, int, int]]:
    """(file_index, slice, slices) per task: about `parallelism` tasks, shared by input size,
    never more slices for a file than it can have chunks."""
    total = sum(i["bytes"] for i in plan.inputs_info) or 1
    units = []
    for index, (info, reader) in enumerate(zip(plan.inputs_info, plan.readers, strict=True)):
        share = max(1, round(parallelism * info["bytes"] / total))
        slices = max(1, min(share, _max_chunks(info["bytes"], reader, chunk_rows)))
        units += [(index, k, slices) for k in range(slices)]
    return units


def _max_chunks(size_bytes: int, reader, chunk_rows: int) -> int:
    """An upper bound on the chunks of a file, from its size alone (no pass over it): a Parquet
    file's rows are in its metadata; any other record takes at least one byte (its newline)."""
    records = reader.size if reader.format == "parquet" else size_bytes
    return max(1, math.ceil(records / chunk_rows))


def _run(spark, job: SparkJob, units) -> list[dict]:
    """One partition per unit, embedded in mapInArrow; the records come back to the driver."""
    rdd = spark.sparkContext.parallelize(units, numSlices=len(units))
    frame = spark.createDataFrame(rdd, UNIT_SCHEMA)
    try:
        rows = frame.mapInArrow(partial(embed_units, job), "record string").collect()
    except Exception as exc:  # py4j / PythonException: keep the worker's own last line
        raise SparkError(f"the Spark job failed: {_reason(exc)}") from exc
    return [json.loads(row["record"]) for row in rows]


def _compute_missing(spark, job: SparkJob, units) -> list[dict]:
    """Embed every text of the chunks to write that the cache lacks, each exactly once in the run:
    slice tasks emit their missing (key, text) pairs, which are repartitioned by key so that a
    text repeated across slices is computed in one task only. Returns that job's task notes."""
    rdd = spark.sparkContext.parallelize(units, numSlices=len(units))
    missing = spark.createDataFrame(rdd, UNIT_SCHEMA).mapInArrow(partial(missing_texts, job), "key binary, text string")
    by_key = missing.repartition(len(units), "key")
    try:
        rows = by_key.mapInArrow(partial(compute_texts, job), "record string").collect()
    except Exception as exc:  # py4j / PythonException: keep the worker's own last line
        raise SparkError(f"the Spark job failed: {_reason(exc)}") from exc
    return [json.loads(row["record"]) for row in rows]


def _reason(exc: Exception) -> str:
    """The last meaningful line of a (possibly remote) traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line or "Exception:" in line]
    return (errors or lines or [type(exc).__name__])[-1][:2000]


def _check_complete(out, records: list[dict], n_inputs: int) -> None:
    """Every input's chunks 0..last are there, and their files are visible to the driver."""
    by_file: dict[int, list[int]] = {}
    for r in records:
        file_index, chunk = (int(x) for x in r["part"][len("part-"):-len(".parquet")].split("-"))
        by_file.setdefault(file_index, []).append(chunk)
    for index in range(n_inputs):
        chunks = sorted(by_file.get(index, []))
        if chunks != list(range(len(chunks))) or not chunks:
            raise SparkError(f"input {index}: chunks {chunks} came back; expected 0..n without gaps")
    missing = [r["part"] for r in records if not (out / r["part"]).is_file()]  # out: a Path or StoredPath
    if missing:
        raise OutputError(f"--out {out}: the executors wrote {missing[0]} (and {len(missing) - 1} more) where the "
                          "driver cannot see it: on a cluster, --out must be a filesystem path shared by the "
                          "driver and every executor")


# ---- the executors ---------------------------------------------------------------------------

_ENCODERS: dict[tuple[str, str, str], Encoder] = {}  # per Python worker: (spec, fingerprint, precision) -> Encoder


def worker_encoder(job: SparkJob):
    """The encoder of this Python worker, loaded on first use and kept for later tasks."""
    key = _encoder_key(job)
    if key not in _ENCODERS:
        _ENCODERS[key] = _load_worker_model(job)
    encoder = _ENCODERS[key]
    if job.batch_size is not None:
        encoder.batch_size = job.batch_size
    return encoder


def _encoder_key(job: SparkJob) -> tuple[str, str, str]:
    return job.model_spec, job.fingerprint, job.precision


def _load_worker_model(job: SparkJob):
    """Load the model from the first place that has it: the spec as given (relative to the
    worker, e.g. an --archives alias), Spark's files directory, or the driver's path."""
    from elmobatch.encoding import ModelError, load_encoder

    spec = job.model_spec
    if job.model_path is not None:  # a directory: find this executor's copy
        candidates = [spec, job.model_path]
        try:
            from pyspark import SparkFiles

            candidates.insert(1, str(Path(SparkFiles.getRootDirectory()) / spec))
        except Exception:  # not inside a Spark task
            pass
        found = [c for c in candidates if Path(c).is_dir()]
        if not found:
            raise ModelError(f"model {spec!r}: not found on this executor (looked at {', '.join(candidates)}); "
                             "ship it with --archives or put it on a shared filesystem")
        spec = found[0]
    encoder = load_encoder(spec, precision=job.precision)
    if encoder.fingerprint != job.fingerprint:
        raise SparkError(f"model {spec!r} on this executor has fingerprint {encoder.fingerprint[:12]}, "
                         f"the driver's has {job.fingerprint[:12]}: ship the same model to every executor")
    return encoder


def embed_units(job: SparkJob, batches):
    """mapInArrow function: for each (file_index, slice, slices) unit, embed its chunks; yields records."""
    for batch in batches:
        for unit in batch.to_pylist():
            records = embed_slice(job, unit["file_index"], unit["slice"], unit["slices"])
            yield pa.RecordBatch.from_pylist([{"record": json.dumps(r)} for r in records], schema=RESULT_SCHEMA)


def missing_texts(job: SparkJob, batches):
    """mapInArrow function: for each unit, the distinct texts of its chunks to write that the cache
    lacks, as (key, text) batches, one per chunk."""
    for batch in batches:
        for unit in batch.to_pylist():
            cache, seen = EmbeddingCache(job.cache_dir), set[bytes]()
            for _, chunk in _slice_chunks(job, unit["file_index"], unit["slice"], unit["slices"]):
                first: dict[bytes, str] = {}
                for text in chunk.texts:
                    key = text_key(text)
                    if key not in seen:
                        first.setdefault(key, text)
                if len(seen) + len(first) > SEEN_LIMIT:
                    seen.clear()
                seen.update(first)
                cached = cache.lookup(job.cache_key, list(first))
                rows = [{"key": k, "text": t} for k, t in first.items() if k not in cached]
                if rows:
                    yield pa.RecordBatch.from_pylist(rows, schema=MISSING_SCHEMA)


def compute_texts(job: SparkJob, batches):
    """mapInArrow function: embed the (key, text) pairs of one key partition into the cache,
    --chunk-rows texts at a time; yields one note (how many vectors it computed)."""
    cache = EmbeddingCache(job.cache_dir)
    had_model = _encoder_key(job) in _ENCODERS
    loaded = False
    pending: list[str] = []
    for batch in batches:
        pending += batch.column("text").to_pylist()
        while len(pending) >= job.options.chunk_rows:
            cache.embed(worker_encoder(job), pending[: job.options.chunk_rows])
            pending, loaded = pending[job.options.chunk_rows :], True
    if pending:
        cache.embed(worker_encoder(job), pending)  # looks up first: a key already stored here is a hit
        loaded = True
    note = {"task": "compute", "worker": f"{socket.gethostname()}:{os.getpid()}", "computed": cache.computed,
            "corrupt_segments": cache.corrupt, "loaded_model": loaded and not had_model}
    yield pa.RecordBatch.from_pylist([{"record": json.dumps(note)}], schema=RESULT_SCHEMA)


def _comparable(decisions: dict) -> dict:
    return {k: v for k, v in decisions.items() if k != "path"}  # the driver may have a relative path


def embed_slice(job: SparkJob, file_index: int, k: int, n: int) -> list[dict]:
    """Embed and write the chunks of slice k of n of input `file_index` (index % n == k) not done yet.

    Returns their records plus one note: this task's Python worker (host:pid), whether it had to load
    the model, and how many damaged cache segments it set aside.
    """
    out = as_path(job.out)
    cache = EmbeddingCache(job.cache_dir)
    had_model = _encoder_key(job) in _ENCODERS
    tmp_dir = _task_tmp_dir(out)
    records, schema = [], None
    for reader, chunk in _slice_chunks(job, file_index, k, n):
        name = part_name(file_index, chunk.index)
        check_lease(job, out)
        encoder = worker_encoder(job)
        if schema is None:
            schema = o.embeddings_schema(encoder.dim, encoder.n_layers, job.options.keep_text, encoder.fingerprint,
                                         job.options.vectors, job.options.vector_dtype)
            if tmp_dir is not None:
                tmp_dir.mkdir(parents=True, exist_ok=True)
        records.append(write_chunk(chunk, name, out, reader, encoder, cache, schema, job.options, tmp_dir=tmp_dir))
    if schema is not None and tmp_dir is not None:
        for leftover in tmp_dir.iterdir():
            leftover.unlink()
        tmp_dir.rmdir()
    note = {"task": f"{file_index}/{k}/{n}", "worker": f"{socket.gethostname()}:{os.getpid()}",
            "corrupt_segments": cache.corrupt, "loaded_model": schema is not None and not had_model}
    return [*records, note]


def check_lease(job: SparkJob, out) -> None:
    """Before a task uploads a chunk to an s3:// out: SparkError unless the driver's lease still holds it
    (as the local engine renews before each chunk, a run that lost the output uploads nothing more)."""
    if job.lease_id is None:
        return
    holder = ObjectLease(out / o.LOCK).holder()
    if holder.get("id") != job.lease_id:
        raise SparkError(f"--out {out}: another run took over this output (pid {holder.get('pid', '?')} on "
                         f"{holder.get('host', '?')}); this task uploads nothing more")


def _task_tmp_dir(out) -> Path | None:
    """This task's own temporary directory in a local `out` (a retried task never collides); None on
    an object store, where each file's temporary is an object (files.upload)."""
    return None if isinstance(out, StoredPath) else out / o.TMP / f"task-{uuid.uuid4().hex}"


def _slice_chunks(job: SparkJob, file_index: int, k: int, n: int):
    """Read input `file_index` whole; yields (reader, chunk) for its chunks with index % n == k not done yet.
    Raises SparkError if this executor reads the file differently from the driver."""
    path = as_path(job.inputs[file_index])
    reader = open_reader(path, job.options, job.tokenizer)
    mine, drivers = _comparable(reader.decisions.to_dict()), _comparable(job.decisions[file_index])
    if mine != drivers:
        raise SparkError(f"{path}: this executor reads the file differently from the driver "
                         f"({mine} vs {drivers}): is it the same file on every machine?")
    for chunk in reader:
        if chunk.index % n == k and part_name(file_index, chunk.index) not in job.done:
            yield reader, chunk


__all__ = ["SparkError", "SparkJob", "embed_files_spark", "warm_cache_with_spark", "embed_units", "embed_slice",
           "missing_texts", "compute_texts",
           "spark_session", "worker_encoder", "INSTALL_HINT"]
