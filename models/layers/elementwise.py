"""Element-wise and channel-layout float layers around the binary ones (docs/papers.md 0).

Per-channel shifts (`LearnableBias`), ReActNet's `RPReLU`, the affine `LayerScale`, position
embeddings, and the real-valued shortcuts that change width (`ChannelTile`, `ChannelAvgPool`).
"""
from __future__ import annotations

import tensorflow as tf

from edgebvit.models.layers import fused
from edgebvit.models.layers.base import serializable, trunc_normal


@serializable
class LearnableBias(tf.keras.layers.Layer):
    """Per-channel learnable shift ("move", RSign threshold of ReActNet): ``x + b``, b starts at 0."""

    def build(self, input_shape):
        self.bias = self.add_weight(
            name="bias", shape=(input_shape[-1],), initializer="zeros", trainable=True
        )
        super().build(input_shape)

    def call(self, x):
        return x + self.bias


@serializable
class RPReLU(tf.keras.layers.Layer):
    """ReActNet's RPReLU: ``PReLU_c(x - gamma_c) + zeta_c``; shifts start at 0, slope at 0.25."""

    def __init__(self, *, slope_init: float = 0.25, **kwargs):
        super().__init__(**kwargs)
        self.slope_init = slope_init

    def build(self, input_shape):
        c = input_shape[-1]
        self.shift_in = self.add_weight(name="shift_in", shape=(c,), initializer="zeros")
        self.slope = self.add_weight(
            name="slope", shape=(c,), initializer=tf.keras.initializers.Constant(self.slope_init)
        )
        self.shift_out = self.add_weight(name="shift_out", shape=(c,), initializer="zeros")
        super().build(input_shape)

    def call(self, x, training=None):
        if fused.use_fused(training):  # the same function in two memory passes (fused.py)
            return fused.rprelu(x, self.shift_in, self.slope, self.shift_out)
        x = x - self.shift_in
        # Written as Keras' PReLU is (relu(x) - a*relu(-x)) so the TFLite converter can fuse PRELU.
        return (tf.nn.relu(x) + (-self.slope) * tf.nn.relu(-x)) + self.shift_out

    def get_config(self):
        return {**super().get_config(), "slope_init": self.slope_init}


@serializable
class LayerScale(tf.keras.layers.Layer):
    """Per-channel affine ``x * a + m`` before a residual add (BinaryViT's "affine", CaiT's LayerScale).

    The official ``init_ones=True`` starts a at 0.1; the pooling/shift branches start a at 0.
    """

    def __init__(self, *, init_scale: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.init_scale = init_scale

    def build(self, input_shape):
        c = input_shape[-1]
        self.scale = self.add_weight(
            name="scale", shape=(c,), initializer=tf.keras.initializers.Constant(self.init_scale)
        )
        self.shift = self.add_weight(name="shift", shape=(c,), initializer="zeros")
        super().build(input_shape)

    def call(self, x, training=None):
        if fused.use_fused(training):
            return fused.affine(x, self.scale, self.shift)
        return x * self.scale + self.shift

    def get_config(self):
        return {**super().get_config(), "init_scale": self.init_scale}


@serializable
class PositionEmbedding(tf.keras.layers.Layer):
    """Learnable absolute position embedding added to an (H, W, C) token grid (trunc-normal 0.02)."""

    def build(self, input_shape):
        self.embedding = self.add_weight(
            name="embedding", shape=(1, *input_shape[1:]), initializer=trunc_normal(0.02)
        )
        super().build(input_shape)

    def call(self, x):
        return x + self.embedding


@serializable
class ChannelTile(tf.keras.layers.Layer):
    """Widening shortcut C -> rC: output channel k is input channel k mod C (``concat([x]*r)``)."""

    def __init__(self, *, repeats: int, **kwargs):
        super().__init__(**kwargs)
        self.repeats = int(repeats)

    def call(self, x, training=None):
        if fused.use_fused(training):
            return fused.channel_tile(x, self.repeats)
        return tf.concat([x] * self.repeats, axis=-1)

    def get_config(self):
        return {**super().get_config(), "repeats": self.repeats}


@serializable
class ChannelAvgPool(tf.keras.layers.Layer):
    """Narrowing shortcut rC -> C: output j is the mean of input channels [j*r, j*r + r).

    PyTorch's ``AvgPool1d(r)`` over the channel axis, as in the official fc2 residual.
    """

    def __init__(self, *, factor: int, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x, training=None):
        if fused.use_fused(training):
            return fused.channel_avg_pool(x, self.factor)
        shape = tf.shape(x)
        c = x.shape[-1]
        grouped = tf.reshape(x, tf.concat([shape[:-1], [c // self.factor, self.factor]], axis=0))
        return tf.reduce_mean(grouped, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // self.factor)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def channel_shortcut(x: tf.Tensor, out_channels: int, *, name: str) -> tf.Tensor:
    """The real-valued shortcut around a binary layer that changes width (docs/papers.md 0)."""
    c = x.shape[-1]
    if out_channels == c:
        return x
    if out_channels % c == 0:
        return ChannelTile(repeats=out_channels // c, name=f"{name}_tile")(x)
    if c % out_channels == 0:
        return ChannelAvgPool(factor=c // out_channels, name=f"{name}_chanavg")(x)
    raise ValueError(f"{name}: no shortcut from {c} to {out_channels} channels (need a ratio)")


@serializable
class ChannelSplit(tf.keras.layers.Layer):
    """Split the channel axis into `groups` equal consecutive slices (one SPLIT op)."""

    def __init__(self, *, groups: int, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, x):
        return tf.split(x, self.groups, axis=-1)

    def compute_output_shape(self, input_shape):
        return [(*input_shape[:-1], input_shape[-1] // self.groups)] * self.groups

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}
