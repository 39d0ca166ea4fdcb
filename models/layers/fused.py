"""Fused training kernels: the same functions as the layers' reference graphs, in fewer memory passes.

The training step of a binary ViT on a CPU is dominated by element-wise work, not by its matmuls
(docs/training_speed.md): larq's sign is three ops forward (``sign(sign(x) + 0.1)``) and its
ApproxSign gradient six more; RPReLU is seven ops forward and about a dozen backward. Each op reads
and writes the whole activation tensor. Here each such chain is one XLA-compiled element-wise
kernel forward and one backward (`tf.custom_gradient`), while the per-channel reductions of the
parameter gradients stay outside XLA, as TensorFlow matrix-vector products (`_channel_sum`): XLA's
CPU code for reductions over the leading axes is several times slower than Eigen's (measured in
the doc above), and a whole-step `jit_compile` is slower than no XLA at all for the same reason.

The layers use these kernels only when called with ``training=True`` and while `enabled()`; in
inference, export and conversion they run their reference graphs, which the LCE converter
pattern-matches. The values are the same: every kernel is written to give the reference result
bit for bit in exact arithmetic, including the ties (larq's sign(0) = +1; RPReLU's gradient at
exactly its threshold is 0, as TensorFlow's relu gradient is), and tests/test_fused.py checks
outputs and gradients against the reference graphs.

`reference_kernels()` switches them off (a context manager), as `edgebvit train --kernels
reference` does for a whole run.
"""
from __future__ import annotations

import atexit
import contextlib
import gc

import tensorflow as tf
from tensorflow.python.framework import ops as _tf_ops

# Process-wide, not thread-local: MirroredStrategy traces each replica's step in a thread of its own.
_ENABLED = [True]


def enabled() -> bool:
    """Whether layers called with training=True use the fused kernels (default: yes)."""
    return _ENABLED[0]


def set_enabled(value: bool) -> None:
    """Switch the fused training kernels on or off (takes effect at the next trace)."""
    _ENABLED[0] = bool(value)


@contextlib.contextmanager
def reference_kernels():
    """Trace the layers' reference graphs inside this block, even with training=True."""
    before = enabled()
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(before)


def use_fused(training) -> bool:
    """True for a Python ``training=True`` while enabled (a symbolic learning phase gets the reference)."""
    return training is True and enabled()


class _XlaKernel:
    """A ``tf.function(jit_compile=True)`` built at first call, whose traces `release` can drop."""

    def __init__(self, fn):
        self._python = fn
        self._function = None
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def __call__(self, *args):
        if self._function is None:
            self._function = tf.function(self._python, jit_compile=True, autograph=False)
        return self._function(*args)

    def release(self) -> None:
        self._function = None


_KERNELS: list[_XlaKernel] = []


def _xla(fn) -> _XlaKernel:
    kernel = _XlaKernel(fn)
    _KERNELS.append(kernel)
    return kernel


@atexit.register
def _release_at_exit() -> None:
    """Drop every traced kernel and the gradient functions our graph-mode calls registered.

    ``tf.custom_gradient`` in a graph registers each call's gradient closure in TF's process-wide
    gradient registry, which keeps the traced graphs (and their XLA functions) alive until
    interpreter shutdown, where TF's function destructors run after their modules are gone and
    print "Exception ignored in AtomicFunction.__del__" below a command's last line. Run at exit
    (before module teardown), this frees them while TF is whole. Only at exit: live graphs still
    need their gradients.
    """
    for kernel in _KERNELS:
        kernel.release()
    entries = getattr(getattr(_tf_ops, "_gradient_registry", None), "_registry", None)
    if isinstance(entries, dict):
        for name in [n for n in entries if str(n).startswith("CustomGradient-")]:
            del entries[name]
    gc.collect()


def _channel_sum(t: tf.Tensor) -> tf.Tensor:
    """Sum over every axis but the last: the gradient of a per-channel parameter.

    As a matrix-vector product with ones, which Eigen runs about twice as fast as `reduce_sum`
    over the leading axes (and XLA's CPU reduction several times slower still).
    """
    c = t.shape[-1]
    rows = tf.reshape(t, (-1, c))
    return tf.linalg.matvec(rows, tf.ones(tf.shape(rows)[:1], t.dtype), transpose_a=True)


# ------------------------------------------------------------------------------------------
# sign with the ApproxSign gradient (Bi-Real Net; larq's `approx_sign`)
# ------------------------------------------------------------------------------------------
@_xla
def _sign_forward(x):
    one = tf.ones([], x.dtype)
    return tf.where(x >= 0, one, -one)  # larq's sign: sign(0) = +1


@_xla
def _approx_sign_backward(dy, x):
    abs_x = tf.abs(x)
    return tf.where(abs_x <= 1.0, (1.0 - abs_x) * 2.0 * dy, tf.zeros_like(dy))


@tf.custom_gradient
def approx_sign(x):
    """larq's `approx_sign`: ``sign(x)`` (0 -> +1) forward, ``2 (1 - |x|) 1[|x| <= 1]`` backward."""
    def grad(dy):
        return _approx_sign_backward(dy, x)

    return _sign_forward(x), grad


# ------------------------------------------------------------------------------------------
# RPReLU (ReActNet): PReLU_c(x - gamma_c) + zeta_c
# ------------------------------------------------------------------------------------------
@_xla
def _rprelu_forward(x, shift_in, slope, shift_out):
    h = x - shift_in
    return tf.where(h > 0, h, slope * h) + shift_out


