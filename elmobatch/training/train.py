"""`elmobatch train`: a labelled file -> a head directory with its held-out metrics.

    head = train_file("sms_spam.csv", label_column="v1", out="head/", encoder=enc, cache=cache,
                      split=parse_split("last:0.2"))

The file is embedded through the cache, split by position (`last:F`: the last F of the rows are
held out, the reference split) or at random (`random:F:SEED`), a head is fitted on the training
rows (fit.py), and its metrics on the held-out rows go into head.json.

`extra_train` files (read with the same columns and options) add rows to the training side only:
they are never held out, so the held-out rows and their metrics stay those of the split of `path`.
An extra file with the same bytes as `path` is refused, and extra rows whose text is that of a
held-out row are left out (counted in head.json), so no held-out message trains the head.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from elmobatch.files import file_sha256
from elmobatch.reading import ReadOptions
from elmobatch.embedding.vectors import labelled_vectors
from elmobatch.training.fit import FitSettings, TrainingError, fit_head
from elmobatch.training.head import Head, save_head
from elmobatch.training.metrics import head_metrics
from elmobatch.training.split import Split, parse_split  # noqa: F401 (parse_split: for callers)

logger = logging.getLogger(__name__)


def model_record(spec: str) -> str:
    """How head.json names the model: "default" for the bundled one (wherever it is installed), an
    existing directory as an absolute path, else the spec as given."""
    from elmobatch.encoding.specs import bundled_model_dir

    if spec == "default" or not Path(spec).exists():
        return spec
    path = Path(spec).resolve()
    return "default" if path == bundled_model_dir() else str(path)


def rows_fingerprint(row_numbers, texts, labels) -> str:
    """sha256 over (row number, text, label) of the rows a head was fitted on."""
    digest = hashlib.sha256()
    for r, t, y in zip(row_numbers, texts, labels, strict=True):
        digest.update(f"{int(r)}\x1f{t}\x1f{y}\x1e".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def read_labelled(path, encoder, cache, label_column: str, read: ReadOptions | None, log, progress=None):
    """Embed a labelled file and log its counts."""
    data = labelled_vectors(path, encoder, cache, label_column=label_column, read=read, progress=progress)
    log(f"{path}: {data.rows_read} rows read, {len(data.labels)} with text and label, {len(data.rejects)} rejected")
    return data


def extra_record(path, digest: str, data, held_out_copies: int) -> dict:
    """How head.json names an extra training file: path, digest, text column, counts and labels."""
    return {"file": str(Path(path)), "file_sha256": digest, "text_column": data.text_column,
            "rows_read": data.rows_read, "rows_rejected": int(len(data.rejects)), "count": len(data.labels),
            "held_out_copies_left_out": held_out_copies,
            "label_counts": label_counts(data.labels),
            "fingerprint": rows_fingerprint(data.row_numbers, data.texts, data.labels)}


def label_counts(labels: list[str]) -> dict[str, int]:
    """{label: rows} in label order."""
    return {k: int(v) for k, v in zip(*np.unique(np.asarray(labels), return_counts=True), strict=True)}


def file_digests(path, extra_train) -> list[str]:
    """sha256 of INPUT, then of each --extra-train file (each file hashed once). An extra file that is
    INPUT itself would train on INPUT's held-out rows: refused."""
    digests = [file_sha256(p) for p in (path, *extra_train)]
    for extra, digest in zip(extra_train, digests[1:], strict=True):
        if digest == digests[0]:
            raise TrainingError(f"--extra-train {extra}: the same bytes as INPUT {path}; its rows would train "
                                "the head and be held out to measure it")
    return digests


def without_texts(data, texts: set[str]):
    """`data` without the rows whose text is in `texts` -> (data, rows left out)."""
    keep = np.array([t not in texts for t in data.texts], bool)
    if keep.all():
        return data, 0
    rows = np.flatnonzero(keep)
    kept = replace(data, x=data.x[rows], labels=[data.labels[i] for i in rows],
                   texts=[data.texts[i] for i in rows], rows=data.rows.iloc[rows].reset_index(drop=True),
                   row_numbers=data.row_numbers[rows])
    return kept, int((~keep).sum())


def train_file(path, *, label_column: str, out, encoder, cache, model_spec: str, split: Split,
               read: ReadOptions | None = None, positive: str | None = None, settings: FitSettings | None = None,
               extra_train: tuple = (), log=None, progress=None) -> Head:
    """Embed `path` (read as `read` says), split, fit on its training rows and all rows of each
    `extra_train` file, measure on the held-out rows, and save the head in `out`. Messages go to
    `log` (default: this module's logger, INFO); `progress` (a Progress) follows the embedding."""
    settings = settings or FitSettings()
    log = log or logger.info
    digests = file_digests(path, extra_train)
    data = read_labelled(path, encoder, cache, label_column, read, log, progress)
    n = len(data.labels)
    train, test = split.indices(n)
    if len(train) == 0:
        raise TrainingError(f"{path}: no training rows (of {n} usable rows, split {split})")
    held_out_texts = {data.texts[i] for i in test}
    extras, copies = [], []
    for extra_path in extra_train:
        extra, left_out = without_texts(read_labelled(extra_path, encoder, cache, label_column, read, log),
                                        held_out_texts)
        if left_out:
            log(f"{extra_path}: {left_out} rows left out: their text is that of a held-out row of {path}")
        extras.append(extra)
        copies.append(left_out)
    train_labels = [data.labels[i] for i in train]
    x_fit = np.concatenate([data.x[train], *(e.x for e in extras)])
    fit_labels = train_labels + [y for e in extras for y in e.labels]
    head, _ = fit_head(x_fit, fit_labels, positive=positive, settings=settings,
                       model_meta={"fingerprint": encoder.fingerprint, "spec": model_spec, "dim": encoder.dim,
                                   "layers": encoder.n_layers + 1, "tokenizer": encoder.tokenizer}, log=log)
    row_numbers = data.row_numbers
    head.meta["data"] = {
        "file": str(Path(path)), "file_sha256": digests[0], "label_column": label_column,
        "text_column": data.text_column, "split": str(split), "rows_read": data.rows_read,
        "rows_rejected": int(len(data.rejects)),
        "train_rows": {"count": int(len(train)), "first": int(row_numbers[train].min()),
                       "last": int(row_numbers[train].max())},
        "test_rows": ({"count": int(len(test)), "first": int(row_numbers[test].min()),
                       "last": int(row_numbers[test].max())} if len(test) else {"count": 0}),
        "train_fingerprint": rows_fingerprint(row_numbers[train], [data.texts[i] for i in train], train_labels),
        "label_counts": label_counts(train_labels),
    }
    if extras:
        head.meta["data"]["extra_train"] = [extra_record(*record) for record in
                                            zip(extra_train, digests[1:], extras, copies, strict=True)]
    test_labels = [data.labels[i] for i in test]
    unseen = sorted(set(test_labels) - set(head.labels))
    if unseen:
        log(f"note: held-out rows with labels never seen in training are left out of the metrics: {unseen}")
        test = np.array([i for i, y in zip(test, test_labels, strict=True) if y in head.labels], np.int64)
        test_labels = [data.labels[i] for i in test]
    head.meta["metrics"] = head_metrics(head, data.x[test], test_labels)[0] if len(test) else None
    save_head(head, out)
    return head
