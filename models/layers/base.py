"""What every layer file shares: Keras registration, initialisers, BatchNorm with PyTorch defaults."""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Union

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


# Weight initialisation schemes a model can be built with (`init` in the model configs):
# "trunc_normal": trunc-normal 0.02 kernels and zero biases, timm/DeiT's `_init_weights`;
# "torch": PyTorch's nn.Linear/nn.Conv2d defaults, U(+-1/sqrt(fan_in)) kernels and biases, which
# is what the official BinaryViT and BHViT code effectively trains from (their `init_weights` is
# declared without `self` and never runs). Tokens and position embeddings stay trunc-normal 0.02
# in both (the official code initialises those explicitly).
WEIGHT_INITS = ("trunc_normal", "torch")
_SCHEME = ["trunc_normal"]


@contextlib.contextmanager
def weight_init(scheme: str) -> Iterator[None]:
    """Build a model's layers under one initialisation scheme (see WEIGHT_INITS)."""
    if scheme not in WEIGHT_INITS:
        raise ValueError(f"init must be one of {', '.join(WEIGHT_INITS)}, got {scheme!r}")
    _SCHEME.append(scheme)
    try:
        yield
    finally:
        _SCHEME.pop()


def kernel_init() -> tf.keras.initializers.Initializer:
    """The kernel initialiser of a linear/conv layer built now (trunc-normal 0.02 unless "torch")."""
    return torch_default_init() if _SCHEME[-1] == "torch" else trunc_normal(0.02)


def bias_init(fan_in: int) -> Union[str, tf.keras.initializers.Initializer]:
    """The bias initialiser of a layer with `fan_in` inputs per output: zeros, or PyTorch's U(+-1/sqrt(fan_in))."""
    if _SCHEME[-1] != "torch":
        return "zeros"
    bound = 1.0 / math.sqrt(fan_in)
    return tf.keras.initializers.RandomUniform(-bound, bound)


def batch_norm(name: str) -> tf.keras.layers.BatchNormalization:
    """BatchNorm over channels, PyTorch defaults: the binary runs replace every LayerNorm by it."""
    return tf.keras.layers.BatchNormalization(
        axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )
