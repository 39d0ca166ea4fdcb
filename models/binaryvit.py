"""BinaryViT: Le & Li, "BinaryViT: Pushing Binary Vision Transformers Towards Convolutional
Models", CVPR Workshops 2023 (arXiv 2306.16678). Official code: Phuoc-Hoan-Le/BinaryViT.

Spec: ../shared/design/papers.md sections 0 and 1 (SPT / LSA: section 3). Tokens live on an NHWC
grid (B, H, W, C), or one row (B, 1, N + 1, C) when a class token is used, so that every linear
layer is a 1x1 binary `QuantConv2D`, which LCE turns into `LceBconv2d`.

One config covers the paper's whole ablation ladder (papers.md 1.6), each row a switch:

| row | ImageNet top-1 | switch                         | registered (224 / 32x32)                      |
|-----|----------------|--------------------------------|-----------------------------------------------|
| 1   | 48.5           | head="cls", no pool, no LS     | binaryvit_deit_s_cls_224, binaryvit_{tiny,small}_32_cls |
| 2   | 56.4           | head="gap"                     | binaryvit_deit_s_gap_224, binaryvit_{tiny,small}_32_gap |
| 3   | 60.2           | pool_branches=(3, 5)           | binaryvit_deit_s_pool_224, binaryvit_{tiny,small}_32_pool |
| 4   | 61.8           | layerscale=True                | binaryvit_deit_s_224, binaryvit_{tiny,small}_32 |
| 5   | 67.7           | 4 stages (tuples per stage)    | binaryvit_pyramid_s_224, binaryvit_pyramid_{tiny,small}_32 |
| 6   | 70.6           | fp_downsample=True (BinaryViT*)| binaryvit_pyramid_s_224_fpmerge, binaryvit_pyramid_{tiny,small}_32_fpmerge |

Per-stage fields (`embed_dim`, `depth`, `num_heads`, `mlp_ratio`, `sr_ratio`) take a scalar (one
isotropic stage, or the same value for every stage) or a tuple with one value per stage; the
number of stages is the length of `depth`. `spt=True` / `lsa=True` add Shifted Patch Tokenization
and Locality Self-Attention (Lee et al. 2021) to any variant; `binary=False` builds the
full-precision twin of the same graph (a teacher).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Union

import tensorflow as tf

from edgebvit.errors import ModelError
from edgebvit.models import layers as L
from edgebvit.models.registry import register_model

PerStage = Union[int, Tuple[int, ...]]
HEADS = ("cls", "gap")


@dataclass(frozen=True)
class BinaryViTConfig:
    """Hyper-parameters of a binary ViT with BinaryViT's ablation-ladder steps as switches."""

    input_shape: Tuple[int, int, int] = (32, 32, 1)
    num_classes: int = 10
    patch_size: int = 4
    embed_dim: PerStage = 128
    depth: PerStage = 4
    num_heads: PerStage = 2
    mlp_ratio: PerStage = 4
    sr_ratio: PerStage = 1  # K/V spatial reduction per stage (PVT-style); 1 = none
    head: str = "gap"  # "cls": class token (ladder row 1); "gap": mean of the final tokens
    pool_branches: Tuple[int, ...] = (3, 5)  # 1xk and kx1 average-pool branches on the MLP input
    layerscale: bool = True  # affine (a=0.1) before each residual add
    fp_downsample: bool = False  # full-precision patch merging between stages (BinaryViT*)
    stem_bn: bool = True  # BN after the stem conv (the pyramid code has it, HF DeiT embeddings not)
    spt: bool = False  # Shifted Patch Tokenization stem (Lee et al. 2021)
    lsa: bool = False  # Locality Self-Attention: learnable temperature, diagonal masked
    attn_prob_quant: str = "binary"  # "binary": BiT {0, alpha}; "none": float softmax
    binary: bool = True  # False builds the full-precision twin (same graph, float convs)


@dataclass(frozen=True)
class StageSpec:
    dim: int
    depth: int
    heads: int
    mlp_ratio: int
    sr_ratio: int


