"""Job specs: a TOML file with a [job] table, checked key by key.

    [job]
    name = "sms-nightly"
    inputs = ["/data/incoming/*.csv"]   # globs, relative to the spec file's folder
    output = "/data/scored"             # relative to the spec file's folder (so is cache_dir)
    model = "default"                    # any load_encoder spec; a URL needs allow_remote_model = true
    head = "default"                     # a head directory or "default"

Every key is a field of `JobSpec` (the optional ones, `OPTIONAL`, with their defaults); what each
must hold is in `KEY_TYPES`: a wrong type, or a key not listed there, is refused at load, naming the
key. Paths are used as given (never passed through a shell); relative ones are taken from the spec
file's folder, so a job runs the same from cron as from a terminal. `inputs`, `output` and
`cache_dir` may be s3:// URIs (credentials from the environment, never the job file) or file:///.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from elmobatch.caching.cache import parse_size
from elmobatch.encoding.specs import PRECISIONS, is_remote
from elmobatch.errors import ElmobatchError
from elmobatch.storage import StoredPath, as_path, is_object_uri
from elmobatch.settings import (DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_ROWS, DEFAULT_ENGINE, DEFAULT_EXIT_CODE_STYLE,
                                DEFAULT_MAX_TEXT_CHARS, DEFAULT_MAX_TOKENS, DEFAULT_OUTPUT_FORMAT, DEFAULT_PRECISION,
                                DEFAULT_SPARK_MASTER,
                                ENGINES, EXIT_CODE_STYLES, FORMATS, SCORED_FORMATS)


class JobSpecError(ElmobatchError, ValueError):
    """A job spec that cannot be run, naming the file, the key and what was expected."""


@dataclass(frozen=True)
class JobSpec:
    """A loaded job file: one field per [job] key (relative paths resolved), defaults filled in.

    The defaults are the command line's, from `elmobatch.settings`."""

    source: Path  # the job file itself, not a key
    name: str
    inputs: tuple[str, ...]
    output: Path | StoredPath  # a directory, or an object store's prefix (s3://)
    model: str = "default"
    head: str = "default"
    text_column: str | None = None  # else detected
    id_column: str | None = None  # else source file name + row number
    format: str | None = None  # input format: csv, tsv, jsonl, parquet, txt (else from the extension)
    delimiter: str | None = None  # CSV/TSV field delimiter (else detected: , ; tab |)
    encoding: str | None = None  # input encoding (else UTF-8 with fallback)
    output_format: str = DEFAULT_OUTPUT_FORMAT  # scored files: parquet or csv
    threshold: float | None = None  # decision threshold (else the head's)
    cache_dir: str | None = None  # embedding cache (else $ELMOBATCH_CACHE or ~/.cache/elmobatch)
    batch_size: int = DEFAULT_BATCH_SIZE
    precision: str = DEFAULT_PRECISION  # or bf16 (see load_encoder)
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    max_tokens: int = DEFAULT_MAX_TOKENS  # messages with more tokens are rejected (too_many_tokens)
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS  # longer messages are rejected (too_long)
    reject_empty: bool = False  # reject empty messages (empty_text) instead of scoring them
    retention_days: int | None = None  # delete date= partitions older than this many days
    cache_prune_days: float | None = None  # after each run, remove cached vectors older than this many days
    cache_max_size: str | int | None = None  # after each run, remove the oldest cached vectors beyond this ("10G")
    engine: str = DEFAULT_ENGINE  # local or spark
    spark_master: str = DEFAULT_SPARK_MASTER
    allow_remote_model: bool = False  # must be true for a `model` URL (TF Hub handle) to be fetched
    exit_codes: str = DEFAULT_EXIT_CODE_STYLE  # or zero-on-success: exit 0 also for rejects (3) and nothing to do (4)
    provenance: bool = True  # scored rows carry source_file and row_number


REQUIRED = ("name", "inputs", "output")
# The keys a [job] table may leave out, with their defaults: JobSpec's fields that have one.
OPTIONAL = {f.name: f.default for f in fields(JobSpec) if f.default is not MISSING}


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _is_patterns(value: Any) -> bool:
    return _is_text(value) or (isinstance(value, list) and value != [] and all(_is_text(v) for v in value))


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_probability(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


def _accepted_by(check: str) -> Callable[[Any], bool]:
    """Whether a string passes elmobatch.reading.detect's `check`: a job file's key is held to what the
    command line's option is (imported when a job file is checked: the reader loads pandas)."""
    def accepted(value: Any) -> bool:
        from elmobatch.reading import detect

        try:
            getattr(detect, check)(value)
        except detect.ReadError:
            return False
        return True

    return lambda value: isinstance(value, str) and accepted(value)


def _one_of(choices: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda value: isinstance(value, str) and value in choices), f"one of {', '.join(choices)}"


# What each [job] key must hold: (check, the expected value as the error message states it).
def _is_size(value) -> bool:
    try:
        parse_size(value)
    except ValueError:
        return False
    return True


KEY_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (_is_text, "a non-empty string"),
    "inputs": (_is_patterns, "a glob pattern or a non-empty list of them (strings)"),
    "output": (_is_text, "a directory path (a string)"),
    "model": (_is_text, "a load_encoder spec (a string)"),
    "head": (_is_text, 'a head directory or "default" (a string)'),
    "text_column": (_is_text, "a column name (a string)"),
    "id_column": (_is_text, "a column name (a string)"),
    "format": _one_of(FORMATS),
    "delimiter": (_accepted_by("check_delimiter"), 'one character other than a quote or newline, e.g. ";" or "\\t"'),
    "encoding": (_accepted_by("check_encoding"), 'an ASCII-compatible text encoding, e.g. "utf-8" or "latin-1"'),
    "output_format": _one_of(SCORED_FORMATS),
    "threshold": (_is_probability, "a probability between 0 and 1 (a number)"),
    "cache_dir": (_is_text, "a directory path (a string)"),
    "batch_size": (_is_positive_int, "a positive whole number of messages"),
    "precision": _one_of(PRECISIONS),
    "chunk_rows": (_is_positive_int, "a positive whole number of rows"),
    "max_tokens": (_is_positive_int, "a positive whole number of tokens"),
    "max_text_chars": (_is_positive_int, "a positive whole number of characters"),
    "reject_empty": (_is_bool, "true or false"),
    "retention_days": (_is_positive_int, "a positive whole number of days (leave it out to keep every partition)"),
    "engine": _one_of(ENGINES),
    "spark_master": (_is_text, 'a Spark master URL (a string), e.g. "local[2]"'),
    "allow_remote_model": (_is_bool, "true or false"),
    "exit_codes": _one_of(EXIT_CODE_STYLES),
    "provenance": (_is_bool, "true or false"),
    "cache_prune_days": (lambda value: not isinstance(value, bool) and isinstance(value, int | float) and value >= 0,
                         "a number of days >= 0"),
    "cache_max_size": (_is_size, 'a size such as "500M" or "10G" (bytes if no unit)'),
}


