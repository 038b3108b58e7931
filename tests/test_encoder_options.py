"""Every option of the official format is honoured; outputs do not depend on batch or padding."""

import json

import h5py
import numpy as np
import pytest

from elmobatch import ModelError, load_encoder
from elmobatch.encoding.bilm import expected_shapes, BiLMConfig
from tests.conftest import tiny_options, write_random_model

SENTENCES = [
    ["A", "short", "one"],
    ["Hi"],
    ["A", "much", "longer", "sentence", "with", "supercalifragilisticexpialidocious", "words", "in", "it", "!"],
    ["Ünïcödé", "tökens", "😀"],
]

VARIANTS = {
    "tanh": dict(activation="tanh"),
    "skip_connections": dict(use_skip_connections=True),
    "no_highway": dict(n_highway=0),
    "no_projection": dict(dim=8, projection_dim=8),  # LSTM output is already projection_dim wide
    "no_cnn_projection": dict(filters=[[1, 4], [2, 4]]),  # 8 filters == projection_dim: no CNN_proj
    "three_layers": dict(n_layers=3),
    "one_layer": dict(n_layers=1),
    "30_chars": dict(max_characters_per_token=30),
    "no_clipping": dict(cell_clip=None, proj_clip=None),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, tmp_path_factory):
    options = tiny_options(**VARIANTS[request.param])
    directory = write_random_model(tmp_path_factory.mktemp(request.param), options)
    return request.param, options, load_encoder(str(directory))


def test_shapes_and_layers(variant):
    name, options, enc = variant
    n_layers = options["lstm"]["n_layers"]
    assert enc.dim == 2 * options["lstm"]["projection_dim"] == 16
    outputs = enc.embed_tokens(SENTENCES)
    for sentence, out in zip(SENTENCES, outputs, strict=True):
        assert out.shape == (n_layers + 1, len(sentence), 16)
        assert np.isfinite(out).all()
        # Layer 0 is the token representation, duplicated.
        np.testing.assert_array_equal(out[0, :, :8], out[0, :, 8:])
    assert enc.embed_texts(["a b", ""], layers=True).shape == (2, n_layers + 1, 16)


def test_batch_and_padding_independence(variant):
    _, _, enc = variant
    together = enc.embed_tokens(SENTENCES)
    for sentence, batched in zip(SENTENCES, together, strict=True):
        alone = enc.embed_tokens([sentence])[0]
        assert np.abs(alone - batched).max() <= 1e-5
    # The same sentence next to a very long one (much padding) is unchanged.
    padded = enc.embed_tokens([SENTENCES[1], ["word"] * 120])[0]
    assert np.abs(padded - together[1]).max() <= 1e-5


def test_empty_message(variant):
    _, options, enc = variant
    out = enc.embed_texts(["", "  \t "], layers=True)
    assert out.shape == (2, options["lstm"]["n_layers"] + 1, 16)
    assert np.all(out == 0)


def test_options_change_the_model(variant):
    name, options, enc = variant
    base = load_encoder(str(write_random_model_cached(tiny_options())))
    assert enc.fingerprint != base.fingerprint


_BASE = {}


def write_random_model_cached(options):
    import tempfile
    from pathlib import Path

    if "dir" not in _BASE:
        _BASE["dir"] = write_random_model(Path(tempfile.mkdtemp()), options)
    return _BASE["dir"]


def test_long_token_is_truncated_to_max_chars(tmp_path):
    enc = load_encoder(str(write_random_model(tmp_path, tiny_options(max_characters_per_token=10))))
    a, b = enc.embed_tokens([["abcdefghXYZ"], ["abcdefghQQQ"]])  # same first 8 bytes
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_weights_change_changes_fingerprint(tmp_path):
    directory = write_random_model(tmp_path, tiny_options())
    before = load_encoder(str(directory)).fingerprint
    with h5py.File(directory / "weights.hdf5", "r+") as f:
        f["char_embed"][0, 0] += 1.0
    assert load_encoder(str(directory)).fingerprint != before
    assert load_encoder(str(directory), tokenizer="whitespace").fingerprint != load_encoder(str(directory)).fingerprint


# ---- errors name the file, the dataset and what was expected -------------------------------


def test_missing_directory():
    with pytest.raises(ModelError, match="no such model directory"):
        load_encoder("/nonexistent/model")


def test_missing_weights_file(tmp_path):
    (tmp_path / "options.json").write_text(json.dumps(tiny_options()))
    with pytest.raises(ModelError, match=r"weights.hdf5: weight file not found"):
        load_encoder(str(tmp_path))


def test_missing_dataset_is_named(tmp_path):
    directory = write_random_model(tmp_path, tiny_options())
    with h5py.File(directory / "weights.hdf5", "r+") as f:
        del f["CNN_high_0/W_carry"]
    with pytest.raises(ModelError, match=r"dataset 'CNN_high_0/W_carry' is missing"):
        load_encoder(str(directory))


def test_wrong_shape_is_named(tmp_path):
    directory = write_random_model(tmp_path, tiny_options())
    options = tiny_options(dim=32)  # the file was written for dim 24
    (directory / "options.json").write_text(json.dumps(options))
    expected = r"RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0' has shape \(16, 96\), the options call for \(16, 128\)"
    with pytest.raises(ModelError, match=expected):
        load_encoder(str(directory))


def test_bad_options_are_named(tmp_path):
    (tmp_path / "options.json").write_text(json.dumps({"lstm": {}}))
    (tmp_path / "weights.hdf5").write_bytes(b"")
    with pytest.raises(ModelError, match=r"options.json: not valid ELMo options \(missing key 'char_cnn'\)"):
        load_encoder(str(tmp_path))
    (tmp_path / "options.json").write_text(json.dumps(tiny_options(activation="gelu")))
    with pytest.raises(ModelError, match="activation must be relu or tanh"):
        load_encoder(str(tmp_path))


def test_not_an_hdf5_file(tmp_path):
    (tmp_path / "options.json").write_text(json.dumps(tiny_options()))
    (tmp_path / "weights.hdf5").write_text("not hdf5")
    with pytest.raises(ModelError, match="weights.hdf5: not an HDF5 file"):
        load_encoder(str(tmp_path))


def test_saved_file_has_official_layout(tmp_path, fixture_dir):
    config = BiLMConfig.from_options(json.loads((fixture_dir / "options.json").read_text()))
    with h5py.File(fixture_dir / "weights.hdf5") as f:
        names = set()
        f.visititems(lambda n, o: names.add(n) if isinstance(o, h5py.Dataset) else None)
    assert names == set(expected_shapes(config))