def stages(cfg: BinaryViTConfig) -> Tuple[StageSpec, ...]:
    """Per-stage values, scalars broadcast to every stage; ModelError on inconsistent lengths."""
    depth = tuple(cfg.depth) if isinstance(cfg.depth, (tuple, list)) else (cfg.depth,)
    n = len(depth)

    def per_stage(field: str):
        value = getattr(cfg, field)
        if isinstance(value, (tuple, list)):
            if len(value) != n:
                raise ModelError(f"{field} has {len(value)} values but depth has {n} stages")
            return tuple(int(v) for v in value)
        return (int(value),) * n

    fields = [per_stage(f) for f in ("embed_dim", "depth", "num_heads", "mlp_ratio", "sr_ratio")]
    return tuple(StageSpec(*vals) for vals in zip(*fields))


def validate(cfg: BinaryViTConfig) -> Tuple[StageSpec, ...]:
    """Reject configs that cannot be built, with a one-line reason (user overrides reach here)."""
    specs = stages(cfg)
    h, w, _ = cfg.input_shape
    if cfg.head not in HEADS:
        raise ModelError(f"head must be one of {', '.join(HEADS)}, got {cfg.head!r}")
    if cfg.attn_prob_quant not in ("binary", "none"):
        raise ModelError(f"attn_prob_quant must be 'binary' or 'none', got {cfg.attn_prob_quant!r}")
    if h % cfg.patch_size or w % cfg.patch_size:
        raise ModelError(f"input {h}x{w} is not divisible by patch size {cfg.patch_size}")
    if cfg.spt and cfg.patch_size % 2:
        raise ModelError(f"spt needs an even patch size, got {cfg.patch_size}")
    gh, gw = h // cfg.patch_size, w // cfg.patch_size
    for i, s in enumerate(specs):
        if s.depth < 1 or s.dim < 1 or s.mlp_ratio < 1 or s.sr_ratio < 1 or s.heads < 1:
            raise ModelError(f"stage {i}: depth, embed_dim, num_heads, mlp_ratio, sr_ratio must be >= 1")
        if s.dim % s.heads:
            raise ModelError(f"stage {i}: embed_dim {s.dim} does not split into {s.heads} heads")
        if gh % s.sr_ratio or gw % s.sr_ratio:
            raise ModelError(f"stage {i}: a {gh}x{gw} token grid does not reduce by sr_ratio {s.sr_ratio}")
        if i + 1 < len(specs):
            if gh % 2 or gw % 2:
                raise ModelError(f"stage {i}: a {gh}x{gw} token grid cannot be merged 2x2")
            if specs[i + 1].dim != 2 * s.dim:
                raise ModelError(f"stage {i + 1}: patch merging doubles the width, so embed_dim must be {2 * s.dim}")
            gh, gw = gh // 2, gw // 2
    if cfg.head == "cls":
        if len(specs) > 1:
            raise ModelError("head='cls' is for isotropic models (one stage); pyramids use head='gap'")
        if cfg.pool_branches or specs[0].sr_ratio > 1:
            raise ModelError("head='cls' tokens form a row, not a grid: pool_branches and sr_ratio need a grid")
    return specs


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------
def stem(x: tf.Tensor, cfg: BinaryViTConfig, dim: int) -> tf.Tensor:
    """Float stem: a PxP stride-P conv (or SPT), optional BN, then class token and position embedding."""
    if cfg.spt:
        x = L.shifted_patch_tokenization(x, cfg.patch_size, dim, norm="batch", name="stem_spt")
    else:
        x = tf.keras.layers.Conv2D(
            dim, cfg.patch_size, strides=cfg.patch_size, use_bias=True,
            kernel_initializer=L.trunc_normal(0.02), name="stem_conv",
        )(x)
    if cfg.stem_bn:
        x = L.batch_norm("stem_bn")(x)
    if cfg.head == "cls":
        x = L.ClassToken(name="cls_token")(x)  # (B, 1, N + 1, C); the embedding covers the cls slot
    return L.PositionEmbedding(name="pos_embed")(x)


