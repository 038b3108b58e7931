"""Ensemble heads (`train --members N`): N nets that differ only by seed, trained on the same rows and
validation slice (or, with --validation-slices per-net, each early-stopped on its own); the head
averages their logits, keeps the shape of each member's arrays, is calibrated as one, survives saving,
and a head.json whose members do not fit head.npz is refused."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from elmobatch.files import file_sha256
from elmobatch.training.fit import FitSettings, TrainingError, fit_head, member_slices, validation_split
from elmobatch.training.head import Head, HeadError, load_head, save_head
from tests.conftest import FIXTURE
from tests.test_head import SPAM, TEXTS
from tests.test_head_kinds import assert_refused_with, train_then_score

LABELS = ["spam" if s else "ham" for s in SPAM]
SETTINGS = dict(epochs=3, batch_size=16, validation_fraction=0.3, calibrate="temperature")
MEMBERS = 4  # not the fixture's 3 layers: a member axis mistaken for the layer axis shows


@pytest.fixture(scope="module")
def layers(fixture_encoder):
    return fixture_encoder.embed_texts(TEXTS, layers=True)


@pytest.fixture(scope="module")
def ensemble(layers, fixture_encoder):
    meta = {"fingerprint": fixture_encoder.fingerprint}
    return fit_head(layers, LABELS, model_meta=meta, settings=FitSettings(members=MEMBERS, **SETTINGS))


def single_net(head: Head, i: int) -> Head:
    """Member i of an ensemble as a head of its own, uncalibrated."""
    meta = {k: v for k, v in head.meta.items() if k not in ("members", "calibration")}
    return Head(head.member_weights()[i], meta)


def log_loss(proba: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    return float(np.mean(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-7, 1)) * weights[y]))


def test_an_ensemble_averages_the_logits_of_its_members(ensemble, layers):
    head, summary = ensemble
    w = head.weights
    assert head.members == MEMBERS and head.meta["members"] == MEMBERS
    assert w["w1"].shape == (MEMBERS, layers.shape[2], 256) and w["gamma"].shape == (MEMBERS,)
    assert w["layer_logits"].shape == (MEMBERS, layers.shape[1])
    assert w["mean"].shape == layers.shape[1:]  # the standardization is shared
    members = [single_net(head, i).logits(layers) for i in range(MEMBERS)]
    assert not np.allclose(members[0], members[1])  # the seeds differ
    np.testing.assert_allclose(head.logits(layers), np.mean(members, axis=0), rtol=1e-5, atol=1e-6)
    t = head.calibration["temperature"]
    np.testing.assert_allclose(head.probabilities(layers)[:, 1], 1 / (1 + np.exp(-head.logits(layers)[:, 0] / t)),
                               rtol=1e-5, atol=1e-6)
    assert len(summary["member_fits"]) == MEMBERS and "epochs_run" not in summary
    assert summary["architecture"].startswith(f"mean logits of {MEMBERS} nets: ")
    y = np.array(SPAM, np.int64)
    _, val = validation_split(y, SETTINGS["validation_fraction"], 0)
    weights = np.array([summary["class_weights"][n] for n in head.labels])
    uncalibrated = head.first_members(MEMBERS).probabilities(layers[val])
    assert summary["validation_loss"] == pytest.approx(log_loss(uncalibrated, y[val], weights))
    assert head.meta["layer_weights"] == pytest.approx(head.layer_weights.tolist())
    assert sum(head.meta["layer_weights"]) == pytest.approx(1.0)


def test_the_first_member_is_the_single_net_of_the_same_seed(ensemble, layers, fixture_encoder):
    head, _ = ensemble
    single, _ = fit_head(layers, LABELS, model_meta={"fingerprint": fixture_encoder.fingerprint},
                         settings=FitSettings(**SETTINGS))
    assert single.members == 1 and single.weights["w1"].shape == (layers.shape[2], 256)
    for name, value in single.weights.items():
        np.testing.assert_array_equal(head.member_weights()[0][name], value, err_msg=name)
    # first_members(m): the ensemble of m, uncalibrated, as `--members m` trains it.
    np.testing.assert_array_equal(head.first_members(1).logits(layers), single.logits(layers))
    two = head.first_members(2)
    assert two.members == 2 and two.calibration == {"method": "none"}
    np.testing.assert_allclose(two.logits(layers), (single_net(head, 0).logits(layers)
                                                    + single_net(head, 1).logits(layers)) / 2, rtol=1e-5, atol=1e-6)
    with pytest.raises(HeadError, match=f"{MEMBERS + 1} members: this head has {MEMBERS}"):
        head.first_members(MEMBERS + 1)
    with pytest.raises(HeadError, match=f"an ensemble of {MEMBERS} nets has a mix per net"):
        head.mix(layers)


def test_per_net_slices_let_the_nets_together_train_on_every_row():
    y = np.array([1] * 40 + [0] * 160)
    shared = member_slices(y, FitSettings(members=10, validation_fraction=0.1))
    per_net = member_slices(y, FitSettings(members=10, validation_fraction=0.1, validation_slices="per-net"))
    assert all(np.array_equal(val, shared[0][1]) for _, val in shared)  # one slice: 20 rows train no net
    assert len(np.unique(np.concatenate([train for train, _ in shared]))) == 180
    for (_, val), seed in zip(per_net, range(10), strict=True):
        np.testing.assert_array_equal(val, validation_split(y, 0.1, seed)[1])  # net i: the slice of seed + i
        assert y[val].sum() == 4 and len(val) == 20  # each stratified like the shared one
    assert len(np.unique(np.concatenate([train for train, _ in per_net]))) == len(y)


def test_per_net_slices_keep_the_first_net_and_need_no_calibration_nor_best_f1_threshold(ensemble, layers):
    shared, _ = ensemble
    settings = dict(SETTINGS, calibrate="none", members=2, validation_slices="per-net")
    with pytest.raises(TrainingError, match="nothing to pick the best-F1 threshold on; expected a fixed threshold"):
        fit_head(layers, LABELS, model_meta={}, settings=FitSettings(**settings))
    with pytest.raises(TrainingError, match="calibration 'temperature': per-net validation slices hold .almost. no"):
        fit_head(layers, LABELS, model_meta={}, settings=FitSettings(**dict(settings, calibrate="temperature",
                                                                                threshold=0.5)))
    head, summary = fit_head(layers, LABELS, model_meta={}, settings=FitSettings(**settings, threshold=0.5))
    for name in ("w1", "w2", "layer_logits"):
        np.testing.assert_array_equal(head.member_weights()[0][name], shared.member_weights()[0][name])
        assert not np.array_equal(head.member_weights()[1][name], shared.member_weights()[1][name]), name
    assert head.threshold == 0.5 and head.calibration == {"method": "none"}
    assert summary["settings"]["validation_slices"] == "per-net"
    # The ensemble's validation loss is measured on the rows held out from both nets only.
    y = np.array(SPAM, np.int64)
    both = np.intersect1d(validation_split(y, 0.3, 0)[1], validation_split(y, 0.3, 1)[1])
    assert 0 < len(both) < len(validation_split(y, 0.3, 0)[1])
    weights = np.array([summary["class_weights"][n] for n in head.labels])
    assert summary["validation_loss"] == pytest.approx(log_loss(head.probabilities(layers[both]), y[both], weights))
    # One net: per-net is the shared slice, calibrated and thresholded on it as ever.
    single, _ = fit_head(layers, LABELS, model_meta={}, settings=FitSettings(**dict(SETTINGS, members=1,
                                                                                    validation_slices="per-net")))
    assert single.calibration["method"] == "temperature"


def test_an_ensemble_survives_saving(ensemble, layers, tmp_path):
    head, _ = ensemble
    save_head(head, tmp_path)
    loaded = load_head(tmp_path)
    meta = json.loads((tmp_path / "head.json").read_text())
    assert loaded.members == MEMBERS and meta["members"] == MEMBERS and meta["format_version"] == 2
    np.testing.assert_array_equal(loaded.probabilities(layers), head.probabilities(layers))


@pytest.mark.parametrize("change, message", [
    ({"members": 2}, r"array 'layer_logits' has shape \(4, 3\), expected \(2, 3\) for 2 labels and 2 members"),
    ({"members": 1}, r"array 'layer_logits' has shape \(4, 3\), expected \(3,\) for 2 labels"),
    ({"members": "three"}, "'members' must be a whole number >= 1, got 'three'"),
    ({"members": 0}, "'members' must be a whole number >= 1, got 0"),
    ({"format_version": 3, "head_kind": "gru"}, "format_version 3: this elmobatch reads heads of format 1 to 2; "
                                                 "a newer elmobatch wrote it"),  # said before what it has new
    ({"format_version": True}, "format_version True: this elmobatch reads"),
])
def test_members_that_do_not_fit_the_weights_are_refused(ensemble, tmp_path, change, message):
    assert_refused_with(ensemble[0], tmp_path, change, message)


def test_a_single_net_with_members_in_its_json_is_refused_by_shape(layers, fixture_encoder, tmp_path):
    single, _ = fit_head(layers, LABELS, model_meta={"fingerprint": fixture_encoder.fingerprint},
                         settings=FitSettings(epochs=1, head_kind="logistic", l2=0.01))
    save_head(single, tmp_path)
    meta = json.loads((tmp_path / "head.json").read_text())
    meta["members"] = 4
    meta["files"] = {"head.npz": file_sha256(tmp_path / "head.npz")}
    (tmp_path / "head.json").write_text(json.dumps(meta))
    with pytest.raises(HeadError, match=r"array 'layer_logits' has shape \(3,\), expected \(4, 3\)"):
        load_head(tmp_path)
    assert json.loads((tmp_path / "head.json").read_text())["format_version"] == 1  # as older elmobatch reads
    meta = json.loads((tmp_path / "head.json").read_text())
    del meta["format_version"], meta["members"]  # as heads were written before either
    (tmp_path / "head.json").write_text(json.dumps(meta))
    assert load_head(tmp_path).members == 1
    with pytest.raises(TrainingError, match="members 0: expected a whole number >= 1"):
        fit_head(layers, LABELS, model_meta={}, settings=FitSettings(members=0))


def test_a_logistic_ensemble_of_three_labels_averages_its_nets(layers, fixture_encoder, tmp_path):
    labels = [("spam" if s else ("short" if len(t) < 30 else "long")) for s, t in zip(SPAM, TEXTS, strict=True)]
    head, summary = fit_head(layers, labels, model_meta={"fingerprint": fixture_encoder.fingerprint},
                             settings=FitSettings(epochs=2, batch_size=16, validation_fraction=0.3, members=2,
                                                  head_kind="logistic", l2=0.01, calibrate="temperature"))
    assert head.threshold is None and "w1" not in head.weights and head.weights["w2"].shape == (2, layers.shape[2], 3)
    mean_logits = (single_net(head, 0).logits(layers) + single_net(head, 1).logits(layers)) / 2
    np.testing.assert_allclose(head.logits(layers), mean_logits, rtol=1e-5, atol=1e-6)
    t = head.calibration["temperature"]
    expected = np.exp(mean_logits / t) / np.exp(mean_logits / t).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(head.probabilities(layers), expected, rtol=1e-4, atol=1e-6)
    save_head(head, tmp_path)
    np.testing.assert_array_equal(load_head(tmp_path).probabilities(layers), head.probabilities(layers))


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_cli_trains_an_ensemble_and_score_applies_it(tmp_path, fixture_encoder):
    head, output, data = train_then_score(tmp_path, fixture_encoder, "--epochs", "2", "--members", "2")
    assert "head mlp (mean logits of 2 nets: layer mix -> Dense(256, relu) -> Dense(1, sigmoid))" in output
    assert "net 2 of 2: trained 2 epochs" in output
    assert head.members == 2 and head.meta["training"]["settings"]["members"] == 2
    bad = CliRunner().invoke(main, ["train", str(data), "--label-column", "label", "--model", str(FIXTURE),
                                    "--out", str(tmp_path / "h2"), "--members", "0"])
    assert bad.exit_code == 2 and "--members" in bad.output
    per_net = CliRunner().invoke(main, ["train", str(data), "--label-column", "label", "--model", str(FIXTURE),
                                        "--out", str(tmp_path / "h3"), "--members", "2", "--validation-slices",
                                        "per-net", "--cache-dir", str(tmp_path / "cache")])
    assert per_net.exit_code == 2, per_net.output  # before the model loads or anything is read
    assert "Error: per-net validation slices hold (almost) no row out from every net, so nothing to pick the " \
           "best-F1 threshold on; expected a fixed threshold" in per_net.output
