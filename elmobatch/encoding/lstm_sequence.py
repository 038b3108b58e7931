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


def _passes_clip(x: tf.Tensor, limit: float) -> tf.Tensor:
    """The gradient of clip(x) with respect to x: 1 inside the limits (ends included), else 0."""
    return tf.cast(tf.abs(x) <= limit, x.dtype)


def _shift_one_step(x: tf.Tensor) -> tf.Tensor:
    """(T, ...) -> (T, ...): row t holds x[t - 1], row 0 zeros (the state before the first step)."""
    return tf.concat([tf.zeros_like(x[:1]), x[:-1]], axis=0)


def lstm_sequence(gates: tf.Tensor, w_recurrent: tf.Tensor, w_proj: tf.Tensor | None,
                  cell_clip: float | None, proj_clip: float | None) -> tf.Tensor:
    """(2, T, batch, 4d) input gates -> (2, T, batch, p) outputs; differentiable in every tensor.
    Without a projection there is no output clip either (TF1's LSTMCell), and h = m."""
    projection = [] if w_proj is None else [w_proj]
    clips = _Clips(cell_clip, proj_clip if projection else None)

    @tf.custom_gradient
    def run(gates, w_recurrent, *projection):
        saved = _forward(clips, gates, w_recurrent, *projection)

        def grad(d_out):
            return _backward(clips, d_out, saved, w_recurrent, *projection)

        return tf.transpose(_clip(saved.h_raw, clips.proj), [1, 0, 2, 3]), grad

    return run(gates, w_recurrent, *projection)


class _Saved(NamedTuple):
    """What the forward pass keeps for the backward pass, time-major (see `_forward`)."""

    acts: tf.Tensor
    c_raw: tf.Tensor
    h_raw: tf.Tensor


class _Clips(NamedTuple):
    """A layer's clips: the cell's, and the output's (None: not clipped)."""

    cell: float | None
    proj: float | None


def _forward(clips: _Clips, gates, w_recurrent, w_proj=None) -> _Saved:
    """Run the steps; keep, time-major, what the backward pass needs:
    acts (T, 2, batch, 4d) = [sigmoid(i), tanh(j), sigmoid(f), sigmoid(o)], c_raw (T, 2, batch, d)
    the cells before clipping, h_raw (T, 2, batch, p) the outputs before clipping."""
    steps, batch = tf.shape(gates)[1], tf.shape(gates)[2]
    d = w_recurrent.shape[-1] // 4
    h, cell = tf.zeros([2, batch, w_recurrent.shape[1]]), tf.zeros([2, batch, d])
    acts, c_raws, h_raws = (tf.TensorArray(tf.float32, size=steps) for _ in range(3))
    for t in tf.range(steps):
        i, j, f, o = tf.split(gates[:, t] + tf.matmul(h, w_recurrent), 4, axis=-1)
        i, j, f, o = tf.sigmoid(i), tf.tanh(j), tf.sigmoid(f), tf.sigmoid(o)
        c_raw = f * cell + i * j
        cell = _clip(c_raw, clips.cell)
        h_raw = o * tf.tanh(cell)
        if w_proj is not None:
            h_raw = tf.matmul(h_raw, w_proj)
        h = _clip(h_raw, clips.proj)
        acts = acts.write(t, tf.concat([i, j, f, o], axis=-1))
        c_raws = c_raws.write(t, c_raw)
        h_raws = h_raws.write(t, h_raw)
    return _Saved(acts.stack(), c_raws.stack(), h_raws.stack())


def _backward(clips: _Clips, d_out, saved: _Saved, w_recurrent, w_proj=None) -> list[tf.Tensor]:
    """d_out (2, T, batch, p), the loss gradient of each output -> the gradients of gates,
    w_recurrent (and w_proj). What does not depend on the incoming gradients is computed for
    all steps at once first (at the cost of memory: about twice the saved gates); the loop,
    last step to first, carries the gradients of h and the cell through two matmuls (one
    without a projection) and a few products per step."""
    d_out = tf.transpose(d_out, [1, 0, 2, 3])  # time-major, like `saved`
    steps = tf.shape(d_out)[0]
    i, j, f, o = tf.split(saved.acts, 4, axis=-1)
    cells = _clip(saved.c_raw, clips.cell)
    tanh_cells = tf.tanh(cells)
    c_passes = None if clips.cell is None else _passes_clip(saved.c_raw, clips.cell)
    h_passes = None if clips.proj is None else _passes_clip(saved.h_raw, clips.proj)
    cell_from_m = o * (1.0 - tanh_cells * tanh_cells)  # d cell / d m, through tanh and the clip
    if c_passes is not None:
        cell_from_m *= c_passes
    # d gates = [dc, dc, dc, dm] * these: d[i, j, f] / d cell and d o / d m, before the activations
    gate_factors = tf.concat([j * i * (1.0 - i), i * (1.0 - j * j), _shift_one_step(cells) * f * (1.0 - f),
                              tanh_cells * o * (1.0 - o)], axis=-1)
    dh_next, dc_next = tf.zeros_like(d_out[0]), tf.zeros_like(cells[0])
    d_gates, d_h_raws = (tf.TensorArray(tf.float32, size=steps) for _ in range(2))
    for s in tf.range(steps):
        t = steps - 1 - s
        d_h_raw = d_out[t] + dh_next
        if h_passes is not None:
            d_h_raw *= h_passes[t]
        dm = d_h_raw if w_proj is None else tf.matmul(d_h_raw, w_proj, transpose_b=True)
        dc = dm * cell_from_m[t] + (dc_next if c_passes is None else dc_next * c_passes[t])
        d_gate = tf.concat([dc, dc, dc, dm], axis=-1) * gate_factors[t]
        dc_next = dc * f[t]
        dh_next = tf.matmul(d_gate, w_recurrent, transpose_b=True)
        d_gates = d_gates.write(t, d_gate)
        if w_proj is not None:
            d_h_raws = d_h_raws.write(t, d_h_raw)
    d_gates = d_gates.stack()  # (T, 2, batch, 4d)
    grads = [tf.transpose(d_gates, [1, 0, 2, 3]),
             _sum_over_steps(_shift_one_step(_clip(saved.h_raw, clips.proj)), d_gates)]
    if w_proj is not None:
        grads.append(_sum_over_steps(o * tanh_cells, d_h_raws.stack()))
    return grads


def _sum_over_steps(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """a (T, 2, batch, m), b (T, 2, batch, n) -> (2, m, n): sum over steps and rows of a^T b, as one
    batched matmul per direction."""
    def rows(x):
        return tf.reshape(tf.transpose(x, [1, 0, 2, 3]), [2, -1, tf.shape(x)[-1]])

    return tf.matmul(rows(a), rows(b), transpose_a=True)
