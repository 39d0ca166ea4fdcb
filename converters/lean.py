"""The lean graph's plan (docs/integer.md): which constant shifts move where, which pooling
branches fuse. Read from the original functional graph before `integer.py` rebuilds it.

A per-channel shift ``T + d`` that a consumer applies to a tensor T is exact to move into T's
producer when T has no other consumer: into a BatchNorm's beta (which LCE folds into the binary
conv), a LayerScale's or LearnableBias's shift, an RPReLU's output shift, or, through an Add whose
output has one consumer, into one of the Add's inputs. A tensor with other consumers can still
move a shift when each of them is an Add that takes the opposite shift on another input.
RPReLU's output shift before a LayerScale moves through it (``LS(h + z) = s h + (s z + m)``). Every move takes one ADD or SUB out of the
flatbuffer; the function is the same up to float rounding (tests check it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from edgebvit.models.layers.elementwise import LayerScale, LearnableBias, RPReLU
from edgebvit.models.layers.linear import BinarySign


MAX_DEPTH = 6  # how far a move may travel through Adds and compensations


@dataclass(kw_only=True)
class PoolFusion:
    """An Add's pooling branches ``LS(AvgPool(ZeroPad(x)))`` over one tensor x."""

    source_id: str  # the id of x in the original graph
    inputs: List[int]  # positions of the branches among the Add's inputs
    branches: List[Tuple[Tuple[int, int], np.ndarray, np.ndarray]]  # (pool size, LS scale, LS shift)


@dataclass(kw_only=True)
class LeanPlan:
    """What the rebuild changes. Vectors are the new values (float32), keyed by layer name."""

    bn_delta: Dict[str, np.ndarray] = field(default_factory=dict)  # added to a BatchNorm's output
    layerscale_shift: Dict[str, np.ndarray] = field(default_factory=dict)
    learnable_bias: Dict[str, np.ndarray] = field(default_factory=dict)  # zeros: the layer is dropped
    rprelu_shift_in: Dict[str, np.ndarray] = field(default_factory=dict)
    rprelu_shift_out: Dict[str, np.ndarray] = field(default_factory=dict)
    sign_bias: Dict[str, np.ndarray] = field(default_factory=dict)
    pools: Dict[str, PoolFusion] = field(default_factory=dict)  # Add layer name -> its fusion

    @property
    def moved_shifts(self) -> int:
        """How many ADD/SUB ops the moves remove."""
        return (sum(not np.any(v) for v in self.learnable_bias.values())
                + sum(not np.any(v) for v in self.rprelu_shift_in.values())
                + sum(not np.any(v) for v in self.rprelu_shift_out.values())
                + sum(not np.any(v) for v in self.sign_bias.values()))


class _Graph:
    """Producers and consumers of a functional model's tensors (ids as Keras keeps them)."""

    def __init__(self, model):
        self.producer: Dict[str, object] = {}
        self.consumers: Dict[str, List[object]] = {}
        self.nodes = []
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.is_input:
                    continue
                self.nodes.append(node)
                for tid in node.flat_output_ids:
                    self.producer[tid] = node
                for tid in node.flat_input_ids:
                    self.consumers.setdefault(tid, []).append(node)
        self.outputs = {str(id(t)) for t in tf.nest.flatten(model.outputs)}

    def sole_consumer(self, tid: str) -> Optional[object]:
        users = self.consumers.get(tid, [])
        return users[0] if len(users) == 1 and tid not in self.outputs else None

    @staticmethod
    def single_call(layer) -> bool:
        return len(layer._inbound_nodes) == 1


def _vec(w) -> np.ndarray:
    return np.asarray(w.numpy() if hasattr(w, "numpy") else w, dtype=np.float64)


