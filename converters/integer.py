"""Integer export: int8 wherever an op is not binary, exact integer attention (docs/integer.md).

LCE's converter quantizes a graph from its fake-quant ops (the QAT route of TFLite): every
tensor that should be int8 must carry ``FakeQuantWithMinMaxVars`` with its range. This module
builds that graph from a trained model without changing the model:

1. `integer_twin` rebuilds the functional graph node by node (`graph.rebuild_graph`, as
   `rewrites.py` does) with the layers of ``converters/int8_layers.py``, and
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

Mode ``"float"`` builds the same lean graph without observers (the tests use it to prove the
rewrites keep the model's function); ``"attention"`` observes only the attention path, with
fixed ranges; ``"full"`` observes everything.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf

from edgebvit.converters import lean
from edgebvit.converters.graph import rebuild_graph
from edgebvit.converters.int8_layers import (INT8_LEVELS, AddTwin, AffineTwin, PoolBranchesTwin, PReLUTwin,
                                              RangeObserver, ShiftTwin, SignTwin, integer_attention, observers,
                                              shifted_batch_norm)
from edgebvit.errors import DataError, ModelError
from edgebvit.models.layers.attention import MultiHeadAttentionCore
from edgebvit.models.layers.elementwise import LayerScale, LearnableBias, RPReLU
from edgebvit.models.layers.linear import BinarySign
from edgebvit.models.layers.qd import QDAttention

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
    mode: str = "full"
    replaced: Dict[str, str] = field(default_factory=dict)  # original layer name -> twin kind
    observed: List[str] = field(default_factory=list)  # tensors given a calibrated range
    attention: List[dict] = field(default_factory=list)  # per attention core: value sets and ranges
    tensors: Dict[str, object] = field(default_factory=dict)  # original layer name -> twin output tensor
    by_id: Dict[str, object] = field(default_factory=dict)  # original tensor id -> twin tensor
    moved_shifts: int = 0  # ADD/SUB ops the lean graph moved into neighbouring biases
    fused_pools: int = 0  # pooling-branch groups written as depthwise convs

    @property
    def quantize(self) -> bool:
        """Every float tensor observed (mode "full")."""
        return self.mode == "full"

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
    if not getattr(model, "_is_graph_network", False):
        raise ModelError(f"model {model.name!r} is subclassed; the integer export needs a functional model")
    quantize = mode == "full"  # observe every float tensor, not only the attention path
    info = TwinInfo(model=None, mode=mode)
    consumers = _consumers(model)
    plan = lean.plan(model)
    info.moved_shifts, info.fused_pools = plan.moved_shifts, len(plan.pools)

    def wrap_input(old, new):
        if quantize:
            info.observed.append("input")
            new = RangeObserver(name=f"{(old.name or old.node.layer.name).split(':')[0]}_range")(new)
        info.by_id[str(id(old))] = new
        return new

    def visit(node, args, kwargs):
        outputs = _visit(node, args, kwargs)
        for tid, t in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
            info.by_id[tid] = t
        return outputs

    def _visit(node, args, kwargs):
        layer = node.layer
        if layer.name in plan.bn_delta:  # a copy with the moved shifts in its beta, treated as the original
            layer = shifted_batch_norm(layer, plan.bn_delta[layer.name])
            info.replaced[node.layer.name] = "shifted BatchNorm"
        outputs = _twin_outputs(node, layer, args, kwargs, mode, info, plan)
        if outputs is None:  # the layer as it is, observed unless its output needs no range
            outputs = layer(*args, **kwargs)
            kind = type(layer).__name__
            folds = kind in CONVS and all(c in FOLDS_INTO_CONV for c in consumers.get(node.flat_output_ids[0], ["?"]))
            if quantize and kind not in SAME_SCALE and not folds:  # a BN that folds is observed instead
                flat = [RangeObserver(name=f"{layer.name}_range{'' if i == 0 else i}")(t)
                        if t.dtype.is_floating else t for i, t in enumerate(tf.nest.flatten(outputs))]
                info.observed.append(layer.name)
                outputs = tf.nest.pack_sequence_as(outputs, flat)
        info.tensors[layer.name] = outputs
        return outputs

    info.model = rebuild_graph(model, visit, wrap_input=wrap_input,
                               name=f"{model.name}_int8" if quantize else model.name)
    return info


def _twin_outputs(node, layer, args, kwargs, mode: str, info: TwinInfo, plan: lean.LeanPlan):
    """The twin's outputs for a layer edgebvit knows how to rewrite, else None."""
    quantize = mode == "full"
    name = layer.name
    if isinstance(layer, RPReLU):
        twin = PReLUTwin(source=layer, shift_in=plan.rprelu_shift_in.get(name), shift_out=plan.rprelu_shift_out.get(name),
                         quantize=quantize, name=name)
        kind, outputs = "PReLU", twin(*args, **kwargs)
    elif isinstance(layer, LayerScale):
        twin = AffineTwin(scale=layer.scale.numpy(), shift=plan.layerscale_shift.get(name, layer.shift.numpy()),
                          quantize=quantize, name=name)
        kind, outputs = "affine", twin(*args, **kwargs)
    elif isinstance(layer, tf.keras.layers.BatchNormalization) and _standalone_bn(node, layer):
        scale, shift = _bn_affine(layer)
        kind, outputs = "affine", AffineTwin(scale=scale, shift=shift, quantize=quantize, name=name)(*args, **kwargs)
    elif isinstance(layer, LearnableBias) and name in plan.learnable_bias:
        bias = plan.learnable_bias[name]
        if not np.any(bias):  # moved into its producer: no op at all
            info.replaced[name] = "shift moved"
            return args[0]
        kind, outputs = "shift", ShiftTwin(bias=bias, quantize=quantize, name=name)(*args, **kwargs)
    elif isinstance(layer, tf.keras.layers.Add) and name in plan.pools:
        fusion = plan.pools[name]
        pooled = PoolBranchesTwin(branches=fusion.branches, quantize=quantize, name=f"{name}_pools")(
            info.by_id[fusion.source_id])
        terms = [t for i, t in enumerate(args[0]) if i not in fusion.inputs] + [pooled]
        kind = "pool branches"
        outputs = AddTwin(quantize=quantize, name=name)(terms) if len(terms) > 1 else terms[0]
    elif isinstance(layer, tf.keras.layers.Add) and len(node.flat_input_ids) > 2 and quantize:
        kind, outputs = "adds", AddTwin(quantize=quantize, name=name)(*args, **kwargs)
    elif isinstance(layer, BinarySign):
        twin = SignTwin(source=layer, bias=plan.sign_bias.get(name), observe_sign=mode != "float",
                        quantize=quantize, name=name)
        kind, outputs = "sign", twin(*args, **kwargs)
    elif isinstance(layer, tf.keras.Model) and getattr(layer, "_is_graph_network", False):
        inner = integer_twin(layer, mode=mode)
        info.replaced.update(inner.replaced)
        info.observed.extend(inner.observed)
        info.attention.extend(inner.attention)
        info.moved_shifts += inner.moved_shifts
        info.fused_pools += inner.fused_pools
        return inner.model(*args, **kwargs)
    elif isinstance(layer, (MultiHeadAttentionCore, QDAttention)):
        twin = integer_attention(layer, quantize=mode != "float", calibrated=mode == "full", name=layer.name)
        kind, outputs = "integer attention", twin(*args, **kwargs)
        info.attention.append(_attention_facts(layer, twin))
    else:
        return None
    info.replaced[layer.name] = kind
    return outputs


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


