"""The fast paths agree with the plain path: float32 within 1e-5, bf16 within its bounds."""

import numpy as np
import pytest
import tensorflow as tf

from elmobatch import ModelError, load_encoder
from elmobatch.encoding import tokens as tok
from elmobatch.encoding.bilm import BiLM, BiLMConfig
from tests.conftest import tiny_options

SENTENCES = [["Free", "entry", "in", "2", "a", "wkly", "comp", "to", "win", "FA", "Cup", "final", "tkts"],
             ["Ok", "lar", "...", "Joking", "wif", "u", "oni", "..."], ["Hi"], ["the"] * 40]


def plain_layers(bilm, sentences):
    """The training graph: char ids per position, weights laid out from the variables on each call."""
    token_repr, lstm_layers, _ = bilm(tok.char_ids(sentences, bilm.config.max_characters_per_token))
    layers = [tf.concat([token_repr, token_repr], -1)] + [tf.concat([layer[0], layer[1]], -1) for layer in lstm_layers]
    out = tf.stack(layers, axis=1).numpy()
    return [out[i, :, 1 : len(s) + 1] for i, s in enumerate(sentences)]


@pytest.fixture(scope="module", params=["fixture", pytest.param("skip_3_layers", marks=pytest.mark.slow)])
def model_dir(request, fixture_dir, tmp_path_factory):
    if request.param == "fixture":
        return fixture_dir
    # Fan-in-scaled random weights (BiLM's own initialisation), 3 layers with skip connections.
    directory = tmp_path_factory.mktemp("m")
    BiLM(BiLMConfig.from_options(tiny_options(use_skip_connections=True, n_layers=3)), seed=3).save(directory)
    return directory


def test_float32_fast_path_equals_plain_path(model_dir):
    enc = load_encoder(str(model_dir))
    fast = enc.embed_tokens(SENTENCES)
    for f, p in zip(fast, plain_layers(enc.bilm, SENTENCES), strict=True):
        assert f.shape == p.shape
        assert np.abs(f - p).max() <= 1e-5


def test_bf16_is_close_to_float32(model_dir, fixture_sentences):
    fp32 = load_encoder(str(model_dir)).pool_tokens(fixture_sentences)
    bf16_enc = load_encoder(str(model_dir), precision="bf16")
    bf16 = bf16_enc.pool_tokens(fixture_sentences)
    cosine = (fp32 * bf16).sum(-1) / np.linalg.norm(fp32, axis=-1) / np.linalg.norm(bf16, axis=-1)
    assert cosine.min() >= 0.999
    assert not np.array_equal(fp32, bf16)  # it really ran in another precision
    assert bf16_enc.fingerprint == load_encoder(str(model_dir)).fingerprint  # same model...
    assert bf16_enc.cache_key != bf16_enc.fingerprint  # ...cached apart


def test_unknown_precision_and_hub_bf16_are_refused(fixture_dir):
    with pytest.raises(ModelError, match="unknown precision 'int4'"):
        load_encoder(str(fixture_dir), precision="int4")
    with pytest.raises(ModelError, match="float32 only"):
        load_encoder(str(fixture_dir / "hub_module"), precision="bf16")


@pytest.mark.slow  # the default model on 1,115 rows, twice
def test_bf16_gives_the_default_heads_labels_on_the_reference_test_rows():
    import pandas as pd

    from elmobatch.training.head import default_head_dir, load_head
    from tests.conftest import SMS

    texts = pd.read_csv(SMS, encoding="latin-1").iloc[4457:, 1].astype(str).tolist()
    assert len(texts) == 1115
    head = load_head(default_head_dir())
    fp32 = load_encoder("default").embed_texts(texts, layers=True)
    bf16 = load_encoder("default", precision="bf16").embed_texts(texts, layers=True)
    cosine = (fp32 * bf16).sum(-1) / np.maximum(np.linalg.norm(fp32, axis=-1) * np.linalg.norm(bf16, axis=-1), 1e-30)
    assert cosine[np.linalg.norm(fp32, axis=-1) > 0].min() >= 0.999
    same = (head.predict(fp32)[0] == head.predict(bf16)[0]).mean()
    assert same >= 0.999, f"bf16 changed {int(round((1 - same) * len(texts)))} labels"


def test_repeated_messages_are_computed_once(fixture_dir):
    enc = load_encoder(str(fixture_dir))
    rows = []
    run_batch = enc._run_batch
    enc._run_batch = lambda sentences: rows.extend(sentences) or run_batch(sentences)
    repeated = [SENTENCES[0], SENTENCES[1], SENTENCES[0], [], SENTENCES[0]]
    pooled = enc.pool_tokens(repeated)
    assert len(rows) == 2  # two distinct non-empty sentences
    assert np.array_equal(pooled[0], pooled[2]) and np.array_equal(pooled[0], pooled[4])
    assert not pooled[3].any()
    alone = load_encoder(str(fixture_dir)).pool_tokens([SENTENCES[0]])
    assert np.abs(pooled[0] - alone[0]).max() <= 1e-6


def test_remembered_word_vectors_change_nothing_and_stay_bounded(fixture_dir):
    fresh = load_encoder(str(fixture_dir)).embed_tokens(SENTENCES)
    enc = load_encoder(str(fixture_dir))
    enc.word_memory_bytes = 4 * enc.bilm.config.projection_dim * 8  # room for 8 words
    n_words = len({w for s in SENTENCES for w in s})
    for _ in range(2):  # the second pass reads remembered vectors where it can
        for sentence, expected in zip(SENTENCES, fresh, strict=True):
            assert np.abs(enc.embed_tokens([sentence])[0] - expected).max() <= 1e-5
    assert 0 < len(enc._words) < n_words
