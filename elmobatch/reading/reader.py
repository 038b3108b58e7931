"""Chunked, forgiving reading of message files: CSV, TSV, JSON Lines, Parquet, plain text.

    reader = read_messages("day.csv")        # decisions are made (and errors raised) here
    reader.decisions                         # ReadDecisions: format, encoding, text column, and why
    for chunk in reader:                     # at most chunk_rows records each; memory stays flat
        chunk.rows     # DataFrame: the file's columns for the good rows, plus row_number
        chunk.texts    # list[str]: the (repaired) message of each good row, in the same order
        chunk.rejects  # DataFrame: source_file, row_number, reason, detail, raw
        chunk.ids      # list[str] of the --id-column values of the good rows (None without one)

Every record gets a row number (data row within the file, from 0) and ends up in exactly one of
`rows` and `rejects`, so rows_read = good rows + rejects. Reject reasons are the `REASONS` keys.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator

import pandas as pd

from elmobatch.reading.detect import (ReadDecisions, ReadError, check_encoding,
                                      check_id_column, choose_format, choose_text_column, detect_encoding)

DEFAULT_MAX_TEXT_CHARS = 20_000
DEFAULT_CHUNK_ROWS = 10_000
CSV_FIELD_LIMIT = 64 << 20  # a runaway quoted field stops here instead of eating the whole file
SAMPLE_RECORDS = 200  # records looked at to find the text column

REASONS = {
    "undecodable": "bytes that are not valid in the file's encoding",
    "nul_byte": "a NUL (\\x00) character",
    "unparseable": "a record the format cannot parse (bad quoting, invalid JSON, not a JSON object)",
    "blank_line": "a blank line where a record was expected (CSV, TSV, JSON Lines)",
    "column_count": "more or fewer fields than the header has named columns",
    "missing_text": "no value in the text column (absent or null)",
    "not_text": "a text value that is not a string (e.g. a JSON number)",
    "missing_id": "no value in the --id-column",
    "too_long": "a message longer than --max-text-chars",
    "empty_text": "an empty message, with --reject-empty",
    "invalid_unicode": "text that cannot be stored as UTF-8 (a lone surrogate)",
}
REJECT_COLUMNS = ["source_file", "row_number", "reason", "detail", "raw"]


@dataclass
class Chunk:
    """One bounded slice of a file: good rows and rejects, `index` counting from 0."""

    index: int
    rows: pd.DataFrame
    texts: list[str]
    rejects: pd.DataFrame
    ids: list[str] | None  # the id column's values as strings, taken before pandas can retype them
    position: int  # how far reading has got, in units of MessageReader.size (bytes; rows for Parquet)

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


@dataclass
class _Lines:
    """Decoded lines of a byte file, remembering which physical lines the current record used."""

    path: Path
    encoding: str
    offset: int = 0
    current: list[str] = field(default_factory=list)
    bad: bool = False

    def __iter__(self) -> Iterator[str]:
        with open(self.path, "rb") as f:
            for raw in f:
                self.offset += len(raw)
                try:
                    line = raw.decode(self.encoding)
                except UnicodeDecodeError:
                    line = raw.decode(self.encoding, "backslashreplace")  # keep the bytes visible
                    self.bad = True
                self.current.append(line)
                yield line

    def take(self) -> tuple[str, bool]:
        """The raw text of the record just read (newline at the end removed), and whether it had bad bytes."""
        raw, bad = "".join(self.current), self.bad
        self.current, self.bad = [], False
        return raw.rstrip("\r\n"), bad


def read_messages(path, *, text_column: str | None = None, id_column: str | None = None, fmt: str | None = None,
                  encoding: str | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, reject_empty: bool = False,
                  source_name: str | None = None) -> MessageReader:
    """Open `path` for chunked reading; raises ReadError (naming file and setting) if it cannot be read."""
    return MessageReader(Path(path), text_column=text_column, id_column=id_column, fmt=fmt, encoding=encoding,
                         chunk_rows=chunk_rows, max_text_chars=max_text_chars, reject_empty=reject_empty,
                         source_name=source_name)


class MessageReader:
    """Iterable over a file's chunks; iterating again reads the file again from the start."""

    def __init__(self, path: Path, *, text_column, id_column, fmt, encoding, chunk_rows, max_text_chars,
                 reject_empty, source_name):
        if not path.is_file():
            raise ReadError(f"{path}: no such file")
        if chunk_rows < 1:
            raise ReadError(f"--chunk-rows {chunk_rows}: expected a positive number of rows")
        if max_text_chars < 1:
            raise ReadError(f"--max-text-chars {max_text_chars}: expected a positive number of characters")
        self.path = path
        self.chunk_rows = chunk_rows
        self.max_text_chars = max_text_chars
        self.reject_empty = reject_empty
        self.source_name = source_name or path.name
        self.text_column: str | None = None  # set by _decide; sampling runs before it is known
        self.id_column: str | None = None
        self.decisions = self._decide(text_column, id_column, fmt, encoding)
        self.size = self._size()  # the unit of Chunk.position: bytes, or rows for Parquet

    # ---- decisions -------------------------------------------------------------------------

    def _decide(self, text_column, id_column, fmt, encoding) -> ReadDecisions:
        fmt, fmt_reason = choose_format(self.path, fmt)
        if fmt == "parquet":
            enc, enc_reason = None, "Parquet is typed: no text encoding"
        elif encoding:
            enc, enc_reason = check_encoding(encoding), "given (--encoding); undecodable rows are rejected"
        else:
            enc, enc_reason = detect_encoding(self.path)
        self.format, self.encoding = fmt, enc
        columns, text_like = self._columns()
        if fmt == "txt":
            text, text_reason = "text", "plain text: one message per line"
        else:
            text, text_reason = choose_text_column(self.path, columns, text_like, text_column)
        check_id_column(self.path, columns, id_column)
        self.columns, self.text_column, self.id_column = columns, text, id_column
        return ReadDecisions(path=str(self.path), format=fmt, format_reason=fmt_reason, encoding=enc,
                             encoding_reason=enc_reason, text_column=text, text_column_reason=text_reason,
                             id_column=id_column, columns=columns)

    def _columns(self) -> tuple[list[str], list[str]]:
        """All column names, and those whose sampled values look like free text."""
        if self.format == "txt":
            return ["text"], ["text"]
        if self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pq.read_schema(self.path)
            strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
            return list(schema.names), strings
        if self.format == "jsonl":
            columns: dict[str, bool] = {}
            for n, record in enumerate(self._jsonl_records(None)):
                if n >= SAMPLE_RECORDS:
                    break
                if isinstance(record.values, dict):
                    for key, value in record.values.items():
                        columns[key] = columns.get(key, False) or (isinstance(value, str) and not _numeric(value))
            return list(columns), [c for c, texty in columns.items() if texty]
        header = self._csv_header()
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

    def _size(self) -> int:
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows
        return self.path.stat().st_size

    # ---- iteration -------------------------------------------------------------------------

    def _lines(self) -> _Lines:
        """A fresh pass over the decoded lines; only text formats read lines, and they always have an encoding."""
        assert self.encoding is not None, f"{self.path}: {self.format} has no text encoding"
        return _Lines(self.path, self.encoding)

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

    def _chunks(self, records, progress) -> Iterator[Chunk]:
        good, texts, rejects = [], [], []
        index = 0
        for row_number, record in enumerate(records):
            reason, detail, text = self._check(record)
            if reason is None:
                good.append((row_number, record.values))
                texts.append(text)
            else:
                rejects.append((self.source_name, row_number, reason, detail, record.raw))
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
        if self.reject_empty and not text.strip():
            return "empty_text", "empty message (--reject-empty)", None
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "invalid_unicode", "the text holds a lone surrogate, which UTF-8 cannot store", None
        return None, "", text

    def _chunk(self, index, good, texts, rejects, position) -> Chunk:
        if self.format in ("jsonl", "parquet"):
            rows = pd.DataFrame.from_records([values for _, values in good])
            rows = rows.reindex(columns=list(dict.fromkeys(self.columns + list(rows.columns))))
        else:
            rows = pd.DataFrame([values for _, values in good], columns=self.columns, dtype=object)
        rows["row_number"] = pd.array([n for n, _ in good], dtype="int64")
        rejected = pd.DataFrame(rejects, columns=REJECT_COLUMNS)
        rejected["row_number"] = rejected["row_number"].astype("int64")
        ids = None
        if self.id_column is not None:
            ids = [str(_value(values, self.id_column, self.columns)) for _, values in good]
        return Chunk(index=index, rows=rows, texts=texts, rejects=rejected, ids=ids, position=position)

    # ---- formats ---------------------------------------------------------------------------

    def _csv_dialect(self) -> dict:
        if self.format == "tsv":  # TSV has no quoting: a quote character is just text
            return dict(delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
        return dict(delimiter=",", strict=True)

    def _csv_header(self) -> list[tuple[str, bool]]:
        """[(column name, was it named in the file)]; blank names become 'Unnamed: i' as in pandas."""
        lines = self._lines()
        try:
            row = next(csv.reader(iter(lines), **self._csv_dialect()), None)
        except csv.Error as exc:
            raise ReadError(f"{self.path}: the header line cannot be parsed as {self.format.upper()} ({exc})") from None
        if lines.bad:
            raise ReadError(f"{self.path}: the header line is not valid {self.encoding}; pass --encoding")
        if not row:
            raise ReadError(f"{self.path}: no header line: expected column names on the first line")
        header, seen = [], set()
        for i, name in enumerate(row):
            named = name.strip() != ""
            name = name.strip() if named else f"Unnamed: {i}"
            while name in seen:
                name += "_"
            seen.add(name)
            header.append((name, named))
        return header

    def _csv_records(self, header, lines: _Lines | None) -> Iterator[_Record]:
        """Data records after the header. `lines` None: a fresh pass used only for sampling."""
        csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
        lines = lines or self._lines()
        names = [name for name, _ in header]
        text_at = names.index(self.text_column) if self.text_column in names else None
        sep = "\t" if self.format == "tsv" else ","
        reader = csv.reader(iter(lines), **self._csv_dialect())
        try:
            next(reader)  # header
        except (csv.Error, StopIteration):
            return
        lines.take()
        while True:
            try:
                fields = next(reader)
                error = None
            except StopIteration:
                return
            except csv.Error as exc:
                fields, error = None, str(exc)
            raw, bad = lines.take()
            if bad:
                yield _Record(raw, reason="undecodable", detail=f"bytes not valid in {self.encoding}")
            elif error is not None:
                hint = " (an unterminated quote?)" if "end of data" in error else ""
                yield _Record(raw, reason="unparseable", detail=f"{self.format.upper()}: {error}{hint}")
            elif not fields:
                yield _Record(raw, reason="blank_line", detail="blank line")
            else:
                yield self._csv_record(raw, fields, header, text_at, sep)

    def _csv_record(self, raw, fields, header, text_at, sep) -> _Record:
        n, width = len(fields), len(header)
        trailing_unnamed = text_at is not None and not any(named for _, named in header[text_at + 1:])
        short_ok = n < width and not any(named for _, named in header[n:])
        if (n < width and not short_ok) or (n > width and not trailing_unnamed):
            return _Record(raw, reason="column_count", detail=f"{n} field(s); the header has {width} columns")
        values = (fields + [""] * (width - n))[:width]
        if text_at is None:
            return _Record(raw, values=values)
        text = fields[text_at] if text_at < n else None
        if trailing_unnamed and text is not None:
            pieces = fields[text_at + 1:]
            while pieces and pieces[-1] == "":
                pieces.pop()
            if pieces:  # text spilled over unquoted commas into unnamed columns: rejoin it
                text = sep.join([text, *pieces])
        return _Record(raw, values=values, text=text)

    def _txt_records(self, lines: _Lines) -> Iterator[_Record]:
        for _ in lines:
            raw, bad = lines.take()
            if bad:
                yield _Record(raw, reason="undecodable", detail=f"bytes not valid in {self.encoding}")
            else:
                yield _Record(raw, values=[raw], text=raw)

    def _jsonl_records(self, lines: _Lines | None) -> Iterator[_Record]:
        lines = lines or self._lines()
        for _ in lines:
            raw, bad = lines.take()
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
            if not isinstance(obj, dict):
                yield _Record(raw, reason="unparseable", detail=f"expected a JSON object, found {type(obj).__name__}")
                continue
            yield _Record(raw, values=obj, text=obj.get(self.text_column) if self.text_column else None)

    def _parquet_records(self):
        import pyarrow.parquet as pq

        state = {"rows": 0}

        def records():
            with pq.ParquetFile(self.path) as pf:
                for batch in pf.iter_batches(batch_size=self.chunk_rows):
                    for row in batch.to_pylist():
                        state["rows"] += 1
                        yield _Record(json.dumps(row, default=str, ensure_ascii=False), values=row,
                                      text=row.get(self.text_column))

        return records(), lambda: state["rows"]


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
