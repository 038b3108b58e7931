"""The scoring head over per-layer pooled ELMo vectors, and its code-free file format.

Input x: (n, n_layers + 1, dim) float32, the token means of each biLM layer (what the encoder's
`embed_texts(..., layers=True)` and the embedding cache give). The head is

    z_j   = (x_j - mean_j) / std_j                  per-layer standardization, fixed from training rows
    m     = gamma * sum_j softmax(s)_j * z_j         ELMo's learned layer mix (Peters et al. 2018, eq. 1)
    h     = relu(m @ w1 + b1)                        Dense(256, relu)     (head_kind "mlp", the default)
    h     = m                                        no hidden layer      (head_kind "logistic")
    z     = calibrate(h @ w2 + b2)                   output logits, calibrated (calibration.py; none: as is)
    p     = sigmoid(z)                               two labels: P(positive label)
            softmax(z)                               k > 2 labels

An ensemble (head.json "members": M > 1, `train --members M`) averages the output logits of M such
nets before calibration; each member has its own layer mix and dense layers (those arrays gain a
leading axis of M in head.npz), and all share the standardization.

Training uses Keras (`training/fit.py`); applying a head uses numpy only, from `head.npz`
(plain float32 arrays, read with allow_pickle=False; a logistic head has no w1, b1) and
`head.json` (labels, threshold, head_kind, calibration, fingerprints, metrics). A head.json
without head_kind or calibration is an "mlp" head without calibration, as heads were before.
Loading a head never executes code from its files.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from elmobatch.errors import ElmobatchError
from elmobatch.settings import HEAD_KINDS
from elmobatch.files import file_set_problem, write_atomically, write_file_set
from elmobatch.training.calibration import apply_calibration, check_calibration

HEAD_JSON = "head.json"
HEAD_WEIGHTS = "head.npz"
FORMAT_VERSION = 1  # of a single-net head; 2: an ensemble (members > 1), which elmobatch before 2 cannot apply
ENSEMBLE_FORMAT_VERSION = 2
WEIGHT_NAMES = ("layer_logits", "gamma", "mean", "std", "w1", "b1", "w2", "b2")
HIDDEN_WEIGHTS = ("w1", "b1")
MEMBER_WEIGHTS = ("layer_logits", "gamma", "w1", "b1", "w2", "b2")  # one of each per member of an ensemble


def stack_members(nets: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Single-net weights -> a head's: one net's as they are, an ensemble's MEMBER_WEIGHTS stacked on a
    leading member axis (the standardization, the same for every net, taken from the first)."""
    if len(nets) == 1:
        return nets[0]
    return {name: np.stack([net[name] for net in nets]) if name in MEMBER_WEIGHTS else value
            for name, value in nets[0].items()}


def weight_names(kind: str) -> tuple[str, ...]:
    """The arrays a head of `kind` has in head.npz: all of WEIGHT_NAMES, less the hidden layer for "logistic"."""
    return WEIGHT_NAMES if kind == "mlp" else tuple(n for n in WEIGHT_NAMES if n not in HIDDEN_WEIGHTS)


ROWS_AT_ONCE = 4096


class HeadError(ElmobatchError, ValueError):
    """A head that cannot be loaded or does not fit the data or model, with what was expected."""


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    # Two branches so that neither exp overflows.
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


