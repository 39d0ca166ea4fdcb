"""converters/parity.py: Keras vs LCE interpreter agreement, and finding the diverging layer."""
import numpy as np
import pytest

import edgebvit  # noqa: F401
from edgebvit.converters.parity import check_parity, locate_divergence

pytestmark = pytest.mark.slow


def _chain(seed=0):
    import larq as lq
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    q = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)
    x = tf.keras.Input((4, 4, 32))
    h = lq.layers.QuantConv2D(32, 1, name="b1", **q)(x)
    h = tf.keras.layers.BatchNormalization(name="bn1")(h)
    h = lq.layers.QuantConv2D(32, 1, name="b2", **q)(h)
    h = tf.keras.layers.BatchNormalization(name="bn2")(h)
    h = tf.keras.layers.GlobalAveragePooling2D(name="gap")(h)
    m = tf.keras.Model(x, tf.keras.layers.Dense(5, name="head")(h))
    rng = np.random.default_rng(seed)
    for name in ("bn1", "bn2"):
        layer = m.get_layer(name)
        g, b, mu, v = layer.get_weights()
        layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0.05, 0.3, b.shape),
                           rng.normal(0, 2, mu.shape), rng.uniform(1, 4, v.shape)])
    return m


def _convert(model):
    import larq_compute_engine as lce

    return lce.convert_keras_model(model)


def test_parity_metrics_with_labels():
    m = _chain()
    x = np.random.default_rng(1).normal(size=(40, 4, 4, 32)).astype(np.float32)
    keras_top = np.asarray(m.predict(x, verbose=0)).argmax(-1)
    y = keras_top.copy()
    y[:10] = (y[:10] + 1) % 5  # a quarter of the labels wrong on purpose
    p = check_parity(m, _convert(m), x, y)
    assert p.samples == 40 and p.top1_agreement == 1.0
    assert p.max_abs_diff < 1e-3 and p.mean_abs_diff <= p.max_abs_diff
    assert p.keras_top1 == pytest.approx(0.75) and p.lce_top1 == pytest.approx(0.75)
    assert p.indirect_bgemm is False


def test_locate_divergence_names_the_broken_layer():
    """A converter that silently corrupts bn2 must be blamed on bn2, not on later layers."""
    m = _chain()
    x = np.random.default_rng(1).normal(size=(8, 4, 4, 32)).astype(np.float32)

    def broken_convert(sub):
        names = {l.name for l in sub.layers}
        if "bn2" not in names:
            return _convert(sub)
        layer = sub.get_layer("bn2")
        saved = layer.get_weights()
        layer.set_weights([saved[0] * 3.0] + saved[1:])
        try:
            return _convert(sub)
        finally:
            layer.set_weights(saved)

    d = locate_divergence(m, x, broken_convert)
    assert d is not None and d.layer == "bn2" and d.previous_layer == "b2"
    assert d.relative_diff > 0.1 and d.probes <= 4
    assert locate_divergence(m, x, _convert) is None  # an honest converter: nothing to blame
