"""Chunked, forgiving reading of message files: CSV, TSV, JSON Lines, Parquet, plain text.

    reader = read_messages("day.csv")        # decisions are made (and errors raised) here
    reader.decisions                         # ReadDecisions: format, encoding, text column, and why
    for chunk in reader:                     # at most chunk_rows records each; memory stays flat
        chunk.rows     # DataFrame: the file's columns for the good rows
        chunk.row_numbers  # (len(chunk.rows),) int64: each good row's number in the file (0 = first data row)
        chunk.texts    # list[str]: the (repaired) message of each good row, in the same order
        chunk.rejects  # DataFrame: source_file, row_number, reason, detail, raw
        chunk.ids      # list[str] of the --id-column values of the good rows (None without one)

Every record gets a row number (data row within the file, from 0) and ends up in exactly one of
`rows` and `rejects`, so rows_read = good rows + rejects. Reject reasons are the `REASONS` keys.

Memory stays bounded on any input: no line or record is held past `max_record_chars` (a line
longer than that is cut and rejected as too long; a quote still open after that many characters
or at the end of the file, or one running over lines into a parse error, costs one
`unterminated_quote` reject, and reading resumes on the line after the one where it opened).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Iterator

import numpy as np
import pandas as pd

from elmobatch.settings import DEFAULT_TOKENIZER
from elmobatch.text import exceeds_tokens, is_blank
from elmobatch.settings import DEFAULT_CHUNK_ROWS, DEFAULT_MAX_TEXT_CHARS
from elmobatch.reading.detect import (SAMPLE_LINES, ReadDecisions, ReadError, check_encoding, check_id_column,
                                      check_not_compressed, choose_delimiter, choose_format, choose_text_column,
                                      detect_encoding, open_bytes, unreadable_gzip)
from elmobatch.reading.inputs import source_name as default_source_name
from elmobatch.settings import ReadOptions
from elmobatch.storage import StoredPath, as_path, parquet_source

logger = logging.getLogger("elmobatch")

CSV_FIELD_LIMIT = 64 << 20  # csv's own cap; records are cut far earlier (max_record_chars)
SAMPLE_RECORDS = 200  # records looked at to find the text column
MAX_JSON_KEYS = 1000  # distinct keys a JSON Lines file may hold: each is a column of every chunk
RECORD_SLACK = 64 << 10  # room for a record's other fields, beyond twice --max-text-chars
RAW_PREVIEW = 1_000  # characters of `raw` kept for a record cut short (too long a line, an open quote)

REASONS = {
    "undecodable": "bytes that are not valid in the file's encoding",
    "nul_byte": "a NUL (\\x00) character",
    "unparseable": "a record the format cannot parse (bad quoting, invalid JSON, not a JSON object)",
    "unterminated_quote": ("a quote still open at the end of the file or after max_record_chars characters, "
                           "or one that runs over lines into a parse error"),
    "blank_line": "a blank line where a record was expected (CSV, TSV, JSON Lines)",
    "column_count": "more or fewer fields than the header has named columns",
    "missing_text": "no value in the text column (absent or null)",
    "not_text": "a text value that is not a string (e.g. a JSON number)",
    "missing_id": "no value in the --id-column",
    "too_long": "a message longer than --max-text-chars (or a line longer than max_record_chars)",
    "too_many_tokens": "a message of more than --max-tokens tokens",
    "empty_text": "an empty message (nothing but spaces and invisible characters), with --reject-empty",
    "invalid_unicode": "text that cannot be stored as UTF-8 (a lone surrogate)",
}
REJECT_COLUMNS = ["source_file", "row_number", "reason", "detail", "raw"]


@dataclass
class Chunk:
    """One bounded slice of a file: good rows and rejects, `index` counting from 0."""

    index: int
    rows: pd.DataFrame  # the file's columns only: an input column may be named anything
    row_numbers: np.ndarray  # (len(rows),) int64, numbered as rejects are
    texts: list[str]
    rejects: pd.DataFrame
    ids: list[str] | None  # the id column's values as strings, taken before pandas can retype them
    position: int  # how far reading has got, in units of MessageReader.size (bytes; rows for Parquet)
    types: dict = field(default_factory=dict)  # a Parquet file's Arrow type of each column, for a Parquet writer

    @property
    def rows_read(self) -> int:
        return len(self.rows) + len(self.rejects)


@dataclass
class _Record:
    """One record as parsed: `values` (list aligned with columns, or a dict) and text, or a reason."""

    raw: str
    values: list | dict | None = None
    text: object = None
    reason: str | None = None
    detail: str = ""


class _OpenRecord(Exception):
    """Raised (through csv.reader) when a record wants another line past the record limit."""


@dataclass
class _Line:
    text: str
    bad: bool = False  # held bytes not valid in the encoding (shown as \\xNN)
    cut_from: int = 0  # a line longer than the limit: its full length in bytes (the text is cut)


@dataclass
class _Lines:
    """Decoded lines of a byte file, remembering which physical lines the current record used.

    No line holds more than `limit` bytes (the rest of a longer one is skipped), and asking for
    another line while the current record already holds `limit` characters, or a cut line,
    raises _OpenRecord; `push_back` then returns the record's later lines to be read again.
    """

    path: Path | StoredPath
    encoding: str
    limit: int
    offset: int = 0
    current: list[_Line] = field(default_factory=list)
    pushed: list[_Line] = field(default_factory=list)  # lines to read again, last first
    chars: int = 0  # characters in `current`
    _source: Iterator[_Line] | None = None

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.current and (self.current[-1].cut_from or self.chars >= self.limit):
            raise _OpenRecord
        if self.pushed:
            line = self.pushed.pop()
        else:
            if self._source is None:
                self._source = self._read()
            line = next(self._source)
        self.current.append(line)
        self.chars += len(line.text)
        return line.text

    def _read(self) -> Iterator[_Line]:
        with unreadable_gzip(self.path), open_bytes(self.path) as (f, stored):
            compressed = stored is not f  # progress then counts the compressed bytes, like MessageReader.size
            encoding, first = _line_encoding(self.encoding), True
            while raw := f.readline(self.limit + 1):
                self.offset = stored.tell() if compressed else self.offset + len(raw)
                length = len(raw)  # the bytes as read, a byte-order mark included
                if first and raw.startswith(codecs.BOM_UTF8):  # as "ï»¿" a Latin-1 file's header would hold it
                    raw = raw[len(codecs.BOM_UTF8):]
                first = False
                if length > self.limit and not raw.endswith(b"\n"):  # too long: skip to its end
                    while rest := f.readline(1 << 20):
                        self.offset = stored.tell() if compressed else self.offset + len(rest)
                        length += len(rest)
                        if rest.endswith(b"\n"):
                            break
                    line = _Line(raw[: self.limit].decode(encoding, "backslashreplace") + "\n", cut_from=length)
                else:
                    try:
                        line = _Line(raw.decode(encoding))
                    except UnicodeDecodeError:
                        line = _Line(raw.decode(encoding, "backslashreplace"), bad=True)  # keep the bytes visible
                yield line

    def take(self) -> tuple[str, bool, int]:
        """The record just read: raw text (newline at the end removed), whether it had bad bytes,
        and the full length in bytes of a line in it that was cut (0: none was)."""
        lines, self.current, self.chars = self.current, [], 0
        raw = "".join(x.text for x in lines).rstrip("\r\n")
        return raw, any(x.bad for x in lines), max((x.cut_from for x in lines), default=0)

    def push_back(self) -> None:
        """Give back all but the first line of the current record, to be read again."""
        later = self.current[1:]
        self.current = self.current[:1]
        self.chars = len(self.current[0].text) if self.current else 0
        self.pushed.extend(reversed(later))


def _line_encoding(encoding: str) -> str:
    """The codec of every line. A UTF-8 byte-order mark is dropped at the start of the file only,
    whatever the encoding (also after a fall back to Latin-1): a U+FEFF that starts a later line is text."""
    return "utf-8" if codecs.lookup(encoding).name == "utf-8-sig" else encoding


def read_messages(path, options: ReadOptions | None = None, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  tokenizer: str = DEFAULT_TOKENIZER, source_name: str | None = None, **settings) -> MessageReader:
    """Open `path` for chunked reading; raises ReadError (naming file and setting) if it cannot be read.

    `options` (ReadOptions) say how; `settings` (its field names, e.g. text_column="v2") override
    them. `tokenizer` (the model's) counts each message's tokens for max_tokens. A name ending in
    .gz is read as a gzip stream, its format taken from the name before .gz."""
    options = replace(options or ReadOptions(), **settings)
    return MessageReader(as_path(path), options, chunk_rows=chunk_rows, tokenizer=tokenizer, source_name=source_name)


class MessageReader:
    """Iterable over a file's chunks; iterating again reads the file again from the start."""

    def __init__(self, path: Path | StoredPath, options: ReadOptions, *, chunk_rows: int, tokenizer: str,
                 source_name: str | None = None):
        if not path.is_file():
            raise ReadError(f"{path}: no such file")
        if chunk_rows < 1:
            raise ReadError(f"--chunk-rows {chunk_rows}: expected a positive number of rows")
        if options.max_text_chars < 1:
            raise ReadError(f"--max-text-chars {options.max_text_chars}: expected a positive number of characters")
        if options.max_tokens < 1:
            raise ReadError(f"--max-tokens {options.max_tokens}: expected a positive number of tokens")
        self.path = path
        self.chunk_rows = chunk_rows
        self.max_text_chars = options.max_text_chars
        self.max_record_chars = 2 * options.max_text_chars + RECORD_SLACK  # no line or record is held past this
        self.reject_empty = options.reject_empty
        self.max_tokens, self.tokenizer = options.max_tokens, tokenizer
        self.source_name = source_name or default_source_name(path)
        self.arrow_types: dict = {}  # a Parquet file's column types (Chunk.types)
        self.parquet_names: list[str] | None = None  # a Parquet file's column names made unique, if they repeat
        self.text_column: str | None = None  # set by _decide; sampling runs before it is known
        self.id_column: str | None = None
        self.delimiter = ","  # of CSV/TSV; set by _decide
        with unreadable_gzip(path):
            self.decisions = self._decide(options.text_column, options.id_column, options.fmt, options.encoding,
                                          options.delimiter)
        self.size = self._size()  # the unit of Chunk.position: bytes (of the file as stored); rows for Parquet

    # ---- decisions -------------------------------------------------------------------------

    def _decide(self, text_column, id_column, fmt, encoding, delimiter) -> ReadDecisions:
        fmt_given = fmt is not None
        fmt, fmt_reason = choose_format(self.path, fmt)
        check_not_compressed(self.path, fmt)
        if fmt == "parquet":
            enc, enc_reason = None, "Parquet is typed: no text encoding"
        elif encoding:
            enc, enc_reason = check_encoding(encoding), "given (--encoding); undecodable rows are rejected"
        else:
            enc, enc_reason = detect_encoding(self.path)
        self.format, self.encoding = fmt, enc
        found, delimiter_reason = None, ""
        if fmt in ("csv", "tsv") or (fmt == "txt" and (delimiter is not None or not fmt_given)):
            found, delimiter_reason = choose_delimiter(self.path, fmt, self._sample_lines(), delimiter)
        if fmt == "txt" and found is not None:
            fmt = self.format = "csv"
            fmt_reason += f"; read as CSV: {'--delimiter given' if delimiter else 'its first line is a header'}"
        self.delimiter = found or ","
        columns, text_like = self._columns()
        if fmt == "txt":
            text, text_reason = "text", "plain text: one message per line"
        else:
            text, text_reason = choose_text_column(self.path, columns, text_like, text_column)
        check_id_column(self.path, columns, id_column)
        self.columns, self.text_column, self.id_column = columns, text, id_column
        return ReadDecisions(path=str(self.path), format=fmt, format_reason=fmt_reason, encoding=enc,
                             encoding_reason=enc_reason, text_column=text, text_column_reason=text_reason,
                             id_column=id_column, columns=columns, delimiter=found, delimiter_reason=delimiter_reason)

    def _sample_lines(self) -> list[str]:
        """The first lines, decoded (undecodable bytes replaced), for delimiter detection."""
        assert self.encoding is not None, f"{self.path}: {self.format} has no text encoding"
        lines: list[str] = []
        with open_bytes(self.path) as (f, _):
            while len(lines) < SAMPLE_LINES and (raw := f.readline(self.max_record_chars)):
                lines.append(raw.decode(self.encoding, errors="replace"))
        return lines

    def _columns(self) -> tuple[list[str], list[str]]:
        """All column names, and those whose sampled values look like free text."""
        if self.format == "txt":
            return ["text"], ["text"]
        if self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            with _parquet_errors(self.path):
                schema = pq.read_schema(parquet_source(self.path))
            names = _unique(schema.names, warn_for=self.path)  # a repeated name would lose all but one column
            self.parquet_names = names if names != schema.names else None
            self.arrow_types = dict(zip(names, schema.types, strict=True))
            strings = [n for n, t in self.arrow_types.items() if pa.types.is_string(t) or pa.types.is_large_string(t)]
            return names, strings
        if self.format == "jsonl":  # every key of the file (one pass), in order of first appearance
            columns: dict[str, bool] = {}  # -> looks like free text in the sampled records
            first_refused: _Record | None = None
            for n, record in enumerate(self._jsonl_records(None)):
                if first_refused is None and record.reason == "unparseable":
                    first_refused = record
                if isinstance(record.values, dict):
                    for key, value in record.values.items():
                        sampled_text = n < SAMPLE_RECORDS and isinstance(value, str) and not _numeric(value)
                        columns[key] = columns.get(key, False) or sampled_text
                    if len(columns) > MAX_JSON_KEYS:
                        raise ReadError(f"{self.path}: record {n + 1} brings the distinct keys past {MAX_JSON_KEYS:,}; "
                                        "expected records that share their keys (each key is a column)")
            if not columns and first_refused is not None:
                raise ReadError(f"{self.path}: no line is a JSON object (the first: {first_refused.detail}); "
                                "expected JSON Lines, one object per line; for a table, pass --format csv or tsv")
            return list(columns), [c for c, texty in columns.items() if texty]
        header = self._csv_header(warn=True)
        texty = [False] * len(header)
        records = self._csv_records(header, None)
        for n, record in enumerate(records):
            if n >= SAMPLE_RECORDS:
                break
            if isinstance(record.values, list):
                for i, value in enumerate(record.values[: len(header)]):
                    texty[i] = texty[i] or (value != "" and not _numeric(value))
        names = [name for name, _ in header]
        return names, [name for (name, named), t in zip(header, texty, strict=True) if t and named]

    def fraction(self, chunk: Chunk) -> float:
        """How far through the file `chunk` ends, in [0, 1] (by bytes; by rows for Parquet)."""
        return chunk.position / max(self.size, 1)

    def _size(self) -> int:
        if self.format == "parquet":
            import pyarrow.parquet as pq

            with _parquet_errors(self.path):
                return pq.ParquetFile(parquet_source(self.path)).metadata.num_rows
        return self.path.stat().st_size

    # ---- iteration -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Chunk]:
        if self.format == "parquet":
            records, progress = self._parquet_records()
        elif self.format == "txt":
            lines = self._lines()
            records, progress = self._txt_records(lines), lambda: lines.offset
        elif self.format == "jsonl":
            lines = self._lines()
            records, progress = self._jsonl_records(lines), lambda: lines.offset
        else:
            lines = self._lines()
            records, progress = self._csv_records(self._csv_header(), lines), lambda: lines.offset
        yield from self._chunks(records, progress)

    def _lines(self) -> _Lines:
        """A fresh pass over the decoded lines; only text formats read lines, and they always have an encoding."""
        assert self.encoding is not None, f"{self.path}: {self.format} has no text encoding"
        return _Lines(self.path, self.encoding, self.max_record_chars)

    def _chunks(self, records, progress) -> Iterator[Chunk]:
        good, texts, rejects = [], [], []
        index = 0
        for row_number, record in enumerate(records):
            reason, detail, text = self._check(record)
            if reason is None:
                good.append((row_number, record.values))
                texts.append(text)
            else:
                # raw bounded like a cut record's, so a chunk of huge rejects stays small
                rejects.append((self.source_name, row_number, reason, detail + _preview_note(record.raw),
                                _preview(record.raw)))
            if len(good) + len(rejects) == self.chunk_rows:
                yield self._chunk(index, good, texts, rejects, progress())
                good, texts, rejects = [], [], []
                index += 1
        if good or rejects or index == 0:  # every file yields at least one chunk, maybe empty
            yield self._chunk(index, good, texts, rejects, progress())

    def _check(self, record: _Record) -> tuple[str | None, str, str | None]:
        """(reason, detail, text): reason None for a good row."""
        if record.reason:
            return record.reason, record.detail, None
        text = record.text
        if text is None:
            return "missing_text", f"no value in text column {self.text_column!r}", None
        if not isinstance(text, str):
            return "not_text", f"text column {self.text_column!r} holds a {type(text).__name__}, not a string", None
        if "\x00" in text or "\x00" in record.raw:
            return "nul_byte", "the record contains a NUL (\\x00) character", None
        if self.id_column is not None and _value(record.values, self.id_column, self.columns) in (None, ""):
            return "missing_id", f"no value in id column {self.id_column!r}", None
        if len(text) > self.max_text_chars:
            return "too_long", f"{len(text):,} characters > --max-text-chars {self.max_text_chars:,}", None
        if self.reject_empty and is_blank(text):
            return "empty_text", "empty message: nothing but spaces or invisible characters (--reject-empty)", None
        if exceeds_tokens(text, self.tokenizer, self.max_tokens):
            return ("too_many_tokens", f"more than --max-tokens {self.max_tokens:,} tokens "
                    f"({self.tokenizer} tokenizer)", None)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "invalid_unicode", "the text holds a lone surrogate, which UTF-8 cannot store", None
        return None, "", text

    def _chunk(self, index, good, texts, rejects, position) -> Chunk:
        if self.format in ("jsonl", "parquet"):
            names = list(dict.fromkeys(self.columns + [key for _, values in good for key in values]))
            rows = pd.DataFrame({name: self._column([values.get(name) for _, values in good])
                                 for name in names}, columns=names)
        else:
            rows = pd.DataFrame([values for _, values in good], columns=self.columns, dtype=object)
        rejected = pd.DataFrame(rejects, columns=REJECT_COLUMNS)
        rejected["row_number"] = rejected["row_number"].astype("int64")
        ids = None
        if self.id_column is not None:
            ids = [str(_value(values, self.id_column, self.columns)) for _, values in good]
        return Chunk(index=index, rows=rows, row_numbers=np.array([n for n, _ in good], np.int64), texts=texts,
                     rejects=rejected, ids=ids, position=position, types=self.arrow_types)

    @staticmethod
    def _column(values: list):
        """One column of a JSON Lines or Parquet chunk: integers stay integers beside a missing value
        (pandas' Int64, or UInt64 past 2**63 - 1); other values stay Python objects, as parsed (a
        Parquet file's own types go with the chunk, for a Parquet writer: Chunk.types)."""
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            with contextlib.suppress(TypeError, ValueError, OverflowError):  # past 2**64: Python objects
                return pd.array(values)
        return pd.Series(values, dtype=object)  # a Series: a DataFrame infers no dtype from it (pandas 3 would)

    # ---- formats ---------------------------------------------------------------------------

    def _csv_dialect(self) -> dict:
        if self.format == "tsv" and self.delimiter == "\t":  # TSV has no quoting: a quote character is just text
            return dict(delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
        return dict(delimiter=self.delimiter, strict=True)

    def _csv_header(self, warn: bool = False) -> list[tuple[str, bool]]:
        """[(column name, was it named in the file)]; blank names become 'Unnamed: i' as in pandas."""
        lines = self._lines()
        try:
            row = next(csv.reader(lines, **self._csv_dialect()), None)
        except csv.Error as exc:
            hint = " (an unterminated quote?)" if "end of data" in str(exc) else ""
            raise ReadError(f"{self.path}: the header line cannot be parsed as {self.format.upper()} "
                            f"({exc}){hint}") from None
        except _OpenRecord:
            raise ReadError(f"{self.path}: a quote opened on the header line is still open after "
                            f"{lines.chars:,} characters") from None
        _, bad, cut = lines.take()
        if bad:
            raise ReadError(f"{self.path}: the header line is not valid {self.encoding}; pass --encoding")
        if cut:
            raise ReadError(f"{self.path}: the header line is {cut:,} bytes long; expected column names")
        if not row:
            raise ReadError(f"{self.path}: no header line: expected column names on the first line")
        names = _unique([name.strip() or f"Unnamed: {i}" for i, name in enumerate(row)],
                        warn_for=self.path if warn else None)
        return [(name, given.strip() != "") for name, given in zip(names, row, strict=True)]

    def _csv_records(self, header, lines: _Lines | None) -> Iterator[_Record]:
        """Data records after the header. `lines` None: a fresh pass used only for sampling."""
        csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
        lines = lines or self._lines()
        names = [name for name, _ in header]
        text_at = names.index(self.text_column) if self.text_column in names else None
        sep = self.delimiter
        reader = csv.reader(lines, **self._csv_dialect())
        try:
            next(reader)  # header
        except (csv.Error, _OpenRecord, StopIteration):
            return
        lines.take()
        while True:
            try:
                fields, error = next(reader), None
            except StopIteration:
                return
            except csv.Error as exc:
                fields, error = None, str(exc)
            except _OpenRecord:
                fields, error = None, _STILL_OPEN
            if error is not None and (error is _STILL_OPEN or "end of data" in error or len(lines.current) > 1):
                yield self._unterminated(lines, error)
                reader = csv.reader(lines, **self._csv_dialect())  # a fresh parser, out of the quote
                continue
            raw, bad, cut = lines.take()
            if cut:
                yield self._cut_line(raw, cut)
            elif bad:
                yield _Record(raw, reason="undecodable", detail=f"bytes not valid in {self.encoding}")
            elif error is not None:
                yield _Record(raw, reason="unparseable", detail=f"{self.format.upper()}: {error}")
            elif not fields:
                yield _Record(raw, reason="blank_line", detail="blank line")
            else:
                yield self._csv_record(raw, fields, header, text_at, sep)

    def _unterminated(self, lines: _Lines, error: str) -> _Record:
        """A record whose quote ran to the end of the file, past the record limit, or into a parse
        error lines later: only its first line is rejected; the lines after it are read again."""
        chars, count = lines.chars, len(lines.current)
        lines.push_back()
        raw, _, cut = lines.take()
        if cut:
            return self._cut_line(raw, cut)
        if error is _STILL_OPEN:
            what = (f"is still open after {count:,} lines and {chars:,} characters (the most a record may hold "
                    f"is {self.max_record_chars:,}: 2 x --max-text-chars + {RECORD_SLACK // 1024} KiB)")
        elif "end of data" in error:
            what = "is still open at the end of the file"
        else:
            what = f"runs {count - 1:,} line(s) on into a {self.format.upper()} error ({error})"
        return _Record(_preview(raw), reason="unterminated_quote",
                       detail=f"a quote opened on this line {what}; reading resumed on the next line"
                              f"{_preview_note(raw)}")

    def _cut_line(self, raw: str, length: int) -> _Record:
        return _Record(_preview(raw), reason="too_long",
                       detail=f"a line of {length:,} bytes, more than a record may hold ({self.max_record_chars:,} "
                              f"characters: 2 x --max-text-chars + {RECORD_SLACK // 1024} KiB){_preview_note(raw)}")

    def _csv_record(self, raw, fields, header, text_at, sep) -> _Record:
        n, width = len(fields), len(header)
        trailing_unnamed = text_at is not None and not any(named for _, named in header[text_at + 1:])
        short_ok = n < width and not any(named for _, named in header[n:])
        if (n < width and not short_ok) or (n > width and not trailing_unnamed):
            return _Record(raw, reason="column_count", detail=f"{n} field(s); the header has {width} columns")
        values = (fields + [""] * (width - n))[:width]
        overflow = fields[width:]
        while overflow and overflow[-1] == "":  # trailing empty fields hold nothing
            overflow.pop()
        if overflow:  # more pieces than columns: the last column holds the rest, so no field is dropped
            values[-1] = sep.join([values[-1], *overflow])
        if text_at is None:
            return _Record(raw, values=values)
        text = fields[text_at] if text_at < n else None
        if trailing_unnamed and text is not None:
            pieces = fields[text_at + 1:]
            while pieces and pieces[-1] == "":
                pieces.pop()
            if pieces:  # text spilled over unquoted commas into unnamed columns: rejoin it, and
                text = sep.join([text, *pieces])  # the row holds it whole, where it was scored from
                values[text_at:] = [text] + [""] * (width - text_at - 1)
        return _Record(raw, values=values, text=text)

    def _txt_records(self, lines: _Lines) -> Iterator[_Record]:
        for _ in lines:
            raw, bad, cut = lines.take()
            if cut:
                yield self._cut_line(raw, cut)
            elif bad:
                yield _Record(raw, reason="undecodable", detail=f"bytes not valid in {self.encoding}")
            else:
                yield _Record(raw, values=[raw], text=raw)

    def _jsonl_records(self, lines: _Lines | None) -> Iterator[_Record]:
        lines = lines or self._lines()
        for _ in lines:
            raw, bad, cut = lines.take()
            if cut:
                yield self._cut_line(raw, cut)
                continue
            if bad:
                yield _Record(raw, reason="undecodable", detail=f"bytes not valid in {self.encoding}")
                continue
            if not raw.strip():
                yield _Record(raw, reason="blank_line", detail="blank line")
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                yield _Record(raw, reason="unparseable", detail=f"invalid JSON: {exc}")
                continue
            except RecursionError:
                yield _Record(raw, reason="unparseable", detail="invalid JSON: nested too deeply to read")
                continue
            if not isinstance(obj, dict):
                yield _Record(raw, reason="unparseable", detail=f"expected a JSON object, found {type(obj).__name__}")
                continue
            if not _utf8_storable(obj):
                yield _Record(raw, reason="invalid_unicode",
                              detail="a key or value holds a lone surrogate, which UTF-8 cannot store")
                continue
            yield _Record(raw, values=obj, text=obj.get(self.text_column) if self.text_column else None)

    def _parquet_records(self):
        import pyarrow.parquet as pq

        state = {"rows": 0}

        def records():
            with _parquet_errors(self.path), pq.ParquetFile(parquet_source(self.path)) as pf:
                for batch in pf.iter_batches(batch_size=self.chunk_rows):
                    if self.parquet_names:
                        batch = batch.rename_columns(self.parquet_names)
                    for row in batch.to_pylist():
                        state["rows"] += 1
                        yield _Record(json.dumps(row, default=str, ensure_ascii=False), values=row,
                                      text=row.get(self.text_column))

        return records(), lambda: state["rows"]


def _unique(names: list[str], warn_for=None) -> list[str]:
    """Column names with each repeat given trailing "_"s until the name is one no column has
    (x, x -> x, x_; x, x, x_ -> x, x__, x_: the column named x_ keeps its name); a warning naming
    the file `warn_for` (if given) lists the renames."""
    taken, seen = set(names), set()
    unique = []
    for name in names:
        if name in seen:
            while name in taken:
                name += "_"
            taken.add(name)
        seen.add(name)
        unique.append(name)
    renamed = [f"{given!r} -> {name!r}" for given, name in zip(names, unique, strict=True) if given != name]
    if renamed and warn_for is not None:
        logger.warning(f"warning: {warn_for}: repeated column name(s) renamed, so every column is kept: "
                       f"{', '.join(renamed)}")
    return unique


@contextlib.contextmanager
def _parquet_errors(path) -> Iterator[None]:
    """pyarrow's refusal of a file's bytes as a ReadError naming the file: no Parquet footer, a
    damaged footer or page (an OSError without errno), a value Python cannot hold (a date past
    year 9999). Errors of the system (an errno) or of the object store's client stay what they are."""
    import pyarrow as pa

    try:
        yield
    except (pa.ArrowException, OSError, OverflowError) as exc:
        if isinstance(exc, OSError) and (exc.errno is not None or _object_store_error(exc, path)):
            raise
        raise ReadError(f"{path}: not a readable Parquet file ({exc}); expected a whole Parquet file") from exc


def _object_store_error(exc: OSError, path) -> bool:
    """Whether reading a stored object failed in the store's client (the network, a permission, a
    missing key), not in its bytes: pyarrow's S3 client says "AWS Error" in every error it raises."""
    return isinstance(path, StoredPath) and "AWS Error" in str(exc)


_STILL_OPEN = "a quoted field still open at the record limit"


def _preview(raw: str) -> str:
    return raw[:RAW_PREVIEW]


def _preview_note(raw: str) -> str:
    """For the detail of a record whose `raw` is a preview: how much of it there was."""
    return f" (raw: its first {RAW_PREVIEW:,} of {len(raw):,} characters)" if len(raw) > RAW_PREVIEW else ""


def _utf8_storable(obj) -> bool:
    """Whether every string key and value in a parsed JSON value encodes to UTF-8 (no lone
    surrogate from a `\\ud83d` escape). Walked with a stack: JSON may nest as deep as it parsed."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def _numeric(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False


def _value(values, column, columns):
    if isinstance(values, dict):
        return values.get(column)
    return values[columns.index(column)]


__all__ = ["Chunk", "MessageReader", "ReadDecisions", "ReadError", "REASONS",
           "read_messages", "DEFAULT_MAX_TEXT_CHARS", "DEFAULT_CHUNK_ROWS"]
