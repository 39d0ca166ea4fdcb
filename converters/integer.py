"""Integer export: int8 wherever an op is not binary, exact integer attention (docs/integer.md).

LCE's converter quantizes a graph from its fake-quant ops (the QAT route of TFLite): every
tensor that should be int8 must carry ``FakeQuantWithMinMaxVars`` with its range. This module
builds that graph from a trained model without changing the model:

1. `integer_twin` rebuilds the functional graph node by node (as `rewrites.py` does) and
   * puts a `RangeObserver` on every float tensor between ops (not between a conv and the
     BatchNorm LCE folds into it, not after ops that keep their input's scale);
   * replaces the attention cores by `IntegerAttention`, whose matmul inputs and Q.K^T outputs
     have ranges derived from their known value sets (Q, K, V are +-1; the quantized
     probabilities are small integer counts times a per-head scale), not calibrated;
   * writes RPReLU as SUB, PRELU, ADD (three ops instead of about seven).
2. `calibrate` runs the twin on a few hundred training images and records each observer's
   per-tensor min/max; after it, the observers fake-quantize.
3. The caller converts the twin with LCE (``converters/export.py``) and gates it on parity with
   the *original* model.

With ``quantize=False`` the twin has no observers: the same lean float graph (step 1 without
the ranges), used by the float export too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgebvit.errors import DataError, ModelError

INT8_LEVELS = 127  # symmetric narrow range: -127..127, scale 1 represents integers exactly
SOFTMAX_MAX = 255.0 / 256.0  # TFLite's int8 softmax output: scale 1/256, zero point -128
DEFAULT_CALIBRATION_IMAGES = 512
MASK_MARGIN = 8.0  # a masked score sits this far below every real one: exp(-8) < 1/512, so 0 in int8


def _tf():
    import tensorflow as tf

    return tf


# ---- observers -----------------------------------------------------------------------------

def _observer_class():
    tf = _tf()

    class RangeObserver(tf.keras.layers.Layer):
        """Per-tensor int8 range: records min/max while calibrating, then fake-quantizes.

        `fixed` = (min, max) is a range known from the math (no calibration); `narrow_range`
        uses -127..127 so that min = -max keeps zero and +-max exact.
        """

        def __init__(self, *, fixed: Optional[Tuple[float, float]] = None, narrow_range: bool = False,
                     **kwargs):
            super().__init__(**kwargs)
            self.fixed = None if fixed is None else (float(fixed[0]), float(fixed[1]))
            self.narrow_range = bool(narrow_range)
            self.calibrating = self.fixed is None
            self.active = True

        def build(self, input_shape):
            lo, hi = self.fixed if self.fixed is not None else (np.inf, -np.inf)
            self.min_var = self.add_weight(name="min", shape=(), initializer=tf.keras.initializers.Constant(lo),
                                           trainable=False)
            self.max_var = self.add_weight(name="max", shape=(), initializer=tf.keras.initializers.Constant(hi),
                                           trainable=False)
            super().build(input_shape)

        def call(self, x):
            if not self.active:
                return x
            if self.calibrating:
                self.min_var.assign(tf.minimum(self.min_var, tf.reduce_min(x)))
                self.max_var.assign(tf.maximum(self.max_var, tf.reduce_max(x)))
                return x
            return tf.quantization.fake_quant_with_min_max_vars(
                x, self.min_var, self.max_var, num_bits=8, narrow_range=self.narrow_range)

        def finish_calibration(self) -> Tuple[float, float]:
            """Freeze the range (min <= 0 <= max, non-empty) and switch to fake-quantizing."""
            lo, hi = float(self.min_var.numpy()), float(self.max_var.numpy())
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise DataError(f"{self.name}: no calibration data reached this tensor")
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            if hi - lo < 1e-6:
                hi = lo + 1e-6
            self.min_var.assign(lo)
            self.max_var.assign(hi)
            self.calibrating = False
            return lo, hi

        def get_config(self):
            return {**super().get_config(), "fixed": self.fixed, "narrow_range": self.narrow_range}

    return RangeObserver


_OBSERVER = None


def RangeObserver(**kwargs):  # noqa: N802 - a layer constructor
    global _OBSERVER
    if _OBSERVER is None:
        _OBSERVER = _observer_class()
    return _OBSERVER(**kwargs)


def observers(model) -> list:
    cls = _OBSERVER
    if cls is None:
        return []
    # An observer a twin made but never called (a branch not taken) has no range and no op.
    return [l for l in model._flatten_layers(include_self=False, recursive=True) if isinstance(l, cls) and l.built]


def exact_symmetric(bound: float) -> Tuple[float, float]:
    """The int8 range for values in [-bound, bound]: -127..127 (scale 1, every integer exact)
    when bound <= 127, else [-bound, bound] (scale bound / 127). Use with narrow_range."""
    b = max(float(INT8_LEVELS), float(bound))
    return (-b, b)


# ---- the attention twin --------------------------------------------------------------------

@dataclass(frozen=True)
class ProbLevels:
    """A step-function probability quantizer: ``P_q = scale_h * sum_k [P > t_hk]`` (k = 1..m).

    thresholds: (heads, m) in probability units; scale: (heads,). BiT's binarizer is m = 1,
    t = alpha / 2, scale alpha; BHViT's QD has m = 3 levels. None: a float softmax (no quantizer).
    """

    thresholds: np.ndarray
    scale: np.ndarray
    strict: bool = True  # P > t (round half to even) or P >= t (round half up)

    @property
    def levels(self) -> int:
        return int(self.thresholds.shape[1])


def prob_levels(core) -> Optional[ProbLevels]:
    """The step function of an attention core's probability quantizer, read from its weights."""
    from edgebvit.models.layers.attention import MultiHeadAttentionCore
    from edgebvit.models.layers.qd import QDAttention, QDLsq, QDThermometer

    if isinstance(core, MultiHeadAttentionCore):
        if core.prob_quant == "none":
            return None
        alpha = float(core.prob_binarizer.alpha.numpy())
        h = core.num_heads
        if alpha <= 0:  # round(P / alpha) clipped to [0, 1] is 0 for every P >= 0: the output is 0
            return ProbLevels(thresholds=np.full((h, 1), np.inf), scale=np.zeros(h))
        return ProbLevels(thresholds=np.full((h, 1), alpha / 2.0), scale=np.full(h, alpha))
    if isinstance(core, QDAttention):
        q = core.quantizer
        s = core.levels
        h = core.num_heads
        if isinstance(q, QDThermometer):
            # floor(s P + 1/2) clipped to [0, s] = sum_k [P >= (k - 1/2) / s]
            t = np.array([(k - 0.5) / s for k in range(1, s + 1)])
            return ProbLevels(thresholds=np.tile(t, (h, 1)), scale=np.ones(h), strict=False)
        if isinstance(q, QDLsq):
            a = q.alpha.numpy().astype(np.float64)
            z = q.zero_point.numpy().astype(np.float64)
            # alpha * clip(round(s P / alpha + z), 0, s) = alpha * sum_k [s P / alpha + z > k - 1/2]
            t = np.zeros((h, s))
            for hh in range(h):
                for k in range(1, s + 1):
                    t[hh, k - 1] = (a[hh] * (k - 0.5 - z[hh]) / s) if a[hh] > 0 else np.inf
            t = np.where(np.isfinite(t), t, np.inf)
            return ProbLevels(thresholds=t, scale=np.where(a > 0, a, 0.0))
    raise ModelError(f"{core.name}: no integer form for {type(core).__name__}")


