"""Interpreter benchmark, self-contained: needs only the standard library, numpy and larq_compute_engine.

`edgebvit bench --device local` imports this module; `--runner python` copies this very file to a
remote host and runs it there, so both measure with the same code. Do not import edgebvit here.

Command line (remote use):
    python3 interp_bench.py MODEL.tflite --warmup 5 --runs 50 --config 1,0,0 --config 4,1,0
each --config is THREADS,XNNPACK(0/1),INDIRECT_BGEMM(0/1). It prints one line
`EDGEBVIT_BENCH_JSON {...}` with device facts and one result per config (raw per-run latencies).
A config that fails to load or run reports its error instead of latencies; the process exits 0
so the other configs still come back.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.machinery
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time

MARKER = "EDGEBVIT_BENCH_JSON "
SCRIPT_VERSION = 1
_WRAPPER_MODULE = "larq_compute_engine.tflite.python.interpreter_wrapper_lite"


def load_lite_interpreter_class():
    """Return LCE's LiteInterpreter class (what `lce.testing.Interpreter` wraps).

    Loading the extension module by path skips `larq_compute_engine/__init__.py`, which imports
    TensorFlow and the converter (about 4 s and a full TensorFlow install); the benchmark only
    needs the TFLite runtime with LCE's kernels, which the extension carries on its own.
    """
    # One extension, one module object: pybind11 refuses to register LiteInterpreter twice in a
    # process, so the by-path load goes under the official name and a later
    # `lce.testing.Interpreter` (which imports that name) reuses it instead of loading it again.
    loaded = sys.modules.get(_WRAPPER_MODULE)
    if loaded is not None:
        return loaded.LiteInterpreter
    spec = importlib.util.find_spec("larq_compute_engine")
    if spec is not None and spec.submodule_search_locations:
        pkg_dir = list(spec.submodule_search_locations)[0]
        found = sorted(glob.glob(os.path.join(pkg_dir, "tflite", "python", "interpreter_wrapper_lite*")))
        for path in found:
            if not path.endswith((".so", ".pyd")):
                continue
            try:
                loader = importlib.machinery.ExtensionFileLoader(_WRAPPER_MODULE, path)
                mod_spec = importlib.util.spec_from_file_location(_WRAPPER_MODULE, path, loader=loader)
                module = importlib.util.module_from_spec(mod_spec)
                loader.exec_module(module)
            except ImportError:
                break
            sys.modules[_WRAPPER_MODULE] = module
            return module.LiteInterpreter
    # The slow but official route (also raises a clear ImportError when LCE is missing).
    from larq_compute_engine.tflite.python import interpreter_wrapper_lite

    return interpreter_wrapper_lite.LiteInterpreter


def lce_version() -> str:
    try:
        from importlib import metadata

        return metadata.version("larq_compute_engine")
    except Exception:  # noqa: BLE001 - a version string is informative only
        return "unknown"


def cpu_model() -> str:
    """Best-effort CPU name: /proc/cpuinfo on Linux (x86 `model name`, ARM `Hardware`/`Model`), sysctl on macOS."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            fields = {}
            for line in f:
                key, sep, value = line.partition(":")
                if sep and value.strip():
                    fields.setdefault(key.strip(), value.strip())
        for key in ("model name", "Hardware", "Model", "cpu model", "Processor"):
            if key in fields:
                return fields[key]
        if "CPU part" in fields:
            return f"ARM CPU part {fields['CPU part']} (implementer {fields.get('CPU implementer', '?')})"
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or "unknown"


def device_facts() -> dict:
    return {
        "architecture": platform.machine() or "unknown",
        "cpu_model": cpu_model(),
        "os": f"{platform.system()} {platform.release()}".strip(),
        "os_bits": 64 if sys.maxsize > 2**32 else 32,
        "cpu_count": os.cpu_count() or 0,
        "hostname": platform.node(),
        "python": platform.python_version(),
        "numpy": _numpy_version(),
        "larq_compute_engine": lce_version(),
    }


def _numpy_version() -> str:
    import numpy

    return numpy.__version__


def make_inputs(interpreter, seed: int = 0) -> list:
    """Deterministic random inputs matching each input's shape and dtype."""
    import numpy as np

    rng = np.random.default_rng(seed)
    inputs = []
    for shape, dtype in zip(interpreter.input_shapes, interpreter.input_types):
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            arr = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            arr = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
        elif dtype.kind == "b":
            arr = rng.integers(0, 1, size=shape, endpoint=True).astype(bool)
        else:
            raise ValueError(f"unsupported input dtype {dtype}")
        inputs.append(arr)
    return inputs