def quantize_activation(x: tf.Tensor, cfg: BinaryViTConfig, *, name: str) -> tf.Tensor:
    return L.BinarySign(name=name)(x) if cfg.binary else x


def attention(xn: tf.Tensor, cfg: BinaryViTConfig, spec: StageSpec, *, name: str) -> tf.Tensor:
    """BinaryViT self-attention (papers.md 1.3), with K/V spatial reduction when sr_ratio > 1.

    q/k/v are binary linears with residuals; Q, K, V are signs of them; the context gets the
    q/k/v pre-activations added back (k/v upsampled to the query grid), the paper's gradient path
    around the binarized softmax.
    """
    c, r = spec.dim, spec.sr_ratio
    q_pre = L.token_linear(xn, c, binary=cfg.binary, name=f"{name}_q")
    src = L.spatial_reduction(xn, r, binary=cfg.binary, name=f"{name}_sr")
    k_pre = L.token_linear(src, c, binary=cfg.binary, name=f"{name}_k")
    v_pre = L.token_linear(src, c, binary=cfg.binary, name=f"{name}_v")
    q = quantize_activation(q_pre, cfg, name=f"{name}_q_sign")
    k = quantize_activation(k_pre, cfg, name=f"{name}_k_sign")
    v = quantize_activation(v_pre, cfg, name=f"{name}_v_sign")
    prob_quant = cfg.attn_prob_quant if cfg.binary else "none"
    ctx = L.MultiHeadAttentionCore(
        num_heads=spec.heads, prob_quant=prob_quant, lsa=cfg.lsa, name=f"{name}_core"
    )([q, k, v])
    ctx = L.batch_norm(f"{name}_ctx_bn")(ctx)
    k_up = L.upsample_nearest(k_pre, r, name=f"{name}_k_up")
    v_up = L.upsample_nearest(v_pre, r, name=f"{name}_v_up")
    ctx = tf.keras.layers.Add(name=f"{name}_ctx_res")([ctx, q_pre, k_up, v_up])
    ctx = L.RPReLU(name=f"{name}_ctx_rprelu")(ctx)
    out = L.token_linear(ctx, c, binary=cfg.binary, name=f"{name}_proj")
    if cfg.layerscale:
        out = L.LayerScale(init_scale=0.1, name=f"{name}_ls")(out)
    return out


def mlp(xn: tf.Tensor, cfg: BinaryViTConfig, spec: StageSpec, *, name: str) -> tf.Tensor:
    """fc1 (C -> rC, tile shortcut) then fc2 (rC -> C, channel-average shortcut); no GELU."""
    h = L.token_linear(xn, spec.dim * spec.mlp_ratio, binary=cfg.binary, name=f"{name}_fc1")
    out = L.token_linear(h, spec.dim, binary=cfg.binary, name=f"{name}_fc2")
    if cfg.layerscale:
        out = L.LayerScale(init_scale=0.1, name=f"{name}_ls")(out)
    return out


def encoder_block(x: tf.Tensor, cfg: BinaryViTConfig, spec: StageSpec, *, name: str) -> tf.Tensor:
    """Pre-norm block: x + Attn(BN(x)), then + MLP(BN(x)) + pooling branches (papers.md 1.2)."""
    xn = L.batch_norm(f"{name}_bn1")(x)
    x = tf.keras.layers.Add(name=f"{name}_attn_res")([x, attention(xn, cfg, spec, name=f"{name}_attn")])
    xn2 = L.batch_norm(f"{name}_bn2")(x)
    branches = L.multi_pool_branches(xn2, cfg.pool_branches, name=f"{name}_pool")
    terms = [x, mlp(xn2, cfg, spec, name=f"{name}_mlp"), *branches]
    return tf.keras.layers.Add(name=f"{name}_out")(terms)


