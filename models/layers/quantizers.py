"""Weight quantizers and the model surgery training does on them (docs/papers.md 0, 3).

`ScaledSign` is the binary weight quantizer of both official repositories, `ReCUSign` BHViT's
optional `--recu` form of it (same forward, ReCU's gradient). The functions below
it are what the trainer calls on a built model instead of rewriting quantizers from outside:

* `binary_layers` / `binary_latent_kernels`: walk the 1-bit layers and their float latent weights;
* `set_ste_mask`: Bop's unmasked straight-through gradient (forward unchanged);
* `install_kernel_switch`: stage 1 of the two-stage schedule (float weights while a switch is 0).
"""
from __future__ import annotations

import fnmatch
import logging
import math
from typing import Callable, List, Sequence

import larq as lq
import tensorflow as tf

from edgebvit.models.layers import fused
from edgebvit.models.layers.base import serializable


class _NoStarvedWeightsWarning(logging.Filter):
    """larq warns on binary kernels without a clip constraint; ScaledSign masks its own gradient
    (straight-through only where |W_c| <= 1, as the official code does), so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "starved weights" not in record.getMessage()


logging.getLogger("larq.layers_base").addFilter(_NoStarvedWeightsWarning())

STE_MASKS = ("centred", "none")


@serializable
class ApproxSign(lq.quantizers.ApproxSign):
    """larq's `ApproxSign` (sign forward, Bi-Real's piecewise-quadratic gradient), with the fused
    training kernel of `fused.approx_sign` when called with training=True.

    Same class name and config as larq's, so the converter and `precheck` treat it as larq's sign;
    inference, export and conversion run larq's own graph.
    """

    def call(self, inputs, training=None):
        if fused.use_fused(training):
            return lq.quantizers._BaseQuantizer.call(self, fused.approx_sign(inputs))
        return super().call(inputs)


@serializable
class QuantConv2D(lq.layers.QuantConv2D):
    """larq's `QuantConv2D`, same class name and config; a 1x1, stride-1, ungrouped one trains
    (training=True, fused kernels on) as a matrix product over the tokens (`fused.pointwise_conv`).

    Inference, export and conversion run larq's convolution, which LCE turns into `LceBconv2d`.
    """

    _as_matmul = False

    def _pointwise(self) -> bool:
        return (tuple(self.kernel_size) == (1, 1) and tuple(self.strides) == (1, 1)
                and tuple(self.dilation_rate) == (1, 1) and self.groups == 1
                and self.data_format == "channels_last")

    def call(self, inputs, training=None):
        self._as_matmul = fused.use_fused(training) and self._pointwise()
        try:
            return super().call(inputs)
        finally:
            self._as_matmul = False

    def convolution_op(self, inputs, kernel):
        if self._as_matmul:
            return fused.pointwise_conv(inputs, kernel)
        return super().convolution_op(inputs, kernel)


@serializable
class ScaledSign(lq.quantizers.Quantizer):
    """Binary weight quantizer of both official repos (docs/papers.md 0).

    Forward: ``alpha_o * sign(W - mean_o(W))`` with ``alpha_o = mean_o |W|`` of the *uncentred*
    weights, detached, per output channel. Backward: straight-through, masked by ``|W_c| <= 1``.
    For a Keras conv kernel (kh, kw, in, out) the reductions run over axes (0, 1, 2).

    Arguments:
        centre: subtract the per-channel mean before the sign (linear layers and BHViT convs);
            BinaryViT's convs do not centre.
        ste_mask: ``"centred"`` masks the gradient by ``|W_c| <= 1`` (the official clamp);
            ``"none"`` drops the mask. Under Bop the latent weights are exactly +-1, so a channel
            with mostly +1 has mean near 1 and its -1 weights sit at ``|W_c|`` near 2, where the
            mask would zero their gradient and Bop could never flip them back (`set_ste_mask`).

    After constant folding the kernel is exactly +-alpha per output channel, which is what LCE's
    converter requires to emit `LceBconv2d` (docs/lce.md, Lowering table).

    References:
        Liu et al., ReActNet (ECCV 2020); Le & Li, BinaryViT (CVPRW 2023); Gao et al., BHViT (CVPR 2025).
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


def recu_clip(w: tf.Tensor, tau: float) -> tf.Tensor:
    """ReCU's latent weight for the straight-through gradient, as the official BHViT linears:
    centred and standardised per output channel to standard deviation 2*sqrt(2) (unbiased
    variance, eps 1e-5), then clipped at ``Q_tau = -mean|W_s| ln(2 - 2 tau)`` (mean over the
    whole kernel, no gradient through it)."""
    axes = list(range(len(w.shape) - 1))
    n = 1
    for d in w.shape[:-1]:
        n *= int(d)
    wc = w - tf.reduce_mean(w, axis=axes, keepdims=True)
    var = tf.reduce_sum(tf.square(wc), axis=axes, keepdims=True) / float(max(n - 1, 1))
    ws = wc / (tf.sqrt(var + 1e-5) / 2.0 / math.sqrt(2.0))
    q_tau = tf.stop_gradient(-tf.reduce_mean(tf.abs(ws)) * math.log(2.0 - 2.0 * tau))
    return tf.clip_by_value(ws, -q_tau, q_tau)


