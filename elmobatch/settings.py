"""Defaults and allowed values shared by the command line, job files and the library, in one place.

Importable without TensorFlow or pandas, so the command line can build its options from it.
"""

DEFAULT_BATCH_SIZE = 256  # messages per encoder batch (the encoder, `embed --batch-size`, a job's batch_size)
DEFAULT_CHUNK_ROWS = 10_000  # rows read, embedded and written at a time
DEFAULT_MAX_TEXT_CHARS = 20_000  # longer messages are rejected (too_long)
DEFAULT_MAX_TOKENS = 4_000  # messages with more tokens are rejected (too_many_tokens); see tokens.exceeds_tokens
FORMATS = ("csv", "tsv", "jsonl", "parquet", "txt")  # input formats
STDOUT_FORMATS = ("csv", "jsonl")  # `score --out -`: what standard output gets
SCORED_FORMATS = ("parquet", "csv")  # a job's output_format
ENGINES = ("local", "spark")
# How `run` turns an outcome into an exit status: detailed (0, 3, 4, ...) or zero-on-success (3, 4 -> 0).
EXIT_CODE_STYLES = ("detailed", "zero-on-success")
