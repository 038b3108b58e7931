"""Job specs: a TOML file with a [job] table, checked key by key.

    [job]
    name = "sms-nightly"
    inputs = ["/data/incoming/*.csv"]   # globs, relative to the spec file's folder
    output = "/data/scored"             # relative to the spec file's folder (so is cache_dir)
    model = "default"                    # any load_encoder spec; a URL needs allow_remote_model = true
    head = "default"                     # a head directory or "default"

Optional keys are listed in `OPTIONAL` with their defaults. Paths are used as given (never passed
through a shell); relative ones are taken from the spec file's folder, so a job runs the same from
cron as from a terminal.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from elmobatch.caching.cache import parse_size
from elmobatch.encoding.encoder import is_remote
from elmobatch.encoding.tokens import DEFAULT_MAX_TOKENS


class JobSpecError(ValueError):
    """A job spec that cannot be run, naming the file, the key and what was expected."""


OPTIONAL = {
    "text_column": None,      # else detected
    "id_column": None,        # else source file name + row number
    "label_column": None,     # unused by scoring; kept so one spec can also describe training data
    "format": None,           # input format: csv, tsv, jsonl, parquet, txt (else from the extension)
    "encoding": None,         # input encoding (else UTF-8 with fallback)
    "output_format": "parquet",  # scored files: parquet or csv
    "threshold": None,        # decision threshold (else the head's)
    "cache_dir": None,        # embedding cache (else $ELMOBATCH_CACHE or ~/.cache/elmobatch)
    "batch_size": 64,
    "precision": "float32",   # or bf16 (see load_encoder)
    "chunk_rows": 10_000,
    "max_tokens": DEFAULT_MAX_TOKENS,  # messages with more tokens are rejected (too_many_tokens)
    "retention_days": None,   # delete date= partitions older than this many days
    "cache_prune_days": None,  # after each run, remove cached vectors written more than this many days ago
    "cache_max_size": None,   # after each run, remove the oldest cached vectors beyond this size ("10G")
    "engine": "local",        # local or spark
    "spark_master": "local[2]",
    "allow_remote_model": False,  # must be true for a `model` URL (TF Hub handle) to be fetched
}
REQUIRED = ("name", "inputs", "output")


@dataclass(frozen=True)
class JobSpec:
    name: str
    inputs: tuple[str, ...]
    output: Path
    source: Path
    model: str = "default"
    head: str = "default"
    options: dict = field(default_factory=dict)

    def __getattr__(self, key):  # spec.text_column etc. for the optional keys
        if key in OPTIONAL:
            return self.options.get(key, OPTIONAL[key])
        raise AttributeError(key)


def _resolve(base: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def _model(path: Path, job: dict) -> str:
    """[job].model; a remote one (URL, hub handle) only with allow_remote_model = true."""
    model = job.get("model", "default")
    allow = job.get("allow_remote_model", False)
    if not isinstance(model, str) or not isinstance(allow, bool):
        raise JobSpecError(f"{path}: [job].model must be a string and allow_remote_model true or false "
                           f"(got {model!r}, {allow!r})")
    if is_remote(model) and not allow:
        raise JobSpecError(f"{path}: [job].model {model!r} is a URL, fetched only with allow_remote_model = true "
                           "in [job]; add it if you trust that address, or point model at a local directory")
    return model


def _check_cache_pruning(path: Path, job: dict) -> None:
    days, size = job.get("cache_prune_days"), job.get("cache_max_size")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int | float) or days < 0):
        raise JobSpecError(f"{path}: [job].cache_prune_days must be a number of days >= 0, got {days!r}")
    if size is not None:
        try:
            parse_size(size)
        except ValueError as exc:
            raise JobSpecError(f"{path}: [job].cache_max_size {exc}") from None


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
    known = set(REQUIRED) | {"model", "head"} | set(OPTIONAL)
    unknown = sorted(set(job) - known)
    if unknown:
        raise JobSpecError(f"{path}: unknown key(s) in [job]: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    missing = [k for k in REQUIRED if k not in job]
    if missing:
        raise JobSpecError(f"{path}: [job] needs {', '.join(missing)}")
    inputs = job["inputs"]
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs or not all(isinstance(i, str) for i in inputs):
        raise JobSpecError(f"{path}: [job].inputs must be a list of glob patterns (strings)")
    for key, expected in (("engine", ("local", "spark")), ("output_format", ("parquet", "csv")),
                          ("precision", ("float32", "bf16"))):
        if key in job and job[key] not in expected:
            raise JobSpecError(f"{path}: [job].{key} must be one of {', '.join(expected)}, got {job[key]!r}")
    max_tokens = job.get("max_tokens", DEFAULT_MAX_TOKENS)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise JobSpecError(f"{path}: [job].max_tokens must be a positive whole number of tokens, got {max_tokens!r}")
    _check_cache_pruning(path, job)
    base = path.resolve().parent
    head = job.get("head", "default")
    model = _model(path, job)
    return JobSpec(
        name=str(job["name"]),
        inputs=tuple(_resolve(base, i) for i in inputs),
        output=Path(_resolve(base, job["output"])),
        source=path.resolve(),
        model=model if model == "default" or is_remote(model) else _resolve(base, model),
        head=head if head == "default" else _resolve(base, head),
        options={k: _resolve(base, v) if k == "cache_dir" else v for k, v in job.items() if k in OPTIONAL},
    )
