"""Blocks both families compose from the layers: the binary MLP, patch merging between pyramid
stages, BinaryViT's pooling branches and the classifier head (docs/papers.md 1.2, 1.4, 2.2)."""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from edgebvit.models.layers.base import batch_norm, bias_init, kernel_init
from edgebvit.models.layers.elementwise import LayerScale, LearnableBias, RPReLU, channel_shortcut
from edgebvit.models.layers.linear import binary_conv, token_linear
from edgebvit.models.layers.tokens import PatchGrid, TakeToken

HEAD_POOLINGS = ("gap", "cls")


def zero_padded_avg_pool(x: tf.Tensor, pool: Sequence[int], *, name: str) -> tf.Tensor:
    """Stride-1 average pool whose borders average in the zero padding (PyTorch count_include_pad).

    Keras ``AveragePooling2D(padding='same')`` leaves padding out of the average, which does not
    match the official multi-branch pooling; pad explicitly, then pool 'valid'.
    """
    ph, pw = pool
    x = tf.keras.layers.ZeroPadding2D(((ph // 2, ph // 2), (pw // 2, pw // 2)), name=f"{name}_pad")(x)
    return tf.keras.layers.AveragePooling2D((ph, pw), strides=1, padding="valid", name=name)(x)


def multi_pool_branches(x: tf.Tensor, sizes: Sequence[int], *, name: str) -> list:
    """BinaryViT's multi-branch average pooling (docs/papers.md 1.2): for each k, a 1xk and a kx1
    stride-1 average pool of `x` with PyTorch's zero-padded (count_include_pad) borders, each
    behind its own LayerScale starting at a=0, so the branches start switched off."""
    out = []
    for k in sizes:
        for shape, tag in (((1, k), f"1x{k}"), ((k, 1), f"{k}x1")):
            p = zero_padded_avg_pool(x, shape, name=f"{name}_avg{tag}")
            out.append(LayerScale(init_scale=0.0, name=f"{name}_avg{tag}_ls")(p))
    return out


def mlp(xn: tf.Tensor, ratio: int, *, name: str, binary: bool = True, layerscale: bool = True,
        recu: bool = False) -> tf.Tensor:
    """The binary MLP of both papers (docs/papers.md 1.2, 2.5): fc1 C -> rC (tiled shortcut), fc2
    rC -> C (channel-average shortcut), each a binary linear with BN and RPReLU, no GELU; then
    LayerScale (a = 0.1) before the residual add. `binary=False` gives the float twin; `recu`
    trains the binary weights with ReCU's gradient (BHViT's `--recu`)."""
    c = xn.shape[-1]
    h = token_linear(xn, c * ratio, binary=binary, recu=recu, name=f"{name}_fc1")
    out = token_linear(h, c, binary=binary, recu=recu, name=f"{name}_fc2")
    if layerscale:
        out = LayerScale(init_scale=0.1, name=f"{name}_ls")(out)
    return out


def patch_merging(x: tf.Tensor, out_channels: int, *, name: str, binary: bool = True, residual: bool = True,
                  centre: bool = False,
                  kernel_initializer: Optional[tf.keras.initializers.Initializer] = None) -> tf.Tensor:
    """2x2 stride-2 patch merging between pyramid stages, (H, W, C) -> (H/2, W/2, out_channels).

    ``residual=True`` is the official `BinaryPatchEmbed` (docs/papers.md 1.4, 2.2):
    ``x0 = BN0(x); RPReLU(BN(Conv2x2s2(x0 + b)) + tile(AvgPool2x2(x0)))`` with a binary conv
    (`binary=False`: the same graph with a float conv and no learnable shift, a teacher's).
    ``residual=False`` is the full-precision `PatchEmbed` of BinaryViT* and BHViT's dagger
    variants: ``BN(Conv2x2s2(BN0(x)))``, float, no residual, no RPReLU.
    `centre` is the binary weights' centring (BinaryViT's convs do not centre, BHViT's do);
    `kernel_initializer` is the float conv's (default: the build's scheme, base.kernel_init).
    """
    init = kernel_initializer or kernel_init()
    x0 = batch_norm(f"{name}_bn0")(x)
    if not residual:
        h = tf.keras.layers.Conv2D(out_channels, 2, strides=2, use_bias=False, kernel_initializer=init,
                                   name=f"{name}_conv")(x0)
        return batch_norm(f"{name}_bn")(h)
    res = tf.keras.layers.AveragePooling2D(2, strides=2, padding="valid", name=f"{name}_respool")(x0)
    res = channel_shortcut(res, out_channels, name=name)
    if binary:
        h = LearnableBias(name=f"{name}_move")(x0)
        h = binary_conv(out_channels, 2, strides=2, centre=centre, name=f"{name}_conv")(h)
    else:
        h = tf.keras.layers.Conv2D(out_channels, 2, strides=2, use_bias=False, kernel_initializer=init,
                                   name=f"{name}_conv")(x0)
    h = batch_norm(f"{name}_bn")(h)
    h = tf.keras.layers.Add(name=f"{name}_res")([h, res])
    return RPReLU(name=f"{name}_rprelu")(h)


def classifier_head(x: tf.Tensor, num_classes: int, *, pooling: str = "gap", distill: bool = False,
                    extra_tokens: int = 0, grid: Optional[Sequence[int]] = None) -> tf.Tensor:
    """Final BN, then the class token (``pooling="cls"``) or the mean of the final tokens
    (``"gap"``), then a float linear classifier (the build's initialisation scheme): the head of both families.

    `distill` adds DeiT's distillation head (Touvron et al. 2021, "Training data-efficient image
    transformers", 4): a second float linear `head_dist` on the distillation token (the row's
    token 1 after a class token, token 0 in an average-pooled row), and the output is the mean of
    the two heads' logits, as DeiT infers. The trainer reads both heads by name to train the
    distillation head on the teacher and the class head on the labels. `extra_tokens` / `grid`:
    a "gap" row that starts with that many non-patch tokens averages only its (height, width)
    patch grid.
    """
    if pooling not in HEAD_POOLINGS:
        raise ValueError(f"pooling must be one of {HEAD_POOLINGS}, got {pooling!r}")
    x = batch_norm("head_bn")(x)
    if pooling == "cls":
        feature = TakeToken(index=0, name="head_cls")(x)
        dist_index = 1
    elif extra_tokens:
        patches = PatchGrid(extra=extra_tokens, height=grid[0], width=grid[1], name="head_patches")(x)
        feature = tf.keras.layers.GlobalAveragePooling2D(name="head_gap")(patches)
        dist_index = 0
    else:
        feature = tf.keras.layers.GlobalAveragePooling2D(name="head_gap")(x)
    fan_in = int(x.shape[-1])
    logits = tf.keras.layers.Dense(num_classes, kernel_initializer=kernel_init(), bias_initializer=bias_init(fan_in),
                                   name="head")(feature)
    if not distill:
        return logits
    dist = TakeToken(index=dist_index, name="head_dist_token")(x)
    dist_logits = tf.keras.layers.Dense(num_classes, kernel_initializer=kernel_init(),
                                        bias_initializer=bias_init(fan_in), name="head_dist")(dist)
    return tf.keras.layers.Average(name="head_average")([logits, dist_logits])
