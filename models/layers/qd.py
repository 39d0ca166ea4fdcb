"""BHViT's quantization-decomposition (QD) attention (docs/papers.md 2.6): softmax probabilities
quantized to 2 bits, per head (the official LSQ form) or by the paper's fixed thermometer code, or
by the official code's alternative `--gsb` (`GSB_Attention`: a base mask and two row-maximum masks)."""
from __future__ import annotations

import math

import tensorflow as tf

from edgebvit.models.layers.attention import scaled_dot_product
from edgebvit.models.layers.base import serializable

QD_FORMS = ("lsq", "fixed", "gsb")
GSB_EPS = 1e-5  # the official clamp of the three scales


@serializable
class QDThermometer(tf.keras.layers.Layer):
    """The paper's fixed QD: ``sum_{sigma=1..s} [s*P >= sigma - 1/2]``, i.e. round-half-up(s*P).

    s = `levels` (3 for 2 bits). The s binary maps are a thermometer code, so their sum is
    ``clip(floor(s*P + 1/2), 0, s)``, computed that way (one FLOOR instead of s compares).
    Gradient: straight-through on s*P. Values are counts 0..s (no 1/s: the paper sums the maps).
    """

    def __init__(self, *, levels: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.levels = int(levels)

    def call(self, p):
        x = p * float(self.levels)
        q = tf.clip_by_value(tf.floor(x + 0.5), 0.0, float(self.levels))
        return x + tf.stop_gradient(q - x)

    def get_config(self):
        return {**super().get_config(), "levels": self.levels}


def _grad_scale(x: tf.Tensor, scale) -> tf.Tensor:
    """LSQ gradient scaling: value x, gradient times `scale`."""
    return tf.stop_gradient(x - x * scale) + x * scale


@serializable
class QDLsq(tf.keras.layers.Layer):
    """The official QD (`BinaryActivation_Attention(heads, nbits=3)` applied to s*softmax).

    Per-head learnable step alpha and zero point z; forward ``alpha * clip(round(x/alpha + z), 0, s)``
    with x = s*P, s = `levels` = 3 (levels {0, a, 2a, 3a}: 2 bits). Rounding is straight-through;
    the gradients of alpha and z are scaled by ``heads / sqrt(numel(x) * s)``.
    First-batch initialisation, as the official code does on its first training forward:
    ``alpha = 2 mean|x| / sqrt(s)`` and ``z = 0.9 z + 0.1 min(x)`` per head, done on the first call
    with training=True (the `initialized` flag is saved with the model, so a reload keeps it).
    Input layout: (batch, heads, T, T).
    """

    def __init__(self, *, num_heads: int, levels: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.levels = int(levels)

    def build(self, input_shape):
        h = self.num_heads
        self.alpha = self.add_weight(name="alpha", shape=(h,), initializer="ones")
        self.zero_point = self.add_weight(name="zero_point", shape=(h,), initializer="zeros")
        self.initialized = self.add_weight(
            name="initialized", shape=(), initializer="zeros", trainable=False
        )
        super().build(input_shape)

    def _init_from(self, x):
        x = tf.stop_gradient(x)
        axes = [0, 2, 3]
        alpha = 2.0 * tf.reduce_mean(tf.abs(x), axis=axes) / math.sqrt(self.levels)
        zp = 0.9 * self.zero_point + 0.1 * tf.reduce_min(x, axis=axes)
        ops = [self.alpha.assign(alpha), self.zero_point.assign(zp), self.initialized.assign(1.0)]
        with tf.control_dependencies(ops):
            return tf.constant(True)

    def _quantize(self, x, alpha, zp):
        a = tf.reshape(alpha, (1, self.num_heads, 1, 1))
        z = tf.reshape(zp, (1, self.num_heads, 1, 1))
        v = x / a + z
        r = v + tf.stop_gradient(tf.round(v) - v)  # round_pass: straight-through
        return tf.clip_by_value(r, 0.0, float(self.levels)) * a

    def _train_forward(self, x):
        did_init = tf.cond(
            self.initialized < 0.5, lambda: self._init_from(x), lambda: tf.constant(False)
        )
        with tf.control_dependencies([did_init]):
            alpha = self.alpha.read_value()
            zp = self.zero_point.read_value()
        g = self.num_heads / tf.sqrt(tf.cast(tf.size(x), x.dtype) * float(self.levels))
        return self._quantize(x, _grad_scale(alpha, g), _grad_scale(zp, g))

    def call(self, p, training=None):
        x = p * float(self.levels)
        if training is None:
            training = tf.keras.backend.learning_phase()
        return tf.__internal__.smart_cond.smart_cond(
            training,
            lambda: self._train_forward(x),
            lambda: self._quantize(x, tf.convert_to_tensor(self.alpha), tf.convert_to_tensor(self.zero_point)),
        )

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "levels": self.levels}


def _gsb(p: tf.Tensor, alpha: tf.Tensor, alpha2: tf.Tensor, alpha3: tf.Tensor) -> tf.Tensor:
    """`GSB_Attention.forward` / `.backward` of the official code (docs/papers.md 2.6), on P."""

    @tf.custom_gradient
    def fn(p, alpha, alpha2, alpha3):
        q_raw = p / alpha  # the official code divides by alpha before clamping it
        base = tf.clip_by_value(tf.round(q_raw), 0.0, 1.0)  # torch.round: half to even, as tf.round
        row_max = tf.reduce_max(q_raw, axis=-1, keepdims=True)
        t2 = tf.cast(q_raw > 0.9 * row_max, p.dtype)
        t1_all = tf.cast(q_raw > 0.7 * row_max, p.dtype)
        t0, t1 = base - t1_all, t1_all - t2
        a, a2, a3 = (tf.maximum(v, GSB_EPS) for v in (alpha, alpha2, alpha3))
        value = t0 + t1 * a2 + t2 * a3

        def grad(dy):
            q = p / a
            middle = tf.cast((q >= 0.0) & (q <= 1.0), p.dtype)
            one_h = 1.0 - middle * q
            d_alpha = tf.reduce_sum((t0 + a2 * t1 + a3 * t2) * one_h * dy)
            d_alpha2 = tf.reduce_sum(a * t1 * dy)
            d_alpha3 = tf.reduce_sum(a * t2 * dy)
            return a * value * dy, d_alpha, d_alpha2, d_alpha3

        return value * a, grad

    return fn(p, alpha, alpha2, alpha3)


@serializable
class GSBQuantizer(tf.keras.layers.Layer):
    """BHViT's `GSB_Attention` (official `--gsb`, from the authors' earlier GSB work), on the softmax P.

    Three learnable scalars, shared by the heads: alpha = 0.005, alpha2 = alpha3 = 1. With
    ``q = P / alpha``: a base mask ``round(q)`` clipped to [0, 1] (i.e. P > alpha / 2), and masks
    ``T1 = [q > 0.7 max_row q]``, ``T2 = [q > 0.9 max_row q]`` (row = the key axis). Output
    ``alpha (T0 + alpha2 (T1 - T2) + alpha3 T2)`` with ``T0 = base - T1``, the scales clamped
    below at 1e-5: the levels {0, alpha, alpha alpha2, alpha alpha3}, chosen per row. As in the
    official code T0 is -1 where P > 0.7 max_row P but P <= alpha / 2 (rows whose maximum is
    below about 0.71 alpha), which adds alpha (alpha2 - 1) and alpha (alpha3 - 1). Gradient as
    the official autograd function: the output value times the incoming gradient for P (none
    through the masks or the row maximum); plain sums for the scales, no LSQ scaling.
    The masks depend on the row maximum, so the probabilities have no fixed integer thresholds:
    `export --integer attention` refuses a GSB model.
    """

    def build(self, input_shape):
        init = tf.keras.initializers.Constant
        self.alpha = self.add_weight(name="alpha", shape=(), initializer=init(0.005))
        self.alpha2 = self.add_weight(name="alpha2", shape=(), initializer=init(1.0))
        self.alpha3 = self.add_weight(name="alpha3", shape=(), initializer=init(1.0))
        super().build(input_shape)

    def call(self, p):
        return _gsb(p, *(tf.convert_to_tensor(v) for v in (self.alpha, self.alpha2, self.alpha3)))


@serializable
class QDAttention(tf.keras.layers.Layer):
    """Multi-head attention within each row of a (B, R, T, C) tensor (R windows of T tokens).

    Inputs are the binarized Q, K, V (+-1); ``P = softmax(Q K^T / sqrt(d))`` is quantized by QD
    (`qd_form` "lsq" or "fixed"; "gsb": the official `--gsb` quantizer instead of QD) and the
    context ``P_q V`` is returned as (B, R, T, C).
    Both matmuls stay float BATCH_MATMUL in LCE (no binary matmul op exists).
    """

    def __init__(self, *, num_heads: int, qd_form: str = "lsq", levels: int = 3, **kwargs):
        super().__init__(**kwargs)
        if qd_form not in QD_FORMS:
            raise ValueError(f"qd_form must be one of {QD_FORMS}, got {qd_form!r}")
        self.num_heads = int(num_heads)
        self.qd_form = qd_form
        self.levels = int(levels)

    def build(self, input_shape):
        c = input_shape[0][-1]
        if c % self.num_heads:
            raise ValueError(f"{c} channels do not split into {self.num_heads} heads")
        self.head_dim = c // self.num_heads
        if self.qd_form == "lsq":
            self.quantizer = QDLsq(num_heads=self.num_heads, levels=self.levels, name="qd")
        elif self.qd_form == "gsb":
            self.quantizer = GSBQuantizer(name="gsb")
        else:
            self.quantizer = QDThermometer(levels=self.levels, name="qd")
        super().build(input_shape)

    def _heads(self, x):
        # (B, R, T, C) -> (B*R, heads, T, d), all 4-D so every TFLite op supports it
        t = x.shape[2]
        x = tf.reshape(x, (-1, t, self.num_heads, self.head_dim))
        return tf.transpose(x, (0, 2, 1, 3))

    def call(self, inputs, training=None):
        q, k, v = inputs
        r, t, c = q.shape[1], q.shape[2], q.shape[3]
        if self.qd_form == "lsq":
            quantize = lambda p: self.quantizer(p, training=training)  # noqa: E731
        else:
            quantize = self.quantizer
        ctx = scaled_dot_product(self._heads(q), self._heads(k), self._heads(v),
                                 scale=1.0 / math.sqrt(self.head_dim), quantize_probs=quantize)
        ctx = tf.transpose(ctx, (0, 2, 1, 3))  # (B*R, T, heads, d)
        return tf.reshape(ctx, (-1, r, t, c))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "qd_form": self.qd_form, "levels": self.levels}
