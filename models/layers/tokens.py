"""Token layouts and float stems: class token on the NHWC grid, Shifted Patch Tokenization
(Lee et al. 2021, docs/papers.md 3)."""
from __future__ import annotations

import tensorflow as tf

from edgebvit.models.layers.base import batch_norm, bias_init, kernel_init, serializable, trunc_normal


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
class LearnedTokens(tf.keras.layers.Layer):
    """`count` learnable tokens as a (B, 1, count, C) row, C = the input's channels; the input only
    gives the batch size. CaiT's class token (and DeiT's distillation token) entering at the
    class-attention stage (Touvron et al. 2021, "Going deeper with image transformers", 3.2).
    Init: trunc-normal 0.02, as the class token."""

    def __init__(self, *, count: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.count = int(count)

    def build(self, input_shape):
        self.tokens = self.add_weight(
            name="tokens", shape=(1, 1, self.count, input_shape[-1]), initializer=trunc_normal(0.02)
        )
        super().build(input_shape)

    def call(self, x):
        return tf.tile(tf.cast(self.tokens, x.dtype), (tf.shape(x)[0], 1, 1, 1))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, self.count, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "count": self.count}


@serializable
class TokenRange(tf.keras.layers.Layer):
    """Tokens ``start:stop`` of a (B, 1, N, C) row, still a row (B, 1, stop - start, C)."""

    def __init__(self, *, start: int, stop: int, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, x):
        return x[:, :, self.start:self.stop, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, self.stop - self.start, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@serializable
class PatchGrid(tf.keras.layers.Layer):
    """The patch tokens of a row that starts with `extra` tokens (class / distillation), as the
    (B, height, width, C) grid they came from: what grid-shaped operations (pooling branches,
    average-pooled head) act on when the row also carries tokens that are not image patches."""

    def __init__(self, *, extra: int, height: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.extra, self.height, self.width = int(extra), int(height), int(width)

    def call(self, x):
        return tf.reshape(x[:, :, self.extra:, :], (-1, self.height, self.width, x.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "extra": self.extra, "height": self.height, "width": self.width}


@serializable
class PadTokens(tf.keras.layers.Layer):
    """A patch grid (B, H, W, C) back to a row (B, 1, extra + H*W, C) with zeros in the `extra`
    leading slots: a grid-only branch (e.g. average pooling) adds nothing to the extra tokens."""

    def __init__(self, *, extra: int, **kwargs):
        super().__init__(**kwargs)
        self.extra = int(extra)

    def call(self, x):
        row = tf.reshape(x, (-1, 1, x.shape[1] * x.shape[2], x.shape[-1]))
        return tf.pad(row, ((0, 0), (0, 0), (self.extra, 0), (0, 0)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, self.extra + input_shape[1] * input_shape[2], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "extra": self.extra}


def token_row(x: tf.Tensor, *, name: str) -> tf.Tensor:
    """A (B, H, W, C) grid as one (B, 1, H*W, C) row (a no-op for a row)."""
    if x.shape[1] == 1:
        return x
    return tf.keras.layers.Reshape((1, x.shape[1] * x.shape[2], x.shape[-1]), name=name)(x)


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
        dim, 1, use_bias=True, kernel_initializer=kernel_init(), bias_initializer=bias_init(int(h.shape[-1])),
        name=f"{name}_linear"
    )(h)
