"""Raw message -> tokens -> character ids, as the official ELMo model reads them.

Two tokenizers, chosen by name and recorded in a model's `model.json` so that pretraining,
embedding and scoring agree:
  "whitespace": split on spaces, as the TF Hub module's `default` signature does.
  "punct":      also split punctuation off words ("Hi!!" -> "Hi", "!!"), closer to the tokenized
                news text the official model was trained on; URLs, e-mail addresses, numbers
                like 6-3 or 12.50, and inner apostrophes stay whole.
Both drop tokens made only of invisible characters (every format character, Unicode category Cf:
zero-width spaces and joiners, direction marks and isolates, soft hyphen, byte-order mark): a
message of nothing else has no tokens, like an empty one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from itertools import islice

import numpy as np

from elmobatch.settings import DEFAULT_MAX_TOKENS  # noqa: F401  (re-exported: callers import it from here)

TOKENIZERS = ("punct", "whitespace")
DEFAULT_TOKENIZER = "punct"
# DEFAULT_MAX_TOKENS (settings): a 20,000-character message of words has ~3,500 tokens; see exceeds_tokens

_PUNCT_TOKEN = re.compile(
    r"""
      (?:https?://|www\.)\S+[\w/]          # URLs
    | [\w.+-]+@[\w-]+(?:\.[\w-]+)+          # e-mail addresses
    | \w+(?:[.'’&:/,-]\w+)*                 # words, numbers, U.S, don't, 6-3, 12:30, 1,000
    | (\S)\1*                               # a run of one punctuation character: ! !! ... ££
    """,
    re.VERBOSE,
)

# Character ids of the official vocabulary, before the +1 shift.
BEGIN_SENTENCE, END_SENTENCE, BEGIN_WORD, END_WORD, PADDING = 256, 257, 258, 259, 260


def tokenize(text: str, tokenizer: str = DEFAULT_TOKENIZER) -> list[str]:
    """Split one message into tokens. An empty, all-space or all-invisible message has no tokens."""
    return list(_tokens(text, tokenizer))


def _tokens(text: str, tokenizer: str) -> Iterator[str]:
    return (t for t in _raw_tokens(text, tokenizer) if not is_blank(t))


def _raw_tokens(text: str, tokenizer: str) -> Iterator[str]:
    if tokenizer == "whitespace":
        return iter(text.split())
    if tokenizer == "punct":
        return (m.group(0) for m in _PUNCT_TOKEN.finditer(text))
    raise ValueError(f"unknown tokenizer {tokenizer!r}: expected one of {', '.join(TOKENIZERS)}")


def is_blank(text: str) -> bool:
    """Whether `text` shows nothing: only whitespace and invisible characters (or nothing)."""
    return all(c.isspace() or is_invisible(c) for c in text)


def is_invisible(char: str) -> bool:
    """A format character (Unicode category Cf), which shows nothing: zero-width spaces and joiners,
    direction marks, embeddings and isolates, soft hyphen, byte-order mark, ..."""
    return unicodedata.category(char) == "Cf"


def exceeds_tokens(text: str, tokenizer: str, limit: int) -> bool:
    """Whether `tokenize` gives more than `limit` tokens, counting no further than that.

    Tokens are what a message's encoding time and memory grow with: about 1.3 ms and 70 kB per
    token for the default model on one CPU core, so DEFAULT_MAX_TOKENS costs at most ~5 s.
    """
    if len(text) <= limit:  # every token holds a character at least
        return False
    return next(islice(_tokens(text, tokenizer), limit, None), None) is not None


def word_char_ids(token: str, max_chars: int) -> np.ndarray:
    """One token -> (max_chars,) int32, the +1-shifted ids: <w>, its UTF-8 bytes (cut to fit), </w>, padding."""
    ids = np.full(max_chars, PADDING, np.int32)
    data = token.encode("utf-8", "ignore")[: max_chars - 2]
    ids[0] = BEGIN_WORD
    ids[1 : 1 + len(data)] = np.frombuffer(data, np.uint8)
    ids[1 + len(data)] = END_WORD
    return ids + 1


def boundary_char_ids(max_chars: int) -> np.ndarray:
    """(3, max_chars) int32, +1-shifted: row 0 all zeros (no token, padding), row 1 <S>, row 2 </S>."""
    rows = np.full((3, max_chars), PADDING + 1, np.int32)
    rows[0] = 0
    for row, char in ((1, BEGIN_SENTENCE), (2, END_SENTENCE)):
        rows[row, :3] = (BEGIN_WORD + 1, char + 1, END_WORD + 1)
    return rows


def word_batch(sentences: list[list[str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Token lists -> the distinct words of the batch and where each sits.

    Returns `(words, positions, lengths)`:
      words:     each distinct token once, in order of first appearance
      positions: (batch, max_tokens + 2) int32 rows of [padding, <S>, </S>, *words]: <S>, the
                 tokens, </S>, then 0
      lengths:   (batch,) int32, tokens + 2
    Context-free work (the char CNN) then runs once per distinct word, not once per position.
    """
    rows: dict[str, int] = {}
    longest = max((len(s) for s in sentences), default=0)
    positions = np.zeros((len(sentences), longest + 2), np.int32)
    for row, tokens in enumerate(sentences):
        positions[row, 0] = 1
        for col, token in enumerate(tokens, start=1):
            positions[row, col] = rows.setdefault(token, len(rows) + 3)
        positions[row, len(tokens) + 1] = 2
    lengths = np.array([len(s) + 2 for s in sentences], np.int32)
    return list(rows), positions, lengths


def char_ids(sentences: list[list[str]], max_chars: int) -> np.ndarray:
    """Token lists -> (batch, max_tokens + 2, max_chars) int32, the +1-shifted ids.

    Each sentence is wrapped in <S> ... </S>; positions past a sentence's end are all zeros.
    """
    words, positions, _ = word_batch(sentences)
    table = [boundary_char_ids(max_chars)] + [word_char_ids(w, max_chars)[None] for w in words]
    return np.concatenate(table)[positions]
