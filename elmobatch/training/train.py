"""`elmobatch train`: a labelled file -> a head directory with its held-out metrics.

    head = train_file("sms_spam.csv", label_column="v1", out="head/", encoder=enc, cache=cache,
                      split=parse_split("last:0.2"))

The file is embedded through the cache, split by position (`last:F`: the last F of the rows are
held out, the reference split) or at random (`random:F:SEED`), a head is fitted on the training
rows (fit.py), and its metrics on the held-out rows go into head.json.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elmobatch.scoring.metrics import classification_metrics
from elmobatch.scoring.vectors import labelled_vectors
from elmobatch.training.fit import FitSettings, TrainingError, fit_head
from elmobatch.training.head import Head, save_head


@dataclass(frozen=True)
class Split:
    """Which rows are held out: the last `fraction` by position, or a seeded random `fraction`."""

    kind: str
    fraction: float
    seed: int | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.fraction:g}" + (f":{self.seed}" if self.kind == "random" else "")

    def indices(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (train, test) positions in 0..n-1, each sorted. Train is floor((1 - fraction) * n) rows."""
        n_train = math.floor((1 - self.fraction) * n + 1e-9)
        order = np.arange(n) if self.kind == "last" else np.random.default_rng(self.seed).permutation(n)
        return np.sort(order[:n_train]), np.sort(order[n_train:])


def parse_split(spec: str) -> Split:
    """'last:0.2' or 'random:0.2:SEED' (the seed defaults to 0); a fraction of 0 holds nothing out."""
    parts = str(spec).split(":")
    usage = "expected last:FRACTION or random:FRACTION[:SEED] with 0 <= FRACTION < 1, e.g. last:0.2"
    if parts[0] not in ("last", "random") or len(parts) not in ((2,) if parts[0] == "last" else (2, 3)):
        raise TrainingError(f"--split {spec!r}: {usage}")
    try:
        fraction = float(parts[1])
        seed = int(parts[2]) if len(parts) == 3 else (0 if parts[0] == "random" else None)
    except ValueError:
        raise TrainingError(f"--split {spec!r}: {usage}") from None
    if not 0 <= fraction < 1:
        raise TrainingError(f"--split {spec!r}: {usage}")
    return Split(parts[0], fraction, seed)


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rows_fingerprint(row_numbers, texts, labels) -> str:
    """sha256 over (row number, text, label) of the rows a head was fitted on."""
    digest = hashlib.sha256()
    for r, t, y in zip(row_numbers, texts, labels):
        digest.update(f"{int(r)}\x1f{t}\x1f{y}\x1e".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def heldout_metrics(head: Head, x: np.ndarray, labels: list[str]) -> dict:
    """Metrics of `head` on vectors x with true label names (all of them known to the head)."""
    index = {n: i for i, n in enumerate(head.labels)}
    unknown = sorted({y for y in labels if y not in index})
    if unknown:
        raise TrainingError(f"labels the head does not know: {', '.join(map(repr, unknown[:10]))} "
                            f"(head labels: {', '.join(head.labels)})")
    y_true = np.array([index[y] for y in labels], np.int64)
    y_pred, _ = head.predict(x)
    return classification_metrics(y_true, y_pred, head.probabilities(x), head.labels)


def train_file(path, *, label_column: str, out, encoder, cache, model_spec: str, split: Split,
               text_column: str | None = None, positive: str | None = None, settings: FitSettings | None = None,
               log=print) -> Head:
    """Embed, split, fit, measure on the held-out rows, and save the head in `out`."""
    settings = settings or FitSettings()
    data = labelled_vectors(path, encoder, cache, label_column=label_column, text_column=text_column)
    n = len(data.labels)
    log(f"{path}: {data.rows_read} rows read, {n} with text and label, {len(data.rejects)} rejected")
    train, test = split.indices(n)
    if len(train) == 0:
        raise TrainingError(f"{path}: no training rows (of {n} usable rows, split {split})")
    train_labels = [data.labels[i] for i in train]
    head, _ = fit_head(data.x[train], train_labels, positive=positive, settings=settings,
                       model_meta={"fingerprint": encoder.fingerprint, "spec": model_spec, "dim": encoder.dim,
                                   "layers": encoder.n_layers + 1, "tokenizer": encoder.tokenizer}, log=log)
    row_numbers = data.rows["row_number"].to_numpy()
    head.meta["data"] = {
        "file": str(Path(path)), "file_sha256": file_sha256(path), "label_column": label_column,
        "text_column": data.text_column, "split": str(split), "rows_read": data.rows_read,
        "rows_rejected": int(len(data.rejects)),
        "train_rows": {"count": int(len(train)), "first": int(row_numbers[train].min()),
                       "last": int(row_numbers[train].max())},
        "test_rows": ({"count": int(len(test)), "first": int(row_numbers[test].min()),
                       "last": int(row_numbers[test].max())} if len(test) else {"count": 0}),
        "train_fingerprint": rows_fingerprint(row_numbers[train], [data.texts[i] for i in train], train_labels),
        "label_counts": {k: int(v) for k, v in zip(*np.unique(np.asarray(train_labels), return_counts=True))},
    }
    test_labels = [data.labels[i] for i in test]
    unseen = sorted(set(test_labels) - set(head.labels))
    if unseen:
        log(f"note: held-out rows with labels never seen in training are left out of the metrics: {unseen}")
        test = np.array([i for i, y in zip(test, test_labels) if y in head.labels], np.int64)
        test_labels = [data.labels[i] for i in test]
    head.meta["metrics"] = heldout_metrics(head, data.x[test], test_labels) if len(test) else None
    save_head(head, out)
    return head
