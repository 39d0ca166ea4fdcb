"""BinaryViT: Le & Li, "BinaryViT: Pushing Binary Vision Transformers Towards Convolutional
Models", CVPR Workshops 2023 (arXiv 2306.16678). Official code: Phuoc-Hoan-Le/BinaryViT.

Spec: docs/papers.md sections 0 and 1 (SPT / LSA: section 3). Tokens live on an NHWC grid
(B, H, W, C), or one row (B, 1, N + 1, C) when a class token is used, so that every linear
layer is a 1x1 binary `QuantConv2D`, which LCE turns into `LceBconv2d`.

One config covers the paper's whole ablation ladder (docs/papers.md 1.6), each row a switch:

| row | ImageNet top-1 | switch                         | registered (224 / 32x32)                      |
|-----|----------------|--------------------------------|-----------------------------------------------|
| 1   | 48.5           | head="cls", no pool, no LS     | binaryvit_deit_s_cls_224, binaryvit_{tiny,small}_32_cls |
| 2   | 56.4           | head="gap"                     | binaryvit_deit_s_gap_224, binaryvit_{tiny,small}_32_gap |
| 3   | 60.2           | pool_branches=(3, 5)           | binaryvit_deit_s_pool_224, binaryvit_{tiny,small}_32_pool |
| 4   | 61.8           | layerscale=True                | binaryvit_deit_s_224, binaryvit_{tiny,small}_32 |
| 5   | 67.7           | 4 stages (tuples per stage)    | binaryvit_pyramid_s_224, binaryvit_pyramid_{tiny,small}_32 |
| 6   | 70.6           | fp_downsample=True (BinaryViT*)| binaryvit_pyramid_s_224_fpmerge, binaryvit_pyramid_{tiny,small}_32_fpmerge |

The per-stage fields (`embed_dims`, `depths`, `num_heads`, `mlp_ratios`, `sr_ratios`) take a
scalar (one isotropic stage, or the same value for every stage) or a tuple with one value per
stage; the number of stages is the length of `depths`. `spt=True` / `lsa=True` add Shifted Patch
Tokenization and Locality Self-Attention (Lee et al. 2021) to any variant; `binary=False` builds
the full-precision twin of the same graph (a teacher). Field names are those of BHViTConfig
wherever the two families mean the same thing.

Two heads from the literature the papers build on (docs/papers.md 3.1):

* `distill_token=True`: DeiT's distillation token (Touvron et al. 2021a, section 4): a second
  learned token with its own head, trained on the teacher (its hard labels with DeiT's
  `distill.mode=hard`, its softmax with `soft`); at inference the two heads' logits are averaged. On an isotropic model it enters at the stem, beside the class
  token (head="cls") or beside the patch tokens of an average-pooled model (head="gap"), and goes
  through every block; in a model with class attention it enters with the class token there.
* `head="class_attention"`: CaiT's class attention (Touvron et al. 2021b, section 3.2): the trunk
  runs on patch tokens only, then `class_attention_depth` blocks in which the class token (and
  the distillation token) attend to the frozen patch tokens, binary linears as everywhere else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Union

import tensorflow as tf

from edgebvit.errors import ModelError
from edgebvit.models import layers as L
from edgebvit.models.registry import register_model

PerStage = Union[int, Tuple[int, ...]]
HEADS = (*L.HEAD_POOLINGS, "class_attention")


@dataclass(frozen=True, kw_only=True)
class BinaryViTConfig:
    """Hyper-parameters of a binary ViT with BinaryViT's ablation-ladder steps as switches."""

    input_shape: Tuple[int, int, int] = (32, 32, 1)
    num_classes: int = 10
    patch_size: int = 4
    embed_dims: PerStage = 128
    depths: PerStage = 4
    num_heads: PerStage = 2
    mlp_ratios: PerStage = 4
    sr_ratios: PerStage = 1  # K/V spatial reduction per stage (PVT-style); 1 = none
    head: str = "gap"  # "cls": class token (ladder row 1); "gap": mean of the final tokens;
    # "class_attention": CaiT's class-attention blocks at the end read the class token
    class_attention_depth: int = 2  # class-attention blocks (CaiT uses 2) when head="class_attention"
    distill_token: bool = False  # DeiT's distillation token and head (trained on the teacher)
    pool_branches: Tuple[int, ...] = (3, 5)  # 1xk and kx1 average-pool branches on the MLP input
    layerscale: bool = True  # affine (a=0.1) before each residual add
    fp_downsample: bool = False  # full-precision patch merging between stages (BinaryViT*)
    stem_bn: bool = True  # BN after the stem conv (the pyramid code has it, HF DeiT embeddings not)
    spt: bool = False  # Shifted Patch Tokenization stem (Lee et al. 2021)
    lsa: bool = False  # Locality Self-Attention: learnable temperature, diagonal masked
    attn_prob_quant: str = "binary"  # "binary": BiT {0, alpha}; "none": float softmax
    binary: bool = True  # False builds the full-precision twin (same graph, float convs)
    # Linear/conv initialisation (layers.WEIGHT_INITS): "trunc_normal" 0.02 (timm/DeiT); "torch":
    # PyTorch's defaults, U(+-1/sqrt(fan_in)), what the official code effectively trains from.
    init: str = "trunc_normal"

    def stages(self) -> Tuple["StageSpec", ...]:
        """Per-stage values, scalars broadcast to every stage; ModelError on inconsistent lengths."""
        depths = tuple(self.depths) if isinstance(self.depths, (tuple, list)) else (self.depths,)
        n = len(depths)

        def per_stage(field: str):
            value = getattr(self, field)
            if isinstance(value, (tuple, list)):
                if len(value) != n:
                    raise ModelError(f"{field} has {len(value)} values but depths has {n} stages")
                return tuple(int(v) for v in value)
            return (int(value),) * n

        fields = [per_stage(f) for f in ("embed_dims", "depths", "num_heads", "mlp_ratios", "sr_ratios")]
        return tuple(StageSpec(*vals) for vals in zip(*fields))

    def trunk_tokens(self) -> int:
        """Tokens that are not image patches in the trunk's row (0: the trunk is a patch grid)."""
        n = 1 if self.head == "cls" else 0
        if self.distill_token and self.head != "class_attention":
            n += 1
        return n

    def validate(self) -> None:
        """Reject configs that cannot be built, with a one-line reason (user overrides reach here)."""
        specs = self.stages()
        h, w, _ = self.input_shape
        if self.head not in HEADS:
            raise ModelError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.init not in L.WEIGHT_INITS:
            raise ModelError(f"init must be one of {', '.join(L.WEIGHT_INITS)}, got {self.init!r}")
        if self.attn_prob_quant not in ("binary", "none"):
            raise ModelError(f"attn_prob_quant must be 'binary' or 'none', got {self.attn_prob_quant!r}")
        if h % self.patch_size or w % self.patch_size:
            raise ModelError(f"input {h}x{w} is not divisible by patch size {self.patch_size}")
        if self.spt and self.patch_size % 2:
            raise ModelError(f"spt needs an even patch size, got {self.patch_size}")
        gh, gw = h // self.patch_size, w // self.patch_size
        for i, s in enumerate(specs):
            if s.depth < 1 or s.dim < 1 or s.mlp_ratio < 1 or s.sr_ratio < 1 or s.heads < 1:
                raise ModelError(f"stage {i}: depths, embed_dims, num_heads, mlp_ratios, sr_ratios must be >= 1")
            if s.dim % s.heads:
                raise ModelError(f"stage {i}: embed_dims {s.dim} does not split into {s.heads} heads")
            if gh % s.sr_ratio or gw % s.sr_ratio:
                raise ModelError(f"stage {i}: a {gh}x{gw} token grid does not reduce by sr_ratios {s.sr_ratio}")
            if i + 1 < len(specs):
                if gh % 2 or gw % 2:
                    raise ModelError(f"stage {i}: a {gh}x{gw} token grid cannot be merged 2x2")
                if specs[i + 1].dim != 2 * s.dim:
                    raise ModelError(f"stage {i + 1}: patch merging doubles the width, so embed_dims must be {2 * s.dim}")
                gh, gw = gh // 2, gw // 2
        if self.head == "cls":
            if len(specs) > 1:
                raise ModelError("head='cls' is for isotropic models (one stage); pyramids use head='gap'")
            if self.pool_branches or specs[0].sr_ratio > 1:
                raise ModelError("head='cls' tokens form a row, not a grid: pool_branches and sr_ratios need a grid")
        if self.head == "class_attention" and self.class_attention_depth < 1:
            raise ModelError("head='class_attention' needs class_attention_depth >= 1 (CaiT uses 2)")
        if self.distill_token and self.head == "gap" and (len(specs) > 1 or specs[0].sr_ratio > 1):
            raise ModelError("a distillation token in the trunk needs an isotropic model without K/V "
                             "reduction; here use head='class_attention', where it joins in the last "
                             "blocks (CaiT)")