def _grid_threshold(t: float, strict: bool) -> float:
    """A threshold halfway between two int8 softmax levels (j / 256) giving the same decision
    as ``P > t`` (or ``P >= t``) for every representable P."""
    if not np.isfinite(t) or t >= 1.0:
        return 2.0  # never reached: P <= 255/256
    if t < 0:
        return -1.0
    j = math.floor(t * 256) + 1 if strict else math.ceil(t * 256)  # smallest level index that passes
    return (j - 0.5) / 256.0


def _integer_attention_class():
    tf = _tf()

    class IntegerAttention(tf.keras.layers.Layer):
        """Attention over +-1 Q, K, V with both matmuls in int8 and exact matmul inputs.

        ``S = Q K^T`` are integers in [-d, d] (scale 1 when d <= 127); the scaled scores and
        the softmax are int8; the probability quantizer becomes integer counts ``K_c`` from
        comparisons with thresholds placed between softmax levels, and ``ctx = scale_h * (K_c V)``
        with ``K_c V`` integers in [-m N, m N]. `source` is the original core (its config and
        weights); `layout` is ``"grid"`` (B, H, W, C) or ``"rows"`` (B, R, T, C).
        """

        def __init__(self, *, num_heads: int, head_dim: int, score_scale, levels: Optional[ProbLevels],
                     mask_diagonal: bool, layout: str, quantize: bool, **kwargs):
            super().__init__(**kwargs)
            self.num_heads = num_heads
            self.head_dim = head_dim
            self.score_scale = np.asarray(score_scale, dtype=np.float32).reshape(-1)  # () or (heads,)
            self.levels = levels
            self.mask_diagonal = mask_diagonal
            self.layout = layout
            self.quantize = quantize

        def build(self, input_shape):
            k_shape = input_shape[1]
            nk = int(k_shape[1] * k_shape[2]) if self.layout == "grid" else int(k_shape[2])
            d = self.head_dim
            sc = float(np.max(np.abs(self.score_scale)))
            obs = lambda name, rng, narrow=False: RangeObserver(fixed=rng, narrow_range=narrow, name=f"{self.name}_{name}") \
                if self.quantize else None  # noqa: E731
            self.obs_scores = obs("scores", exact_symmetric(d), True)
            low = -d * sc - (d * sc + MASK_MARGIN if self.mask_diagonal else 0.0)
            self.obs_scaled = obs("scaled", (low, d * sc))
            self.obs_probs = obs("probs", (0.0, SOFTMAX_MAX))
            m = self.levels.levels if self.levels is not None else 1
            self.obs_counts = obs("counts", (0.0, float(m)))
            bound = m * nk if self.levels is not None else nk
            self.obs_context = obs("context", exact_symmetric(bound), True)
            if self.levels is not None:
                amax = float(np.max(np.abs(self.levels.scale))) or 1.0
                self.obs_output = obs("output", (-amax * bound, amax * bound), True)
                if self.quantize:  # between softmax levels: the same decision for every int8 P
                    thr = [[_grid_threshold(t, self.levels.strict) for t in row] for row in self.levels.thresholds]
                else:
                    thr = np.minimum(self.levels.thresholds, 2.0)
                self.thresholds = np.asarray(thr, dtype=np.float32)  # (heads, m)
                self.strict = self.levels.strict or self.quantize
            super().build(input_shape)

        def _heads(self, x):
            # (B, ..., C) -> (B * heads, T, d): batch and heads in one unknown dimension, so the
            # converter keeps one BATCH_MATMUL instead of unrolling one FULLY_CONNECTED per head.
            t = x.shape[1] * x.shape[2] if self.layout == "grid" else x.shape[2]
            x = tf.reshape(x, (-1, t, self.num_heads, self.head_dim))
            x = tf.transpose(x, (0, 2, 1, 3))
            return tf.reshape(x, (-1, t, self.head_dim))

        def _o(self, observer, x):
            return observer(x) if observer is not None else x

        def call(self, inputs):
            q, k, v = inputs
            qh, kh, vh = self._heads(q), self._heads(k), self._heads(v)
            h = self.num_heads
            s = self._o(self.obs_scores, tf.matmul(qh, kh, transpose_b=True))
            s = tf.reshape(s, (-1, h, s.shape[1], s.shape[2]))
            scale = self.score_scale.reshape(1, -1, 1, 1) if self.score_scale.size > 1 else float(self.score_scale[0])
            s = s * scale
            if self.mask_diagonal and s.shape[-1] == s.shape[-2]:
                n = s.shape[-1]
                d_sc = self.head_dim * float(np.max(np.abs(self.score_scale)))
                s = s - tf.eye(n, dtype=s.dtype) * (2 * d_sc + MASK_MARGIN)
            s = self._o(self.obs_scaled, s)
            p = self._o(self.obs_probs, tf.nn.softmax(s, axis=-1))
            flat = lambda a: tf.reshape(a, (-1, a.shape[2], a.shape[3]))  # noqa: E731
            if self.levels is None:
                ctx = self._o(self.obs_context, tf.matmul(flat(p), vh))
            else:
                counts = None
                for kk in range(self.levels.levels):
                    t = self.thresholds[:, kk].reshape(1, -1, 1, 1)
                    cond = p > t if self.strict else p >= t
                    one, zero = tf.constant(1.0), tf.constant(0.0)
                    if self.quantize:  # int8 constants: SELECT_V2 then runs in int8
                        one = tf.quantization.fake_quant_with_min_max_args(one, 0.0, 1.0)
                        zero = tf.quantization.fake_quant_with_min_max_args(zero, 0.0, 1.0)
                    hit = tf.where(cond, one, zero)
                    counts = hit if counts is None else counts + hit
                counts = self._o(self.obs_counts, counts)
                ctx = self._o(self.obs_context, tf.matmul(flat(counts), vh))
            ctx = tf.reshape(ctx, (-1, h, ctx.shape[1], ctx.shape[2]))  # (B, heads, T, d)
            if self.levels is not None:
                a = self.levels.scale.astype(np.float32).reshape(1, -1, 1, 1)
                ctx = self._o(self.obs_output, ctx * a)
            ctx = tf.transpose(ctx, (0, 2, 1, 3))
            return tf.reshape(ctx, (-1, *q.shape[1:]))

        def compute_output_shape(self, input_shape):
            return input_shape[0]

    return IntegerAttention


