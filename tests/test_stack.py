"""The pinned stack: tf_keras behind tf.keras, larq importable, LCE converter and interpreter."""
import os

import edgebvit


def test_import_sets_legacy_keras_before_tensorflow():
    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"
    import tensorflow as tf
    import tf_keras

    assert tf.keras.layers.Dense is tf_keras.layers.Dense
    assert tf.__version__.startswith("2.16.")


def test_larq_and_lce_import_and_agree_with_tf_keras():
    import larq as lq
    import larq_compute_engine as lce
    import tensorflow as tf

    assert lq.__version__ == "0.14.0"
    assert lce.__version__ == "0.16.0"
    layer = lq.layers.QuantConv2D(8, 1, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    assert isinstance(layer, tf.keras.layers.Conv2D)
    assert callable(lce.convert_keras_model) and hasattr(lce.testing, "Interpreter")


def test_version_matches_package_metadata():
    from importlib.metadata import version

    assert version("edgebvit") == edgebvit.__version__
