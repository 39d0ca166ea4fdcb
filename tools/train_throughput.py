#!/usr/bin/env python
"""Training throughput (images/s) of a registered model: edgebvit's own train step on random data.

    python tools/train_throughput.py --model binaryvit_tiny_32 --batch-size 128 --steps 20
    python tools/train_throughput.py --model binaryvit_tiny_32 --jit-compile   # XLA, to compare
    python tools/train_throughput.py --model binaryvit_tiny_32 --teacher-model cnn_small_32

It times the same `Trainer.train_step` that `edgebvit train` runs (legacy Adam, no AutoGraph),
inside `tf.function`, optionally XLA-compiled, after warm-up steps that absorb tracing. The
first-step (trace) time is reported separately. Prints one JSON line per configuration.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def measure(model_name: str, batch_size: int, steps: int, warmup: int, jit_compile: bool,
            teacher_model: str | None, overrides: dict, threads: int | None) -> dict:
    import numpy as np
    import tensorflow as tf

    import edgebvit.models  # noqa: F401
    from edgebvit.training.config import RunConfig
    from edgebvit.models import create_model, get_model_info
    from edgebvit.training import Trainer, make_optimizer

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
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
        "teacher": teacher_model, "jit_compile": jit_compile, "steps": steps,
        "images_per_second": round(steps * batch_size / dt, 1), "ms_per_step": round(1000 * dt / steps, 1),
        "first_step_seconds": round(first_s, 1), "build_seconds": round(build_s, 1),
        "cpus": os.cpu_count(), "threads": threads,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="binaryvit_tiny_32")
    p.add_argument("--batch-size", type=int, nargs="+", default=[128])
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first one traces)")
    p.add_argument("--jit-compile", action="store_true", help="XLA-compile the train step")
    p.add_argument("--both", action="store_true", help="measure without and with XLA")
    p.add_argument("--teacher-model", default=None, help="registry model run as a frozen teacher in each step")
    p.add_argument("--threads", type=int, default=None, help="TensorFlow intra/inter-op threads")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model config override, as in `edgebvit train --set`")
    p.add_argument("--json", dest="json_out", default=None, help="also write the results to this file")
    args = p.parse_args(argv)

    import edgebvit  # noqa: F401  (selects tf_keras before TensorFlow loads)
    from edgebvit.training.config import parse_overrides
    from edgebvit.errors import EdgebvitError

    try:
        overrides = parse_overrides(args.overrides)
        results = []
        for bs in args.batch_size:
            for jit in ([False, True] if args.both else [args.jit_compile]):
                r = measure(args.model, bs, args.steps, args.warmup, jit, args.teacher_model, overrides, args.threads)
                print(json.dumps(r), flush=True)
                results.append(r)
    except EdgebvitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json_out:
        from edgebvit.fileio import atomic_write_json

        atomic_write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
