"""Raw message -> tokens: the tokenizers a model names, and the checks that count tokens.

Two tokenizers, chosen by name and recorded in a model's `model.json` so that pretraining,
embedding and scoring agree:
  "whitespace": split on spaces, as the TF Hub module's `default` signature does.
  "punct":      also split punctuation off words ("Hi!!" -> "Hi", "!!"), closer to the tokenized
                news text the official model was trained on; URLs, e-mail addresses, numbers
                like 6-3 or 12.50, and inner apostrophes stay whole.
Both drop tokens made only of invisible characters (every format character, Unicode category Cf:
zero-width spaces and joiners, direction marks and isolates, soft hyphen, byte-order mark): a
message of nothing else has no tokens, like an empty one.

Plain Python, below every package: the readers count tokens (--max-tokens, empty messages) with
it, and `encoding.tokens` turns its tokens into the character ids the biLM reads.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from itertools import islice

from elmobatch.settings import DEFAULT_TOKENIZER

TOKENIZERS = ("punct", "whitespace")

_PUNCT_TOKEN = re.compile(
    r"""
      (?:https?://|www\.)\S+[\w/]          # URLs
    | [\w.+-]+@[\w-]+(?:\.[\w-]+)+          # e-mail addresses
    | \w+(?:[.'’&:/,-]\w+)*                 # words, numbers, U.S, don't, 6-3, 12:30, 1,000
    | (\S)\1*                               # a run of one punctuation character: ! !! ... ££
    """,
    re.VERBOSE,
)

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