_ATTENTION = None


def integer_attention(core, *, quantize: bool, name: str):
    """The `IntegerAttention` twin of a MultiHeadAttentionCore or QDAttention."""
    global _ATTENTION
    from edgebvit.models.layers.attention import MultiHeadAttentionCore

    if _ATTENTION is None:
        _ATTENTION = _integer_attention_class()
    if isinstance(core, MultiHeadAttentionCore):
        scale = core.temperature.numpy() if core.lsa else 1.0 / math.sqrt(core.head_dim)
        return _ATTENTION(num_heads=core.num_heads, head_dim=core.head_dim, score_scale=scale,
                          levels=prob_levels(core), mask_diagonal=core.lsa, layout="grid", quantize=quantize,
                          name=name)
    return _ATTENTION(num_heads=core.num_heads, head_dim=core.head_dim, score_scale=1.0 / math.sqrt(core.head_dim),
                      levels=prob_levels(core), mask_diagonal=False, layout="rows", quantize=quantize, name=name)


# ---- element-wise twins --------------------------------------------------------------------

def _twin_classes():
    tf = _tf()

    class _Twin(tf.keras.layers.Layer):
        def __init__(self, *, quantize: bool, **kwargs):
            super().__init__(**kwargs)
            self.quantize = quantize

        def _obs(self, tag, fixed=None, narrow=False):
            return RangeObserver(fixed=fixed, narrow_range=narrow, name=f"{self.name}_{tag}") if self.quantize else None

        @staticmethod
        def _o(observer, x):
            return observer(x) if observer is not None else x

    class PReLUTwin(_Twin):
        """RPReLU ``PReLU(x - gamma) + zeta`` as SUB, PRELU, ADD (TFLite fuses Keras's PReLU form)."""

        def __init__(self, *, source, **kwargs):
            super().__init__(**kwargs)
            self.shift_in = source.shift_in.numpy()
            self.slope = source.slope.numpy()
            self.shift_out = source.shift_out.numpy()

        def build(self, input_shape):
            self.o_in, self.o_act, self.o_out = self._obs("in"), self._obs("act"), self._obs("out")
            super().build(input_shape)

        def call(self, x):
            h = self._o(self.o_in, x - self.shift_in)
            # The form TFLite fuses into one PRELU: alpha shaped like one sample, batch axis dropped.
            neg_slope = (-self.slope).reshape((1,) * (x.shape.rank - 2) + (-1,))
            h = tf.nn.relu(h) + tf.nn.relu(-h) * neg_slope
            h = self._o(self.o_act, h)
            return self._o(self.o_out, h + self.shift_out)

    class AffineTwin(_Twin):
        """A per-channel affine ``x * a + m`` (LayerScale, a BatchNorm no conv absorbs).

        In float on a 4-D grid it is one DEPTHWISE_CONV_2D 1x1 with bias; in int8, MUL then ADD
        with per-tensor constants (an int8 depthwise conv would carry per-channel scales and
        zero points, 24 bytes a channel, more than the vectors themselves).
        """

        def __init__(self, *, scale, shift, **kwargs):
            super().__init__(**kwargs)
            self.scale = np.asarray(scale, dtype=np.float32)
            self.shift = np.asarray(shift, dtype=np.float32)

        def build(self, input_shape):
            self.o_mul, self.o_add = self._obs("mul"), self._obs("add")
            super().build(input_shape)

        def call(self, x):
            if x.shape.rank == 4 and not self.quantize:
                w = self.scale.reshape(1, 1, -1, 1)
                h = tf.nn.bias_add(tf.nn.depthwise_conv2d(x, w, strides=(1, 1, 1, 1), padding="VALID"), self.shift)
                return self._o(self.o_add, h)
            return self._o(self.o_add, self._o(self.o_mul, x * self.scale) + self.shift)

    class AddTwin(_Twin):
        """An Add of n tensors as n - 1 binary ADDs, each observed (TFLite ADD takes two inputs)."""

        def build(self, input_shape):
            self.obs = [self._obs(f"add{i}") for i in range(len(input_shape) - 1)]
            super().build(input_shape)

        def call(self, xs):
            h = xs[0]
            for o, x in zip(self.obs, xs[1:]):
                h = self._o(o, h + x)
            return h

    class SignTwin(_Twin):
        """BinarySign ``sign(x + b)``: the ADD observed, the +-1 output exact in int8."""

        def __init__(self, *, source, exact: bool = True, **kwargs):
            super().__init__(**kwargs)
            self.bias = source.bias.numpy()
            self.exact = exact

        def build(self, input_shape):
            import larq as lq

            self.sign = lq.quantizers.ApproxSign()
            self.o_add = self._obs("add")
            self.o_sign = RangeObserver(fixed=(-1.0, 1.0), narrow_range=True, name=f"{self.name}_sign") \
                if self.exact else None
            super().build(input_shape)

        def call(self, x):
            return self._o(self.o_sign, self.sign(self._o(self.o_add, x + self.bias)))

    return PReLUTwin, AffineTwin, SignTwin, AddTwin


