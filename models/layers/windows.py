"""BHViT's MSMHA token layout (docs/papers.md 2.4): windows, merged global tokens, token split.

Everything is written with 4-D reshapes/transposes so every TFLite op supports it."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from edgebvit.models.layers.base import serializable


@serializable
class WindowPartition(tf.keras.layers.Layer):
    """(B, H, W, C) -> (B, nW, ws*ws, C); windows row-major, tokens row-major within a window.

    Written with 4-D reshapes/transposes only: (B*nh, ws, nw, ws*C) -> swap -> (B, nW, ws^2, C).
    """

    def __init__(self, *, window: int, **kwargs):
        super().__init__(**kwargs)
        self.window = int(window)

    def call(self, x):
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        ws = self.window
        x = tf.reshape(x, (-1, ws, w // ws, ws * c))  # (B*nh, ws, nw, ws*C)
        x = tf.transpose(x, (0, 2, 1, 3))  # (B*nh, nw, ws, ws*C)
        return tf.reshape(x, (-1, (h // ws) * (w // ws), ws * ws, c))

    def get_config(self):
        return {**super().get_config(), "window": self.window}


def window_merge(x: tf.Tensor, window: int, height: int, width: int) -> tf.Tensor:
    """Inverse of WindowPartition: (B, nW, ws*ws, C) -> (B, H, W, C)."""
    ws, c = window, x.shape[-1]
    x = tf.reshape(x, (-1, width // ws, ws, ws * c))  # (B*nh, nw, ws, ws*C)
    x = tf.transpose(x, (0, 2, 1, 3))  # (B*nh, ws, nw, ws*C)
    return tf.reshape(x, (-1, height, width, c))


@serializable
class WindowMerge(tf.keras.layers.Layer):
    """(B, nW, ws*ws, C) -> (B, H, W, C), the exact inverse of WindowPartition."""

    def __init__(self, *, window: int, height: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.window, self.height, self.width = int(window), int(height), int(width)

    def call(self, x):
        return window_merge(x, self.window, self.height, self.width)

    def get_config(self):
        return {**super().get_config(), "window": self.window, "height": self.height, "width": self.width}


@serializable
class MergedTokens(tf.keras.layers.Layer):
    """`Token_for_Attention.Merge_token`: ``a*MaxPool(x) + (1-a)*AvgPool(x)``, a per channel = 0.5.

    Pools are window x window, stride window, `padding` on each side: the average counts the zero
    padding (PyTorch count_include_pad), the max pads with the lowest float (PyTorch's -inf).
    Output (B, H/ws, W/ws, C).
    """

    def __init__(self, *, window: int, padding: int, **kwargs):
        super().__init__(**kwargs)
        self.window, self.padding = int(window), int(padding)

    def build(self, input_shape):
        self.mix = self.add_weight(
            name="mix", shape=(input_shape[-1],), initializer=tf.keras.initializers.Constant(0.5)
        )
        super().build(input_shape)

    def call(self, x):
        p, ws = self.padding, self.window
        pads = [[0, 0], [p, p], [p, p], [0, 0]]
        low = float(np.finfo(np.float32).min)
        xmax = tf.nn.max_pool2d(tf.pad(x, pads, constant_values=low), ws, ws, "VALID")
        xavg = tf.nn.avg_pool2d(tf.pad(x, pads), ws, ws, "VALID")
        return self.mix * xmax + (1.0 - self.mix) * xavg

    def get_config(self):
        return {**super().get_config(), "window": self.window, "padding": self.padding}


@serializable
class AppendMergedTokens(tf.keras.layers.Layer):
    """[(B, nW, ws^2, C), (B, m, m, C)] -> (B, nW, ws^2 + m^2, C): every window sees all merged tokens."""

    def call(self, inputs):
        windows, merged = inputs
        nw, c = windows.shape[1], windows.shape[-1]
        m = merged.shape[1] * merged.shape[2]
        merged = tf.tile(tf.reshape(merged, (-1, 1, m, c)), (1, nw, 1, 1))
        return tf.concat([windows, merged], axis=2)

    def compute_output_shape(self, input_shape):
        w, m = input_shape
        return (w[0], w[1], w[2] + m[1] * m[2], w[3])


@serializable
class TokenSplit(tf.keras.layers.Layer):
    """`token_split`: window tokens back onto the grid (x1); merged-token outputs averaged over
    windows and nearest-upsampled to the grid (x2); ``p*x1 + (1-p)*x2``, p per channel = 0.5."""

    def __init__(self, *, window: int, height: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.window, self.height, self.width = int(window), int(height), int(width)

    def build(self, input_shape):
        self.mix = self.add_weight(
            name="mix", shape=(input_shape[-1],), initializer=tf.keras.initializers.Constant(0.5)
        )
        super().build(input_shape)

    def call(self, x):
        ws, h, w = self.window, self.height, self.width
        c = x.shape[-1]
        x1 = window_merge(x[:, :, : ws * ws], ws, h, w)
        x2 = tf.reduce_mean(x[:, :, ws * ws:], axis=1)  # (B, m*m, C)
        x2 = tf.reshape(x2, (-1, h // ws, w // ws, c))
        x2 = tf.image.resize(x2, (h, w), method="nearest")
        return self.mix * x1 + (1.0 - self.mix) * x2

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "window": self.window, "height": self.height, "width": self.width}
