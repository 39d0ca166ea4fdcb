"""The layers of the integer graph (docs/integer.md): range observers, exact integer attention
and the lean element-wise twins. `converters/integer.py` puts them into a model's graph.

Export-only: none of them is ever saved in a run directory; each holds the trained values it
replaces as constants, so building one never changes the model it came from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import larq as lq
import numpy as np
import tensorflow as tf

from edgebvit.errors import DataError, ModelError
from edgebvit.models.layers.attention import MultiHeadAttentionCore
from edgebvit.models.layers.qd import QDAttention, QDLsq, QDThermometer

INT8_LEVELS = 127  # symmetric narrow range: -127..127, scale 1 represents integers exactly


# ---- observers -----------------------------------------------------------------------------

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



def observers(model) -> list:
    """The observers of a model that were called (a twin's unused branch has no range and no op)."""
    return [l for l in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(l, RangeObserver) and l.built]


def exact_symmetric(bound: float) -> Tuple[float, float]:
    """The int8 range for values in [-bound, bound]: -127..127 (scale 1, every integer exact)
    when bound <= 127, else [-bound, bound] (scale bound / 127). Use with narrow_range."""
    b = max(float(INT8_LEVELS), float(bound))
    return (-b, b)


# ---- twins -----------------------------------------------------------------------------------

class _Twin(tf.keras.layers.Layer):
    """A layer of the integer graph: `quantize` decides whether its observers exist."""

    def __init__(self, *, quantize: bool, **kwargs):
        super().__init__(**kwargs)
        self.quantize = quantize

    def _obs(self, tag, fixed=None, narrow=False) -> Optional["RangeObserver"]:
        return RangeObserver(fixed=fixed, narrow_range=narrow, name=f"{self.name}_{tag}") if self.quantize else None

    @staticmethod
    def _o(observer, x):
        return observer(x) if observer is not None else x


class PReLUTwin(_Twin):
    """RPReLU ``PReLU(x - gamma) + zeta`` as SUB, PRELU, ADD (TFLite fuses Keras's PReLU form).

    `shift_in` / `shift_out` override the source's (the lean graph moves them into neighbouring
    biases); a shift that is all zeros emits no op.
    """

    def __init__(self, *, source, shift_in=None, shift_out=None, **kwargs):
        super().__init__(**kwargs)
        self.shift_in = source.shift_in.numpy() if shift_in is None else np.asarray(shift_in, np.float32)
        self.slope = source.slope.numpy()
        self.shift_out = source.shift_out.numpy() if shift_out is None else np.asarray(shift_out, np.float32)

    def build(self, input_shape):
        self.o_in = self._obs("in") if np.any(self.shift_in) else None
        self.o_act = self._obs("act")
        self.o_out = self._obs("out") if np.any(self.shift_out) else None
        super().build(input_shape)

    def call(self, x):
        h = self._o(self.o_in, x - self.shift_in) if np.any(self.shift_in) else x
        # The form TFLite fuses into one PRELU: alpha shaped like one sample, batch axis dropped.
        neg_slope = (-self.slope).reshape((1,) * (x.shape.rank - 2) + (-1,))
        h = tf.nn.relu(h) + tf.nn.relu(-h) * neg_slope
        h = self._o(self.o_act, h)
        return self._o(self.o_out, h + self.shift_out) if np.any(self.shift_out) else h


class ShiftTwin(_Twin):
    """A per-channel shift ``x + b`` (LearnableBias, with what the lean graph moved into it)."""

    def __init__(self, *, bias, **kwargs):
        super().__init__(**kwargs)
        self.bias = np.asarray(bias, dtype=np.float32)

    def build(self, input_shape):
        self.o_add = self._obs("add")
        super().build(input_shape)

    def call(self, x):
        return self._o(self.o_add, x + self.bias)


def shifted_batch_norm(source, delta) -> tf.keras.layers.BatchNormalization:
    """A copy of an inference BatchNorm with ``delta`` added to its output (beta + delta): still a
    Keras BatchNorm, so LCE folds it into the binary conv before it as it folded the original."""
    bn = tf.keras.layers.BatchNormalization.from_config(source.get_config())
    bn.build(source.input_shape)
    weights = {w.name.split("/")[-1].split(":")[0]: w for w in source.weights}
    values = []
    for w in bn.weights:
        key = w.name.split("/")[-1].split(":")[0]
        v = weights[key].numpy()
        values.append(v + np.asarray(delta, v.dtype) if key == "beta" else v)
    bn.set_weights(values)
    return bn


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
    """BinarySign ``sign(x + b)``: the ADD observed, the +-1 output exact in int8.

    `bias` overrides the source's (zeros when the lean graph moved it into the producer: no
    ADD); `observe_sign` puts the fixed +-1 range on the output (the int8 attention it feeds).
    """

    def __init__(self, *, source, bias=None, observe_sign: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.bias = source.bias.numpy() if bias is None else np.asarray(bias, np.float32)
        self.observe_sign = observe_sign

    def build(self, input_shape):
        self.sign = lq.quantizers.ApproxSign()
        self.o_add = self._obs("add") if np.any(self.bias) else None
        # Always observed, even outside mode "full": the attention twin it feeds is int8.
        self.o_sign = (RangeObserver(fixed=(-1.0, 1.0), narrow_range=True, name=f"{self.name}_sign")
                       if self.observe_sign else None)
        super().build(input_shape)

    def call(self, x):
        h = self._o(self.o_add, x + self.bias) if np.any(self.bias) else x
        return self._o(self.o_sign, self.sign(h))


class PoolBranchesTwin(_Twin):
    """BinaryViT's pooling branches ``sum_i LS_i(AvgPool_i(x))`` (zero-padded, stride 1) as
    depthwise convolutions: one for the 1xk pools, one for the kx1 pools, one for any other
    shape, each kernel the sum of its branches' 1/k windows times their LayerScale, centred
    (SAME zero padding: PyTorch's count_include_pad borders). Up to 4 PAD, 4 AVERAGE_POOL_2D and
    4 DEPTHWISE_CONV_2D become 2 DEPTHWISE_CONV_2D. `branches`: ((kh, kw), scale, shift) each.
    """

    def __init__(self, *, branches, **kwargs):
        super().__init__(**kwargs)
        groups = {}
        for (kh, kw), scale, _ in branches:
            groups.setdefault("h" if kh == 1 else "v" if kw == 1 else "2d", []).append(((kh, kw), scale))
        self.kernels = []
        for members in groups.values():
            kh_max, kw_max = max(k[0] for k, _ in members), max(k[1] for k, _ in members)
            c = len(members[0][1])
            w = np.zeros((kh_max, kw_max, c, 1), np.float64)
            for (kh, kw), scale in members:
                oh, ow = (kh_max - kh) // 2, (kw_max - kw) // 2
                w[oh:oh + kh, ow:ow + kw, :, 0] += np.asarray(scale, np.float64) / (kh * kw)
            self.kernels.append(w.astype(np.float32))
        self.bias = np.sum([np.asarray(b, np.float64) for _, _, b in branches], axis=0).astype(np.float32)

    def build(self, input_shape):
        self.obs = [self._obs(f"dw{i}") for i in range(len(self.kernels))]
        self.obs_sum = [self._obs(f"sum{i}") for i in range(len(self.kernels) - 1)]
        super().build(input_shape)

    def call(self, x):
        out = None
        for i, w in enumerate(self.kernels):
            h = tf.nn.depthwise_conv2d(x, w, strides=(1, 1, 1, 1), padding="SAME")
            if i == 0:
                h = tf.nn.bias_add(h, self.bias)
            h = self._o(self.obs[i], h)
            out = h if out is None else self._o(self.obs_sum[i - 1], out + h)
        return out


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
        if core.qd_form == "gsb":
            raise ModelError(f"{core.name}: GSB attention has no fixed integer thresholds (its masks "
                             "follow each row's maximum); export it with --integer none")
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


class IntegerAttention(_Twin):
    """Attention over +-1 Q, K, V with both matmuls in int8 and exact matmul inputs.

    ``S = Q K^T`` are integers in [-d, d] (int8 with scale 1 when d <= 127). The scaling, the
    softmax and the probability quantizer's comparisons run in float: an int8 softmax (output
    scale 1/256) moves probabilities by up to 1/512 and flips binarized ones that sit near a
    threshold, which costs a trained model up to 13 points of top-1 agreement (docs/integer.md).
    The quantizer's integer counts ``K_c`` in [0, m] are exact in int8, and
    ``ctx = scale_h * (K_c V)`` with ``K_c V`` integers in [-m N, m N].

    The graph is written for the converter's unrolled matmuls: the heads are channel slices of
    (B, T, C) tokens (no transposes around Q and K), V is transposed once so that every per-head
    P.V is a FULLY_CONNECTED with V as its weights, and the heads' contexts are concatenated
    back on the channel axis. `source` is the original core; `layout` is ``"grid"``
    (B, H, W, C) or ``"rows"`` (B, R, T, C), whose R rows are separate attention problems.
    """

    def __init__(self, *, num_heads: int, head_dim: int, score_scale, levels: Optional[ProbLevels],
                 mask_diagonal: bool, layout: str, calibrated: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.calibrated = calibrated  # mode "full": the float tensors around the matmuls get ranges too
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.score_scale = np.asarray(score_scale, dtype=np.float32).reshape(-1)  # () or (heads,)
        self.levels = levels
        self.mask_diagonal = mask_diagonal
        self.layout = layout

    def build(self, input_shape):
        k_shape = input_shape[1]
        nk = int(k_shape[1] * k_shape[2]) if self.layout == "grid" else int(k_shape[2])
        d = self.head_dim
        obs = self._obs
        h = self.num_heads
        self.obs_scores = [obs(f"scores{i}", exact_symmetric(d), True) for i in range(h)]
        self.obs_stacked = obs("scores", exact_symmetric(d), True) if h > 1 else None
        m = self.levels.levels if self.levels is not None else 1
        bound = m * nk if self.levels is not None else nk
        if self.levels is not None:
            self.obs_counts = obs("counts", (0.0, float(m)))
        else:  # a float softmax feeds P.V: its probabilities are not exact in int8
            self.obs_counts = obs("probs", (0.0, 1.0))
        # scale_h * (K_c V) is not exact on one per-tensor int8 grid (per-head scales): the
        # integer context is dequantized and scaled in float, or calibrated in mode "full".
        self.obs_output = RangeObserver(name=f"{self.name}_output") if self.quantize and self.calibrated else None
        self.obs_context = [obs(f"context{i}", exact_symmetric(bound), True) for i in range(h)]
        self.obs_concat = obs("context", exact_symmetric(bound), True) if h > 1 else None
        super().build(input_shape)

    def _tokens(self, x):
        """(B, H, W, C) -> (B, H W, C); (B, R, T, C) -> (B R, T, C)."""
        if self.layout == "grid":
            return tf.reshape(x, (-1, x.shape[1] * x.shape[2], x.shape[3]))
        return tf.reshape(x, (-1, x.shape[2], x.shape[3]))

    def _split(self, x, axis):
        return tf.split(x, self.num_heads, axis=axis) if self.num_heads > 1 else [x]

    def _probabilities(self, s):
        """Float scores (G, heads, T, N) -> the quantizer's counts (or float probabilities).

        ``P > t`` is decided as ``exp(s) > t * sum(exp(s))``, without a SOFTMAX op: the
        converter gives a SOFTMAX output TFLite's fixed int8 range (1/256 steps) and then runs
        the comparison in int8, which is the rounding this twin exists to avoid.
        """
        scale = self.score_scale.reshape(1, -1, 1, 1) if self.score_scale.size > 1 else float(self.score_scale[0])
        s = s * scale
        if self.head_dim * float(np.max(np.abs(self.score_scale))) > 60.0:  # exp could overflow
            s = s - tf.reduce_max(s, axis=-1, keepdims=True)
        if self.mask_diagonal and s.shape[-1] == s.shape[-2]:
            s = s - tf.eye(s.shape[-1], dtype=s.dtype) * 1e9  # as the model masks self-similarity
        e = tf.exp(s)
        total = tf.reduce_sum(e, axis=-1, keepdims=True)
        if self.levels is None:
            return e / total
        counts = None
        for kk in range(self.levels.levels):
            t = np.minimum(self.levels.thresholds[:, kk], 2.0).astype(np.float32).reshape(1, -1, 1, 1)
            bar = total * t
            hit = tf.cast(e > bar if self.levels.strict else e >= bar, e.dtype)
            counts = hit if counts is None else counts + hit
        return counts

    def call(self, inputs):
        q, k, v = inputs
        qt, kt, vt = self._tokens(q), self._tokens(k), self._tokens(v)  # (G, T, C)
        heads = range(self.num_heads)
        qs, ks = self._split(qt, -1), self._split(kt, -1)
        vs = self._split(tf.transpose(vt, (0, 2, 1)), 1)  # (G, d, N) each: FULLY_CONNECTED weights
        scores = [self._o(self.obs_scores[i], tf.matmul(qs[i], ks[i], transpose_b=True)) for i in heads]
        s = self._o(self.obs_stacked, tf.stack(scores, axis=1)) if self.num_heads > 1 else scores[0][:, None]
        p = self._o(self.obs_counts, self._probabilities(s))
        ps = tf.unstack(p, axis=1) if self.num_heads > 1 else [p[:, 0]]
        ctx = [self._o(self.obs_context[i], tf.matmul(ps[i], vs[i], transpose_b=True)) for i in heads]
        ctx = self._o(self.obs_concat, tf.concat(ctx, axis=-1)) if self.num_heads > 1 else ctx[0]
        if self.levels is not None:  # the per-head scale, one value per channel of its head
            a = np.repeat(self.levels.scale.astype(np.float32), self.head_dim)
            ctx = self._o(self.obs_output, ctx * a)
        return tf.reshape(ctx, (-1, *q.shape[1:]))

    def compute_output_shape(self, input_shape):
        return input_shape[0]



def integer_attention(core, *, quantize: bool, name: str, calibrated: bool = False):
    """The `IntegerAttention` twin of a MultiHeadAttentionCore or QDAttention."""
    if isinstance(core, MultiHeadAttentionCore):
        scale = core.temperature.numpy() if core.lsa else 1.0 / math.sqrt(core.head_dim)
        return IntegerAttention(num_heads=core.num_heads, head_dim=core.head_dim, score_scale=scale,
                          levels=prob_levels(core), mask_diagonal=core.lsa, layout="grid", quantize=quantize,
                          calibrated=calibrated, name=name)
    return IntegerAttention(num_heads=core.num_heads, head_dim=core.head_dim, score_scale=1.0 / math.sqrt(core.head_dim),
                      levels=prob_levels(core), mask_diagonal=False, layout="rows", quantize=quantize,
                      calibrated=calibrated, name=name)
