"""Does the flatbuffer compute what the Keras model computes? Held-out images through both.

``lce.testing.Interpreter`` has no way to resize its input (its wrapper exposes only ``predict``,
which feeds one sample at a time), so samples run one by one; the flatbuffer is the exported one,
never a re-converted batch variant, because parity must be about the artifact users ship.

What the gate counts (``ParityResult.verdict``):

- *Ties.* Untrained or weakly trained networks give near-tied logits, so float rounding alone
  flips top-1 on samples where Keras's top-1 margin (top-1 minus top-2 logit) is tiny. A top-1
  disagreement on a sample whose Keras margin is at most ``tie_tolerance`` is a *tie*: reported,
  not failed; only the other disagreements count. The tolerance is the larger of 1e-3 of the
  logit magnitude (max |Keras logit|) and 4x the median per-sample max logit error, but the
  second term applies only while it stays within 5% of the magnitude: errors that are large on
  the typical sample are a real divergence, not rounding, and then only the 1e-3 floor excuses.
- *Degenerate outputs.* When every sample lands in one Keras class, or the logits barely move
  across samples (an untrained net, random inputs into a trained one), or there is one logit,
  top-1 agreement is trivially 100% and says nothing. The result is flagged ``degenerate`` and
  judged by the relative logit error (max |diff| / max |Keras logit|) instead.
- *Few samples.* Fewer than ``MIN_SAMPLES`` compared samples gives a warning.

When parity fails, ``locate_divergence`` bisects the layers (in the model's topological order):
it converts Keras sub-models that end at a candidate layer and compares the interpreter with
Keras on the failing samples, so the report can name the first layer that diverges.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np

MIN_SAMPLES = 50  # below this, the gate warns that it says little
TIE_FLOOR = 1e-3  # a margin below this fraction of the logit magnitude is always a tie
TIE_NOISE = 4.0  # ... or below this multiple of the median per-sample logit error
TIE_CAP = 0.05  # ... while that multiple stays below this fraction of the logit magnitude
CONSTANT_LOGITS = 1e-3  # logits whose spread across samples is below this fraction: degenerate
MAX_RELATIVE_ERROR = 0.01  # the degenerate-case gate: max |diff| / max |Keras logit|
PROGRESS_EVERY_S = 10.0  # a progress line at most this often, only for long runs


@dataclass(frozen=True, kw_only=True)
class ParityResult:
    samples: int
    top1_agreement: float  # raw: the fraction of samples whose top-1 is the same
    max_abs_diff: float
    mean_abs_diff: float
    keras_top1: Optional[float] = None  # accuracy against labels, when labels are given
    lce_top1: Optional[float] = None
    synthetic_inputs: bool = False  # random inputs: no held-out images were available
    indirect_bgemm: bool = False
    seconds: float = 0.0
    disagreements: int = 0  # samples whose top-1 differs
    ties: int = 0  # ... of which the Keras margin was within tie_tolerance: not counted
    tie_tolerance: float = 0.0
    agreement_excluding_ties: float = 1.0  # what the gate compares with --min-agreement
    keras_classes: int = 0  # distinct Keras top-1 classes over the samples
    degenerate: bool = False
    degenerate_reason: str = ""
    relative_error: float = 0.0  # max |diff| / max |Keras logit|
    warnings: Tuple[str, ...] = ()
    # Indices of the disagreeing samples, real ones first (for the divergence search; not reported).
    bad_indices: Tuple[int, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("bad_indices")
        d["warnings"] = list(self.warnings)
        return d

    def verdict(self, min_agreement: float, max_relative_error: float = MAX_RELATIVE_ERROR) -> Optional[str]:
        """None when parity passes, else the one-line reason it failed."""
        if self.degenerate:
            if self.relative_error > max_relative_error:
                return (f"outputs are degenerate ({self.degenerate_reason}) and the relative logit error "
                        f"{self.relative_error:.3g} exceeds {max_relative_error:.3g}")
            return None
        if self.agreement_excluding_ties < min_agreement:
            real = self.disagreements - self.ties
            return (f"top-1 agreement {self.agreement_excluding_ties:.2%} < {min_agreement:.2%} "
                    f"({real} of {self.samples} samples disagree beyond ties)")
        return None


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


def run_interpreter(interpreter, x: np.ndarray, *, progress: Optional[Callable[[str], None]] = None,
                    what: str = "samples") -> np.ndarray:
    """Predict with int8 input/output handled by the file's own scales and zero points.

    With `progress`, a line every PROGRESS_EVERY_S seconds (nothing for a short run).
    """
    in_type = np.dtype(interpreter.input_types[0])
    if in_type in (np.int8, np.uint8):
        scale, zero = interpreter.input_scales[0], interpreter.input_zero_points[0]
        info = np.iinfo(in_type)
        x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(in_type)
    if progress is None:
        y = np.asarray(interpreter.predict(x))
    else:
        y = np.asarray(interpreter.predict(_ticking(x, progress, what)))
    out_type = np.dtype(interpreter.output_types[0])
    if out_type in (np.int8, np.uint8):
        y = (y.astype(np.float32) - interpreter.output_zero_points[0]) * interpreter.output_scales[0]
    return y.astype(np.float32)


def _ticking(x: np.ndarray, progress: Callable[[str], None], what: str):
    """Yield the samples of `x` one by one, reporting progress on long runs."""
    n = len(x)
    start = last = time.perf_counter()
    for i in range(n):
        now = time.perf_counter()
        if i and now - last >= PROGRESS_EVERY_S:
            rate = (now - start) / i
            progress(f"  {what}: {i}/{n} through the LCE interpreter, {now - start:.0f} s, about "
                     f"{rate * (n - i):.0f} s left")
            last = now
        yield x[i]


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def check_parity(
    model,
    flatbuffer: bytes,
    x: np.ndarray,
    y: Optional[np.ndarray] = None,
    *,
    synthetic: bool = False,
    indirect_bgemm: Optional[bool] = None,
    batch_size: int = 64,
    progress: Optional[Callable[[str], None]] = None,
) -> ParityResult:
    """Top-1 agreement, ties, degeneracy and logit differences between Keras and LCE on `x`."""
    start = time.perf_counter()
    interp, indirect = make_interpreter(flatbuffer, indirect_bgemm=indirect_bgemm)
    keras_out = _flat(model.predict(x, batch_size=batch_size, verbose=0))
    lce_out = _flat(run_interpreter(interp, x, progress=progress, what="parity"))
    if keras_out.shape != lce_out.shape:
        from edgebvit.errors import ParityError

        raise ParityError(f"output shapes differ: Keras {keras_out.shape} vs flatbuffer {lce_out.shape}")
    stats = compare_logits(keras_out, lce_out)
    keras_acc = lce_acc = None
    if y is not None and len(y) == len(x):
        yy = np.asarray(y).reshape(-1)
        keras_acc = float((keras_out.argmax(-1) == yy).mean())
        lce_acc = float((lce_out.argmax(-1) == yy).mean())
    warnings = list(stats.pop("warnings"))
    if len(x) < MIN_SAMPLES:
        warnings.append(f"only {len(x)} samples compared (fewer than {MIN_SAMPLES}): the gate says little; "
                        "compare more held-out images")
    return ParityResult(
        **stats,
        keras_top1=keras_acc,
        lce_top1=lce_acc,
        synthetic_inputs=synthetic,
        indirect_bgemm=indirect,
        seconds=time.perf_counter() - start,
        warnings=tuple(warnings),
    )


def compare_logits(keras_out: np.ndarray, lce_out: np.ndarray) -> dict:
    """The numbers behind ParityResult (everything but timing, labels and provenance)."""
    n, classes = keras_out.shape if keras_out.ndim == 2 else (len(keras_out), 1)
    diff = np.abs(keras_out - lce_out)
    k_top, l_top = keras_out.argmax(-1), lce_out.argmax(-1)
    disagree = k_top != l_top
    magnitude = float(np.abs(keras_out).max()) if keras_out.size else 0.0
    err = diff.max(-1) if diff.size else np.zeros(n)
    typical = float(np.median(err)) if n else 0.0
    noise = TIE_NOISE * typical
    # Rounding-sized errors explain flips up to a few times their size; errors that are large
    # everywhere are a real divergence, and then only the floor applies.
    tol = max(TIE_FLOOR * magnitude, noise) if noise <= TIE_CAP * magnitude else TIE_FLOOR * magnitude
    if classes >= 2 and n:
        top2 = np.sort(keras_out, axis=-1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
    else:
        margin = np.zeros(n)
    tie = disagree & (margin <= tol)
    real = disagree & ~tie
    # Real disagreements first, then ties, each by falling error: the samples to bisect on.
    order = np.concatenate([np.flatnonzero(real)[np.argsort(-err[real])], np.flatnonzero(tie)[np.argsort(-err[tie])]])
    keras_classes = int(len(np.unique(k_top))) if n else 0
    reasons = []
    if classes < 2:
        reasons.append("one output logit: top-1 is always the same")
    elif n >= 2 and keras_classes == 1:
        reasons.append(f"all {n} samples land in Keras class {int(k_top[0])}")
    if n >= 2 and keras_out.size and float(keras_out.std(axis=0).max()) <= CONSTANT_LOGITS * max(magnitude, 1e-12):
        reasons.append("the logits barely change across samples")
    degenerate = bool(reasons)
    warnings = []
    if degenerate:
        warnings.append(f"degenerate: parity is not informative ({'; '.join(reasons)}); judged by the relative "
                        "logit error instead")
    return dict(
        samples=int(n),
        top1_agreement=float((~disagree).mean()) if n else 1.0,
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        disagreements=int(disagree.sum()),
        ties=int(tie.sum()),
        tie_tolerance=float(tol),
        agreement_excluding_ties=float(1.0 - real.mean()) if n else 1.0,
        keras_classes=keras_classes,
        degenerate=degenerate,
        degenerate_reason="; ".join(reasons),
        relative_error=float(diff.max() / max(magnitude, 1e-12)) if diff.size else 0.0,
        bad_indices=tuple(int(i) for i in order),
        warnings=warnings,
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
    progress: Optional[Callable[[str], None]] = None,
) -> Optional[Divergence]:
    """Bisect the layers for the first whose converted output differs from Keras by > tolerance.

    Assumes divergence persists downstream (true for a chain; in a branching graph it names a
    layer whose output diverges while the layer before it in topological order does not).
    Returns None when even the last layer agrees (the final output differs only within tolerance).
    With `progress`, one line per probe (each converts a sub-model: seconds to minutes).
    """
    layers = _candidates(model)
    if not layers:
        return None
    cache = {}
    probes = 0
    start = time.perf_counter()

    def score(i: int) -> float:
        nonlocal probes
        if i not in cache:
            probes += 1
            try:
                cache[i] = layer_divergence(model, layers[i][1], x, convert)
            except Exception:
                cache[i] = float("nan")  # this cut does not convert: treat as unknown
            if progress is not None:
                progress(f"  locating the diverging layer: probe {probes} (at most {max_probes}) at "
                         f"{layers[i][0].name}: relative diff {cache[i]:.3g}, {time.perf_counter() - start:.0f} s")
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
