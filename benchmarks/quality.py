"""Spam-filter quality: elmobatch's model + head beside simple baselines, on the reference split and the everyday set.

    python benchmarks/quality.py [--model SPEC] [--head DIR] [--cache-dir DIR] [--extra-train FILE] [--json OUT]

Needs scikit-learn for the baselines (`pip install -e .[benchmark]`). Rows:

  majority class      always ham; its score is the training spam rate
  char TF-IDF + LR    character 2-5-grams (sublinear TF-IDF) + logistic regression (C=10), threshold 0.5
  word TF-IDF + SVM   word 1-2-grams (sublinear TF-IDF) + linear SVM (C=1); the label is the SVM's sign,
                      the score sigmoid(a * decision + b) with (a, b) Platt-fitted on 5-fold out-of-fold
                      decision values of the training rows
  elmobatch           --model/--head (default: the bundled model and head), at the head's threshold

With --extra-train FILE (labelled like sms_spam.csv: v1 label, v2 text; repeatable) each baseline
is also trained on the 4,457 rows plus those rows, as `elmobatch train --extra-train` trains a head.

Columns: on the reference split (train on the first 4,457 rows of sms_spam.csv, measure on the last
1,115) accuracy, spam F1, ROC AUC and Brier score of P(spam); on benchmarks/everyday.csv (written
for this benchmark, see everyday.md) accuracy and confident mistakes (ham scored above 0.99, spam
below 0.01). Vectors come through elmobatch's embedding cache (--cache-dir), so reruns are fast.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elmobatch.caching import EmbeddingCache
from elmobatch.training.metrics import roc_auc
from elmobatch.scoring.score import load_head_and_model
from elmobatch.reading import ReadOptions
from elmobatch.embedding.vectors import labelled_vectors
from elmobatch.training.calibration import fit_platt
from elmobatch.training.split import parse_split

ROOT = Path(__file__).resolve().parents[1]
SMS = ROOT.parent / "shared" / "data" / "sms_spam.csv"
EVERYDAY = ROOT / "benchmarks" / "everyday.csv"
REFERENCE_SPLIT = "last:0.2"
CONFIDENT = 0.99


@dataclass
class Dataset:
    """A labelled file: texts, is_spam (n,) bool, kinds (everyday set) and, once embedded, x (n, L, dim)."""

    texts: list[str]
    is_spam: np.ndarray
    kinds: list[str]
    x: np.ndarray

    def subset(self, rows: np.ndarray) -> Dataset:
        return Dataset([self.texts[i] for i in rows], self.is_spam[rows], [self.kinds[i] for i in rows], self.x[rows])

    def plus(self, *others: Dataset) -> Dataset:
        parts = (self, *others)
        return Dataset([t for d in parts for t in d.texts], np.concatenate([d.is_spam for d in parts]),
                       [k for d in parts for k in d.kinds], np.concatenate([d.x for d in parts]))


def load_dataset(path: Path, encoder, cache, label_column: str, text_column: str) -> Dataset:
    """Read `path` with elmobatch's reader and embed it through the cache (one pass, then cache hits)."""
    data = labelled_vectors(path, encoder, cache, label_column=label_column, read=ReadOptions(text_column=text_column))
    kinds = data.rows["kind"].astype(str).tolist() if "kind" in data.rows else [""] * len(data.labels)
    return Dataset(data.texts, np.array([v == "spam" for v in data.labels]), kinds, data.x)


def reference_split(sms: Dataset) -> tuple[Dataset, Dataset]:
    train, test = parse_split(REFERENCE_SPLIT).indices(len(sms.texts))
    return sms.subset(train), sms.subset(test)


# ---- systems: fit on the training rows -> (is_spam prediction, P(spam)) for any rows -------------------


def majority(train: Dataset):
    rate = float(train.is_spam.mean())
    return lambda data: (np.zeros(len(data.texts), bool), np.full(len(data.texts), rate))


def char_tfidf_lr(train: Dataset):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=(2, 5), sublinear_tf=True),
                          LogisticRegression(C=10, max_iter=2000))
    model.fit(train.texts, train.is_spam)

    def apply(data):
        p = model.predict_proba(data.texts)[:, 1]
        return p >= 0.5, p
    return apply


def word_tfidf_svm(train: Dataset):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    def svm():
        return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LinearSVC(C=1.0))

    out_of_fold = cross_val_predict(svm(), train.texts, train.is_spam, cv=5, method="decision_function")
    slope, intercept = fit_platt(out_of_fold, train.is_spam)
    model = svm().fit(train.texts, train.is_spam)

    def apply(data):
        d = model.decision_function(data.texts)
        return d > 0, 1.0 / (1.0 + np.exp(-(slope * d + intercept)))
    return apply


def elmobatch_head(head):
    def apply(data):
        index, score = head.predict(data.x)
        return index == 1, score.astype(np.float64)
    return apply


# ---- measuring --------------------------------------------------------------------------------------


def reference_metrics(is_spam: np.ndarray, predicted: np.ndarray, score: np.ndarray) -> dict:
    tp = int((predicted & is_spam).sum())
    f1 = 2 * tp / max(1, predicted.sum() + is_spam.sum())
    return {"accuracy": float((predicted == is_spam).mean()), "spam_f1": float(f1),
            "roc_auc": roc_auc(is_spam, score), "brier": float(np.mean((score - is_spam) ** 2))}


