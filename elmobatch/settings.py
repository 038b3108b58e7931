"""Defaults and allowed values shared by the command line, job files and the library, in one place.

Importable without TensorFlow or pandas, so the command line can build its options from it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BATCH_SIZE = 256  # messages per encoder batch (the encoder, `embed --batch-size`, a job's batch_size)
DEFAULT_CHUNK_ROWS = 10_000  # rows read, embedded and written at a time
DEFAULT_MAX_TEXT_CHARS = 20_000  # longer messages are rejected (too_long)
DEFAULT_TOKENIZER = "punct"  # see encoding/tokens.py
DEFAULT_MAX_TOKENS = 4_000  # more tokens are rejected (too_many_tokens); 20,000 chars of words ~ 3,500
DEFAULT_PRECISION = "float32"  # encoder matmuls (`--precision`, a job's precision); or bf16
DEFAULT_ENGINE = "local"  # where chunks are embedded (`embed --engine`, a job's engine)
DEFAULT_OUTPUT_FORMAT = "parquet"  # a job's scored files
DEFAULT_SPARK_MASTER = "local[2]"  # a job's spark_master
FORMATS = ("csv", "tsv", "jsonl", "parquet", "txt")  # input formats
STDOUT_FORMATS = ("csv", "jsonl")  # `score --out -`: what standard output gets
SCORED_FORMATS = ("parquet", "csv")  # a job's output_format
ENGINES = ("local", "spark")
# How `run` turns an outcome into an exit status: detailed (0, 3, 4, ...) or zero-on-success (3, 4 -> 0).
EXIT_CODE_STYLES = ("detailed", "zero-on-success")
DEFAULT_EXIT_CODE_STYLE = "detailed"


HEAD_KINDS = ("mlp", "logistic")  # `train --head-kind`: see training/head.py
CALIBRATIONS = ("none", "platt", "temperature")  # `train --calibrate`: see training/calibration.py
CLASS_WEIGHTINGS = ("balanced", "none")  # `train --class-weights`: see training/fit.py
VALIDATION_SLICES = ("shared", "per-net")  # `train --validation-slices`: see training/fit.py
DEFAULT_SPLIT = "last:0.2"  # `train --split`: the held-out rows
VECTORS = ("pooled", "layers")  # `embed --vectors`: pooled: `embedding` only; layers: also the per-layer `layers`
VECTOR_DTYPES = ("float32", "float16")  # `embed --vector-dtype`


@dataclass(frozen=True)
class ReadOptions:
    """The input settings every command that reads messages takes (the CLI's `input_options`, a
    job file's keys of the same names; `fmt` is `--format` / `format`). None: detected per file."""

    fmt: str | None = None
    encoding: str | None = None
    text_column: str | None = None
    id_column: str | None = None
    delimiter: str | None = None
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    max_tokens: int = DEFAULT_MAX_TOKENS
    reject_empty: bool = False


@dataclass(frozen=True)
class PretrainSettings:
    """How `elmobatch pretrain` trains a biLM: every option but the corpus files and --out. The
    defaults here are the command line's."""

    options: dict | None = None  # the architecture (options.json); None: --init-from's, else the default model's
    init_from: str | None = None  # a model directory whose biLM weights (and architecture) training starts from
    epochs: int = 10  # in all: a resumed run counts the earlier ones
    batch_size: int = 128  # messages per step
    max_minutes: float | None = None  # stop this run after this many minutes (checkpointed)
    max_steps: int | None = None  # stop after this many steps in all (checkpointed)
    heldout: float = 0.05  # fraction of the messages held out for perplexity
    min_count: int = 2  # vocabulary: tokens seen at least this often
    max_vocab: int | None = None  # vocabulary: at most this many entries, specials included
    tokenizer: str = DEFAULT_TOKENIZER
    learning_rate: float = 1e-3
    dropout: float = 0.1  # on the top layer before the softmax
    softmax_samples: int = 0  # > 0: a sampled softmax over this many words per step; 0: the full softmax
    seed: int = 0
    log_every: int = 50  # steps between training-perplexity lines
    checkpoint_every: int = 200  # steps between checkpoints
    note: str | None = None  # free text about the corpus, kept in model.json
    read: ReadOptions | None = None  # how corpus files are read (format, text column, limits...); None: the defaults
    rows: str | None = None  # "START:END": only these data rows of each corpus file


@dataclass
class FitSettings:
    """How `elmobatch train` fits a head (training/fit.py checks them); the defaults are the command line's."""

    epochs: int = 100  # most epochs (early stopping)
    batch_size: int = 32
    seed: int = 0
    validation_fraction: float = 0.1  # of the training rows: early stopping, threshold, calibration
    patience: int = 8
    learning_rate: float = 1e-3
    dropout: float = 0.2
    head_kind: str = "mlp"  # one of HEAD_KINDS
    calibrate: str = "none"  # one of CALIBRATIONS
    l2: float | None = None  # L2 on the output weights; None: none for "mlp", picked on validation for "logistic"
    threshold: float | None = None  # two labels: a fixed decision threshold; None: the F1-best on the validation slice
    class_weights: str = "balanced"  # one of CLASS_WEIGHTINGS: balanced (n / (k * count)) or none (every row 1)
    members: int = 1  # nets trained (seeds seed, seed + 1, ...) whose logits the head averages
    validation_slices: str = "shared"  # one of VALIDATION_SLICES: one slice for every net, or net i's own (seed + i)
