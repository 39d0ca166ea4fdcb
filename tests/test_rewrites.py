"""converters/rewrites.py: QuantDense -> 1x1 QuantConv2D keeps outputs and becomes LceBconv2d."""
import numpy as np
import pytest

import edgebvit  # noqa: F401
from edgebvit.converters.rewrites import rewrite_quant_dense
from edgebvit.errors import ModelError

QD = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip")


def _functional_tokens():
    import larq as lq
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    x = tf.keras.Input((16, 64))
    h = lq.layers.QuantDense(64, name="qkv", **QD)(x)
    h = tf.keras.layers.BatchNormalization(name="bn", beta_initializer=tf.keras.initializers.Constant(0.1))(h)
    h = tf.keras.layers.Add()([h, x])  # residual: the rewritten layer has two consumers downstream
    h = lq.layers.QuantDense(32, input_quantizer="approx_sign", kernel_quantizer=lq.quantizers.MagnitudeAwareSign(),
                             use_bias=False, name="fc")(h)
    h = tf.keras.layers.GlobalAveragePooling1D()(h)
    return tf.keras.Model(x, tf.keras.layers.Dense(10, name="head")(h))


def _outputs(model, x):
    return np.asarray(model(x, training=False))


def test_functional_tokens_rewrite_keeps_outputs():
    import larq as lq

    m = _functional_tokens()
    res = rewrite_quant_dense(m)
    assert res.rewritten == ("qkv", "fc")
    assert not any(isinstance(l, lq.layers.QuantDense) for l in res.model.layers)
    convs = [l for l in res.model.layers if isinstance(l, lq.layers.QuantConv2D)]
    assert [c.name for c in convs] == ["qkv", "fc"] and convs[0].kernel.shape == (1, 1, 64, 64)
    x = np.random.default_rng(1).normal(size=(4, 16, 64)).astype(np.float32)
    np.testing.assert_allclose(_outputs(res.model, x), _outputs(m, x), rtol=1e-5, atol=1e-5)


def test_sequential_2d_and_4d_inputs():
    import larq as lq
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    seq = tf.keras.Sequential([
        tf.keras.Input((4, 4, 32)),
        lq.layers.QuantDense(16, name="on_grid", **QD),  # rank 4: applied as a conv directly
        tf.keras.layers.Flatten(),
        lq.layers.QuantDense(8, name="on_vector", **QD),  # rank 2: (B, 1, 1, C)
    ])
    res = rewrite_quant_dense(seq)
    assert set(res.rewritten) == {"on_grid", "on_vector"}
    x = np.random.default_rng(2).normal(size=(3, 4, 4, 32)).astype(np.float32)
    np.testing.assert_allclose(_outputs(res.model, x), _outputs(seq, x), rtol=1e-5, atol=1e-4)


def test_no_quant_dense_returns_same_model():
    import tensorflow as tf

    x = tf.keras.Input((4,))
    m = tf.keras.Model(x, tf.keras.layers.Dense(2)(x))
    res = rewrite_quant_dense(m)
    assert res.model is m and not res.changed


def test_subclassed_model_gets_clear_error():
    import larq as lq
    import tensorflow as tf

    class Sub(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = lq.layers.QuantDense(4, **QD)

        def call(self, x):
            return self.fc(x)

    m = Sub()
    m(np.zeros((1, 8), np.float32))
    with pytest.raises(ModelError, match="subclassed"):
        rewrite_quant_dense(m)


@pytest.mark.slow
def test_rewrite_turns_float_fully_connected_into_bconv():
    import larq_compute_engine as lce

    from edgebvit.converters.inspect import inspect_flatbuffer
    from edgebvit.converters.parity import check_parity

    m = _functional_tokens()
    plain = inspect_flatbuffer(lce.convert_keras_model(m)).op_counts()
    res = rewrite_quant_dense(m)
    fb = lce.convert_keras_model(res.model)
    rewritten = inspect_flatbuffer(fb).op_counts()
    assert "LceBconv2d" not in plain and plain["FULLY_CONNECTED"] == 3  # qkv, fc, head: all float
    assert rewritten["LceBconv2d"] == 2 and rewritten["FULLY_CONNECTED"] == 1  # only the head
    x = np.random.default_rng(3).normal(size=(50, 16, 64)).astype(np.float32)
    p = check_parity(res.model, fb, x)
    assert p.top1_agreement >= 0.99 and p.max_abs_diff < 1e-3