def bench_one(model: bytes, *, threads: int, xnnpack: bool, indirect_bgemm: bool, warmup: int, runs: int) -> dict:
    """Time `runs` single-sample invocations after `warmup` ones; latencies in microseconds.

    Each timed call is LiteInterpreter.predict on one sample, so it includes copying the input in
    and the output out: negligible against a model's run time, but not zero for tiny models.
    """
    LiteInterpreter = load_lite_interpreter_class()
    failure = None
    with native_stderr() as captured:
        try:
            t0 = time.perf_counter()
            interpreter = LiteInterpreter(model, int(threads), False, bool(indirect_bgemm), bool(xnnpack))
            init_us = (time.perf_counter() - t0) * 1e6
            inputs = make_inputs(interpreter)
            first_us = None
            for i in range(warmup):
                t = time.perf_counter()
                interpreter.predict(inputs)
                if i == 0:
                    first_us = (time.perf_counter() - t) * 1e6
            latencies = []
            for _ in range(runs):
                t = time.perf_counter()
                interpreter.predict(inputs)
                latencies.append((time.perf_counter() - t) * 1e6)
        except (RuntimeError, ValueError) as err:
            failure = err
    if failure is not None:
        # LCE's own message is an internal assertion ("interpreter_ != nullptr"); TFLite printed
        # the reason ("Model provided is schema version ...") on stderr: report that instead.
        raise type(failure)(tflite_reason(captured.get("text", ""), failure)) from None
    _replay(captured.get("text", ""))
    return {"init_us": init_us, "first_us": first_us, "latencies_us": latencies}


@contextlib.contextmanager
def native_stderr():
    """Collect what native code (TFLite) writes to file descriptor 2 while the block runs.

    Yields a dict whose "text" is filled in on exit; nothing is replayed (see _replay).
    """
    box = {"text": ""}
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield box
        return
    tmp = tempfile.TemporaryFile()
    try:
        os.dup2(tmp.fileno(), 2)
        try:
            yield box
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError, AttributeError):
                pass
            os.dup2(saved, 2)
            tmp.seek(0)
            box["text"] = tmp.read().decode("utf-8", "replace")
    finally:
        os.close(saved)
        tmp.close()


def _replay(text: str) -> None:
    if text:
        try:
            os.write(2, text.encode("utf-8", "replace"))
        except OSError:
            pass


def tflite_reason(stderr_text: str, err: BaseException) -> str:
    """One line: TFLite's `ERROR: ...` lines if it printed any, else the exception's own text."""
    reasons = []
    for line in stderr_text.splitlines():
        line = line.strip()
        if line.startswith("ERROR:"):
            line = line[len("ERROR:"):].strip()
            if line and line not in reasons:
                reasons.append(line)
    return "; ".join(reasons) if reasons else " ".join(str(err).split())


def run_configs(model: bytes, configs: list, *, warmup: int, runs: int) -> list:
    results = []
    for threads, xnnpack, indirect in configs:
        entry = {"threads": threads, "xnnpack": bool(xnnpack), "indirect_bgemm": bool(indirect)}
        try:
            entry.update(bench_one(model, threads=threads, xnnpack=xnnpack, indirect_bgemm=indirect, warmup=warmup, runs=runs))
        except (RuntimeError, ValueError, MemoryError, OverflowError) as err:
            # LCE reports a refused kernel (e.g. grouped bconv without indirect BGEMM) as RuntimeError.
            entry["error"] = " ".join(str(err).split()) or type(err).__name__
        results.append(entry)
    return results


def _parse_config(text: str) -> tuple:
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--config wants THREADS,XNNPACK,INDIRECT, got {text!r}")
    try:
        threads, xnn, ind = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--config wants integers, got {text!r}") from None
    if threads < 1 or xnn not in (0, 1) or ind not in (0, 1):
        raise argparse.ArgumentTypeError(f"--config out of range: {text!r}")
    return threads, bool(xnn), bool(ind)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="LCE interpreter benchmark (edgebvit --runner python)")
    ap.add_argument("model")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--config", type=_parse_config, action="append", required=True)
    args = ap.parse_args(argv)
    with open(args.model, "rb") as f:
        model = f.read()
    payload = {
        "script_version": SCRIPT_VERSION,
        "device": device_facts(),
        "results": run_configs(model, args.config, warmup=args.warmup, runs=args.runs),
    }
    sys.stdout.write(MARKER + json.dumps(payload) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