@dataclass(frozen=True)
class StageSpec:
    """One stage's resolved values (BinaryViTConfig.stages())."""

    dim: int
    depth: int
    heads: int
    mlp_ratio: int
    sr_ratio: int


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------
def stem(x: tf.Tensor, cfg: BinaryViTConfig, dim: int) -> tf.Tensor:
    """Float stem: a PxP stride-P conv (or SPT), optional BN, then class token and position embedding."""
    if cfg.spt:
        x = L.shifted_patch_tokenization(x, cfg.patch_size, dim, norm="batch", name="stem_spt")
    else:
        x = tf.keras.layers.Conv2D(
            dim, cfg.patch_size, strides=cfg.patch_size, use_bias=True, kernel_initializer=L.kernel_init(),
            bias_initializer=L.bias_init(cfg.patch_size ** 2 * int(x.shape[-1])), name="stem_conv",
        )(x)
    if cfg.stem_bn:
        x = L.batch_norm("stem_bn")(x)
    if cfg.distill_token and cfg.head != "class_attention":
        x = L.ClassToken(name="dist_token")(x)  # (B, 1, N + 1, C): DeiT's distillation token
    if cfg.head == "cls":
        x = L.ClassToken(name="cls_token")(x)  # (B, 1, N + 1, C); the embedding covers the cls slot
    return L.PositionEmbedding(name="pos_embed")(x)


