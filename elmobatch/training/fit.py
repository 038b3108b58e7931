"""Training a head (see head.py) on per-layer pooled vectors with Keras.

    head, summary = fit_head(x, labels, model_meta={"fingerprint": ..., "spec": ...})

x: (n, n_layers + 1, dim) float32; labels: n label names (strings). Class imbalance is handled
with balanced class weights (n / (k * count_c); class_weights "none": every row weighs 1), early
stopping watches the weighted loss on a stratified validation slice of the training rows, and
`seed` fixes every random choice, so the same data and settings give the same head.

Head kinds: "mlp" (layer mix -> Dense(256, relu) -> output) and "logistic" (layer mix -> output,
an L2 penalty on the output weights, its strength the best of L2_GRID by validation loss unless
given). `calibrate` ("platt" or "temperature", see calibration.py) is fitted on the validation
slice after training, before the decision threshold is chosen there.

With `members` > 1 the head is an ensemble: that many nets of the kind, alike but for their seeds
(settings.seed + i: initial weights, shuffling, dropout), trained on the same rows with the same
validation slice; the head averages their logits, and is calibrated as one. With validation_slices
"per-net", net i is early-stopped on its own slice (that of seed + i; net 0's is the shared one), so
the nets together train on (almost) every row: only rows in every net's slice train none, too few to
fit a calibration or the best-F1 threshold on, so an ensemble of per-net slices needs calibrate
"none" and a fixed threshold.
"""

from __future__ import annotations

import functools
import math

import elmobatch._tensorflow  # noqa: F401  (loads TensorFlow quietly before keras does)
import keras
import numpy as np

from elmobatch.errors import ElmobatchError
from elmobatch.settings import FitSettings
from elmobatch.settings import CALIBRATIONS, CLASS_WEIGHTINGS, HEAD_KINDS, VALIDATION_SLICES
from elmobatch.training.calibration import CalibrationError, fit_calibration
from elmobatch.training.head import Head, stack_members, weight_names

HIDDEN = 256
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
L2_WITHOUT_VALIDATION = 1e-3  # a logistic head's L2 strength when there are no validation rows to pick it


class TrainingError(ElmobatchError, ValueError):
    """Training data or settings a head cannot be trained from, with what was expected."""


def check_settings(settings: FitSettings) -> None:
    """TrainingError naming the first setting that cannot be used."""
    if settings.head_kind not in HEAD_KINDS:
        raise TrainingError(f"head kind {settings.head_kind!r}: expected one of {', '.join(HEAD_KINDS)}")
    if settings.calibrate not in CALIBRATIONS:
        raise TrainingError(f"calibration {settings.calibrate!r}: expected one of {', '.join(CALIBRATIONS)}")
    if settings.class_weights not in CLASS_WEIGHTINGS:
        raise TrainingError(f"class weights {settings.class_weights!r}: expected one of {', '.join(CLASS_WEIGHTINGS)}")
    if settings.l2 is not None and not settings.l2 >= 0:
        raise TrainingError(f"l2 {settings.l2!r}: expected a number >= 0")
    if not 0 <= settings.dropout < 1:
        raise TrainingError(f"dropout {settings.dropout!r}: expected a rate from 0 up to (not including) 1")
    if not 0 < settings.learning_rate < math.inf:
        raise TrainingError(f"learning rate {settings.learning_rate!r}: expected a finite number > 0")
    if settings.members < 1:
        raise TrainingError(f"members {settings.members!r}: expected a whole number >= 1")
    if settings.threshold is not None and not 0 < settings.threshold < 1:
        raise TrainingError(f"threshold {settings.threshold!r}: expected a probability between 0 and 1")
    if settings.validation_slices not in VALIDATION_SLICES:
        raise TrainingError(f"validation slices {settings.validation_slices!r}: expected one of "
                            f"{', '.join(VALIDATION_SLICES)}")
    if settings.validation_slices == "per-net" and settings.members > 1:
        few = "per-net validation slices hold (almost) no row out from every net"
        if settings.calibrate != "none":
            raise TrainingError(f"calibration {settings.calibrate!r}: {few}, so nothing to fit it on; expected none")
        if settings.threshold is None:
            raise TrainingError(f"{few}, so nothing to pick the best-F1 threshold on; expected a fixed threshold")
    if settings.calibrate != "none" and settings.validation_fraction <= 0:
        raise TrainingError(f"calibration {settings.calibrate!r} is fitted on the validation slice; "
                            f"validation_fraction must be > 0, got {settings.validation_fraction}")


