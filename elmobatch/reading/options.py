"""How message files are read: one set of settings for every command and job."""

from __future__ import annotations

from dataclasses import dataclass

from elmobatch.settings import DEFAULT_MAX_TEXT_CHARS, DEFAULT_MAX_TOKENS


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
