"""`elmobatch score` and `elmobatch evaluate`: apply a head to message files.

    summary = score_file("day.csv", "day.scored.csv", head=head, encoder=enc, cache=cache)

Every good row is written with its original columns plus `label` (predicted label name) and
`score` (P(positive label); for more than two labels, the probability of the predicted one), the
last two columns, after `source_file` and `row_number` (where the row came from, numbered as
rejects number it; left out with provenance=False); an input column named like one of these is kept as
`input_<name>`, with a warning. Parquet outputs carry the head's and model's fingerprints in their
schema metadata (key b"elmobatch"). Rows are written in
file order, chunk by chunk, to a temporary file in `_tmp/` beside the output (named `.tmp-*.tmp`,
so no reader's glob matches it), renamed at the end; what a killed run left there is swept when
the same output is scored again. One scorer per output at a time: it holds `_tmp/<name>.lock` for
the output and its rejects file (when that lies beside it, as the command line puts it), and a
second one writing either raises OutputLocked (exit 5).
Rows the reader rejects go to a rejects file beside the output (`<output stem>.rejects.csv` or
`.parquet`), always written, so rows_read = rows_scored + rows_rejected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from elmobatch.encoding.specs import is_remote
from elmobatch.errors import ElmobatchError
from elmobatch.files import (commit, remove_if_empty, staging, sweep_temporaries, temporary_path, upload, utc_now,
                             write_csv, write_error)
from elmobatch.locking import JobLock, LockHeld
from elmobatch.reading import DEFAULT_CHUNK_ROWS, REJECT_COLUMNS, ReadOptions
from elmobatch.reading.inputs import input_stem, source_name
from elmobatch.scoring.json_text import json_line, nested_as_json
from elmobatch.storage import StoredPath, as_path
from elmobatch.training.metrics import head_metrics
from elmobatch.embedding.vectors import file_vectors, labelled_vectors
from elmobatch.training.head import HEAD_JSON, Head, HeadError, check_model, default_head_dir, load_head
from elmobatch.training.split import parse_split

OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
ADDED_COLUMNS = ("label", "score")
PROVENANCE_COLUMNS = ("source_file", "row_number")
METADATA_KEY = b"elmobatch"  # a scored Parquet file's schema metadata: version, date, head and model

logger = logging.getLogger(__name__)


class ScoreError(ElmobatchError, ValueError):
    """Scoring settings that cannot work (output path, threshold), with what was expected."""


class OutputNameError(ScoreError):
    """The outputs the command names cannot be written: --out's extension or URI, one --out file for many
    inputs, an output or rejects file named like an input, two inputs of one stem writing one file.
    A mistake in the command (the command line makes it a usage error, exit 2), not in the data."""


class OutputLocked(LockHeld):
    """Another live process is scoring into the same output file (it holds `_tmp/<name>.lock`)."""


def output_format(path) -> str:
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise OutputNameError(f"--out {path}: expected a .csv or .parquet file name (the extension picks the format)")
    return fmt


def output_paths(inputs: list, out: str | None, *, rejects_only: bool = False) -> list[Path | StoredPath]:
    """Where each input's scores go: `<stem>.scored.csv` in the cwd by default; --out a .csv or
    .parquet file for one input, or a directory (for any number) holding `<stem>.scored.csv`; the
    same for an object (s3://BUCKET/KEY.csv) or a key prefix (s3://BUCKET/PREFIX), whose bucket must exist.
    `rejects_only` (--out -: the scores go to standard output): only each input's rejects file is
    written (rejects_path of the path returned); the checks and messages are about those files."""
    try:
        target = as_path(out) if out is not None else None
    except ValueError as exc:  # s3:///key, file://host/x
        raise OutputNameError(f"--out {exc}") from None
    if target is not None and target.suffix.lower() in OUTPUT_FORMATS:
        if len(inputs) > 1:
            raise OutputNameError(f"--out {out}: one output file for {len(inputs)} inputs; give a directory instead")
        paths = [target]
    else:
        if target is not None and target.suffix:
            output_format(out)  # raises: an unknown extension is a mistake, not a directory name
        directory = target if target is not None else Path.cwd()
        paths = [directory / f"{input_stem(p)}.scored.csv" for p in inputs]
    written = [[rejects_path(p)] if rejects_only else [p, rejects_path(p)] for p in paths]  # type: ignore[type-var]
    sources = {_file_key(source) for source in inputs}
    for path in (path for files in written for path in files):
        if _file_key(path) in sources:
            if out is not None:
                named, elsewhere = f"--out {path}", "score the inputs into another --out directory"
            elif rejects_only:
                named, elsewhere = f"{path} (the rejects file of --out -)", "run score from another directory"
            else:
                named, elsewhere = f"{path} (the default output name)", "score the inputs into an --out directory"
            raise OutputNameError(f"{named}: that is one of the input files; scores and rejects go to new files "
                                  f"({elsewhere})")
    first_for: dict = {}
    for source, files in zip(inputs, written, strict=True):
        if files[0] in first_for:
            apart = ("score them in separate runs, each from its own directory" if rejects_only
                     else "score them in separate runs or into different --out directories")
            raise OutputNameError(f"{first_for[files[0]]} and {source} share a file name stem, so both would write "
                                  f"{files[0]}: {apart}")
        first_for[files[0]] = source
    if isinstance(target, StoredPath) and not target.bucket_exists():  # before the model loads
        raise ScoreError(f"--out {out}: no such bucket {target.bucket!r} (or no access to it)")
    return paths


def _file_key(path) -> Path | StoredPath:
    """What names one file: an object as it is, a local path resolved (links and '..' followed)."""
    path = as_path(path)
    return path if isinstance(path, StoredPath) else path.resolve()


OutPath = TypeVar("OutPath", Path, StoredPath)  # a local file or a stored object, kept as it is


def rejects_path(out: OutPath) -> OutPath:
    """The rejects file beside a scored file (or object): day.scored.csv -> day.scored.rejects.csv."""
    return out.parent / f"{out.stem}.rejects{out.suffix}"


@dataclass
class ScoreSummary:
    input: str
    output: str
    rejects: str
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    label_counts: dict = field(default_factory=dict)
    renamed_columns: dict = field(default_factory=dict)  # input column -> its name in the output

    def line(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.label_counts.items()))
        renamed = "".join(f"; input column {a!r} written as {b!r}" for a, b in self.renamed_columns.items())
        return (f"{self.input}: rows_read {self.rows_read} = scored {self.rows_scored} + rejected "
                f"{self.rows_rejected} -> {self.output} ({counts or 'no rows'}); rejects -> {self.rejects}"
                + renamed)


CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)


class _TableWriter:
    """Appends DataFrames to one CSV or Parquet file under a temporary name in `tmp_dir` (a `_tmp/`
    on the same file system); `close` renames it into place. A Parquet file gives a column named in
    `types` that Arrow type (a Parquet input's own), others the type Arrow finds in the first chunk
    that has a value (the rows written before it are rewritten with that type: they hold nulls
    there). A value of another type in a later chunk is a ScoreError, never a cast to text.
    A failed write (e.g. disk full) raises WriteError naming the file."""

    def __init__(self, path: Path, columns: list[str], tmp_dir: Path, metadata: dict[bytes, bytes] | None = None,
                 types: dict | None = None):
        self.path, self.columns, self.format = path, columns, output_format(path)
        self.metadata, self.types = metadata or {}, types or {}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir.mkdir(parents=True, exist_ok=True)  # even if another writer's cleanup removed it
        self.tmp = temporary_path(path, tmp_dir)
        self.parquet: pq.ParquetWriter | None = None
        self.untyped: set[str] = set()  # columns with no value yet, written as text until one comes
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        if list(frame.columns) != self.columns:  # one header for every chunk: a CSV row must fit it
            raise ScoreError(f"{self.path}: a chunk has the columns {', '.join(map(str, frame.columns))}, "
                             f"unlike the first ({', '.join(map(str, self.columns))}); did the input change "
                             "while it was read?")
        try:
            self._append(frame)
        except OSError as exc:
            raise write_error(exc, self.path) from exc
        self.rows += len(frame)

    def _append(self, frame: pd.DataFrame) -> None:
        if self.format == "csv":
            write_csv(nested_as_json(frame), self.tmp, append=self.rows > 0)
            return
        try:
            arrays = [self._array(frame[name], name) for name in self.columns]
            if self.parquet is None:  # the file's types: a Parquet input's own, else the first chunk's
                self.parquet = pq.ParquetWriter(self.tmp, self._schema(frame, arrays))
                self.untyped = {name for name, a in zip(self.columns, arrays, strict=True) if _untyped(a.type)}
            found = {name: a.type for name, a in zip(self.columns, arrays, strict=True)
                     if name in self.untyped and not _untyped(a.type)}
            self.untyped -= set(found)
            found = {name: t for name, t in found.items() if t != self.parquet.schema.field(name).type}
            if found:  # (a first value of text needs no rewrite: the column was written as text)
                self._retype(found, frame)
            arrays = [_cast(a, f) for a, f in zip(arrays, self.parquet.schema, strict=True)]
        except CONVERSION_ERRORS as exc:
            raise ScoreError(f"{self.path}: a column changed type between chunks or mixes types ({exc}); "
                             "write CSV instead, or give the input consistent column types") from exc
        self.parquet.write_table(pa.Table.from_arrays(arrays, schema=self.parquet.schema))

    def _array(self, column: pd.Series, name: str) -> pa.Array:
        """One column as Arrow: Python objects in their Parquet input's type value for value (NaN
        stays NaN), else as Arrow finds them (pandas' NaN, NaT and NA in a typed column are nulls)."""
        if name in self.types and column.dtype == object:
            return pa.array([None if v is pd.NA else v for v in column.tolist()], type=self.types[name])
        array = pa.array(column, from_pandas=True)
        return array.cast(self.types[name]) if name in self.types else array

    def _retype(self, types: dict, frame: pd.DataFrame) -> None:
        """Give columns that had no value so far the type their first value brings (in `frame`): the
        rows written so far are copied, batch by batch, into a new temporary file with that type, and
        pandas' description of those columns is taken from `frame`."""
        assert self.parquet is not None
        self.parquet.close()
        old, schema = self.tmp, self.parquet.schema
        for name, arrow_type in types.items():
            at = schema.get_field_index(name)
            schema = schema.set(at, schema.field(at).with_type(arrow_type))
        schema = schema.with_metadata({**schema.metadata, **_pandas_columns(schema.metadata, frame, types)})
        self.tmp = temporary_path(self.path, old.parent)
        try:
            self.parquet = pq.ParquetWriter(self.tmp, schema)
            with pq.ParquetFile(old) as written:
                for batch in written.iter_batches():
                    arrays = [_retyped(batch.column(i), f.type) if f.name in types else batch.column(i)
                              for i, f in enumerate(schema)]
                    self.parquet.write_table(pa.Table.from_arrays(arrays, schema=schema))
        except BaseException:
            self.discard()  # the new file; the old one is then dropped by the caller's discard
            self.tmp, self.parquet = old, None
            raise
        old.unlink()

    def _schema(self, frame: pd.DataFrame, arrays: list[pa.Array]) -> pa.Schema:
        """The first chunk's types (a column with no value yet is text), with pandas' metadata where
        pandas can describe the frame (it reads Int64 columns back as Int64) and ours."""
        fields = [pa.field(name, pa.string() if pa.types.is_null(a.type) else a.type)
                  for name, a in zip(self.columns, arrays, strict=True)]
        described: dict = {}
        with contextlib.suppress(*CONVERSION_ERRORS):
            described = pa.Schema.from_pandas(frame, preserve_index=False).metadata or {}
        return pa.schema(fields, metadata={**described, **self.metadata})

    def close(self) -> None:
        if self.rows == 0:
            self.write(pd.DataFrame({c: pd.Series(dtype="string") for c in self.columns}))
        try:
            if self.parquet is not None:
                self.parquet.close()
            commit(self.tmp, self.path)
        except OSError as exc:
            raise write_error(exc, self.path) from exc

    def discard(self) -> None:
        try:
            if self.parquet is not None:
                self.parquet.close()
        except OSError:  # e.g. the disk is full: the file is dropped anyway
            pass
        self.tmp.unlink(missing_ok=True)


@dataclass
class StreamOutput:
    """Scores written to an open text stream (`score --out -`): CSV with one header for every input
    scored into it, or JSON Lines (one object per row)."""

    stream: TextIO
    format: str = "csv"  # or "jsonl" (settings.STDOUT_FORMATS)
    header: list[str] | None = None  # the CSV header written so far

    def write(self, frame: pd.DataFrame) -> None:
        if self.format == "jsonl":
            self.stream.write("".join(json_line(record) + "\n" for record in frame.to_dict(orient="records")))
            return
        columns = list(frame.columns)
        if self.header is not None and columns != self.header:
            raise ScoreError(f"--out -: these scores have the columns {', '.join(columns)}, unlike those already "
                             f"written ({', '.join(self.header)}); one CSV cannot hold both: use --out-format jsonl")
        write_csv(nested_as_json(frame), self.stream, append=self.header is not None)
        self.header = columns


def _cast(array: pa.Array, field: pa.Field) -> pa.Array:
    """`array` as the file's type for its column: a value of another kind (a number after text, a
    number after a boolean, text after a list) is an error, never a cast; within a kind, Arrow's
    safe casts (no overflow, no lost digits)."""
    if not _same_kind(array.type, field.type):
        raise pa.ArrowTypeError(f"column {field.name!r} holds {array.type} values after {field.type} ones")
    return array.cast(field.type)


def _same_kind(given, column) -> bool:
    """Whether values of Arrow type `given` may go into a column of type `column` (nulls go anywhere)."""
    if given == column or pa.types.is_null(given):
        return True
    kinds = (_is_number, _is_text, pa.types.is_temporal, pa.types.is_boolean)
    if any(kind(given) and kind(column) for kind in kinds):
        return True
    if _is_list(given) and _is_list(column):
        return _same_kind(given.value_type, column.value_type)
    return False  # structs, maps and other nested types: only their own type


def _is_number(t) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _is_text(t) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_list(t) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _retyped(written: pa.Array, arrow_type) -> pa.Array:
    """A column written before its type was known, as `arrow_type`: nulls (written as text), or lists of nothing."""
    return pa.nulls(len(written), arrow_type) if written.null_count == len(written) else written.cast(arrow_type)


def _untyped(t) -> bool:
    """A type that says nothing yet: null, or a list of nulls (only empty lists seen)."""
    return pa.types.is_null(t) or (_is_list(t) and _untyped(t.value_type))


def _pandas_columns(metadata: dict | None, frame: pd.DataFrame, names) -> dict:
    """pandas' metadata (b"pandas") with the entries of columns `names` as `frame` describes them
    (how pandas reads them back: an integer column with gaps as Int64); {} if there is none."""
    if not metadata or b"pandas" not in metadata:
        return {}
    with contextlib.suppress(*CONVERSION_ERRORS):
        described = json.loads(pa.Schema.from_pandas(frame, preserve_index=False).metadata[b"pandas"])
        pandas = json.loads(metadata[b"pandas"])
        new = {c["name"]: c for c in described["columns"] if c["name"] in names}
        pandas["columns"] = [new.get(c["name"], c) for c in pandas["columns"]]
        return {b"pandas": json.dumps(pandas).encode()}
    return {}


class _StreamWriter:
    """_TableWriter's interface over a StreamOutput: rows go out as they come (a stream cannot take them back)."""

    def __init__(self, output: StreamOutput, columns: list[str]):
        self.output, self.columns, self.rows = output, columns, 0

    def write(self, frame: pd.DataFrame) -> None:
        self.output.write(frame)
        self.rows += len(frame)

    def close(self) -> None:
        if self.rows == 0 and self.output.format == "csv" and self.output.header is None:
            self.output.write(pd.DataFrame(columns=self.columns))  # the header alone
        self.output.stream.flush()

    def discard(self) -> None:
        self.output.stream.flush()


def _writer(out: Path | StreamOutput, columns: list[str], tmp_dir: Path, metadata: dict,
            types: dict | None = None) -> _TableWriter | _StreamWriter:
    """A stream's writer, or a file's (whose Parquet schema carries `metadata` and `types`)."""
    if isinstance(out, StreamOutput):
        return _StreamWriter(out, columns)
    return _TableWriter(out, columns, tmp_dir, metadata, types)


def output_columns(input_columns: list[str], provenance: bool = True) -> tuple[list[str], dict[str, str]]:
    """-> (the scored file's columns, renamed input columns {name: new name}): the input's columns,
    then (with provenance) source_file, row_number, and last label and score. An input column named
    like one of those is kept as input_<name>."""
    added = (*PROVENANCE_COLUMNS, *ADDED_COLUMNS) if provenance else ADDED_COLUMNS
    taken, renames = {*input_columns, *added}, {}
    for column in (c for c in input_columns if c in added):
        name = f"input_{column}"
        while name in taken:  # the input has input_<name> too
            name = f"input_{name}"
        taken.add(name)
        renames[column] = name
    return [renames.get(c, c) for c in input_columns] + list(added), renames


def scored_frame(rows: pd.DataFrame, row_numbers: np.ndarray, labels: list[str], index: np.ndarray,
                 score: np.ndarray, *, source_file: str | None = None) -> pd.DataFrame:
    """The input's columns, given a `source_file` name then source_file + row_number (each row's
    number in the file, as rejects give it), then label + score. Input columns named like these are
    kept as input_<name> (see output_columns)."""
    _, renames = output_columns(list(rows.columns), source_file is not None)
    out = rows.rename(columns=renames)
    if source_file is not None:
        out["source_file"] = source_file
        out["row_number"] = np.asarray(row_numbers, np.int64)
    out["label"] = np.asarray(labels, dtype=object)[index]
    out["score"] = score.astype(np.float64)
    return out


def scored_metadata(head: Head, encoder, *, renamed: dict[str, str], provenance: bool) -> dict[bytes, bytes]:
    """What a scored Parquet file records about how it was made, under METADATA_KEY (JSON)."""
    from elmobatch import __version__

    record = {"elmobatch_version": __version__, "written": utc_now(),
              "head": {"fingerprint": head.fingerprint, "kind": head.kind, "labels": head.labels},
              "model": {"fingerprint": encoder.fingerprint, "path": str(getattr(encoder, "path", ""))},
              "provenance_columns": list(PROVENANCE_COLUMNS) if provenance else [],
              "renamed_columns": renamed}
    return {METADATA_KEY: json.dumps(record).encode()}


def load_head_and_model(head_dir=None, model: str | None = None, precision: str = "float32"):
    """-> (Head, Encoder). The head: `head_dir`, else the bundled default. The model: `model`, else
    the one head.json names (the bundled model for the bundled head), which must be local: a head
    never makes this fetch a URL. A model whose fingerprint differs from the head's is refused
    (HeadError)."""
    if head_dir is None and not (default_head_dir() / HEAD_JSON).is_file():
        raise HeadError(f"no --head given, and the bundled default head is missing from {default_head_dir()} "
                        "(it ships with the default model): pass --head HEAD_DIR written by `elmobatch train`")
    head = load_head(head_dir or default_head_dir())
    spec = model or (head_model_spec(head, head_dir) if head_dir else "default")
    from elmobatch.encoding import load_encoder  # TensorFlow loads here: importing this module does not

    encoder = load_encoder(spec, precision=precision)
    check_model(head, encoder.fingerprint, head_name=f"head {head_dir or 'default'}", model_name=f"model {spec}")
    return head, encoder


def head_model_spec(head: Head, head_dir) -> str:
    """The model head.json names, when it is local (a directory or "default"); a remote one is refused."""
    spec = head.meta["model"].get("spec") or "default"
    if not isinstance(spec, str) or is_remote(spec):
        raise HeadError(f"{Path(head_dir) / HEAD_JSON}: names the remote model {spec!r}, which is never fetched "
                        "on a head's word; pass --model with that URL (or a local copy) to use it")
    return spec


def check_threshold(head: Head, threshold: float | None) -> None:
    if threshold is None:
        return
    if not head.binary:
        raise ScoreError(f"--threshold applies to two-label heads; this head has {len(head.labels)} labels "
                         "and picks the most probable one")
    if not 0 <= threshold <= 1:
        raise ScoreError(f"--threshold {threshold}: expected a probability between 0 and 1")


def score_file(path, out: Path | StoredPath | StreamOutput, *, head: Head, encoder, cache,
               read: ReadOptions | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS, threshold: float | None = None,
               rejects_to: Path | StoredPath | None = None, provenance: bool = True, progress=None,
               before_commit: Callable[[], None] | None = None) -> ScoreSummary:
    """Score every good row of `path` (read as `read` says) into `out`: a CSV or Parquet file (by
    extension), a stored object (s3://), or a StreamOutput (standard output). Rejects go beside a
    file output, or to `rejects_to` (which a stream needs). provenance: add source_file and
    row_number; progress: a Progress, updated after each chunk; before_commit: called once the
    whole file is read, before anything is renamed into place (an exception there keeps nothing)."""
    if isinstance(out, StoredPath):
        return _score_to_store(path, out, rejects_to, head=head, encoder=encoder, cache=cache, read=read,
                               chunk_rows=chunk_rows, threshold=threshold, provenance=provenance, progress=progress,
                               before_commit=before_commit)
    assert not isinstance(rejects_to, StoredPath), f"rejects_to {rejects_to}: on a store only with out there too"
    check_threshold(head, threshold)
    if isinstance(out, StreamOutput):
        if rejects_to is None:
            raise ScoreError("scores to a stream need a rejects file (rejects_to)")
        rejects_out = anchor = Path(rejects_to)  # the file that is staged and locked
    else:
        anchor = Path(out)
        rejects_out = Path(rejects_to) if rejects_to is not None else rejects_path(anchor)
    summary = ScoreSummary(str(path), "-" if isinstance(out, StreamOutput) else str(out), str(rejects_out))
    with staging(anchor) as tmp_dir:  # the files are written there, then renamed into place
        locked = [anchor]
        if rejects_out != anchor and rejects_out.parent == anchor.parent:
            locked.append(rejects_out)  # `score a.csv --out -` writes a.scored.rejects.csv alone
        with _output_locks(locked, tmp_dir):
            # what a killed run scoring the same output left (and an earlier version, beside the outputs)
            swept = [tmp for directory, name in {(anchor.parent, anchor.name), (anchor.parent, rejects_out.name),
                                                 (rejects_out.parent, rejects_out.name)}
                     for tmp in sweep_temporaries(directory, name)]
            _write_scores(path, out, rejects_out, summary, tmp_dir, head=head, encoder=encoder, cache=cache,
                          threshold=threshold, read=read, chunk_rows=chunk_rows, provenance=provenance,
                          progress=progress, before_commit=before_commit)
        if swept:  # a killed scorer's _tmp/: removing it (when empty) falls to us
            remove_if_empty(tmp_dir)
    return summary


def _score_to_store(path, out: StoredPath, rejects_to, **options) -> ScoreSummary:
    """Score into local files, then upload the scores and the rejects, each whole (files.upload). No lock on the store:
    `run` holds its output prefix's lease; two `score`s of one object each upload whole, the last wins."""
    rejects_out = rejects_to if rejects_to is not None else rejects_path(out)
    with tempfile.TemporaryDirectory(prefix="elmobatch-score-") as directory:
        local = Path(directory) / out.name
        summary = score_file(path, local, rejects_to=Path(directory) / "_rejects" / rejects_out.name, **options)
        upload(local, out)
        upload(Path(summary.rejects), rejects_out)
    summary.output, summary.rejects = str(out), str(rejects_out)
    return summary


@contextlib.contextmanager
def _output_locks(outputs: list[Path], tmp_dir: Path) -> Iterator[None]:
    """Hold `_tmp/<output name>.lock` (in the folder no reader's glob enters) for each of `outputs`
    while scoring into them; a second scorer writing any of them raises OutputLocked naming it."""
    with contextlib.ExitStack() as held:
        for out in outputs:
            try:
                held.enter_context(JobLock(tmp_dir / f"{out.name}.lock", remove_on_exit=True))
            except LockHeld as exc:
                raise OutputLocked(f"{out}: another score is writing this output (pid {exc.holder.get('pid', '?')}"
                                   f", started {exc.holder.get('started', '?')}); wait for it to finish",
                                   exc.holder) from None
        yield


def _write_scores(path, out: Path | StreamOutput, rejects_out: Path, summary: ScoreSummary, tmp_dir: Path, *,
                  head: Head, encoder, cache, threshold, read, chunk_rows, provenance: bool, progress,
                  before_commit: Callable[[], None] | None = None) -> None:
    """Score `path` chunk by chunk into temporaries in `tmp_dir` (or the stream), then rename them into place."""
    chunks = file_vectors(path, encoder, cache, read, chunk_rows=chunk_rows, progress=progress)
    source_file = source_name(path) if provenance else None  # the name rejects give in their source_file
    writer: _TableWriter | _StreamWriter | None = None
    rejects: _TableWriter | None = None
    try:
        for chunk, layers in chunks:
            if writer is None or rejects is None:  # the first chunk: both open together
                columns, summary.renamed_columns = output_columns(list(chunk.rows.columns), provenance)
                _warn_renamed(path, summary.renamed_columns)
                metadata = scored_metadata(head, encoder, renamed=summary.renamed_columns, provenance=provenance)
                types = {summary.renamed_columns.get(c, c): t for c, t in chunk.types.items()}
                writer = _writer(out, columns, tmp_dir, metadata, types)
                rejects = _TableWriter(rejects_out, REJECT_COLUMNS, tmp_dir)
            index, score = head.predict(layers, threshold)
            frame = scored_frame(chunk.rows, chunk.row_numbers, head.labels, index, score, source_file=source_file)
            writer.write(frame)
            if len(chunk.rejects):
                rejects.write(chunk.rejects[REJECT_COLUMNS])
            summary.rows_read += chunk.rows_read
            summary.rows_scored += len(frame)
            summary.rows_rejected += len(chunk.rejects)
            for name, count in frame["label"].value_counts().items():
                summary.label_counts[name] = summary.label_counts.get(name, 0) + int(count)
        if writer is None or rejects is None:  # a file with no records at all
            writer = _writer(out, output_columns([], provenance)[0], tmp_dir,
                             scored_metadata(head, encoder, renamed={}, provenance=provenance))
            rejects = _TableWriter(rejects_out, REJECT_COLUMNS, tmp_dir)
        if before_commit is not None:
            before_commit()
        writer.close()
        rejects.close()
    except BaseException:
        for w in (writer, rejects):
            if w is not None:
                w.discard()
        raise


def _warn_renamed(path, renamed: dict[str, str]) -> None:
    if renamed:
        logger.warning(f"warning: {path}: input column(s) {', '.join(map(repr, renamed))} written as "
                       f"{', '.join(map(repr, renamed.values()))}: elmobatch writes its own "
                       f"{', '.join(map(repr, renamed))}")


def evaluate_file(path, *, label_column: str, head: Head, encoder, cache, read: ReadOptions | None = None,
                  rows: str | None = None, threshold: float | None = None, progress=None):
    """Metrics of `head` on the labelled rows of `path` (read as `read` says; all, or the held-out part of a split).

    -> (metrics dict, y_true (n,), proba (n, k), evaluated rows: DataFrame of row_number and text,
    (n,) in the order of y_true). Labels the head does not know raise LabelError.
    """
    check_threshold(head, threshold)
    data = labelled_vectors(path, encoder, cache, label_column=label_column, read=read, progress=progress)
    keep = np.arange(len(data.labels))
    if rows is not None:
        keep = parse_split(rows).indices(len(data.labels))[1]
    metrics, y_true, proba = head_metrics(head, data.x[keep], [data.labels[i] for i in keep], threshold,
                                          where=f"{path}: column {label_column!r}")
    metrics.update(input=str(path), rows_read=data.rows_read, rows_rejected=int(len(data.rejects)),
                   rows_evaluated=f"held-out rows of split {rows}" if rows else "all labelled rows",
                   threshold=threshold if threshold is not None else head.threshold)
    evaluated = pd.DataFrame({"row_number": data.row_numbers[keep],
                              "text": [data.texts[i] for i in keep]})
    return metrics, y_true, proba, evaluated


def misclassified_rows(head: Head, y_true: np.ndarray, proba: np.ndarray, rows: pd.DataFrame,
                       threshold: float | None = None) -> pd.DataFrame:
    """The rows `head` labels wrongly: row_number, text, true, predicted, score (as `score` writes
    it), the most confident mistakes (highest probability of the predicted label) first.
    rows: evaluate_file's, (n,)."""
    y_true = np.asarray(y_true, np.int64)
    y_pred, score = head.decide(proba, threshold)
    wrong = np.flatnonzero(y_pred != y_true)
    labels = np.asarray(head.labels, dtype=object)
    confidence = proba[wrong, y_pred[wrong]]
    order = wrong[np.argsort(-confidence, kind="mergesort")]
    return pd.DataFrame({"row_number": rows["row_number"].to_numpy()[order], "text": rows["text"].to_numpy()[order],
                         "true": labels[y_true[order]], "predicted": labels[y_pred[order]],
                         "score": np.asarray(score, np.float64)[order]})


__all__ = ["METADATA_KEY", "HeadError", "OutputLocked", "OutputNameError", "ScoreError", "ScoreSummary", "StreamOutput",
           "evaluate_file", "load_head_and_model", "misclassified_rows", "output_paths", "score_file"]
