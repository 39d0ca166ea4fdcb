"""BinaryViT: Le & Li, "BinaryViT: Pushing Binary Vision Transformers Towards Convolutional
Models", CVPR Workshops 2023 (arXiv 2306.16678). Official code: Phuoc-Hoan-Le/BinaryViT.

Spec: ../shared/design/papers.md sections 0 and 1. Tokens live on an NHWC grid (B, H, W, C) so
that every linear layer is a 1x1 binary `QuantConv2D`, which LCE turns into `LceBconv2d`.

This file holds the isotropic (DeiT-like) BinaryViT block; the ablation ladder and the pyramid
extend it through config switches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import tensorflow as tf

from edgebvit.models import layers as L
from edgebvit.models.registry import register_model


@dataclass(frozen=True)
class BinaryViTConfig:
    """Hyper-parameters of an isotropic binary ViT with BinaryViT's tricks as switches."""

    input_shape: Tuple[int, int, int] = (32, 32, 1)
    num_classes: int = 10
    patch_size: int = 4
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 2
    mlp_ratio: int = 4
    pool_branches: Tuple[int, ...] = (3, 5)  # 1xk and kx1 average-pool branches on the MLP input
    layerscale: bool = True  # affine (a=0.1) before each residual add
    attn_prob_quant: str = "binary"  # "binary": BiT {0, alpha}; "none": float softmax
    binary: bool = True  # False builds the full-precision twin (same graph, float convs)


def patch_embed(x: tf.Tensor, cfg: BinaryViTConfig) -> tf.Tensor:
    """Float stem: a patch_size x patch_size stride-patch_size conv, BN, position embedding."""
    x = tf.keras.layers.Conv2D(
        cfg.embed_dim, cfg.patch_size, strides=cfg.patch_size, use_bias=True,
        kernel_initializer=L.trunc_normal(0.02), name="stem_conv",
    )(x)
    x = L.batch_norm("stem_bn")(x)
    return L.PositionEmbedding(name="pos_embed")(x)


def linear(x: tf.Tensor, out_channels: int, cfg: BinaryViTConfig, *, name: str) -> tf.Tensor:
    """Binary linear with extra residual and RPReLU, or its float twin when cfg.binary is off."""
    if cfg.binary:
        return L.binary_linear(x, out_channels, name=name)
    h = tf.keras.layers.Conv2D(
        out_channels, 1, use_bias=False, kernel_initializer=L.trunc_normal(0.02), name=name
    )(x)
    h = L.batch_norm(f"{name}_bn")(h)
    h = tf.keras.layers.Add(name=f"{name}_res")([h, L.channel_shortcut(x, out_channels, name=name)])
    return L.RPReLU(name=f"{name}_rprelu")(h)


def quantize_activation(x: tf.Tensor, cfg: BinaryViTConfig, *, name: str) -> tf.Tensor:
    return L.BinarySign(name=name)(x) if cfg.binary else x


def attention(xn: tf.Tensor, cfg: BinaryViTConfig, *, name: str) -> tf.Tensor:
    """BinaryViT self-attention (papers.md 1.3) without spatial reduction.

    q/k/v are binary linears with residuals; Q, K, V are signs of them; the context gets the
    q/k/v pre-activations added back (the paper's gradient path around the binarized softmax).
    """
    c = cfg.embed_dim
    q_pre = linear(xn, c, cfg, name=f"{name}_q")
    k_pre = linear(xn, c, cfg, name=f"{name}_k")
    v_pre = linear(xn, c, cfg, name=f"{name}_v")
    q = quantize_activation(q_pre, cfg, name=f"{name}_q_sign")
    k = quantize_activation(k_pre, cfg, name=f"{name}_k_sign")
    v = quantize_activation(v_pre, cfg, name=f"{name}_v_sign")
    prob_quant = cfg.attn_prob_quant if cfg.binary else "none"
    ctx = L.MultiHeadAttentionCore(num_heads=cfg.num_heads, prob_quant=prob_quant, name=f"{name}_core")(
        [q, k, v]
    )
    ctx = L.batch_norm(f"{name}_ctx_bn")(ctx)
    ctx = tf.keras.layers.Add(name=f"{name}_ctx_res")([ctx, q_pre, k_pre, v_pre])
    ctx = L.RPReLU(name=f"{name}_ctx_rprelu")(ctx)
    out = linear(ctx, c, cfg, name=f"{name}_proj")
    if cfg.layerscale:
        out = L.LayerScale(init_scale=0.1, name=f"{name}_ls")(out)
    return out


