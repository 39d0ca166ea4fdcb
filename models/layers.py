"""Binary transformer building blocks shared by every family (BinaryViT, BHViT).

Each layer is small, serializable (`get_config`) and named for what the papers call it. The spec
is ../shared/design/papers.md section 0 (shared blocks) and 1.3 (binary attention); the rules that
decide how a block is written are ../shared/design/lce.md:

* every token-wise linear layer is a 1x1 `lq.layers.QuantConv2D` on an NHWC token grid, because
  only `QuantConv2D` becomes `LceBconv2d` (a `QuantDense` stays a float FULLY_CONNECTED);
* activations are binarized with larq's own sign (`ApproxSign`), which the converter recognises;
* binary weights must constant-fold to +-alpha per output channel (LCE's `IsBinaryFilter`).

Functional helpers (`binary_linear`, `channel_shortcut`) compose these layers into the
"extra residual" pattern of Bi-Real Net / ReActNet used around every binary layer.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import larq as lq
import tensorflow as tf

_PKG = "edgebvit"


class _NoStarvedWeightsWarning(logging.Filter):
    """larq warns on binary kernels without a clip constraint; ScaledSign masks its own gradient
    (straight-through only where |W_c| <= 1, as the official code does), so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "starved weights" not in record.getMessage()


logging.getLogger("larq.layers_base").addFilter(_NoStarvedWeightsWarning())
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1 == Keras momentum 0.9
BN_EPSILON = 1e-5


def serializable(cls):
    return tf.keras.utils.register_keras_serializable(package=_PKG)(cls)


def trunc_normal(std: float = 0.02) -> tf.keras.initializers.Initializer:
    return tf.keras.initializers.TruncatedNormal(stddev=std)


def batch_norm(name: str) -> tf.keras.layers.BatchNormalization:
    """BatchNorm over channels, PyTorch defaults: the binary runs replace every LayerNorm by it."""
    return tf.keras.layers.BatchNormalization(
        axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )


# --------------------------------------------------------------------------------------------
# Quantizers
# --------------------------------------------------------------------------------------------
STE_MASKS = ("centred", "none")


@serializable
class ScaledSign(lq.quantizers.Quantizer):
    """Binary weight quantizer of both official repos (papers.md section 0).

    Forward: ``alpha_o * sign(W - mean_o(W))`` with ``alpha_o = mean_o |W|`` of the *uncentred*
    weights, detached, per output channel. Backward: straight-through, masked by ``|W_c| <= 1``.
    For a Keras conv kernel (kh, kw, in, out) the reductions run over axes (0, 1, 2).

    ``centre=True`` for linear layers and BHViT convs; BinaryViT's convs do not centre.
    ``ste_mask="none"`` drops the mask: under Bop the latent weights are exactly +-1, so a channel
    with mostly +1 has mean near 1 and its -1 weights sit at ``|W_c|`` near 2, where the mask would
    zero their gradient and Bop could never flip them back. The trainer sets it for Bop.
    After constant folding the kernel is exactly +-alpha per output channel, which is what LCE's
    converter requires to emit `LceBconv2d`.
    """

    precision = 1

    def __init__(self, *, centre: bool = True, ste_mask: str = "centred", **kwargs):
        super().__init__(**kwargs)
        if ste_mask not in STE_MASKS:
            raise ValueError(f"ste_mask must be one of {STE_MASKS}, got {ste_mask!r}")
        self.centre = centre
        self.ste_mask = ste_mask

    def call(self, inputs):
        axes = list(range(len(inputs.shape) - 1))
        alpha = tf.stop_gradient(tf.reduce_mean(tf.abs(inputs), axis=axes, keepdims=True))
        w = inputs - tf.reduce_mean(inputs, axis=axes, keepdims=True) if self.centre else inputs
        # larq's ste_sign: sign forward, straight-through gradient masked by |w| <= clip_value
        # (the official code's clamp), or unmasked with clip_value=None.
        return alpha * lq.quantizers.ste_sign(w, clip_value=1.0 if self.ste_mask == "centred" else None)

    def get_config(self):
        return {**super().get_config(), "centre": self.centre, "ste_mask": self.ste_mask}


