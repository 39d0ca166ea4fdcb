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

One file (~570 lines): the export pipeline and its report are one transaction (inputs checked,
converted, gated, then written in a fixed order); splitting it would scatter that order.
"""
from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from edgebvit.artifacts import (CALIBRATION_FILE, CONFIG_FILE, MODEL_FILE, PARITY_FILE, TFLITE_FILE,
                                export_report_name)
from edgebvit.errors import DataError, EdgebvitError, ModelError, ParityError

TARGETS = ("arm", "xcore")
INTEGER_MODES = ("none", "attention", "full")
# "none" until the int8 softmax is shown to keep live attention within the gate: measured, a
# 1-epoch binaryvit_tiny_32 with live attention failed it in "attention" mode (docs/integer.md).
DEFAULT_INTEGER = "none"
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
        raise DataError(f"{path}: cannot read parity images ({_first_line(err)})") from None
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: the parity images contain NaN or infinite values")
    want = tuple(int(d) for d in input_shape[1:] if d is not None)
    if len(x) == 0 or tuple(x.shape[1:]) != want:
        raise DataError(f"{path}: images have shape {tuple(x.shape[1:])}, the model wants {want}")
    return x, y


def _first_line(err: BaseException) -> str:
    """The root cause of `err` in one line (the innermost exception, Keras's boilerplate dropped)."""
    from edgebvit.models.loading import root_cause

    return root_cause(err)


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


# ---- conversion ----------------------------------------------------------------------------

CRASH_ADVICE = ("try --no-rewrite, export a smaller part of the model to find the layer that crashes it, "
                "or report it to larq/compute-engine with the model")


def convert(model, options: ExportOptions, *, label: Optional[str] = None) -> bytes:
    """What ``lce.convert_keras_model`` does, with the C++ converter call in a child process.

    As LCE does, the model is saved as a SavedModel in a temporary folder and converted from
    there, falling back to a frozen GraphDef when that fails. Only the converter call (the part
    that can segfault) runs in the child (``converters/lce_child.py``, started in well under a
    second: it loads LCE's converter extension without TensorFlow). A child killed by a signal
    is a ModelError naming `label` (default: the model's name) and the signal.
    """
    import tensorflow as tf

    if options.target not in TARGETS:
        raise ModelError(f"unknown target {options.target!r} (choose from {', '.join(TARGETS)})")
    if not isinstance(model, tf.keras.Model):
        raise ModelError(f"LCE converter failed: expected a Keras model, got {type(model).__name__}")
    if hasattr(model, "dtype_policy") and model.dtype_policy.name != "float32":
        raise ModelError(f"LCE converter failed: the model's dtype policy is {model.dtype_policy.name}; "
                         "LCE converts float32 models only (rebuild it with float32)")
    label = label or f"model {model.name!r}"
    job = {"target": options.target,
           "default_int8_range": list(options.experimental_default_int8_range)
           if options.experimental_default_int8_range else None}
    int8_io = options.input_type != "float32" or options.output_type != "float32"
    with tempfile.TemporaryDirectory(prefix="edgebvit-convert-") as tmp:
        tmp = Path(tmp)
        saved_model = tmp / "saved_model"
        try:
            model.save(str(saved_model), save_format="tf")
            version = _saved_model_version(saved_model)
        except Exception:  # noqa: BLE001 - LCE falls back to the GraphDef route too
            version = None
        if version is not None:
            job_dir = tmp / "saved_model_job"
            job_dir.mkdir()
            result = _run_converter_child(job_dir, {**job, "kind": "saved_model", "saved_model_dir": str(saved_model),
                                                    "tags": ["serve"], "exported_names": ["serving_default"],
                                                    "version": version}, label)
            if isinstance(result, bytes):
                if not int8_io:
                    return result
                try:
                    return _int8_io(result, options)
                except ModelError:
                    pass  # LCE too falls back to the GraphDef route when the I/O types cannot be set
        # The GraphDef route (what LCE falls back to), also converted in the child.
        job_dir = tmp / "graphdef_job"
        job_dir.mkdir()
        try:
            graph_job, should_quantize = _graphdef_job(model, job_dir, options)
        except EdgebvitError:
            raise
        except Exception as err:  # noqa: BLE001
            raise ModelError(f"LCE converter failed: {_first_line(err)}") from None
        if int8_io and not should_quantize:
            # LCE would return float32 inputs/outputs here without a word.
            raise ModelError("int8 input/output needs an int8-quantized model (fake-quant ops, or "
                             "--experimental-default-int8-range MIN,MAX); this model is float, so the flatbuffer "
                             "would keep float32 inputs and outputs: drop --input-type/--output-type int8")
        result = _run_converter_child(job_dir, {**job, **graph_job}, label)
        if not isinstance(result, bytes):
            raise ModelError(f"LCE converter failed: {result}")
        return _int8_io(result, options) if int8_io else result


def _saved_model_version(path: Path) -> int:
    from tensorflow.core.protobuf import saved_model_pb2

    pb = saved_model_pb2.SavedModel()
    pb.ParseFromString((path / "saved_model.pb").read_bytes())
    version = int(pb.saved_model_schema_version)
    if version not in (1, 2):
        raise ValueError(f"SavedModel file format({version}) is not supported")
    return version


def _graphdef_job(model, job_dir: Path, options: ExportOptions):
    """Freeze the model's call into a GraphDef, as LCE's convert_keras_model fallback does."""
    import tensorflow as tf
    from larq_compute_engine.mlir.python.converter import _contains_training_quant_op, concrete_function_from_keras_model
    from tensorflow.core.framework.types_pb2 import DataType
    from tensorflow.lite.python.util import get_tensor_name
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    func = concrete_function_from_keras_model(model)
    frozen = convert_variables_to_constants_v2(func, lower_control_flow=False)
    inputs = [t for t in frozen.inputs if t.dtype != tf.dtypes.resource]
    graph_def = frozen.graph.as_graph_def()
    should_quantize = _contains_training_quant_op(graph_def) or options.experimental_default_int8_range is not None
    shapes = []
    for t in inputs:
        shape = t.shape.as_list()
        if None in shape[1:]:
            raise ModelError(f"LCE converter failed: input {get_tensor_name(t)} has shape {shape}; only the batch "
                             "dimension may be unknown")
        if shape and shape[0] is None:
            shape[0] = 1
        shapes.append(shape)
    (job_dir / "graph.pb").write_bytes(graph_def.SerializeToString())
    return {
        "kind": "graphdef",
        "input_names": [get_tensor_name(t) for t in inputs],
        "input_dtypes": [DataType.Name(t.dtype.as_datatype_enum) for t in inputs],
        "input_shapes": shapes,
        "output_names": [get_tensor_name(t) for t in frozen.outputs],
        "should_quantize": bool(should_quantize),
    }, should_quantize


def _int8_io(flatbuffer: bytes, options: ExportOptions) -> bytes:
    import tensorflow as tf
    from larq_compute_engine.mlir.python.util import modify_integer_quantized_model_io_type

    types = {"float32": tf.float32, "int8": tf.int8}
    try:
        return modify_integer_quantized_model_io_type(flatbuffer, inference_input_type=types[options.input_type],
                                                      inference_output_type=types[options.output_type])
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"LCE converter failed: {_first_line(err)}") from None