def everyday_metrics(data: Dataset, predicted: np.ndarray, score: np.ndarray) -> dict:
    """Accuracy overall and per kind group, and the confident mistakes."""
    right = predicted == data.is_spam
    kinds = np.array(data.kinds)
    groups = {"notification ham": kinds == "notification", "personal/work ham": np.isin(kinds, ["personal", "work"]),
              "spam": data.is_spam}
    confident = np.flatnonzero((~data.is_spam & (score > CONFIDENT)) | (data.is_spam & (score < 1 - CONFIDENT)))
    return {"accuracy": float(right.mean()),
            "accuracy_by_group": {name: float(right[rows].mean()) for name, rows in groups.items()},
            "confident_mistakes": int(len(confident)),
            "confident_mistake_texts": [(data.texts[i], round(float(score[i]), 4)) for i in confident]}


def measure(name: str, system, test: Dataset, everyday: Dataset) -> dict:
    return {"system": name, "reference": reference_metrics(test.is_spam, *system(test)),
            "everyday": everyday_metrics(everyday, *system(everyday))}


def format_rows(rows: list[dict]) -> str:
    """The side-by-side table: reference-split columns, then everyday-set columns."""
    header = (f"{'system':<34} {'acc':>7} {'spam F1':>8} {'ROC AUC':>8} {'Brier':>7} | "
              f"{'ev acc':>7} {'notif':>6} {'pers':>6} {'spam':>6} {'conf. mistakes':>14}")
    lines = [f"{'':<34} {'reference split (1,115 test rows)':^33} | {'everyday set':^44}", header,
             "-" * len(header)]
    for r in rows:
        ref, ev = r["reference"], r["everyday"]
        auc = "   -" if ref["roc_auc"] is None else f"{ref['roc_auc']:.4f}"
        by = ev["accuracy_by_group"]
        lines.append(f"{r['system']:<34} {ref['accuracy']:>7.4f} {ref['spam_f1']:>8.3f} {auc:>8} "
                     f"{ref['brier']:>7.4f} | "
                     f"{ev['accuracy']:>7.3f} {by['notification ham']:>6.3f} {by['personal/work ham']:>6.3f} "
                     f"{by['spam']:>6.3f} {ev['confident_mistakes']:>14d}")
    return "\n".join(lines)


def machine() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()}, {_cpu_count()} CPUs)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({_cpu_count()} CPUs)"


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def command_line() -> str:
    return "python " + shlex.join([str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute()
                                   and ROOT in Path(sys.argv[0]).parents else sys.argv[0], *sys.argv[1:]])


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="Encoder spec (default: the model the head names).")
    parser.add_argument("--head", help="Head directory (default: the bundled head).")
    parser.add_argument("--cache-dir", help="Embedding cache (default: $ELMOBATCH_CACHE, else ~/.cache/elmobatch).")
    parser.add_argument("--data", default=str(SMS), help="The SMS Spam Collection CSV (v1 label, v2 text).")
    parser.add_argument("--everyday", default=str(EVERYDAY), help="The everyday set CSV (label, text, kind).")
    parser.add_argument("--extra-train", action="append", default=[],
                        help="More labelled training rows (v1 label, v2 text), never held out. Repeatable.")
    parser.add_argument("--json", help="Also write the results as JSON to this file.")


def load_all(args):
    """-> (head, encoder, sms, everyday, extra Dataset or None), embedded through the cache."""
    head, encoder = load_head_and_model(args.head, args.model)
    cache = EmbeddingCache(args.cache_dir)
    sms = load_dataset(Path(args.data), encoder, cache, "v1", "v2")
    everyday = load_dataset(Path(args.everyday), encoder, cache, "label", "text")
    extras = [load_dataset(Path(path), encoder, cache, "v1", "v2") for path in args.extra_train]
    print(f"vectors: {encoder.path} (dim {encoder.dim}); cache {cache.directory}: "
          f"{cache.hits} hits, {cache.computed} computed", file=sys.stderr)
    return head, encoder, sms, everyday, (extras[0].plus(*extras[1:]) if extras else None)


def write_json(path: str | None, result: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_options(parser)
    args = parser.parse_args()
    head, encoder, sms, everyday, extra = load_all(args)
    train, test = reference_split(sms)
    head_name = f"elmobatch {Path(args.head).name if args.head else 'bundled head'} (t={head.threshold:.3f})"
    systems = [("majority class (ham)", majority(train)), ("char 2-5 TF-IDF + LR", char_tfidf_lr(train)),
               ("word TF-IDF + linear SVM", word_tfidf_svm(train))]
    if extra is not None:
        systems += [("char 2-5 TF-IDF + LR, + extra", char_tfidf_lr(train.plus(extra))),
                    ("word TF-IDF + SVM, + extra", word_tfidf_svm(train.plus(extra)))]
    systems.append((head_name, elmobatch_head(head)))
    rows = [measure(name, fit, test, everyday) for name, fit in systems]
    result = {"command": command_line(), "machine": machine(), "model": str(encoder.path),
              "model_fingerprint": encoder.fingerprint, "head_fingerprint": head.fingerprint,
              "head": args.head or "bundled", "everyday": str(args.everyday), "extra_train": args.extra_train,
              "everyday_rows": len(everyday.texts),
              "test_rows": len(test.texts), "rows": rows}
    print(f"command: {result['command']}\nmachine: {result['machine']}\nmodel:   {result['model']}")
    print(format_rows(rows))
    mistakes = rows[-1]["everyday"]["confident_mistake_texts"]
    if mistakes:
        print(f"\n{head_name}: confident mistakes on the everyday set:")
        for text, score in mistakes:
            print(f"  {score:.4f}  {text}")
    print(json.dumps(result))
    write_json(args.json, result)


if __name__ == "__main__":
    main()
