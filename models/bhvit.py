"""BHViT: Gao et al., "BHViT: Binarized Hybrid Vision Transformer", CVPR 2025 (arXiv 2503.02394).
Official code: IMRL/BHViT (`transformer/BHViT.py`, `transformer/utils_quant.py`).

Spec: docs/papers.md sections 0 (shared binary blocks), 2 (BHViT) and 4 (LCE mapping).
A four-stage pyramid on an NHWC token grid (B, H, W, C):

* stem (float): 4x4/4 conv, BN, GELU, position embedding;
* stages 1-2: MSGDC blocks (multi-scale grouped dilated binary 3x3 convs, d = 1, 3, 5);
* stages 3-4: MSMHA blocks (7x7 windowed binary attention plus pooled "merged" global tokens,
  attention probabilities quantized by quantization decomposition, QD);
* every block ends with the binary MLP and six parameter-free circular-shift branches;
* between stages: binary 2x2/2 patch merging (or float, the paper's "dagger" variants);
* head: BN, global average pool, float linear.

The official code's two further switches are config fields here: `qd_form="gsb"` (`--gsb`, the
GSB attention quantizer in place of QD, docs/papers.md 2.6) and `recu=True` (`--recu`, ReCU's
weight gradient in the linear layers; the official convs ignore the flag, so do ours; section 0).

What stays float in the LCE flatbuffer, and why (docs/papers.md 4.3): the stem, the classifier and the
float-downsampling convs (real-valued by design); the attention matmuls Q.K^T and P.V (LCE has no
binary matmul; +-1 and 2-bit operands run as float BATCH_MATMUL); softmax and the QD quantizer
(ROUND/FLOOR, MUL, MIN/MAX); LayerNorm of the window tokens; BN not directly after a bconv,
RPReLU, LayerScale, the learnable shifts; the merged-token pools, window reshapes/transposes,
nearest upsampling and the shift branches (slices + concat). Every binary linear (q, k, v, out,
fc1, fc2), every MSGDC conv and every binary patch merge becomes `LceBconv2d`.

LCE constraint handled here: a grouped binary conv needs 32k input channels per group, so the
stage-1 MSGDC convs (64 channels, groups=4: 16 per group) are written as four ungrouped convs on
channel slices plus a concat (`grouped_conv_form="split"`), which computes the same function;
"auto" picks the grouped form where LCE accepts it (stage 2: 32 per group, run with the indirect
BGEMM kernel) and the split form elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import tensorflow as tf

from edgebvit.errors import ModelError
from edgebvit.models import layers as L
from edgebvit.models.registry import register_model

GROUPED_CONV_FORMS = ("auto", "grouped", "split")
QD_FORMS = L.QD_FORMS
MIXERS = ("msgdc", "msmha")
MERGE_PADDINGS = ("official", "aligned")
LN_EPSILON = 1e-5  # PyTorch nn.LayerNorm default


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class BHViTConfig:
    """Hyper-parameters of BHViT (docs/papers.md 2.1) with the open choices as switches."""

    input_shape: Tuple[int, int, int] = (224, 224, 3)
    num_classes: int = 1000
    patch_size: int = 4  # stem conv kernel = stride; 224 -> 56x56 tokens
    embed_dims: Tuple[int, ...] = (64, 128, 256, 512)
    depths: Tuple[int, ...] = (2, 2, 6, 2)
    mlp_ratios: Tuple[int, ...] = (8, 8, 4, 4)
    num_heads: Tuple[int, ...] = (1, 2, 4, 8)  # used by MSMHA stages only (head dim 64)
    mixers: Tuple[str, ...] = ("msgdc", "msgdc", "msmha", "msmha")  # the hybrid of the paper
    window_size: int = 7  # MSMHA window; every MSMHA stage grid must be a multiple of it
    merge_padding: str = "official"  # "official": pool padding (ws-1)//2, windows misaligned
    # (the code's padding=3 quirk, docs/papers.md 2.4); "aligned": pools line up with the windows
    msgdc_dilations: Tuple[int, ...] = (1, 3, 5)
    msgdc_groups: int = 4
    msgdc_branch_residual: bool = False  # the paper's "+X" inside each branch; the code has none
    msgdc_pad_values: float = 0.0  # official: zero-pad the +-1 input; 1.0 = LCE's fast path
    grouped_conv_form: str = "auto"  # "grouped" | "split" | "auto" (grouped iff 32k ch/group)
    qd_form: str = "lsq"  # "lsq": official learnable per-head 2-bit; "fixed": paper thermometer;
    # "gsb": the official --gsb alternative (GSB_Attention: base mask + two row-maximum masks)
    qd_levels: int = 3  # s = 2^n - 1 with n = 2 bits
    shift3: bool = True  # 3-tap circular shift branches (official --shift3)
    shift5: bool = True  # 5-tap circular shift branches (official --shift5)
    fp_downsample: bool = False  # True: float patch merging (the paper's "dagger" variants)
    recu: bool = False  # official --recu: ReCU weight gradient in the linears (q, k, v, dense, fc1, fc2)

    def validate(self) -> None:
        """Raise ModelError (one line) for a configuration that cannot build."""
        cfg = self
        n = len(cfg.embed_dims)

        def bad(msg: str):
            raise ModelError(f"BHViT: {msg}")

        for field_name in ("depths", "mlp_ratios", "num_heads", "mixers"):
            if len(getattr(cfg, field_name)) != n:
                bad(f"{field_name} has {len(getattr(cfg, field_name))} entries, embed_dims has {n}")
        if len(cfg.input_shape) != 3 or min(cfg.input_shape) < 1:
            bad(f"input_shape must be (height, width, channels), got {cfg.input_shape}")
        if cfg.num_classes < 1:
            bad(f"num_classes must be positive, got {cfg.num_classes}")
        for choice, allowed, name in (
            (cfg.grouped_conv_form, GROUPED_CONV_FORMS, "grouped_conv_form"),
            (cfg.qd_form, QD_FORMS, "qd_form"),
            (cfg.merge_padding, MERGE_PADDINGS, "merge_padding"),
        ):
            if choice not in allowed:
                bad(f"{name} must be one of {', '.join(allowed)}, got {choice!r}")
        for m in cfg.mixers:
            if m not in MIXERS:
                bad(f"mixers entries must be one of {', '.join(MIXERS)}, got {m!r}")
        h, w = cfg.input_shape[:2]
        down = cfg.patch_size * 2 ** (n - 1)
        if cfg.patch_size < 1 or h % down or w % down:
            bad(f"input {h}x{w} must be a multiple of patch_size * 2^{n - 1} = {down}")
        for s, ((gh, gw), c) in enumerate(zip(_stage_grids(cfg), cfg.embed_dims)):
            if cfg.depths[s] < 0 or c < 4 or c % 4:
                bad(f"stage {s + 1}: width {c} must be a positive multiple of 4 (channel shifts), depth >= 0")
            if s and c % cfg.embed_dims[s - 1]:
                bad(f"stage {s + 1}: width {c} must be a multiple of {cfg.embed_dims[s - 1]} (tiled shortcut)")
            if cfg.mixers[s] == "msgdc" and cfg.depths[s]:
                if c % cfg.msgdc_groups:
                    bad(f"stage {s + 1}: width {c} does not split into {cfg.msgdc_groups} groups")
            if cfg.mixers[s] == "msmha" and cfg.depths[s]:
                if c % cfg.num_heads[s]:
                    bad(f"stage {s + 1}: width {c} does not split into {cfg.num_heads[s]} heads")
                if cfg.window_size < 1 or gh % cfg.window_size or gw % cfg.window_size:
                    bad(f"stage {s + 1}: {gh}x{gw} token grid is not a multiple of window_size {cfg.window_size}")
        if cfg.qd_levels < 1:
            bad(f"qd_levels must be >= 1, got {cfg.qd_levels}")


def _stage_grids(cfg: BHViTConfig) -> List[Tuple[int, int]]:
    h, w = cfg.input_shape[0] // cfg.patch_size, cfg.input_shape[1] // cfg.patch_size
    return [(h >> s, w >> s) for s in range(len(cfg.embed_dims))]


def conv_form(cfg: BHViTConfig, channels: int) -> str:
    """The MSGDC conv form used for a stage of `channels` channels ("grouped" or "split")."""
    if cfg.grouped_conv_form != "auto":
        return cfg.grouped_conv_form
    if cfg.msgdc_groups == 1:
        return "grouped"  # an ungrouped conv: nothing to split
    return "grouped" if (channels // cfg.msgdc_groups) % 32 == 0 else "split"


def merge_pool_padding(cfg: BHViTConfig) -> int:
    # (ws-1)//2 is the code's hard-coded 3 for ws=7 and keeps H/ws pooled tokens for any ws.
    return (cfg.window_size - 1) // 2 if cfg.merge_padding == "official" else 0


def lce_zero_padding_hazards(cfg: BHViTConfig) -> List[str]:
    """MSGDC convs LCE would run wrongly: zero padding on a grid smaller than the dilated kernel.

    Measured with larq-compute-engine 0.16.0 (one 3x3 binary conv, 32 channels): with
    pad_values=0 the optimized kernels (default and indirect BGEMM) disagree with Keras whenever
    grid < 2*d + 1 (the dilated kernel's extent); the reference kernel and one-padding are right.
    """
    if cfg.msgdc_pad_values != 0.0:
        return []
    out = []
    for s, (gh, gw) in enumerate(_stage_grids(cfg)):
        if cfg.mixers[s] != "msgdc" or not cfg.depths[s]:
            continue
        for d in cfg.msgdc_dilations:
            if min(gh, gw) < 2 * d + 1:
                out.append(f"stage {s + 1}: {gh}x{gw} grid < dilated 3x3 extent {2 * d + 1} (d={d})")
    return out


# --------------------------------------------------------------------------------------------
# Shift-based MLP enhancement (docs/papers.md 2.5)
# --------------------------------------------------------------------------------------------
def shift_branches(xn: tf.Tensor, cfg: BHViTConfig, *, name: str) -> List[tf.Tensor]:
    """The six parameter-free branches on the MLP input, each behind LayerScale(a=0, m=0)."""
    out = []
    for on, taps, shift in ((cfg.shift3, 3, 1), (cfg.shift5, 5, 2)):
        if not on:
            continue
        for axis, tag in ((1, "h"), (2, "w")):
            t = L.ShiftMean(taps=taps, axis=axis, name=f"{name}_{tag}{taps}")(xn)
            out.append(L.LayerScale(init_scale=0.0, name=f"{name}_{tag}{taps}_ls")(t))
        t = L.ChannelShiftMix(shift=shift, name=f"{name}_ch{taps}")(xn)
        out.append(L.LayerScale(init_scale=0.0, name=f"{name}_ch{taps}_ls")(t))
    return out


# --------------------------------------------------------------------------------------------
# MSGDC token mixer (docs/papers.md 2.3)
# --------------------------------------------------------------------------------------------
def msgdc_conv(u: tf.Tensor, cfg: BHViTConfig, *, dilation: int, name: str) -> tf.Tensor:
    """One dilated 3x3 binary conv with `msgdc_groups` groups, as one grouped conv or per slice.

    The split form gives group i its own ungrouped conv on input slice i, and concatenates the
    outputs in group order: exactly a grouped conv's output channel layout. ScaledSign reduces
    over (kh, kw, in) per output channel, which for a grouped kernel is that group's input slice,
    so each slice conv gets the same per-channel alpha and the same centring.
    """
    c = u.shape[-1]
    g = cfg.msgdc_groups
    common = dict(padding="same", pad_values=cfg.msgdc_pad_values, dilation_rate=dilation)
    if conv_form(cfg, c) == "grouped":
        h = L.binary_conv(c, 3, groups=g, name=name, **common)(u)
    else:
        parts = L.ChannelSplit(groups=g, name=f"{name}_split")(u)
        outs = [L.binary_conv(c // g, 3, name=f"{name}_g{i}", **common)(p) for i, p in enumerate(parts)]
        h = tf.keras.layers.Concatenate(axis=-1, name=f"{name}_concat")(outs)
    # The official conv has bias=True; kept as a separate per-channel add so both forms share it.
    return L.LearnableBias(name=f"{name}_bias")(h)


def msgdc(xn: tf.Tensor, cfg: BHViTConfig, *, name: str) -> tf.Tensor:
    """`token_mixer`: ``BN(sum_d RPReLU_d(BinConv3x3_d(sign(xn + b))))``, d in msgdc_dilations.

    With `msgdc_branch_residual` each branch is ``RPReLU_d(BinConv_d(...) + xn)`` (the paper's
    per-branch residual, placed before the activation as every other binary layer here).
    """
    u = L.LearnableBias(name=f"{name}_move")(xn)
    branches = []
    for i, d in enumerate(cfg.msgdc_dilations):
        h = msgdc_conv(u, cfg, dilation=d, name=f"{name}_cov{i + 1}")
        if cfg.msgdc_branch_residual:
            h = tf.keras.layers.Add(name=f"{name}_cov{i + 1}_res")([h, xn])
        branches.append(L.RPReLU(name=f"{name}_act{i + 1}")(h))
    t = branches[0] if len(branches) == 1 else tf.keras.layers.Add(name=f"{name}_sum")(branches)
    return L.batch_norm(f"{name}_norm")(t)


# --------------------------------------------------------------------------------------------
# MSMHA: windows, merged tokens, token split (docs/papers.md 2.4)
# --------------------------------------------------------------------------------------------
def token_for_attention(xn: tf.Tensor, cfg: BHViTConfig, *, name: str) -> tf.Tensor:
    """Window tokens plus all merged tokens per window, through a true LayerNorm (B, nW, T, C)."""
    ws = cfg.window_size
    windows = L.WindowPartition(window=ws, name=f"{name}_windows")(xn)
    merged = L.MergedTokens(window=ws, padding=merge_pool_padding(cfg), name=f"{name}_merge")(xn)
    tokens = L.AppendMergedTokens(name=f"{name}_tokens")([windows, merged])
    # The official Token_for_Attention hard-codes nn.LayerNorm (not swapped for BN).
    return tf.keras.layers.LayerNormalization(axis=-1, epsilon=LN_EPSILON, name=f"{name}_ln")(tokens)


def msmha(xn: tf.Tensor, cfg: BHViTConfig, stage: int, *, name: str) -> tf.Tensor:
    """`BHViTAttention`: windowed binary attention with merged tokens, QD probabilities, then the
    binary output projection (residual, BN, RPReLU, LayerScale 0.1)."""
    c = xn.shape[-1]
    tokens = token_for_attention(xn, cfg, name=f"{name}_tfa")
    q_pre = L.binary_linear(tokens, c, recu=cfg.recu, name=f"{name}_query")
    k_pre = L.binary_linear(tokens, c, recu=cfg.recu, name=f"{name}_key")
    v_pre = L.binary_linear(tokens, c, recu=cfg.recu, name=f"{name}_value")
    q = L.BinarySign(name=f"{name}_q_sign")(q_pre)
    k = L.BinarySign(name=f"{name}_k_sign")(k_pre)
    v = L.BinarySign(name=f"{name}_v_sign")(v_pre)
    ctx = L.QDAttention(num_heads=cfg.num_heads[stage], qd_form=cfg.qd_form, levels=cfg.qd_levels,
                      name=f"{name}_core")([q, k, v])
    ctx = L.batch_norm(f"{name}_ctx_bn")(ctx)
    ctx = tf.keras.layers.Add(name=f"{name}_ctx_res")([ctx, q_pre, k_pre, v_pre])
    ctx = L.RPReLU(name=f"{name}_ctx_rprelu")(ctx)
    y = L.TokenSplit(window=cfg.window_size, height=xn.shape[1], width=xn.shape[2], name=f"{name}_split")(ctx)
    out = L.binary_linear(y, c, recu=cfg.recu, name=f"{name}_dense")
    return L.LayerScale(init_scale=0.1, name=f"{name}_ls")(out)


# --------------------------------------------------------------------------------------------
# Blocks, stem, downsampling, head
# --------------------------------------------------------------------------------------------
def block(x: tf.Tensor, cfg: BHViTConfig, stage: int, *, name: str) -> tf.Tensor:
    """`GCLayer` (MSGDC) / `BHViTLayer` (MSMHA): x + mixer(BN(x)), then + MLP(BN(.)) + shifts."""
    xn = L.batch_norm(f"{name}_norm_before")(x)
    mixed = msgdc(xn, cfg, name=f"{name}_msgdc") if cfg.mixers[stage] == "msgdc" else msmha(
        xn, cfg, stage, name=f"{name}_msmha"
    )
    x = tf.keras.layers.Add(name=f"{name}_mix_res")([x, mixed])
    xn2 = L.batch_norm(f"{name}_norm_after")(x)
    mlp = L.mlp(xn2, cfg.mlp_ratios[stage], recu=cfg.recu, name=f"{name}_mlp")
    terms = [x, mlp, *shift_branches(xn2, cfg, name=f"{name}_shift")]
    return tf.keras.layers.Add(name=f"{name}_out")(terms)


def stem(x: tf.Tensor, cfg: BHViTConfig) -> tf.Tensor:
    """`BHViTEmbeddings`: float patch conv (bias), BN (LayerNorm in FP runs), GELU, position embedding."""
    x = tf.keras.layers.Conv2D(cfg.embed_dims[0], cfg.patch_size, strides=cfg.patch_size, use_bias=True,
                               kernel_initializer=L.torch_default_init(), name="stem_conv")(x)
    x = L.batch_norm("stem_bn")(x)
    x = tf.keras.layers.Activation("gelu", name="stem_gelu")(x)  # exact erf GELU, as nn.GELU
    return L.PositionEmbedding(name="stem_pos_embed")(x)


def downsample(x: tf.Tensor, out_dim: int, cfg: BHViTConfig, *, name: str) -> tf.Tensor:
    """`BinaryPatchEmbed` (2x2/2 binary conv with centred weights, 2x2 avg-pool + tile shortcut,
    BN, RPReLU) or, with fp_downsample, `PatchEmbed` (float 2x2/2 conv, BN, PyTorch's default
    init); both add a position embedding (docs/papers.md 2.2)."""
    if cfg.fp_downsample:
        h = L.patch_merging(x, out_dim, residual=False, binary=False, kernel_initializer=L.torch_default_init(),
                            name=name)
    else:
        h = L.patch_merging(x, out_dim, binary=True, centre=True, name=name)
    return L.PositionEmbedding(name=f"{name}_pos_embed")(h)


def build_bhvit(cfg: BHViTConfig) -> tf.keras.Model:
    """Build BHViT as a functional Keras model returning logits."""
    cfg.validate()
    inputs = tf.keras.Input(shape=tuple(cfg.input_shape), name="image")
    x = stem(inputs, cfg)
    for s in range(len(cfg.embed_dims)):
        for i in range(cfg.depths[s]):
            x = block(x, cfg, s, name=f"s{s + 1}b{i + 1}")
        if s + 1 < len(cfg.embed_dims):
            x = downsample(x, cfg.embed_dims[s + 1], cfg, name=f"down{s + 1}")
    return tf.keras.Model(inputs, L.classifier_head(x, cfg.num_classes, pooling="gap"))


# --------------------------------------------------------------------------------------------
# Registered variants (docs/papers.md 2.1): every name spelled out
# --------------------------------------------------------------------------------------------
TINY = BHViTConfig()
SMALL = BHViTConfig(depths=(3, 4, 8, 4))
# 32x32 images: a 2x2 stem gives 16/8/4/2 token grids; window 2 keeps ImageNet's layout of the
# attention stages (4 windows and 4 merged tokens at stage 3, one window and one token at stage 4).
# One-padding in MSGDC: stage 2's 8x8 grid is smaller than the d=5 kernel extent (11), where
# LCE's zero-padding correction is wrong (see lce_zero_padding_hazards); one-padding is LCE's
# native, fusable padding and the model is trained with it.
_SMALL_IMAGE = dict(input_shape=(32, 32, 3), num_classes=10, patch_size=2, window_size=2, msgdc_pad_values=1.0)
TINY_32 = BHViTConfig(**_SMALL_IMAGE)
SMALL_32 = BHViTConfig(**_SMALL_IMAGE, depths=(3, 4, 8, 4))

_PAPER = "Gao et al., CVPR 2025"


def _register(name: str, config: BHViTConfig, *, description: str, tags: Tuple[str, ...], paper_top1=None) -> None:
    register_model(name, family="bhvit", config=config, build=build_bhvit, description=description,
                   paper=_PAPER, paper_top1=paper_top1, tags=tags)


_register("bhvit_tiny", TINY, description="BHViT-Tiny, fully binary, 224x224, ImageNet-1k head",
          paper_top1=64.0, tags=("imagenet",))
_register("bhvit_small", SMALL, description="BHViT-Small, fully binary, 224x224, ImageNet-1k head",
          paper_top1=68.4, tags=("imagenet",))
_register("bhvit_tiny_fpds", BHViTConfig(fp_downsample=True),
          description="BHViT-Tiny with float patch merging (the paper's dagger variant), 224x224",
          paper_top1=66.0, tags=("imagenet",))
_register("bhvit_small_fpds", BHViTConfig(depths=(3, 4, 8, 4), fp_downsample=True),
          description="BHViT-Small with float patch merging (the paper's dagger variant), 224x224",
          paper_top1=70.1, tags=("imagenet",))
_register("bhvit_tiny_32", TINY_32, tags=("32x32",),
          description="BHViT-Tiny widths/depths for 32x32 images (2x2 stem, window 2), 10 classes")
_register("bhvit_small_32", SMALL_32, tags=("32x32",),
          description="BHViT-Small widths/depths for 32x32 images (2x2 stem, window 2), 10 classes")
_register("bhvit_tiny_32_gsb", BHViTConfig(**_SMALL_IMAGE, qd_form="gsb"), tags=("32x32",),
          description="bhvit_tiny_32 with the official --gsb attention quantizer (GSB_Attention) instead of QD")
_register("bhvit_tiny_32_recu", BHViTConfig(**_SMALL_IMAGE, recu=True), tags=("32x32",),
          description="bhvit_tiny_32 with the official --recu weight binarisation (ReCU) in its linear layers")
