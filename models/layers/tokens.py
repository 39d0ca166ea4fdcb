"""Token layouts and float stems: class token on the NHWC grid, Shifted Patch Tokenization
(Lee et al. 2021, docs/papers.md 3)."""
from __future__ import annotations

import tensorflow as tf

from edgebvit.models.layers.base import batch_norm, serializable, trunc_normal


@serializable
class ClassToken(tf.keras.layers.Layer):
    """Prepend a learnable class token to the tokens, carried as one row (B, 1, N + 1, C).

    The input is a token grid (B, H, W, C) or a row (B, 1, N, C); keeping the result 4-D lets
    every token-wise linear stay a 1x1 `QuantConv2D` (an `LceBconv2d`). Grid-shaped operations
    (pooling branches, spatial reduction) do not apply to such a row. Init: trunc-normal 0.02.
    """

    def build(self, input_shape):
        self.token = self.add_weight(
            name="token", shape=(1, 1, 1, input_shape[-1]), initializer=trunc_normal(0.02)
        )
        super().build(input_shape)

    def call(self, x):
        b = tf.shape(x)[0]
        n = x.shape[1] * x.shape[2]
        row = tf.reshape(x, (b, 1, n, x.shape[-1]))
        cls = tf.tile(tf.cast(self.token, x.dtype), (b, 1, 1, 1))
        return tf.concat([cls, row], axis=2)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, input_shape[1] * input_shape[2] + 1, input_shape[-1])


@serializable
class TakeToken(tf.keras.layers.Layer):
    """The token at `index` of a (B, 1, N, C) row as a (B, C) vector: the class-token head."""

    def __init__(self, *, index: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, x):
        return x[:, 0, self.index, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "index": self.index}


@serializable
class DiagonalShifts(tf.keras.layers.Layer):
    """The image and its 4 diagonal shifts by `shift` pixels, concatenated: C -> 5C channels.

    As in the SPT reference code: zero-pad by `shift` on every side, then crop the four corners
    of the padded image (left-up, right-up, left-down, right-down) back to H x W.
    """

    def __init__(self, *, shift: int, **kwargs):
        super().__init__(**kwargs)
        self.shift = int(shift)

    def call(self, x):
        s = self.shift
        h, w = x.shape[1], x.shape[2]
        pad = tf.pad(x, ((0, 0), (s, s), (s, s), (0, 0)))
        crops = [pad[:, i:i + h, j:j + w, :] for i, j in ((0, 0), (0, 2 * s), (2 * s, 0), (2 * s, 2 * s))]
        return tf.concat([x, *crops], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 5 * input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "shift": self.shift}


@serializable
class SpaceToDepth(tf.keras.layers.Layer):
    """Non-overlapping PxP patches flattened into channels in (p1, p2, c) order (TFLite SPACE_TO_DEPTH)."""

    def __init__(self, *, block_size: int, **kwargs):
        super().__init__(**kwargs)
        self.block_size = int(block_size)

    def call(self, x):
        return tf.nn.space_to_depth(x, self.block_size)

    def compute_output_shape(self, input_shape):
        b = self.block_size
        return (input_shape[0], input_shape[1] // b, input_shape[2] // b, input_shape[3] * b * b)

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


def shifted_patch_tokenization(
    x: tf.Tensor, patch_size: int, dim: int, *, norm: str = "batch", name: str
) -> tf.Tensor:
    """SPT stem: image (B, H, W, C) -> tokens (B, H/P, W/P, dim), all full precision.

    Zero-pad by P/2 and take the 4 diagonal shifts, concat with the image (5C), space-to-depth
    PxP, normalise the 5*C*P^2 patch vector, linear -> dim (a float 1x1 conv). `norm="batch"`
    follows the binary runs, which replace every LayerNorm by BatchNorm; `"layer"` is the paper's.
    """
    if patch_size < 2 or patch_size % 2:
        raise ValueError(f"{name}: SPT needs an even patch size, got {patch_size}")
    if norm not in ("batch", "layer"):
        raise ValueError(f"{name}: norm must be 'batch' or 'layer', got {norm!r}")
    h = DiagonalShifts(shift=patch_size // 2, name=f"{name}_shifts")(x)
    h = SpaceToDepth(block_size=patch_size, name=f"{name}_s2d")(h)
    if norm == "batch":
        h = batch_norm(f"{name}_norm")(h)
    else:
        h = tf.keras.layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm")(h)
    return tf.keras.layers.Conv2D(
        dim, 1, use_bias=True, kernel_initializer=trunc_normal(0.02), name=f"{name}_linear"
    )(h)
