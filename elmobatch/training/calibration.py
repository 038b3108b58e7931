"""Calibrating a head's scores on held-out rows: Platt scaling or temperature scaling (numpy only).

A head's raw output is a logit (two labels: one column, (n, 1)) or k logits (more labels). A
calibration maps logits to calibrated logits before the sigmoid / softmax:

    platt        z -> slope * z + intercept        two labels only (Platt 1999, smoothed targets)
    temperature  z -> z / temperature              any number of labels (Guo et al. 2017)
    none         z -> z

Its parameters are plain numbers kept in head.json under "calibration", e.g.
{"method": "platt", "slope": 0.41, "intercept": -1.2, "rows": 446}; applying them is one line.
"""

from __future__ import annotations

import math

import numpy as np

from elmobatch.errors import ElmobatchError
from elmobatch.settings import CALIBRATIONS



class CalibrationError(ElmobatchError, ValueError):
    """A calibration that cannot be fitted or applied, with what was expected."""


def apply_calibration(logits: np.ndarray, calibration: dict | None) -> np.ndarray:
    """(n, n_out) logits -> calibrated logits of the same shape; None or method "none" leaves them."""
    if calibration is None:
        return logits
    method = calibration.get("method", "none")
    if method == "platt":
        return logits * calibration["slope"] + calibration["intercept"]
    if method == "temperature":
        return logits / calibration["temperature"]
    return logits


def check_calibration(calibration, n_labels: int) -> str | None:
    """None if `calibration` (head.json's value) is well formed, else what is wrong with it."""
    if calibration is None:
        return None
    if not isinstance(calibration, dict) or calibration.get("method") not in CALIBRATIONS:
        return f"'calibration' must be an object with 'method' one of {', '.join(CALIBRATIONS)}, got {calibration!r}"
    needed = {"none": (), "platt": ("slope", "intercept"), "temperature": ("temperature",)}[calibration["method"]]
    for key in needed:
        value = calibration.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"calibration {calibration['method']!r} needs a finite number {key!r}, got {value!r}"
    if calibration["method"] == "temperature" and calibration["temperature"] <= 0:
        return f"calibration temperature must be > 0, got {calibration['temperature']!r}"
    if calibration["method"] == "platt" and n_labels != 2:
        return f"Platt calibration applies to two labels; this head has {n_labels}"
    return None


def fit_calibration(method: str, logits: np.ndarray, y: np.ndarray) -> dict:
    """Fit `method` on held-out rows: logits (n, n_out), y (n,) label indices -> head.json's value."""
    logits = np.asarray(logits, np.float64)
    y = np.asarray(y, np.int64)
    if method not in CALIBRATIONS:
        raise CalibrationError(f"calibration {method!r}: expected one of {', '.join(CALIBRATIONS)}")
    if method == "none":
        return {"method": "none"}
    if len(np.unique(y)) < 2:
        raise CalibrationError(f"{method} calibration needs held-out rows of at least two labels, "
                               f"got {len(y)} rows of {len(np.unique(y))}")
    if method == "platt":
        if logits.shape[1] != 1:
            raise CalibrationError(f"Platt calibration applies to two labels; the head has {logits.shape[1]} outputs "
                                   "(use temperature)")
        slope, intercept = fit_platt(logits[:, 0], y == 1)
        return {"method": "platt", "slope": slope, "intercept": intercept, "rows": int(len(y))}
    return {"method": "temperature", "temperature": fit_temperature(logits, y), "rows": int(len(y))}


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def fit_platt(z: np.ndarray, positive: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """(slope, intercept) minimizing the log loss of sigmoid(slope * z + intercept) on (z, positive).

    Targets are Platt's smoothed ones, (n+ + 1) / (n+ + 2) and 1 / (n- + 2), so rows that are
    perfectly separated still give a finite slope. Newton steps with backtracking.
    """
    z, positive = np.asarray(z, np.float64), np.asarray(positive, bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    t = np.where(positive, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(params):
        s = params[0] * z + params[1]
        return -(t * _log_sigmoid(s) + (1 - t) * _log_sigmoid(-s)).sum()

    params = np.array([1.0, 0.0])
    current = loss(params)
    for _ in range(iterations):
        p = np.exp(_log_sigmoid(params[0] * z + params[1]))
        gradient = np.array([((p - t) * z).sum(), (p - t).sum()])
        w = p * (1 - p)
        hessian = np.array([[(w * z * z).sum(), (w * z).sum()], [(w * z).sum(), w.sum()]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-8 and loss(params - size * step) > current:
            size /= 2
        params, previous = params - size * step, current
        current = loss(params)
        if previous - current < 1e-12:
            break
    return float(params[0]), float(params[1])


def _softmax_log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    if logits.shape[1] == 1:  # one logit of the positive label
        z = logits[:, 0]
        return float(-np.where(y == 1, _log_sigmoid(z), _log_sigmoid(-z)).sum())
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].sum())


def fit_temperature(logits: np.ndarray, y: np.ndarray, low: float = 1e-2, high: float = 1e2) -> float:
    """The temperature T in [low, high] minimizing the log loss of logits / T (golden-section on log T)."""
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if _softmax_log_loss(logits / math.exp(c), y) < _softmax_log_loss(logits / math.exp(d), y):
            b = d
        else:
            a = c
    return float(math.exp((a + b) / 2))
