"""The head: numpy scoring equals the trained Keras net, files load without unpickling, metrics and
splits are right, training is reproducible and refuses data it cannot learn from."""

import json
import pickle

import numpy as np
import pytest

from elmobatch.files import file_sha256
from elmobatch.training.metrics import classification_metrics, roc_auc, roc_curve
from elmobatch.training.fit import (FitSettings, TrainingError, best_f1_threshold, build_keras_model, fit_head,
                                    label_order, validation_split)
from elmobatch.training.head import HeadError, check_model, load_head, save_head
from elmobatch.training.split import SplitError, parse_split

TEXTS = ["WINNER!! Claim your free prize now, call 09061701461", "Ok lar... Joking wif u oni...",
         "URGENT! Your mobile won a £2000 bonus, text CLAIM to 81010", "I'll be home soon, want anything?",
         "FREE entry: win tickets, txt WIN to 87121 now", "Sorry, I'll call you later", "See you at 8 then",
         "Had a nice day? Dinner is in the fridge", "Congratulations! You've won a cruise, call 0800 now",
         "Can you pick up milk on the way back"] * 6
SPAM = [1, 0, 1, 0, 1, 0, 0, 0, 1, 0] * 6
FAST = FitSettings(epochs=4, batch_size=16)


@pytest.fixture(scope="module")
def layers(fixture_encoder):
    return fixture_encoder.embed_texts(TEXTS, layers=True)


@pytest.fixture(scope="module")
def trained(layers, fixture_encoder):
    labels = ["spam" if s else "ham" for s in SPAM]
    head, summary = fit_head(layers, labels, model_meta={"fingerprint": fixture_encoder.fingerprint}, settings=FAST)
    return head, summary


def test_numpy_scoring_equals_the_keras_net(trained, layers):
    head, _ = trained
    w = head.weights
    model = build_keras_model(layers.shape[1], layers.shape[2], 1, FAST)
    model.get_layer("mix").layer_logits.assign(w["layer_logits"])
    model.get_layer("mix").gamma.assign(w["gamma"])
    model.get_layer("hidden").set_weights([w["w1"], w["b1"]])
    model.get_layer("out").set_weights([w["w2"], w["b2"]])
    keras_p = model.predict((layers - w["mean"]) / w["std"], verbose=0)[:, 0]
    np.testing.assert_allclose(head.probabilities(layers)[:, 1], keras_p, atol=1e-5)
    assert np.isclose(head.layer_weights.sum(), 1.0)
    assert head.meta["layer_weights"] == pytest.approx(head.layer_weights.tolist())


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_same_seed_same_head_and_save_load_round_trip(trained, layers, fixture_encoder, tmp_path):
    head, summary = trained
    again, _ = fit_head(layers, ["spam" if s else "ham" for s in SPAM],
                        model_meta={"fingerprint": fixture_encoder.fingerprint}, settings=FAST)
    for name, value in head.weights.items():
        np.testing.assert_array_equal(value, again.weights[name], err_msg=name)
    save_head(head, tmp_path)
    loaded = load_head(tmp_path)
    np.testing.assert_array_equal(loaded.probabilities(layers), head.probabilities(layers))
    assert loaded.labels == ["ham", "spam"] and loaded.positive_label == "spam"
    assert summary["class_weights"]["spam"] > summary["class_weights"]["ham"]  # the rarer class weighs more
    assert summary["rows_validation"] >= 2  # both classes are in the validation slice


class Boom:
    """Unpickling this creates a file: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def reseal(directory):
    """Record head.npz's present sha256 in head.json, as a hostile head writer would."""
    meta = json.loads((directory / "head.json").read_text())
    meta["files"] = {"head.npz": file_sha256(directory / "head.npz")}
    (directory / "head.json").write_text(json.dumps(meta))


def test_loading_never_unpickles(trained, tmp_path):
    head, _ = trained
    marker = tmp_path / "code-ran"
    save_head(head, tmp_path / "object_array")
    arrays = {k: v for k, v in head.weights.items()}
    arrays["w1"] = np.array([Boom(marker)], dtype=object)
    np.savez(tmp_path / "object_array" / "head.npz", **arrays)
    reseal(tmp_path / "object_array")
    with pytest.raises(HeadError, match="pickled"):
        load_head(tmp_path / "object_array")

    save_head(head, tmp_path / "raw_pickle")
    (tmp_path / "raw_pickle" / "head.npz").write_bytes(pickle.dumps(Boom(marker)))
    reseal(tmp_path / "raw_pickle")
    with pytest.raises(HeadError, match="pickled"):
        load_head(tmp_path / "raw_pickle")
    assert not marker.exists()


def test_damaged_heads_get_clear_errors(trained, tmp_path):
    head, _ = trained
    with pytest.raises(HeadError, match="head.json is missing"):
        load_head(tmp_path)
    save_head(head, tmp_path)
    meta = json.loads((tmp_path / "head.json").read_text())
    meta["labels"] = ["a", "b", "c"]  # 3 labels, but the weights have one output
    (tmp_path / "head.json").write_text(json.dumps(meta))
    with pytest.raises(HeadError, match="w2"):
        load_head(tmp_path)