def _converter_extension() -> str:
    spec = importlib.util.find_spec("larq_compute_engine")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("larq-compute-engine is not installed: pip install larq-compute-engine==0.16.0")
    pkg = list(spec.submodule_search_locations)[0]
    found = [p for p in sorted(glob.glob(os.path.join(pkg, "mlir", "_tf_tfl_flatbuffer*"))) if p.endswith((".so", ".pyd"))]
    if not found:
        raise ModelError(f"larq-compute-engine at {pkg} has no converter extension (mlir/_tf_tfl_flatbuffer); reinstall it")
    return found[0]


def _run_converter_child(job_dir: Path, job: dict, label: str):
    """Run one conversion in the child: the flatbuffer bytes, or the converter's error message."""
    (job_dir / "job.json").write_text(json.dumps(job))
    child = Path(__file__).with_name("lce_child.py")
    # The converter's own logging goes to our stderr, as it did in-process; its stdout too, so
    # that `--json` output stays parseable.
    try:
        stdout = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        stdout = subprocess.DEVNULL
    # cwd: a core dump of a crashing converter lands in the temporary folder and goes with it.
    proc = subprocess.run([sys.executable, str(child), _converter_extension(), str(job_dir)],
                          stdin=subprocess.DEVNULL, stdout=stdout, cwd=str(job_dir))
    if proc.returncode == 0:
        return (job_dir / "model.tflite").read_bytes()
    if proc.returncode < 0:
        sig = -proc.returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "unknown signal"
        extra = " (out of memory?)" if sig == getattr(signal, "SIGKILL", None) else ""
        raise ModelError(f"LCE converter crashed on {label}: killed by signal {sig} ({name}){extra}; edgebvit "
                         f"survived but wrote no flatbuffer; {CRASH_ADVICE}")
    err_file = job_dir / "error.json"
    if err_file.is_file():
        err = json.loads(err_file.read_text())
        from edgebvit.models.loading import one_line  # the same trimming as for load errors

        return one_line(err.get("message", "")) or err.get("type", "error")
    raise ModelError(f"LCE converter exited with status {proc.returncode} on {label} without a result; "
                     f"{CRASH_ADVICE}")


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
    if progress:
        progress(f"converting {label} with LCE ...")
    t0 = time.perf_counter()
    flatbuffer = convert(to_convert, options, label=label)
    convert_seconds = time.perf_counter() - t0
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
        convert_seconds=convert_seconds,
    )
    failure = None
    if x is None:
        report.status = "parity_skipped"
    else:
        if progress and len(x) >= 100:
            progress(f"parity: {len(x)} samples through Keras and the LCE interpreter ...")
        parity = check_parity(model, flatbuffer, x, y, synthetic=synthetic, progress=progress)
        report.parity = parity.to_dict()
        report.parity["cap"] = cap
        reason = parity.verdict(options.min_agreement, options.max_relative_error)
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
    if options.integer == "none":
        return model, {"mode": "none"}
    from edgebvit.converters import integer

    if not getattr(model, "_is_graph_network", False):
        if options.integer == "full":
            raise ModelError(f"model {model.name!r} is subclassed; --integer full needs a functional model "
                             "(or export with --integer none)")
        return model, {"mode": "none", "requested": options.integer,
                       "note": "subclassed model: exported as is (the integer rewrite needs a functional model)"}
    info = integer.integer_twin(model, mode=options.integer)
    if not info.replaced and options.integer == "attention":
        return model, {"mode": "attention", "replaced": {}, "attention": [], "dead_attention": [],
                       "note": "nothing to rewrite (no attention core or element-wise layer edgebvit knows)"}
    report = {"mode": options.integer, "replaced": _count(info.replaced.values()), "attention": info.attention,
              "dead_attention": [a["layer"] for a in info.attention if a["dead"]]}
    if options.integer == "full":
        x = _load_calibration(calibration_file, options.calibration_images, model.input_shape)
        if progress:
            progress(f"calibrating int8 ranges on {len(x)} images from {calibration_file} ...")
        ranges = integer.calibrate(info, x)
        report["calibration"] = {"path": str(calibration_file), "sha256": sha256_of(calibration_file),
                                 "images": int(len(x)), "calibrated_tensors": len(ranges)}
    return info.model, report


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _load_calibration(path: Path, n: int, input_shape) -> np.ndarray:
    x, _ = load_parity_data(path, n, input_shape)
    return x


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


