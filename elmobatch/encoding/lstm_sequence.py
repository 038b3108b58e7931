"""The training path's LSTM layer: both directions over a whole batch, with a hand-written backward pass.

Same equations as `BiLM.lstm_step` (TF1's LSTMCell with a projection, forget bias folded into the
input gates, cell and output clipped); `tests/test_lstm_sequence.py` checks outputs and gradients
against automatic differentiation of `BiLM.run_lstm`.

Why by hand: differentiating the step loop automatically computes each step's weight gradients
as small matmuls inside the backward loop, and keeps every intermediate through per-step stack
pushes. Here the forward loop keeps only the activated gates, the unclipped cells and the
unclipped outputs, and the backward loop runs the two matmuls the recurrence needs; the weight
gradients are then one large matmul each over every step at once, and the two directions run as
one batched matmul per step, forward and backward.

Shapes (z: direction, 0 forward, 1 backward, each over its own order of steps):
    gates        (2, T, batch, 4d)  x_t W_input + B, the input half of each step's gates
    w_recurrent  (2, p, 4d)         the previous-output half of W_0
    w_proj       (2, d, p) or None  W_P_0
    returns h    (2, T, batch, p)   (p = d without a projection)
Every row runs every step from a zero state (padding after a sentence's end is computed and
ignored by the loss).
"""

from __future__ import annotations

from typing import NamedTuple

from elmobatch._tensorflow import tf


def _clip(x: tf.Tensor, limit: float | None) -> tf.Tensor:
    return x if limit is None else tf.clip_by_value(x, -limit, limit)


def _passes_clip(x: tf.Tensor, limit: float | None) -> tf.Tensor:
    """The gradient of clip(x) with respect to x: 1 inside the limits (ends included), else 0."""
    return tf.ones_like(x) if limit is None else tf.cast(tf.abs(x) <= limit, x.dtype)


def _shift_one_step(x: tf.Tensor) -> tf.Tensor:
    """(T, ...) -> (T, ...): row t holds x[t - 1], row 0 zeros (the state before the first step)."""
    return tf.concat([tf.zeros_like(x[:1]), x[:-1]], axis=0)


def lstm_sequence(gates: tf.Tensor, w_recurrent: tf.Tensor, w_proj: tf.Tensor | None,
                  cell_clip: float | None, proj_clip: float | None) -> tf.Tensor:
    """(2, T, batch, 4d) input gates -> (2, T, batch, p) outputs; differentiable in all three tensors."""
    if w_proj is None:
        return _lstm_sequence_without_projection(gates, w_recurrent, cell_clip)
    return _lstm_sequence_with_projection(gates, w_recurrent, w_proj, cell_clip, proj_clip)