def plan(model) -> LeanPlan:
    """The moves and fusions for `model` (see the module doc); the model is not changed."""
    g = _Graph(model)
    p = LeanPlan()
    current: Dict[str, np.ndarray] = {}  # output shift of each absorber layer, as planned so far
    blocked = set()  # RPReLUs whose output shift moved forward: nothing may move into them

    def out_shift(layer) -> Optional[np.ndarray]:
        """The current output shift of an absorber layer, None if `layer` cannot absorb."""
        if not g.single_call(layer) or layer.name in blocked:
            return None
        if layer.name in current:
            return current[layer.name]
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            if not layer.center or _bn_axis(layer) not in (-1, len(layer.input_shape) - 1):
                return None
            v = np.zeros(layer.moving_mean.shape, np.float64)
        elif isinstance(layer, LayerScale):
            v = _vec(layer.shift)
        elif isinstance(layer, LearnableBias):
            v = _vec(layer.bias)
        elif isinstance(layer, RPReLU):
            v = _vec(layer.shift_out)
        else:
            return None
        current[layer.name] = v
        return v

    def absorb(tid: str, d: np.ndarray, mover=None, depth: int = 0) -> bool:
        """Move ``+ d`` that `mover` applies to tensor `tid` into its producer.

        With other consumers the move is still exact when each of them is an Add that can take
        ``- d`` on another of its inputs (``(T + d) + (X - d) = T + X``); all or nothing.
        """
        node = g.producer.get(tid)
        if node is None or tid in g.outputs or depth > MAX_DEPTH:
            return False
        others = [c for c in g.consumers.get(tid, []) if c is not mover]
        if len(others) != len(g.consumers.get(tid, [])) - (mover is not None):
            return False
        saved = dict(current)
        ok = _take(node, d, depth) and all(_compensate(c, tid, -d, depth) for c in others)
        if not ok:
            current.clear()
            current.update(saved)
        return ok

    def _take(node, d, depth) -> bool:
        layer = node.layer
        if isinstance(layer, tf.keras.layers.Add) and g.single_call(layer):
            return any(absorb(t, d, node, depth + 1) for t in node.flat_input_ids)
        v = out_shift(layer)
        if v is None or v.shape != d.shape:
            return False
        current[layer.name] = v + d
        return True

    def _compensate(add_node, tid: str, d, depth) -> bool:
        """``+ d`` on an input of `add_node` other than `tid`."""
        if not isinstance(add_node.layer, tf.keras.layers.Add) or not g.single_call(add_node.layer):
            return False
        if list(add_node.flat_input_ids).count(tid) != 1:
            return False
        return any(absorb(t, d, add_node, depth + 1) for t in add_node.flat_input_ids if t != tid)

    # 1. RPReLU -> LayerScale: the output shift moves through the scale.
    for node in g.nodes:
        layer = node.layer
        if not isinstance(layer, RPReLU) or not g.single_call(layer):
            continue
        user = g.sole_consumer(node.flat_output_ids[0])
        if user is not None and isinstance(user.layer, LayerScale) and g.single_call(user.layer):
            ls = user.layer
            current[ls.name] = _vec(ls.shift) + _vec(ls.scale) * _vec(layer.shift_out)
            p.rprelu_shift_out[layer.name] = np.zeros(layer.shift_out.shape, np.float32)
            blocked.add(layer.name)
    # 2. Input-side shifts into producers: RPReLU's -gamma, LearnableBias, BinarySign's threshold.
    for node in g.nodes:
        layer = node.layer
        if not g.single_call(layer) or len(node.flat_input_ids) != 1:
            continue
        tid = node.flat_input_ids[0]
        if isinstance(layer, RPReLU) and np.any(_vec(layer.shift_in)):
            if absorb(tid, -_vec(layer.shift_in), node):
                p.rprelu_shift_in[layer.name] = np.zeros(layer.shift_in.shape, np.float32)
        elif isinstance(layer, LearnableBias) and layer.name not in current:
            if absorb(tid, _vec(layer.bias), node):
                p.learnable_bias[layer.name] = np.zeros(layer.bias.shape, np.float32)
                blocked.add(layer.name)  # dropped: it cannot take a later move
        elif isinstance(layer, BinarySign) and np.any(_vec(layer.bias)):
            if absorb(tid, _vec(layer.bias), node):
                p.sign_bias[layer.name] = np.zeros(layer.bias.shape, np.float32)
    for name, v in current.items():
        layer = model.get_layer(name)
        v = v.astype(np.float32)
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            if np.any(v):
                p.bn_delta[name] = v
        elif isinstance(layer, LayerScale):
            p.layerscale_shift[name] = v
        elif isinstance(layer, LearnableBias):
            p.learnable_bias.setdefault(name, v)
        elif isinstance(layer, RPReLU):
            p.rprelu_shift_out.setdefault(name, v)
    # 3. Pooling branches of one tensor feeding one Add.
    for node in g.nodes:
        if isinstance(node.layer, tf.keras.layers.Add) and g.single_call(node.layer):
            fusion = _pool_fusion(g, node, p)
            if fusion is not None:
                p.pools[node.layer.name] = fusion
    return p


def _bn_axis(layer) -> Optional[int]:
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    return axis


def _pool_branch(g: _Graph, tid: str):
    """(source id, pool size, LS) when `tid` is LS(AvgPool(ZeroPad(x))) with centred odd
    padding, stride 1 and every intermediate used once; else None."""
    ls_node = g.producer.get(tid)
    if ls_node is None or not isinstance(ls_node.layer, LayerScale) or g.sole_consumer(tid) is None:
        return None
    pool_node = g.producer.get(ls_node.flat_input_ids[0])
    if pool_node is None or not isinstance(pool_node.layer, tf.keras.layers.AveragePooling2D):
        return None
    pool = pool_node.layer
    if tuple(pool.strides) != (1, 1) or pool.padding != "valid" or g.sole_consumer(pool_node.flat_output_ids[0]) is None:
        return None
    pad_node = g.producer.get(pool_node.flat_input_ids[0])
    if pad_node is None or not isinstance(pad_node.layer, tf.keras.layers.ZeroPadding2D):
        return None
    (top, bottom), (left, right) = pad_node.layer.padding
    kh, kw = pool.pool_size
    if not (kh % 2 and kw % 2 and top == bottom == kh // 2 and left == right == kw // 2):
        return None
    if g.sole_consumer(pad_node.flat_output_ids[0]) is None:
        return None
    if not all(g.single_call(n.layer) for n in (ls_node, pool_node, pad_node)):
        return None
    return pad_node.flat_input_ids[0], (int(kh), int(kw)), ls_node.layer


def _pool_fusion(g: _Graph, node, p: LeanPlan) -> Optional[PoolFusion]:
    by_source: Dict[str, PoolFusion] = {}
    for i, tid in enumerate(node.flat_input_ids):
        found = _pool_branch(g, tid)
        if found is None:
            continue
        src, size, ls = found
        shift = p.layerscale_shift.get(ls.name, ls.shift.numpy())
        f = by_source.setdefault(src, PoolFusion(source_id=src, inputs=[], branches=[]))
        f.inputs.append(i)
        f.branches.append((size, ls.scale.numpy(), np.asarray(shift, np.float32)))
    best = max(by_source.values(), key=lambda f: len(f.inputs), default=None)
    return best if best is not None and len(best.inputs) >= 2 else None
