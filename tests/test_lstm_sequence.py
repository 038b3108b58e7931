"""The training path's LSTM (hand-written backward pass) against automatic differentiation of the
plain step loop `BiLM.run_lstm`: the same outputs and the same gradients. The clips are small
enough to be hit, so their gradients are checked too (dropping either mask fails this test)."""

import numpy as np
import pytest
from elmobatch._tensorflow import tf

from elmobatch.encoding.bilm import BiLM, BiLMConfig, _gates_by_step
from elmobatch.encoding.lstm_sequence import lstm_sequence

OPTIONS = {
    "char_cnn": {"activation": "relu", "embedding": {"dim": 4}, "filters": [[1, 8], [2, 8]],
                 "max_characters_per_token": 50, "n_characters": 262, "n_highway": 1},
    "lstm": {"cell_clip": 0.5, "dim": 16, "n_layers": 1, "proj_clip": 0.3, "projection_dim": 8,
             "use_skip_connections": False},
}


def _both_ways(options: dict, steps: int = 7, batch: int = 5):
    """Outputs and gradients of a fixed random loss, by `lstm_sequence` and by autodiff of `run_lstm`."""
    bilm = BiLM(BiLMConfig.from_options(options), seed=3)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((2, steps, batch, bilm.config.projection_dim)), tf.float32)
    probe = tf.constant(rng.standard_normal((2, steps, batch, bilm.config.projection_dim)), tf.float32)
    variables = list(bilm.variables_by_name.values())
    results = []
    for by_hand in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(x)
            weights = bilm.layout()
            gates = bilm.input_gates(weights, 0, x)
            if by_hand:
                lstm = weights.lstm[0]
                out = lstm_sequence(tf.stack(gates), lstm.w_recurrent, lstm.w_proj,
                                    bilm.config.cell_clip, bilm.config.proj_clip)
            else:
                zeros = [bilm.zero_state(), bilm.zero_state()]
                out = bilm.run_lstm(weights, 0, _gates_by_step(gates), (steps, batch), None, zeros)
            loss = tf.reduce_sum(tf.sin(3.0 * out) * probe)
        grads = tape.gradient(loss, [x, *variables])
        results.append((out.numpy(), [None if g is None else tf.convert_to_tensor(g).numpy() for g in grads]))
    return results


@pytest.mark.parametrize("projection", [True, False], ids=["projection", "no-projection"])
def test_outputs_and_gradients_match_automatic_differentiation(projection):
    options = {**OPTIONS, "lstm": {**OPTIONS["lstm"]}}
    if not projection:
        options["lstm"]["projection_dim"] = options["lstm"]["dim"]
        options["char_cnn"]["filters"] = [[1, 8], [2, 8]]  # n_filters 16 = projection_dim: no CNN projection
    (out, grads), (out_ref, grads_ref) = _both_ways(options)
    np.testing.assert_allclose(out, out_ref, atol=1e-6)
    assert np.abs(out_ref).max() == pytest.approx(0.3) or not projection  # the output clip is active
    compared = 0
    for g, g_ref in zip(grads, grads_ref, strict=True):
        if g_ref is None:
            continue
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-5)
        compared += 1
    assert compared >= 4  # x, W_0, B, and W_P_0 or the CNN's weights at least
