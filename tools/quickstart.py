#!/usr/bin/env python3
"""`make quickstart`: the main job on the default data, exactly as a user would run it.

1. edgebvit train   binaryvit_tiny_32 on the full Fashion-MNIST (Debian package), a time-boxed
                    schedule that fits in about 15 minutes on 2 cores
2. edgebvit export  LCE flatbuffer + report + parity check on 500 held-out test images (by default
                    with exact int8 attention and the lean graph); a second export with
                    --integer none (float outside the binary convs) for comparison
3. edgebvit bench   host latency through the LCE interpreter (reference kernels on x86-64)

then prints where everything is and the numbers that matter. Each step is the public CLI run as
a subprocess, so what you see here is what you get when you type the commands yourself.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

# Time-boxed for ~15 minutes of training at ~100 images/s on 2 cores: 2 epochs over 40k images.
DEFAULT_TRAIN_ARGS = [
    "--model", "binaryvit_tiny_32", "--data", "fashion_mnist",
    "--epochs", "2", "--max-train-samples", "40000", "--batch-size", "128", "--lr", "2e-3",
]


def run(step: str, args: list, ok=(0,)) -> float:
    cmd = [sys.executable, "-m", "edgebvit", *args]
    print(f"\n=== {step}: edgebvit {' '.join(shlex.quote(a) for a in args)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd)
    if proc.returncode not in ok:
        sys.exit(f"quickstart: step '{step}' failed (exit {proc.returncode}); see the message above")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="run directory (default runs/quickstart-<timestamp>)")
    ap.add_argument("--train-args", default=None,
                    help="replace the default training arguments (one string, shell-quoted)")
    opts = ap.parse_args()
    run_dir = Path(opts.out or f"runs/quickstart-{datetime.now():%Y%m%d-%H%M%S}")
    train_args = shlex.split(opts.train_args) if opts.train_args else DEFAULT_TRAIN_ARGS

    t_train = run("train", ["train", *train_args, "--out", str(run_dir)])
    t_export = run("export", ["export", str(run_dir), "--tflite"])
    tflite = run_dir / "model.tflite"
    # The float-remainder export beside the default (integer attention where it passes the gate),
    # for the comparison row.
    none_tflite = run_dir / "model_none.tflite"
    t_export += run("export", ["export", str(run_dir), "--tflite", "--integer", "none", "-o", str(none_tflite)],
                    ok=(0, 3))
    t_bench = run("bench", ["bench", str(tflite), "--threads", "1,2", "--runs", "50", "--warmup", "5"])

    summary = json.loads((run_dir / "summary.json").read_text())
    export = json.loads((run_dir / "model.export.json").read_text())
    bench = json.loads((run_dir / "model.bench.json").read_text())
    macs = export["inspection"]["macs"]
    parity = export["parity"]
    size = export["inspection"]["file_bytes"]
    fp32 = export["inspection"]["float32_equivalent_bytes"]
    none_export = json.loads((run_dir / "model_none.export.json").read_text())
    default_label = f"--integer {export.get('integer', {}).get('mode', 'none')} (default)"

    print("\n" + "=" * 72)
    print("edgebvit quickstart: done")
    print("=" * 72)
    print(f"model               {summary['model']}  ({summary['model_stats']['total_params']:,} parameters, "
          f"{summary['model_stats']['binary_params']:,} binary)")
    print(f"test accuracy       {summary['test_accuracy']:.2%} on {summary['test_images']} Fashion-MNIST test images")
    print(f"training            {summary['epochs']} epochs, {summary['train_seconds_this_session']:.0f} s "
          f"({summary['images_per_second']:.0f} images/s); train step total {t_train:.0f} s incl. start-up")
    print(f"{'export':<30}{'size':>11}{'vs fp32':>9}{'operators':>11}{'binary MACs':>13}{'attention int8':>16}"
          f"{'parity':>9}")
    for label, rep in (("--integer none", none_export), (default_label, export)):
        ins, m, p = rep["inspection"], rep["inspection"]["macs"], rep["parity"]
        print(f"{label:<30}{ins['file_bytes'] / 1024:>8.1f} KiB{ins['float32_equivalent_bytes'] / ins['file_bytes']:>8.1f}x"
              f"{len(ins['ops']):>11}{m['binary_share']:>13.1%}{m.get('attention_int8_share', 0.0):>16.0%}"
              f"{p['top1_agreement']:>9.2%}{'' if rep['status'] == 'ok' else '  (' + rep['status'] + ')'}")
    print(f"flatbuffer          {size / 1024:.1f} KiB (float32 equivalent {fp32 / 1024:.1f} KiB, {fp32 / size:.1f}x smaller)")
    print(f"binary MAC share    {macs['binary_share']:.1%} of all MACs, "
          f"{macs['binary_share_excluding_attention']:.1%} excluding the attention matmuls "
          f"({macs.get('attention_int8_share', 0.0):.0%} of those in int8)")
    print(f"parity              top-1 agreement {parity['top1_agreement']:.2%} on {parity['samples']} held-out "
          f"images, max |logit diff| {parity['max_abs_diff']:.2e}")
    dead = export.get("integer", {}).get("dead_attention") or []
    if dead:
        print(f"warning             {len(dead)} attention core(s) trained to alpha <= 0 and output zeros "
              "(see the export report)")
    for rec in bench["records"]:
        lat = rec["latency"]
        print(f"host latency        {rec['threads']} thread(s): median {lat['median_ms']:.2f} ms, "
              f"p90 {lat['p90_ms']:.2f} ms  [{rec['kernel_notes'][0]}]")
    for label, rep in (("--integer none", none_export), (default_label, export)):
        for est in rep.get("latency_estimates", []):
            print(f"ARM64 (estimated)   {label}, {est['device']}, 1 thread: {est['total_ms']:.1f} ms "
                  f"(range {est['range_ms'][0]:.1f}-{est['range_ms'][1]:.1f}; not measured, docs/latency.md)")
    print(f"export + bench      {t_export:.0f} s + {t_bench:.0f} s")
    print("\nwhere everything is:")
    for label, path in [
        ("run directory", run_dir),
        ("run config", run_dir / "config.json"),
        ("Keras model", run_dir / "model.keras"),
        ("checkpoints", run_dir / "checkpoints"),
        ("metrics", run_dir / "metrics.csv"),
        ("TensorBoard logs", run_dir / "tensorboard"),
        ("flatbuffer", tflite),
        ("float remainder", none_tflite),
        ("export report", run_dir / "model.export.json"),
        ("bench report", run_dir / "model.bench.json"),
        ("bench records", run_dir / "bench_results.jsonl"),
    ]:
        print(f"  {label:<18} {path}")
    print(f"\nnext: tensorboard --logdir {run_dir / 'tensorboard'}   |   "
          f"edgebvit inspect {tflite} --plot {run_dir / 'macs.png'}")


if __name__ == "__main__":
    main()
