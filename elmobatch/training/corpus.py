"""The pretraining corpus: reading its files, tokenising its messages, holding some out, batching.

    corpus files (elmobatch.reading: text lines, or a CSV/TSV/JSONL/Parquet column; --rows)
      -> messages, in order (rows the reader rejects are counted by reason, never trained on)
      -> tokens (the model's tokenizer); empty messages skipped
      -> training and held-out messages (an evenly spread fraction held out)
      -> batches: char ids (batch, T, max_chars) and word ids (batch, T), T counts <S> and </S>

No TensorFlow here: `pretrain.py` runs the model on what this gives.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from elmobatch.encoding import tokens as tok
from elmobatch.errors import ElmobatchError
from elmobatch.files import file_sha256
from elmobatch.settings import ReadOptions
from elmobatch.settings import PretrainSettings
from elmobatch.training.vocabulary import Vocabulary


class PretrainError(ElmobatchError, ValueError):
    """A corpus, option or checkpoint that pretraining cannot use, with what was expected."""


@dataclass
class CorpusRead:
    """The messages of the corpus files, in order, and what reading them decided and rejected."""

    messages: list[str]
    files: list[dict]  # per file: name, format, encoding, text column, rows read/selected/rejected


@dataclass
class TrainingText:
    """The corpus as pretraining uses it: what was read, and its non-empty messages tokenized and split."""

    read: CorpusRead
    sentences: list[list[str]]  # every non-empty message, tokenized, in order
    train: list[list[str]]
    held_out: list[list[str]]


def read_training_text(corpus: list[str | Path], settings: PretrainSettings,
                       log: Callable[[str], None]) -> TrainingText:
    """Read, tokenize and split the corpus files, logging one line per file."""
    read = read_corpus(corpus, settings.read, settings.rows, settings.tokenizer)
    for f in read.files:
        log(f"{f['file']}: {f['format']}, {f['encoding']}, column {f['text_column']!r}: {f['messages']} messages"
            + (f" (rows {settings.rows})" if settings.rows else "")
            + (f", {sum(f['rejected'].values())} rows rejected by the reader {f['rejected']}" if f["rejected"] else ""))
    tokenized = [tok.tokenize(m, settings.tokenizer) for m in read.messages]
    count_tokens(read.files, tokenized)
    sentences = [s for s in tokenized if s]
    if len(sentences) < 2:
        raise PretrainError(f"{', '.join(map(str, corpus))}: {len(sentences)} non-empty messages; "
                            "pretraining needs at least 2 (one to train on, one held out)")
    held = heldout_mask(len(sentences), settings.heldout)
    train = [s for s, h in zip(sentences, held, strict=True) if not h]
    held_out = [s for s, h in zip(sentences, held, strict=True) if h]
    if not held_out or not train:
        raise PretrainError(f"--heldout {settings.heldout} leaves {len(train)} training and {len(held_out)} "
                            "held-out messages; both must be at least 1")
    return TrainingText(read, sentences, train, held_out)


def parse_rows(spec: str | None) -> tuple[int, int | None] | None:
    """'START:END' (END exclusive, either may be empty) -> (start, end); None -> None."""
    if spec is None:
        return None
    try:
        start, end = spec.split(":")
        bounds = (int(start) if start else 0, int(end) if end else None)
    except ValueError:
        raise PretrainError(f"--rows {spec!r}: expected START:END, data rows counted from 0, END excluded "
                            "(e.g. 0:4457)") from None
    if bounds[0] < 0 or (bounds[1] is not None and bounds[1] <= bounds[0]):
        raise PretrainError(f"--rows {spec!r}: expected 0 <= START < END")
    return bounds


def read_corpus(paths: list[str | Path], options: ReadOptions | None = None, rows: str | None = None,
                tokenizer: str = tok.DEFAULT_TOKENIZER) -> CorpusRead:
    """Corpus files through elmobatch.reading (plain text: one message per line; CSV, TSV, JSON
    Lines, Parquet: the text column) -> their messages, in order. `options` say how files are read;
    `rows` keeps data rows START..END-1 of each file. Rows the reader rejects (e.g. more than
    max_tokens tokens) are counted by reason, never trained on."""
    from elmobatch.reading import ReadError, read_messages

    bounds = parse_rows(rows)
    messages: list[str] = []
    files = []
    for path in paths:
        try:
            reader = read_messages(path, options, tokenizer=tokenizer)
            selected, read, rejects = 0, 0, dict[str, int]()
            for chunk in reader:
                read += chunk.rows_read
                numbers = chunk.row_numbers
                for number, text in zip(numbers, chunk.texts, strict=True):
                    if bounds is None or (bounds[0] <= number and (bounds[1] is None or number < bounds[1])):
                        messages.append(text)
                        selected += 1
                for number, reason in zip(chunk.rejects["row_number"], chunk.rejects["reason"], strict=True):
                    if bounds is None or (bounds[0] <= number and (bounds[1] is None or number < bounds[1])):
                        rejects[reason] = rejects.get(reason, 0) + 1
        except ReadError as exc:
            raise PretrainError(str(exc)) from exc
        d = reader.decisions
        files.append({"file": Path(path).name, "format": d.format, "encoding": d.encoding,
                      "text_column": d.text_column, "rows": rows, "rows_read": read, "messages": selected,
                      "rejected": rejects, "sha256": file_sha256(path), **_source_note(Path(path))})
    return CorpusRead(messages, files)


def _source_note(path: Path) -> dict:
    """{"source": ...} from `FILE.source.json` beside a corpus file (where the text came from, its
    license), written by the scripts that build corpora; {} when there is none."""
    note = path.with_name(path.name + ".source.json")
    if not note.is_file():
        return {}
    try:
        return {"source": json.loads(note.read_text(encoding="utf-8"))}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PretrainError(f"{note}: not readable JSON ({exc}); it should describe {path.name}'s source") from exc


def count_tokens(files: list[dict], tokenized: list[list[str]]) -> None:
    """Add each file's token count to its entry (`tokenized`: the messages of all files, in order)."""
    start = 0
    for f in files:
        f["tokens"] = sum(len(s) for s in tokenized[start : start + f["messages"]])
        start += f["messages"]