@pytest.mark.parametrize("threshold", ["NaN", "Infinity", "1.5", "-0.1", '"0.5"', "true", "null"])
def test_threshold_must_be_a_finite_probability(trained, tmp_path, threshold):
    head, _ = trained
    save_head(head, tmp_path)
    text = (tmp_path / "head.json").read_text()
    meta = json.loads(text)
    text = text.replace(f'"threshold": {json.dumps(meta["threshold"])}', f'"threshold": {threshold}')
    (tmp_path / "head.json").write_text(text)
    with pytest.raises(HeadError, match="'threshold' must be a finite probability between 0 and 1") as caught:
        load_head(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'head.json'}: ") and message.endswith(f"got {json.loads(threshold)!r}")


def test_another_model_fingerprint_is_refused(trained):
    head, _ = trained
    check_model(head, head.model_fingerprint)
    with pytest.raises(HeadError, match="fingerprint"):
        check_model(head, "0" * 64)


def test_single_label_and_bad_positive_label_are_refused(layers):
    with pytest.raises(TrainingError, match="one label value .*'ham'"):
        fit_head(layers, ["ham"] * len(layers), model_meta={"fingerprint": "x"}, settings=FAST)
    with pytest.raises(TrainingError, match="'eggs' is not among"):
        label_order(["ham", "spam"], positive="eggs")


def test_label_order_puts_the_positive_label_last():
    assert label_order(["a"] * 5 + ["b"] * 2) == ["a", "b"]
    assert label_order(["a"] * 2 + ["b"] * 5) == ["b", "a"]
    assert label_order(["a"] * 2 + ["b"] * 5, positive="b") == ["a", "b"]
    assert label_order(["x", "y", "z", "x"]) == ["x", "y", "z"]


def test_three_labels_get_a_softmax_head(layers, fixture_encoder):
    labels = [["spam", "chat", "home"][i % 3] if not s else "spam" for i, s in enumerate(SPAM)]
    head, _ = fit_head(layers, labels, model_meta={"fingerprint": fixture_encoder.fingerprint}, settings=FAST)
    assert head.labels == ["chat", "home", "spam"] and head.threshold is None
    proba = head.probabilities(layers)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    index, score = head.predict(layers)
    np.testing.assert_array_equal(index, proba.argmax(axis=1))
    np.testing.assert_allclose(score, proba.max(axis=1))


def test_validation_split_is_stratified_and_seeded():
    y = np.array([0] * 90 + [1] * 10)
    train, val = validation_split(y, 0.1, seed=3)
    assert sorted(np.r_[train, val]) == list(range(100))
    assert (y[val] == 1).sum() == 1 and (y[val] == 0).sum() == 9
    np.testing.assert_array_equal(val, validation_split(y, 0.1, seed=3)[1])


def test_metrics_match_brute_force():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).round(2)  # rounded: ties exercised
    pred = (p1 >= 0.5).astype(int)
    m = classification_metrics(y, pred, np.c_[1 - p1, p1], ["no", "yes"])
    tp, fp, fn = ((pred == 1) & (y == 1)).sum(), ((pred == 1) & (y == 0)).sum(), ((pred == 0) & (y == 1)).sum()
    assert m["accuracy"] == pytest.approx((pred == y).mean())
    assert m["precision"] == pytest.approx(tp / (tp + fp)) and m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    pairs = p1[y == 1][:, None] - p1[y == 0][None, :]
    assert m["roc_auc"] == pytest.approx(((pairs > 0).sum() + 0.5 * (pairs == 0).sum()) / pairs.size)
    assert m["confusion_matrix"]["rows_true_columns_predicted"] == [[int(((y == a) & (pred == b)).sum())
                                                                     for b in (0, 1)] for a in (0, 1)]
    fpr, tpr = roc_curve(y == 1, p1)
    assert np.trapezoid(tpr, fpr) == pytest.approx(m["roc_auc"])
    assert roc_auc(np.zeros(3, bool), np.arange(3.0)) is None


def test_best_f1_threshold_separates_when_it_can():
    score = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    t = best_f1_threshold(np.array([0, 0, 0, 1, 1], bool), score)
    assert 0.3 < t < 0.8


def test_split_specs():
    train, test = parse_split("last:0.2").indices(5572)
    assert (train[0], train[-1], len(train)) == (0, 4456, 4457) and (test[0], test[-1]) == (4457, 5571)
    a = parse_split("random:0.25:7").indices(100)
    assert len(a[1]) == 25 and not set(a[0]) & set(a[1])
    np.testing.assert_array_equal(a[1], parse_split("random:0.25:7").indices(100)[1])
    assert not np.array_equal(a[1], parse_split("random:0.25:8").indices(100)[1])
    for bad in ("first:0.2", "last:1.5", "last:x", "random:0.2:seed", "last:0.2:3"):
        with pytest.raises(SplitError, match="expected last:FRACTION"):
            parse_split(bad)
