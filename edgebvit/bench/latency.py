"""Estimated ARM64 latency from a flatbuffer's operators, calibrated on published measurements.

Most users choose a variant before they have the board. This module predicts the single-image
latency of an LCE flatbuffer on a device profile (Raspberry Pi 4B, Pixel 1; 1 or 4 threads) from
five per-operator terms, read from the file exactly as `edgebvit inspect` reads it:

- ``binary_gmacs``: LceBconv2d MACs with the kernel's padding (input channels per group rounded up
  to 32, output channels to 8: LCE's optimised kernel packs 32 input channels per word and
  computes 8 output channels at a time),
- ``int8_gmacs`` and ``float_gmacs``: MACs of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and
  BATCH_MATMUL by precision (attention matmuls included),
- ``other_mb``: megabytes written by every operator that does no MACs (element-wise ops,
  LceQuantize/LceDequantize, pooling, softmax, reshapes): memory traffic,
- ``weight_mb``: megabytes of constants the operators read (bit-packed binary filters, float
  weights): what makes a batch-1 fully connected layer memory-bound,
- ``ops``: the operator count (per-operator dispatch overhead).

An int8 MAC is priced as a float MAC (``TIED``): the published set holds too few int8 MACs to
price them apart, and this errs towards overestimating integer exports.

Latency is ``sum_k coefficient_k * term_k``. The coefficients of each profile are fitted, with
non-negative least squares on relative error, to published latencies of Larq Zoo models whose
operator lists come from converting the same architectures here (`tools/fit_latency.py`, data in
`tools/latency/`). The leave-one-out error on that calibration set is the error band printed with
every estimate. Nothing here is a measurement: every figure this module formats says
"estimated" and carries its band; measured records are printed apart (`edgebvit bench --compare`).

TensorFlow-free, like the rest of `edgebvit.bench`: it reads flatbuffers through `edgebvit.flatbuffer`.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from edgebvit.bench.records import classify_op
from edgebvit.errors import EdgebvitError
from edgebvit.flatbuffer import BINARY, INT8, ITEMSIZE, LCE_OPS, FlatbufferReport, parse, read_flatbuffer

TERMS = ("binary_gmacs", "int8_gmacs", "float_gmacs", "other_mb", "weight_mb", "ops")
TERM_UNITS = {"binary_gmacs": "ms per G binary MACs", "int8_gmacs": "ms per G int8 MACs",
              "float_gmacs": "ms per G float MACs", "other_mb": "ms per MB written by MAC-free ops",
              "weight_mb": "ms per MB of constants read", "ops": "ms per operator"}
# The calibration set has too few int8 MACs (6 M in the QuickNet int8 rows) to price them: the
# fit ties an int8 MAC to a float MAC, which overestimates int8 ops (XNNPACK's int8 kernels are
# not slower than its float ones), so integer exports are never flattered.
TIED = {"int8_gmacs": "float_gmacs"}
# Fitted terms. ``weight_mb`` is read and stored but not fitted: with it, the fit explains the
# calibration set's spread by 4.8 ms per MB of weights on a Pi 4B (210 MB/s, a twentieth of the
# board's memory bandwidth) and moves three quarters of the binary cost onto it: a proxy for
# model family, not a cost.
FIT_TERMS = ("binary_gmacs", "int8_gmacs", "float_gmacs", "other_mb", "ops")
PARTS = ("binary", "attention", "other")  # how an estimate is split (the bench records' op classes)
PROFILES_FILE = "latency_profiles.json"
PROFILES_FORMAT = "edgebvit.latency-profiles/1"


class LatencyProfileError(EdgebvitError):
    """A latency profile that is missing, unknown or malformed."""


# ---- operators -> terms ---------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class OpRow:
    """What the latency model needs of one operator (also the stored form of calibration models)."""

    op_type: str
    precision: str  # binary | int8 | float
    macs: int
    padded_macs: int  # binary MACs with LCE's channel padding (== macs for other ops)
    out_bytes: int
    part: str  # binary | attention | other
    weight_bytes: int = 0  # constants it reads, as stored

    def terms(self) -> Dict[str, float]:
        t = dict.fromkeys(TERMS, 0.0)
        if self.macs:
            key = {BINARY: "binary_gmacs", INT8: "int8_gmacs"}.get(self.precision, "float_gmacs")
            t[key] = (self.padded_macs if key == "binary_gmacs" else self.macs) / 1e9
        else:
            t["other_mb"] = self.out_bytes / 1e6
        t["weight_mb"] = self.weight_bytes / 1e6
        t["ops"] = 1.0
        return t

    def to_list(self) -> list:
        return [self.op_type, self.precision, self.macs, self.padded_macs, self.out_bytes, self.part,
                self.weight_bytes]

    @classmethod
    def from_list(cls, row: Sequence) -> "OpRow":
        op_type, precision, macs, padded, out_bytes, part, weight_bytes = row
        return cls(op_type=str(op_type), precision=str(precision), macs=int(macs), padded_macs=int(padded),
                   out_bytes=int(out_bytes), part=str(part), weight_bytes=int(weight_bytes))


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def op_rows(report: FlatbufferReport) -> List[OpRow]:
    """One OpRow per operator of the main subgraph (LCE models have one)."""
    rows = []
    for op in report.ops:
        if op.subgraph != 0:
            continue
        padded = op.macs
        if op.op_type == "LceBconv2d" and op.macs and len(op.inputs) >= 2 and len(op.inputs[1].shape) == 4:
            o, kh, kw, _ = op.inputs[1].shape
            cin = int(op.options.get("channels_in", 0) or 0) // max(1, op.groups)
            spatial = math.prod(op.outputs[0].shape[:-1])
            padded = spatial * _round_up(o, 8) * kh * kw * _round_up(max(cin, 1), 32) * max(1, op.groups)
            padded = max(padded, op.macs)
        out_bytes = sum(math.prod(t.shape) * ITEMSIZE.get(t.dtype, 4) for t in op.outputs if t.shape)
        part = "attention" if op.attention else classify_op(op.op_type, op.name)
        if part == "delegate":
            part = "other"
        if op.op_type in LCE_OPS:
            part = "binary"
        rows.append(OpRow(op_type=op.op_type, precision=op.precision, macs=op.macs, padded_macs=padded,
                          out_bytes=out_bytes, part=part, weight_bytes=op.weight_bytes))
    return rows


def total_terms(rows: Iterable[OpRow]) -> Dict[str, float]:
    out = dict.fromkeys(TERMS, 0.0)
    for row in rows:
        for k, v in row.terms().items():
            out[k] += v
    return out


# ---- profiles -----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Profile:
    """A fitted device profile: coefficients per term and the error measured on its calibration set."""

    name: str  # e.g. pi4b-1t
    device: str
    threads: int
    coefficients: Dict[str, float]
    loo_median_error: float  # leave-one-out relative error on the calibration set
    loo_max_error: float
    calibration_models: int
    calibration_source: str
    op_types: Tuple[str, ...] = ()  # operator types present in the calibration models
    derived_from: Optional[str] = None  # a 4-thread profile scaled from its 1-thread one
    checks: Tuple[dict, ...] = ()  # published numbers not used in the fit, with the estimate's error

    @classmethod
    def from_dict(cls, name: str, d: Mapping) -> "Profile":
        try:
            coeffs = {k: float(d["coefficients"][k]) for k in TERMS}
            return cls(name=name, device=str(d["device"]), threads=int(d["threads"]), coefficients=coeffs,
                       loo_median_error=float(d["loo_median_error"]), loo_max_error=float(d["loo_max_error"]),
                       calibration_models=int(d["calibration_models"]),
                       calibration_source=str(d.get("calibration_source", "")),
                       op_types=tuple(d.get("op_types", ())), derived_from=d.get("derived_from"),
                       checks=tuple(d.get("checks", ())))
        except (KeyError, TypeError, ValueError) as err:
            raise LatencyProfileError(f"latency profile {name!r} is malformed ({err!r}); "
                                      "regenerate it with tools/fit_latency.py") from None


def load_profiles(path: Union[str, Path, None] = None) -> Dict[str, Profile]:
    """The shipped profiles (edgebvit/bench/latency_profiles.json), or a file fitted by the user."""
    if path is None:
        text = resources.files("edgebvit.bench").joinpath(PROFILES_FILE).read_text()
        label = PROFILES_FILE
    else:
        p = Path(path)
        if not p.is_file():
            raise LatencyProfileError(f"latency profiles not found: {p} (fit one with tools/fit_latency.py)")
        text, label = p.read_text(), str(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise LatencyProfileError(f"{label}: not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != PROFILES_FORMAT:
        raise LatencyProfileError(f"{label}: not an edgebvit latency-profiles file (format {PROFILES_FORMAT})")
    return {name: Profile.from_dict(name, d) for name, d in data.get("profiles", {}).items()}


def resolve_profile(name: str, profiles: Mapping[str, Profile]) -> Profile:
    """'pi4b' -> 'pi4b-1t'; an unknown name is a one-line error listing the known ones."""
    key = name.strip().lower()
    if key in profiles:
        return profiles[key]
    if f"{key}-1t" in profiles:
        return profiles[f"{key}-1t"]
    known = ", ".join(sorted(profiles)) or "none"
    raise LatencyProfileError(f"unknown device profile {name!r}: choose one of {known} "
                              "(a device name alone means 1 thread)")


# ---- estimates ------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Estimate:
    profile: Profile
    total_ms: float
    parts_ms: Dict[str, float]
    terms_ms: Dict[str, float]
    unseen_ms: float  # time in operator types absent from the calibration models (extrapolated)
    unseen_types: Tuple[str, ...]

    @property
    def low_ms(self) -> float:
        return self.total_ms / (1.0 + self.profile.loo_max_error)

    @property
    def high_ms(self) -> float:
        return self.total_ms * (1.0 + self.profile.loo_max_error)

    def to_dict(self) -> dict:
        p = self.profile
        return {"estimated": True, "profile": p.name, "device": p.device, "threads": p.threads,
                "total_ms": self.total_ms, "parts_ms": dict(self.parts_ms), "terms_ms": dict(self.terms_ms),
                "loo_median_error": p.loo_median_error, "loo_max_error": p.loo_max_error,
                "range_ms": [self.low_ms, self.high_ms], "calibration_models": p.calibration_models,
                "unseen_op_types": list(self.unseen_types), "unseen_ms": self.unseen_ms}


def estimate_rows(rows: Sequence[OpRow], profile: Profile) -> Estimate:
    parts = dict.fromkeys(PARTS, 0.0)
    terms = dict.fromkeys(TERMS, 0.0)
    seen = set(profile.op_types)
    unseen_ms, unseen = 0.0, set()
    for row in rows:
        ms = 0.0
        for k, v in row.terms().items():
            t = profile.coefficients[k] * v
            terms[k] += t
            ms += t
        parts[row.part if row.part in parts else "other"] += ms
        if seen and row.op_type not in seen:
            unseen_ms += ms
            unseen.add(row.op_type)
    return Estimate(profile=profile, total_ms=sum(parts.values()), parts_ms=parts, terms_ms=terms,
                    unseen_ms=unseen_ms, unseen_types=tuple(sorted(unseen)))


def estimate(source: Union[FlatbufferReport, str, Path, bytes], profile: Profile) -> Estimate:
    report = source if isinstance(source, FlatbufferReport) else read_flatbuffer(source)
    return estimate_rows(op_rows(report), profile)


def band_text(profile: Profile) -> str:
    where = (f"(the larger of its own, on {profile.calibration_models} published latencies, and its 1-thread "
             "profile's)" if profile.derived_from else f"on {profile.calibration_models} published models")
    return (f"leave-one-out error {where}: median {profile.loo_median_error:.0%}, "
            f"max {profile.loo_max_error:.0%}")


def format_estimate(est: Estimate) -> str:
    """The lines `edgebvit inspect --device-profile` and the export report print."""
    p = est.profile
    lines = [f"estimated latency on {p.device}, {p.threads} thread{'s' if p.threads > 1 else ''} "
             f"[{p.name}]: {est.total_ms:.1f} ms (range {est.low_ms:.1f}-{est.high_ms:.1f} ms)",
             f"  {band_text(p)}"]
    total = est.total_ms or 1.0
    labels = {"binary": "binary ops (LCE)", "attention": "attention (matmuls, softmax)",
              "other": "other float/int8 ops"}
    for part in PARTS:
        lines.append(f"  {labels[part]:<30}{est.parts_ms[part]:>8.1f} ms  ({est.parts_ms[part] / total:.0%}, estimated)")
    if est.unseen_types:
        lines.append(f"  extrapolated: {est.unseen_ms / total:.0%} of it is in operator types no calibration "
                     f"model has ({', '.join(est.unseen_types)})")
    if p.derived_from:
        lines.append(f"  {p.threads}-thread profile: {p.derived_from}")
    lines.append("  an estimate, not a measurement: measure with `edgebvit bench --device ...`")
    return "\n".join(lines)


# ---- fitting (used by tools/fit_latency.py; here so the tests can check it) ---------------
def nnls_relative(X: Sequence[Sequence[float]], y: Sequence[float],
                  allowed: Optional[Sequence[int]] = None) -> List[float]:
    """Non-negative least squares on relative error: min sum((X b - y) / y)^2 with b >= 0.

    Exact for the handful of terms here: it solves the unconstrained problem on every subset of
    the allowed columns and keeps the best solution whose coefficients are all non-negative.
    """
    import numpy as np

    A = np.asarray(X, dtype=float) / np.asarray(y, dtype=float)[:, None]
    ones = np.ones(len(y))
    cols = list(range(A.shape[1])) if allowed is None else list(allowed)
    best, best_err = [0.0] * A.shape[1], float(len(y))  # all-zero coefficients: every error is -100%
    for r in range(1, len(cols) + 1):
        for subset in itertools.combinations(cols, r):
            sub = A[:, subset]
            if np.linalg.matrix_rank(sub) < len(subset):
                continue
            b, *_ = np.linalg.lstsq(sub, ones, rcond=None)
            if (b < 0).any():
                continue
            err = float(((sub @ b - ones) ** 2).sum())
            if err < best_err - 1e-12:
                best_err = err
                best = [0.0] * A.shape[1]
                for i, v in zip(subset, b):
                    best[i] = float(v)
    return best


def leave_one_out(X: Sequence[Sequence[float]], y: Sequence[float],
                  allowed: Optional[Sequence[int]] = None) -> List[float]:
    """Relative error of each point predicted by a fit on all the others."""
    errs = []
    for i in range(len(y)):
        keep = [j for j in range(len(y)) if j != i]
        b = nnls_relative([X[j] for j in keep], [y[j] for j in keep], allowed)
        pred = sum(c * x for c, x in zip(b, X[i]))
        errs.append(pred / y[i] - 1.0)
    return errs


@dataclass(frozen=True, kw_only=True)
class CalibrationPoint:
    model: str
    published_ms: float
    terms: Dict[str, float]
    source: str = ""
    note: str = ""

    def vector(self) -> List[float]:
        return [self.terms[k] for k in TERMS]


@dataclass(kw_only=True)
class Fit:
    coefficients: Dict[str, float]
    fitted_errors: List[float]
    loo_errors: List[float]
    points: List[CalibrationPoint] = field(default_factory=list)

    @property
    def loo_median(self) -> float:
        errs = sorted(abs(e) for e in self.loo_errors)
        n = len(errs)
        return (errs[(n - 1) // 2] + errs[n // 2]) / 2 if n else 0.0

    @property
    def loo_max(self) -> float:
        return max((abs(e) for e in self.loo_errors), default=0.0)


def tied_vector(terms: Mapping[str, float], tied: Mapping[str, str] = TIED) -> List[float]:
    """The terms as a fitting row: a tied term is added into the column of the term it is tied to."""
    t = dict(terms)
    for a, b in tied.items():
        t[b] = t.get(b, 0.0) + t.pop(a, 0.0)
        t[a] = 0.0
    return [t[k] for k in TERMS]


def untie(b: Sequence[float], tied: Mapping[str, str] = TIED) -> List[float]:
    b = list(b)
    for a, target in tied.items():
        b[TERMS.index(a)] = b[TERMS.index(target)]
    return b


def coefficients(points: Sequence[CalibrationPoint], *, leave_out: Optional[str] = None,
                 terms: Sequence[str] = FIT_TERMS, tied: Mapping[str, str] = TIED) -> List[float]:
    """The fitted coefficients (in TERMS order) on `points`, without those of model `leave_out`."""
    keep = [p for p in points if p.model != leave_out]
    allowed = [i for i, t in enumerate(TERMS) if t in terms and t not in tied]
    return untie(nnls_relative([tied_vector(p.terms, tied) for p in keep], [p.published_ms for p in keep], allowed),
                 tied)


def predict(b: Sequence[float], point: "CalibrationPoint") -> float:
    return sum(c * x for c, x in zip(b, point.vector()))


def fit_points(points: Sequence[CalibrationPoint], terms: Sequence[str] = FIT_TERMS,
               tied: Mapping[str, str] = TIED) -> Fit:
    """Fit the coefficients of `terms` (the others stay 0), tied ones sharing a coefficient, and
    their leave-one-out errors."""
    if len(points) < 2:
        raise LatencyProfileError("a latency fit needs at least two calibration points")
    allowed = [TERMS.index(t) for t in terms if t not in tied]
    X = [tied_vector(p.terms, tied) for p in points]
    y = [p.published_ms for p in points]
    b = untie(nnls_relative(X, y, allowed), tied)
    fitted = [sum(c * x for c, x in zip(b, p.vector())) / t - 1.0 for p, t in zip(points, y)]
    return Fit(coefficients=dict(zip(TERMS, b)), fitted_errors=fitted, loo_errors=leave_one_out(X, y, allowed),
               points=list(points))


# ---- estimates beside measurements (edgebvit bench --compare) -------------------------------
def device_of(cpu_model: str, android_model: str = "") -> Optional[str]:
    """The profile device a bench record's facts describe: pi4b, pixel1 or None."""
    cpu = cpu_model.lower()
    if "raspberry pi 4" in cpu or "bcm2711" in cpu or "0xd08" in cpu:
        return "pi4b"
    if android_model.strip().lower() in ("pixel", "pixel xl") or "msm8996" in cpu:
        return "pixel1"
    return None


