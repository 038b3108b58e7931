"""Write the hand-written messages of today (data/modern/ham.csv, spam.csv) as one labelled training file.

    python scripts/modern_sms.py build/modern_sms.csv

Writes build/modern_sms.csv and, for pretraining, its message text alone as build/modern_sms.txt
(one message per line, with modern_sms.txt.source.json naming the source and license).
The CSV has columns v1 (label) and v2 (text), the layout of sms_spam.csv, so that
`elmobatch train sms_spam.csv --label-column v1 --extra-train build/modern_sms.csv` reads both the
same way. A message too close to one in an evaluation set (benchmarks/everyday.csv,
benchmarks/everyday_blind.csv) is left out: Jaccard similarity of their character 5-gram sets of
at least SIMILAR. Those sets were written apart from this one; this keeps any accidental near copy
from training the head the sets measure, and so are the kinds in LEFT_OUT_KINDS. Prints what was
left out and the counts.
"""

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "data" / "modern" / "ham.csv", ROOT / "data" / "modern" / "spam.csv"]
EVALUATION = [ROOT / "benchmarks" / "everyday.csv", ROOT / "benchmarks" / "everyday_blind.csv"]
SIMILAR = 0.5
# Wrong-number and romance openers ("Hi, is this Sarah?") are scams only by intent: their text is that
# of an ordinary message, so as training rows they would teach that ordinary messages are spam.
LEFT_OUT_KINDS = {"romance_or_wrong_number"}


def read_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def grams(text: str, n: int = 5) -> frozenset:
    text = " ".join(text.lower().split())
    return frozenset(text[i:i + n] for i in range(max(1, len(text) - n + 1)))


def nearest(text: str, evaluation: list[tuple[str, frozenset]]) -> tuple[float, str]:
    """(similarity, text) of the evaluation message closest to `text`."""
    mine = grams(text)
    return max(((len(mine & theirs) / len(mine | theirs), other) for other, theirs in evaluation),
               default=(0.0, ""))


def main(out_path: str) -> None:
    evaluation = [(row["text"], grams(row["text"])) for path in EVALUATION if path.exists()
                  for row in read_rows(path)]
    kept, left_out = [], 0
    for path in SOURCES:
        for row in read_rows(path):
            if row["kind"] in LEFT_OUT_KINDS:
                continue
            similarity, other = nearest(row["text"], evaluation)
            if similarity >= SIMILAR:
                left_out += 1
                print(f"left out {row['id']} ({similarity:.2f} like {other!r}): {row['text']!r}")
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
