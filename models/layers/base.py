"""What every layer file shares: Keras registration, initialisers, BatchNorm with PyTorch defaults."""
from __future__ import annotations

import tensorflow as tf

PACKAGE = "edgebvit"  # Keras registration package: saved models name layers "edgebvit>ClassName"
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1 == Keras momentum 0.9
BN_EPSILON = 1e-5


def serializable(cls):
    """Register a layer with Keras so a saved model reloads without the code that built it."""
    return tf.keras.utils.register_keras_serializable(package=PACKAGE)(cls)


def trunc_normal(std: float = 0.02) -> tf.keras.initializers.Initializer:
    return tf.keras.initializers.TruncatedNormal(stddev=std)


def torch_default_init() -> tf.keras.initializers.Initializer:
    """PyTorch's default for nn.Linear / nn.Conv2d weights (kaiming_uniform, a=sqrt(5)): U(+-1/sqrt(fan_in))."""
    return tf.keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def batch_norm(name: str) -> tf.keras.layers.BatchNormalization:
    """BatchNorm over channels, PyTorch defaults: the binary runs replace every LayerNorm by it."""
    return tf.keras.layers.BatchNormalization(
        axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )
