"""`elmobatch run JOB.toml`: score the job's new input files into today's output partition.

    OUTPUT/
      date=YYYY-MM-DD/<stem>-<sha12>.parquet    scored rows: original columns + label + score
      date=YYYY-MM-DD/_rejects/<stem>-<sha12>.parquet
      date=YYYY-MM-DD/_run-<run id>.json        the run report
      date=YYYY-MM-DD/_SUCCESS                  written last; absent while a run is writing there
      _state.json                               inputs done: path -> size, mtime, sha256, output
      _last_run.json                            the latest run report
      .lock                                     held while a run is going (flock)
      _tmp/, date=YYYY-MM-DD/_tmp/              files being written (.tmp-*.tmp), swept by the next run

An output's name comes from its input's path and checksum, so a run killed between writing a file
and recording it in the state writes the same name again on rerun: no duplicates, none missing.
An input the reader or scorer refuses (say gzip bytes named .csv) is listed in the report's
files_not_scored with its reason and left unrecorded, so the next run tries it again; the other
inputs are scored and recorded, the partition gets its _SUCCESS (its files are complete), and the
run exits 1 with the status "not all scored".
A run writes only in its own output: `_state.json` is written before any scored file, and a
non-empty OUTPUT with neither it nor `_last_run.json` (beyond what a killed first run leaves) is
refused untouched (no sweep, no retention).

OUTPUT may be an object store's prefix (s3://BUCKET/PREFIX), with the same layout: each file is
uploaded whole (files.upload), and .lock is a lease object (locking.ObjectLease),
renewed before and after each input file and checked before _SUCCESS; a run that finds another
run took the prefix over stops there (exit 5) without recording or committing anything more.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from elmobatch.errors import ElmobatchError
from elmobatch.files import STAGING, only_temporaries, sweep_temporaries, sweep_uploads
from elmobatch.locking import JobLock, LockHeld, ObjectLease, output_lock
from elmobatch.scheduling.spec import JobSpec, input_warnings, missing_paths
from elmobatch.scheduling.state import JobState, file_fingerprint, write_json_atomically, write_text_atomically
from elmobatch.settings import EXIT_CODE_STYLES
from elmobatch.storage import StoredPath, as_path, remove_tree

# Exit codes of `elmobatch run` (documented in README, used by cron/elmobatch-cron.sh).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_JOB = 2
EXIT_OK_WITH_REJECTS = 3
EXIT_NOTHING_TO_DO = 4
EXIT_LOCKED = 5

# How a run's outcome becomes the process's exit status: "detailed" (the default) keeps the codes
# above; "zero-on-success" exits 0 for every successful outcome, for orchestrators (Airflow,
# Kubernetes CronJobs) that read any other status as a failure. Failures, a bad job and the lock
# keep their codes either way.
SUCCESSFUL_OUTCOMES = (EXIT_OK, EXIT_OK_WITH_REJECTS, EXIT_NOTHING_TO_DO)

logger = logging.getLogger(__name__)


def exit_status(code: int, style: str) -> int:
    """The process exit status for a run that ended with `code`, under `style` (EXIT_CODE_STYLES)."""
    if style not in EXIT_CODE_STYLES:
        raise ValueError(f"unknown exit code style {style!r}: expected one of {', '.join(EXIT_CODE_STYLES)}")
    return EXIT_OK if style == "zero-on-success" and code in SUCCESSFUL_OUTCOMES else code


@dataclass
class RunReport:
    job: str
    run_id: str
    started: str
    partition: str | None = None
    status: str = "running"
    exit_code: int | None = None
    files: list[dict] = field(default_factory=list)
    files_not_scored: list[dict] = field(default_factory=list)  # {input, sha256, error}: tried again next run
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    took_over_lock: dict | None = None
    removed_partitions: list[str] = field(default_factory=list)
    cache_pruned: dict | None = None  # {segments, vectors, bytes} removed by cache_prune_days / cache_max_size
    error: str | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. an input pattern whose folder does not exist
    seconds: float = 0.0

    def line(self) -> str:
        """The one-line summary printed on stdout."""
        if self.status == "nothing to do":
            return f"{self.job}: nothing to do (no new or changed input files)"
        if self.status == "locked":
            return f"{self.job}: locked: another run holds the lock; this run did nothing"
        if self.status == "taken over":
            return f"{self.job}: taken over: {self.error}; this run stopped, recording nothing more"
        if self.partition is None:
            return f"{self.job}: {self.status} before writing any output ({self.seconds:.1f} s)"
        not_scored = f", {len(self.files_not_scored)} not scored" if self.files_not_scored else ""
        return (f"{self.job}: {self.status}: {len(self.files)} file(s){not_scored}, rows_read {self.rows_read} = "
                f"scored {self.rows_scored} + rejected {self.rows_rejected} -> {self.partition} ({self.seconds:.1f} s)")


def output_name(path: str, sha256: str, output_format: str) -> str:
    """<stem>-<12 hex digits of the input's path and checksum>: the same input gets the same name on a
    rerun, and two inputs alike in name and bytes but in different folders get different ones."""
    digest = hashlib.sha256(f"{path}\0{sha256}".encode("utf-8", "surrogateescape")).hexdigest()
    return f"{Path(path).stem}-{digest[:12]}.{output_format}"


def _remove_earlier_copies(output: Path | StoredPath, name: str, partition: Path | StoredPath) -> None:
    """A file written by a run killed on another day before it recorded it: drop that copy. A copy
    that a run report lists (the same input, back with the same bytes) is that day's, and stays."""
    for other in output.glob("date=*"):
        if other != partition and (other / name).exists() and not _reported(other, name):
            (other / name).unlink(missing_ok=True)
            (other / "_rejects" / name).unlink(missing_ok=True)


