"""converters/precheck.py: each reason a layer will not become a fast binary op is reported."""
import numpy as np
import pytest

import edgebvit  # noqa: F401
from edgebvit.converters.precheck import Finding, is_sign_quantizer, precheck

Q = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)


def _model(*layers, shape=(8, 8, 64)):
    import tensorflow as tf

    x = tf.keras.Input(shape)
    h = x
    for layer in layers:
        h = layer(h)
    return tf.keras.Model(x, h)


def _kinds(findings, layer):
    return {f.kind for f in findings if f.layer == layer}


def test_clean_binary_conv_has_no_findings():
    import larq as lq

    m = _model(lq.layers.QuantConv2D(64, 3, padding="same", pad_values=1.0, name="ok", **Q),
               lq.layers.QuantConv2D(32, 1, input_quantizer="approx_sign",
                                     kernel_quantizer=lq.quantizers.MagnitudeAwareSign(), name="ok2"))
    assert precheck(m) == []


def test_each_warning_is_reported():
    import larq as lq
    import tensorflow as tf

    def not_a_sign(x):  # a custom quantizer the converter cannot match
        return tf.clip_by_value(x, -1.0, 1.0)

    x = tf.keras.Input((8, 8, 64))
    branches = [
        lq.layers.QuantDepthwiseConv2D(3, padding="same", input_quantizer="ste_sign", depthwise_quantizer="ste_sign", name="dw")(x),
        lq.layers.QuantConv2D(64, 3, padding="same", pad_values=1.0, groups=4, name="grouped16", **Q)(x),
        lq.layers.QuantConv2D(64, 3, padding="same", pad_values=1.0, groups=2, name="grouped32", **Q)(x),
        lq.layers.QuantConv2D(64, 3, padding="same", name="zeropad", **Q)(x),
        lq.layers.QuantConv2D(64, 1, input_quantizer=lq.quantizers.DoReFa(k_bit=1, mode="activations"),
                              kernel_quantizer="ste_sign", name="dorefa")(x),
        lq.layers.QuantConv2D(64, 1, input_quantizer=not_a_sign, kernel_quantizer="ste_sign", name="custom")(x),
        lq.layers.QuantConv2D(64, 1, input_quantizer="ste_sign", name="floatkernel")(x),
        lq.layers.QuantConv2D(64, 1, kernel_quantizer="ste_sign", name="floatinput")(x),
    ]
    h = tf.keras.layers.Concatenate()(branches)
    odd = lq.layers.QuantConv2D(12, 1, name="odd", **Q)(tf.keras.layers.Conv2D(40, 1)(x))
    t = tf.keras.layers.Reshape((64, 64))(x)
    qd = lq.layers.QuantDense(16, input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="qd")(t)
    m = tf.keras.Model(x, [h, odd, qd])
    f = precheck(m)
    assert all(isinstance(i, Finding) and i.message for i in f)
    assert _kinds(f, "qd") == {"quant_dense"}
    assert _kinds(f, "dw") == {"quant_depthwise"}
    assert _kinds(f, "grouped16") == {"grouped_lt32"}
    assert _kinds(f, "grouped32") == {"grouped_indirect_bgemm"}
    assert _kinds(f, "zeropad") == {"zero_padding"}
    assert _kinds(f, "dorefa") == {"unrecognised_input_quantizer"}
    assert _kinds(f, "custom") == {"unrecognised_input_quantizer"}
    assert _kinds(f, "floatkernel") == {"float_kernel"}
    assert _kinds(f, "floatinput") == {"float_input"}
    assert _kinds(f, "odd") == {"channels_in_not_multiple_of_32", "channels_out_not_multiple_of_8"}
    sev = {x.kind: x.severity for x in f}
    assert sev["quant_dense"] == "warning" and sev["channels_out_not_multiple_of_8"] == "info"
    # xcore does not convert zero padding at all: the message says so.
    xcore = [x for x in precheck(m, target="xcore") if x.kind == "zero_padding"]
    assert "xcore" in xcore[0].message


def test_custom_sign_quantizers():
    import larq as lq
    import tensorflow as tf

    assert is_sign_quantizer(lambda x: lq.math.sign(x))
    assert is_sign_quantizer(lambda x: tf.where(x >= 0, 1.0, -1.0))
    assert not is_sign_quantizer(lambda x: tf.sign(x))  # sign(0) = 0: not larq's sign
    assert not is_sign_quantizer(lambda x: tf.cast(x >= 0, tf.float32) * 2 - 1)  # right values, no pattern
    assert is_sign_quantizer("approx_sign") and not is_sign_quantizer(None)


def test_nested_layers_are_checked():
    import larq as lq
    import tensorflow as tf

    inner = _model(lq.layers.QuantDepthwiseConv2D(3, input_quantizer="ste_sign", depthwise_quantizer="ste_sign", name="inner_dw"))
    x = tf.keras.Input((8, 8, 64))
    m = tf.keras.Model(x, inner(x))
    assert _kinds(precheck(m), "inner_dw") == {"quant_depthwise"}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["grouped16", "dorefa", "floatkernel"])
def test_warned_layers_really_stay_float(case):
    """The precheck's claims, measured: these convert to float CONV_2D, not LceBconv2d."""
    import larq as lq
    import larq_compute_engine as lce

    from edgebvit.converters.inspect import inspect_flatbuffer

    layer = {
        "grouped16": lambda: lq.layers.QuantConv2D(64, 3, padding="same", pad_values=1.0, groups=4, **Q),
        "dorefa": lambda: lq.layers.QuantConv2D(64, 1, input_quantizer=lq.quantizers.DoReFa(k_bit=1, mode="activations"),
                                                kernel_quantizer="ste_sign", use_bias=False),
        "floatkernel": lambda: lq.layers.QuantConv2D(64, 1, input_quantizer="ste_sign", use_bias=False),
    }[case]()
    m = _model(layer)
    assert precheck(m) and precheck(m)[0].severity == "warning"
    counts = inspect_flatbuffer(lce.convert_keras_model(m)).op_counts()
    assert "LceBconv2d" not in counts and counts.get("CONV_2D") == 1