def _lstm_sequence_without_projection(gates, w_recurrent, cell_clip):
    """h = m: a projection by the identity (never trained), and no output clip, as TF1's LSTMCell."""
    identity = tf.eye(w_recurrent.shape[-1] // 4, batch_shape=[2])
    return _lstm_sequence_with_projection(gates, w_recurrent, identity, cell_clip, None)


def _lstm_sequence_with_projection(gates, w_recurrent, w_proj, cell_clip, proj_clip):
    @tf.custom_gradient
    def run(gates, w_recurrent, w_proj):
        saved = _forward(gates, w_recurrent, w_proj, cell_clip, proj_clip)

        def grad(d_out):
            return _backward(d_out, saved, w_recurrent, w_proj, cell_clip, proj_clip)

        return tf.transpose(_clip(saved.h_raw, proj_clip), [1, 0, 2, 3]), grad

    return run(gates, w_recurrent, w_proj)


class _Saved(NamedTuple):
    """What the forward pass keeps for the backward pass, time-major (see `_forward`)."""

    acts: tf.Tensor
    c_raw: tf.Tensor
    h_raw: tf.Tensor


def _forward(gates, w_recurrent, w_proj, cell_clip, proj_clip):
    """Run the steps; keep, time-major, what the backward pass needs:
    acts (T, 2, batch, 4d) = [sigmoid(i), tanh(j), sigmoid(f), sigmoid(o)], c_raw (T, 2, batch, d)
    the cells before clipping, h_raw (T, 2, batch, p) the outputs before clipping."""
    steps, batch = tf.shape(gates)[1], tf.shape(gates)[2]
    d, p = w_recurrent.shape[-1] // 4, w_proj.shape[-1]
    h, cell = tf.zeros([2, batch, p]), tf.zeros([2, batch, d])
    acts = tf.TensorArray(tf.float32, size=steps)
    c_raws = tf.TensorArray(tf.float32, size=steps)
    h_raws = tf.TensorArray(tf.float32, size=steps)
    for t in tf.range(steps):
        i, j, f, o = tf.split(gates[:, t] + tf.matmul(h, w_recurrent), 4, axis=-1)
        i, j, f, o = tf.sigmoid(i), tf.tanh(j), tf.sigmoid(f), tf.sigmoid(o)
        c_raw = f * cell + i * j
        cell = _clip(c_raw, cell_clip)
        h_raw = tf.matmul(o * tf.tanh(cell), w_proj)
        h = _clip(h_raw, proj_clip)
        acts = acts.write(t, tf.concat([i, j, f, o], axis=-1))
        c_raws = c_raws.write(t, c_raw)
        h_raws = h_raws.write(t, h_raw)
    return _Saved(acts.stack(), c_raws.stack(), h_raws.stack())


def _backward(d_out, saved, w_recurrent, w_proj, cell_clip, proj_clip):
    """d_out (2, T, batch, p), the loss gradient of each output -> the gradients of gates,
    w_recurrent and w_proj. Everything that does not depend on the incoming gradients is computed
    for all steps at once first; the loop, last step to first, carries the gradients of h and the
    cell and runs two matmuls and a few products per step."""
    d_out = tf.transpose(d_out, [1, 0, 2, 3])  # time-major, like `saved`
    steps = tf.shape(d_out)[0]
    i, j, f, o = tf.split(saved.acts, 4, axis=-1)
    cells = _clip(saved.c_raw, cell_clip)
    tanh_cells = tf.tanh(cells)
    h_passes = _passes_clip(saved.h_raw, proj_clip)  # (T, 2, batch, p)
    c_passes = _passes_clip(saved.c_raw, cell_clip)  # (T, 2, batch, d)
    cell_from_m = o * (1.0 - tanh_cells * tanh_cells)  # d cell / d m, through tanh
    # d gates = [dc, dc, dc, dm] * these: d[i, j, f] / d cell and d o / d m, before the activations
    gate_factors = tf.concat([j * i * (1.0 - i), i * (1.0 - j * j), _shift_one_step(cells) * f * (1.0 - f),
                              tanh_cells * o * (1.0 - o)], axis=-1)
    dh_next, dc_next = tf.zeros_like(d_out[0]), tf.zeros_like(cells[0])
    d_gates = tf.TensorArray(tf.float32, size=steps)
    d_h_raws = tf.TensorArray(tf.float32, size=steps)
    for s in tf.range(steps):
        t = steps - 1 - s
        d_h_raw = (d_out[t] + dh_next) * h_passes[t]
        dm = tf.matmul(d_h_raw, w_proj, transpose_b=True)
        dc = (dc_next + dm * cell_from_m[t]) * c_passes[t]
        d_gate = tf.concat([dc, dc, dc, dm], axis=-1) * gate_factors[t]
        dc_next = dc * f[t]
        dh_next = tf.matmul(d_gate, w_recurrent, transpose_b=True)
        d_gates = d_gates.write(t, d_gate)
        d_h_raws = d_h_raws.write(t, d_h_raw)
    d_gates, d_h_raws = d_gates.stack(), d_h_raws.stack()  # (T, 2, batch, 4d), (T, 2, batch, p)
    d_w_recurrent = _sum_over_steps(_shift_one_step(_clip(saved.h_raw, proj_clip)), d_gates)
    d_w_proj = _sum_over_steps(o * tanh_cells, d_h_raws)
    return tf.transpose(d_gates, [1, 0, 2, 3]), d_w_recurrent, d_w_proj


def _sum_over_steps(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """a (T, 2, batch, m), b (T, 2, batch, n) -> (2, m, n): sum over steps and rows of a^T b, as one
    batched matmul per direction."""
    def rows(x):
        return tf.reshape(tf.transpose(x, [1, 0, 2, 3]), [2, -1, tf.shape(x)[-1]])

    return tf.matmul(rows(a), rows(b), transpose_a=True)
