"""Ensemble heads (`train --members N`): N nets that differ only by seed, trained on the same rows and
validation slice; the head averages their logits, keeps the shape of each member's arrays, is
calibrated as one, survives saving, and a head.json whose members do not fit head.npz is refused."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from elmobatch.files import file_sha256
from elmobatch.training.fit import FitSettings, TrainingError, fit_head
from elmobatch.training.head import Head, HeadError, load_head, save_head
from tests.conftest import FIXTURE
from tests.test_head import SPAM, TEXTS

LABELS = ["spam" if s else "ham" for s in SPAM]
SETTINGS = dict(epochs=3, batch_size=16, validation_fraction=0.3, calibrate="temperature")


@pytest.fixture(scope="module")
def layers(fixture_encoder):
    return fixture_encoder.embed_texts(TEXTS, layers=True)


@pytest.fixture(scope="module")
def ensemble(layers, fixture_encoder):
    meta = {"fingerprint": fixture_encoder.fingerprint}
    return fit_head(layers, LABELS, model_meta=meta, settings=FitSettings(members=3, **SETTINGS))


def single_net(head: Head, i: int) -> Head:
    """Member i of an ensemble as a head of its own, uncalibrated."""
    meta = {k: v for k, v in head.meta.items() if k not in ("members", "calibration")}
    return Head(head.member_weights()[i], meta)


def test_an_ensemble_averages_the_logits_of_its_members(ensemble, layers):
    head, summary = ensemble
    w = head.weights
    assert head.members == 3 and head.meta["members"] == 3
    assert w["w1"].shape == (3, layers.shape[2], 256) and w["gamma"].shape == (3,)
    assert w["mean"].shape == layers.shape[1:]  # the standardization is shared
    members = [single_net(head, i).logits(layers) for i in range(3)]
    assert not np.allclose(members[0], members[1])  # the seeds differ
    np.testing.assert_allclose(head.logits(layers), np.mean(members, axis=0), rtol=1e-5, atol=1e-6)
    t = head.calibration["temperature"]
    np.testing.assert_allclose(head.probabilities(layers)[:, 1], 1 / (1 + np.exp(-head.logits(layers)[:, 0] / t)),
                               rtol=1e-5, atol=1e-6)
    assert len(summary["member_fits"]) == 3 and summary["architecture"].startswith("mean logits of 3 nets: ")
    assert head.meta["layer_weights"] == pytest.approx(head.layer_weights.tolist())
    assert sum(head.meta["layer_weights"]) == pytest.approx(1.0)


def test_the_first_member_is_the_single_net_of_the_same_seed(ensemble, layers, fixture_encoder):
    head, _ = ensemble
    single, _ = fit_head(layers, LABELS, model_meta={"fingerprint": fixture_encoder.fingerprint},
                         settings=FitSettings(**SETTINGS))
    assert single.members == 1 and single.weights["w1"].shape == (layers.shape[2], 256)
    for name, value in single.weights.items():
        np.testing.assert_array_equal(head.member_weights()[0][name], value, err_msg=name)


def test_an_ensemble_survives_saving(ensemble, layers, tmp_path):
    head, _ = ensemble
    save_head(head, tmp_path)
    loaded = load_head(tmp_path)
    assert loaded.members == 3 and json.loads((tmp_path / "head.json").read_text())["members"] == 3
    np.testing.assert_array_equal(loaded.probabilities(layers), head.probabilities(layers))


@pytest.mark.parametrize("members, message", [
    (2, r"array 'layer_logits' has shape \(3, 3\), expected \(2, 3\) for 2 labels and 2 members"),
    (1, r"array 'layer_logits' has shape \(3, 3\), expected \(3,\) for 2 labels"),
    ("three", "'members' must be a whole number >= 1, got 'three'"),
    (0, "'members' must be a whole number >= 1, got 0"),
])
def test_members_that_do_not_fit_the_weights_are_refused(ensemble, tmp_path, members, message):
    head, _ = ensemble
    save_head(head, tmp_path)
    meta = json.loads((tmp_path / "head.json").read_text())
    (tmp_path / "head.json").write_text(json.dumps(dict(meta, members=members)))
    with pytest.raises(HeadError, match=message):
        load_head(tmp_path)


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
    with pytest.raises(TrainingError, match="members 0: expected a whole number >= 1"):
        fit_head(layers, LABELS, model_meta={}, settings=FitSettings(members=0))


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_cli_trains_an_ensemble_and_score_applies_it(tmp_path, fixture_encoder):
    data = tmp_path / "messages.csv"
    pd.DataFrame({"label": LABELS * 2, "text": TEXTS * 2}).to_csv(data, index=False)
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(data), "--label-column", "label", "--model", str(FIXTURE),
                                  "--out", str(tmp_path / "head"), "--epochs", "2", "--members", "2",
                                  "--split", "last:0.2", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "head mlp (mean logits of 2 nets: layer mix -> Dense(256, relu) -> Dense(1, sigmoid))" in result.output
    head = load_head(tmp_path / "head")
    assert head.members == 2 and head.meta["training"]["settings"]["members"] == 2
    result = runner.invoke(main, ["score", str(data), "--head", str(tmp_path / "head"), "--out",
                                  str(tmp_path / "scored.csv"), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(tmp_path / "scored.csv")
    expected = head.probabilities(fixture_encoder.embed_texts(list(scored["text"]), layers=True))[:, 1]
    np.testing.assert_allclose(scored["score"], expected, rtol=1e-5, atol=1e-6)
    bad = runner.invoke(main, ["train", str(data), "--label-column", "label", "--model", str(FIXTURE),
                               "--out", str(tmp_path / "h2"), "--members", "0"])
    assert bad.exit_code == 2 and "--members" in bad.output
