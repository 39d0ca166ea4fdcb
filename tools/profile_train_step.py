#!/usr/bin/env python
"""Where a training step's time goes: TensorFlow's profiler over edgebvit's train step, by op kind.

    python tools/profile_train_step.py --model binaryvit_tiny_32 --batch-size 128
    python tools/profile_train_step.py --model bhvit_tiny_32 --kernels reference --json out.json

It runs the step `edgebvit train` runs (`Trainer.train_step`, as tools/train_throughput.py does),
traces `--steps` steps with `tf.profiler.experimental`, reads the trace (XSpace protobuf) and
adds up the op times per step: by TensorFlow op type, and by kind (matmul/conv, BatchNorm,
element-wise and data movement, XLA-fused kernels, reductions, optimizer), forward and backward
apart, and by the layer the op belongs to. Op time is summed over TensorFlow's inter-op threads,
so on 2 cores it can approach twice the wall time; the wall time per step (with the profiler's own
overhead) is printed beside it. docs/training_speed.md reads these tables.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

KINDS = {
    "matmul/conv": ("Conv2D", "Conv2DBackpropFilter", "Conv2DBackpropInput", "_FusedConv2D", "DepthwiseConv2dNative",
                    "DepthwiseConv2dNativeBackpropFilter", "DepthwiseConv2dNativeBackpropInput", "BatchMatMulV2",
                    "MatMul"),
    "batchnorm": ("FusedBatchNormV3", "FusedBatchNormGradV3"),
    "reductions": ("Sum", "Mean", "Max", "Prod"),
    "XLA-fused kernels": ("Start",),  # ExecutorState::ProcessAsync::Start: an XlaLaunch's executable run
    "optimizer": ("ResourceApplyAdam", "ResourceApplyAdamWithAmsgrad", "AssignAddVariableOp", "AssignVariableOp",
                  "AssignSubVariableOp", "ResourceApplyGradientDescent"),
}
SKIP = ("Process", "ProcessAsync", "Done", "ExecutorState")


def kind_of(op_type: str) -> str:
    for kind, types in KINDS.items():
        if op_type in types:
            return kind
    return "element-wise and data movement"


def layer_of(op_name: str) -> str:
    """The layer an op belongs to, with block indices folded (block3_mlp_fc1_rprelu -> mlp_fc1_rprelu)."""
    parts = op_name.split("/")
    if parts[0] == "gradient_tape":
        parts = parts[1:]
    name = parts[1] if len(parts) > 1 else "(outside the model: gradients of custom ops, loss, optimizer)"
    return re.sub(r"^(block|s\d+b)\d+_", "", name)


def profile(model: str, batch_size: int, steps: int, kernels: str, overrides: dict) -> dict:
    import numpy as np
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from edgebvit.models import create_model
    from edgebvit.models.layers import fused
    from edgebvit.training import Trainer, make_optimizer
    from edgebvit.training.config import RunConfig

    fused.set_enabled(kernels == "fused")
    student = create_model(model, **overrides)
    shape, classes = tuple(student.input_shape[1:]), int(student.output_shape[-1])
    trainer = Trainer(student)
    trainer.compile(optimizer=make_optimizer(RunConfig(model=model, epochs=1, batch_size=batch_size), 100, student))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, (batch_size, *shape)).astype(np.float32))
    y = tf.one_hot(rng.integers(0, classes, batch_size), classes)
    step = trainer.make_train_function()
    data = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    for _ in range(3):  # trace, XLA compiles, warm caches
        step(data)["loss"].numpy()
    t0 = time.perf_counter()
    for _ in range(steps):
        out = step(data)
    out["loss"].numpy()
    wall_unprofiled = (time.perf_counter() - t0) / steps
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        t0 = time.perf_counter()
        for _ in range(steps):
            out = step(data)
        out["loss"].numpy()
        wall_profiled = (time.perf_counter() - t0) / steps
        tf.profiler.experimental.stop()
        path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
    by_type, by_kind, by_layer = collections.Counter(), collections.Counter(), collections.Counter()
    count = collections.Counter()
    for plane in space.planes:
        meta = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for ev in line.events:
                name = meta[ev.metadata_id].name
                if ":" not in name:
                    continue
                op, op_type = name.rsplit(":", 1)
                if op.startswith("ExecutorState::ProcessAsync") and op_type == "Start":
                    op = "(XLA-fused kernels)"  # an asynchronous op: on this CPU, an XlaLaunch running
                elif op_type in SKIP or op.startswith("ExecutorState"):
                    continue
                ms = ev.duration_ps / 1e9 / steps
                # Custom gradients (larq's sign, the fused kernels) are traced outside the layers'
                # name scopes: a top-level op is backward work (the loss ops are negligible).
                direction = "backward" if op.startswith("gradient_tape/") or "/" not in op else "forward"
                if op == "(XLA-fused kernels)":
                    direction = "forward and backward"
                by_type[op_type] += ms
                count[op_type] += 1
                by_kind[(kind_of(op_type), direction)] += ms
                by_layer[layer_of(op)] += ms
    total = sum(by_type.values())
    return {
        "model": model, "batch_size": batch_size, "kernels": kernels, "steps": steps, "overrides": overrides,
        "wall_ms_per_step": round(1000 * wall_unprofiled, 1), "wall_ms_per_step_profiled": round(1000 * wall_profiled, 1),
        "images_per_second": round(batch_size / wall_unprofiled, 1),
        "op_ms_per_step": round(total, 1),
        "by_kind": {f"{k} ({d})": round(v, 1) for (k, d), v in by_kind.most_common()},
        "by_op_type": {k: {"ms": round(v, 1), "ops_per_step": count[k] // steps} for k, v in by_type.most_common()},
        "by_layer": {k: round(v, 1) for k, v in by_layer.most_common()},
        "cpus": os.cpu_count(),
    }


def print_report(r: dict, top: int) -> None:
    total = r["op_ms_per_step"]
    print(f"{r['model']} batch {r['batch_size']}, {r['kernels']} kernels: {r['wall_ms_per_step']} ms/step "
          f"({r['images_per_second']} images/s; {r['wall_ms_per_step_profiled']} ms profiled), "
          f"op time {total:.0f} ms/step over {r['cpus']} CPUs")
    print("\nby kind                                        ms/step  share")
    for k, v in r["by_kind"].items():
        print(f"  {k:44s} {v:7.1f}  {v / total:5.1%}")
    print(f"\ntop {top} op types                              ms/step  ops/step")
    for k, v in list(r["by_op_type"].items())[:top]:
        print(f"  {k:44s} {v['ms']:7.1f}  {v['ops_per_step']:5d}")
    print(f"\ntop {top} layers (forward + backward)           ms/step")
    for k, v in list(r["by_layer"].items())[:top]:
        print(f"  {k[:44]:44s} {v:7.1f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="binaryvit_tiny_32")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="profiled steps (after 3 untimed ones)")
    p.add_argument("--kernels", choices=["fused", "reference"], default="fused")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args(argv)
    import edgebvit  # noqa: F401  (selects tf_keras before TensorFlow loads)
    from edgebvit.training.config import parse_overrides

    r = profile(args.model, args.batch_size, args.steps, args.kernels, parse_overrides(args.overrides))
    print_report(r, args.top)
    if args.json_out:
        from edgebvit.fileio import atomic_write_json

        atomic_write_json(args.json_out, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
