"""Message files -> per-layer pooled vectors, chunk by chunk, through the embedding cache.

    for chunk, layers in file_vectors(path, encoder, cache, ReadOptions(text_column="v2")):
        chunk.rows      # DataFrame: the file's columns for the good rows (chunk.row_numbers: their numbers)
        layers          # (len(chunk.rows), n_layers + 1, dim) float32
        chunk.rejects   # rows the reader rejected, with their reason

`labelled_vectors` reads a whole labelled file (for train and evaluate): rows without a label
join the reader's rejects with reason "missing_label".
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterator

import numpy as np
import pandas as pd

from elmobatch.caching import EmbeddingCache
from elmobatch.embedding.progress import within_chunk
from elmobatch.errors import ElmobatchError
from elmobatch.reading import DEFAULT_CHUNK_ROWS, REJECT_COLUMNS, Chunk, ReadOptions, read_messages

MISSING_LABEL = "missing_label"


class LabelError(ElmobatchError, ValueError):
    """A label column that is absent, or labels a head does not know."""


def file_vectors(path, encoder, cache: EmbeddingCache, read: ReadOptions | None = None, *,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, progress=None) -> Iterator[tuple[Chunk, np.ndarray]]:
    """Yield (chunk, layers) for each chunk of `path`, read as `read` says (tokens are counted with
    the encoder's tokenizer). `progress` (a Progress) is updated after each encoder batch and closed at the end."""
    reader = read_messages(path, read, chunk_rows=chunk_rows, tokenizer=encoder.tokenizer)
    rows_read, done = 0, 0.0
    for chunk in reader:
        layers, _ = cache.embed(encoder, chunk.texts, within_chunk(progress, rows_read, chunk.rows_read, done,
                                                                   reader.fraction(chunk)))
        rows_read += chunk.rows_read
        done = report_progress(progress, reader, chunk, rows_read)
        yield chunk, np.asarray(layers, np.float32)
    if progress:
        progress.close()


def report_progress(progress, reader, chunk: Chunk, rows_read: int) -> float:
    """Rows read so far, and how far through the file (by bytes) this chunk ends (returned)."""
    fraction = reader.fraction(chunk)
    if progress:
        progress.update(rows_read, fraction)
    return fraction


@dataclass
class LabelledData:
    """A labelled file in memory: x (n, n_layers + 1, dim), labels (n,), rows (the file's columns, n rows)
    and row_numbers (n,), each row's number in the file."""

    x: np.ndarray
    labels: list[str]
    texts: list[str]
    rows: pd.DataFrame
    row_numbers: np.ndarray
    rejects: pd.DataFrame
    rows_read: int
    text_column: str


def labelled_vectors(path, encoder, cache: EmbeddingCache, *, label_column: str,
                     read: ReadOptions | None = None, progress=None) -> LabelledData:
    """Read all of `path` (as `read` says) with its labels. Raises LabelError if `label_column` is not
    a column. `progress` (a Progress) is updated after each encoder batch and closed at the end."""
    reader = read_messages(path, read, tokenizer=encoder.tokenizer)
    columns = reader.decisions.columns
    if label_column not in columns:
        raise LabelError(f"{path}: no label column {label_column!r} (columns: {', '.join(map(str, columns))})")
    if label_column == reader.decisions.text_column:
        raise LabelError(f"{path}: the label column {label_column!r} is also the text column; expected the column "
                         f"of each row's label (such as ham/spam) apart from its text (columns: "
                         f"{', '.join(map(str, columns))}; pass the text's with --text-column if it was not found)")
    xs, labels, texts, rows, numbers, rejects, rows_read, done = [], [], [], [], [], [], 0, 0.0
    for chunk in reader:
        on_batch = within_chunk(progress, rows_read, chunk.rows_read, done, reader.fraction(chunk))
        rows_read += chunk.rows_read
        rejects.append(chunk.rejects)
        values = chunk.rows[label_column]
        missing = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
        if missing.any():
            rejects.append(_label_rejects(reader, chunk.rows[missing], chunk.row_numbers[missing], label_column))
        keep = ~missing
        kept_texts = [t for t, k in zip(chunk.texts, keep, strict=True) if k]
        layers, _ = cache.embed(encoder, kept_texts, on_batch)
        xs.append(np.asarray(layers, np.float32))
        labels.extend(values[keep].astype(str).str.strip().tolist())
        texts.extend(kept_texts)
        rows.append(chunk.rows[keep])
        numbers.append(chunk.row_numbers[keep])
        done = report_progress(progress, reader, chunk, rows_read)
    if progress:
        progress.close()
    dim_shape = (0, encoder.n_layers + 1, encoder.dim)
    return LabelledData(
        x=np.concatenate(xs) if xs else np.zeros(dim_shape, np.float32), labels=labels, texts=texts,
        rows=pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns),
        row_numbers=np.concatenate(numbers) if numbers else np.zeros(0, np.int64),
        rejects=pd.concat(rejects, ignore_index=True) if rejects else pd.DataFrame(columns=REJECT_COLUMNS),
        rows_read=rows_read, text_column=reader.decisions.text_column)


def _label_rejects(reader, rows: pd.DataFrame, row_numbers: np.ndarray, label_column: str) -> pd.DataFrame:
    raw = [",".join("" if _missing(v) else str(v) for v in row) for row in rows.itertuples(index=False)]
    return pd.DataFrame({"source_file": reader.source_name, "row_number": row_numbers,
                         "reason": MISSING_LABEL, "detail": f"no value in the label column {label_column!r}",
                         "raw": raw})[REJECT_COLUMNS]


def _missing(value) -> bool:
    """None, pandas' NA or a float NaN (a list or other value is never missing)."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)