def label_order(labels: list[str], positive: str | None = None) -> list[str]:
    """The head's label names: sorted; for two labels the positive one last.

    The positive label is `positive` if given, else the rarer label (the thing to detect, such
    as spam), the later name on a tie.
    """
    unique_names, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
    names = [str(n) for n in unique_names]
    if len(names) < 2:
        found = f"only {names[0]!r}" if names else "none"
        raise TrainingError(f"training data has one label value ({found}) among {len(labels)} rows; "
                            "a head needs at least two label values to learn to tell them apart")
    if positive is not None and positive not in names:
        raise TrainingError(f"positive label {positive!r} is not among the training labels: {', '.join(names)}")
    if len(names) > 2:
        if positive is not None:
            raise TrainingError(f"--positive-label applies to two labels; the data has {len(names)}: "
                                f"{', '.join(names)}")
        return names
    if positive is None:
        positive = names[0] if counts[0] < counts[1] else names[1]
    return [n for n in names if n != positive] + [positive]


def standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, L, d) -> mean, std of shape (L, d); std of constant features is 1 (no division by 0)."""
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std[std < 1e-6] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def validation_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified: about `fraction` of each class (at least one row of a class with >= 2 rows)."""
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        take = min(len(rows) - 1, max(1, int(round(fraction * len(rows))))) if fraction > 0 else 0
        picked.extend(rng.permutation(rows)[:take])
    val = np.sort(np.asarray(picked, dtype=np.int64))
    train = np.setdiff1d(np.arange(len(y)), val)
    return train, val


def member_slices(y: np.ndarray, settings: FitSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, validation rows) of each net: the slice of settings.seed for all ("shared"),
    or net i's of settings.seed + i ("per-net"; net 0's is the shared one)."""
    shared = validation_split(y, settings.validation_fraction, settings.seed)
    if settings.validation_slices == "shared":
        return [shared] * settings.members
    return [shared] + [validation_split(y, settings.validation_fraction, settings.seed + i)
                       for i in range(1, settings.members)]


def held_out_from_all(slices: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The rows in every net's validation slice: the only rows no net trained on."""
    return functools.reduce(np.intersect1d, [val for _, val in slices])


def best_f1_threshold(positive: np.ndarray, score: np.ndarray) -> float:
    """The decision threshold with the highest F1 of the positive label on (positive, score).

    Taken halfway between the last score called positive and the next one below it, so a
    threshold found on a small validation slice does not sit right on one row's score.
    """
    positive = np.asarray(positive, bool)
    if positive.sum() == 0 or positive.all():
        return 0.5
    order = np.argsort(-np.asarray(score, np.float64), kind="mergesort")
    s, p = np.asarray(score, np.float64)[order], positive[order]
    tp = np.cumsum(p)
    fp = np.cumsum(~p)
    f1 = 2 * tp / (2 * tp + fp + (p.sum() - tp))
    cut = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # only cut between distinct scores
    i = cut[np.argmax(f1[cut])]
    return float(s[i] if i == len(s) - 1 else (s[i] + s[i + 1]) / 2)


def class_weights(y: np.ndarray, k: int, weighting: str = "balanced") -> np.ndarray:
    """(k,) loss weight of each class: "balanced" n / (k * count_c), so each class weighs the same in
    all; "none" 1 for every class."""
    if weighting == "none":
        return np.ones(k, np.float32)
    counts = np.bincount(y, minlength=k).astype(np.float64)
    return (len(y) / (k * np.maximum(counts, 1))).astype(np.float32)


class ScalarMix(keras.layers.Layer):
    """ELMo's layer mix: gamma * sum_j softmax(s)_j x_j over axis 1, (n, L, d) -> (n, d)."""

    def build(self, input_shape):
        self.layer_logits = self.add_weight(shape=(input_shape[1],), initializer="zeros", name="layer_logits")
        self.gamma = self.add_weight(shape=(), initializer="ones", name="gamma")

    def call(self, x):
        return self.gamma * keras.ops.einsum("nld,l->nd", x, keras.ops.softmax(self.layer_logits))


def build_keras_model(n_layers: int, dim: int, n_out: int, settings: FitSettings,
                      l2: float | None = None) -> keras.Model:
    """The Keras twin of Head.probabilities before calibration (its inputs already standardized)."""
    inputs = keras.Input((n_layers, dim), name="layers")
    features = keras.layers.Dropout(settings.dropout)(ScalarMix(name="mix")(inputs))
    if settings.head_kind == "mlp":
        hidden = keras.layers.Dense(HIDDEN, activation="relu", name="hidden")(features)
        features = keras.layers.Dropout(settings.dropout)(hidden)
    activation = "sigmoid" if n_out == 1 else "softmax"
    regularizer = keras.regularizers.L2(l2) if l2 else None
    outputs = keras.layers.Dense(n_out, activation=activation, name="out", kernel_regularizer=regularizer)(features)
    return keras.Model(inputs, outputs)


