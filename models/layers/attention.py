"""Binary attention pieces (docs/papers.md 1.3, 2.6): the scaled dot-product core both families
share, BiT's probability binarizer, BinaryViT's attention core, and PVT-style K/V reduction.

The two matmuls (Q.K^T and P.V) are activation x activation: LCE has no binary op for them, so
they become FULLY_CONNECTED / BATCH_MATMUL in the flatbuffer (docs/lce.md, Attention matmuls).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import tensorflow as tf

from edgebvit.models.layers import fused
from edgebvit.models.layers.base import serializable
from edgebvit.models.layers.linear import token_linear


def scaled_dot_product(qh: tf.Tensor, kh: tf.Tensor, vh: tf.Tensor, *, scale,
                       quantize_probs: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
                       mask_diagonal: bool = False) -> tf.Tensor:
    """``quantize(softmax(scale * Q K^T)) V`` on (batch, heads, tokens, d) tensors.

    `scale` is a float or a per-head tensor (LSA's learnable temperature); `mask_diagonal` removes
    each token's similarity with itself (LSA, when Q and K are the same tokens);
    `quantize_probs` binarizes (BiT) or 2-bit quantizes (BHViT's QD) the probabilities.
    """
    scores = tf.matmul(qh, kh, transpose_b=True) * scale
    if mask_diagonal:
        n = scores.shape[-1]
        if scores.shape[-2] == n:
            scores = scores - tf.eye(n, dtype=scores.dtype) * 1e9  # mask self-similarity
    probs = tf.nn.softmax(scores, axis=-1)
    if quantize_probs is not None:
        probs = quantize_probs(probs)
    return tf.matmul(probs, vh)


def _elastic_binarize(p: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """BiT's elastic binarizer of attention probabilities (docs/papers.md 1.3): P -> {0, alpha}."""

    @tf.custom_gradient
    def fn(p, alpha):
        q = p / alpha
        in_range = tf.cast((q >= 0.0) & (q <= 1.0), p.dtype)
        rounded = tf.clip_by_value(tf.round(q), 0.0, 1.0)

        def grad(dy):
            d_p = dy * in_range
            d_alpha = tf.reduce_sum(
                dy * ((tf.round(q) - q) * in_range + tf.cast(q > 1.0, p.dtype))
            )
            return d_p, tf.reshape(d_alpha, tf.shape(alpha))

        return alpha * rounded, grad

    return fn(p, alpha)


@serializable
class AttentionProbBinarizer(tf.keras.layers.Layer):
    """`BiTBinaryQuantizer`: softmax probabilities to {0, alpha}, alpha one learnable scalar.

    alpha starts at 0.005 as in the official code. Stays float in the flatbuffer (ROUND, MUL...).
    """

    def __init__(self, *, alpha_init: float = 0.005, **kwargs):
        super().__init__(**kwargs)
        self.alpha_init = alpha_init

    def build(self, input_shape):
        self.alpha = self.add_weight(
            name="alpha", shape=(), initializer=tf.keras.initializers.Constant(self.alpha_init)
        )
        super().build(input_shape)

    def call(self, p, training=None):
        if fused.use_fused(training):
            return fused.elastic_binarize(p, tf.convert_to_tensor(self.alpha))
        return _elastic_binarize(p, tf.convert_to_tensor(self.alpha))

    def get_config(self):
        return {**super().get_config(), "alpha_init": self.alpha_init}


@serializable
class MultiHeadAttentionCore(tf.keras.layers.Layer):
    """Scaled dot-product attention over a token grid, heads split from channels.

    Inputs are already-projected Q (B, H, W, C) and K, V (B, Hk, Wk, C); the output is the
    merged context (B, H, W, C). `prob_quant` selects what happens to the softmax:
    ``"none"`` (float), ``"binary"`` (BiT {0, alpha}). With `lsa=True` the scale is a learnable
    per-head temperature starting at 1/sqrt(d) and the diagonal is masked (Locality
    Self-Attention, Lee et al. 2021; only meaningful when Q and K are the same tokens).
    The two matmuls have no binary op in LCE: they become float BATCH_MATMUL or FULLY_CONNECTED.
    """

    def __init__(self, *, num_heads: int, prob_quant: str = "binary", lsa: bool = False, **kwargs):
        super().__init__(**kwargs)
        if prob_quant not in ("none", "binary"):
            raise ValueError(f"prob_quant must be 'none' or 'binary', got {prob_quant!r}")
        self.num_heads = int(num_heads)
        self.prob_quant = prob_quant
        self.lsa = bool(lsa)

    def build(self, input_shape):
        q_shape = input_shape[0]
        c = q_shape[-1]
        if c % self.num_heads:
            raise ValueError(f"{c} channels do not split into {self.num_heads} heads")
        self.head_dim = c // self.num_heads
        if self.lsa:
            self.temperature = self.add_weight(
                name="temperature",
                shape=(self.num_heads, 1, 1),
                initializer=tf.keras.initializers.Constant(1.0 / math.sqrt(self.head_dim)),
            )
        if self.prob_quant == "binary":
            self.prob_binarizer = AttentionProbBinarizer(name="prob_binarizer")
        super().build(input_shape)

    def _split_heads(self, x):
        # (B, H, W, C) -> (B, heads, H*W, d)
        b = tf.shape(x)[0]
        n = x.shape[1] * x.shape[2]
        x = tf.reshape(x, (b, n, self.num_heads, self.head_dim))
        return tf.transpose(x, (0, 2, 1, 3))

    def call(self, inputs):
        q, k, v = inputs
        qh, kh, vh = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        ctx = scaled_dot_product(  # (B, heads, N, d)
            qh, kh, vh,
            scale=self.temperature if self.lsa else 1.0 / math.sqrt(self.head_dim),
            quantize_probs=self.prob_binarizer if self.prob_quant == "binary" else None,
            mask_diagonal=self.lsa,
        )
        ctx = tf.transpose(ctx, (0, 2, 1, 3))
        b = tf.shape(ctx)[0]
        return tf.reshape(ctx, (b, q.shape[1], q.shape[2], q.shape[3]))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "prob_quant": self.prob_quant,
            "lsa": self.lsa,
        }


def spatial_reduction(x: tf.Tensor, ratio: int, *, binary: bool = True, name: str) -> tf.Tensor:
    """K/V source of BinaryViT's pyramid attention: ``RPReLU(BN(BinLin(p + b)) + p)`` with
    ``p = AvgPool_rxr(x)`` (stride r), i.e. N / r^2 tokens. Identity for r == 1."""
    if ratio == 1:
        return x
    h, w = x.shape[1], x.shape[2]
    if h % ratio or w % ratio:
        raise ValueError(f"{name}: a {h}x{w} token grid does not reduce by {ratio}")
    p = tf.keras.layers.AveragePooling2D(ratio, strides=ratio, padding="valid", name=f"{name}_pool")(x)
    return token_linear(p, x.shape[-1], binary=binary, name=name)


def upsample_nearest(x: tf.Tensor, ratio: int, *, name: str) -> tf.Tensor:
    """Nearest-neighbour upsampling by `ratio` (k_pre / v_pre back to the query grid); identity at 1."""
    if ratio == 1:
        return x
    return tf.keras.layers.UpSampling2D(ratio, interpolation="nearest", name=name)(x)
