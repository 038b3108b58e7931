"""The embedding cache: computes each (model, normalized text) once; damaged files are never served."""

import json
import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner

from elmobatch import load_encoder
from elmobatch.caching import EmbeddingCache, normalize_text, text_hash
from elmobatch.cli import main
from tests.conftest import FIXTURE, mounted_tmpfs, tiny_options, write_random_model

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


@pytest.mark.parametrize("damage", ["no n", "n is text", "not an object"])
def test_header_with_a_valid_checksum_but_bad_fields_is_corrupt(tmp_path, fixture_encoder, damage):
    texts = ["one message", "another message here"]
    expected, _ = EmbeddingCache(tmp_path).embed(fixture_encoder, texts)
    [segment] = EmbeddingCache(tmp_path).segments(fixture_encoder.fingerprint)
    data = segment.read_bytes()
    length = struct.unpack("<I", data[8:12])[0]
    header = json.loads(data[16 : 16 + length])
    if damage == "no n":
        del header["n"]
    elif damage == "n is text":
        header["n"] = "2"
    else:
        header = [header]
    new_header = json.dumps(header).encode()  # its checksum recomputed: only the fields are wrong
    segment.write_bytes(b"EBCACHE1" + struct.pack("<II", len(new_header), zlib.crc32(new_header)) + new_header
                        + data[16 + length :])
    cache = EmbeddingCache(tmp_path)
    assert cache.models()[0]["vectors"] == 0  # counted as empty, no error
    layers, _ = cache.embed(fixture_encoder, texts)
    assert (cache.corrupt, cache.computed, cache.hits) == (1, 2, 0)
    np.testing.assert_array_equal(layers, expected)
    assert segment.with_name(segment.name + ".corrupt").exists()


def test_cache_on_a_full_disk_names_the_cache_path(tmp_path):
    messages = tmp_path / "day.csv"
    messages.write_text("v1,v2\nham,see you at 8\nspam,WIN a prize now\n")
    with mounted_tmpfs(tmp_path / "cache") as cache_dir:
        with open(cache_dir / "filler", "wb") as f:  # fill the disk to the last block
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        result = CliRunner().invoke(main, ["embed", str(messages), "--out", str(tmp_path / "out"),
                                           "--model", str(FIXTURE), "--cache-dir", str(cache_dir)])
        assert result.exit_code == 1
        [line] = result.output.strip().splitlines()
        assert line.startswith(f"Error: embedding cache: cannot write {cache_dir}/v1/")
        assert "No space left on device" in line and "--cache-dir" in line
        assert not list(cache_dir.rglob(".tmp-*"))


def test_a_folder_not_named_by_a_fingerprint_is_no_model_and_prune_goes_on(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    (tmp_path / "cache" / "v1" / "backup-old").mkdir(parents=True)
    assert cache.fingerprints() == []
    cache.prune(older_than_days=30)  # raised ValueError ("expected a hex digest") after a run's work
    assert (tmp_path / "cache" / "v1" / "backup-old").is_dir()