def architecture(kind: str, k: int, members: int = 1) -> str:
    output = "Dense(1, sigmoid)" if k == 2 else f"Dense({k}, softmax)"
    net = f"layer mix -> Dense({HIDDEN}, relu) -> {output}" if kind == "mlp" else f"layer mix -> {output}"
    return net if members == 1 else f"mean logits of {members} nets: {net}"


def weighted_log_loss(proba: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    """Mean class-weighted log loss of probabilities (n, k) for label indices y (n,): what early stopping watches."""
    p = np.clip(proba[np.arange(len(y)), y].astype(np.float64), 1e-7, 1.0)
    return float(np.mean(-np.log(p) * weights[y]))


def _train_keras(z, y, train, val, weights, n_out, settings: FitSettings, l2: float | None, member: int = 0):
    """Fit one Keras net on z[train] (early stopping on z[val]), seeded settings.seed + member;
    -> (model, Keras history dict)."""
    keras.utils.set_random_seed(settings.seed + member)
    model = build_keras_model(z.shape[1], z.shape[2], n_out, settings, l2)
    loss = "binary_crossentropy" if n_out == 1 else "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss=loss)
    target = y.astype(np.float32)[:, None] if n_out == 1 else y
    callbacks = []
    validation = None
    if len(val):
        validation = (z[val], target[val], weights[y[val]])
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience,
                                                       restore_best_weights=True))
    history = model.fit(z[train], target[train], sample_weight=weights[y[train]], validation_data=validation,
                        epochs=settings.epochs, batch_size=settings.batch_size, shuffle=True,
                        callbacks=callbacks, verbose=0)
    return model, history.history