@dataclass
class Head:
    """A trained head: `weights` (see WEIGHT_NAMES) and `meta` (the content of head.json).

    meta["labels"] lists the label names; for two labels the second is the positive one.
    """

    weights: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)
    fingerprint: str = ""  # sha256 of head.json + head.npz as loaded ("" for a head not read from files)

    # ---- facts from meta ----
    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def binary(self) -> bool:
        return len(self.meta["labels"]) == 2

    @property
    def positive_label(self) -> str | None:
        return self.meta["labels"][1] if self.binary else None

    @property
    def threshold(self) -> float | None:
        return self.meta.get("threshold")

    @property
    def kind(self) -> str:
        """"mlp" (layer mix -> Dense(256, relu) -> output) or "logistic" (layer mix -> output)."""
        return self.meta.get("head_kind", "mlp")

    @property
    def members(self) -> int:
        """How many nets the head averages: head.json's "members", 1 when absent (a single net)."""
        return int(self.meta.get("members", 1))

    @property
    def calibration(self) -> dict:
        """head.json's "calibration" (see calibration.py); {"method": "none"} when absent."""
        return self.meta.get("calibration") or {"method": "none"}

    @property
    def model_fingerprint(self) -> str:
        return self.meta["model"]["fingerprint"]

    @property
    def layer_weights(self) -> np.ndarray:
        """(n_layers + 1,): softmax(s), the learned share of each layer (before gamma); an ensemble's mean."""
        shares = softmax(self.weights["layer_logits"].astype(np.float64))
        return shares.reshape(-1, shares.shape[-1]).mean(axis=0).astype(np.float32)

    @property
    def gamma(self) -> float:
        """The layer mix's scale; an ensemble's mean."""
        return float(np.mean(self.weights["gamma"]))

    def member_weights(self) -> list[dict[str, np.ndarray]]:
        """The weights of each net, as a single-net head holds them."""
        if self.members == 1:
            return [self.weights]
        return [{name: value[i] if name in MEMBER_WEIGHTS else value for name, value in self.weights.items()}
                for i in range(self.members)]

    def first_members(self, m: int) -> Head:
        """The ensemble of this head's first m nets (a single net for m = 1): the nets `train --members m`
        with the same seed trains, before calibration (none; the rest of meta is this head's)."""
        if not 1 <= m <= self.members:
            raise HeadError(f"{m} members: this head has {self.members}")
        meta = {key: value for key, value in self.meta.items() if key != "calibration"}
        return Head(stack_members(self.member_weights()[:m]), dict(meta, members=m))

    # ---- applying ----
    def mix(self, x: np.ndarray, weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """(n, n_layers + 1, dim) -> (n, dim): standardized, softmax-weighted and scaled layer sum
        (of `weights`, one member's; default: the head's own, for a single net)."""
        x = np.asarray(x, np.float32)
        self._check_input(x)
        if weights is None and self.members > 1:
            raise HeadError(f"an ensemble of {self.members} nets has a mix per net: pass one of member_weights()")
        w = self.weights if weights is None else weights
        # gamma * sum_j s_j (x_j - mean_j) / std_j  ==  sum_j x_j * a_j - c, folded so it is one pass.
        shares = softmax(w["layer_logits"].astype(np.float64)).astype(np.float32)
        a = (w["gamma"] * shares)[:, None] / w["std"]
        c = (a * w["mean"]).sum(axis=0)
        return np.einsum("nld,ld->nd", x, a) - c  # (optimize=True is 30x slower here)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(n, n_layers + 1, dim) -> (n, k) float32: probability of each label, rows sum to 1.

        Computed `ROWS_AT_ONCE` rows at a time: the temporaries stay in cache and memory stays bounded.
        """
        x = np.asarray(x, np.float32)
        parts = [self._probabilities(x[i : i + ROWS_AT_ONCE]) for i in range(0, len(x), ROWS_AT_ONCE)]
        return np.concatenate(parts) if parts else self._probabilities(x)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(n, n_layers + 1, dim) -> (n, n_out) output logits before calibration (n_out 1 for two labels);
        an ensemble's are the mean of its members'."""
        return self.member_logits(x).mean(axis=0)

    def member_logits(self, x: np.ndarray) -> np.ndarray:
        """(n, n_layers + 1, dim) -> (members, n, n_out): each net's output logits alone, before calibration."""
        return np.stack([self._net_logits(x, w) for w in self.member_weights()])

    def _net_logits(self, x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
        h = self.mix(x, w)
        if self.kind == "mlp":
            h = np.maximum(h @ w["w1"] + w["b1"], 0.0)
        return h @ w["w2"] + w["b2"]

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = apply_calibration(self.logits(x), self.calibration)
        if self.binary:
            p = sigmoid(logits[:, 0])
            return np.stack([1.0 - p, p], axis=1).astype(np.float32)
        return softmax(logits).astype(np.float32)

    def predict(self, x: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """-> (label indices (n,), scores (n,)).

        Two labels: score = P(positive), label positive iff score >= threshold (default: the
        head's). More labels: the most probable label and its probability.
        """
        return self.decide(self.probabilities(x), threshold)

    def decide(self, proba: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (n, n_labels) -> (label indices (n,), scores (n,)), as `predict` says."""
        if self.binary:
            t = self.threshold if threshold is None else threshold
            score = proba[:, 1]
            return (score >= t).astype(np.int64), score
        index = proba.argmax(axis=1)
        return index, proba[np.arange(len(proba)), index]

    def _check_input(self, x: np.ndarray) -> None:
        expected = self.weights["mean"].shape
        if x.ndim != 3 or x.shape[1:] != expected:
            raise HeadError(f"head expects vectors of shape (n, {expected[0]}, {expected[1]}) "
                            f"(n_layers + 1, dim), got {x.shape}")


# ---- files ----------------------------------------------------------------------------------


def save_head(head: Head, directory: str | Path) -> Path:
    """Write head.npz (plain arrays) and head.json into `directory` as one unit; return the directory.

    head.json records the sha256 of head.npz and is committed before it (`write_file_set`), so a
    writer killed over an existing head leaves the old head, the new one, or a head that
    `load_head` refuses by name: never new weights under old labels.
    """
    directory = Path(directory)
    arrays = {name: np.asarray(head.weights[name], np.float32) for name in weight_names(head.kind)}

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle's bool

    def write_json(files: dict[str, str]) -> None:
        version = ENSEMBLE_FORMAT_VERSION if head.members > 1 else FORMAT_VERSION
        meta = dict(head.meta, format_version=version, files=files)
        write_atomically(directory / HEAD_JSON, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))

    write_file_set(directory, {HEAD_WEIGHTS: write_npz}, write_json)
    return directory


def load_head(directory: str | Path) -> Head:
    """Read a head written by save_head. Never unpickles: object arrays are refused."""
    directory = Path(directory)
    meta_path, weights_path = directory / HEAD_JSON, directory / HEAD_WEIGHTS
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise HeadError(f"{directory}: not a head directory ({path.name} is missing; "
                            f"expected {HEAD_JSON} + {HEAD_WEIGHTS} written by `elmobatch train`)")
    try:
        meta_bytes = meta_path.read_bytes()
        meta = json.loads(meta_bytes.decode())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HeadError(f"{meta_path}: not readable JSON ({exc})") from exc
    _check_format_version(meta, meta_path)
    kind = meta.get("head_kind", "mlp") if isinstance(meta, dict) else None
    if kind not in HEAD_KINDS:
        raise HeadError(f"{meta_path}: 'head_kind' must be one of {', '.join(HEAD_KINDS)}, got {kind!r}")
    try:
        data = weights_path.read_bytes()  # read once: the bytes checked are the bytes loaded
    except OSError as exc:
        raise HeadError(f"{weights_path}: not readable ({exc})") from exc
    _check_files(meta, directory, {HEAD_WEIGHTS: data})
    weights = _read_arrays(weights_path, data, weight_names(kind))
    head = Head(weights=weights, meta=meta, fingerprint=head_fingerprint(meta_bytes, data))
    _validate(head, directory)
    return head


def _check_format_version(meta, path: Path) -> None:
    """Before any other check: a head of a later format says so, not what it has that this one lacks."""
    version = meta.get("format_version", FORMAT_VERSION) if isinstance(meta, dict) else FORMAT_VERSION
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= ENSEMBLE_FORMAT_VERSION:
        raise HeadError(f"{path}: format_version {version!r}: this elmobatch reads heads of format 1 to "
                        f"{ENSEMBLE_FORMAT_VERSION}; a newer elmobatch wrote it, upgrade to apply it")


def head_fingerprint(meta_bytes: bytes, weights_bytes: bytes) -> str:
    """sha256 over head.json and head.npz: changes iff the head's labels, settings or weights do."""
    digest = hashlib.sha256()
    for part in (meta_bytes, weights_bytes):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def _check_files(meta, directory: Path, contents: dict[str, bytes]) -> None:
    """Refuse weights other than those head.json records (heads written before the record: unchecked);
    `contents` holds the files already read, checked as read."""
    recorded = meta.get("files", {}) if isinstance(meta, dict) else {}
    problem = file_set_problem(directory, HEAD_JSON, recorded, contents)
    if problem:
        raise HeadError(f"{problem}; train or copy the head again")


def _read_arrays(path: Path, data: bytes, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays `names` of the .npz bytes `data` read from `path` (named in errors)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {}
            for name in names:
                if name not in npz.files:
                    raise HeadError(f"{path}: array {name!r} is missing (found: {', '.join(npz.files)})")
                arrays[name] = npz[name]
    except ValueError as exc:  # numpy's refusal of object (pickled) arrays is a ValueError
        if isinstance(exc, HeadError):
            raise
        raise HeadError(f"{path}: refused: it holds pickled Python objects or is not a plain array "
                        f"file ({exc}); a head's weights must be plain numeric arrays") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise HeadError(f"{path}: not a readable .npz array file ({exc})") from exc
    for name, value in arrays.items():
        if value.dtype.kind != "f":
            raise HeadError(f"{path}: array {name!r} has dtype {value.dtype}; expected floating point")
    return {name: value.astype(np.float32) for name, value in arrays.items()}


def _validate(head: Head, directory: Path) -> None:
    meta, w = head.meta, head.weights
    for key in ("labels", "model"):
        if key not in meta:
            raise HeadError(f"{directory / HEAD_JSON}: key {key!r} is missing")
    if not isinstance(meta["model"], dict) or "fingerprint" not in meta["model"]:
        raise HeadError(f"{directory / HEAD_JSON}: 'model' must record the model 'fingerprint'")
    labels = meta["labels"]
    if not isinstance(labels, list) or len(labels) < 2:
        raise HeadError(f"{directory / HEAD_JSON}: 'labels' must list at least two label names, got {labels!r}")
    _check_threshold(meta.get("threshold"), len(labels), directory / HEAD_JSON)
    problem = check_calibration(meta.get("calibration"), len(labels))
    if problem:
        raise HeadError(f"{directory / HEAD_JSON}: {problem}")
    members = meta.get("members", 1)
    if not isinstance(members, int) or isinstance(members, bool) or members < 1:
        raise HeadError(f"{directory / HEAD_JSON}: 'members' must be a whole number >= 1, got {members!r}")
    n_layers, dim = w["mean"].shape if w["mean"].ndim == 2 else (None, None)
    hidden = w["w1"].shape[-1] if head.kind == "mlp" else dim
    n_out = 1 if len(labels) == 2 else len(labels)
    expected = {"layer_logits": (n_layers,), "gamma": (), "mean": (n_layers, dim), "std": (n_layers, dim),
                "w1": (dim, hidden), "b1": (hidden,), "w2": (hidden, n_out), "b2": (n_out,)}
    for name in weight_names(head.kind):
        shape = (members, *expected[name]) if members > 1 and name in MEMBER_WEIGHTS else expected[name]
        if w[name].shape != shape:
            raise HeadError(f"{directory / HEAD_WEIGHTS}: array {name!r} has shape {w[name].shape}, "
                            f"expected {shape} for {len(labels)} labels"
                            + (f" and {members} members" if members > 1 else ""))


def _check_threshold(threshold, n_labels: int, path: Path) -> None:
    """A two-label head needs a probability; a threshold anywhere must be a finite one in [0, 1]."""
    if threshold is None and n_labels > 2:
        return
    number = isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
    if not number or not math.isfinite(threshold) or not 0 <= threshold <= 1:
        raise HeadError(f"{path}: 'threshold' must be a finite probability between 0 and 1"
                        f"{' (a two-label head needs one)' if n_labels == 2 else ''}, got {threshold!r}")


def check_model(head: Head, fingerprint: str, *, head_name: str = "the head", model_name: str = "the model") -> None:
    """Refuse a model other than the one the head was trained on."""
    if fingerprint != head.model_fingerprint:
        trained = head.meta["model"].get("spec") or "another model"
        raise HeadError(
            f"{head_name} was trained on vectors of model {trained} (fingerprint {head.model_fingerprint[:16]}...), "
            f"but {model_name} has fingerprint {fingerprint[:16]}...: vectors of another model mean nothing to "
            "this head; pass the head's own model (--model; in a job file, model), or train a head for this model")


def default_head_dir() -> Path:
    """The bundled default head (package data); it arrives with the pretraining issue."""
    return Path(__file__).resolve().parent.parent / "models" / "default_head"