def quantize_activation(x: tf.Tensor, cfg: BinaryViTConfig, *, name: str) -> tf.Tensor:
    return L.BinarySign(name=name)(x) if cfg.binary else x


def attend(q_pre: tf.Tensor, k_pre: tf.Tensor, v_pre: tf.Tensor, residuals, cfg: BinaryViTConfig, spec: StageSpec,
           *, lsa: bool, name: str) -> tf.Tensor:
    """What both attention forms share after their q/k/v linears (docs/papers.md 1.3): signs,
    the attention core, BN, the pre-activation residuals (`residuals`: q/k/v pre-activations
    on the query tokens), RPReLU, the binary output projection and LayerScale."""
    q = quantize_activation(q_pre, cfg, name=f"{name}_q_sign")
    k = quantize_activation(k_pre, cfg, name=f"{name}_k_sign")
    v = quantize_activation(v_pre, cfg, name=f"{name}_v_sign")
    prob_quant = cfg.attn_prob_quant if cfg.binary else "none"
    ctx = L.MultiHeadAttentionCore(
        num_heads=spec.heads, prob_quant=prob_quant, lsa=lsa, name=f"{name}_core"
    )([q, k, v])
    ctx = L.batch_norm(f"{name}_ctx_bn")(ctx)
    ctx = tf.keras.layers.Add(name=f"{name}_ctx_res")([ctx, *residuals])
    ctx = L.RPReLU(name=f"{name}_ctx_rprelu")(ctx)
    out = L.token_linear(ctx, spec.dim, binary=cfg.binary, name=f"{name}_proj")
    if cfg.layerscale:
        out = L.LayerScale(init_scale=0.1, name=f"{name}_ls")(out)
    return out


def attention(xn: tf.Tensor, cfg: BinaryViTConfig, spec: StageSpec, *, name: str) -> tf.Tensor:
    """BinaryViT self-attention (docs/papers.md 1.3), with K/V spatial reduction when sr_ratio > 1.

    q/k/v are binary linears with residuals; Q, K, V are signs of them; the context gets the
    q/k/v pre-activations added back (k/v upsampled to the query grid), the paper's gradient path
    around the binarized softmax.
    """
    c, r = spec.dim, spec.sr_ratio
    q_pre = L.token_linear(xn, c, binary=cfg.binary, name=f"{name}_q")
    src = L.spatial_reduction(xn, r, binary=cfg.binary, name=f"{name}_sr")
    k_pre = L.token_linear(src, c, binary=cfg.binary, name=f"{name}_k")
    v_pre = L.token_linear(src, c, binary=cfg.binary, name=f"{name}_v")
    k_up = L.upsample_nearest(k_pre, r, name=f"{name}_k_up")
    v_up = L.upsample_nearest(v_pre, r, name=f"{name}_v_up")
    return attend(q_pre, k_pre, v_pre, (q_pre, k_up, v_up), cfg, spec, lsa=cfg.lsa, name=name)


