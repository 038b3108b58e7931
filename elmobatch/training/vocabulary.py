"""The word vocabulary of a language model: the softmax's classes, built from a corpus.

`vocab.txt` holds one token per line, in the official bilm-tf layout: <S>, </S> and <UNK>
first, then the corpus tokens by falling count (ties alphabetically).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

BOS, EOS, UNK = "<S>", "</S>", "<UNK>"
SPECIAL = (BOS, EOS, UNK)


class Vocabulary:
    def __init__(self, tokens: list[str]):
        if list(tokens[:3]) != list(SPECIAL):
            raise ValueError(f"a vocabulary starts with {', '.join(SPECIAL)}; got {tokens[:3]}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary lists each token once")
        self.tokens = list(tokens)
        self._index = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def ids(self, sentence: list[str]) -> np.ndarray:
        """Tokens -> (len + 2,) int32: <S>, the tokens (unknown ones as <UNK>), </S>."""
        unk = self._index[UNK]
        body = [self._index.get(t, unk) for t in sentence]
        return np.array([self._index[BOS], *body, self._index[EOS]], np.int32)

    def save(self, path: str | Path) -> None:
        Path(path).write_text("".join(t + "\n" for t in self.tokens), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            return cls(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"{path}: not a vocabulary file ({exc})") from exc


def build_vocabulary(sentences: list[list[str]], min_count: int = 1, max_size: int | None = None) -> Vocabulary:
    """Tokens seen at least `min_count` times, most frequent first, at most `max_size` in all."""
    counts = Counter(t for s in sentences for t in s if t not in SPECIAL)
    ranked = sorted((t for t, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
    if max_size is not None:
        ranked = ranked[: max(0, max_size - len(SPECIAL))]
    return Vocabulary([*SPECIAL, *ranked])
