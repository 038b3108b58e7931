"""The training path's LSTM layers (`lstm_sequence`, a hand-written backward pass) against the plain
step loop differentiated by TensorFlow (`BiLM.lstm_layers(plain=True)`): the same outputs and the
same gradients, over 3 layers with skip connections and sentences of different lengths. The clips
of the first configuration are small enough to be hit, so their gradients are checked too
(dropping either clip's mask fails this test)."""

import numpy as np
import pytest
from elmobatch._tensorflow import tf

from elmobatch.encoding.bilm import BiLM, BiLMConfig

# (projection_dim, cell_clip, proj_clip) with lstm_dim 16: projection_dim 16 means no projection
CONFIGS = {"projection, clips hit": (8, 0.5, 0.3), "no projection, cell clip": (16, 0.5, None),
           "projection, no clips": (8, None, None)}
LENGTHS = [9, 5, 2, 7]


def _bilm(projection_dim: int, cell_clip, proj_clip) -> BiLM:
    return BiLM(BiLMConfig.from_options({
        "char_cnn": {"activation": "relu", "embedding": {"dim": 4}, "filters": [[1, 8], [2, 8]],
                     "max_characters_per_token": 50, "n_characters": 262, "n_highway": 1},
        "lstm": {"cell_clip": cell_clip, "dim": 16, "n_layers": 3, "proj_clip": proj_clip,
                 "projection_dim": projection_dim, "use_skip_connections": True}}), seed=2)


def _layers_and_gradients(bilm: BiLM, plain: bool):
    x = tf.constant(np.random.default_rng(1).standard_normal((4, 9, bilm.config.projection_dim)), tf.float32)
    variables = list(bilm.variables_by_name.values())
    with tf.GradientTape() as tape:
        tape.watch(x)
        layers = bilm.lstm_layers(bilm.layout(), x, tf.constant(LENGTHS), plain=plain)
        loss = sum(tf.reduce_sum(tf.sin(2.0 * layer) * (k + 1)) for k, layer in enumerate(layers))
    grads = tape.gradient(loss, [x, *variables])
    return [layer.numpy() for layer in layers], {name: tf.convert_to_tensor(g).numpy()
                                                 for name, g in zip(["x", *bilm.variables_by_name], grads, strict=True)
                                                 if g is not None}


@pytest.mark.parametrize("name", CONFIGS)
def test_training_layers_and_gradients_equal_the_plain_graph(name):
    bilm = _bilm(*CONFIGS[name])
    layers, grads = _layers_and_gradients(bilm, plain=False)
    plain_layers, plain_grads = _layers_and_gradients(bilm, plain=True)
    for layer, plain in zip(layers, plain_layers, strict=True):
        np.testing.assert_allclose(layer, plain, atol=1e-6)
    assert grads.keys() == plain_grads.keys() and len(grads) >= 3 * 3  # x, and W_0 and B of every layer at least
    for key, g in grads.items():
        np.testing.assert_allclose(g, plain_grads[key], rtol=1e-4, atol=2e-5, err_msg=key)
    if name == "projection, clips hit":
        assert np.isclose(np.abs(layers[0]).max(), 0.3)  # the first layer's outputs reach the clip


def test_weights_laid_out_in_bfloat16_still_train_in_float32():
    """An encoder may lay out bfloat16 weights; the training path casts them to float32."""
    bilm = _bilm(8, 3.0, 3.0)
    x = tf.constant(np.random.default_rng(1).standard_normal((4, 9, 8)), tf.float32)
    bf16 = bilm.lstm_layers(bilm.layout(tf.bfloat16), x, tf.constant(LENGTHS))
    fp32 = bilm.lstm_layers(bilm.layout(), x, tf.constant(LENGTHS))
    assert bf16[-1].dtype == tf.float32
    np.testing.assert_allclose(bf16[-1].numpy(), fp32[-1].numpy(), atol=0.05)