def pool_branches(xn2: tf.Tensor, cfg: BinaryViTConfig, *, extra: int, grid: Tuple[int, int],
                  name: str) -> list:
    """The multi-branch pooling on the patch grid; on a row that also carries `extra` tokens the
    patches are pooled as a grid and the extra tokens get nothing from the branches."""
    if not extra or not cfg.pool_branches:
        return L.multi_pool_branches(xn2, cfg.pool_branches, name=name)
    patches = L.PatchGrid(extra=extra, height=grid[0], width=grid[1], name=f"{name}_grid")(xn2)
    return [L.PadTokens(extra=extra, name=f"{name}_row{i}")(b)
            for i, b in enumerate(L.multi_pool_branches(patches, cfg.pool_branches, name=name))]


def encoder_block(x: tf.Tensor, cfg: BinaryViTConfig, spec: StageSpec, *, name: str, extra: int = 0,
                  grid: Tuple[int, int] = (0, 0)) -> tf.Tensor:
    """Pre-norm block: x + Attn(BN(x)), then + MLP(BN(x)) + pooling branches (docs/papers.md 1.2)."""
    xn = L.batch_norm(f"{name}_bn1")(x)
    x = tf.keras.layers.Add(name=f"{name}_attn_res")([x, attention(xn, cfg, spec, name=f"{name}_attn")])
    xn2 = L.batch_norm(f"{name}_bn2")(x)
    branches = pool_branches(xn2, cfg, extra=extra, grid=grid, name=f"{name}_pool")
    terms = [x, L.mlp(xn2, spec.mlp_ratio, binary=cfg.binary, layerscale=cfg.layerscale, name=f"{name}_mlp"), *branches]
    return tf.keras.layers.Add(name=f"{name}_out")(terms)


def class_attention_block(tokens: tf.Tensor, patches: tf.Tensor, cfg: BinaryViTConfig, spec: StageSpec, *,
                          name: str) -> tf.Tensor:
    """CaiT's class-attention block (Touvron et al. 2021b, section 3.2), in BinaryViT's binary form.

    `tokens` (B, 1, T, C) are the class token (and the distillation token), `patches` (B, 1, N, C)
    the trunk's output, frozen: only the tokens are updated. With z = [tokens, patches]:
    ``tokens += LS(CA(BN(z)))``, then ``tokens += LS(MLP(BN(tokens)))``. Only the tokens query:
    keys and values are binary linears of all of z (softmax binarized as in the trunk), and the
    context gets each token's own q/k/v pre-activations added back, the trunk's gradient path
    around the binarized softmax (docs/papers.md 1.3). The query linear also runs over z and is
    then cut to the tokens, so that its BatchNorm normalises with the patches' statistics: over
    the first block's class token alone (one value for the whole batch) it would output a
    constant and its weights would get no gradient (LayerNorm, CaiT's norm, has no such issue).
    """
    t, c = tokens.shape[2], spec.dim
    z = tf.keras.layers.Concatenate(axis=2, name=f"{name}_concat")([tokens, patches])
    zn = L.batch_norm(f"{name}_bn1")(z)
    q_all = L.token_linear(zn, c, binary=cfg.binary, name=f"{name}_attn_q")
    q_pre = L.TokenRange(start=0, stop=t, name=f"{name}_attn_q_tokens")(q_all)
    k_pre = L.token_linear(zn, c, binary=cfg.binary, name=f"{name}_attn_k")
    v_pre = L.token_linear(zn, c, binary=cfg.binary, name=f"{name}_attn_v")
    k_own = L.TokenRange(start=0, stop=t, name=f"{name}_attn_k_own")(k_pre)
    v_own = L.TokenRange(start=0, stop=t, name=f"{name}_attn_v_own")(v_pre)
    out = attend(q_pre, k_pre, v_pre, (q_pre, k_own, v_own), cfg, spec, lsa=False, name=f"{name}_attn")
    tokens = tf.keras.layers.Add(name=f"{name}_attn_res")([tokens, out])
    tn2 = L.batch_norm(f"{name}_bn2")(tokens)
    out = L.mlp(tn2, spec.mlp_ratio, binary=cfg.binary, layerscale=cfg.layerscale, name=f"{name}_mlp")
    return tf.keras.layers.Add(name=f"{name}_out")([tokens, out])