def corpus_fingerprint(messages: list[str], tokenizer: str) -> str:
    """sha256 of the messages (in order) and the tokenizer: the same text gives the same hash."""
    digest = hashlib.sha256(f"tokenizer={tokenizer}\n".encode())
    for message in messages:
        digest.update(message.encode("utf-8") + b"\n")
    return digest.hexdigest()


def heldout_mask(n: int, fraction: float) -> np.ndarray:
    """(n,) bool: an evenly spread `fraction` of positions (message i when floor((i+1)f) > floor(if))."""
    if not 0 < fraction < 1:
        raise PretrainError(f"--heldout must be between 0 and 1 (a fraction of the messages), got {fraction}")
    i = np.arange(n)
    return np.floor((i + 1) * fraction) > np.floor(i * fraction)


class Batch(NamedTuple):
    """One training step's input (`BiLM.on_word_table`) and targets.

      word_chars: (n_rows, n_chars) int32, char ids of the batch's distinct words (tokens.word_table)
      positions:  (batch, T) int32 rows of word_chars, T = longest + 2 (<S> and </S>)
      word_ids:   (batch, T) int32 vocabulary ids of each position (padding: 0, masked by the loss)
    """

    word_chars: np.ndarray
    positions: np.ndarray
    word_ids: np.ndarray


def make_batch(sentences: list[list[str]], vocab: Vocabulary, max_chars: int, widest_filter: int) -> Batch:
    """Token lists -> a Batch."""
    word_chars, positions = tok.word_table(sentences, max_chars, widest_filter)
    words = np.zeros(positions.shape, np.int32)
    for row, sentence in enumerate(sentences):
        ids = vocab.ids(sentence)
        words[row, : len(ids)] = ids
    return Batch(word_chars, positions, words)


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Indices of one epoch's batches: shuffled, then sorted by length within chunks of 20 batches
    (so a batch holds similar lengths and little padding), then the batches shuffled."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches = []
    chunk = batch_size * 20
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