def downsample(x: tf.Tensor, cfg: BinaryViTConfig, *, name: str) -> tf.Tensor:
    """Patch merging 2x2 (C -> 2C) between stages, then a new position embedding (papers.md 1.4)."""
    if cfg.fp_downsample:
        x = L.float_patch_merging(x, name=name)
    else:
        x = L.binary_patch_merging(x, binary=cfg.binary, name=name)
    return L.PositionEmbedding(name=f"{name}_pos_embed")(x)


def classifier_head(x: tf.Tensor, cfg: BinaryViTConfig) -> tf.Tensor:
    """Final BN, class token or global average pooling over tokens, float linear classifier."""
    x = L.batch_norm("head_bn")(x)
    if cfg.head == "cls":
        x = L.TakeToken(index=0, name="head_cls")(x)
    else:
        x = tf.keras.layers.GlobalAveragePooling2D(name="head_gap")(x)
    return tf.keras.layers.Dense(
        cfg.num_classes, kernel_initializer=L.trunc_normal(0.02), name="head"
    )(x)


def build_binaryvit(cfg: BinaryViTConfig) -> tf.keras.Model:
    """Build a BinaryViT (isotropic or pyramid) as a functional Keras model returning logits."""
    specs = validate(cfg)
    inputs = tf.keras.Input(shape=tuple(cfg.input_shape), name="image")
    x = stem(inputs, cfg, specs[0].dim)
    for s, spec in enumerate(specs):
        prefix = "block" if len(specs) == 1 else f"stage{s}_block"  # isotropic names stay short
        for i in range(spec.depth):
            x = encoder_block(x, cfg, spec, name=f"{prefix}{i}")
        if s + 1 < len(specs):
            x = downsample(x, cfg, name=f"merge{s}")
    logits = classifier_head(x, cfg)
    return tf.keras.Model(inputs, logits)


# --------------------------------------------------------------------------------------------
# Registered variants
# --------------------------------------------------------------------------------------------
_PAPER = "Le & Li, CVPRW 2023"
_IMAGENET = dict(input_shape=(224, 224, 3), num_classes=1000)
# Ladder rows 1-4 as switch sets on the isotropic model (papers.md 1.6).
_ROWS = {
    "cls": dict(head="cls", pool_branches=(), layerscale=False),
    "gap": dict(head="gap", pool_branches=(), layerscale=False),
    "pool": dict(head="gap", pool_branches=(3, 5), layerscale=False),
    "": dict(head="gap", pool_branches=(3, 5), layerscale=True),
}
_ROW_TEXT = {
    "cls": "ladder row 1: ReActNet-style binary DeiT, class-token head",
    "gap": "ladder row 2: + global average pooling head",
    "pool": "ladder row 3: + multi-branch average pooling",
    "": "ladder row 4: + LayerScale affine before residual adds",
}
_ROW_TOP1 = {"cls": 48.5, "gap": 56.4, "pool": 60.2, "": 61.8}

# binary DeiT-S (papers.md 1.1); the HF DeiT embeddings have no BN after the stem.
_DEIT_S = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4, stem_bn=False, **_IMAGENET)
# BinaryViT pyramid (configs/binaryvit-small-patch4-224).
_PYRAMID_S = dict(
    patch_size=4, embed_dim=(64, 128, 256, 512), depth=(3, 4, 8, 4), num_heads=(1, 2, 4, 8),
    mlp_ratio=(8, 8, 4, 4), sr_ratio=(8, 4, 1, 1), **_IMAGENET,
)
# 32x32 inputs (Fashion-MNIST padded, CIFAR): 8x8 tokens for the isotropic models, a patch-2 stem
# giving 16/8/4/2 grids for the pyramids (K/V reduced to 4x4 in stages 1-2, as 7x7 at 224).
_SMALL_IMAGE = {
    "tiny": (
        dict(patch_size=4, embed_dim=128, depth=4, num_heads=2, mlp_ratio=4),
        dict(patch_size=2, embed_dim=(32, 64, 128, 256), depth=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
             mlp_ratio=(8, 8, 4, 4), sr_ratio=(4, 2, 1, 1)),
    ),
    "small": (
        dict(patch_size=4, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4),
        dict(patch_size=2, embed_dim=(32, 64, 128, 256), depth=(2, 2, 6, 2), num_heads=(1, 2, 4, 8),
             mlp_ratio=(8, 8, 4, 4), sr_ratio=(4, 2, 1, 1)),
    ),
}


