"""A TF1 Hub ELMo module runs through load_encoder and agrees with the native encoder."""

import numpy as np
import pytest

from elmobatch import ModelError, load_encoder


@pytest.fixture(scope="module")
def hub_encoder(fixture_dir):
    return load_encoder(str(fixture_dir / "hub_module"))


def test_hub_module_matches_native(hub_encoder, fixture_encoder, fixture_sentences):
    assert hub_encoder.dim == fixture_encoder.dim == 32
    assert hub_encoder.n_layers == 2
    hub_out = hub_encoder.embed_tokens(fixture_sentences)
    native_out = fixture_encoder.embed_tokens(fixture_sentences)
    for h, n in zip(hub_out, native_out, strict=True):
        assert h.shape == n.shape
        assert np.abs(h - n).max() <= 1e-5


def test_hub_fingerprint_differs_from_native_and_is_stable(hub_encoder, fixture_dir, fixture_encoder):
    assert hub_encoder.fingerprint != fixture_encoder.fingerprint
    assert load_encoder(str(fixture_dir / "hub_module")).fingerprint == hub_encoder.fingerprint
    assert hub_encoder.tokenizer == "whitespace"


def test_non_elmo_saved_model_is_refused(tmp_path):
    import tensorflow as tf

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def double(self, x):
            return {"y": 2 * x}

    module = Doubler()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.double})
    with pytest.raises(ModelError, match="no 'tokens' signature"):
        load_encoder(str(tmp_path))
