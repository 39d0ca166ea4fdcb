"""BHViT's regularization loss against weight oscillation under Adam (Gao et al., CVPR 2025).

docs/papers.md 2.8: ``L_re = mean over binary layers of mean_i | |w_i| - 1 |`` on the *raw latent*
weights. Adam's second moment keeps growing while the first moment cancels for latent weights
that oscillate around 0, so their updates stall; pulling |w| towards 1 moves them away from the
sign boundary. The official code includes every binary linear/conv (q, k, v, out-proj, fc1,
fc2, the MSGDC convs) but not the patch-merging convs: pass their names in `exclude` of
`edgebvit.models.layers.binary_latent_kernels`.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def oscillation_regularizer(kernels: Sequence[tf.Variable]) -> tf.Tensor:
    """``mean_layers mean_i ||w_i| - 1|`` over the given latent kernels (0 when there are none)."""
    if not kernels:
        return tf.constant(0.0)
    per_layer = [tf.reduce_mean(tf.abs(tf.abs(tf.convert_to_tensor(k)) - 1.0)) for k in kernels]
    return tf.add_n(per_layer) / float(len(per_layer))