def _reported(partition: Path | StoredPath, name: str) -> bool:
    """Whether a run report in `partition` lists the output file `name`."""
    for report in partition.glob("_run-*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
            outputs = [str(entry.get("output", "")) for entry in json.loads(report.read_text())["files"]]
            if any(output.rsplit("/", 1)[-1] == name for output in outputs):
                return True
    return False


def partition_day(partition: Path | StoredPath) -> dt.date | None:
    """The day of a `date=YYYY-MM-DD` partition; None for any other name (date=20240102 included)."""
    with contextlib.suppress(ValueError):
        day = dt.date.fromisoformat(partition.name.removeprefix("date="))
        if partition.name == f"date={day.isoformat()}":
            return day
    return None


def apply_retention(output: Path | StoredPath, days: int | None, today: dt.date) -> list[str]:
    """Delete the date=YYYY-MM-DD partitions older than `days` days before `today`, or before the
    real date if `today` (a --date) is later: a mistyped future date deletes nothing more. Returns their names."""
    if not days:
        return []
    reference = min(today, dt.date.today())
    removed = []
    partitions: list[Path | StoredPath] = sorted(output.glob("date=*"), key=lambda p: p.name)
    for partition in partitions:
        day = partition_day(partition)
        if day is not None and (reference - day).days > days:
            remove_tree(partition)  # a directory, or every object under a store's prefix
            removed.append(partition.name)
    return removed


MARKERS = ("_state.json", "_last_run.json")  # a run writes the first before any scored file, the second last


def foreign_output(output: Path | StoredPath) -> str | None:
    """Why `output` is not a job's output, or None: a folder or prefix holding more than what a
    job's run killed before its first marker leaves, and neither marker. A run never writes, sweeps
    or deletes in such a place. (One that cannot be listed is left to the lock to report.)"""
    try:
        if not output.is_dir():
            return None
        names = sorted(entry.name for entry in output.iterdir() if not _leftover(entry))
    except OSError:
        return None
    if not names or any(name in names for name in MARKERS):
        return None
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (f"{output}: holds {shown} but no _state.json or _last_run.json, so it is not this tool's job "
            "output; nothing was written, swept or deleted there: give the job an empty or new output")


def _leftover(entry: Path | StoredPath) -> bool:
    """What a job's run killed before `_state.json` leaves (its lock, a temporary upload, a `_tmp/`
    of temporaries), or a mounted volume's lost+found."""
    name = entry.name
    if name in (".lock", "lost+found") or (name.startswith(".tmp-") and name.endswith(".tmp")):
        return True
    return name == STAGING and entry.is_dir() and only_temporaries(entry)


def embed_with_spark(spec: JobSpec, paths: list[str], encoder=None, spark=None) -> list[dict]:
    """Fill the job's embedding cache through Spark (scoring then reads every vector from the
    cache); the datasets Spark writes, under OUTPUT/_spark_embed, are removed once complete.
    -> their manifests (one per pass of distinct file names: warm_cache_with_spark)."""
    from elmobatch.embedding import EmbedOptions
    from elmobatch.embedding.spark import SPARK_SCRATCH, warm_cache_with_spark

    options = EmbedOptions.of(read_options(spec), chunk_rows=spec.chunk_rows)
    return warm_cache_with_spark(paths, spec.output / SPARK_SCRATCH, spec.model, options=options,
                                 cache_dir=spec.cache_dir, batch_size=spec.batch_size, master=spec.spark_master,
                                 spark=spark, encoder=encoder, precision=spec.precision)


def read_options(spec: JobSpec):
    """The job's input keys as the reader takes them (a ReadOptions; the `format` key is its `fmt`)."""
    from elmobatch.reading import ReadOptions

    return ReadOptions(**{f.name: getattr(spec, _job_key(f.name)) for f in fields(ReadOptions)})


def _job_key(read_option: str) -> str:
    return "format" if read_option == "fmt" else read_option


def in_job_terms(message: str) -> str:
    """A reader's message as a job file's user reads it: the command-line options it names
    (--text-column) as the job's keys (text_column), and "pass --encoding" as "set encoding".
    Only a whole word is an option: "--format" within a path or a quoted name stays as it is."""
    from elmobatch.reading import ReadOptions

    options = "|".join(_job_key(f.name).replace("_", "-") for f in fields(ReadOptions))
    option = rf"(?<![^\s(])(pass )?--({options})(?=[\s).,;:]|$)"
    return re.sub(option, lambda m: ("set " if m[1] else "") + m[2].replace("-", "_"), message)


def _process(spec: JobSpec, report: RunReport, state: JobState, pending, today: dt.date, log,
             lock: JobLock | ObjectLease) -> None:
    from elmobatch.caching import EmbeddingCache
    from elmobatch.reading import ReadError
    from elmobatch.scoring.score import ScoreError, check_threshold, load_head_and_model, score_file

    head_dir = None if spec.head == "default" else spec.head
    head, encoder = load_head_and_model(head_dir, spec.model, spec.precision)
    check_threshold(head, spec.threshold)  # the job's, not one file's: it fails the run
    encoder.batch_size = spec.batch_size
    cache = EmbeddingCache(spec.cache_dir)
    read = read_options(spec)
    if spec.engine == "spark":
        readable = [path for path, _ in pending if _opens(path, read, spec.chunk_rows, encoder.tokenizer)]
        log(f"embedding {len(readable)} file(s) with Spark ({spec.spark_master})")
        if readable:  # a file the reader refuses is left to the loop below, which records why
            embed_with_spark(spec, readable, encoder)

    partition = spec.output / f"date={today.isoformat()}"
    report.partition = str(partition)
    partition.mkdir(parents=True, exist_ok=True)
    (partition / "_SUCCESS").unlink(missing_ok=True)  # this partition is being written again
    for path, fingerprint in pending:
        name = output_name(path, fingerprint["sha256"], spec.output_format)
        lock.renew()
        _remove_earlier_copies(spec.output, name, partition)
        try:
            summary = score_file(path, partition / name, head=head, encoder=encoder, cache=cache,
                                 read=read, chunk_rows=spec.chunk_rows, threshold=spec.threshold,
                                 rejects_to=partition / "_rejects" / name, provenance=spec.provenance,
                                 before_commit=functools.partial(_check_unchanged, path, fingerprint))
        except (ReadError, ScoreError) as exc:  # this file's own fault: the others are still scored
            error = in_job_terms(str(exc))
            report.files_not_scored.append({"input": path, "sha256": fingerprint["sha256"], "error": error})
            log(f"{path}: not scored: {error}")
            lock.renew()  # still ours before the next file, or the report
            continue
        entry = {"input": path, "sha256": fingerprint["sha256"], "output": summary.output,
                 "rejects": summary.rejects, "rows_read": summary.rows_read, "rows_scored": summary.rows_scored,
                 "rows_rejected": summary.rows_rejected, "labels": summary.label_counts,
                 "renamed_columns": summary.renamed_columns}
        lock.renew()  # a file scored while another run took over is not recorded
        state.mark_done(path, fingerprint, output=summary.output, run_id=report.run_id)
        report.files.append(entry)  # only a recorded file: a report's list keeps that file (_reported)
        report.rows_read += summary.rows_read
        report.rows_scored += summary.rows_scored
        report.rows_rejected += summary.rows_rejected
        log(summary.line())


def _check_unchanged(path: str, fingerprint: dict) -> None:
    """Raise ScoreError when `path` now holds other bytes than those hashed before it was scored
    (a sender still appending): what was scored of it is then neither kept nor recorded. A file
    only touched keeps its scores; one gone since it was read whole does too."""
    from elmobatch.scoring.score import ScoreError

    try:
        now = file_fingerprint(path, known=fingerprint)
    except FileNotFoundError:
        return
    if now["sha256"] != fingerprint["sha256"]:
        raise ScoreError(f"{path}: changed while it was being scored (still being written?); expected a file "
                         "that stays as it is once it matches the job's inputs (write it under another name, "
                         "then rename it)")


def _opens(path: str, read, chunk_rows: int, tokenizer: str) -> bool:
    """Whether the reader opens `path` (its format, encoding and columns decided)."""
    from elmobatch.reading import ReadError, read_messages

    try:
        read_messages(path, read, chunk_rows=chunk_rows, tokenizer=tokenizer)
    except ReadError:
        return False
    return True


def run_job(spec: JobSpec, *, today: dt.date | None = None, log=None) -> RunReport:
    """Run `spec` once; the report says what happened and its `exit_code` what to exit with.
    Messages go to `log` (default: this module's logger, INFO)."""
    log = log or logger.info
    today = today or dt.date.today()
    started = time.monotonic()
    report = RunReport(job=spec.name, run_id=f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}",
                       started=dt.datetime.now().astimezone().isoformat(timespec="seconds"))
    report.warnings = input_warnings(spec)
    for warning in report.warnings:
        logger.warning(warning)
    missing = missing_paths(spec)  # before the output is made: a typo in a path creates nothing
    if missing is not None:
        report.status, report.exit_code, report.error = "failed", EXIT_BAD_JOB, missing
        return report
    refusal = foreign_output(spec.output)
    if refusal is not None:
        report.status, report.exit_code, report.error = "failed", EXIT_FAILED, refusal
        return report
    lock = output_lock(spec.output / ".lock")  # one run per output
    try:
        with lock:
            report.took_over_lock = lock.took_over
            if lock.took_over:
                log(f"{spec.name}: the previous run (pid {lock.took_over.get('pid')}, started "
                    f"{lock.took_over.get('started')}) did not finish; taking over its lock")
            _run_locked(spec, report, today, log, lock)
            if report.exit_code in (EXIT_OK, EXIT_OK_WITH_REJECTS, EXIT_NOTHING_TO_DO):
                report.cache_pruned = _prune_cache(spec, log)
            report.seconds = round(time.monotonic() - started, 2)
            try:
                write_json_atomically(spec.output / "_last_run.json", asdict(report))
            except OSError as exc:  # e.g. disk full: the run's files are in place, its report is not
                report.status, report.exit_code = "failed", EXIT_FAILED
                report.error = report.error or _error_text(exc)
    except LockHeld as exc:  # held by a live run at the start, or (a store's lease) taken over since
        report.status = "locked" if report.partition is None else "taken over"
        report.exit_code, report.error = EXIT_LOCKED, str(exc)
    except OSError as exc:  # only the lock itself lets one through (e.g. OUTPUT unwritable or full)
        report.status, report.exit_code = "failed", EXIT_FAILED
        report.error = f"{lock.path}: cannot take the lock ({exc.strerror or exc})"
    return report