def head(x: tf.Tensor, cfg: BinaryViTConfig, grid: Tuple[int, int]) -> tf.Tensor:
    """The classifier: class token, average pool or class attention (with the distillation head)."""
    if cfg.head == "class_attention":
        spec = cfg.stages()[-1]
        patches = L.token_row(x, name="ca_patches")
        tokens = L.LearnedTokens(count=2 if cfg.distill_token else 1, name="ca_tokens")(patches)
        for i in range(cfg.class_attention_depth):
            tokens = class_attention_block(tokens, patches, cfg, spec, name=f"ca{i}")
        return L.classifier_head(tokens, cfg.num_classes, pooling="cls", distill=cfg.distill_token)
    extra = cfg.trunk_tokens() if cfg.head == "gap" else 0
    return L.classifier_head(x, cfg.num_classes, pooling=cfg.head, distill=cfg.distill_token,
                             extra_tokens=extra, grid=grid)


def downsample(x: tf.Tensor, cfg: BinaryViTConfig, *, name: str) -> tf.Tensor:
    """Patch merging 2x2 (C -> 2C) between stages, then a new position embedding (docs/papers.md 1.4).

    Binary merging (BinaryViT's convs do not centre their weights) or, with `fp_downsample`,
    BinaryViT*'s full-precision `PatchEmbed`.
    """
    if cfg.fp_downsample:
        x = L.patch_merging(x, 2 * x.shape[-1], residual=False, binary=False, name=name)
    else:
        x = L.patch_merging(x, 2 * x.shape[-1], binary=cfg.binary, centre=False, name=name)
    return L.PositionEmbedding(name=f"{name}_pos_embed")(x)


def build_binaryvit(cfg: BinaryViTConfig) -> tf.keras.Model:
    """Build a BinaryViT (isotropic or pyramid) as a functional Keras model returning logits."""
    cfg.validate()
    with L.weight_init(cfg.init):
        return _build(cfg)


