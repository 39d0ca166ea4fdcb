#!/usr/bin/env python
"""Training throughput (images/s) of a registered model: edgebvit's own train step on random data.

    python tools/train_throughput.py --model binaryvit_tiny_32 --batch-size 128 --steps 20
    python tools/train_throughput.py --model binaryvit_tiny_32 --jit-compile   # whole-step XLA, to compare
    python tools/train_throughput.py --model binaryvit_tiny_32 --teacher-model cnn_small_32
    python tools/train_throughput.py --compare 1e6b3d1 --rounds 3   # this tree vs a commit, one run
    python tools/train_throughput.py --kernels-both                   # fused vs reference kernels
    python tools/train_throughput.py --torch                          # + the official PyTorch model

It times the same `Trainer.train_step` that `edgebvit train` runs (legacy Adam, no AutoGraph),
inside `tf.function`, optionally XLA-compiled, after warm-up steps that absorb tracing. The
first-step (trace) time is reported separately. Prints one JSON line per configuration.

Side by side (`--compare`, `--kernels-both`, `--torch`) every measurement runs in a fresh process
and the sides take turns for `--rounds` rounds, so background load falls on all of them; the
summary gives each side's median and its ratio to the first. `--compare COMMIT` extracts the
commit with `git archive` into a temporary package tree and imports it from there.

`--torch` times the official BinaryViT architecture in PyTorch (tools/reference/binaryvit_torch.py:
the configuration of binaryvit_tiny_32, same batch, same threads). PyTorch is not a project
dependency: install it outside the project venv, e.g. `apt-get install python3-torch` (Debian's
torch, for /usr/bin/python3) or `pip install torch` in another environment, and pass that
interpreter as `--torch-python` if it is not `python3` on PATH. Without torch that side is skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)


def measure(model_name: str, batch_size: int, steps: int, warmup: int, jit_compile: bool,
            teacher_model: str | None, overrides: dict, threads: int | None, kernels: str = "fused") -> dict:
    import numpy as np
    import tensorflow as tf

    import edgebvit.models  # noqa: F401
    from edgebvit.training.config import RunConfig
    from edgebvit.models import create_model, get_model_info
    from edgebvit.training import Trainer, make_optimizer

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    try:
        from edgebvit.models.layers import fused
    except ImportError:  # a commit from before the fused kernels
        fused = None
        kernels = "reference"
    if fused is not None:
        fused.set_enabled(kernels == "fused")
    info = get_model_info(model_name)
    t0 = time.perf_counter()
    student = create_model(model_name, **overrides)
    build_s = time.perf_counter() - t0
    shape = tuple(student.input_shape[1:])
    classes = int(student.output_shape[-1])
    teacher = None
    if teacher_model:
        teacher = create_model(teacher_model, input_shape=shape, num_classes=classes)
        teacher.trainable = False
    cfg = RunConfig(model=model_name, epochs=1, batch_size=batch_size)
    trainer = Trainer(student, teacher=teacher, distill_mode="soft" if teacher else "none")
    trainer.compile(optimizer=make_optimizer(cfg, steps + warmup, student), jit_compile=jit_compile)
    if teacher is not None:
        trainer.w_kd.assign(1.0)
        trainer.w_ce.assign(0.0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, (batch_size, *shape)).astype(np.float32))
    y = tf.one_hot(rng.integers(0, classes, batch_size), classes)
    step = trainer.make_train_function()
    data = iter(tf.data.Dataset.from_tensors((x, y)).repeat())

    t0 = time.perf_counter()
    step(data)["loss"].numpy()
    first_s = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        step(data)["loss"].numpy()
    t0 = time.perf_counter()
    for _ in range(steps):
        out = step(data)
    float(out["loss"].numpy())
    dt = time.perf_counter() - t0
    return {
        "model": model_name, "family": info.family, "overrides": overrides, "batch_size": batch_size,
        "teacher": teacher_model, "jit_compile": jit_compile, "kernels": kernels, "steps": steps,
        "images_per_second": round(steps * batch_size / dt, 1), "ms_per_step": round(1000 * dt / steps, 1),
        "first_step_seconds": round(first_s, 1), "build_seconds": round(build_s, 1),
        "cpus": os.cpu_count(), "threads": threads,
    }


def _package_tree(ref: str, dest: str) -> str:
    """Extract commit `ref` and lay it out as the installed package (edgebvit, edgebvit.models,
    edgebvit.converters), as setup.cfg's package_dir maps it; returns the directory to import from."""
    import io
    import shutil
    import subprocess
    import tarfile

    try:
        tar = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", ref], check=True,
                             capture_output=True).stdout
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"error: cannot extract {ref!r}: {exc.stderr.decode().strip()}")
    src = os.path.join(dest, "src")
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(src)
    pkg = os.path.join(dest, "pkg")
    shutil.copytree(os.path.join(src, "edgebvit"), os.path.join(pkg, "edgebvit"))
    for sub in ("models", "converters"):
        shutil.copytree(os.path.join(src, sub), os.path.join(pkg, "edgebvit", sub))
    return pkg


def _use_package_tree(pkg: str) -> None:
    """Import edgebvit from `pkg` instead of the editable install of this checkout."""
    sys.meta_path[:] = [f for f in sys.meta_path if not str(getattr(f, "__module__", "")).startswith("__editable__")]
    sys.path[:] = [pkg] + [p for p in sys.path if os.path.abspath(p or ".") != ROOT]