_TWINS = None


def _twins():
    global _TWINS
    if _TWINS is None:
        _TWINS = _twin_classes()
    return _TWINS


# ---- the graph rebuild ---------------------------------------------------------------------

# Layers whose output keeps its input's int8 scale in TFLite (no range of their own).
SAME_SCALE = ("InputLayer", "Reshape", "Flatten", "Permute", "ZeroPadding2D", "MaxPooling2D", "AveragePooling2D",
              "UpSampling2D", "Cropping2D", "ChannelTile", "ChannelSplit", "WindowPartition", "WindowMerge",
              "TakeToken", "SpaceToDepth", "Dropout", "Activation")
FOLDS_INTO_CONV = ("BatchNormalization",)
CONVS = ("Conv2D", "QuantConv2D", "DepthwiseConv2D", "QuantDepthwiseConv2D", "Dense", "QuantDense")


@dataclass(kw_only=True)
class TwinInfo:
    model: object  # the rebuilt tf.keras.Model
    quantize: bool  # every tensor observed (mode "full")
    mode: str = "full"
    replaced: Dict[str, str] = field(default_factory=dict)  # original layer name -> twin kind
    observed: List[str] = field(default_factory=list)  # tensors given a calibrated range
    attention: List[dict] = field(default_factory=list)  # per attention core: value sets and ranges
    tensors: Dict[str, object] = field(default_factory=dict)  # original layer name -> twin output tensor

    def observers(self):
        return observers(self.model)