def compare_lines(records, profiles: Optional[Mapping[str, Profile]] = None) -> List[str]:
    """One line per device record with a matching profile: measured median next to the estimate.

    The estimate needs the flatbuffer the record measured: it is read from the record's path and
    used only if its sha256 still matches. Host records are skipped (no profile describes x86).
    """
    profiles = load_profiles() if profiles is None else profiles
    lines = []
    for r in records:
        dev = device_of(r.facts.cpu_model, str(r.facts.extra.get("android_model", "")))
        name = f"{dev}-{r.threads}t" if dev else None
        if name not in profiles:
            continue
        path = Path(r.model_path)
        try:
            data = path.read_bytes()
        except OSError:
            lines.append(f"  {path.name} @ {r.device}, {r.threads} thr: no estimate ({path} is gone)")
            continue
        if hashlib.sha256(data).hexdigest() != r.model_sha256:
            lines.append(f"  {path.name} @ {r.device}, {r.threads} thr: no estimate ({path} changed since it was measured)")
            continue
        est = estimate(parse(data, str(path)), profiles[name])
        measured = r.latency.median_ms if r.latency.median_ms is not None else r.latency.mean_ms
        lines.append(f"  {path.name} @ {r.device}, {r.threads} thr: measured {measured:.2f} ms, estimated "
                     f"{est.total_ms:.2f} ms [{name}, range {est.low_ms:.2f}-{est.high_ms:.2f}] "
                     f"({est.total_ms / measured - 1:+.0%})")
    if lines:
        lines.insert(0, "measured vs estimated (estimates from published Larq Zoo latencies; add your records to "
                        "the calibration with tools/fit_latency.py fit --add-measured):")
    return lines
