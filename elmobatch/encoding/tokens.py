"""Tokens -> character ids, as the official ELMo model reads them.

The tokenizers themselves (raw message -> tokens) are in `elmobatch.text`, re-exported here.
"""

from __future__ import annotations

import numpy as np

# Re-exported: the encoder, pretraining and the CLI take them from here.
from elmobatch.settings import DEFAULT_MAX_TOKENS as DEFAULT_MAX_TOKENS
from elmobatch.settings import DEFAULT_TOKENIZER as DEFAULT_TOKENIZER
from elmobatch.text import TOKENIZERS as TOKENIZERS
from elmobatch.text import exceeds_tokens as exceeds_tokens
from elmobatch.text import is_blank as is_blank
from elmobatch.text import is_invisible as is_invisible
from elmobatch.text import tokenize as tokenize

# Character ids of the official vocabulary, before the +1 shift.
BEGIN_SENTENCE, END_SENTENCE, BEGIN_WORD, END_WORD, PADDING = 256, 257, 258, 259, 260

# Rows of the word table that `word_batch`'s positions index: no token (padding), <S>, </S>, then
# the batch's distinct words. `boundary_char_ids` gives the char ids of the first three.
NO_TOKEN_ROW, BEGIN_SENTENCE_ROW, END_SENTENCE_ROW, FIRST_WORD_ROW = 0, 1, 2, 3


def word_char_ids(token: str, max_chars: int) -> np.ndarray:
    """One token -> (max_chars,) int32, the +1-shifted ids: <w>, its UTF-8 bytes (cut to fit), </w>, padding."""
    ids = np.full(max_chars, PADDING, np.int32)
    data = token.encode("utf-8", "ignore")[: max_chars - 2]
    ids[0] = BEGIN_WORD
    ids[1 : 1 + len(data)] = np.frombuffer(data, np.uint8)
    ids[1 + len(data)] = END_WORD
    return ids + 1


def boundary_char_ids(max_chars: int) -> np.ndarray:
    """(FIRST_WORD_ROW, max_chars) int32, +1-shifted: the rows before the words, NO_TOKEN_ROW all
    zeros (padding), BEGIN_SENTENCE_ROW <S>, END_SENTENCE_ROW </S>."""
    rows = np.full((FIRST_WORD_ROW, max_chars), PADDING + 1, np.int32)
    rows[NO_TOKEN_ROW] = 0
    for row, char in ((BEGIN_SENTENCE_ROW, BEGIN_SENTENCE), (END_SENTENCE_ROW, END_SENTENCE)):
        rows[row, :3] = (BEGIN_WORD + 1, char + 1, END_WORD + 1)
    return rows


def word_batch(sentences: list[list[str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Token lists -> the distinct words of the batch and where each sits.

    Returns `(words, positions, lengths)`:
      words:     each distinct token once, in order of first appearance
      positions: (batch, max_tokens + 2) int32 rows of the table [padding, <S>, </S>, *words]
                 (the *_ROW constants): <S>, the tokens, </S>, then NO_TOKEN_ROW
      lengths:   (batch,) int32, tokens + 2
    Context-free work (the char CNN) then runs once per distinct word, not once per position.
    """
    rows: dict[str, int] = {}
    longest = max((len(s) for s in sentences), default=0)
    positions = np.full((len(sentences), longest + 2), NO_TOKEN_ROW, np.int32)
    for row, tokens in enumerate(sentences):
        positions[row, 0] = BEGIN_SENTENCE_ROW
        for col, token in enumerate(tokens, start=1):
            positions[row, col] = rows.setdefault(token, len(rows) + FIRST_WORD_ROW)
        positions[row, len(tokens) + 1] = END_SENTENCE_ROW
    lengths = np.array([len(s) + 2 for s in sentences], np.int32)
    return list(rows), positions, lengths


def tokens_only(positions: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`word_batch`'s positions and lengths without <S> and </S>: (batch, max_tokens) and (batch,)
    tokens per sentence. Column 0 holds <S>; the last column holds the longest sentence's </S>
    (shorter sentences' </S> lies past their new length)."""
    return positions[:, 1:-1], lengths - 2


def char_table(words: list[str], max_chars: int) -> np.ndarray:
    """`word_batch`'s words -> (FIRST_WORD_ROW + len(words), max_chars) int32 char ids of its table
    [no token, <S>, </S>, *words]."""
    return np.concatenate([boundary_char_ids(max_chars)] + [word_char_ids(w, max_chars)[None] for w in words])


def word_table(sentences: list[list[str]], max_chars: int, widest_filter: int) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (word_chars, positions): `word_batch`'s table as char ids, and its positions.

      word_chars: (n_rows, n_chars) int32, +1-shifted ids of [no token, <S>, </S>, *distinct words]
      positions:  (batch, T) int32 rows of word_chars, as `word_batch`
    n_chars is the fewest columns that give the char CNN's output on max_chars columns exactly: the
    longest word's ids plus widest_filter columns of padding. Every window past a word's end holds
    only padding and has the same value, so one such window, and all that touch the word, are enough
    for the max over positions.
    """
    words, positions, _ = word_batch(sentences)
    table = char_table(words, max_chars)
    used = np.flatnonzero(((table != 0) & (table != PADDING + 1)).any(axis=0))
    n_chars = min(max_chars, int(used[-1]) + 1 + widest_filter)
    return table[:, :n_chars], positions


def char_ids(sentences: list[list[str]], max_chars: int) -> np.ndarray:
    """Token lists -> (batch, max_tokens + 2, max_chars) int32, the +1-shifted ids.

    Each sentence is wrapped in <S> ... </S>; positions past a sentence's end are all zeros.
    """
    words, positions, _ = word_batch(sentences)
    return char_table(words, max_chars)[positions]