def _consumers(model) -> Dict[str, List[str]]:
    """Tensor id -> class names of the layers that consume it."""
    out: Dict[str, List[str]] = {}
    for depth in model._nodes_by_depth:
        for node in model._nodes_by_depth[depth]:
            for tid in node.flat_input_ids:
                out.setdefault(tid, []).append(type(node.layer).__name__)
    return out


MODES = ("float", "attention", "full")


def integer_twin(model, *, mode: str = "full") -> TwinInfo:
    """The model's functional graph with integer twins and range observers (see module doc).

    `mode`: ``"float"`` only the lean rewrites (no observers); ``"attention"`` exact int8
    attention (every range fixed by the math, no calibration); ``"full"`` that plus a calibrated
    observer on every other float tensor (call `calibrate` before converting).
    """
    if mode not in MODES:
        raise ModelError(f"unknown integer mode {mode!r} (choose from {', '.join(MODES)})")
    exact = mode != "float"  # the attention twins and the +-1 signs feeding them
    quantize = mode == "full"
    tf = _tf()
    from edgebvit.models.layers.attention import MultiHeadAttentionCore
    from edgebvit.models.layers.elementwise import LayerScale, RPReLU
    from edgebvit.models.layers.linear import BinarySign
    from edgebvit.models.layers.qd import QDAttention

    if not getattr(model, "_is_graph_network", False):
        raise ModelError(f"model {model.name!r} is subclassed; the integer export needs a functional model")
    prelu_twin, affine_twin, sign_twin, add_twin = _twins()
    info = TwinInfo(model=None, quantize=quantize, mode=mode)
    consumers = _consumers(model)
    new_inputs = [tf.keras.Input(type_spec=t.type_spec, name=t.name.split(":")[0]) for t in model.inputs]
    tensor_dict = {}
    usage = model._tensor_usage_count
    for x, y in zip(model.inputs, new_inputs):
        obs = RangeObserver(name=f"{x.name.split(':')[0]}_range")(y) if quantize else y
        if quantize:
            info.observed.append("input")
        tensor_dict[str(id(x))] = [obs] * usage[str(id(x))]
    for depth in sorted(model._nodes_by_depth.keys(), reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input or any(t not in tensor_dict for t in node.flat_input_ids):
                continue
            args, kwargs = node.map_arguments(tensor_dict)
            layer = node.layer
            kind = type(layer).__name__
            observe = quantize
            if isinstance(layer, RPReLU):
                outputs = prelu_twin(source=layer, quantize=quantize, name=layer.name)(*args, **kwargs)
                info.replaced[layer.name] = "PReLU"
                observe = False
            elif isinstance(layer, LayerScale):
                outputs = affine_twin(scale=layer.scale.numpy(), shift=layer.shift.numpy(), quantize=quantize,
                                      name=layer.name)(*args, **kwargs)
                info.replaced[layer.name] = "affine"
                observe = False
            elif isinstance(layer, tf.keras.layers.BatchNormalization) and _standalone_bn(node, layer):
                scale, shift = _bn_affine(layer)
                outputs = affine_twin(scale=scale, shift=shift, quantize=quantize, name=layer.name)(*args, **kwargs)
                info.replaced[layer.name] = "affine"
                observe = False
            elif isinstance(layer, tf.keras.layers.Add) and len(node.flat_input_ids) > 2 and quantize:
                outputs = add_twin(quantize=quantize, name=layer.name)(*args, **kwargs)
                info.replaced[layer.name] = "adds"
                observe = False
            elif isinstance(layer, BinarySign) and exact:
                outputs = sign_twin(source=layer, quantize=quantize, exact=True, name=layer.name)(*args, **kwargs)
                info.replaced[layer.name] = "sign"
                observe = False
            elif isinstance(layer, tf.keras.Model) and getattr(layer, "_is_graph_network", False):
                inner = integer_twin(layer, mode=mode)
                outputs = inner.model(*args, **kwargs)
                info.replaced.update(inner.replaced)
                info.observed.extend(inner.observed)
                info.attention.extend(inner.attention)
                observe = False
            elif isinstance(layer, (MultiHeadAttentionCore, QDAttention)):
                twin = integer_attention(layer, quantize=exact, name=layer.name)
                outputs = twin(*args, **kwargs)
                info.replaced[layer.name] = "integer attention"
                info.attention.append(_attention_facts(layer, twin))
                observe = False
            else:
                outputs = layer(*args, **kwargs)
                if kind in SAME_SCALE:
                    observe = False
                elif kind in CONVS and all(c in FOLDS_INTO_CONV for c in consumers.get(node.flat_output_ids[0], ["?"])):
                    observe = False  # the BatchNorm after it folds into the conv; observe the BN instead
            if observe:
                flat = tf.nest.flatten(outputs)
                flat = [RangeObserver(name=f"{layer.name}_range{'' if i == 0 else i}")(t)
                        if t.dtype.is_floating else t for i, t in enumerate(flat)]
                info.observed.append(layer.name)
                outputs = tf.nest.pack_sequence_as(outputs, flat)
            for x_id, y in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
                tensor_dict[x_id] = [y] * usage[x_id]
            info.tensors[layer.name] = outputs
    outs = [tensor_dict[str(id(x))].pop() for x in model.outputs]
    info.model = tf.keras.Model(new_inputs, tf.nest.pack_sequence_as(model._nested_outputs, outs),
                                name=f"{model.name}_int8" if quantize else model.name)
    return info


def _standalone_bn(node, layer) -> bool:
    """A BatchNorm over channels whose input does not come from a conv (no conv absorbs it)."""
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    rank = node.input_shapes.rank if hasattr(node.input_shapes, "rank") else len(node.input_shapes)
    if axis not in (-1, rank - 1):
        return False
    parents = node.parent_nodes
    return not (len(parents) == 1 and type(parents[0].layer).__name__ in CONVS)


def _bn_affine(layer) -> Tuple[np.ndarray, np.ndarray]:
    """Inference BatchNorm as ``x * scale + shift``."""
    var = layer.moving_variance.numpy().astype(np.float64)
    mean = layer.moving_mean.numpy().astype(np.float64)
    gamma = layer.gamma.numpy().astype(np.float64) if layer.scale else np.ones_like(var)
    beta = layer.beta.numpy().astype(np.float64) if layer.center else np.zeros_like(var)
    scale = gamma / np.sqrt(var + layer.epsilon)
    return scale.astype(np.float32), (beta - mean * scale).astype(np.float32)


def _attention_facts(core, twin) -> dict:
    lv = twin.levels
    return {
        "layer": core.name,
        "head_dim": int(twin.head_dim),
        "heads": int(twin.num_heads),
        "prob_levels": 0 if lv is None else lv.levels,
        "dead": bool(lv is not None and not np.any(lv.scale)),
        "scores_exact": twin.head_dim <= INT8_LEVELS,
    }


def calibrate(info: TwinInfo, images: np.ndarray, *, batch_size: int = 64) -> Dict[str, Tuple[float, float]]:
    """Run `images` through the twin recording per-tensor ranges, then switch to fake-quant."""
    obs = [o for o in info.observers() if o.calibrating]
    if len(images) == 0:
        raise DataError("calibration needs at least one image")
    for o in info.observers():
        o.active = o.fixed is None  # fixed ranges are not applied while others are measured
    for i in range(0, len(images), batch_size):
        info.model(images[i:i + batch_size], training=False)
    ranges = {o.name: o.finish_calibration() for o in obs}
    for o in info.observers():
        o.active = True
    return ranges
