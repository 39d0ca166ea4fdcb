"""The LCE converter call, in a child process of its own (stdlib only; do not import edgebvit here).

LCE's MLIR converter is C++ and can crash the whole process (a segfault on some larq-zoo models).
`converters/export.py` therefore prepares the input in the parent (the SavedModel that
``lce.convert_keras_model`` would write to a temporary folder anyway, or a frozen GraphDef) and
runs only the C++ call here: this file loads LCE's ``_tf_tfl_flatbuffer`` extension by path
(it links TensorFlow and MLIR statically and needs neither TensorFlow's Python package nor
``larq_compute_engine/__init__.py``), so the child starts in a fraction of a second. A crash then
kills only the child, and the parent reports it as one line.

    python lce_child.py EXTENSION_SO JOB_DIR

JOB_DIR holds ``job.json`` (what to convert and how); the child writes ``model.tflite`` there, or
``error.json`` with the converter's exception message (exit status 1). Killed by a signal: no
file, and the parent sees a negative return code.

Test hook: EDGEBVIT_TEST_CONVERTER_CRASH=1 makes the child kill itself with SIGSEGV just before
the converter call, to test the parent's crash handling without a model that really crashes.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import signal
import sys

EXTENSION_MODULE = "larq_compute_engine.mlir._tf_tfl_flatbuffer"
CRASH_HOOK = "EDGEBVIT_TEST_CONVERTER_CRASH"


def load_extension(path: str):
    loader = importlib.machinery.ExtensionFileLoader(EXTENSION_MODULE, path)
    spec = importlib.util.spec_from_file_location(EXTENSION_MODULE, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def run(extension: str, job_dir: str) -> bytes:
    with open(os.path.join(job_dir, "job.json"), encoding="utf-8") as f:
        job = json.load(f)
    ext = load_extension(extension)
    int8_range = tuple(job["default_int8_range"]) if job.get("default_int8_range") else None
    if os.environ.get(CRASH_HOOK) == "1":
        os.kill(os.getpid(), signal.SIGSEGV)
    if job["kind"] == "saved_model":
        return ext.convert_saved_model_to_tflite_flatbuffer(
            job["saved_model_dir"], job["tags"], job["exported_names"], job["version"], job["target"], int8_range)
    with open(os.path.join(job_dir, "graph.pb"), "rb") as f:
        graph_def = f.read()
    return ext.convert_graphdef_to_tflite_flatbuffer(
        graph_def, job["input_names"], job["input_dtypes"], job["input_shapes"], job["output_names"],
        job["should_quantize"], job["target"], int8_range)


def main(argv) -> int:
    extension, job_dir = argv[1], argv[2]
    try:
        data = run(extension, job_dir)
    except Exception as err:  # noqa: BLE001 - the parent turns it into one line
        with open(os.path.join(job_dir, "error.json"), "w", encoding="utf-8") as f:
            json.dump({"type": type(err).__name__, "message": str(err)}, f)
        return 1
    with open(os.path.join(job_dir, "model.tflite"), "wb") as f:
        f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
