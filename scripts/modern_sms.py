"""Write the hand-written messages of today (data/modern/ham.csv, spam.csv) as one labelled training file.

    python scripts/modern_sms.py build/modern_sms.csv

Writes build/modern_sms.csv and, for pretraining, its message text alone as build/modern_sms.txt
(one message per line, with modern_sms.txt.source.json naming the source and license).
The CSV has columns v1 (label) and v2 (text), the layout of sms_spam.csv, so that
`elmobatch train sms_spam.csv --label-column v1 --extra-train build/modern_sms.csv` reads both the
same way.

A message too close to one in an evaluation set (benchmarks/everyday.csv,
benchmarks/everyday_blind.csv) is left out, so that no near copy trains the head those sets
measure: writers working apart still write alike. Too close is any of
- character 5-gram sets with Jaccard similarity >= CHAR_SIMILAR (a reworded copy),
- word sets with Jaccard similarity >= WORD_SIMILAR (the same words in another order or spelling),
- a shared number of 5 or more digits (the same made-up code, card or order number).
The kinds in LEFT_OUT_KINDS are left out too. Prints what was left out and the counts.
"""

import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "data" / "modern" / "ham.csv", ROOT / "data" / "modern" / "spam.csv"]
EVALUATION = [ROOT / "benchmarks" / "everyday.csv", ROOT / "benchmarks" / "everyday_blind.csv"]
CHAR_SIMILAR = 0.35
WORD_SIMILAR = 0.5
# Wrong-number and romance openers ("Hi, is this Sarah?") are scams only by intent: their text is that
# of an ordinary message, so as training rows they would teach that ordinary messages are spam.
LEFT_OUT_KINDS = {"romance_or_wrong_number"}


def read_rows(path: Path) -> list[dict]:
    """A CSV file's rows as dicts (raises FileNotFoundError: the filter needs every evaluation set)."""
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def char_grams(text: str, n: int = 5) -> frozenset:
    """The set of lower-cased character n-grams of `text`, runs of white space as one space."""
    text = " ".join(text.lower().split())
    return frozenset(text[i:i + n] for i in range(max(1, len(text) - n + 1)))


def words(text: str) -> frozenset:
    return frozenset(re.findall(r"[a-z]+|\d+", text.lower()))


def long_numbers(text: str) -> frozenset:
    """Numbers of 5 or more digits, spaces and dashes inside them removed ("118 402" -> "118402")."""
    return frozenset(n for n in (re.sub(r"[ -]", "", m) for m in re.findall(r"\d[\d -]*\d", text)) if len(n) >= 5)


@dataclass(frozen=True)
class Fingerprint:
    """What closeness is judged on: a message's character 5-grams, words and long numbers."""

    text: str
    chars: frozenset
    words: frozenset
    numbers: frozenset

    @classmethod
    def of(cls, text: str) -> "Fingerprint":
        return cls(text, char_grams(text), words(text), long_numbers(text))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def too_close(mine: Fingerprint, evaluation: list[Fingerprint]) -> str | None:
    """Why `mine` counts as a near copy of an evaluation message (naming it), or None."""
    for other in evaluation:
        if (chars := jaccard(mine.chars, other.chars)) >= CHAR_SIMILAR:
            return f"characters {chars:.2f} like {other.text!r}"
        if (same := jaccard(mine.words, other.words)) >= WORD_SIMILAR:
            return f"words {same:.2f} like {other.text!r}"
        if shared := mine.numbers & other.numbers:
            return f"number {min(shared)} as in {other.text!r}"
    return None


def main(out_path: str) -> None:
    evaluation = [Fingerprint.of(row["text"]) for path in EVALUATION for row in read_rows(path)]
    kept, left_out = [], 0
    for path in SOURCES:
        for row in read_rows(path):
            if row["kind"] in LEFT_OUT_KINDS:
                continue
            if reason := too_close(Fingerprint.of(row["text"]), evaluation):
                left_out += 1
                print(f"left out {row['id']} ({reason}): {row['text']!r}")
                continue
            kept.append({"v1": row["label"], "v2": row["text"], "kind": row["kind"], "id": row["id"]})
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["v1", "v2", "kind", "id"])
        writer.writeheader()
        writer.writerows(kept)
    write_text_corpus(Path(out_path).with_suffix(".txt"), [r["v2"] for r in kept])
    labels = {label: sum(r["v1"] == label for r in kept) for label in ("ham", "spam")}
    print(f"{out_path}: {len(kept)} messages ({labels['ham']} ham, {labels['spam']} spam); "
          f"{left_out} left out as near copies of {len(evaluation)} evaluation messages")


def write_text_corpus(path: Path, texts: list[str]) -> None:
    """The messages alone, one per line, and the source note that `elmobatch pretrain` copies into model.json."""
    path.write_text("".join(" ".join(t.split()) + "\n" for t in texts), encoding="utf-8")
    source = {"source": "data/modern/ham.csv and spam.csv: SMS-style messages of today written by hand for "
                        "elmobatch (message text only; near copies of the evaluation sets left out)",
              "license": "Apache-2.0 (this project)"}
    path.with_name(path.name + ".source.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