def _inspection_dict(inspection, out: Path) -> dict:
    d = inspection.to_dict()
    d["path"] = str(out)
    return d


# ---- presentation --------------------------------------------------------------------------

def _integer_lines(info: dict) -> List[str]:
    if not info or info.get("mode") in (None, "none"):
        note = info.get("note") if info else None
        return [f"integer: none ({note})"] if note else ["integer: none (float outside the binary convs)"]
    parts = ", ".join(f"{n} {k}" for k, n in sorted(info.get("replaced", {}).items()))
    lines = [f"integer: {info['mode']} ({parts or info.get('note') or 'nothing to rewrite'})"]
    cal = info.get("calibration")
    if cal:
        lines.append(f"  calibrated {cal['calibrated_tensors']} tensor ranges on {cal['images']} images from {cal['path']}")
    dead = info.get("dead_attention") or []
    if dead:
        lines.append(f"  warning: {len(dead)} attention core(s) have a probability scale alpha <= 0 and output only "
                     f"zeros (BiT's binarizer cannot recover once alpha is negative): {', '.join(dead)}")
    return lines


def format_export_report(report: ExportReport) -> str:
    from edgebvit.converters.inspect import format_summary
    from edgebvit.converters.precheck import not_checked
    from edgebvit.formatting import human_bytes

    ins = report.inspection
    lines = [f"exported {report.source} -> {report.tflite_path} ({human_bytes(ins['file_bytes'])}, "
             f"converted in {report.convert_seconds:.1f} s)"]
    if report.tflite_sha256:
        lines.append(f"sha256 {report.tflite_sha256} (source {report.source_sha256[:16]}...)")
    rw = report.rewrite
    if rw.get("rewritten"):
        lines.append(f"rewrite: {len(rw['rewritten'])} QuantDense -> 1x1 QuantConv2D ({', '.join(rw['rewritten'])})")
    for s in rw.get("skipped", []):
        lines.append(f"rewrite skipped: {s}")
    lines.extend(_integer_lines(report.integer))
    lines.append("")
    why = not_checked(report.findings)
    if why:
        lines.append(f"precheck: not applicable ({why})")
    else:
        warnings = [f for f in report.findings if f["severity"] == "warning"]
        infos = [f for f in report.findings if f["severity"] != "warning"]
        lines.append(f"precheck: {len(warnings)} warning(s), {len(infos)} note(s)")
        for f in report.findings:
            lines.append(f"  {f['severity']}: {f['layer']} ({f['layer_class']}): {f['message']}")
    lines.append("")
    lines.append(format_summary(ins))
    lines.append("")
    p = report.parity
    if p is None:
        lines.append("parity: skipped")
    else:
        kind = "synthetic random inputs (no --parity-data)" if p["synthetic_inputs"] else "held-out images"
        lines.append(f"parity on {p['samples']} {kind}: top-1 agreement {p['top1_agreement']:.2%}, "
                     f"max |diff| {p['max_abs_diff']:.3g}, mean |diff| {p['mean_abs_diff']:.3g}")
        if p.get("disagreements"):
            real = p["disagreements"] - p.get("ties", 0)
            lines.append(f"  {p['disagreements']} top-1 disagreement(s): {p.get('ties', 0)} tie(s) (Keras top-1 margin "
                         f"<= {p.get('tie_tolerance', 0.0):.3g}, not counted), {real} counted; "
                         f"agreement excluding ties {p.get('agreement_excluding_ties', p['top1_agreement']):.2%}")
        if p.get("keras_top1") is not None:
            lines.append(f"  top-1 accuracy: Keras {p['keras_top1']:.2%}, LCE {p['lce_top1']:.2%}")
        if p.get("indirect_bgemm"):
            lines.append("  (ran with the indirect BGEMM kernel: the model has grouped binary convs)")
        if p.get("degenerate"):
            lines.append(f"  relative logit error {p['relative_error']:.3g} (the gate for degenerate outputs)")
        for w in p.get("warnings", []):
            lines.append(f"  warning: {w}")
        if p.get("cap"):
            lines.append(f"  note: {p['cap']}")
    d = report.divergence
    if d:
        lines.append(f"  first diverging layer: {d['layer']} ({d['layer_class']}), relative diff {d['relative_diff']:.3g}, "
                     f"after {d['previous_layer'] or 'the input'} ({d['probes']} sub-models converted)")
        if d.get("note"):
            lines.append(f"  {d['note']}")
    lines.append(f"report: {report.report_path}")
    return "\n".join(lines)