def _head_arrays(model: keras.Model, mean: np.ndarray, std: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    mix, out = model.get_layer("mix"), model.get_layer("out")
    arrays = {"layer_logits": np.asarray(mix.layer_logits.numpy()), "gamma": np.asarray(mix.gamma.numpy()),
              "mean": mean, "std": std, "w2": out.kernel.numpy(), "b2": out.bias.numpy()}
    if kind == "mlp":
        hidden = model.get_layer("hidden")
        arrays.update(w1=hidden.kernel.numpy(), b1=hidden.bias.numpy())
    return {name: arrays[name] for name in weight_names(kind)}


def calibrate_head(head: Head, x_val: np.ndarray, y_val: np.ndarray, method: str,
                   threshold: float | None = None) -> Head:
    """Fit `method` calibration on held-out rows (x_val (n, n_layers + 1, dim), label indices y_val),
    then, for two labels, pick the threshold with the best F1 on the calibrated scores (or keep the
    fixed `threshold`); in place."""
    try:
        head.meta["calibration"] = fit_calibration(method, head.logits(x_val), y_val)
    except CalibrationError as exc:
        raise TrainingError(str(exc)) from exc
    if head.binary and threshold is not None:
        head.meta["threshold"] = threshold
        head.meta["training"]["threshold_from"] = "fixed (--threshold)"
    elif head.binary:
        head.meta["threshold"] = best_f1_threshold(y_val == 1, head.probabilities(x_val)[:, 1])
        head.meta["training"]["threshold_from"] = "best F1 of the positive label on the validation slice" + (
            f" (after {method} calibration there)" if method != "none" else "")
    return head


def fit_head(x: np.ndarray, labels: list[str], *, model_meta: dict, positive: str | None = None,
             settings: FitSettings | None = None, log=None) -> tuple[Head, dict]:
    """Train a head on x (n, n_layers + 1, dim) and label names; -> (Head, training summary).

    The head's meta holds labels, threshold 0.5 (for two labels), model_meta under "model",
    the learned layer weights and the training summary; callers add data facts and metrics.
    """
    settings = settings or FitSettings()
    check_settings(settings)
    x = np.asarray(x, np.float32)
    if x.ndim != 3 or len(x) != len(labels):
        raise TrainingError(f"expected vectors (n, n_layers + 1, dim) and n labels, got {x.shape} and {len(labels)}")
    names = label_order(labels, positive)
    index = {n: i for i, n in enumerate(names)}
    y = np.array([index[str(v)] for v in labels], np.int64)
    k = len(names)
    n_out = 1 if k == 2 else k

    mean, std = standardization(x)
    z = (x - mean) / std
    slices = member_slices(y, settings)
    train, val = slices[0]
    weights = class_weights(y[train], k, settings.class_weights)

    l2, l2_losses, first = _first_net(x, z, y, train, val, weights, n_out, names, mean, std, settings)
    nets = [first] + [_train_keras(z, y, *slices[i], weights, n_out, settings, l2, member=i)
                      for i in range(1, settings.members)]
    fits = [_fit_summary(losses) for _, losses in nets]
    arrays = stack_members([_head_arrays(model, mean, std, settings.head_kind) for model, _ in nets])
    diverged = [name for name, value in arrays.items() if not np.isfinite(value).all()]
    if diverged:
        raise TrainingError(f"training diverged: {', '.join(diverged)} hold values that are not finite numbers; "
                            f"expected a smaller learning rate than {settings.learning_rate:g}")
    summary = {
        **(fits[0] if settings.members == 1 else {"member_fits": fits}),
        "rows_fit": int(len(train)), "rows_validation": int(len(val)),
        "class_weights": {n: float(w) for n, w in zip(names, weights, strict=True)},
        "settings": vars(settings).copy(),
        "architecture": architecture(settings.head_kind, k, settings.members),
        "l2": l2,
    }
    if l2_losses:
        summary["l2_validation_losses"] = {f"{v:g}": loss for v, loss in l2_losses.items()}
    meta: dict[str, object] = {
        "labels": names, "positive_label": names[1] if k == 2 else None, "head_kind": settings.head_kind,
        "members": settings.members,
        "threshold": (settings.threshold or 0.5) if k == 2 else None, "model": dict(model_meta), "training": summary}
    head = Head(weights=arrays, meta=meta)
    if settings.members > 1:  # the ensemble's own, with no L2 term (a single net's: its kept epoch's, as Keras says)
        held_out = held_out_from_all(slices)  # per-net slices: rows in every net's slice, often none
        loss = weighted_log_loss(head.probabilities(x[held_out]), y[held_out], weights) if len(held_out) else None
        summary["validation_loss"] = loss
    if len(val):
        calibrate_head(head, x[val], y[val], settings.calibrate, settings.threshold)
    meta["layer_weights"] = [float(v) for v in head.layer_weights]
    meta["gamma"] = head.gamma
    if log:
        for i, fit in enumerate(fits):
            val_loss = fit["validation_loss"]
            log((f"net {i + 1} of {len(fits)}: " if len(fits) > 1 else "")
                + f"trained {fit['epochs_run']} epochs, kept epoch {fit['best_epoch']}"
                + (f" (lowest validation loss, {val_loss:.4f})" if val_loss is not None else ""))
    return head, summary


def _first_net(x, z, y, train, val, weights, n_out, names, mean, std,
               settings: FitSettings) -> tuple[float | None, dict[float, float], tuple]:
    """The first (or only) net and the L2 strength every net uses; -> (l2, {l2: validation loss}, (model, history)).

    A logistic head without a given L2 tries each of L2_GRID and keeps the net with the lowest
    class-weighted validation loss.
    """
    if settings.head_kind == "logistic" and settings.l2 is None and len(val):
        fits, l2_losses = {}, {}
        for strength in L2_GRID:
            fits[strength] = _train_keras(z, y, train, val, weights, n_out, settings, strength)
            head = Head(weights=_head_arrays(fits[strength][0], mean, std, "logistic"),
                        meta={"labels": names, "head_kind": "logistic"})
            l2_losses[strength] = weighted_log_loss(head.probabilities(x[val]), y[val], weights)
        best = min(l2_losses, key=l2_losses.__getitem__)
        return best, l2_losses, fits[best]
    l2 = settings.l2 if settings.l2 is not None or settings.head_kind == "mlp" else L2_WITHOUT_VALIDATION
    return l2, {}, _train_keras(z, y, train, val, weights, n_out, settings, l2)


def _fit_summary(losses: dict) -> dict:
    """One net's Keras history -> epochs run, the epoch kept (lowest validation loss) and its losses."""
    best = int(np.argmin(losses["val_loss"])) if "val_loss" in losses else len(losses["loss"]) - 1
    return {"epochs_run": len(losses["loss"]), "best_epoch": best + 1, "train_loss": float(losses["loss"][best]),
            "validation_loss": float(losses["val_loss"][best]) if "val_loss" in losses else None}


__all__ = ["FitSettings", "TrainingError", "calibrate_head", "fit_head", "label_order"]
