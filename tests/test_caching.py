"""The embedding cache: computes each (model, normalized text) once; damaged files are never served."""

import numpy as np
import pytest

from elmobatch import load_encoder
from elmobatch.caching import EmbeddingCache, normalize_text, text_hash
from tests.conftest import tiny_options, write_random_model

TEXTS = ["Hello world", "Hello   world ", "\tHello world", "Free entry!! Call 0800", "", "   ",
         "Free entry!! Call 0800"]


def test_dedup_normalization_and_hits(tmp_path, fixture_encoder):
    cache = EmbeddingCache(tmp_path)
    layers, n_tokens = cache.embed(fixture_encoder, TEXTS)
    assert layers.shape == (7, fixture_encoder.n_layers + 1, fixture_encoder.dim) and layers.dtype == np.float32
    assert (cache.computed, cache.hits) == (3, 4)  # "Hello world" x3, "Free entry..." x2, "" = "   "
    np.testing.assert_allclose(layers, fixture_encoder.embed_texts(TEXTS, layers=True), atol=1e-6)
    assert list(n_tokens) == [2, 2, 2, 5, 0, 0, 5]
    assert normalize_text(TEXTS[1]) == "Hello world" and text_hash(TEXTS[0]) == text_hash(TEXTS[2])
    again = EmbeddingCache(tmp_path)
    layers2, n_tokens2 = again.embed(fixture_encoder, TEXTS[::-1])
    assert (again.computed, again.hits) == (0, 7)
    np.testing.assert_array_equal(layers2, layers[::-1])
    np.testing.assert_array_equal(n_tokens2, n_tokens[::-1])


def test_other_model_gets_nothing(tmp_path, fixture_encoder):
    cache = EmbeddingCache(tmp_path / "cache")
    first, _ = cache.embed(fixture_encoder, ["a message"])
    other = load_encoder(str(write_random_model(tmp_path / "other", tiny_options(projection_dim=16))))
    assert other.dim == fixture_encoder.dim and other.fingerprint != fixture_encoder.fingerprint
    second, _ = cache.embed(other, ["a message"])
    assert (cache.computed, cache.hits) == (2, 0)
    np.testing.assert_allclose(second, other.embed_texts(["a message"], layers=True), atol=1e-6)
    assert not np.allclose(first, second)


@pytest.mark.parametrize("where", ["data", "index", "header", "truncated"])
def test_corrupted_segment_is_detected_and_recomputed(tmp_path, fixture_encoder, where):
    texts = ["one message", "another message here", "third"]
    first = EmbeddingCache(tmp_path)
    expected, _ = first.embed(fixture_encoder, texts)
    [segment] = first.segments(fixture_encoder.fingerprint)
    data = bytearray(segment.read_bytes())
    if where == "truncated":
        data = data[:-7]
    else:
        offset = {"data": len(data) - 5, "index": len(data) - expected.nbytes - 10, "header": 20}[where]
        data[offset] ^= 0xFF
    segment.write_bytes(bytes(data))
    cache = EmbeddingCache(tmp_path)
    layers, _ = cache.embed(fixture_encoder, texts)
    assert (cache.corrupt, cache.computed, cache.hits) == (1, 3, 0)
    np.testing.assert_array_equal(layers, expected)
    assert segment.with_name(segment.name + ".corrupt").exists()
    assert EmbeddingCache(tmp_path).embed(fixture_encoder, texts)[0].tobytes() == expected.tobytes()


@pytest.mark.parametrize("where", ["data", "truncated"])
def test_damage_found_by_a_long_lived_cache_object(tmp_path, fixture_encoder, where):
    texts = ["one message", "another message here", "third"]
    cache = EmbeddingCache(tmp_path)
    expected, _ = cache.embed(fixture_encoder, texts)
    assert cache.embed(fixture_encoder, texts)[0].tobytes() == expected.tobytes()  # served from the cache
    [segment] = cache.segments(fixture_encoder.fingerprint)
    data = bytearray(segment.read_bytes())
    if where == "truncated":
        data = data[:-7]
    else:
        data[-5] ^= 0xFF
    segment.write_bytes(bytes(data))
    layers, _ = cache.embed(fixture_encoder, texts)
    assert cache.corrupt == 1 and cache.computed == 6  # 3 at first, 3 again
    np.testing.assert_array_equal(layers, expected)


def test_hits_across_many_segments(tmp_path, fixture_encoder):
    texts = [f"message number {i}" for i in range(12)]
    writer = EmbeddingCache(tmp_path)
    for start in range(0, 12, 3):  # four segments
        writer.embed(fixture_encoder, texts[start : start + 3])
    assert len(writer.segments(fixture_encoder.fingerprint)) == 4
    reader = EmbeddingCache(tmp_path)
    layers, _ = reader.embed(fixture_encoder, texts[::-1] + ["not cached yet"])
    assert (reader.hits, reader.computed) == (12, 1)
    np.testing.assert_allclose(layers[:12], fixture_encoder.embed_texts(texts[::-1], layers=True), atol=1e-6)
