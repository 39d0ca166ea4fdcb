"""BHViT's regularization loss against weight oscillation under Adam (Gao et al., CVPR 2025).

papers.md 2.8: ``L_re = mean over binary layers of mean_i | |w_i| - 1 |`` on the *raw latent*
weights. Adam's second moment keeps growing while the first moment cancels for latent weights
that oscillate around 0, so their updates stall; pulling |w| towards 1 moves them away from the
sign boundary. The official code includes every binary linear/conv (q, k, v, out-proj, fc1,
fc2, the MSGDC convs) but not the patch-merging convs: pass their names in `exclude`.
"""
from __future__ import annotations

import fnmatch
from typing import List, Sequence

import tensorflow as tf


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


def oscillation_regularizer(kernels: Sequence[tf.Variable]) -> tf.Tensor:
    """``mean_layers mean_i ||w_i| - 1|`` over the given latent kernels (0 when there are none)."""
    if not kernels:
        return tf.constant(0.0)
    per_layer = [tf.reduce_mean(tf.abs(tf.abs(tf.convert_to_tensor(k)) - 1.0)) for k in kernels]
    return tf.add_n(per_layer) / float(len(per_layer))