# --------------------------------------------------------------------------------------------
# Element-wise float layers
# --------------------------------------------------------------------------------------------
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

    def call(self, x):
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

    def call(self, x):
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

    def call(self, x):
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

    def call(self, x):
        shape = tf.shape(x)
        c = x.shape[-1]
        grouped = tf.reshape(x, tf.concat([shape[:-1], [c // self.factor, self.factor]], axis=0))
        return tf.reduce_mean(grouped, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // self.factor)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def channel_shortcut(x: tf.Tensor, out_channels: int, *, name: str) -> tf.Tensor:
    """The real-valued shortcut around a binary layer that changes width (papers.md section 0)."""
    c = x.shape[-1]
    if out_channels == c:
        return x
    if out_channels % c == 0:
        return ChannelTile(repeats=out_channels // c, name=f"{name}_tile")(x)
    if c % out_channels == 0:
        return ChannelAvgPool(factor=c // out_channels, name=f"{name}_chanavg")(x)
    raise ValueError(f"{name}: no shortcut from {c} to {out_channels} channels (need a ratio)")


# --------------------------------------------------------------------------------------------
# Binary linear layer on the token grid
# --------------------------------------------------------------------------------------------
def binary_conv(
    filters: int,
    kernel_size: int = 1,
    *,
    name: str,
    strides: int = 1,
    padding: str = "valid",
    pad_values: float = 1.0,
    dilation_rate: int = 1,
    groups: int = 1,
    centre: bool = True,
) -> lq.layers.QuantConv2D:
    """A binary conv LCE converts to `LceBconv2d`: ApproxSign inputs, ScaledSign weights, no bias.

    ApproxSign is the Bi-Real piecewise-quadratic sign gradient both official repos use; its
    forward is larq's sign, which LCE's converter recognises. No bias: the BN after it carries one
    and fuses into the bconv's post-activation bias.
    """
    return lq.layers.QuantConv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        pad_values=pad_values,
        dilation_rate=dilation_rate,
        groups=groups,
        input_quantizer=lq.quantizers.ApproxSign(),
        kernel_quantizer=ScaledSign(centre=centre),
        kernel_constraint=None,  # the official code clips nothing; the STE mask does the job
        kernel_initializer=trunc_normal(0.02),
        use_bias=False,
        name=name,
    )


def binary_linear(
    x: tf.Tensor,
    out_channels: int,
    *,
    name: str,
    residual: bool = True,
    activation: bool = True,
    centre: bool = True,
) -> tf.Tensor:
    """``RPReLU(BN(BinLinear(sign(x + b))) + shortcut(x))`` on an (B, H, W, C) token grid.

    The linear layer is a 1x1 `QuantConv2D`, the shortcut is identity / tile / channel-average
    depending on the width change. Turning `residual` or `activation` off gives the naive form
    used in the ablations. The BN between the conv and the next sign also keeps Keras and LCE
    from breaking float-rounding ties around 0 differently (measured by the export tests).
    """
    h = LearnableBias(name=f"{name}_move")(x)
    h = binary_conv(out_channels, 1, name=name, centre=centre)(h)
    h = batch_norm(f"{name}_bn")(h)
    if residual:
        h = tf.keras.layers.Add(name=f"{name}_res")([h, channel_shortcut(x, out_channels, name=name)])
    if activation:
        h = RPReLU(name=f"{name}_rprelu")(h)
    return h


# --------------------------------------------------------------------------------------------
# Binary attention
# --------------------------------------------------------------------------------------------
@serializable
class BinarySign(tf.keras.layers.Layer):
    """``sign(x + b)`` with a learnable per-channel threshold and the ApproxSign gradient.

    Used where a binarized activation feeds something other than a conv (Q, K, V of attention):
    the +-1 values are exact, so the float matmuls downstream compute integer dot products.
    """

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")
        self.quantizer = lq.quantizers.ApproxSign()
        super().build(input_shape)

    def call(self, x):
        return self.quantizer(x + self.bias)


def _elastic_binarize(p: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """BiT's elastic binarizer of attention probabilities (papers.md 1.3): P -> {0, alpha}."""

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

    def call(self, p):
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
    The two matmuls have no binary op in LCE: they become float BATCH_MATMUL.
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
        scores = tf.matmul(qh, kh, transpose_b=True)
        if self.lsa:
            scores = scores * self.temperature
            n = scores.shape[-1]
            if scores.shape[-2] == n:
                scores = scores - tf.eye(n, dtype=scores.dtype) * 1e9  # mask self-similarity
        else:
            scores = scores * (1.0 / math.sqrt(self.head_dim))
        probs = tf.nn.softmax(scores, axis=-1)
        if self.prob_quant == "binary":
            probs = self.prob_binarizer(probs)
        ctx = tf.matmul(probs, vh)  # (B, heads, N, d)
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


def zero_padded_avg_pool(x: tf.Tensor, pool: Sequence[int], *, name: str) -> tf.Tensor:
    """Stride-1 average pool whose borders average in the zero padding (PyTorch count_include_pad).

    Keras ``AveragePooling2D(padding='same')`` leaves padding out of the average, which does not
    match the official multi-branch pooling; pad explicitly, then pool 'valid'.
    """
    ph, pw = pool
    x = tf.keras.layers.ZeroPadding2D(((ph // 2, ph // 2), (pw // 2, pw // 2)), name=f"{name}_pad")(x)
    return tf.keras.layers.AveragePooling2D((ph, pw), strides=1, padding="valid", name=name)(x)



def float_linear(
    x: tf.Tensor,
    out_channels: int,
    *,
    name: str,
    residual: bool = True,
    activation: bool = True,
) -> tf.Tensor:
    """The full-precision twin of `binary_linear`: same graph with a float 1x1 conv and no sign.

    Used by the float teachers built from a binary family (``binary=False``), so a teacher and its
    student differ only in precision.
    """
    h = tf.keras.layers.Conv2D(
        out_channels, 1, use_bias=False, kernel_initializer=trunc_normal(0.02), name=name
    )(x)
    h = batch_norm(f"{name}_bn")(h)
    if residual:
        h = tf.keras.layers.Add(name=f"{name}_res")([h, channel_shortcut(x, out_channels, name=name)])
    if activation:
        h = RPReLU(name=f"{name}_rprelu")(h)
    return h


def token_linear(x: tf.Tensor, out_channels: int, *, binary: bool, name: str) -> tf.Tensor:
    """`binary_linear` or its float twin, chosen by `binary`."""
    fn = binary_linear if binary else float_linear
    return fn(x, out_channels, name=name)


def multi_pool_branches(x: tf.Tensor, sizes: Sequence[int], *, name: str) -> list:
    """BinaryViT's multi-branch average pooling (papers.md 1.2): for each k, a 1xk and a kx1
    stride-1 average pool of `x` with PyTorch's zero-padded (count_include_pad) borders, each
    behind its own LayerScale starting at a=0, so the branches start switched off."""
    out = []
    for k in sizes:
        for shape, tag in (((1, k), f"1x{k}"), ((k, 1), f"{k}x1")):
            p = zero_padded_avg_pool(x, shape, name=f"{name}_avg{tag}")
            out.append(LayerScale(init_scale=0.0, name=f"{name}_avg{tag}_ls")(p))
    return out


# --------------------------------------------------------------------------------------------
# Token layout: class token on an NHWC grid
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Spatial reduction of keys / values (PVT-style, papers.md 1.3)
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Patch merging between pyramid stages (papers.md 1.4)
# --------------------------------------------------------------------------------------------
def binary_patch_merging(x: tf.Tensor, *, binary: bool = True, name: str) -> tf.Tensor:
    """BinaryViT's `BinaryPatchEmbed`: (H, W, C) -> (H/2, W/2, 2C).

    ``x0 = BN0(x); RPReLU(BN(BinConv2x2s2(x0 + b)) + tile2(AvgPool2x2(x0)))``. The conv's weights
    are not centred (BinaryViT convs scale by mean|W| only). `binary=False` gives the float twin.
    """
    c = x.shape[-1]
    x0 = batch_norm(f"{name}_bn0")(x)
    res = tf.keras.layers.AveragePooling2D(2, strides=2, padding="valid", name=f"{name}_respool")(x0)
    res = ChannelTile(repeats=2, name=f"{name}_tile")(res)
    if binary:
        h = LearnableBias(name=f"{name}_move")(x0)
        h = binary_conv(2 * c, 2, strides=2, centre=False, name=f"{name}_conv")(h)
    else:
        h = tf.keras.layers.Conv2D(
            2 * c, 2, strides=2, use_bias=False, kernel_initializer=trunc_normal(0.02), name=f"{name}_conv"
        )(x0)
    h = batch_norm(f"{name}_bn")(h)
    h = tf.keras.layers.Add(name=f"{name}_res")([h, res])
    return RPReLU(name=f"{name}_rprelu")(h)


def float_patch_merging(x: tf.Tensor, *, name: str) -> tf.Tensor:
    """BinaryViT*'s full-precision `PatchEmbed`: ``BN(Conv2x2s2(BN0(x)))``, (H, W, C) -> (H/2, W/2, 2C).

    No residual and no RPReLU, as in the official ``--some-fp`` code.
    """
    x0 = batch_norm(f"{name}_bn0")(x)
    h = tf.keras.layers.Conv2D(
        2 * x.shape[-1], 2, strides=2, use_bias=False, kernel_initializer=trunc_normal(0.02), name=f"{name}_conv"
    )(x0)
    return batch_norm(f"{name}_bn")(h)


# --------------------------------------------------------------------------------------------
# Shifted Patch Tokenization (Lee et al. 2021, papers.md section 3)
# --------------------------------------------------------------------------------------------
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


__all__ = [
    "AttentionProbBinarizer",
    "BinarySign",
    "ChannelAvgPool",
    "ChannelTile",
    "ClassToken",
    "DiagonalShifts",
    "LayerScale",
    "LearnableBias",
    "MultiHeadAttentionCore",
    "PositionEmbedding",
    "RPReLU",
    "ScaledSign",
    "SpaceToDepth",
    "TakeToken",
    "batch_norm",
    "binary_conv",
    "binary_linear",
    "binary_patch_merging",
    "channel_shortcut",
    "float_linear",
    "float_patch_merging",
    "multi_pool_branches",
    "shifted_patch_tokenization",
    "spatial_reduction",
    "token_linear",
    "trunc_normal",
    "upsample_nearest",
    "zero_padded_avg_pool",
]
