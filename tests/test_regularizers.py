"""models/regularizers.py: BHViT's L_re on the raw latent weights of the binary layers only."""
import larq as lq
import numpy as np
import pytest

import edgebvit  # noqa: F401
import tensorflow as tf

from edgebvit.models.layers import ScaledSign, binary_conv
from edgebvit.models.layers import binary_latent_kernels, binary_layers
from edgebvit.models.regularizers import oscillation_regularizer


def _model():
    x = tf.keras.Input((4, 4, 8))
    h = tf.keras.layers.Conv2D(8, 1, name="float_conv")(x)
    h = binary_conv(8, 1, name="bin_a")(h)
    h = binary_conv(16, 1, name="merge_conv")(h)
    h = lq.layers.QuantConv2D(8, 1, input_quantizer="ste_sign", kernel_quantizer=lq.quantizers.DoReFa(k_bit=2, mode="weights"),
                              name="two_bit")(h)
    return tf.keras.Model(x, h)


def test_selects_binary_layers_and_excludes_patterns():
    m = _model()
    assert [layer.name for layer in binary_layers(m)] == ["bin_a", "merge_conv"]
    assert [layer.name for layer in binary_layers(m, exclude=["merge*"])] == ["bin_a"]
    kernels = binary_latent_kernels(m)
    assert all(not hasattr(k, "latent_variable") for k in kernels)  # raw float variables


def test_value_is_mean_over_layers_of_mean_abs_abs_w_minus_one():
    m = _model()
    rng = np.random.default_rng(0)
    layers = binary_layers(m)
    ws = [rng.normal(0, 0.7, k.shape).astype(np.float32) for k in binary_latent_kernels(m)]
    for layer, w in zip(layers, ws):
        layer.set_weights([w])
    want = np.mean([np.mean(np.abs(np.abs(w) - 1.0)) for w in ws])
    got = float(oscillation_regularizer(binary_latent_kernels(m)))
    assert got == pytest.approx(want, rel=1e-5)
    # On the latent weights, not the quantized ones: +-alpha kernels would give a different value.
    quantized = [ScaledSign()(tf.constant(w)).numpy() for w in ws]
    assert got != pytest.approx(np.mean([np.mean(np.abs(np.abs(q) - 1.0)) for q in quantized]), rel=1e-3)
    assert float(oscillation_regularizer([])) == 0.0


def test_gradient_pushes_magnitudes_towards_one():
    v = tf.Variable([[0.02, -0.5, 1.5, -2.0]])
    with tf.GradientTape() as tape:
        loss = oscillation_regularizer([v])
    g = tape.gradient(loss, v).numpy()[0]
    # Descent direction -g: small |w| grow away from 0, large |w| shrink.
    assert np.sign(-g[0]) == 1 and np.sign(-g[1]) == -1 and np.sign(-g[2]) == -1 and np.sign(-g[3]) == 1