def mlp(xn: tf.Tensor, cfg: BinaryViTConfig, *, name: str) -> tf.Tensor:
    """fc1 (C -> rC, tile shortcut) then fc2 (rC -> C, channel-average shortcut); no GELU."""
    h = linear(xn, cfg.embed_dim * cfg.mlp_ratio, cfg, name=f"{name}_fc1")
    out = linear(h, cfg.embed_dim, cfg, name=f"{name}_fc2")
    if cfg.layerscale:
        out = L.LayerScale(init_scale=0.1, name=f"{name}_ls")(out)
    return out


def pool_branches(xn: tf.Tensor, cfg: BinaryViTConfig, *, name: str):
    """BinaryViT's multi-branch average pooling on the MLP input, each behind LayerScale(a=0)."""
    out = []
    for k in cfg.pool_branches:
        for shape, tag in (((1, k), f"1x{k}"), ((k, 1), f"{k}x1")):
            p = L.zero_padded_avg_pool(xn, shape, name=f"{name}_avg{tag}")
            out.append(L.LayerScale(init_scale=0.0, name=f"{name}_avg{tag}_ls")(p))
    return out


def encoder_block(x: tf.Tensor, cfg: BinaryViTConfig, *, name: str) -> tf.Tensor:
    """Pre-norm block: x + Attn(BN(x)), then + MLP(BN(x)) + pooling branches (papers.md 1.2)."""
    xn = L.batch_norm(f"{name}_bn1")(x)
    x = tf.keras.layers.Add(name=f"{name}_attn_res")([x, attention(xn, cfg, name=f"{name}_attn")])
    xn2 = L.batch_norm(f"{name}_bn2")(x)
    terms = [x, mlp(xn2, cfg, name=f"{name}_mlp"), *pool_branches(xn2, cfg, name=f"{name}_pool")]
    return tf.keras.layers.Add(name=f"{name}_out")(terms)


def classifier_head(x: tf.Tensor, cfg: BinaryViTConfig) -> tf.Tensor:
    """Final BN, global average pooling over tokens, float linear classifier."""
    x = L.batch_norm("head_bn")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="head_gap")(x)
    return tf.keras.layers.Dense(
        cfg.num_classes, kernel_initializer=L.trunc_normal(0.02), name="head"
    )(x)


def build_binaryvit(cfg: BinaryViTConfig) -> tf.keras.Model:
    """Build an isotropic BinaryViT as a functional Keras model returning logits."""
    h, w, _ = cfg.input_shape
    if h % cfg.patch_size or w % cfg.patch_size:
        raise ValueError(f"input {h}x{w} is not divisible by patch size {cfg.patch_size}")
    inputs = tf.keras.Input(shape=cfg.input_shape, name="image")
    x = patch_embed(inputs, cfg)
    for i in range(cfg.depth):
        x = encoder_block(x, cfg, name=f"block{i}")
    logits = classifier_head(x, cfg)
    return tf.keras.Model(inputs, logits)


register_model(
    "binaryvit_tiny_32",
    family="binaryvit",
    config=BinaryViTConfig(),
    build=build_binaryvit,
    description="isotropic BinaryViT, 4 blocks x 128, 8x8 tokens (32x32 input): the quickstart model",
    paper="Le & Li, CVPRW 2023",
)
register_model(
    "vit_tiny_32_fp",
    family="binaryvit",
    config=BinaryViTConfig(binary=False),
    build=build_binaryvit,
    description="full-precision twin of binaryvit_tiny_32 (teacher / reference)",
    role="teacher",
)
