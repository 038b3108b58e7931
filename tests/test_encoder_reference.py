"""The native TF2 biLM reproduces the reference implementation's outputs on the fixture."""

import numpy as np
import pytest

from elmobatch import load_encoder


def _max_error(outputs, reference):
    return max(float(np.abs(out - reference[f"s{i}"]).max()) for i, out in enumerate(outputs))


def test_all_sentences_in_one_mixed_batch_match_reference(fixture_encoder, fixture_sentences, reference):
    outputs = fixture_encoder.embed_tokens(fixture_sentences)
    assert len(outputs) == len(fixture_sentences) == 36
    for i, out in enumerate(outputs):
        assert out.shape == reference[f"s{i}"].shape
        assert out.dtype == np.float32
    assert _max_error(outputs, reference) <= 1e-5


def test_sentences_one_at_a_time_match_reference(fixture_encoder, fixture_sentences, reference):
    outputs = [fixture_encoder.embed_tokens([s])[0] for s in fixture_sentences]
    assert _max_error(outputs, reference) <= 1e-5


def test_encoder_attributes(fixture_encoder, fixture_dir):
    assert fixture_encoder.dim == 32
    assert fixture_encoder.path == str(fixture_dir)
    assert len(fixture_encoder.fingerprint) == 64
    assert load_encoder(str(fixture_dir)).fingerprint == fixture_encoder.fingerprint


def test_embed_texts_is_mean_of_layer_mix(fixture_encoder, fixture_sentences):
    texts = [" ".join(s) for s in fixture_sentences[:5]]
    per_layer = fixture_encoder.embed_texts(texts, layers=True)
    default = fixture_encoder.embed_texts(texts)
    assert per_layer.shape == (5, 3, 32) and default.shape == (5, 32)
    tokens = [fixture_encoder.tokenize(t) for t in texts]
    for i, layers in enumerate(fixture_encoder.embed_tokens(tokens)):
        np.testing.assert_allclose(per_layer[i], layers.mean(axis=1), atol=1e-6)
        np.testing.assert_allclose(default[i], layers.mean(axis=0).mean(axis=0), atol=1e-6)


def test_empty_message_is_zero_vector(fixture_encoder):
    out = fixture_encoder.embed_texts(["", "   ", "Hello there"])
    assert out.shape == (3, 32)
    assert not np.isnan(out).any()
    assert np.all(out[:2] == 0) and np.abs(out[2]).sum() > 0
    assert fixture_encoder.embed_tokens([[]])[0].shape == (3, 0, 32)


def test_a_single_str_is_refused_never_embedded_per_character(fixture_encoder):
    """embed_texts takes a list of messages; a bare str is a TypeError naming the fix, not len(str) vectors."""
    with pytest.raises(TypeError, match=r"embed_texts: expected a list of messages: pass \[text\] for one"):
        fixture_encoder.embed_texts("hello")
    with pytest.raises(TypeError, match="embed_texts: .*got a single bytes"):
        fixture_encoder.embed_texts(b"hello")
    with pytest.raises(TypeError, match=r"embed_tokens: expected a list of token lists.*got a list of str"):
        fixture_encoder.embed_tokens(["The", "cat"])
    with pytest.raises(TypeError, match="embed_tokens: .*got a single str"):
        fixture_encoder.embed_tokens("The cat")
    one = fixture_encoder.embed_texts(["hello"])
    assert one.shape == (1, fixture_encoder.dim)
    np.testing.assert_allclose(one[0], fixture_encoder.embed_texts(["hello", "other"])[0], atol=1e-6)


def test_the_encoders_batch_size_is_the_shared_default(fixture_encoder):
    from elmobatch.settings import DEFAULT_BATCH_SIZE

    assert type(fixture_encoder).batch_size == DEFAULT_BATCH_SIZE == 256
