"""Full-precision teachers for distillation on small images.

The binary students learn from a float teacher's soft labels (docs/papers.md 0, KD loss). The
float ViT twins of each binary family live with the family (``binary=False``, e.g.
``vit_tiny_32_fp``); this file holds a small float CNN that trains to a strong teacher on
32x32 data in one or two epochs on a CPU: conv-BN-ReLU stages, each ending in a 2x2 max pool,
then global average pooling and a linear classifier.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import tensorflow as tf

from edgebvit.errors import ModelError
from edgebvit.models import layers as L
from edgebvit.models.registry import register_model


@dataclass(frozen=True, kw_only=True)
class CNNConfig:
    """A VGG-style float CNN: `convs_per_stage` 3x3 conv-BN-ReLU per stage, 2x2 max pool between."""

    input_shape: Tuple[int, int, int] = (32, 32, 1)
    num_classes: int = 10
    widths: Tuple[int, ...] = (32, 64, 128)
    convs_per_stage: int = 2
    dropout: float = 0.1

    def validate(self) -> None:
        h, w, _ = self.input_shape
        if not self.widths or self.convs_per_stage < 1:
            raise ModelError("cnn: widths must be non-empty and convs_per_stage >= 1")
        if h % 2 ** (len(self.widths) - 1) or w % 2 ** (len(self.widths) - 1):
            raise ModelError(f"cnn: a {h}x{w} input does not halve {len(self.widths) - 1} times")


def conv_bn_relu(x: tf.Tensor, filters: int, *, name: str) -> tf.Tensor:
    x = tf.keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
    x = tf.keras.layers.BatchNormalization(momentum=L.BN_MOMENTUM, epsilon=L.BN_EPSILON, name=f"{name}_bn")(x)
    return tf.keras.layers.ReLU(name=f"{name}_relu")(x)


def build_cnn(cfg: CNNConfig) -> tf.keras.Model:
    cfg.validate()
    inputs = tf.keras.Input(shape=tuple(cfg.input_shape), name="image")
    x = inputs
    for s, width in enumerate(cfg.widths):
        for i in range(cfg.convs_per_stage):
            x = conv_bn_relu(x, width, name=f"stage{s}_conv{i}")
        if s + 1 < len(cfg.widths):
            x = tf.keras.layers.MaxPooling2D(2, name=f"stage{s}_pool")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="head_gap")(x)
    if cfg.dropout:
        x = tf.keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    logits = tf.keras.layers.Dense(cfg.num_classes, name="head")(x)
    return tf.keras.Model(inputs, logits)


register_model(
    "cnn_small_32",
    family="cnn",
    config=CNNConfig(),
    build=build_cnn,
    description="float VGG-style CNN, 3 stages x 2 conv-BN-ReLU (32/64/128): teacher for 32x32 data",
    role="teacher",
    tags=("32x32",),
)
