"""Head kinds (mlp, logistic) and calibration (platt, temperature): the numpy head equals the Keras
twin, calibration parameters are the right ones, they live in head.json and are applied at score
time, heads written before these options still load, and `elmobatch train` offers them."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from elmobatch.training.calibration import apply_calibration, fit_platt, fit_temperature
from elmobatch.training.fit import (L2_GRID, FitSettings, TrainingError, build_keras_model, calibrate_head,
                                    fit_head, validation_split)
from elmobatch.files import file_sha256
from elmobatch.training.head import Head, HeadError, load_head, save_head
from tests.conftest import FIXTURE
from tests.test_head import SPAM, TEXTS

LABELS = ["spam" if s else "ham" for s in SPAM]


@pytest.fixture(scope="module")
def layers(fixture_encoder):
    return fixture_encoder.embed_texts(TEXTS, layers=True)


@pytest.fixture(scope="module")
def logistic(layers, fixture_encoder):
    settings = FitSettings(epochs=4, batch_size=16, head_kind="logistic", calibrate="platt")
    return fit_head(layers, LABELS, model_meta={"fingerprint": fixture_encoder.fingerprint}, settings=settings)


def test_logistic_head_equals_its_keras_twin_and_has_no_hidden_layer(logistic, layers, tmp_path):
    head, summary = logistic
    w = head.weights
    assert head.kind == "logistic" and "w1" not in w and w["w2"].shape == (layers.shape[2], 1)
    model = build_keras_model(layers.shape[1], layers.shape[2], 1, FitSettings(head_kind="logistic"))
    model.get_layer("mix").layer_logits.assign(w["layer_logits"])
    model.get_layer("mix").gamma.assign(w["gamma"])
    model.get_layer("out").set_weights([w["w2"], w["b2"]])
    keras_p = model.predict((layers - w["mean"]) / w["std"], verbose=0)[:, 0]
    raw = 1 / (1 + np.exp(-head.logits(layers)[:, 0]))
    np.testing.assert_allclose(raw, keras_p, atol=1e-5)
    # The L2 strength is the grid value with the lowest validation loss.
    losses = summary["l2_validation_losses"]
    assert len(losses) == len(L2_GRID) and summary["l2"] in L2_GRID
    assert losses[f"{summary['l2']:g}"] == min(losses.values())
    save_head(head, tmp_path)
    with np.load(tmp_path / "head.npz") as npz:
        assert sorted(npz.files) == ["b2", "gamma", "layer_logits", "mean", "std", "w2"]
    np.testing.assert_array_equal(load_head(tmp_path).probabilities(layers), head.probabilities(layers))


def test_platt_calibration_is_applied_at_score_time_and_survives_saving(logistic, layers, tmp_path):
    head, _ = logistic
    calibration = head.meta["calibration"]
    assert calibration["method"] == "platt" and calibration["slope"] != 1.0
    z = head.logits(layers)[:, 0].astype(np.float64)
    expected = 1 / (1 + np.exp(-(calibration["slope"] * z + calibration["intercept"])))
    np.testing.assert_allclose(head.probabilities(layers)[:, 1], expected, rtol=1e-5, atol=1e-6)
    save_head(head, tmp_path)
    saved = json.loads((tmp_path / "head.json").read_text())
    assert saved["calibration"] == calibration and saved["head_kind"] == "logistic"
    np.testing.assert_allclose(load_head(tmp_path).probabilities(layers), head.probabilities(layers))


def test_platt_and_temperature_recover_known_parameters():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, 20_000)
    positive = rng.random(len(z)) < 1 / (1 + np.exp(-(0.4 * z - 1.5)))
    slope, intercept = fit_platt(z, positive)
    assert slope == pytest.approx(0.4, abs=0.03) and intercept == pytest.approx(-1.5, abs=0.08)
    logits = rng.normal(0, 4, (20_000, 3))
    p = np.exp(logits / 2.5)
    p /= p.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    assert fit_temperature(logits, y) == pytest.approx(2.5, rel=0.05)
    np.testing.assert_allclose(apply_calibration(logits, {"method": "temperature", "temperature": 2.0}), logits / 2)


def test_temperature_lowers_the_validation_log_loss_and_the_threshold_follows(layers, fixture_encoder):
    settings = FitSettings(epochs=4, batch_size=16, validation_fraction=0.3)
    head, _ = fit_head(layers, LABELS, model_meta={"fingerprint": fixture_encoder.fingerprint}, settings=settings)
    y = np.array(SPAM)
    _, val = validation_split(y, settings.validation_fraction, settings.seed)

    def log_loss(h):
        p = h.probabilities(layers[val])[np.arange(len(val)), y[val]]
        return -np.log(np.clip(p, 1e-7, 1)).mean()

    calibrated = calibrate_head(Head(head.weights, json.loads(json.dumps(head.meta))), layers[val], y[val],
                                "temperature")
    assert calibrated.meta["calibration"]["temperature"] != pytest.approx(1.0)
    assert log_loss(calibrated) <= log_loss(head) + 1e-9
    # A monotone calibration keeps the ranking, so the best-F1 cut separates the same rows.
    raw_cut = head.predict(layers[val])[0]
    assert (calibrated.predict(layers[val])[0] == raw_cut).all()


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_three_labels_take_temperature_not_platt(layers, fixture_encoder):
    labels = [("spam" if s else ("short" if len(t) < 30 else "long")) for s, t in zip(SPAM, TEXTS, strict=True)]
    meta = {"fingerprint": fixture_encoder.fingerprint}
    head, _ = fit_head(layers, labels, model_meta=meta,
                       settings=FitSettings(epochs=2, calibrate="temperature", validation_fraction=0.3))
    assert head.meta["calibration"]["method"] == "temperature" and head.threshold is None
    np.testing.assert_allclose(head.probabilities(layers).sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(TrainingError, match="Platt calibration applies to two labels"):
        fit_head(layers, labels, model_meta=meta, settings=FitSettings(epochs=1, calibrate="platt"))
    with pytest.raises(TrainingError, match="head kind 'tree'"):
        fit_head(layers, labels, model_meta=meta, settings=FitSettings(head_kind="tree"))
    with pytest.raises(TrainingError, match="validation_fraction must be > 0"):
        fit_head(layers, labels, model_meta=meta, settings=FitSettings(calibrate="platt", validation_fraction=0))


def test_heads_from_before_kinds_and_calibration_still_load(tmp_path):
    from tests.test_head_integrity import random_head

    save_head(random_head(0, ["ham", "spam"], 0.5), tmp_path)  # an MLP head whose json names neither
    meta = json.loads((tmp_path / "head.json").read_text())
    assert "head_kind" not in meta and "calibration" not in meta
    head = load_head(tmp_path)
    assert head.kind == "mlp" and head.calibration == {"method": "none"}
    w = head.weights
    x = (w["mean"] + w["std"] * np.random.default_rng(0).standard_normal((5, *w["mean"].shape))).astype(np.float32)
    hidden = np.maximum(head.mix(x) @ w["w1"] + w["b1"], 0)
    expected = 1 / (1 + np.exp(-(hidden @ w["w2"] + w["b2"])[:, 0]))
    np.testing.assert_allclose(head.probabilities(x)[:, 1], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("change, message", [
    ({"calibration": {"method": "platt", "slope": "steep", "intercept": 0}}, "needs a finite number 'slope'"),
    ({"calibration": {"method": "temperature", "temperature": -1}}, "temperature must be > 0"),
    ({"calibration": {"method": "isotonic"}}, "'method' one of none, platt, temperature"),
    ({"head_kind": "tree"}, "'head_kind' must be one of mlp, logistic"),
])
def test_bad_kind_or_calibration_in_head_json_is_refused(logistic, tmp_path, change, message):
    assert_refused_with(logistic[0], tmp_path, change, message)


def assert_refused_with(head: Head, directory: Path, change: dict, message: str) -> None:
    """`head` saved, its head.json then changed by `change`: loading it raises HeadError matching `message`."""
    save_head(head, directory)
    meta = json.loads((directory / "head.json").read_text())
    (directory / "head.json").write_text(json.dumps(dict(meta, **change)))
    with pytest.raises(HeadError, match=message):
        load_head(directory)


def test_a_logistic_head_missing_its_output_weights_is_refused(logistic, tmp_path):
    head, _ = logistic
    save_head(head, tmp_path)
    arrays = {k: v for k, v in head.weights.items() if k != "w2"}
    np.savez(tmp_path / "head.npz", **arrays)
    meta = json.loads((tmp_path / "head.json").read_text())  # record the tampered file, so the
    meta["files"] = {"head.npz": file_sha256(tmp_path / "head.npz")}  # array check is what refuses it
    (tmp_path / "head.json").write_text(json.dumps(meta))
    with pytest.raises(HeadError, match="array 'w2' is missing"):
        load_head(tmp_path)


def train_then_score(tmp_path, fixture_encoder, *train_options: str) -> tuple[Head, str, Path]:
    """`elmobatch train` on tmp_path/messages.csv with `train_options`, then `score` with its head, whose
    scores must be the head's probabilities; -> (head, train's output, the labelled file)."""
    data = tmp_path / "messages.csv"
    pd.DataFrame({"label": LABELS * 2, "text": TEXTS * 2}).to_csv(data, index=False)
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(data), "--label-column", "label", "--model", str(FIXTURE),
                                  "--out", str(tmp_path / "head"), "--split", "last:0.2",
                                  "--cache-dir", str(tmp_path / "cache"), *train_options])
    assert result.exit_code == 0, result.output
    head = load_head(tmp_path / "head")
    scored = runner.invoke(main, ["score", str(data), "--head", str(tmp_path / "head"), "--out",
                                  str(tmp_path / "scored.csv"), "--cache-dir", str(tmp_path / "cache")])
    assert scored.exit_code == 0, scored.output
    rows = pd.read_csv(tmp_path / "scored.csv")
    expected = head.probabilities(fixture_encoder.embed_texts(list(rows["text"]), layers=True))[:, 1]
    np.testing.assert_allclose(rows["score"], expected, rtol=1e-5, atol=1e-6)
    return head, result.output, data


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_cli_trains_a_calibrated_logistic_head_and_score_applies_it(tmp_path, fixture_encoder):
    head, output, data = train_then_score(tmp_path, fixture_encoder, "--epochs", "3", "--head-kind", "logistic",
                                          "--calibrate", "platt", "--l2", "0.01")
    assert "head logistic (layer mix -> Dense(1, sigmoid)); calibration platt (slope" in output
    assert head.kind == "logistic" and head.meta["training"]["l2"] == 0.01
    assert head.calibration["method"] == "platt"
    bad = CliRunner().invoke(main, ["train", str(data), "--label-column", "label", "--model", str(FIXTURE),
                                    "--out", str(tmp_path / "h2"), "--calibrate", "isotonic"])
    assert bad.exit_code != 0 and "'isotonic' is not one of 'none', 'platt', 'temperature'" in bad.output


def test_a_fixed_threshold_is_kept_after_calibration_and_a_bad_one_refused(layers, fixture_encoder, tmp_path):
    settings = FitSettings(epochs=3, batch_size=16, validation_fraction=0.3, calibrate="platt", threshold=0.42)
    head, _ = fit_head(layers, LABELS, model_meta={"fingerprint": fixture_encoder.fingerprint}, settings=settings)
    assert head.meta["threshold"] == 0.42 and head.meta["training"]["threshold_from"] == "fixed (--threshold)"
    picked, _ = fit_head(layers, LABELS, model_meta={"fingerprint": fixture_encoder.fingerprint},
                         settings=FitSettings(epochs=3, batch_size=16, validation_fraction=0.3, calibrate="platt"))
    assert picked.meta["training"]["threshold_from"].startswith("best F1")
    with pytest.raises(TrainingError, match="threshold 1.0: expected a probability between 0 and 1"):
        fit_head(layers, LABELS, model_meta={}, settings=FitSettings(threshold=1.0))
    data = tmp_path / "labelled.csv"
    pd.DataFrame({"label": LABELS, "text": TEXTS}).to_csv(data, index=False)
    result = CliRunner().invoke(main, ["train", str(data), "--label-column", "label", "--model", str(FIXTURE),
                                       "--out", str(tmp_path / "head"), "--threshold", "1"])
    assert result.exit_code == 2 and "--threshold" in result.output


def test_class_weights_none_weighs_every_row_one_and_a_bad_weighting_is_refused(layers, fixture_encoder, tmp_path):
    settings = FitSettings(epochs=3, batch_size=16, class_weights="none")
    head, summary = fit_head(layers, LABELS, model_meta={"fingerprint": fixture_encoder.fingerprint}, settings=settings)
    assert summary["class_weights"] == {"ham": 1.0, "spam": 1.0} and summary["settings"]["class_weights"] == "none"
    balanced, balanced_summary = fit_head(layers, LABELS, model_meta={}, settings=FitSettings(epochs=3, batch_size=16))
    assert balanced_summary["class_weights"]["spam"] > 1 > balanced_summary["class_weights"]["ham"]
    assert not np.array_equal(head.weights["w2"], balanced.weights["w2"])  # the same seed, another loss
    with pytest.raises(TrainingError, match="class weights 'inverse': expected one of balanced, none"):
        fit_head(layers, LABELS, model_meta={}, settings=FitSettings(class_weights="inverse"))
    data = tmp_path / "labelled.csv"
    pd.DataFrame({"label": LABELS, "text": TEXTS}).to_csv(data, index=False)
    trained = CliRunner().invoke(main, ["train", str(data), "--label-column", "label", "--model", str(FIXTURE),
                                        "--out", str(tmp_path / "head"), "--epochs", "2", "--class-weights", "none",
                                        "--cache-dir", str(tmp_path / "cache")])
    assert trained.exit_code == 0, trained.output
    assert load_head(tmp_path / "head").meta["training"]["class_weights"] == {"ham": 1.0, "spam": 1.0}
    bad = CliRunner().invoke(main, ["train", str(data), "--label-column", "label", "--model", str(FIXTURE),
                                    "--out", str(tmp_path / "h2"), "--class-weights", "inverse"])
    assert bad.exit_code == 2 and "'inverse' is not one of 'balanced', 'none'" in bad.output


def test_dropout_and_learning_rate_are_used_recorded_and_checked(layers, tmp_path):
    base, _ = fit_head(layers, LABELS, model_meta={}, settings=FitSettings(epochs=3, batch_size=16))
    for setting in ({"dropout": 0.5}, {"learning_rate": 1e-4}):  # each alone changes the head
        settings = FitSettings(epochs=3, batch_size=16, **setting)
        other, summary = fit_head(layers, LABELS, model_meta={}, settings=settings)
        assert {k: summary["settings"][k] for k in setting} == setting
        assert not np.array_equal(base.weights["w2"], other.weights["w2"]), setting  # the same seed otherwise
    with pytest.raises(TrainingError, match="dropout 1.0: expected a rate from 0 up to"):
        fit_head(layers, LABELS, model_meta={}, settings=FitSettings(dropout=1.0))
    for rate in (0.0, float("inf")):
        with pytest.raises(TrainingError, match=f"learning rate {rate}: expected a finite number > 0"):
            fit_head(layers, LABELS, model_meta={}, settings=FitSettings(learning_rate=rate))
    with pytest.raises(TrainingError, match="training diverged: .* not finite numbers; expected a smaller learning"):
        fit_head(layers, LABELS, model_meta={}, settings=FitSettings(epochs=3, batch_size=16, learning_rate=1e30))
    data = tmp_path / "labelled.csv"
    pd.DataFrame({"label": LABELS, "text": TEXTS}).to_csv(data, index=False)
    trained = CliRunner().invoke(main, ["train", str(data), "--label-column", "label", "--model", str(FIXTURE),
                                        "--out", str(tmp_path / "head"), "--epochs", "2", "--dropout", "0.5",
                                        "--learning-rate", "0.0003", "--cache-dir", str(tmp_path / "cache")])
    assert trained.exit_code == 0, trained.output
    settings = load_head(tmp_path / "head").meta["training"]["settings"]
    assert (settings["dropout"], settings["learning_rate"]) == (0.5, 0.0003)
    bad = CliRunner().invoke(main, ["train", str(data), "--label-column", "label", "--model", str(FIXTURE),
                                    "--out", str(tmp_path / "h2"), "--dropout", "1"])
    assert bad.exit_code == 2 and "--dropout" in bad.output