def check_types(path: Path, job: dict) -> None:
    """Refuse the first key (in file order) whose value is not what KEY_TYPES says it must be."""
    for key, value in job.items():
        check, expected = KEY_TYPES[key]
        if not check(value):
            raise JobSpecError(f"{path}: [job].{key} must be {expected}, got {value!r}")


def _resolve(base: Path, value: str) -> str:
    if is_object_uri(value):  # s3://... as it is (Path would make it s3:/...)
        return value
    # file:///x is /x; as_path refuses schemes elmobatch does not read (gs://, hdfs://...)
    path = as_path(value) if "://" in value else Path(value).expanduser()
    assert isinstance(path, Path)
    return str(path if path.is_absolute() else base / path)


def _model(path: Path, job: dict) -> str:
    """[job].model; a remote one (URL, hub handle) only with allow_remote_model = true."""
    model = job.get("model", "default")
    if is_remote(model) and not job.get("allow_remote_model", False):
        raise JobSpecError(f"{path}: [job].model {model!r} is a URL, fetched only with allow_remote_model = true "
                           "in [job]; add it if you trust that address, or point model at a local directory")
    return model


def missing_paths(spec: JobSpec) -> str | None:
    """A local model or head the job names that is not there, naming the job file and key; None if both are.
    Checked before a run writes anything or loads a model."""
    for key, value in (("model", spec.model), ("head", spec.head)):
        if value != "default" and not is_object_uri(value) and not is_remote(value) and not os.path.exists(value):
            return f"{spec.source}: [job].{key} {value!r}: no such file or directory"
    return None


def input_warnings(spec: JobSpec) -> list[str]:
    """A warning for each local input pattern that can match no file: one whose folder (the part
    before the first *, ? or [) does not exist, where a typo or a missing mount looks like a quiet
    day otherwise, and one that names a folder (a job reads the files its patterns match). Not
    errors: a folder may appear with its first delivery, and the job's other patterns are read."""
    warnings = []
    for pattern in (p for p in spec.inputs if not is_object_uri(p)):
        where, folder = f"warning: {spec.source}: [job].inputs {pattern!r}", _fixed_folder(pattern)
        if os.path.isdir(pattern):
            warnings.append(f"{where} is a folder, and a job reads the files its patterns match; expected a "
                            f"pattern such as {os.path.join(pattern, '*.csv')!r}")
        elif not os.path.isdir(folder):
            warnings.append(f"{where}: no folder {folder}, so nothing can match it yet (a typo, "
                            "or a folder not mounted?)")
    return warnings


def _fixed_folder(pattern: str) -> str:
    """The folder a glob pattern's matches lie under: its leading parts without a glob character."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts) - 1)
    return str(Path(*parts[:fixed])) if fixed else "."


def load_job(path: str | Path) -> JobSpec:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise JobSpecError(f"{path}: job file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise JobSpecError(f"{path}: not valid TOML ({exc})") from None
    job = data.get("job")
    if not isinstance(job, dict):
        raise JobSpecError(f"{path}: expected a [job] table")
    known = set(REQUIRED) | set(OPTIONAL)
    unknown = sorted(set(job) - known)
    if unknown:
        raise JobSpecError(f"{path}: unknown key(s) in [job]: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    missing = [k for k in REQUIRED if k not in job]
    if missing:
        raise JobSpecError(f"{path}: [job] needs {', '.join(missing)}")
    check_types(path, job)
    inputs = [job["inputs"]] if isinstance(job["inputs"], str) else job["inputs"]
    base = path.resolve().parent
    head = job.get("head", "default")
    model = _model(path, job)
    try:
        resolved = {
            "inputs": tuple(_resolve(base, i) for i in inputs),
            "output": as_path(_resolve(base, job["output"])),  # a Path, or a StoredPath for s3://
            "model": model if model == "default" or is_remote(model) else _resolve(base, model),
            "head": head if head == "default" else _resolve(base, head),
        }
        if "cache_dir" in job:
            resolved["cache_dir"] = _resolve(base, job["cache_dir"])
    except ValueError as exc:  # file://HOST/x or s3:// without a bucket: not a path here
        raise JobSpecError(f"{path}: [job]: {exc}") from None
    return JobSpec(source=path.resolve(), **{**job, **resolved})