def integer_model(model, mode: str, *, calibration=None):
    """What export converts for `mode` ("auto", "none", "attention", "full") and what its report says.

    `calibration` = (path, sha256, images) for "full". A subclassed model or one with nothing to
    rewrite is converted as it is in "attention" mode (the report says why); "full" refuses a
    subclassed model.
    """
    if mode == "none":
        return model, {"mode": "none"}
    if mode == "auto":  # attention where the model has an integer form, else the float remainder
        try:
            twin, report = integer_model(model, "attention")
        except ModelError as e:
            return model, {"mode": "none", "requested": "auto", "note": f"no integer form: {e}"}
        return twin, {**report, "requested": "auto"}
    if not getattr(model, "_is_graph_network", False):
        if mode == "full":
            raise ModelError(f"model {model.name!r} is subclassed; --integer full needs a functional model "
                             "(or export with --integer none)")
        return model, {"mode": "none", "requested": mode,
                       "note": "subclassed model: exported as is (the integer rewrite needs a functional model)"}
    info = integer_twin(model, mode=mode)
    if not info.replaced and mode == "attention":
        return model, {"mode": "attention", "replaced": {}, "attention": [], "dead_attention": [],
                       "note": "nothing to rewrite (no attention core or element-wise layer edgebvit knows)"}
    report = {"mode": mode, "replaced": dict(Counter(info.replaced.values())), "attention": info.attention,
              "dead_attention": [a["layer"] for a in info.attention if a["dead"]],
              "lean": {"moved_shifts": info.moved_shifts, "fused_pool_groups": info.fused_pools}}
    if mode == "full":
        path, sha256, images = calibration
        ranges = calibrate(info, images)
        report["calibration"] = {"path": str(path), "sha256": sha256, "images": int(len(images)),
                                 "calibrated_tensors": len(ranges)}
    return info.model, report
