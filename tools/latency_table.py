#!/usr/bin/env python
"""Estimated ARM64 latency of every zoo variant, float-remainder export vs integer export.

    python tools/latency_table.py                   # the 32x32 students + ImageNet BinaryViT / BHViT
    python tools/latency_table.py 'binaryvit_tiny_32*' --out runs/latency_table
    python tools/latency_table.py --estimate-only   # re-estimate the kept flatbuffers (after a refit)

Each variant is built fresh (trained-looking constants, as in tools/zoo_export_report.py: sizes and
operator lists do not depend on training), converted twice: `--integer none` (everything that is
not a binary conv in float) and `--integer attention` (exact int8 attention, lean element-wise
graph; docs/integer.md). Both flatbuffers are kept in --out, and the table is computed from them
with the shipped latency profiles (edgebvit/bench/latency_profiles.json). Every number in the
table is an estimate with the profile's leave-one-out error band, not a measurement; it writes
latency_table.md and latency_table.json into --out atomically.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

DEFAULT = ["*_32", "*_32_*", "binaryvit_pyramid_s_224", "bhvit_small"]
MODES = ("none", "attention")
PROFILES = ("pi4b-1t", "pi4b-4t", "pixel1-1t")


def convert_variant(name: str, out_dir: str) -> dict:
    import numpy as np
    import tensorflow as tf

    from edgebvit.converters.export import ExportOptions, convert
    from edgebvit.converters.integer import integer_model
    from edgebvit.fileio import atomic_write_bytes
    from edgebvit.models import create_model
    from zoo_export_report import _trained_looking

    paths = {}
    for mode in MODES:
        path = os.path.join(out_dir, f"{name}.{mode}.tflite")
        paths[mode] = path
        if os.path.exists(path):
            continue
        tf.keras.backend.clear_session()
        tf.keras.utils.set_random_seed(0)
        model = create_model(name)
        _trained_looking(model, np.random.default_rng(0))
        to_convert, _ = integer_model(model, mode)
        t0 = time.perf_counter()
        data = convert(to_convert, ExportOptions(integer=mode))
        atomic_write_bytes(path, data)
        print(f"  {name} --integer {mode}: {len(data) / 1024:.0f} KiB in {time.perf_counter() - t0:.0f} s", flush=True)
    return paths


def estimate_variant(name: str, paths: dict, profiles: dict) -> dict:
    from edgebvit.bench.latency import estimate
    from edgebvit.flatbuffer import read_flatbuffer

    row = {"model": name}
    for mode, path in paths.items():
        rep = read_flatbuffer(path)
        row[mode] = {"file_bytes": rep.file_bytes, "ops": len(rep.ops),
                     "size_ratio": rep.float32_equivalent_bytes / rep.file_bytes,
                     "attention_int8_share": rep.attention_int8_share,
                     "estimates": {p: estimate(rep, profiles[p]).to_dict() for p in PROFILES}}
    return row


def to_markdown(rows, profiles) -> str:
    p1 = profiles["pi4b-1t"]
    head = ("| variant | size none / integer | ops none / integer | Pi 4B 1 thr: none | integer "
            "| of which attention (none -> integer) | extrapolated share | Pi 4B 4 thr: integer "
            "| Pixel 1 1 thr: integer |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        n, i = r["none"], r["attention"]
        en, ei = n["estimates"], i["estimates"]
        lines.append(
            f"| `{r['model']}` | {n['file_bytes'] / 1024:.0f} / {i['file_bytes'] / 1024:.0f} KiB "
            f"| {n['ops']} / {i['ops']} | {en['pi4b-1t']['total_ms']:.1f} ms "
            f"| {ei['pi4b-1t']['total_ms']:.1f} ms | {en['pi4b-1t']['parts_ms']['attention']:.1f} -> "
            f"{ei['pi4b-1t']['parts_ms']['attention']:.1f} ms "
            f"| {ei['pi4b-1t']['unseen_ms'] / ei['pi4b-1t']['total_ms']:.0%} "
            f"| {ei['pi4b-4t']['total_ms']:.1f} ms | {ei['pixel1-1t']['total_ms']:.1f} ms |")
    foot = (f"\nEstimated, not measured. Each figure carries its profile's leave-one-out error on published "
            f"Larq Zoo latencies (Pi 4B 1 thread: median {p1.loo_median_error:.0%}, max {p1.loo_max_error:.0%}; "
            f"4 threads: max {profiles['pi4b-4t'].loo_max_error:.0%}; Pixel 1: max "
            f"{profiles['pixel1-1t'].loo_max_error:.0%}). 'none' is `--integer none`; 'integer' is "
            "`--integer attention`. The extrapolated share is the part of the integer export's Pi 4B time "
            "in operator types that no calibration model has.\n")
    return head + "\n".join(lines) + "\n" + foot


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("patterns", nargs="*", default=DEFAULT, help="registry names or globs")
    ap.add_argument("--out", default="runs/latency_table", help="output directory (flatbuffers and tables)")
    ap.add_argument("--estimate-only", action="store_true", help="only re-estimate flatbuffers already in --out")
    args = ap.parse_args(argv)

    import edgebvit  # noqa: F401  (tf_keras before TensorFlow)
    from edgebvit.bench.latency import load_profiles
    from edgebvit.fileio import atomic_write_json, atomic_write_text
    from edgebvit.models import get_model_info, list_models

    names = [n for n in list_models() if any(fnmatch.fnmatch(n, p) for p in args.patterns)
             and get_model_info(n).role == "student"]
    if not names:
        print(f"error: no registered student matches {' '.join(args.patterns)}; see `edgebvit models`", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    if not args.estimate_only:  # all conversions first: a refit needs only --estimate-only
        for name in names:
            print(f"{name} ...", flush=True)
            convert_variant(name, args.out)
    profiles = load_profiles()
    rows = []
    for name in names:
        paths = {m: os.path.join(args.out, f"{name}.{m}.tflite") for m in MODES}
        if all(os.path.exists(p) for p in paths.values()):
            rows.append(estimate_variant(name, paths, profiles))
    atomic_write_json(os.path.join(args.out, "latency_table.json"), rows)
    atomic_write_text(os.path.join(args.out, "latency_table.md"), to_markdown(rows, profiles))
    print(to_markdown(rows, profiles))
    print(f"wrote {os.path.join(args.out, 'latency_table.md')} and latency_table.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