def _record(cmd: list, what: str) -> dict | None:
    """Run one measurement process; its last JSON line is the record."""
    import subprocess

    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        print(f"error: {what} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def _child(args, *, source: str | None = None, kernels: str = "fused") -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--model", args.model, "--batch-size", str(args.batch_size[0]),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--kernels", kernels]
    if source:
        cmd += ["--source", source]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    for o in args.overrides:
        cmd += ["--set", o]
    return _record(cmd, f"the measurement of {source or 'this tree'} ({kernels} kernels)")


def _torch_python(given: str | None) -> str | None:
    import shutil
    import subprocess

    for py in ([given] if given else [shutil.which("python3"), "/usr/bin/python3"]):
        if py and subprocess.run([py, "-c", "import torch"], capture_output=True).returncode == 0:
            return py
    return None


def _torch_child(args, python: str) -> dict | None:
    cmd = [python, os.path.join(ROOT, "tools", "reference", "binaryvit_torch.py"), "--batch-size",
           str(args.batch_size[0]), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return _record(cmd, "the PyTorch measurement")


def side_by_side(args) -> list:
    """Interleaved rounds of fresh-process measurements; prints each, then the medians and ratios."""
    import statistics
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="edgebvit-throughput-")
    sides = []  # (label, thunk); the first is the baseline of the ratios
    if args.compare:
        pkg = _package_tree(args.compare, tmp.name)
        sides.append((f"commit {args.compare}", lambda: _child(args, source=pkg, kernels="reference")))
    if args.kernels_both:
        sides.append(("this tree, --kernels reference", lambda: _child(args, kernels="reference")))
    sides.append(("this tree", lambda: _child(args, kernels="fused")))
    if args.torch:
        py = _torch_python(args.torch_python)
        if py is None:
            print("torch: skipped: no Python with PyTorch found; install it outside the project venv "
                  "(`apt-get install python3-torch`, or `pip install torch` in another environment) "
                  "and pass --torch-python PATH", file=sys.stderr)
        else:
            sides.append(("official BinaryViT, PyTorch", lambda: _torch_child(args, py)))
    results = {label: [] for label, _ in sides}
    records = []
    try:
        for r in range(args.rounds):
            for label, thunk in sides:
                rec = thunk()
                if rec is None:
                    raise SystemExit(2)
                rec.update(side=label, round=r)
                records.append(rec)
                results[label].append(rec["images_per_second"])
                print(json.dumps(rec), flush=True)
    finally:
        tmp.cleanup()
    base = statistics.median(results[sides[0][0]])
    print(f"\n{args.model}, batch {args.batch_size[0]}, {args.steps} timed steps, {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs, threads {args.threads or 'default'}:")
    for label, _ in sides:
        med = statistics.median(results[label])
        runs = ", ".join(f"{v:.1f}" for v in results[label])
        print(f"  {label:32s} {med:7.1f} images/s (median of {runs})   {med / base:.2f}x {sides[0][0]}")
    return records


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="binaryvit_tiny_32")
    p.add_argument("--batch-size", type=int, nargs="+", default=[128])
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first one traces)")
    p.add_argument("--jit-compile", action="store_true", help="XLA-compile the whole train step")
    p.add_argument("--both", action="store_true", help="measure without and with whole-step XLA")
    p.add_argument("--kernels", choices=["fused", "reference"], default="fused",
                   help="the layers' training kernels, as `edgebvit train --kernels`")
    p.add_argument("--teacher-model", default=None, help="registry model run as a frozen teacher in each step")
    p.add_argument("--threads", type=int, default=None, help="TensorFlow intra/inter-op threads")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model config override, as in `edgebvit train --set`")
    p.add_argument("--compare", metavar="COMMIT", default=None,
                   help="side by side: this tree vs COMMIT, fresh processes taking turns")
    p.add_argument("--kernels-both", action="store_true", help="side by side: fused vs reference kernels of this tree")
    p.add_argument("--torch", action="store_true", help="side by side: add the official BinaryViT in PyTorch")
    p.add_argument("--torch-python", default=None, help="a Python interpreter with torch (default: python3 on PATH)")
    p.add_argument("--rounds", type=int, default=3, help="side-by-side rounds (each side once per round)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the results to this file")
    p.add_argument("--source", default=None, help=argparse.SUPPRESS)  # a package tree from _package_tree
    args = p.parse_args(argv)

    if args.source:
        _use_package_tree(args.source)
    if args.compare or args.kernels_both or args.torch:
        results = side_by_side(args)
    else:
        import edgebvit  # noqa: F401  (selects tf_keras before TensorFlow loads)
        from edgebvit.errors import EdgebvitError
        from edgebvit.training.config import parse_overrides

        try:
            overrides = parse_overrides(args.overrides)
            results = []
            for bs in args.batch_size:
                for jit in ([False, True] if args.both else [args.jit_compile]):
                    r = measure(args.model, bs, args.steps, args.warmup, jit, args.teacher_model, overrides,
                                args.threads, kernels=args.kernels)
                    r["source"] = os.path.dirname(os.path.dirname(os.path.abspath(edgebvit.__file__)))
                    print(json.dumps(r), flush=True)
                    results.append(r)
        except EdgebvitError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.json_out:
        import edgebvit  # noqa: F401
        from edgebvit.fileio import atomic_write_json

        atomic_write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
