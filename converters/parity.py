"""Does the flatbuffer compute what the Keras model computes? Held-out images through both.

``lce.testing.Interpreter`` has no way to resize its input (its wrapper exposes only ``predict``,
which feeds one sample at a time), so samples run one by one; the flatbuffer is the exported one,
never a re-converted batch variant, because parity must be about the artifact users ship.

When parity fails, ``locate_divergence`` bisects the layers (in the model's topological order):
it converts Keras sub-models that end at a candidate layer and compares the interpreter with
Keras on the failing samples, so the report can name the first layer that diverges.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np


@dataclass(frozen=True, kw_only=True)
class ParityResult:
    samples: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    keras_top1: Optional[float] = None  # accuracy against labels, when labels are given
    lce_top1: Optional[float] = None
    synthetic_inputs: bool = False  # random inputs: no held-out images were available
    indirect_bgemm: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class Divergence:
    layer: str
    layer_class: str
    relative_diff: float  # max |lce - keras| / max |keras| at that layer's output
    previous_layer: Optional[str]  # the last layer that still agreed (None: the input)
    probes: int  # sub-models converted to find it
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def make_interpreter(flatbuffer: bytes, *, indirect_bgemm: Optional[bool] = None, num_threads: int = 1):
    """An LCE interpreter; grouped LceBconv2d needs the indirect BGEMM kernel, chosen from the file."""
    import larq_compute_engine as lce

    if indirect_bgemm is None:
        from edgebvit.converters.inspect import inspect_flatbuffer

        indirect_bgemm = inspect_flatbuffer(flatbuffer).has_grouped_bconv
    return lce.testing.Interpreter(flatbuffer, num_threads=num_threads, use_indirect_bgemm=bool(indirect_bgemm)), bool(indirect_bgemm)


def run_interpreter(interpreter, x: np.ndarray) -> np.ndarray:
    """Predict with int8 input/output handled by the file's own scales and zero points."""
    in_type = np.dtype(interpreter.input_types[0])
    if in_type in (np.int8, np.uint8):
        scale, zero = interpreter.input_scales[0], interpreter.input_zero_points[0]
        info = np.iinfo(in_type)
        x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(in_type)
    y = np.asarray(interpreter.predict(x))
    out_type = np.dtype(interpreter.output_types[0])
    if out_type in (np.int8, np.uint8):
        y = (y.astype(np.float32) - interpreter.output_zero_points[0]) * interpreter.output_scales[0]
    return y.astype(np.float32)


def check_parity(
    model,
    flatbuffer: bytes,
    x: np.ndarray,
    y: Optional[np.ndarray] = None,
    *,
    synthetic: bool = False,
    indirect_bgemm: Optional[bool] = None,
    batch_size: int = 64,
) -> ParityResult:
    """Top-1 agreement and logit differences between Keras and the LCE interpreter on `x`."""
    start = time.perf_counter()
    interp, indirect = make_interpreter(flatbuffer, indirect_bgemm=indirect_bgemm)
    keras_out = _flat(model.predict(x, batch_size=batch_size, verbose=0))
    lce_out = _flat(run_interpreter(interp, x))
    if keras_out.shape != lce_out.shape:
        from edgebvit.errors import ParityError

        raise ParityError(f"output shapes differ: Keras {keras_out.shape} vs flatbuffer {lce_out.shape}")
    diff = np.abs(keras_out - lce_out)
    k_top, l_top = keras_out.argmax(-1), lce_out.argmax(-1)
    keras_acc = lce_acc = None
    if y is not None and len(y) == len(x):
        yy = np.asarray(y).reshape(-1)
        keras_acc, lce_acc = float((k_top == yy).mean()), float((l_top == yy).mean())
    return ParityResult(
        samples=int(len(x)),
        top1_agreement=float((k_top == l_top).mean()),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        keras_top1=keras_acc,
        lce_top1=lce_acc,
        synthetic_inputs=synthetic,
        indirect_bgemm=indirect,
        seconds=time.perf_counter() - start,
    )


def _flat(a) -> np.ndarray:
    if isinstance(a, (list, tuple)):
        a = a[0]  # the first output is the classifier's
    a = np.asarray(a, dtype=np.float32)
    return a.reshape(len(a), -1)


