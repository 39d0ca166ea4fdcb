#!/usr/bin/env python
"""Calibrate edgebvit's ARM64 latency estimate on published Larq Zoo measurements.

Two steps; the first needs larq-zoo, the second only this repository:

    # 1. operator lists: build the Larq Zoo architectures (no weights), convert them with LCE
    #    (target arm, as benchmarked) and store one row per operator in tools/latency/zoo_ops.json.
    #    larq-zoo 2.4.0 pins protobuf<3.21 and pulls zookeeper/tensorflow-datasets, so install it
    #    beside the venv, not into it:
    pip install --no-deps --target /tmp/lqz larq-zoo==2.4.0 zookeeper==1.4.0 'typeguard>=3,<5'
    PYTHONPATH=/tmp/lqz .venv/bin/python tools/fit_latency.py convert

    # 2. fit: per device profile, non-negative least squares on relative error over the
    #    published latencies (tools/latency/published.json, with sources), leave-one-out errors,
    #    4-thread profiles scaled from 1-thread ones; writes edgebvit/bench/latency_profiles.json.
    .venv/bin/python tools/fit_latency.py fit
    # add your own measurements (bench records of lce_benchmark_model on the device, whose
    # flatbuffers are still on disk) to a profile's calibration set, into a file of your own:
    .venv/bin/python tools/fit_latency.py fit --add-measured pi4b-1t:runs/x/bench_results.jsonl \\
        --out ~/edgebvit_profiles.json     # then: edgebvit inspect F --latency-profiles that file

The int8 rows: the published "_int8" latencies of the QuickNets are the same architectures with
their float layers in int8; their operator lists are reconstructed here by converting with LCE's
``experimental_default_int8_range`` (which makes every float tensor int8), an assumption the
profiles file records.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLISHED = os.path.join(HERE, "latency", "published.json")
ZOO_OPS = os.path.join(HERE, "latency", "zoo_ops.json")
PROFILES_OUT = os.path.join(HERE, "..", "edgebvit", "bench", "latency_profiles.json")
ZOO_MODELS = ("QuickNetSmall", "QuickNet", "QuickNetLarge", "RealToBinaryNet", "BinaryDenseNet45",
              "BinaryDenseNet37Dilated", "BinaryDenseNet37", "MeliusNet22", "BinaryDenseNet28", "BinaryResNetE18",
              "BiRealNet", "XNORNet", "BinaryAlexNet")
INT8_MODELS = ("QuickNetSmall", "QuickNet", "QuickNetLarge")
INT8_RANGE = (-3.0, 3.0)
DEVICES = {"pi4b": "Raspberry Pi 4B (Cortex-A72, 1.5 GHz)", "pixel1": "Pixel 1 (Snapdragon 821)"}
FIT_SOURCE = "larq-docs-zoo"  # one benchmark campaign, 13 models, both devices, 1 thread
THREAD_SOURCE = "lce-readme"  # 1- and 4-thread QuickNet numbers of one later campaign


# ---- step 1: convert ------------------------------------------------------------------------
def _import_larq_zoo():
    """larq_zoo, whose package __init__ imports zookeeper's training helpers, which import
    tensorflow_datasets; the model definitions never use it, so a placeholder module stands in."""
    import types

    if "tensorflow_datasets" not in sys.modules:
        try:
            import tensorflow_datasets  # noqa: F401
        except ImportError:
            class _Any(type):
                def __getattr__(cls, name):
                    return _Placeholder

            class _Placeholder(metaclass=_Any):
                pass

            mod = types.ModuleType("tensorflow_datasets")
            mod.__getattr__ = lambda name: _Placeholder
            sys.modules["tensorflow_datasets"] = mod
    try:
        import larq_zoo
    except ImportError:
        sys.exit("larq-zoo is not importable: install it beside the venv (see this script's docstring) "
                 "and put it on PYTHONPATH")
    return larq_zoo


def convert(models, out_path: str) -> int:
    import larq_compute_engine as lce
    import tensorflow as tf

    from edgebvit.bench.latency import op_rows
    from edgebvit.fileio import atomic_write_json
    from edgebvit.flatbuffer import parse

    lqz = _import_larq_zoo()
    done = {}
    if os.path.exists(out_path):
        with open(out_path) as f:
            done = {(m["model"], m["variant"]): m for m in json.load(f).get("models", [])}
    published = json.load(open(PUBLISHED))["published_macs"]
    jobs = [(m, "float") for m in models] + [(m, "int8") for m in models if m in INT8_MODELS]
    for name, variant in jobs:
        if (name, variant) in done:
            continue
        t0 = time.time()
        tf.keras.backend.clear_session()
        module = lqz.sota if hasattr(lqz.sota, name) else lqz.literature
        model = getattr(module, name)(weights=None)
        kwargs = {"experimental_default_int8_range": INT8_RANGE} if variant == "int8" else {}
        data = lce.convert_keras_model(model, target="arm", **kwargs)
        report = parse(data, f"{name}.tflite")
        rows = op_rows(report)
        by = report.macs_by_precision()
        entry = {"model": name, "variant": variant, "file_bytes": report.file_bytes,
                 "macs": {"binary": by["binary"], "int8": by["int8"], "float": by["float"]},
                 "published_macs": published.get(name),
                 "converter": f"larq-compute-engine {lce.__version__}, tensorflow {tf.__version__}",
                 "ops": [r.to_list() for r in rows]}
        done[(name, variant)] = entry
        atomic_write_json(out_path, {"about": "One row per operator of each Larq Zoo model converted with LCE "
                                              "(tools/fit_latency.py convert): op type, precision, MACs, "
                                              "MACs with LCE's channel padding, output bytes, part.",
                                     "models": list(done.values())})
        pub = published.get(name)
        check = ""
        if pub and variant == "float":
            check = f" (published {pub[0] / 1e9:.3f} G binary, {pub[1] / 1e6:.1f} M float)"
        print(f"{name:<24}{variant:<6}{len(rows):>5} ops  {by['binary'] / 1e9:.3f} G binary  "
              f"{by['float'] / 1e6:7.1f} M float  {by['int8'] / 1e6:7.1f} M int8{check}  {time.time() - t0:.0f} s",
              flush=True)
    return 0


# ---- step 2: fit ----------------------------------------------------------------------------
def _points(published, zoo, profile: str, source: str):
    from edgebvit.bench.latency import CalibrationPoint, OpRow, total_terms

    rows = {(m["model"], m["variant"]): [OpRow.from_list(r) for r in m["ops"]] for m in zoo["models"]}
    pts = []
    excluded = published.get("excluded", {})
    for m in published["measurements"]:
        if m["profile"] != profile or m["source"] != source or m["model"] in excluded:
            continue
        key = (m["model"], m["variant"])
        if key not in rows:
            sys.exit(f"{m['model']} ({m['variant']}) has no operator list in {ZOO_OPS}: run `convert` first")
        note = "operator list reconstructed with experimental_default_int8_range" if m["variant"] == "int8" else ""
        label = m["model"] + (" int8" if m["variant"] == "int8" else "")
        pts.append(CalibrationPoint(model=label, published_ms=float(m["ms"]), terms=total_terms(rows[key]),
                                    source=source, note=note))
    return pts, rows


def _measured_points(spec: str):
    """PROFILE:RESULTS.jsonl -> (profile, points) from device bench records whose flatbuffer is on disk."""
    import hashlib
    from pathlib import Path

    from edgebvit.bench.latency import CalibrationPoint, op_rows, total_terms
    from edgebvit.bench.records import load_records
    from edgebvit.flatbuffer import read_flatbuffer

    profile, _, path = spec.partition(":")
    if not path:
        sys.exit(f"--add-measured wants PROFILE:RESULTS.jsonl, got {spec!r}")
    pts = []
    for r in load_records([Path(path)]):
        if r.runner != "lce_benchmark_model" or r.device == "local":
            continue
        f = Path(r.model_path)
        if not f.is_file() or hashlib.sha256(f.read_bytes()).hexdigest() != r.model_sha256:
            print(f"skipped: {f} is gone or changed since it was measured (sha256 differs)")
            continue
        ms = r.latency.median_ms if r.latency.median_ms is not None else r.latency.mean_ms
        pts.append(CalibrationPoint(model=f"{f.name} (measured, {r.device}, {r.threads} thr)", published_ms=ms,
                                    terms=total_terms(op_rows(read_flatbuffer(f))), source=path,
                                    note="user measurement"))
    return profile, pts


def fit(out_path: str, added) -> int:
    from edgebvit.bench.latency import PROFILES_FORMAT, TERMS, coefficients, fit_points, predict
    from edgebvit.fileio import atomic_write_json

    published = json.load(open(PUBLISHED))
    zoo = json.load(open(ZOO_OPS))
    extra = {}
    for spec in added or ():
        name, pts = _measured_points(spec)
        extra.setdefault(name, []).extend(pts)
    profiles = {}
    for dev, device in DEVICES.items():
        name = f"{dev}-1t"
        pts, rows = _points(published, zoo, name, FIT_SOURCE)
        pts += extra.get(name, [])
        f = fit_points(pts)
        op_types = sorted({r.op_type for m in zoo["models"] if m["model"] not in published.get("excluded", {})
                           for r in rows[(m["model"], m["variant"])]})
        print(f"\n{name}: {device}, 1 thread, {len(pts)} calibration points ({FIT_SOURCE})")
        for t in TERMS:
            print(f"  {t:<14}{f.coefficients[t]:12.6g}")
        print(f"  {'model':<30}{'published':>10}{'fitted':>9}{'LOO':>9}")
        for p, e_fit, e_loo in zip(pts, f.fitted_errors, f.loo_errors):
            print(f"  {p.model:<30}{p.published_ms:>8.1f}ms{e_fit:>+9.0%}{e_loo:>+9.0%}")
        print(f"  leave-one-out |error|: median {f.loo_median:.1%}, max {f.loo_max:.1%}")
        # Later, faster LCE releases on the same devices: the QuickNets of the README, each estimated
        # by a fit that left that model out.
        checks = []
        readme, _ = _points(published, zoo, name, THREAD_SOURCE)
        for c in readme:
            est = predict(coefficients(pts, leave_out=c.model), c)
            checks.append({"model": c.model, "published_ms": c.published_ms, "estimated_ms": est,
                           "error": est / c.published_ms - 1.0, "source": THREAD_SOURCE})
            print(f"  check {c.model:<24} published {c.published_ms:6.1f} ms ({THREAD_SOURCE}), "
                  f"estimated {est:6.1f} ms ({est / c.published_ms - 1:+.0%}, model left out of the fit)")
        sources = published["sources"]
        profiles[name] = {
            "device": device, "threads": 1, "coefficients": f.coefficients, "units": "see edgebvit.bench.latency",
            "loo_median_error": f.loo_median, "loo_max_error": f.loo_max, "calibration_models": len(pts),
            "calibration_source": f"{sources[FIT_SOURCE]['url']} (benchmarked {sources[FIT_SOURCE]['benchmarked']})",
            "op_types": op_types, "checks": checks, "excluded": published.get("excluded", {}),
            "calibration": [{"model": p.model, "published_ms": p.published_ms, "fitted_error": e1, "loo_error": e2,
                             "note": p.note} for p, e1, e2 in zip(pts, f.fitted_errors, f.loo_errors)],
        }
        # 4 threads: too few published points (the three QuickNets) for a fit of its own, so the
        # 1-thread coefficients are scaled by one factor. Leave-one-out over models: the left-out
        # model is estimated with 1-thread coefficients and a factor both fitted without it.
        name4 = f"{dev}-4t"
        four, _ = _points(published, zoo, name4, THREAD_SOURCE)
        if len(four) >= 2:
            def scale(excluded=None):
                b = coefficients(pts, leave_out=excluded)
                logs = [math.log(p.published_ms / predict(b, p)) for p in four if p.model != excluded]
                return math.exp(sum(logs) / len(logs)), b

            s, _ = scale()
            errs = []
            for p in four:
                s_i, b_i = scale(excluded=p.model)
                errs.append(s_i * predict(b_i, p) / p.published_ms - 1.0)
            abs_errs = sorted(abs(e) for e in errs)
            n = len(abs_errs)
            med = (abs_errs[(n - 1) // 2] + abs_errs[n // 2]) / 2
            worst = max(abs_errs + [f.loo_max])
            print(f"{name4}: 1-thread coefficients x {s:.3f} (fitted on {n} QuickNets, {THREAD_SOURCE}); "
                  f"leave-one-out errors {', '.join(f'{e:+.0%}' for e in errs)}")
            profiles[name4] = {
                "device": device, "threads": 4, "coefficients": {k: v * s for k, v in f.coefficients.items()},
                "loo_median_error": max(med, f.loo_median), "loo_max_error": worst, "calibration_models": n,
                "calibration_source": f"{sources[THREAD_SOURCE]['url']} (benchmarked {sources[THREAD_SOURCE]['benchmarked']})",
                "derived_from": (f"the {name} coefficients x {s:.3f}, one factor fitted on {n} published "
                                 f"QuickNet latencies; band: the larger of its and {name}'s errors"),
                "op_types": op_types,
                "calibration": [{"model": p.model, "published_ms": p.published_ms, "loo_error": e}
                                for p, e in zip(four, errs)],
            }
    atomic_write_json(out_path, {
        "format": PROFILES_FORMAT,
        "about": "ARM64 latency profiles for edgebvit's estimate, fitted by tools/fit_latency.py on published "
                 "Larq Zoo latencies (tools/latency/published.json); every number derived from them is an estimate.",
        "terms": list(TERMS),
        "int8_assumption": "the published QuickNet _int8 latencies are matched with operator lists converted with "
                           f"experimental_default_int8_range={list(INT8_RANGE)}",
        "profiles": profiles,
    })
    print(f"\nwrote {os.path.relpath(out_path)}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    c = sub.add_parser("convert", help="convert the Larq Zoo models and store their operator rows (needs larq-zoo)")
    c.add_argument("models", nargs="*", default=list(ZOO_MODELS))
    c.add_argument("--out", default=ZOO_OPS)
    f = sub.add_parser("fit", help="fit the device profiles from the stored operator rows")
    f.add_argument("--out", default=PROFILES_OUT)
    f.add_argument("--add-measured", action="append", metavar="PROFILE:RESULTS.jsonl",
                   help="add device bench records (lce_benchmark_model) to PROFILE's calibration set")
    args = ap.parse_args(argv)
    if args.step == "convert":
        return convert(args.models, args.out)
    return fit(os.path.abspath(os.path.expanduser(args.out)), args.add_measured)


if __name__ == "__main__":
    sys.exit(main())
