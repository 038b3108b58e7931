"""File-level reading decisions: format, encoding and text column, each with the reason for it.

The decisions go into the run manifest, so a user can see why a file was read the way it was.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import logging
import re
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import BinaryIO

from elmobatch.errors import ElmobatchError
from elmobatch.settings import FORMATS
from elmobatch.storage import AnyPath, open_binary

_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
               ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".txt": "txt"}
# Column names that usually hold the message, most specific first.
TEXT_COLUMN_NAMES = ("text", "message", "msg", "body", "sms", "content", "sentence", "v2")
# Leading bytes of compressed files, which no format here reads directly.
COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip", b"\xfd7zXZ\x00": "xz",
                    b"\x28\xb5\x2f\xfd": "zstd"}
FALLBACK_ENCODING = "latin-1"  # decodes any byte; what the reference data (and pandas users of it) use
# A file read as Latin-1 with at least this share, and this many, of its non-ASCII lines valid UTF-8 is warned of
# (one line can be valid UTF-8 by chance: the reference file's "4txt/\xcc\xbc1.20" is).
MIXED_SHARE, MIXED_LINES = 0.1, 2
DELIMITERS = (",", ";", "\t", "|")  # what delimiter detection tries
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
SAMPLE_LINES = 50  # lines looked at to find the delimiter
SNIFF_BYTES = 4096  # bytes looked at to tell the format of a file without an extension
CONSISTENT_SHARE = 0.8  # a delimiter fits when at least this share of sampled rows has the header's width
# A header field as a .txt file's header line would hold it: a bare column name, no spaces.
_COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


logger = logging.getLogger("elmobatch")


class ReadError(ElmobatchError, ValueError):
    """A file that cannot be read as asked: the message names the file, the setting and what was expected."""


@dataclass
class ReadDecisions:
    """How one file is read, and why (stored in the manifest)."""

    path: str
    format: str
    format_reason: str
    encoding: str | None  # None for Parquet (typed, no text encoding)
    encoding_reason: str
    text_column: str
    text_column_reason: str
    id_column: str | None
    columns: list[str]
    delimiter: str | None = None  # CSV/TSV (and a .txt with a header); None for JSON Lines, Parquet, plain text
    delimiter_reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def is_gzip_name(path: AnyPath) -> bool:
    """A name ending in .gz: the file is read as a gzip stream (its format from the name before .gz)."""
    return path.name.lower().endswith(".gz")


@contextlib.contextmanager
def open_bytes(path: AnyPath) -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """(the file's bytes, decompressed for a .gz name; the file as stored, whose tell() is progress)."""
    with open_binary(path) as stored:
        if not is_gzip_name(path):
            yield stored, stored
            return
        with gzip.GzipFile(fileobj=stored, mode="rb") as stream:
            yield stream, stored  # type: ignore[misc]


@contextlib.contextmanager
def unreadable_gzip(path: AnyPath) -> Iterator[None]:
    """Turn a .gz file's bad or truncated stream into a ReadError naming the file."""
    try:
        yield
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        if not is_gzip_name(path):
            raise
        raise ReadError(f"{path}: not a readable gzip stream ({exc or type(exc).__name__}); "
                        "the name ends in .gz, so it is read as one") from None


def choose_format(path: AnyPath, fmt: str | None) -> tuple[str, str]:
    """(format, reason): --format, else the extension (the one before .gz for a .gz name), else, for
    a name with no extension at all (such as standard input's), the content (see sniff_format)."""
    gz = is_gzip_name(path)
    if fmt:
        if fmt not in FORMATS:
            raise ReadError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
        found, reason = fmt, "given (--format)"
    else:
        suffixes = [s.lower() for s in path.suffixes]
        extension = (suffixes[-2] if len(suffixes) > 1 else "") if gz else (suffixes[-1] if suffixes else "")
        if not extension and not gz:
            return sniff_format(path)
        known = _EXTENSIONS.get(extension)
        if known is None:
            raise ReadError(f"{path}: cannot tell the format from the extension {extension or path.suffix!r}: "
                            f"expected one of {', '.join(sorted(_EXTENSIONS))}; pass --format ({', '.join(FORMATS)}) "
                            "if it is a message file (--format applies to every input), or leave it out")
        found, reason = known, f"from the extension {extension}"
    if gz and found == "parquet":
        raise ReadError(f"{path}: Parquet is not read from a gzip stream (Parquet compresses its own columns); "
                        "decompress it first")
    return found, reason + ("; gzip stream (.gz)" if gz else "")


def sniff_format(path: AnyPath) -> tuple[str, str]:
    """The format of a file with no extension (standard input) from its first bytes: Parquet's
    PAR1 magic, a JSON object on the first line (JSON Lines), else text lines (a delimited header
    line then makes it CSV)."""
    with open_binary(path) as f:
        start = f.read(SNIFF_BYTES)
    if start.startswith(b"PAR1"):
        return "parquet", "detected from the content: the Parquet magic bytes PAR1"
    if start.lstrip(codecs.BOM_UTF8 + b" \t\r\n").startswith(b"{"):
        return "jsonl", "detected from the content: the first line is a JSON object"
    return "txt", "detected from the content: text lines"


def _widths(sample: list[str], delimiter: str) -> list[int]:
    """Field counts of the sampled records (header first) when split on `delimiter`, quotes honoured;
    a record the csv module cannot parse counts as width 0 (it fits no delimiter)."""
    widths: list[int] = []
    reader = csv.reader(sample, delimiter=delimiter)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return widths
        except csv.Error:
            widths.append(0)
            continue
        if fields:
            widths.append(len(fields))


def _fits(widths: list[int]) -> bool:
    """The header has at least two columns and (nearly) every sampled row has as many."""
    if not widths or widths[0] < 2:
        return False
    rows = widths[1:]
    return not rows or sum(w == widths[0] for w in rows) >= CONSISTENT_SHARE * len(rows)


def _shown(delimiter: str) -> str:
    return f"{DELIMITER_NAMES.get(delimiter, 'the character')} {delimiter!r}"


def choose_delimiter(path: AnyPath, fmt: str, sample: list[str], requested: str | None) -> tuple[str | None, str]:
    """(delimiter, reason) for a CSV, TSV or .txt file from its first lines; None: a plain-text .txt.

    The delimiter that splits the header into two or more columns and (nearly) every sampled row
    into as many is chosen; two such delimiters make the file ambiguous (ReadError naming
    --delimiter). A .txt file is delimited only when its first line is a header of bare column
    names; otherwise it stays one message per line.
    """
    if requested is not None:
        return check_delimiter(requested), "given (--delimiter)"
    default = "\t" if fmt == "tsv" else ","
    widths = {d: _widths(sample, d) for d in DELIMITERS}
    fitting = [d for d in DELIMITERS if _fits(widths[d])]
    if fmt == "txt":
        headed = [d for d in fitting if _is_header(sample[0], d)]
        if not headed:
            if fitting:  # a CSV whose header names have spaces reads like this: say how to read it as one
                logger.warning(f"note: {path}: read as plain text, one message per line (its first line is not "
                               f"a header of bare column names), though its lines split alike on "
                               f"{_shown(fitting[0])} into {widths[fitting[0]][0]} fields; "
                               "if it is a table, pass --format csv")
            return None, "plain text: no delimited header line"
        fitting = headed
    if len(fitting) > 1:
        found = ", ".join(f"{_shown(d)} ({widths[d][0]} columns)" for d in fitting)
        raise ReadError(f"{path}: cannot tell the delimiter: {found} each split the header and the first rows "
                        f"alike; pass --delimiter")
    if fitting:
        d = fitting[0]
        return d, (f"detected: {_shown(d)} splits the header into {widths[d][0]} columns and "
                   f"{_share(widths[d])} alike")
    return default, f"the {fmt.upper()} default {_shown(default)}: no delimiter splits the header and rows alike"


def _share(widths: list[int]) -> str:
    rows = widths[1:]
    return f"{sum(w == widths[0] for w in rows)} of {len(rows)} sampled rows" if rows else "no rows (none yet)"


def _is_header(line: str, delimiter: str) -> bool:
    fields = next(csv.reader([line], delimiter=delimiter), [])
    return len(fields) >= 2 and all(_COLUMN_NAME.match(f.strip()) for f in fields)


def check_not_compressed(path: AnyPath, fmt: str) -> None:
    """Refuse a compressed file whatever its name says, naming the compression (not a parse error
    later); for a .gz name, what the gzip stream holds."""
    with open_bytes(path) as (f, _):
        start = f.read(8)
    for magic, kind in COMPRESSED_MAGIC.items():
        if start.startswith(magic):
            raise ReadError(f"{path}: the file is {kind}-compressed (it starts with the {kind} bytes "
                            f"{magic.hex(' ')}), not {fmt.upper()}; decompress it first and read the result")


def check_delimiter(requested: str) -> str:
    """A delimiter given by the user, as it is; ReadError unless it is one character other than a quote or newline."""
    if len(requested) != 1 or requested in "\r\n\"":
        raise ReadError(f"--delimiter {requested!r}: expected one character other than a quote or newline, "
                        f"e.g. {', '.join(repr(d) for d in DELIMITERS)}")
    return requested


def check_encoding(name: str) -> str:
    """Normalise an encoding name; only ASCII-compatible byte encodings (lines split on b'\\n')."""
    try:
        codec = codecs.lookup(name)
    except LookupError:
        raise ReadError(f"--encoding {name!r}: unknown encoding") from None
    try:
        ascii_compatible = "a\n".encode(codec.name, "strict") == b"a\n"
    except LookupError:  # a codec that is no text encoding (rot13, hex)
        raise ReadError(f"--encoding {name!r}: not a text encoding") from None
    if not ascii_compatible:
        raise ReadError(f"--encoding {name!r}: only ASCII-compatible encodings are supported "
                        "(UTF-8, Latin-1, cp1252, ...); convert UTF-16/32 files to UTF-8 first")
    return codec.name


def detect_encoding(path: AnyPath) -> tuple[str, str]:
    """Scan the file line by line: UTF-8 if it is valid UTF-8, else the Latin-1 fallback.

    A file that is mostly UTF-8 with a few undecodable lines stays UTF-8 (those lines become
    rejects); one whose non-ASCII lines are mostly not UTF-8 is a legacy 8-bit file, and a warning
    says so if at least MIXED_SHARE (and MIXED_LINES) of them are UTF-8 (a mixed file: those lines
    read wrong).
    """
    invalid = valid_non_ascii = 0
    first_invalid = first_valid = -1  # index of the first undecodable (valid UTF-8 non-ASCII) line, -1: none
    bom = mark_only = False  # mark_only: the first line's only non-ASCII bytes are the byte-order mark
    with open_bytes(path) as (f, _):  # one pass, no seeking: a stored object is a stream
        for number, line in enumerate(f):
            if number == 0 and line.startswith(codecs.BOM_UTF8):
                bom, mark_only = True, line[len(codecs.BOM_UTF8):].isascii()
            if line.isascii():
                continue
            try:
                line.decode("utf-8")
                valid_non_ascii += 1
                if first_valid < 0 and not (number == 0 and mark_only):
                    first_valid = number
            except UnicodeDecodeError:
                invalid += 1
                first_invalid = number if first_invalid < 0 else first_invalid
    if invalid == 0:
        return ("utf-8-sig" if bom else "utf-8"), "valid UTF-8" + (" with a byte-order mark" if bom else "")
    if valid_non_ascii > invalid:
        return "utf-8", (f"UTF-8 ({valid_non_ascii} non-ASCII lines decode) with {invalid} undecodable "
                         f"line(s), first at line {first_invalid + 1}: those rows are rejected")
    utf8_text = valid_non_ascii - mark_only  # a byte-order mark alone is no text that reads wrong
    if utf8_text >= MIXED_LINES and utf8_text >= MIXED_SHARE * (utf8_text + invalid):
        logger.warning(f"warning: {path}: mixed encodings, read as {FALLBACK_ENCODING}: {invalid} line(s) are not "
                       f"UTF-8, but {utf8_text} (first at line {first_valid + 1}) are, and their non-ASCII "
                       f"characters read wrong as {FALLBACK_ENCODING} (\"cafÃ©\"); --encoding utf-8 reads those "
                       f"right and rejects the lines that are not UTF-8; --encoding {FALLBACK_ENCODING} keeps this "
                       "reading without this warning")
    return FALLBACK_ENCODING, (f"not UTF-8: {invalid} line(s) do not decode (first at line {first_invalid + 1}), "
                               f"{valid_non_ascii} do; fell back to {FALLBACK_ENCODING}")


def choose_text_column(path: AnyPath, columns: list[str], text_like: list[str],
                       requested: str | None) -> tuple[str, str]:
    """The message column: the requested one, else a well-known name, else the only text-like column."""
    if requested is not None:
        if requested not in columns:
            raise ReadError(f"{path}: --text-column {requested!r} not found; columns are: {', '.join(columns)}")
        return requested, "given (--text-column)"
    by_lower = {c.lower(): c for c in columns}
    known = [by_lower[name] for name in TEXT_COLUMN_NAMES if name in by_lower]
    if len(known) == 1:
        return known[0], f"the well-known name {known[0]!r}"
    if len(known) > 1:
        raise ReadError(f"{path}: more than one column could hold the text ({', '.join(known)}); "
                        f"pass --text-column. Columns are: {', '.join(columns)}")
    if len(text_like) == 1:
        return text_like[0], "the only column holding text"
    raise ReadError(f"{path}: cannot tell which column holds the text; pass --text-column. "
                    f"Columns are: {', '.join(columns) or '(none)'}")


def check_id_column(path: AnyPath, columns: list[str], id_column: str | None) -> None:
    if id_column is not None and id_column not in columns:
        raise ReadError(f"{path}: --id-column {id_column!r} not found; columns are: {', '.join(columns)}")
