"""BHViT: Gao et al., "BHViT: Binarized Hybrid Vision Transformer", CVPR 2025 (arXiv 2503.02394).
Official code: IMRL/BHViT (`transformer/BHViT.py`, `transformer/utils_quant.py`).

Spec: ../shared/design/papers.md sections 0 (shared binary blocks), 2 (BHViT) and 4 (LCE mapping).
A four-stage pyramid on an NHWC token grid (B, H, W, C):

* stem (float): 4x4/4 conv, BN, GELU, position embedding;
* stages 1-2: MSGDC blocks (multi-scale grouped dilated binary 3x3 convs, d = 1, 3, 5);
* stages 3-4: MSMHA blocks (7x7 windowed binary attention plus pooled "merged" global tokens,
  attention probabilities quantized by quantization decomposition, QD);
* every block ends with the binary MLP and six parameter-free circular-shift branches;
* between stages: binary 2x2/2 patch merging (or float, the paper's "dagger" variants);
* head: BN, global average pool, float linear.

What stays float in the LCE flatbuffer, and why (papers.md 4.3): the stem, the classifier and the
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

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from edgebvit.errors import ModelError
from edgebvit.models import layers as L
from edgebvit.models.registry import get_model_info, register_model

_PKG = "edgebvit"
GROUPED_CONV_FORMS = ("auto", "grouped", "split")
QD_FORMS = ("lsq", "fixed")
MIXERS = ("msgdc", "msmha")
MERGE_PADDINGS = ("official", "aligned")
LN_EPSILON = 1e-5  # PyTorch nn.LayerNorm default


def _serializable(cls):
    # Own registration (same package name as layers.py): layers.py's helper is private.
    return tf.keras.utils.register_keras_serializable(package=_PKG)(cls)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class BHViTConfig:
    """Hyper-parameters of BHViT (papers.md 2.1) with the open choices as switches."""

    input_shape: Tuple[int, int, int] = (224, 224, 3)
    num_classes: int = 1000
    stem_patch: int = 4  # stem conv kernel = stride; 224 -> 56x56 tokens
    dims: Tuple[int, ...] = (64, 128, 256, 512)
    depths: Tuple[int, ...] = (2, 2, 6, 2)
    mlp_ratios: Tuple[int, ...] = (8, 8, 4, 4)
    num_heads: Tuple[int, ...] = (1, 2, 4, 8)  # used by MSMHA stages only (head dim 64)
    mixers: Tuple[str, ...] = ("msgdc", "msgdc", "msmha", "msmha")  # the hybrid of the paper
    window_size: int = 7  # MSMHA window; every MSMHA stage grid must be a multiple of it
    merge_padding: str = "official"  # "official": pool padding (ws-1)//2, windows misaligned
    # (the code's padding=3 quirk, papers.md 2.4); "aligned": pools line up with the windows
    msgdc_dilations: Tuple[int, ...] = (1, 3, 5)
    msgdc_groups: int = 4
    msgdc_branch_residual: bool = False  # the paper's "+X" inside each branch; the code has none
    msgdc_pad_values: float = 0.0  # official: zero-pad the +-1 input; 1.0 = LCE's fast path
    grouped_conv_form: str = "auto"  # "grouped" | "split" | "auto" (grouped iff 32k ch/group)
    qd_form: str = "lsq"  # "lsq": official learnable per-head 2-bit; "fixed": paper thermometer
    qd_levels: int = 3  # s = 2^n - 1 with n = 2 bits
    shift3: bool = True  # 3-tap circular shift branches (official --shift3)
    shift5: bool = True  # 5-tap circular shift branches (official --shift5)
    fp_downsample: bool = False  # True: float patch merging (the paper's "dagger" variants)


def _stage_grids(cfg: BHViTConfig) -> List[Tuple[int, int]]:
    h, w = cfg.input_shape[0] // cfg.stem_patch, cfg.input_shape[1] // cfg.stem_patch
    return [(h >> s, w >> s) for s in range(len(cfg.dims))]


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


def validate_config(cfg: BHViTConfig) -> None:
    """Raise ModelError (one line) for a configuration that cannot build."""
    n = len(cfg.dims)

    def bad(msg: str):
        raise ModelError(f"BHViT: {msg}")

    for field_name in ("depths", "mlp_ratios", "num_heads", "mixers"):
        if len(getattr(cfg, field_name)) != n:
            bad(f"{field_name} has {len(getattr(cfg, field_name))} entries, dims has {n}")
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
    down = cfg.stem_patch * 2 ** (n - 1)
    if cfg.stem_patch < 1 or h % down or w % down:
        bad(f"input {h}x{w} must be a multiple of stem_patch * 2^{n - 1} = {down}")
    for s, ((gh, gw), c) in enumerate(zip(_stage_grids(cfg), cfg.dims)):
        if cfg.depths[s] < 0 or c < 4 or c % 4:
            bad(f"stage {s + 1}: width {c} must be a positive multiple of 4 (channel shifts), depth >= 0")
        if s and c % cfg.dims[s - 1]:
            bad(f"stage {s + 1}: width {c} must be a multiple of {cfg.dims[s - 1]} (tiled shortcut)")
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


# --------------------------------------------------------------------------------------------
# Shift-based MLP enhancement (papers.md 2.5)
# --------------------------------------------------------------------------------------------
def circular_roll(x: tf.Tensor, shift: int, axis: int) -> tf.Tensor:
    """``np.roll(x, shift, axis)`` from two slices and a concat (`tf.roll` has no TFLite op)."""
    size = x.shape[axis]
    s = shift % size
    if s == 0:
        return x
    head = [slice(None)] * len(x.shape)
    tail = [slice(None)] * len(x.shape)
    head[axis] = slice(size - s, None)  # the last s entries wrap around to the front
    tail[axis] = slice(0, size - s)
    return tf.concat([x[tuple(head)], x[tuple(tail)]], axis=axis)


@_serializable
class ShiftMean(tf.keras.layers.Layer):
    """`Shift` (taps=3) / `Shift2` (taps=5): circular mean of rolls by -k..k along H or W."""

    def __init__(self, *, taps: int, axis: int, **kwargs):
        super().__init__(**kwargs)
        if taps < 1 or taps % 2 == 0 or axis not in (1, 2):
            raise ValueError(f"ShiftMean needs an odd taps >= 1 and axis 1 (H) or 2 (W), got {taps}, {axis}")
        self.taps = int(taps)
        self.axis = int(axis)

    def call(self, x):
        k = self.taps // 2
        total = x
        for s in range(1, k + 1):
            total = total + circular_roll(x, s, self.axis) + circular_roll(x, -s, self.axis)
        return total * (1.0 / self.taps)

    def get_config(self):
        return {**super().get_config(), "taps": self.taps, "axis": self.axis}


@_serializable
class ChannelShiftMix(tf.keras.layers.Layer):
    """`Shift_channel_mix`: four channel chunks rolled by +s on H, -s on H, +s on W, -s on W."""

    def __init__(self, *, shift: int, **kwargs):
        super().__init__(**kwargs)
        self.shift = int(shift)

    def call(self, x):
        c = x.shape[-1]
        q = c // 4
        parts = [x[..., i * q:(i + 1) * q] for i in range(4)]
        rolled = [
            circular_roll(parts[0], self.shift, 1),
            circular_roll(parts[1], -self.shift, 1),
            circular_roll(parts[2], self.shift, 2),
            circular_roll(parts[3], -self.shift, 2),
        ]
        return tf.concat(rolled, axis=-1)

    def get_config(self):
        return {**super().get_config(), "shift": self.shift}


def shift_branches(xn: tf.Tensor, cfg: BHViTConfig, *, name: str) -> List[tf.Tensor]:
    """The six parameter-free branches on the MLP input, each behind LayerScale(a=0, m=0)."""
    out = []
    for on, taps, shift in ((cfg.shift3, 3, 1), (cfg.shift5, 5, 2)):
        if not on:
            continue
        for axis, tag in ((1, "h"), (2, "w")):
            t = ShiftMean(taps=taps, axis=axis, name=f"{name}_{tag}{taps}")(xn)
            out.append(L.LayerScale(init_scale=0.0, name=f"{name}_{tag}{taps}_ls")(t))
        t = ChannelShiftMix(shift=shift, name=f"{name}_ch{taps}")(xn)
        out.append(L.LayerScale(init_scale=0.0, name=f"{name}_ch{taps}_ls")(t))
    return out


# --------------------------------------------------------------------------------------------
# MSGDC token mixer (papers.md 2.3)
# --------------------------------------------------------------------------------------------
@_serializable
class ChannelSplit(tf.keras.layers.Layer):
    """Split the channel axis into `groups` equal consecutive slices (one SPLIT op)."""

    def __init__(self, *, groups: int, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, x):
        return tf.split(x, self.groups, axis=-1)

    def compute_output_shape(self, input_shape):
        return [(*input_shape[:-1], input_shape[-1] // self.groups)] * self.groups

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


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
        parts = ChannelSplit(groups=g, name=f"{name}_split")(u)
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
# Quantization-decomposition attention (papers.md 2.6)
# --------------------------------------------------------------------------------------------
@_serializable
class QDThermometer(tf.keras.layers.Layer):
    """The paper's fixed QD: ``sum_{sigma=1..s} [s*P >= sigma - 1/2]``, i.e. round-half-up(s*P).

    s = `levels` (3 for 2 bits). The s binary maps are a thermometer code, so their sum is
    ``clip(floor(s*P + 1/2), 0, s)``, computed that way (one FLOOR instead of s compares).
    Gradient: straight-through on s*P. Values are counts 0..s (no 1/s: the paper sums the maps).
    """

    def __init__(self, *, levels: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.levels = int(levels)

    def call(self, p):
        x = p * float(self.levels)
        q = tf.clip_by_value(tf.floor(x + 0.5), 0.0, float(self.levels))
        return x + tf.stop_gradient(q - x)

    def get_config(self):
        return {**super().get_config(), "levels": self.levels}


def _grad_scale(x: tf.Tensor, scale) -> tf.Tensor:
    """LSQ gradient scaling: value x, gradient times `scale`."""
    return tf.stop_gradient(x - x * scale) + x * scale


@_serializable
class QDLsq(tf.keras.layers.Layer):
    """The official QD (`BinaryActivation_Attention(heads, nbits=3)` applied to s*softmax).

    Per-head learnable step alpha and zero point z; forward ``alpha * clip(round(x/alpha + z), 0, s)``
    with x = s*P, s = `levels` = 3 (levels {0, a, 2a, 3a}: 2 bits). Rounding is straight-through;
    the gradients of alpha and z are scaled by ``heads / sqrt(numel(x) * s)``.
    First-batch initialisation, as the official code does on its first training forward:
    ``alpha = 2 mean|x| / sqrt(s)`` and ``z = 0.9 z + 0.1 min(x)`` per head, done on the first call
    with training=True (the `initialized` flag is saved with the model, so a reload keeps it).
    Input layout: (batch, heads, T, T).
    """

    def __init__(self, *, num_heads: int, levels: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.levels = int(levels)

    def build(self, input_shape):
        h = self.num_heads
        self.alpha = self.add_weight(name="alpha", shape=(h,), initializer="ones")
        self.zero_point = self.add_weight(name="zero_point", shape=(h,), initializer="zeros")
        self.initialized = self.add_weight(
            name="initialized", shape=(), initializer="zeros", trainable=False
        )
        super().build(input_shape)

    def _init_from(self, x):
        x = tf.stop_gradient(x)
        axes = [0, 2, 3]
        alpha = 2.0 * tf.reduce_mean(tf.abs(x), axis=axes) / math.sqrt(self.levels)
        zp = 0.9 * self.zero_point + 0.1 * tf.reduce_min(x, axis=axes)
        ops = [self.alpha.assign(alpha), self.zero_point.assign(zp), self.initialized.assign(1.0)]
        with tf.control_dependencies(ops):
            return tf.constant(True)

    def _quantize(self, x, alpha, zp):
        a = tf.reshape(alpha, (1, self.num_heads, 1, 1))
        z = tf.reshape(zp, (1, self.num_heads, 1, 1))
        v = x / a + z
        r = v + tf.stop_gradient(tf.round(v) - v)  # round_pass: straight-through
        return tf.clip_by_value(r, 0.0, float(self.levels)) * a

    def _train_forward(self, x):
        did_init = tf.cond(
            self.initialized < 0.5, lambda: self._init_from(x), lambda: tf.constant(False)
        )
        with tf.control_dependencies([did_init]):
            alpha = self.alpha.read_value()
            zp = self.zero_point.read_value()
        g = self.num_heads / tf.sqrt(tf.cast(tf.size(x), x.dtype) * float(self.levels))
        return self._quantize(x, _grad_scale(alpha, g), _grad_scale(zp, g))

    def call(self, p, training=None):
        x = p * float(self.levels)
        if training is None:
            training = tf.keras.backend.learning_phase()
        return tf.__internal__.smart_cond.smart_cond(
            training,
            lambda: self._train_forward(x),
            lambda: self._quantize(x, tf.convert_to_tensor(self.alpha), tf.convert_to_tensor(self.zero_point)),
        )

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "levels": self.levels}


@_serializable
class QDAttention(tf.keras.layers.Layer):
    """Multi-head attention within each row of a (B, R, T, C) tensor (R windows of T tokens).

    Inputs are the binarized Q, K, V (+-1); ``P = softmax(Q K^T / sqrt(d))`` is quantized by QD
    (`qd_form` "lsq" or "fixed") and the context ``P_q V`` is returned as (B, R, T, C).
    Both matmuls stay float BATCH_MATMUL in LCE (no binary matmul op exists).
    """

    def __init__(self, *, num_heads: int, qd_form: str = "lsq", levels: int = 3, **kwargs):
        super().__init__(**kwargs)
        if qd_form not in QD_FORMS:
            raise ValueError(f"qd_form must be one of {QD_FORMS}, got {qd_form!r}")
        self.num_heads = int(num_heads)
        self.qd_form = qd_form
        self.levels = int(levels)

    def build(self, input_shape):
        c = input_shape[0][-1]
        if c % self.num_heads:
            raise ValueError(f"{c} channels do not split into {self.num_heads} heads")
        self.head_dim = c // self.num_heads
        if self.qd_form == "lsq":
            self.quantizer = QDLsq(num_heads=self.num_heads, levels=self.levels, name="qd")
        else:
            self.quantizer = QDThermometer(levels=self.levels, name="qd")
        super().build(input_shape)

    def _heads(self, x):
        # (B, R, T, C) -> (B*R, heads, T, d), all 4-D so every TFLite op supports it
        t = x.shape[2]
        x = tf.reshape(x, (-1, t, self.num_heads, self.head_dim))
        return tf.transpose(x, (0, 2, 1, 3))

    def call(self, inputs, training=None):
        q, k, v = inputs
        r, t, c = q.shape[1], q.shape[2], q.shape[3]
        scores = tf.matmul(self._heads(q), self._heads(k), transpose_b=True)
        probs = tf.nn.softmax(scores * (1.0 / math.sqrt(self.head_dim)), axis=-1)
        if self.qd_form == "lsq":
            probs = self.quantizer(probs, training=training)
        else:
            probs = self.quantizer(probs)
        ctx = tf.transpose(tf.matmul(probs, self._heads(v)), (0, 2, 1, 3))  # (B*R, T, heads, d)
        return tf.reshape(ctx, (-1, r, t, c))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "qd_form": self.qd_form, "levels": self.levels}


# --------------------------------------------------------------------------------------------
# MSMHA: windows, merged tokens, token split (papers.md 2.4)
# --------------------------------------------------------------------------------------------
@_serializable
class WindowPartition(tf.keras.layers.Layer):
    """(B, H, W, C) -> (B, nW, ws*ws, C); windows row-major, tokens row-major within a window.

    Written with 4-D reshapes/transposes only: (B*nh, ws, nw, ws*C) -> swap -> (B, nW, ws^2, C).
    """

    def __init__(self, *, window: int, **kwargs):
        super().__init__(**kwargs)
        self.window = int(window)

    def call(self, x):
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        ws = self.window
        x = tf.reshape(x, (-1, ws, w // ws, ws * c))  # (B*nh, ws, nw, ws*C)
        x = tf.transpose(x, (0, 2, 1, 3))  # (B*nh, nw, ws, ws*C)
        return tf.reshape(x, (-1, (h // ws) * (w // ws), ws * ws, c))

    def get_config(self):
        return {**super().get_config(), "window": self.window}


def window_merge(x: tf.Tensor, window: int, height: int, width: int) -> tf.Tensor:
    """Inverse of WindowPartition: (B, nW, ws*ws, C) -> (B, H, W, C)."""
    ws, c = window, x.shape[-1]
    x = tf.reshape(x, (-1, width // ws, ws, ws * c))  # (B*nh, nw, ws, ws*C)
    x = tf.transpose(x, (0, 2, 1, 3))  # (B*nh, ws, nw, ws*C)
    return tf.reshape(x, (-1, height, width, c))


@_serializable
class WindowMerge(tf.keras.layers.Layer):
    """(B, nW, ws*ws, C) -> (B, H, W, C), the exact inverse of WindowPartition."""

    def __init__(self, *, window: int, height: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.window, self.height, self.width = int(window), int(height), int(width)

    def call(self, x):
        return window_merge(x, self.window, self.height, self.width)

    def get_config(self):
        return {**super().get_config(), "window": self.window, "height": self.height, "width": self.width}


@_serializable
class MergedTokens(tf.keras.layers.Layer):
    """`Token_for_Attention.Merge_token`: ``a*MaxPool(x) + (1-a)*AvgPool(x)``, a per channel = 0.5.

    Pools are window x window, stride window, `padding` on each side: the average counts the zero
    padding (PyTorch count_include_pad), the max pads with the lowest float (PyTorch's -inf).
    Output (B, H/ws, W/ws, C).
    """

    def __init__(self, *, window: int, padding: int, **kwargs):
        super().__init__(**kwargs)
        self.window, self.padding = int(window), int(padding)

    def build(self, input_shape):
        self.mix = self.add_weight(
            name="mix", shape=(input_shape[-1],), initializer=tf.keras.initializers.Constant(0.5)
        )
        super().build(input_shape)

    def call(self, x):
        p, ws = self.padding, self.window
        pads = [[0, 0], [p, p], [p, p], [0, 0]]
        low = float(np.finfo(np.float32).min)
        xmax = tf.nn.max_pool2d(tf.pad(x, pads, constant_values=low), ws, ws, "VALID")
        xavg = tf.nn.avg_pool2d(tf.pad(x, pads), ws, ws, "VALID")
        return self.mix * xmax + (1.0 - self.mix) * xavg

    def get_config(self):
        return {**super().get_config(), "window": self.window, "padding": self.padding}


@_serializable
class AppendMergedTokens(tf.keras.layers.Layer):
    """[(B, nW, ws^2, C), (B, m, m, C)] -> (B, nW, ws^2 + m^2, C): every window sees all merged tokens."""

    def call(self, inputs):
        windows, merged = inputs
        nw, c = windows.shape[1], windows.shape[-1]
        m = merged.shape[1] * merged.shape[2]
        merged = tf.tile(tf.reshape(merged, (-1, 1, m, c)), (1, nw, 1, 1))
        return tf.concat([windows, merged], axis=2)

    def compute_output_shape(self, input_shape):
        w, m = input_shape
        return (w[0], w[1], w[2] + m[1] * m[2], w[3])


@_serializable
class TokenSplit(tf.keras.layers.Layer):
    """`token_split`: window tokens back onto the grid (x1); merged-token outputs averaged over
    windows and nearest-upsampled to the grid (x2); ``p*x1 + (1-p)*x2``, p per channel = 0.5."""

    def __init__(self, *, window: int, height: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.window, self.height, self.width = int(window), int(height), int(width)

    def build(self, input_shape):
        self.mix = self.add_weight(
            name="mix", shape=(input_shape[-1],), initializer=tf.keras.initializers.Constant(0.5)
        )
        super().build(input_shape)

    def call(self, x):
        ws, h, w = self.window, self.height, self.width
        c = x.shape[-1]
        x1 = window_merge(x[:, :, : ws * ws], ws, h, w)
        x2 = tf.reduce_mean(x[:, :, ws * ws:], axis=1)  # (B, m*m, C)
        x2 = tf.reshape(x2, (-1, h // ws, w // ws, c))
        x2 = tf.image.resize(x2, (h, w), method="nearest")
        return self.mix * x1 + (1.0 - self.mix) * x2

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "window": self.window, "height": self.height, "width": self.width}


def token_for_attention(xn: tf.Tensor, cfg: BHViTConfig, *, name: str) -> tf.Tensor:
    """Window tokens plus all merged tokens per window, through a true LayerNorm (B, nW, T, C)."""
    ws = cfg.window_size
    windows = WindowPartition(window=ws, name=f"{name}_windows")(xn)
    merged = MergedTokens(window=ws, padding=merge_pool_padding(cfg), name=f"{name}_merge")(xn)
    tokens = AppendMergedTokens(name=f"{name}_tokens")([windows, merged])
    # The official Token_for_Attention hard-codes nn.LayerNorm (not swapped for BN).
    return tf.keras.layers.LayerNormalization(axis=-1, epsilon=LN_EPSILON, name=f"{name}_ln")(tokens)


def msmha(xn: tf.Tensor, cfg: BHViTConfig, stage: int, *, name: str) -> tf.Tensor:
    """`BHViTAttention`: windowed binary attention with merged tokens, QD probabilities, then the
    binary output projection (residual, BN, RPReLU, LayerScale 0.1)."""
    c = xn.shape[-1]
    tokens = token_for_attention(xn, cfg, name=f"{name}_tfa")
    q_pre = L.binary_linear(tokens, c, name=f"{name}_query")
    k_pre = L.binary_linear(tokens, c, name=f"{name}_key")
    v_pre = L.binary_linear(tokens, c, name=f"{name}_value")
    q = L.BinarySign(name=f"{name}_q_sign")(q_pre)
    k = L.BinarySign(name=f"{name}_k_sign")(k_pre)
    v = L.BinarySign(name=f"{name}_v_sign")(v_pre)
    ctx = QDAttention(num_heads=cfg.num_heads[stage], qd_form=cfg.qd_form, levels=cfg.qd_levels,
                      name=f"{name}_core")([q, k, v])
    ctx = L.batch_norm(f"{name}_ctx_bn")(ctx)
    ctx = tf.keras.layers.Add(name=f"{name}_ctx_res")([ctx, q_pre, k_pre, v_pre])
    ctx = L.RPReLU(name=f"{name}_ctx_rprelu")(ctx)
    y = TokenSplit(window=cfg.window_size, height=xn.shape[1], width=xn.shape[2], name=f"{name}_split")(ctx)
    out = L.binary_linear(y, c, name=f"{name}_dense")
    return L.LayerScale(init_scale=0.1, name=f"{name}_ls")(out)


# --------------------------------------------------------------------------------------------
# Blocks, stem, downsampling, head
# --------------------------------------------------------------------------------------------
def mlp(xn: tf.Tensor, ratio: int, *, name: str) -> tf.Tensor:
    """Binary MLP as BinaryViT: fc1 (tile shortcut), fc2 (channel-average shortcut), LayerScale 0.1."""
    c = xn.shape[-1]
    h = L.binary_linear(xn, c * ratio, name=f"{name}_fc1")
    out = L.binary_linear(h, c, name=f"{name}_fc2")
    return L.LayerScale(init_scale=0.1, name=f"{name}_ls")(out)


def block(x: tf.Tensor, cfg: BHViTConfig, stage: int, *, name: str) -> tf.Tensor:
    """`GCLayer` (MSGDC) / `BHViTLayer` (MSMHA): x + mixer(BN(x)), then + MLP(BN(.)) + shifts."""
    xn = L.batch_norm(f"{name}_norm_before")(x)
    mixed = msgdc(xn, cfg, name=f"{name}_msgdc") if cfg.mixers[stage] == "msgdc" else msmha(
        xn, cfg, stage, name=f"{name}_msmha"
    )
    x = tf.keras.layers.Add(name=f"{name}_mix_res")([x, mixed])
    xn2 = L.batch_norm(f"{name}_norm_after")(x)
    terms = [x, mlp(xn2, cfg.mlp_ratios[stage], name=f"{name}_mlp"), *shift_branches(xn2, cfg, name=f"{name}_shift")]
    return tf.keras.layers.Add(name=f"{name}_out")(terms)


def _torch_conv_init() -> tf.keras.initializers.Initializer:
    # nn.Conv2d's default (kaiming_uniform, a=sqrt(5)): U(+-1/sqrt(fan_in)).
    return tf.keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def stem(x: tf.Tensor, cfg: BHViTConfig) -> tf.Tensor:
    """`BHViTEmbeddings`: float patch conv (bias), BN (LayerNorm in FP runs), GELU, position embedding."""
    x = tf.keras.layers.Conv2D(cfg.dims[0], cfg.stem_patch, strides=cfg.stem_patch, use_bias=True,
                               kernel_initializer=_torch_conv_init(), name="stem_conv")(x)
    x = L.batch_norm("stem_bn")(x)
    x = tf.keras.layers.Activation("gelu", name="stem_gelu")(x)  # exact erf GELU, as nn.GELU
    return L.PositionEmbedding(name="stem_pos_embed")(x)


def downsample(x: tf.Tensor, out_dim: int, cfg: BHViTConfig, *, name: str) -> tf.Tensor:
    """`BinaryPatchEmbed` (2x2/2 binary conv, 2x2 avg-pool + tile shortcut, BN, RPReLU) or, with
    fp_downsample, `PatchEmbed` (float 2x2/2 conv, BN); both add a position embedding."""
    xn = L.batch_norm(f"{name}_norm0")(x)
    if cfg.fp_downsample:
        h = tf.keras.layers.Conv2D(out_dim, 2, strides=2, use_bias=False,
                                   kernel_initializer=_torch_conv_init(), name=f"{name}_proj")(xn)
        h = L.batch_norm(f"{name}_norm")(h)
    else:
        res = tf.keras.layers.AveragePooling2D(2, name=f"{name}_pool")(xn)
        res = L.channel_shortcut(res, out_dim, name=f"{name}_res")
        h = L.LearnableBias(name=f"{name}_move")(xn)
        h = L.binary_conv(out_dim, 2, strides=2, name=f"{name}_proj")(h)
        h = L.batch_norm(f"{name}_norm")(h)
        h = tf.keras.layers.Add(name=f"{name}_add")([h, res])
        h = L.RPReLU(name=f"{name}_rprelu")(h)
    return L.PositionEmbedding(name=f"{name}_pos_embed")(h)


def classifier_head(x: tf.Tensor, cfg: BHViTConfig) -> tf.Tensor:
    x = L.batch_norm("head_bn")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="head_gap")(x)
    return tf.keras.layers.Dense(cfg.num_classes, kernel_initializer=L.trunc_normal(0.02), name="head")(x)


def build_bhvit(cfg: BHViTConfig) -> tf.keras.Model:
    """Build BHViT as a functional Keras model returning logits."""
    validate_config(cfg)
    inputs = tf.keras.Input(shape=tuple(cfg.input_shape), name="image")
    x = stem(inputs, cfg)
    for s in range(len(cfg.dims)):
        for i in range(cfg.depths[s]):
            x = block(x, cfg, s, name=f"s{s + 1}b{i + 1}")
        if s + 1 < len(cfg.dims):
            x = downsample(x, cfg.dims[s + 1], cfg, name=f"down{s + 1}")
    return tf.keras.Model(inputs, classifier_head(x, cfg))


# --------------------------------------------------------------------------------------------
# Registered variants (papers.md 2.1)
# --------------------------------------------------------------------------------------------
TINY = BHViTConfig()
SMALL = BHViTConfig(depths=(3, 4, 8, 4))
# 32x32 images: a 2x2 stem gives 16/8/4/2 token grids; window 2 keeps ImageNet's layout of the
# attention stages (4 windows and 4 merged tokens at stage 3, one window and one token at stage 4).
# One-padding in MSGDC: stage 2's 8x8 grid is smaller than the d=5 kernel extent (11), where
# LCE's zero-padding correction is wrong (see lce_zero_padding_hazards); one-padding is LCE's
# native, fusable padding and the model is trained with it.
_SMALL_IMAGE = dict(input_shape=(32, 32, 3), num_classes=10, stem_patch=2, window_size=2, msgdc_pad_values=1.0)
TINY_32 = BHViTConfig(**_SMALL_IMAGE)
SMALL_32 = BHViTConfig(**_SMALL_IMAGE, depths=(3, 4, 8, 4))

_PAPER = "Gao et al., CVPR 2025"
_VARIANTS: Sequence[Tuple[str, BHViTConfig, str, object]] = (
    ("bhvit_tiny", TINY, "BHViT-Tiny, fully binary, 224x224, ImageNet-1k head", 64.0),
    ("bhvit_small", SMALL, "BHViT-Small, fully binary, 224x224, ImageNet-1k head", 68.4),
    ("bhvit_tiny_fpds", BHViTConfig(fp_downsample=True),
     "BHViT-Tiny with float patch merging (the paper's dagger variant), 224x224", 66.0),
    ("bhvit_small_fpds", BHViTConfig(depths=(3, 4, 8, 4), fp_downsample=True),
     "BHViT-Small with float patch merging (the paper's dagger variant), 224x224", 70.1),
    ("bhvit_tiny_32", TINY_32, "BHViT-Tiny widths/depths for 32x32 images (2x2 stem, window 2), 10 classes", None),
    ("bhvit_small_32", SMALL_32, "BHViT-Small widths/depths for 32x32 images (2x2 stem, window 2), 10 classes", None),
)


def _register() -> None:
    for name, config, description, top1 in _VARIANTS:
        try:
            get_model_info(name)
            continue  # already registered (module re-imported): registration is idempotent
        except ModelError:
            pass
        register_model(name, family="bhvit", config=config, build=build_bhvit, description=description,
                       paper=_PAPER, paper_top1=top1)


_register()

__all__ = [
    "AppendMergedTokens", "BHViTConfig", "ChannelShiftMix", "ChannelSplit", "MergedTokens", "QDAttention",
    "QDLsq", "QDThermometer", "ShiftMean", "TokenSplit", "WindowMerge", "WindowPartition", "build_bhvit",
    "circular_roll", "conv_form", "lce_zero_padding_hazards", "msgdc", "msgdc_conv", "msmha", "shift_branches", "validate_config",
]