def _register(name: str, *, description: str, paper_top1=None, role="student", tags=(), **fields) -> None:
    register_model(
        name, family="binaryvit", config=BinaryViTConfig(**fields), build=build_binaryvit,
        description=description, paper=_PAPER, paper_top1=paper_top1, role=role, tags=tags,
    )


# ImageNet-1k ladder (224x224, 1000 classes), with the paper's top-1.
for _row, _switches in _ROWS.items():
    _register(
        "binaryvit_deit_s" + (f"_{_row}" if _row else "") + "_224",
        description=f"binary DeiT-S, {_ROW_TEXT[_row]}",
        paper_top1=_ROW_TOP1[_row], tags=("imagenet", "ladder"), **_DEIT_S, **_switches,
    )
_register("binaryvit_pyramid_s_224", description="BinaryViT (ladder row 5): 4-stage pyramid, binary patch merging",
          paper_top1=67.7, tags=("imagenet", "ladder"), **_PYRAMID_S)
_register("binaryvit_pyramid_s_224_fpmerge", description="BinaryViT* (ladder row 6): full-precision patch merging",
          paper_top1=70.6, tags=("imagenet", "ladder"), fp_downsample=True, **_PYRAMID_S)

# Small-image ladders (32x32). binaryvit_tiny_32 (row 4, tiny) is the quickstart model.
for _size, (_iso, _pyr) in _SMALL_IMAGE.items():
    for _row, _switches in _ROWS.items():
        extra = ", the quickstart model" if (_size, _row) == ("tiny", "") else ""
        _register(
            f"binaryvit_{_size}_32" + (f"_{_row}" if _row else ""),
            description=f"isotropic {_size} (32x32 input), {_ROW_TEXT[_row]}{extra}",
            tags=("32x32", "ladder"), **_iso, **_switches,
        )
    _register(f"binaryvit_pyramid_{_size}_32", description=f"BinaryViT pyramid {_size} (32x32 input), ladder row 5",
              tags=("32x32", "ladder"), **_pyr)
    _register(f"binaryvit_pyramid_{_size}_32_fpmerge",
              description=f"BinaryViT* pyramid {_size} (32x32 input), ladder row 6: FP patch merging",
              tags=("32x32", "ladder"), fp_downsample=True, **_pyr)

# The SPT + LSA variant of the quickstart model (Lee et al. 2021, papers.md section 3).
_register("binaryvit_tiny_32_spt_lsa", description="binaryvit_tiny_32 + Shifted Patch Tokenization + Locality Self-Attention",
          tags=("32x32",), spt=True, lsa=True, **_SMALL_IMAGE["tiny"][0])

# Full-precision twins (same graph, float convs, float softmax): distillation teachers.
_register("vit_tiny_32_fp", description="full-precision twin of binaryvit_tiny_32 (teacher / reference)",
          role="teacher", tags=("32x32",), binary=False, **_SMALL_IMAGE["tiny"][0])
_register("vit_small_32_fp", description="full-precision twin of binaryvit_small_32 (teacher / reference)",
          role="teacher", tags=("32x32",), binary=False, **_SMALL_IMAGE["small"][0])
_register("vit_pyramid_tiny_32_fp", description="full-precision twin of binaryvit_pyramid_tiny_32 (teacher)",
          role="teacher", tags=("32x32",), binary=False, **_SMALL_IMAGE["tiny"][1])
_register("vit_deit_s_224_fp", description="full-precision twin of binaryvit_deit_s_224 (the FP teacher's shape)",
          role="teacher", tags=("imagenet",), binary=False, **_DEIT_S)
