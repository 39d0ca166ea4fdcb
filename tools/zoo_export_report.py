#!/usr/bin/env python
"""Export every matching zoo variant in each integer mode, side by side, and measure each flatbuffer.

    python tools/zoo_export_report.py                  # the 32x32 students + binaryvit_pyramid_s_224, bhvit_small
    python tools/zoo_export_report.py 'bhvit_*_32' --out runs/zoo_report
    python tools/zoo_export_report.py binaryvit_tiny_32 --modes none,attention,full --parity 64

Per variant and mode (`--integer none`: the float remainder; `attention`: exact int8 attention and
the lean graph; `full`: calibrated int8 everywhere else too, docs/integer.md), measured in one run
on this machine: flatbuffer size and its ratio to float32 (the float32 equivalent of the
`--integer none` flatbuffer's constants, the same denominator for every mode), operator count,
`LceBconv2d` against the Keras model's binary convolutions, MACs by precision (binary / int8 /
float), the share of the attention MACs in int8 ops, parity with the Keras model (LCE interpreter,
random inputs), and host latency with 1 thread (median; x86 runs LCE's reference binary kernels and
TFLite's optimised int8 ones: a ratio on this machine, not ARM speed).

The models are freshly initialised, with trained-looking BatchNorm statistics and a little noise on
every float constant so that no two share a buffer (as in a trained model): sizes, operator counts
and MACs then do not depend on training; accuracy does and is not reported here. `full` is
calibrated on random inputs (other samples than the parity ones), so its parity here says nothing
about a trained model's; its size and operators do. The flatbuffers are kept in --out as
`NAME.MODE.tflite` (`tools/latency_table.py --out DIR --estimate-only` estimates device latency
from them); `zoo_export.json` and `zoo_export.md` are rewritten atomically after every variant (rows of
variants not exported in this run stay, so the 224 models can run with other modes).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

DEFAULT = ["*_32", "*_32_*", "binaryvit_pyramid_s_224", "bhvit_small"]
MODES = ("none", "attention", "full")
DEFAULT_MODES = "none,attention"


def _trained_looking(model, rng) -> None:
    """Give a fresh model distinct, trained-looking float constants.

    BN statistics are drawn so logits are not near-tied (parity then means something). Every other
    float weight gets a little noise: at initialisation many constants are identical (zero biases,
    0.25 PReLU slopes, LayerScale inits) and the flatbuffer stores identical buffers once, which
    would understate a trained model's size.
    """
    import tensorflow as tf

    from edgebvit.models.layers import binary_latent_kernels, latent

    binary = {id(k) for k in binary_latent_kernels(model)}
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            g, b, mu, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0.0, 0.3, b.shape),
                               rng.normal(0.0, 0.3, mu.shape), rng.uniform(0.5, 1.5, v.shape)])
    for w in model.trainable_weights:
        w = latent(w)
        if id(w) in binary or not w.dtype.is_floating:
            continue
        value = w.numpy()
        w.assign(value + rng.normal(0.0, 1e-3, value.shape).astype(value.dtype))


def flatbuffer_row(report, float32_bytes: int) -> dict:
    """What one flatbuffer is: size, operators, MACs by precision, attention in int8."""
    by = report.macs_by_precision()
    counts = report.op_counts()
    return {
        "file_bytes": report.file_bytes,
        "size_ratio": float32_bytes / report.file_bytes,
        "ops": len(report.ops),
        "lce_bconv2d": counts.get("LceBconv2d", 0),
        "float_conv2d": sum(op.op_type in ("CONV_2D", "DEPTHWISE_CONV_2D") and op.precision == "float"
                            for op in report.ops),
        "float_fc_const": sum(op.op_type == "FULLY_CONNECTED" and not op.attention and op.precision == "float"
                              for op in report.ops),
        "macs": {"binary": by["binary"], "int8": by["int8"], "float": by["float"]},
        "total_macs": report.total_macs,
        "attention_macs": report.attention_macs,
        "attention_int8_share": report.attention_int8_share,
        "binary_mac_share_excluding_attention": report.binary_mac_share_excluding_attention,
        "grouped_bconv": report.has_grouped_bconv,
    }


def host_latency_ms(flatbuffer: bytes, *, runs: int, indirect_bgemm: bool) -> float:
    """Median of `runs` single-sample invocations, 1 thread, after 3 warm-up runs."""
    from edgebvit.bench.interp_bench import bench_one

    out = bench_one(flatbuffer, threads=1, xnnpack=False, indirect_bgemm=indirect_bgemm, warmup=3, runs=runs)
    return statistics.median(out["latencies_us"]) / 1000.0


def measure(name: str, *, modes, parity_samples: int, latency_runs: int, out_dir: str) -> dict:
    import numpy as np
    import tensorflow as tf

    from edgebvit.converters.export import ExportOptions, convert
    from edgebvit.converters.integer import integer_model
    from edgebvit.converters.parity import check_parity
    from edgebvit.fileio import atomic_write_bytes
    from edgebvit.flatbuffer import read_flatbuffer
    from edgebvit.models import create_model
    from edgebvit.models.layers import binary_layers
    from edgebvit.models.profile import profile_model

    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    model = create_model(name)
    rng = np.random.default_rng(0)
    _trained_looking(model, rng)
    stats = profile_model(model)
    shape = model.input_shape[1:]
    x = rng.normal(size=(parity_samples, *shape)).astype(np.float32)
    row = {"model": name, "binary_params": stats.binary_params, "float_params": stats.float_params,
           "keras_binary_convs": len(binary_layers(model)), "modes": {}}
    float32_bytes = None
    for mode in modes:
        calibration = None
        if mode == "full":
            images = rng.normal(size=(64, *shape)).astype(np.float32)
            calibration = ("random normal inputs", "-", images)
        try:
            to_convert, info = integer_model(model, mode, calibration=calibration)
            t0 = time.perf_counter()
            flatbuffer = convert(to_convert, ExportOptions(integer=mode))
            convert_s = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - a variant without this mode gets a row saying why
            row["modes"][mode] = {"refused": f"{type(e).__name__}: {e}".splitlines()[0]}
            print(f"  {name} --integer {mode}: refused: {row['modes'][mode]['refused']}", flush=True)
            continue
        atomic_write_bytes(os.path.join(out_dir, f"{name}.{mode}.tflite"), flatbuffer)
        report = read_flatbuffer(flatbuffer)
        if float32_bytes is None:  # the first mode's (none's) float32 equivalent is every mode's denominator
            float32_bytes = report.float32_equivalent_bytes
            row["float32_equivalent_bytes"] = float32_bytes
        r = flatbuffer_row(report, float32_bytes)
        r["exported_as"] = info.get("mode", mode)
        if info.get("note"):
            r["note"] = info["note"]
        parity = check_parity(model, flatbuffer, x, synthetic=True)
        r.update({"parity_top1": parity.top1_agreement, "parity_max_abs_diff": parity.max_abs_diff,
                  "parity_relative_error": parity.relative_error, "parity_samples": parity.samples,
                  "convert_seconds": round(convert_s, 1)})
        if latency_runs:
            r["host_ms_1thread"] = host_latency_ms(flatbuffer, runs=latency_runs,
                                                   indirect_bgemm=parity.indirect_bgemm)
        row["modes"][mode] = r
        print(f"  {name} --integer {mode}: {r['file_bytes'] / 1024:.0f} KiB ({r['size_ratio']:.1f}x), "
              f"{r['ops']} ops, parity {100 * r['parity_top1']:.0f}%"
              + (f", {r['host_ms_1thread']:.2f} ms" if latency_runs else ""), flush=True)
    return row


def _kept_rows(out_dir: str) -> list:
    try:
        with open(os.path.join(out_dir, "zoo_export.json")) as f:
            rows = json.load(f)
    except (OSError, ValueError):
        return []
    return [r for r in rows if isinstance(r, dict) and "modes" in r]  # not the table of older versions


def time_kept(out_dir: str, names, *, runs: int) -> int:
    """Re-time every kept flatbuffer of the rows in zoo_export.json whose variant matches `names`."""
    from edgebvit.fileio import atomic_write_json, atomic_write_text
    from edgebvit.flatbuffer import read_flatbuffer

    path = os.path.join(out_dir, "zoo_export.json")
    try:
        with open(path) as f:
            rows = json.load(f)
    except (OSError, ValueError) as e:
        print(f"error: cannot read {path} ({e}); run without --time-only first", file=sys.stderr)
        return 2
    for row in rows:
        if row["model"] not in names:
            continue
        for mode, m in row["modes"].items():
            if "refused" in m:
                continue
            with open(os.path.join(out_dir, f"{row['model']}.{mode}.tflite"), "rb") as f:
                flatbuffer = f.read()
            m["host_ms_1thread"] = host_latency_ms(flatbuffer, runs=runs,
                                                   indirect_bgemm=read_flatbuffer(flatbuffer).has_grouped_bconv)
            print(f"  {row['model']} --integer {mode}: {m['host_ms_1thread']:.2f} ms", flush=True)
    atomic_write_json(path, rows)
    atomic_write_text(os.path.join(out_dir, "zoo_export.md"), to_markdown(rows))
    print(to_markdown(rows))
    return 0


def _macs(m: int) -> str:
    return f"{m / 1e9:.2f} G" if m >= 1e9 else f"{m / 1e6:.1f} M"


def to_markdown(rows) -> str:
    head = ("| variant | mode | size (vs float32) | ops | LceBconv2d / Keras binary convs "
            "| MACs binary / int8 / float | attention MACs in int8 | parity top-1, rel. error "
            "| host 1 thread (vs none) |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        base = r["modes"].get("none", {}).get("host_ms_1thread")
        for mode, m in r["modes"].items():
            if "refused" in m:
                lines.append(f"| `{r['model']}` | {mode} | refused: {m['refused']} | | | | | | |")
                continue
            mode_cell = mode if m["exported_as"] == mode else f"{mode} (as {m['exported_as']})"
            latency = ""
            if "host_ms_1thread" in m:
                latency = f"{m['host_ms_1thread']:.2f} ms"
                if base and mode != "none":
                    latency += f" ({m['host_ms_1thread'] / base:.2f}x)"
            macs = m["macs"]
            att = f"{100 * m['attention_int8_share']:.0f}%" if m["attention_macs"] else "-"
            lines.append(
                f"| `{r['model']}` | {mode_cell} | {m['file_bytes'] / 1024:.0f} KiB ({m['size_ratio']:.1f}x) "
                f"| {m['ops']} | {m['lce_bconv2d']} / {r['keras_binary_convs']} "
                f"| {_macs(macs['binary'])} / {_macs(macs['int8'])} / {_macs(macs['float'])} | {att} "
                f"| {100 * m['parity_top1']:.0f}%, {m['parity_relative_error']:.1g} | {latency} |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", default=DEFAULT,
                        help="registry names or globs (default: the 32x32 students and the two ImageNet models)")
    parser.add_argument("--out", default="runs/zoo_report", help="output directory (tables and flatbuffers)")
    parser.add_argument("--modes", default=DEFAULT_MODES,
                        help=f"comma-separated --integer modes to export, none first (from {', '.join(MODES)})")
    parser.add_argument("--parity", type=int, default=32, help="random inputs for the parity check")
    parser.add_argument("--latency-runs", type=int, default=30,
                        help="timed single-sample runs per flatbuffer for the 1-thread host median (0: skip)")
    parser.add_argument("--time-only", action="store_true",
                        help="only re-time the flatbuffers kept in --out (all modes of all rows, in this one run: "
                             "convert on a busy machine, time on a quiet one)")
    parser.add_argument("--students-only", action=argparse.BooleanOptionalAction, default=True,
                        help="skip the float teachers (default: on)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes or modes[0] != "none":
        print(f"error: --modes must start with none and name only {', '.join(MODES)} (got {args.modes!r})",
              file=sys.stderr)
        return 2

    import edgebvit  # noqa: F401  (tf_keras before TensorFlow)
    from edgebvit.fileio import atomic_write_json, atomic_write_text
    from edgebvit.models import get_model_info, list_models

    names = [n for n in list_models() if any(fnmatch.fnmatch(n, p) for p in args.patterns)]
    if args.students_only:
        names = [n for n in names if get_model_info(n).role == "student"]
    if not names:
        print(f"error: no registered model matches {' '.join(args.patterns)}; see `edgebvit models`", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    if args.time_only:
        return time_kept(args.out, names, runs=args.latency_runs or 30)
    rows = _kept_rows(args.out)  # rows of other variants from earlier runs stay; these are replaced
    for name in names:
        print(f"{name} ...", flush=True)
        row = measure(name, modes=modes, parity_samples=args.parity, latency_runs=args.latency_runs,
                      out_dir=args.out)
        rows = [r for r in rows if r["model"] != name] + [row]
        print(json.dumps(row), flush=True)
        atomic_write_json(os.path.join(args.out, "zoo_export.json"), rows)
        atomic_write_text(os.path.join(args.out, "zoo_export.md"), to_markdown(rows))
    print(to_markdown(rows))
    print(f"wrote {os.path.join(args.out, 'zoo_export.md')} and zoo_export.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
