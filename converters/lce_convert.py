"""The LCE converter call: what ``lce.convert_keras_model`` does, with the C++ converter in a
child process (``converters/lce_child.py``) so that a converter crash is a one-line error.

Used by `converters/export.py` (the export pipeline) and by every test that converts a model
directly. `options` is an `ExportOptions` (its target, I/O types and default int8 range).
"""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from edgebvit.errors import EdgebvitError, ModelError

if TYPE_CHECKING:
    from edgebvit.converters.export import ExportOptions

TARGETS = ("arm", "xcore")

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
            raise ModelError(f"LCE converter failed: {one_line_cause(err)}") from None
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
        raise ModelError(f"LCE converter failed: {one_line_cause(err)}") from None


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


def one_line_cause(err: BaseException) -> str:
    """The root cause of `err` in one line (imported late: loading pulls in TensorFlow)."""
    from edgebvit.models.loading import root_cause

    return root_cause(err)