@_xla
def _rprelu_backward(dy, x, shift_in, slope):
    h = x - shift_in
    zero = tf.zeros_like(dy)
    # relu(h) - slope * relu(-h): both relu gradients are 0 at h == 0, so dx is 0 there.
    dx = tf.where(h > 0, dy, tf.where(h < 0, dy * slope, zero))
    d_slope = dy * tf.minimum(h, 0.0)  # d/d slope of (-slope) * relu(-h)
    return dx, d_slope


@tf.custom_gradient
def rprelu(x, shift_in, slope, shift_out):
    """``relu(x - g) - a relu(-(x - g)) + z`` with per-channel g, a, z (the last axis)."""
    def grad(dy):
        dx, d_slope = _rprelu_backward(dy, x, shift_in, slope)
        return dx, -_channel_sum(dx), _channel_sum(d_slope), _channel_sum(dy)

    return _rprelu_forward(x, shift_in, slope, shift_out), grad


# ------------------------------------------------------------------------------------------
# LayerScale (CaiT; BinaryViT's affine): x * a + m
# ------------------------------------------------------------------------------------------
@_xla
def _affine_forward(x, scale, shift):
    return x * scale + shift


@_xla
def _affine_backward(dy, x, scale):
    return dy * scale, dy * x


@tf.custom_gradient
def affine(x, scale, shift):
    """``x * a + m`` with per-channel a, m (the last axis)."""
    def grad(dy):
        dx, d_scale = _affine_backward(dy, x, scale)
        return dx, _channel_sum(d_scale), _channel_sum(dy)

    return _affine_forward(x, scale, shift), grad


# ------------------------------------------------------------------------------------------
# BiT's elastic binarizer of attention probabilities: P -> alpha * clip(round(P / alpha), 0, 1)
# ------------------------------------------------------------------------------------------
@_xla
def _elastic_forward(p, alpha):
    return alpha * tf.clip_by_value(tf.round(p / alpha), 0.0, 1.0)


@_xla
def _elastic_backward(dy, p, alpha):
    q = p / alpha
    in_range = tf.cast((q >= 0.0) & (q <= 1.0), p.dtype)
    d_alpha = dy * ((tf.round(q) - q) * in_range + tf.cast(q > 1.0, p.dtype))
    return dy * in_range, d_alpha


@tf.custom_gradient
def elastic_binarize(p, alpha):
    """BiT's binarizer with its straight-through gradients (the reference is `attention._elastic_binarize`)."""
    def grad(dy):
        d_p, d_alpha = _elastic_backward(dy, p, alpha)
        return d_p, tf.reshape(tf.reduce_sum(d_alpha), tf.shape(alpha))

    return _elastic_forward(p, alpha), grad


# ------------------------------------------------------------------------------------------
# The width-changing shortcuts: channel tiling C -> rC and channel averaging rC -> C
# ------------------------------------------------------------------------------------------
@_xla
def _group_mean(x, factor):
    shape = tf.concat([tf.shape(x)[:-1], [x.shape[-1] // factor, factor]], axis=0)
    return tf.reduce_mean(tf.reshape(x, shape), axis=-1)


@_xla
def _spread(dy, factor):
    # the gradient of the group mean: each of the `factor` inputs gets dy / factor
    expanded = tf.broadcast_to(dy[..., None] / tf.cast(factor, dy.dtype),
                               tf.concat([tf.shape(dy), [factor]], axis=0))
    return tf.reshape(expanded, tf.concat([tf.shape(dy)[:-1], [dy.shape[-1] * factor]], axis=0))


def _channel_map(forward, backward, x, k: int):
    """``forward(x, k)`` with the gradient ``backward(dy, k)``: a linear channel map and its transpose."""
    @tf.custom_gradient
    def fn(x):
        return forward(x, k), lambda dy: backward(dy, k)

    return fn(x)


def channel_avg_pool(x, factor: int):
    """Output channel j = mean of input channels [j*r, j*r + r) (`ChannelAvgPool`)."""
    return _channel_map(_group_mean, _spread, x, factor)


@_xla
def _tile_channels(x, repeats):
    return tf.concat([x] * repeats, axis=-1)


@_xla
def _fold_channels(dy, repeats):
    c = dy.shape[-1] // repeats
    shape = tf.concat([tf.shape(dy)[:-1], [repeats, c]], axis=0)
    return tf.reduce_sum(tf.reshape(dy, shape), axis=-2)


def channel_tile(x, repeats: int):
    """``concat([x] * r, axis=-1)`` (`ChannelTile`); its gradient sums the r copies."""
    return _channel_map(_tile_channels, _fold_channels, x, repeats)


# ------------------------------------------------------------------------------------------
# A 1x1 convolution as the matrix product it is
# ------------------------------------------------------------------------------------------
def pointwise_conv(x, kernel):
    """``conv2d(x, kernel)`` for a (1, 1, C_in, C_out) kernel, stride 1: one `MatMul` over the tokens.

    Eigen's `Conv2DBackpropFilter` takes 2.3x the forward's time for a 1x1 kernel; the matmul's
    gradients are two plain matrix products (docs/training_speed.md).
    """
    c_in, c_out = kernel.shape[-2], kernel.shape[-1]
    y = tf.matmul(tf.reshape(x, (-1, c_in)), tf.reshape(kernel, (c_in, c_out)))
    return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [c_out]], axis=0))