def _prune_cache(spec: JobSpec, log) -> dict | None:
    """The job's cache_prune_days / cache_max_size, applied after a successful run; a failure to
    prune is logged and leaves the run's result as it was."""
    if spec.cache_prune_days is None and spec.cache_max_size is None:
        return None
    from elmobatch.caching import EmbeddingCache
    from elmobatch.caching.cache import parse_size

    max_bytes = parse_size(spec.cache_max_size) if spec.cache_max_size is not None else None
    cache = EmbeddingCache(spec.cache_dir)
    try:
        return cache.prune(older_than_days=spec.cache_prune_days, max_bytes=max_bytes)
    except OSError as exc:
        log(f"{spec.name}: could not prune the embedding cache {cache.directory}: {exc}")
        return None


def sweep_output(output: Path | StoredPath) -> None:
    """Remove the temporary files a killed run left (only while holding the lock or lease: no live writer)."""
    if isinstance(output, StoredPath):
        sweep_uploads(output)
        return
    for directory in (output, *output.glob("date=*"), *output.glob("date=*/_rejects")):
        sweep_temporaries(directory)


def _run_locked(spec: JobSpec, report: RunReport, today: dt.date, log, lock: JobLock | ObjectLease) -> None:
    try:
        state = JobState(spec.output / "_state.json")
        if not state.path.exists():
            state.save()  # the marker, before anything else is written here
        sweep_output(spec.output)
        pending = state.pending(spec.inputs)
        report.removed_partitions = apply_retention(spec.output, spec.retention_days, today)
        if not pending:
            report.status, report.exit_code = "nothing to do", EXIT_NOTHING_TO_DO
            return
        _process(spec, report, state, pending, today, log, lock)
    except LockHeld:  # another run took the store's prefix over: write nothing more (run_job reports it)
        raise
    except Exception as exc:  # reported, with the exit code; earlier outputs stay as they were
        report.status, report.exit_code = "failed", EXIT_FAILED
        report.error = _error_text(exc)
        if report.partition:
            # a report that cannot be written (e.g. the disk is still full): the error goes to stderr and _last_run.json
            with contextlib.suppress(OSError):
                _write_report(report)
        return
    if report.files_not_scored:  # not recorded, so tried again by the next run (into its own partition)
        report.status, report.exit_code = "not all scored", EXIT_FAILED
        report.error = "; ".join(_naming_input(entry) for entry in report.files_not_scored)
    else:
        report.status = "ok with rejected rows" if report.rows_rejected else "ok"
        report.exit_code = EXIT_OK_WITH_REJECTS if report.rows_rejected else EXIT_OK
    try:
        _write_report(report)
        lock.renew()  # still ours: only then are the partition's files marked complete
        write_text_atomically(_partition_dir(report) / "_SUCCESS", report.run_id + "\n")
    except OSError as exc:  # e.g. the disk filled up at the end: the scored files stay recorded
        report.status, report.exit_code = "failed", EXIT_FAILED
        report.error = "; ".join(filter(None, [report.error, _error_text(exc)]))
        with contextlib.suppress(OSError):  # the partition's report says so too, where it can
            _write_report(report)


def _error_text(exc: Exception) -> str:
    """An ElmobatchError's message as it is (written for people: it names the file or setting); any
    other exception's with its type (OSError: [Errno 28] ...)."""
    return str(exc) if isinstance(exc, ElmobatchError) else f"{type(exc).__name__}: {exc}"


def _naming_input(entry: dict) -> str:
    """A file's refusal as one message that names the file."""
    error = entry["error"] if entry["input"] in entry["error"] else f"{entry['input']}: {entry['error']}"
    return f"{error} (not scored; tried again next run)"


def _partition_dir(report: RunReport) -> Path | StoredPath:
    """The output partition of this run; _process names it before it writes anything there."""
    assert report.partition is not None, f"run {report.run_id}: no output partition chosen yet"
    return as_path(report.partition)


def _write_report(report: RunReport) -> None:
    write_json_atomically(_partition_dir(report) / f"_run-{report.run_id}.json", asdict(report))
