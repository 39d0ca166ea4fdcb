"""Binary linear layers on the NHWC token grid, and their float twins (docs/papers.md 0, docs/lce.md).

Every token-wise linear layer is a 1x1 `lq.layers.QuantConv2D`: only `QuantConv2D` becomes
`LceBconv2d` (a `QuantDense` stays a float FULLY_CONNECTED). Activations are binarized with
larq's own sign (`ApproxSign`), which the converter recognises; weights with `ScaledSign`, which
constant-folds to +-alpha per output channel as LCE requires.
"""
from __future__ import annotations

import tensorflow as tf

from edgebvit.models.layers.base import batch_norm, kernel_init, serializable
from edgebvit.models.layers.elementwise import LearnableBias, RPReLU, channel_shortcut
from edgebvit.models.layers.quantizers import ApproxSign, QuantConv2D, ReCUSign, ScaledSign


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
    recu: bool = False,
) -> QuantConv2D:
    """A binary conv LCE converts to `LceBconv2d`: ApproxSign inputs, ScaledSign weights, no bias.

    ApproxSign is the Bi-Real piecewise-quadratic sign gradient both official repos use; its
    forward is larq's sign, which LCE's converter recognises. No bias: the BN after it carries one
    and fuses into the bconv's post-activation bias. `recu` swaps in ReCU's gradient (`ReCUSign`,
    BHViT's `--recu`; its weights are always centred), with the same forward values.
    """
    if recu and not centre:
        raise ValueError(f"{name}: ReCU always centres the weights; recu=True needs centre=True")
    return QuantConv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        pad_values=pad_values,
        dilation_rate=dilation_rate,
        groups=groups,
        input_quantizer=ApproxSign(),
        kernel_quantizer=ReCUSign() if recu else ScaledSign(centre=centre),
        kernel_constraint=None,  # the official code clips nothing; the STE mask does the job
        kernel_initializer=kernel_init(),
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
    recu: bool = False,
) -> tf.Tensor:
    """``RPReLU(BN(BinLinear(sign(x + b))) + shortcut(x))`` on an (B, H, W, C) token grid.

    The linear layer is a 1x1 `QuantConv2D`, the shortcut is identity / tile / channel-average
    depending on the width change. Turning `residual` or `activation` off gives the naive form
    used in the ablations. The BN between the conv and the next sign also keeps Keras and LCE
    from breaking float-rounding ties around 0 differently (measured by the export tests).
    """
    h = LearnableBias(name=f"{name}_move")(x)
    h = binary_conv(out_channels, 1, name=name, centre=centre, recu=recu)(h)
    h = batch_norm(f"{name}_bn")(h)
    if residual:
        h = tf.keras.layers.Add(name=f"{name}_res")([h, channel_shortcut(x, out_channels, name=name)])
    if activation:
        h = RPReLU(name=f"{name}_rprelu")(h)
    return h


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
        out_channels, 1, use_bias=False, kernel_initializer=kernel_init(), name=name
    )(x)
    h = batch_norm(f"{name}_bn")(h)
    if residual:
        h = tf.keras.layers.Add(name=f"{name}_res")([h, channel_shortcut(x, out_channels, name=name)])
    if activation:
        h = RPReLU(name=f"{name}_rprelu")(h)
    return h


def token_linear(x: tf.Tensor, out_channels: int, *, binary: bool, name: str,
                 recu: bool = False) -> tf.Tensor:
    """`binary_linear` (ReCU's weight gradient with `recu`) or its float twin, chosen by `binary`."""
    if binary:
        return binary_linear(x, out_channels, name=name, recu=recu)
    return float_linear(x, out_channels, name=name)


@serializable
class BinarySign(tf.keras.layers.Layer):
    """``sign(x + b)`` with a learnable per-channel threshold and the ApproxSign gradient.

    Used where a binarized activation feeds something other than a conv (Q, K, V of attention):
    the +-1 values are exact, so the float matmuls downstream compute integer dot products.
    """

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")
        self.quantizer = ApproxSign()
        super().build(input_shape)

    def call(self, x, training=None):
        return self.quantizer(x + self.bias, training=training)