@serializable
class ReCUSign(lq.quantizers.Quantizer):
    """ReCU weight binarizer (Xu et al., "ReCU: Reviving the Dead Weights in Binary Neural
    Networks", ICCV 2021) in the form of BHViT's `--recu` linear layers (docs/papers.md 0).

    Forward: ``alpha_o * sign(W - mean_o(W))`` with ``alpha_o = mean_o |W|`` of the uncentred
    weights, detached: the values of `ScaledSign(centre=True)`, so LCE folds it to +-alpha per
    output channel all the same. Backward: the gradient of `recu_clip` (standardised weights
    clipped at the tau-quantile of their Laplace fit, tau fixed at 0.92 as the official code,
    which has no tau schedule), not scaled by alpha, as the official ``b.detach() - c.detach() + c``.
    """

    precision = 1

    def __init__(self, *, tau: float = 0.92, **kwargs):
        super().__init__(**kwargs)
        if not 0.5 < float(tau) < 1.0:
            raise ValueError(f"ReCU's tau must lie in (0.5, 1), where its clip -mean|W| ln(2 - 2 tau) "
                             f"is positive; got {tau}")
        self.tau = float(tau)

    def call(self, inputs):
        axes = list(range(len(inputs.shape) - 1))
        alpha = tf.stop_gradient(tf.reduce_mean(tf.abs(inputs), axis=axes, keepdims=True))
        tau = self.tau

        @tf.custom_gradient
        def binarize(w):
            wc = w - tf.reduce_mean(w, axis=axes, keepdims=True)

            def grad(dy):
                with tf.GradientTape() as tape:
                    tape.watch(w)
                    clipped = recu_clip(w, tau)
                return tape.gradient(clipped, w, output_gradients=dy)

            return alpha * lq.math.sign(wc), grad

        return binarize(inputs)

    def get_config(self):
        return {**super().get_config(), "tau": self.tau}


# --------------------------------------------------------------------------------------------
# Walking the binary layers of a built model
# --------------------------------------------------------------------------------------------
def latent(variable) -> tf.Variable:
    """The float latent variable behind a larq QuantizedVariable (the variable itself otherwise)."""
    return getattr(variable, "latent_variable", variable)


def binary_layers(model: tf.keras.Model, exclude: Sequence[str] = ()) -> List[tf.keras.layers.Layer]:
    """Layers whose kernel quantizer is 1-bit (larq's `precision == 1`), minus `exclude` patterns."""
    out = []
    for layer in model.submodules:
        q = getattr(layer, "kernel_quantizer", None)
        if q is None or getattr(q, "precision", None) != 1 or not hasattr(layer, "kernel"):
            continue
        if any(fnmatch.fnmatch(layer.name, pat) for pat in exclude):
            continue
        out.append(layer)
    return out


def binary_latent_kernels(model: tf.keras.Model, exclude: Sequence[str] = ()) -> List[tf.Variable]:
    """The raw (unquantized) kernels of the model's binary layers."""
    return [latent(layer.kernel) for layer in binary_layers(model, exclude)]


# --------------------------------------------------------------------------------------------
# Surgery the trainer asks for
# --------------------------------------------------------------------------------------------
def set_ste_mask(model: tf.keras.Model, mask: str) -> int:
    """Set the straight-through mask of every `ScaledSign` kernel quantizer; returns how many
    changed. Bop needs ``"none"`` (see ScaledSign); the forward pass, and so the exported model,
    is unchanged."""
    if mask not in STE_MASKS:
        raise ValueError(f"ste_mask must be one of {STE_MASKS}, got {mask!r}")
    switched = 0
    for layer in binary_layers(model):
        q = layer.kernel_quantizer
        if isinstance(q, ScaledSign) and q.ste_mask != mask:
            q.ste_mask = mask
            switched += 1
    return switched


class _SwitchableQuantizer:
    """Kernel quantizer that passes the float weights through while the switch variable is 0.

    Stage 1 of the two-stage schedule (ReActNet, docs/papers.md 3): binary activations, real
    weights. Installed on the QuantizedVariable only during training; the layers' configs keep
    their own quantizers, so a saved model never contains it.
    """

    def __init__(self, quantizer, switch: tf.Variable):
        self.quantizer = quantizer
        self.switch = switch

    def __call__(self, w):
        return tf.cond(self.switch > 0.5, lambda: self.quantizer(w), lambda: tf.identity(w))


def install_kernel_switch(model: tf.keras.Model, switch: tf.Variable) -> Callable[[], None]:
    """Make every binary kernel of `model` switchable by `switch` (1: binary, 0: float weights);
    returns the function that restores the original quantizers."""
    restored = []
    for layer in binary_layers(model):
        var = layer.kernel
        restored.append((var, var.quantizer))
        var.quantizer = _SwitchableQuantizer(var.quantizer, switch)

    def restore():
        for v, q in restored:
            v.quantizer = q

    return restore
