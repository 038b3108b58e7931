"""Classification metrics from true labels, predicted labels and scores, and a head's metrics on labelled vectors.

Two labels: precision, recall and F1 of the positive label, ROC AUC of P(positive).
More labels: macro averages over labels (AUC one-vs-rest on each label's probability).
"""

from __future__ import annotations

import numpy as np

from elmobatch.embedding.vectors import LabelError
from elmobatch.training.head import Head


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(k, k) int: rows are true labels, columns predicted labels."""
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return m


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); None without both classes."""
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(np.asarray(score, np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (false positive rates, true positive rates), from (0, 0) to (1, 1), one point per distinct score."""
    positive = np.asarray(positive, bool)
    order = np.argsort(-np.asarray(score, np.float64), kind="mergesort")
    s, p = np.asarray(score)[order], positive[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
    tp, fp = np.cumsum(p)[last], np.cumsum(~p)[last]
    tpr = np.r_[0.0, tp / max(positive.sum(), 1)]
    fpr = np.r_[0.0, fp / max((~positive).sum(), 1)]
    return fpr, tpr


def precision_recall_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (recalls, precisions), one point per distinct score from the highest down, starting at
    recall 0 with the precision of the first point."""
    positive = np.asarray(positive, bool)
    order = np.argsort(-np.asarray(score, np.float64), kind="mergesort")
    s, p = np.asarray(score)[order], positive[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
    tp, predicted = np.cumsum(p)[last], last + 1
    precision = tp / predicted
    recall = tp / max(positive.sum(), 1)
    return np.r_[0.0, recall], np.r_[precision[:1], precision]


def average_precision(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the precision-recall steps (sum of precision x recall gained); None without positives."""
    if not np.asarray(positive, bool).any():
        return None
    recall, precision = precision_recall_curve(positive, score)
    return float(np.sum(np.diff(recall) * precision[1:]))


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def classification_metrics(y_true, y_pred, proba: np.ndarray, labels: list[str]) -> dict:
    """Metrics as a JSON-ready dict.

    y_true, y_pred: label indices (n,); proba: (n, k) probabilities; labels: the k label names
    (for two labels, the second is the positive one).
    """
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    k = len(labels)
    m = confusion_matrix(y_true, y_pred, k)
    per_label = {}
    for c, name in enumerate(labels):
        tp, fp, fn = m[c, c], m[:, c].sum() - m[c, c], m[c, :].sum() - m[c, c]
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        per_label[name] = {"precision": precision, "recall": recall,
                           "f1": _ratio(2 * precision * recall, precision + recall),
                           "support": int(m[c, :].sum()),
                           "roc_auc": roc_auc(y_true == c, proba[:, c])}
    out: dict[str, object] = {"rows": int(len(y_true)), "accuracy": _ratio(np.trace(m), m.sum())}
    if k == 2:
        pos = per_label[labels[1]]
        out.update(positive_label=labels[1], precision=pos["precision"], recall=pos["recall"], f1=pos["f1"],
                   roc_auc=pos["roc_auc"])
    else:
        aucs = [v["roc_auc"] for v in per_label.values() if v["roc_auc"] is not None]
        out.update(average="macro", precision=float(np.mean([v["precision"] for v in per_label.values()])),
                   recall=float(np.mean([v["recall"] for v in per_label.values()])),
                   f1=float(np.mean([v["f1"] for v in per_label.values()])),
                   roc_auc=float(np.mean(aucs)) if aucs else None)
    out["confusion_matrix"] = {"labels": list(labels), "rows_true_columns_predicted": m.tolist()}
    out["per_label"] = per_label
    return out


def format_table(metrics: dict) -> str:
    """A plain-text table of the main figures and the confusion matrix."""
    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"

    scope = f" ({metrics['positive_label']})" if metrics.get("positive_label") else " (macro)"
    lines = [f"rows       {metrics['rows']}", f"accuracy   {fmt(metrics['accuracy'])}",
             f"precision  {fmt(metrics['precision'])}{scope}", f"recall     {fmt(metrics['recall'])}{scope}",
             f"f1         {fmt(metrics['f1'])}{scope}", f"roc_auc    {fmt(metrics['roc_auc'])}{scope}"]
    labels = metrics["confusion_matrix"]["labels"]
    matrix = metrics["confusion_matrix"]["rows_true_columns_predicted"]
    width = max(8, *(len(str(n)) + 2 for n in labels))
    lines.append("confusion (rows true, columns predicted):")
    lines.append(" " * width + "".join(f"{n:>{width}}" for n in labels))
    for name, row in zip(labels, matrix, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def head_metrics(head: Head, x: np.ndarray, labels: list[str], threshold: float | None = None, *,
                 where: str = "labels") -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics of `head` on vectors x (n, n_layers + 1, dim) with true label names.

    -> (metrics dict, y_true (n,) label indices, proba (n, k)). Unknown labels raise LabelError.
    """
    index = {n: i for i, n in enumerate(head.labels)}
    unknown = sorted({y for y in labels if y not in index})
    if unknown:
        raise LabelError(f"{where} has labels the head does not know: {', '.join(map(repr, unknown[:10]))} "
                         f"(head labels: {', '.join(head.labels)})")
    if not labels:
        raise LabelError(f"{where}: no labelled rows to measure")
    y_true = np.array([index[y] for y in labels], np.int64)
    proba = head.probabilities(x)
    y_pred, _ = head.decide(proba, threshold)
    return classification_metrics(y_true, y_pred, proba, head.labels), y_true, proba
