"""The evaluation report: metrics.json, five PNG pictures and report.html (the same PNGs embedded).

    write_report(out_dir, metrics, y_true, proba, labels, layer_weights, title=..., about=..., misclassified=...)

Pictures: ROC curve, precision-recall curve, score histogram per true label, confusion matrix,
learned layer weights. The page also names the head and model (fingerprints) and the date, and
lists the misclassified rows; every text in it is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from elmobatch.training.metrics import average_precision, format_table, precision_recall_curve, roc_auc, roc_curve

PICTURES = ("roc_curve.png", "precision_recall.png", "score_histogram.png", "confusion_matrix.png",
            "layer_weights.png")
MAX_MISCLASSIFIED = 500  # rows listed in report.html; the count says how many there were
MAX_TEXT_CHARS = 300  # of each listed message


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_roc(path: Path, y_true: np.ndarray, proba: np.ndarray, labels: list[str]) -> None:
    """One curve for two labels (the positive one); one per label (one-vs-rest) otherwise."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    classes = [1] if len(labels) == 2 else range(len(labels))
    for c in classes:
        if 0 < (y_true == c).sum() < len(y_true):
            fpr, tpr = roc_curve(y_true == c, proba[:, c])
            ax.plot(fpr, tpr, label=f"{labels[c]} (AUC {roc_auc(y_true == c, proba[:, c]):.4f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_precision_recall(path: Path, y_true: np.ndarray, proba: np.ndarray, labels: list[str]) -> None:
    """One curve for two labels (the positive one); one per label (one-vs-rest) otherwise."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    classes = [1] if len(labels) == 2 else range(len(labels))
    for c in classes:
        if (y_true == c).any():
            recall, precision = precision_recall_curve(y_true == c, proba[:, c])
            ax.step(recall, precision, where="post",
                    label=f"{labels[c]} (average precision {average_precision(y_true == c, proba[:, c]):.4f})")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_histogram(path: Path, y_true: np.ndarray, proba: np.ndarray, labels: list[str], threshold) -> None:
    """Score of the positive label (two labels) or of each row's true label (more), per true label."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    if len(labels) == 2:
        score, xlabel = proba[:, 1], f"score = P({labels[1]})"
    else:
        score, xlabel = proba[np.arange(len(y_true)), y_true], "probability of the true label"
    bins = np.linspace(0, 1, 41)
    for c, name in enumerate(labels):
        if (y_true == c).any():
            ax.hist(score[y_true == c], bins=bins, alpha=0.6, label=f"true {name}")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel=xlabel, ylabel="rows", title="Score histogram per class", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(path: Path, matrix: np.ndarray, labels: list[str]) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 3, 1.2 * len(labels) + 2.5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="black" if v < matrix.max() / 2 else "white")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true", title="Confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_layer_weights(path: Path, layer_weights: np.ndarray, gamma: float) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = ["0 (char CNN)"] + [f"{j} (LSTM {j})" for j in range(1, len(layer_weights))]
    ax.bar(names, layer_weights)
    ax.axhline(1 / len(layer_weights), color="grey", linestyle=":", label="equal weights")
    ax.set(ylabel="softmax weight s_j", title=f"Learned layer weights (gamma {gamma:.3f})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def about_html(about: dict) -> str:
    """The facts that say what was measured (head and model fingerprints, date), as a table."""
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(str(v))}</code></td></tr>"
                    for k, v in about.items())
    return f"<table class='about'>{cells}</table>"


def misclassified_html(rows) -> str:
    """The misclassified rows (a DataFrame: row_number, text, true, predicted, score) as a table,
    the first MAX_MISCLASSIFIED of them, each text cut to MAX_TEXT_CHARS; all escaped."""
    shown = rows.head(MAX_MISCLASSIFIED)
    head = f"<h2>Misclassified rows ({len(rows)}" + (f", the first {len(shown)} shown" if len(shown) < len(rows)
                                                     else "") + ")</h2>"
    if not len(rows):
        return head
    header = "<tr><th>row_number</th><th>true</th><th>predicted</th><th>score</th><th>text</th></tr>"
    body = "".join(
        f"<tr><td>{int(r.row_number)}</td><td>{html.escape(str(r.true))}</td><td>{html.escape(str(r.predicted))}"
        f"</td><td>{r.score:.4f}</td><td>{html.escape(_cut(str(r.text)))}</td></tr>" for r in shown.itertuples())
    return f"{head}<table class='misclassified'>{header}{body}</table>"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "…"


def write_report(out_dir: str | Path, metrics: dict, y_true: np.ndarray, proba: np.ndarray, labels: list[str],
                 layer_weights: np.ndarray, gamma: float, threshold: float | None, title: str,
                 about: dict | None = None, misclassified=None) -> Path:
    """Write metrics.json, the PNGs and report.html into out_dir; return the report.html path.
    about: facts shown first (head and model fingerprints, date); misclassified: see misclassified_html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    y_true = np.asarray(y_true, np.int64)
    matrix = np.asarray(metrics["confusion_matrix"]["rows_true_columns_predicted"])
    plot_roc(out / PICTURES[0], y_true, proba, labels)
    plot_precision_recall(out / PICTURES[1], y_true, proba, labels)
    plot_histogram(out / PICTURES[2], y_true, proba, labels, threshold)
    plot_confusion(out / PICTURES[3], matrix, labels)
    plot_layer_weights(out / PICTURES[4], np.asarray(layer_weights), gamma)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    images = "\n".join(
        f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode((out / name).read_bytes()).decode()}">'
        for name in PICTURES)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1>{about_html(about or {})}"
            f"<pre>{html.escape(format_table(metrics))}</pre>\n{images}\n"
            f"{misclassified_html(misclassified) if misclassified is not None else ''}\n</body></html>\n")
    (out / "report.html").write_text(page, encoding="utf-8")
    return out / "report.html"
