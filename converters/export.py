"""Keras/larq model -> LCE flatbuffer, with a report that explains what came out.

Pipeline: load (run directory or model file, with the one safe loader
``edgebvit.models.loading.load_keras_model``: no code from the file runs) -> precheck ->
optional QuantDense rewrite -> LCE conversion (the C++ converter runs in a child process, so a
converter crash is a one-line error, not a dead process) -> inspect the flatbuffer -> parity on
held-out images -> publish: remove a stale ``<stem>.export.json``, write the .tflite atomically,
then the report (naming the sha256 of the flatbuffer, the source model and the parity data)
atomically -> raise ParityError if parity failed (after both are on disk, so the failure can be
read). A reader therefore never finds a report next to a flatbuffer it does not describe: until
the new report lands there is either the old pair or no report, and the sha256 says which file
a report vouches for. No output may be one of the inputs.

This file is the pipeline (inputs checked, converted, gated, then written in a fixed order); the
converter call is `converters/lce_convert.py`, the integer graph `converters/integer.py`, the
report's text `converters/export_report.py`.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from edgebvit.artifacts import (CALIBRATION_FILE, CONFIG_FILE, MODEL_FILE, PARITY_FILE, TFLITE_FILE,
                                export_report_name)
from edgebvit.converters.export_report import format_export_report  # noqa: F401 - the public name
from edgebvit.converters.lce_convert import TARGETS, convert, one_line_cause  # noqa: F401 - convert is public here too
from edgebvit.errors import DataError, EdgebvitError, ModelError, ParityError

INTEGER_MODES = ("auto", "none", "attention", "full")
# "auto": "attention" (exact int8 attention and the lean graph), or "none" where the model has no
# integer form or the attention export fails the parity gate; the report says which and why.
DEFAULT_INTEGER = "auto"
IO_TYPES = ("float32", "int8")
DEFAULT_PARITY_IMAGES = 500
# Random inputs (no held-out images): at most this many input values in total by default, so a
# 224x224x3 model is run on 50 random samples, not 500 (each one is seconds on reference kernels).
SYNTHETIC_VALUE_BUDGET = 2_000_000
MIN_SYNTHETIC_SAMPLES = 50


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    output: Optional[Path] = None  # default: RUN_DIR/model.tflite, or next to the model file
    target: str = "arm"
    input_type: str = "float32"
    output_type: str = "float32"
    experimental_default_int8_range: Optional[Tuple[float, float]] = None
    rewrite: bool = True
    # "none": today's graph (float outside the binary convs); "attention": exact int8 attention
    # and the lean graph (docs/integer.md); "full": that plus calibrated int8 for every other op.
    integer: str = DEFAULT_INTEGER
    calibration_data: Optional[Path] = None  # NPZ x: training images for "full" (default: the run's)
    calibration_images: int = 256
    # None: 500 held-out images, or for random inputs as many as SYNTHETIC_VALUE_BUDGET allows
    # (at least 50, at most 500); a number is used as given; 0 skips the parity gate.
    parity_images: Optional[int] = None
    parity_data: Optional[Path] = None
    min_agreement: float = 0.99
    max_relative_error: float = 0.01  # the gate for degenerate outputs (see converters/parity.py)
    locate_divergence: bool = True
    import_modules: Tuple[str, ...] = ()  # imported before loading (custom layers, quantizers)
    progress: bool = False  # progress lines on stderr for the slow steps (the CLI turns it on)


@dataclass(frozen=True, kw_only=True)
class Source:
    model_path: Path
    run_dir: Optional[Path]
    parity_data: Optional[Path]
    default_output: Path


@dataclass(kw_only=True)
class ExportReport:
    source: str
    tflite_path: str
    report_path: str
    options: dict
    tflite_sha256: str = ""  # the flatbuffer this report describes
    source_sha256: str = ""  # the model file it was converted from (a SavedModel: all its files)
    parity_data: Optional[str] = None
    parity_data_sha256: Optional[str] = None
    findings: List[dict] = field(default_factory=list)
    rewrite: dict = field(default_factory=dict)
    integer: dict = field(default_factory=dict)
    inspection: dict = field(default_factory=dict)
    latency_estimates: List[dict] = field(default_factory=list)  # estimated, never measured (docs/latency.md)
    parity: Optional[dict] = None
    divergence: Optional[dict] = None
    status: str = "ok"  # ok | parity_failed | parity_skipped
    convert_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# ---- inputs --------------------------------------------------------------------------------

def resolve_source(path) -> Source:
    """A run directory (has model.keras) or a Keras model file / SavedModel directory."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such file or directory")
    if p.is_dir() and (p / MODEL_FILE).is_file():
        npz = p / PARITY_FILE
        return Source(model_path=p / MODEL_FILE, run_dir=p, parity_data=npz if npz.exists() else None,
                      default_output=p / TFLITE_FILE)
    if p.is_dir():
        if (p / "saved_model.pb").is_file():
            return Source(model_path=p, run_dir=None, parity_data=None, default_output=p.parent / f"{p.name}.tflite")
        raise ModelError(f"{p}: not a run directory (no {MODEL_FILE}) nor a SavedModel (no saved_model.pb)")
    if p.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise ModelError(f"{p}: expected a run directory, a .keras/.h5 file or a SavedModel directory")
    return Source(model_path=p, run_dir=None, parity_data=None, default_output=p.with_suffix(".tflite"))


