"""The biLM's inference path: its word-table layout, its preconditions, and weights passed explicitly."""

import numpy as np
import pytest
import tensorflow as tf

from elmobatch import load_encoder
from elmobatch.encoding import tokens as tok
from elmobatch.encoding.bilm import load_bilm

SENTENCES = [["a", "b", "a"], ["c"], []]


def test_word_batch_rows_are_the_named_rows_and_tokens_only_drops_the_boundaries():
    words, positions, lengths = tok.word_batch(SENTENCES)
    assert words == ["a", "b", "c"]
    np.testing.assert_array_equal(positions[:, 0], tok.BEGIN_SENTENCE_ROW)
    np.testing.assert_array_equal(positions[[0, 1, 2], lengths - 1], tok.END_SENTENCE_ROW)
    assert positions[0, 1] == positions[0, 3] == tok.FIRST_WORD_ROW  # "a", the first word
    assert positions[2, 2] == positions[2, 3] == tok.NO_TOKEN_ROW  # past the empty sentence's </S>
    boundary = tok.boundary_char_ids(8)
    assert boundary.shape[0] == tok.FIRST_WORD_ROW and not boundary[tok.NO_TOKEN_ROW].any()
    assert boundary[tok.BEGIN_SENTENCE_ROW, 1] == tok.BEGIN_SENTENCE + 1
    assert boundary[tok.END_SENTENCE_ROW, 1] == tok.END_SENTENCE + 1
    token_positions, n_tokens = tok.tokens_only(positions, lengths)
    np.testing.assert_array_equal(n_tokens, [3, 1, 0])
    np.testing.assert_array_equal(token_positions[0], [3, 4, 3])
    assert token_positions[1, 0] == 5


def test_embed_refuses_rows_that_are_not_longest_first(fixture_dir):
    bilm = load_bilm(fixture_dir)
    weights = bilm.layout()
    words, positions, lengths = tok.word_batch([["c"], ["a", "b"]])  # shortest first
    table = np.concatenate([tok.boundary_char_ids(bilm.config.max_characters_per_token)]
                           + [tok.word_char_ids(w, bilm.config.max_characters_per_token)[None] for w in words])
    word_repr = bilm.token_layer(weights, table)
    token_positions, n_tokens = tok.tokens_only(positions, lengths)
    with pytest.raises(tf.errors.InvalidArgumentError, match="n_tokens must be sorted longest first"):
        bilm.embed(weights, word_repr, tf.constant(token_positions), tf.constant(n_tokens))
    layers = bilm.embed(weights, word_repr, tf.constant(token_positions[::-1]), tf.constant(n_tokens[::-1]))
    assert len(layers) == bilm.config.n_layers


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_an_encoders_weights_leave_its_bilms_training_path_in_float32(fixture_dir, fixture_sentences):
    """The encoder lays out its own (here bfloat16) weights; calling the biLM still lays out float32
    weights from its variables, as training does."""
    ids = tok.char_ids(fixture_sentences[:4], 50)
    plain = load_bilm(fixture_dir)(ids)
    bf16_encoder = load_encoder(str(fixture_dir), precision="bf16")
    bf16_encoder.embed_tokens(fixture_sentences[:4])
    after = bf16_encoder.bilm(ids)
    np.testing.assert_array_equal(after[0].numpy(), plain[0].numpy())
    for a, p in zip(after[1], plain[1], strict=True):
        np.testing.assert_array_equal(a.numpy(), p.numpy())


def test_the_training_path_on_a_word_table_equals_the_per_position_path(fixture_dir, fixture_sentences):
    """`on_word_table` (token layer once per distinct word, char ids cut to the fewest columns)
    gives the per-position call's layers and gradients, within float rounding, for short words and
    with one word too long to be cut."""
    bilm = load_bilm(fixture_dir)
    max_chars, variables = bilm.config.max_characters_per_token, list(bilm.variables_by_name.values())
    long_url = ["see", "https://example.com/a/very/long/path/that/goes/on/and/on", "x"]
    for sentences, cut in ((fixture_sentences[:6] + [[]], True), (fixture_sentences[:6] + [long_url], False)):
        word_chars, positions = tok.word_table(sentences, max_chars, bilm.config.widest_filter)
        assert (word_chars.shape[1] < max_chars) == cut
        real = tf.constant(positions != tok.NO_TOKEN_ROW)
        results = []
        calls = [(bilm, [tok.char_ids(sentences, max_chars)]), (bilm.on_word_table, [word_chars, positions])]
        for call, inputs in calls:
            with tf.GradientTape() as tape:
                token_repr, layers, lengths = call(*map(tf.constant, inputs))
                at_tokens = [tf.boolean_mask(tf.transpose(layer, [1, 2, 0, 3]), real) for layer in layers]
                loss = tf.reduce_sum(tf.sin(3.0 * tf.boolean_mask(token_repr, real))) + sum(
                    tf.reduce_sum(tf.sin(3.0 * x)) for x in at_tokens)
            grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, variables)]
            results.append((lengths.numpy(), [x.numpy() for x in at_tokens], grads))
        (lengths, layers, grads), (plain_lengths, plain_layers, plain_grads) = results[1], results[0]
        np.testing.assert_array_equal(lengths, plain_lengths)
        for a, p in zip(layers, plain_layers, strict=True):
            np.testing.assert_allclose(a, p, atol=1e-5)
        for a, p in zip(grads, plain_grads, strict=True):
            np.testing.assert_allclose(a, p, rtol=1e-4, atol=1e-5)