def disagreeing_samples(model, flatbuffer: bytes, x: np.ndarray, *, limit: int = 16) -> np.ndarray:
    """The samples whose top-1 differs (the most telling ones to bisect on), else the first few."""
    interp, _ = make_interpreter(flatbuffer)
    k = _flat(model.predict(x, verbose=0)).argmax(-1)
    l = _flat(run_interpreter(interp, x)).argmax(-1)
    bad = np.flatnonzero(k != l)
    idx = bad[:limit] if len(bad) else np.arange(min(limit, len(x)))
    return x[idx]


def _node_in(model, layer):
    """The layer's one call node inside `model` (layers are shared with the pre-rewrite model)."""
    nodes = [
        node for i, node in enumerate(layer._inbound_nodes)
        if f"{layer.name}_ib-{i}" in getattr(model, "_network_nodes", ())
    ]
    return nodes[0] if len(nodes) == 1 else None


def _candidates(model) -> List:
    """(layer, output tensor) pairs in topological order: the cut points to bisect over."""
    import tensorflow as tf

    out = []
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.InputLayer):
            continue
        node = _node_in(model, layer)
        if node is None:
            continue  # called several times in this model: no single cut point
        t = node.outputs
        if isinstance(t, (list, tuple, dict)) or t.dtype != tf.float32:
            continue
        out.append((layer, t))
    return out


def layer_divergence(model, output, x: np.ndarray, convert: Callable[[object], bytes]) -> float:
    """Relative max difference between Keras and the converted sub-model ending at `output`."""
    import tensorflow as tf

    sub = tf.keras.Model(model.inputs, output)
    fb = convert(sub)
    interp, _ = make_interpreter(fb)
    a = np.asarray(sub.predict(x, verbose=0), dtype=np.float32).reshape(len(x), -1)
    b = run_interpreter(interp, x).reshape(len(x), -1)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-6))


def locate_divergence(
    model,
    x: np.ndarray,
    convert: Callable[[object], bytes],
    *,
    tolerance: float = 1e-3,
    max_probes: int = 12,
) -> Optional[Divergence]:
    """Bisect the layers for the first whose converted output differs from Keras by > tolerance.

    Assumes divergence persists downstream (true for a chain; in a branching graph it names a
    layer whose output diverges while the layer before it in topological order does not).
    Returns None when even the last layer agrees (the final output differs only within tolerance).
    """
    layers = _candidates(model)
    if not layers:
        return None
    cache = {}
    probes = 0

    def score(i: int) -> float:
        nonlocal probes
        if i not in cache:
            probes += 1
            try:
                cache[i] = layer_divergence(model, layers[i][1], x, convert)
            except Exception:
                cache[i] = float("nan")  # this cut does not convert: treat as unknown
        return cache[i]

    def bad(i: int) -> bool:
        s = score(i)
        return bool(s > tolerance) if s == s else False

    hi = len(layers) - 1
    if not bad(hi):
        return None
    lo = -1  # the input always agrees with itself
    while hi - lo > 1 and probes < max_probes:
        mid = (lo + hi) // 2
        if bad(mid):
            hi = mid
        else:
            lo = mid
    layer = layers[hi][0]
    note = _tie_note(model, layer, x)
    if hi - lo > 1:
        note = (note + "; " if note else "") + f"search stopped after {probes} probes, the divergence is at or before this layer"
    return Divergence(
        layer=layer.name,
        layer_class=type(layer).__name__,
        relative_diff=cache[hi],
        previous_layer=layers[lo][0].name if lo >= 0 else None,
        probes=probes,
        note=note,
    )


def _tie_note(model, layer, x: np.ndarray) -> str:
    """Binarized inputs within float rounding of 0: Keras and LCE may break the tie differently."""
    import tensorflow as tf

    if getattr(layer, "input_quantizer", None) is None:
        return ""
    try:
        node = _node_in(model, layer)
        t = node.input_tensors if node is not None else None
        if t is None or isinstance(t, (list, tuple)):
            return ""
        v = np.asarray(tf.keras.Model(model.inputs, t).predict(x, verbose=0))
    except Exception:
        return ""
    scale = float(np.abs(v).max()) or 1.0
    near = float((np.abs(v) <= 1e-5 * scale).mean())
    if near > 0:
        return (
            f"{near:.1%} of its binarized inputs are within float rounding of 0: sign ties that Keras's float "
            "arithmetic and LCE's exact integer arithmetic break differently"
        )
    return ""