def load_keras_model(path: Path, import_modules=()):
    """The one safe loader (edgebvit.models.loading): refuses Lambda layers and code in any format."""
    from edgebvit.models.loading import load_keras_model as safe_load

    return safe_load(path, import_modules=import_modules)


def load_parity_data(path: Path, n: int, input_shape) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    try:
        with np.load(path) as data:
            if "x" not in data:
                raise DataError(f"{path}: no array 'x' (expected x: images, y: labels)")
            x = np.asarray(data["x"][:n], dtype=np.float32)
            y = np.asarray(data["y"][:n]) if "y" in data else None
    except EdgebvitError:
        raise
    except Exception as err:
        raise DataError(f"{path}: cannot read parity images ({one_line_cause(err)})") from None
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: the parity images contain NaN or infinite values")
    want = tuple(int(d) for d in input_shape[1:] if d is not None)
    if len(x) == 0 or tuple(x.shape[1:]) != want:
        raise DataError(f"{path}: images have shape {tuple(x.shape[1:])}, the model wants {want}")
    return x, y


def sha256_of(path) -> str:
    """sha256 of a file, or for a directory (a SavedModel) of its files' relative paths and contents."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(f.relative_to(p)).encode() + b"\0" + bytes.fromhex(sha256_of(f)) + b"\0")
        return h.hexdigest()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _same_path(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _refuse_overwriting_inputs(outputs, inputs) -> None:
    """An output that is an input (the model, the parity data, the run's config) is refused."""
    for out in outputs:
        if out.is_dir():
            raise ModelError(f"{out}: is a directory, not a file to write; pass -o FILE.tflite")
        for role, inp in inputs:
            if inp is not None and _same_path(out, inp):
                raise ModelError(f"{out}: export would overwrite its input ({role} {inp}); choose another -o")


def default_parity_count(options: ExportOptions, input_shape, synthetic: bool) -> Tuple[int, Optional[str]]:
    """How many parity samples, and the cap that applied (stated in the report) if any."""
    if options.parity_images is not None:
        return int(options.parity_images), None
    if not synthetic:
        return DEFAULT_PARITY_IMAGES, None
    values = math.prod(int(d) for d in input_shape[1:] if d is not None) or 1
    n = max(MIN_SYNTHETIC_SAMPLES, min(DEFAULT_PARITY_IMAGES, SYNTHETIC_VALUE_BUDGET // values))
    if n < DEFAULT_PARITY_IMAGES:
        shape = "x".join(str(int(d)) for d in input_shape[1:])
        return n, (f"random inputs capped at {n} samples for {shape} inputs (default budget "
                   f"{SYNTHETIC_VALUE_BUDGET:,} input values); pass --parity-images N to choose")
    return n, None


def export(path, options: ExportOptions = ExportOptions()) -> ExportReport:
    """Convert MODEL (run dir or model file) and write the flatbuffer and its JSON report."""
    from edgebvit.converters.inspect import inspect_flatbuffer
    from edgebvit.converters.parity import check_parity, locate_divergence, stderr_progress
    from edgebvit.converters.precheck import precheck
    from edgebvit.converters.rewrites import rewrite_quant_dense

    for name, value in (("input type", options.input_type), ("output type", options.output_type)):
        if value not in IO_TYPES:
            raise ModelError(f"unknown {name} {value!r} (choose from {', '.join(IO_TYPES)})")
    if options.integer not in INTEGER_MODES:
        raise ModelError(f"unknown integer mode {options.integer!r} (choose from {', '.join(INTEGER_MODES)})")
    if options.parity_images is not None and options.parity_images < 0:
        raise ModelError(f"parity images must be 0 or more, got {options.parity_images}")
    progress = stderr_progress if options.progress else None
    src = resolve_source(path)
    out = Path(options.output) if options.output else src.default_output
    if out.suffix != ".tflite":
        raise ModelError(f"{out}: the output file must end in .tflite")
    report_path = out.with_name(export_report_name(out.stem))
    gate = options.parity_images is None or options.parity_images > 0

    # Parity inputs are resolved before the slow conversion so bad data fails fast.
    parity_file = Path(options.parity_data) if options.parity_data else src.parity_data
    if options.parity_data and not parity_file.exists():
        raise DataError(f"{parity_file}: no such file")
    if src.run_dir is not None and gate and parity_file is None:
        raise DataError(f"{src.run_dir}: no {PARITY_FILE} (pass --parity-data NPZ, or --parity-images 0 to skip parity)")
    if not gate:
        parity_file = None
    calibration_file = _calibration_file(options, src)
    _refuse_overwriting_inputs(
        (out, report_path),
        [("model", src.model_path), ("parity data", parity_file), ("calibration data", calibration_file),
         ("run config", src.run_dir / CONFIG_FILE if src.run_dir is not None else None)])

    source_sha256 = sha256_of(src.model_path)
    model = load_keras_model(src.model_path, import_modules=tuple(options.import_modules))
    x = y = None
    synthetic = False
    cap = None
    if gate:
        if parity_file is not None:
            n, _ = default_parity_count(options, model.input_shape, synthetic=False)
            x, y = load_parity_data(parity_file, n, model.input_shape)
        else:
            # A bare model file without --parity-data: random inputs still catch conversion bugs,
            # but they are labelled synthetic in the report.
            synthetic = True
            n, cap = default_parity_count(options, model.input_shape, synthetic=True)
            shape = [n] + [int(d) for d in model.input_shape[1:]]
            x = np.random.default_rng(0).normal(size=shape).astype(np.float32)

    findings = precheck(model, target=options.target)
    rewrite_info = {"enabled": options.rewrite, "rewritten": [], "skipped": []}
    if options.rewrite:
        rw = rewrite_quant_dense(model)
        rewrite_info.update(rewritten=list(rw.rewritten), skipped=list(rw.skipped), max_abs_diff=rw.max_abs_diff)
        if rw.changed:
            model = rw.model
            findings = precheck(model, target=options.target)

    label = str(src.model_path)
    to_convert, integer_info = _integer_model(model, options, calibration_file, progress)

    def attempt(graph):
        if progress:
            progress(f"converting {label} with LCE ...")
        t0 = time.perf_counter()
        fb = convert(graph, options, label=label)
        seconds = time.perf_counter() - t0
        result, why = None, None
        if x is not None:
            if progress and len(x) >= 100:
                progress(f"parity: {len(x)} samples through Keras and the LCE interpreter ...")
            result = check_parity(model, fb, x, y, synthetic=synthetic, progress=progress)
            why = result.verdict(options.min_agreement, options.max_relative_error)
        return fb, seconds, result, why

    flatbuffer, convert_seconds, parity, reason = attempt(to_convert)
    if reason and options.integer == "auto" and to_convert is not model:
        # The default takes the best mode that passes the gate: the float remainder, said so.
        refused = {"mode": integer_info["mode"], "reason": reason}
        if progress:
            progress(f"--integer attention failed the parity gate ({reason}); exporting --integer none ...")
        to_convert = model
        integer_info = {"mode": "none", "requested": "auto", "refused": refused,
                        "note": "the attention export failed the parity gate; this is the float remainder"}
        flatbuffer, seconds, parity, reason = attempt(model)
        convert_seconds += seconds
    inspection = inspect_flatbuffer(flatbuffer)

    report = ExportReport(
        source=str(path),
        tflite_path=str(out),
        report_path=str(report_path),
        options={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        tflite_sha256=hashlib.sha256(flatbuffer).hexdigest(),
        source_sha256=source_sha256,
        parity_data=str(parity_file) if parity_file is not None else None,
        parity_data_sha256=sha256_of(parity_file) if parity_file is not None else None,
        findings=[asdict(f) for f in findings],
        rewrite=rewrite_info,
        integer=integer_info,
        inspection=_inspection_dict(inspection, out),
        latency_estimates=_latency_estimates(inspection),
        convert_seconds=convert_seconds,
    )
    failure = None
    if x is None:
        report.status = "parity_skipped"
    else:
        report.parity = parity.to_dict()
        report.parity["cap"] = cap
        if reason:
            report.status = "parity_failed"
            failure = f"parity failed: {reason}"
            if options.locate_divergence:
                if progress:
                    progress("parity failed: bisecting the layers for the first that diverges ...")
                bad = _bisect_samples(x, parity)
                # On the graph that was converted (the integer twin, if any): its Keras outputs are
                # what each converted prefix must reproduce.
                div = locate_divergence(to_convert, bad, lambda m: convert(m, options, label=label), progress=progress)
                if div is not None:
                    report.divergence = div.to_dict()
                    failure += f"; first diverging layer: {div.layer} ({div.layer_class})"
            failure += f" (report: {report_path})"
    _publish(out, report_path, flatbuffer, report.to_dict())
    if failure:
        err = ParityError(failure)
        err.report = report  # the CLI prints the full report before the one-line error
        raise err
    return report


def _calibration_file(options: ExportOptions, src: Source) -> Optional[Path]:
    """The calibration images for ``--integer full`` (checked before the slow steps)."""
    if options.integer != "full":
        if options.calibration_data is not None:
            raise DataError("--calibration-data is only used with --integer full")
        return None
    if options.calibration_data is not None:
        path = Path(options.calibration_data)
        if not path.is_file():
            raise DataError(f"{path}: no such file (--calibration-data wants an NPZ with x: training images)")
        return path
    if src.run_dir is not None and (src.run_dir / CALIBRATION_FILE).is_file():
        return src.run_dir / CALIBRATION_FILE
    where = f"{src.run_dir} has no {CALIBRATION_FILE}" if src.run_dir is not None else "a model file has no calibration images"
    raise DataError(f"--integer full needs calibration images ({where}): pass --calibration-data NPZ (x: a few "
                    "hundred model-ready training images), or use --integer attention, which needs none")


def _integer_model(model, options: ExportOptions, calibration_file: Optional[Path], progress):
    """The model to convert for `options.integer`, and what the report says about it."""
    from edgebvit.converters.integer import integer_model

    calibration = None
    if options.integer == "full":
        x, _ = load_parity_data(calibration_file, options.calibration_images, model.input_shape)
        if progress:
            progress(f"calibrating int8 ranges on {len(x)} images from {calibration_file} ...")
        calibration = (calibration_file, sha256_of(calibration_file), x)
    return integer_model(model, options.integer, calibration=calibration)


def _bisect_samples(x: np.ndarray, parity) -> np.ndarray:
    """The disagreeing samples (real ones first), else the worst by logit error; fewer for big inputs."""
    limit = 16 if x[0].size <= 100_000 else 4
    idx = list(parity.bad_indices[:limit])
    if not idx:
        idx = list(range(min(limit, len(x))))
    return x[np.asarray(idx, dtype=int)]


def _publish(out: Path, report_path: Path, flatbuffer: bytes, report: dict) -> None:
    """Stale report out first, then the flatbuffer, then the report naming its sha256 (all atomic).

    Killed at any point, the folder holds the old flatbuffer and report, or a flatbuffer without
    a report, or the new pair: never a report beside a flatbuffer it does not describe.
    """
    from edgebvit.fileio import atomic_write_bytes, atomic_write_json

    try:
        report_path.unlink()
    except FileNotFoundError:
        pass
    atomic_write_bytes(out, flatbuffer)
    atomic_write_json(report_path, report)


def _latency_estimates(inspection) -> List[dict]:
    """Estimated 1-thread latency on every shipped device profile (edgebvit.bench.latency)."""
    from edgebvit.bench.latency import estimate, load_profiles

    return [estimate(inspection, p).to_dict() for p in load_profiles().values() if p.threads == 1]


def _inspection_dict(inspection, out: Path) -> dict:
    d = inspection.to_dict()
    d["path"] = str(out)
    return d