def _build(cfg: BinaryViTConfig) -> tf.keras.Model:
    specs = cfg.stages()
    inputs = tf.keras.Input(shape=tuple(cfg.input_shape), name="image")
    x = stem(inputs, cfg, specs[0].dim)
    extra = cfg.trunk_tokens()
    grid = (cfg.input_shape[0] // cfg.patch_size, cfg.input_shape[1] // cfg.patch_size)
    for s, spec in enumerate(specs):
        prefix = "block" if len(specs) == 1 else f"stage{s}_block"  # isotropic names stay short
        for i in range(spec.depth):
            x = encoder_block(x, cfg, spec, name=f"{prefix}{i}", extra=extra, grid=grid)
        if s + 1 < len(specs):
            x = downsample(x, cfg, name=f"merge{s}")
            grid = (grid[0] // 2, grid[1] // 2)
    return tf.keras.Model(inputs, head(x, cfg, grid))


# --------------------------------------------------------------------------------------------
# Registered variants: every name spelled out, so `grep binaryvit_tiny_32_pool` finds it
# --------------------------------------------------------------------------------------------
_PAPER = "Le & Li, CVPRW 2023"
_IMAGENET = dict(input_shape=(224, 224, 3), num_classes=1000)
# Ladder rows 1-4 as switch sets on the isotropic model (docs/papers.md 1.6).
ROW1_CLS = dict(head="cls", pool_branches=(), layerscale=False)
ROW2_GAP = dict(head="gap", pool_branches=(), layerscale=False)
ROW3_POOL = dict(head="gap", pool_branches=(3, 5), layerscale=False)
ROW4_AFFINE = dict(head="gap", pool_branches=(3, 5), layerscale=True)

# binary DeiT-S (docs/papers.md 1.1); the HF DeiT embeddings have no BN after the stem.
DEIT_S = dict(patch_size=16, embed_dims=384, depths=12, num_heads=6, mlp_ratios=4, stem_bn=False, **_IMAGENET)
# BinaryViT pyramid (configs/binaryvit-small-patch4-224).
PYRAMID_S = dict(patch_size=4, embed_dims=(64, 128, 256, 512), depths=(3, 4, 8, 4), num_heads=(1, 2, 4, 8),
                 mlp_ratios=(8, 8, 4, 4), sr_ratios=(8, 4, 1, 1), **_IMAGENET)
# 32x32 inputs (Fashion-MNIST padded, CIFAR): 8x8 tokens for the isotropic models, a patch-2 stem
# giving 16/8/4/2 grids for the pyramids (K/V reduced to 4x4 in stages 1-2, as 7x7 at 224).
TINY_32 = dict(patch_size=4, embed_dims=128, depths=4, num_heads=2, mlp_ratios=4)
SMALL_32 = dict(patch_size=4, embed_dims=192, depths=6, num_heads=3, mlp_ratios=4)
PYRAMID_TINY_32 = dict(patch_size=2, embed_dims=(32, 64, 128, 256), depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
                       mlp_ratios=(8, 8, 4, 4), sr_ratios=(4, 2, 1, 1))
PYRAMID_SMALL_32 = dict(patch_size=2, embed_dims=(32, 64, 128, 256), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8),
                        mlp_ratios=(8, 8, 4, 4), sr_ratios=(4, 2, 1, 1))


def _register(name: str, *, description: str, tags: Tuple[str, ...], paper_top1=None, role="student",
              **fields) -> None:
    register_model(
        name, family="binaryvit", config=BinaryViTConfig(**fields), build=build_binaryvit,
        description=description, paper=_PAPER, paper_top1=paper_top1, role=role, tags=tags,
    )


# ImageNet-1k ladder (224x224, 1000 classes), with the paper's top-1.
_register("binaryvit_deit_s_cls_224", description="binary DeiT-S, ladder row 1: ReActNet-style binary DeiT, class-token head",
          paper_top1=48.5, tags=("imagenet", "ladder"), **DEIT_S, **ROW1_CLS)
_register("binaryvit_deit_s_gap_224", description="binary DeiT-S, ladder row 2: + global average pooling head",
          paper_top1=56.4, tags=("imagenet", "ladder"), **DEIT_S, **ROW2_GAP)
_register("binaryvit_deit_s_pool_224", description="binary DeiT-S, ladder row 3: + multi-branch average pooling",
          paper_top1=60.2, tags=("imagenet", "ladder"), **DEIT_S, **ROW3_POOL)
_register("binaryvit_deit_s_224", description="binary DeiT-S, ladder row 4: + LayerScale affine before residual adds",
          paper_top1=61.8, tags=("imagenet", "ladder"), **DEIT_S, **ROW4_AFFINE)
_register("binaryvit_pyramid_s_224", description="BinaryViT (ladder row 5): 4-stage pyramid, binary patch merging",
          paper_top1=67.7, tags=("imagenet", "ladder"), **PYRAMID_S)
_register("binaryvit_pyramid_s_224_fpmerge", description="BinaryViT* (ladder row 6): full-precision patch merging",
          paper_top1=70.6, tags=("imagenet", "ladder"), fp_downsample=True, **PYRAMID_S)

# Small-image ladders (32x32). binaryvit_tiny_32 (row 4, tiny) is the quickstart model.
_register("binaryvit_tiny_32_cls", description="isotropic tiny (32x32 input), ladder row 1: ReActNet-style binary DeiT, class-token head",
          tags=("32x32", "ladder"), **TINY_32, **ROW1_CLS)
_register("binaryvit_tiny_32_gap", description="isotropic tiny (32x32 input), ladder row 2: + global average pooling head",
          tags=("32x32", "ladder"), **TINY_32, **ROW2_GAP)
_register("binaryvit_tiny_32_pool", description="isotropic tiny (32x32 input), ladder row 3: + multi-branch average pooling",
          tags=("32x32", "ladder"), **TINY_32, **ROW3_POOL)
_register("binaryvit_tiny_32", description="isotropic tiny (32x32 input), ladder row 4: + LayerScale affine before residual adds, the quickstart model",
          tags=("32x32", "ladder"), **TINY_32, **ROW4_AFFINE)
_register("binaryvit_pyramid_tiny_32", description="BinaryViT pyramid tiny (32x32 input), ladder row 5",
          tags=("32x32", "ladder"), **PYRAMID_TINY_32)
_register("binaryvit_pyramid_tiny_32_fpmerge", description="BinaryViT* pyramid tiny (32x32 input), ladder row 6: FP patch merging",
          tags=("32x32", "ladder"), fp_downsample=True, **PYRAMID_TINY_32)
_register("binaryvit_small_32_cls", description="isotropic small (32x32 input), ladder row 1: ReActNet-style binary DeiT, class-token head",
          tags=("32x32", "ladder"), **SMALL_32, **ROW1_CLS)
_register("binaryvit_small_32_gap", description="isotropic small (32x32 input), ladder row 2: + global average pooling head",
          tags=("32x32", "ladder"), **SMALL_32, **ROW2_GAP)
_register("binaryvit_small_32_pool", description="isotropic small (32x32 input), ladder row 3: + multi-branch average pooling",
          tags=("32x32", "ladder"), **SMALL_32, **ROW3_POOL)
_register("binaryvit_small_32", description="isotropic small (32x32 input), ladder row 4: + LayerScale affine before residual adds",
          tags=("32x32", "ladder"), **SMALL_32, **ROW4_AFFINE)
_register("binaryvit_pyramid_small_32", description="BinaryViT pyramid small (32x32 input), ladder row 5",
          tags=("32x32", "ladder"), **PYRAMID_SMALL_32)
_register("binaryvit_pyramid_small_32_fpmerge", description="BinaryViT* pyramid small (32x32 input), ladder row 6: FP patch merging",
          tags=("32x32", "ladder"), fp_downsample=True, **PYRAMID_SMALL_32)

# The SPT + LSA variant of the quickstart model (Lee et al. 2021, docs/papers.md 3).
_register("binaryvit_tiny_32_spt_lsa", description="binaryvit_tiny_32 + Shifted Patch Tokenization + Locality Self-Attention",
          tags=("32x32",), spt=True, lsa=True, **TINY_32)

# Full-precision twins (same graph, float convs, float softmax): distillation teachers.
_register("vit_tiny_32_fp", description="full-precision twin of binaryvit_tiny_32 (teacher / reference)",
          role="teacher", tags=("32x32",), binary=False, **TINY_32)
_register("vit_small_32_fp", description="full-precision twin of binaryvit_small_32 (teacher / reference)",
          role="teacher", tags=("32x32",), binary=False, **SMALL_32)
_register("vit_pyramid_tiny_32_fp", description="full-precision twin of binaryvit_pyramid_tiny_32 (teacher)",
          role="teacher", tags=("32x32",), binary=False, **PYRAMID_TINY_32)
_register("vit_deit_s_224_fp", description="full-precision twin of binaryvit_deit_s_224 (the FP teacher's shape)",
          role="teacher", tags=("imagenet",), binary=False, **DEIT_S)

# The literature's heads (docs/papers.md 3.1): DeiT's distillation token, CaiT's class attention.
_register("binaryvit_tiny_32_distill", description="binaryvit_tiny_32 + DeiT distillation token from the stem and its head (trained on the teacher)",
          tags=("32x32", "literature"), distill_token=True, **TINY_32, **ROW4_AFFINE)
_register("binaryvit_tiny_32_cls_distill", description="binaryvit_tiny_32_cls + DeiT distillation token: class and distillation tokens, two heads",
          tags=("32x32", "literature"), distill_token=True, **TINY_32, **ROW1_CLS)
_register("binaryvit_tiny_32_cait", description="binaryvit_tiny_32 + CaiT class attention: 2 blocks where a class token attends to the patches",
          tags=("32x32", "literature"), **TINY_32, **{**ROW4_AFFINE, "head": "class_attention"})
_register("binaryvit_tiny_32_cait_distill", description="binaryvit_tiny_32_cait + DeiT distillation token, both tokens in the class-attention blocks",
          tags=("32x32", "literature"), distill_token=True, **TINY_32, **{**ROW4_AFFINE, "head": "class_attention"})
_register("binaryvit_pyramid_tiny_32_cait", description="binaryvit_pyramid_tiny_32 + CaiT class attention on the last stage's tokens",
          tags=("32x32", "literature"), head="class_attention", **PYRAMID_TINY_32)
_register("binaryvit_deit_s_distill_224", description="binaryvit_deit_s_224 + DeiT distillation token and head",
          tags=("imagenet", "literature"), distill_token=True, **DEIT_S, **ROW4_AFFINE)
_register("binaryvit_pyramid_s_224_cait_distill", description="binaryvit_pyramid_s_224 + CaiT class attention with class and distillation tokens",
          tags=("imagenet", "literature"), head="class_attention", distill_token=True, **PYRAMID_S)
