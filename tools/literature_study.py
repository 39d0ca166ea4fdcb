#!/usr/bin/env python3
"""The literature's heads side by side on Fashion-MNIST under one budget (docs/papers.md 4).

    .venv/bin/python tools/literature_study.py --out runs/literature

trains one float teacher (cnn_small_32), then binaryvit_tiny_32 and its literature variants
(+ DeiT distillation token, + CaiT class attention, + both) with the same data, epochs, seed,
learning rate and teacher, every one with DeiT's hard distillation (weight 0.5: the label term
and the teacher's argmax; for a distilled model the latter goes to its distillation head). Each
run is exported to an LCE flatbuffer whose parity gate runs on all 10,000 test images, so the
table gives the flatbuffer's test accuracy beside Keras's. Every step is the public CLI; a study
that is interrupted resumes where it stopped (finished runs and exports are kept).

Runs live in STUDY/<model>/seed<S> (`--seeds 0 1 2` repeats every student over seeds, the teacher
is trained once, with the first seed); writes STUDY/table.md (mean +- sample std over seeds) and
STUDY/table.csv (one row per run).
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STUDENTS = ["binaryvit_tiny_32", "binaryvit_tiny_32_distill", "binaryvit_tiny_32_cait", "binaryvit_tiny_32_cait_distill"]
TEACHER = "cnn_small_32"


def cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "edgebvit", *args]
    print(f"\n=== edgebvit {' '.join(shlex.quote(a) for a in args)}", flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        sys.exit(f"literature_study: `edgebvit {args[0]}` failed (exit {proc.returncode}); rerun to resume")


def train(run_dir: Path, model: str, budget: list, extra: list = ()) -> None:
    """Train into run_dir, resuming an interrupted run; a finished one (summary.json) is kept."""
    if (run_dir / "summary.json").is_file():
        print(f"=== {run_dir}: finished, kept")
        return
    if (run_dir / "config.json").is_file():
        cli("train", "--resume", str(run_dir))
    else:
        cli("train", "--model", model, *budget, *extra, "--out", str(run_dir))


def test_set(path: Path) -> None:
    """All Fashion-MNIST test images, model-ready as training feeds them (32x32, normalised)."""
    if path.is_file():
        return
    import numpy as np

    import edgebvit  # noqa: F401
    from edgebvit.fileio import atomic_write_bytes
    from edgebvit.training.data import load_dataset, normalize
    import io

    ds = load_dataset("fashion_mnist", image_size=32, channels=1)
    buf = io.BytesIO()
    np.savez_compressed(buf, x=normalize(ds.x_test), y=np.asarray(ds.y_test, np.int64))
    atomic_write_bytes(path, buf.getvalue())


def row(run_dir: Path, model: str, seed: int) -> dict:
    import edgebvit  # noqa: F401
    from edgebvit.models.profile import zoo_stats

    summary = json.loads((run_dir / "summary.json").read_text())
    report = json.loads((run_dir / "model.export.json").read_text())
    ins, par = report["inspection"], report["parity"]
    macs = ins["macs"]
    stats = zoo_stats(model, input_shape=(32, 32, 1), num_classes=10)
    return {
        "model": model,
        "seed": seed,
        "binary_params": stats.binary_params,
        "float_params": stats.float_params,
        "binary_macs": macs["by_precision"]["binary"],
        "float_macs": macs["by_precision_excluding_attention"]["float"],
        "attention_macs": macs["attention"],
        "flatbuffer_kib": round(ins["file_bytes"] / 1024, 1),
        "operators": sum(ins["ops_per_block"].values()),
        "keras_test_accuracy": round(100 * par["keras_top1"], 2),
        "flatbuffer_test_accuracy": round(100 * par["lce_top1"], 2),
        "top1_agreement": round(100 * par["top1_agreement"], 2),
        "test_images": par["samples"],
        "train_seconds": round(summary.get("train_seconds_this_session", 0.0)),
        "images_per_second": round(summary.get("images_per_second", 0.0), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/literature"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-train-samples", type=int, default=12000)
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--lr", default="2e-3")
    ap.add_argument("--models", nargs="+", default=STUDENTS)
    opts = ap.parse_args()
    study = opts.out
    study.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = ["--data", "fashion_mnist", "--max-train-samples", str(opts.max_train_samples), "--batch-size", "128"]
    teacher = study / "teacher"
    train(teacher, TEACHER, [*data, "--seed", str(opts.seeds[0]), "--epochs", str(opts.teacher_epochs)])
    budget = [*data, "--epochs", str(opts.epochs), "--lr", opts.lr]
    distill = ["--teacher", str(teacher), "distill.mode=hard", "distill.weight=0.5"]
    tests = study / "test_set.npz"
    test_set(tests)
    rows = []
    for seed in opts.seeds:
        for model in opts.models:
            run_dir = study / model / f"seed{seed}"
            train(run_dir, model, [*budget, "--seed", str(seed)], distill)
            if not (run_dir / "model.export.json").is_file() or not (run_dir / "model.tflite").is_file():
                cli("export", str(run_dir), "--tflite", "--parity-data", str(tests), "--parity-images", "10000")
            rows.append(row(run_dir, model, seed))
    with (study / "table.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    def spread(values) -> str:
        if len(values) == 1:
            return f"{values[0]:.2f}%"
        return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}%"

    head = ("| model | params binary / float | MACs binary / float / attention | flatbuffer | operators | "
            "Keras test | flatbuffer test | agreement (lowest) |")
    lines = [head, "|" + "---|" * 8]
    for model in opts.models:
        runs = [r for r in rows if r["model"] == model]
        r = runs[0]
        lines.append(
            f"| {model} | {r['binary_params'] / 1e6:.2f} M / {r['float_params'] / 1e3:.1f} k | "
            f"{r['binary_macs'] / 1e6:.1f} M / {r['float_macs'] / 1e6:.2f} M / {r['attention_macs'] / 1e6:.2f} M | "
            f"{r['flatbuffer_kib']} KiB | {r['operators']} | {spread([x['keras_test_accuracy'] for x in runs])} | "
            f"{spread([x['flatbuffer_test_accuracy'] for x in runs])} | "
            f"{min(x['top1_agreement'] for x in runs):.2f}% |")
    t_acc = json.loads((teacher / "summary.json").read_text())["test_accuracy"]
    seeds = ", ".join(map(str, opts.seeds))
    lines.append("")
    lines.append(f"Budget: {opts.max_train_samples} Fashion-MNIST training images, {opts.epochs} epochs, batch 128, "
                 f"lr {opts.lr}, seeds {seeds} (mean +- sample std); DeiT hard distillation (weight 0.5) from "
                 f"{TEACHER} ({opts.teacher_epochs} epochs, test accuracy {t_acc:.2%}). Test accuracies on all "
                 f"{rows[0]['test_images']} test images; sizes and counts of the first seed's run. "
                 f"This invocation took {time.perf_counter() - start:.0f} s.")
    (study / "table.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
