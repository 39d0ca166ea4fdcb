#!/usr/bin/env python
"""Export every matching registered variant at its full size and report what LCE made of it.

    python tools/zoo_export_report.py                      # the 32x32 (small-image) variants
    python tools/zoo_export_report.py 'bhvit_*_32' --out runs/zoo_report
    python tools/zoo_export_report.py binaryvit_tiny_32 --parity 64

Per variant: parameters (binary / float, as larq counts them), flatbuffer size and its float32
equivalent, `LceBconv2d` count against the Keras model's binary convolutions, float convs and
constant-weight FULLY_CONNECTED left, the binary MAC share with and without the attention matmuls,
the attention MACs, and parity (LCE interpreter vs Keras) on random inputs with trained-looking
BatchNorm statistics. The models are freshly initialised, with a little noise on every float
constant so that no two share a buffer (as in a trained model): sizes and operator counts then do
not depend on training; accuracy does and is not reported here. Writes `zoo_export.json` and
`zoo_export.md` (a markdown table) into --out, atomically, one row as soon as it is measured.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


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


def measure(name: str, parity_samples: int) -> dict:
    import numpy as np
    import tensorflow as tf

    from edgebvit.converters.export import ExportOptions, convert
    from edgebvit.converters.inspect import inspect_flatbuffer
    from edgebvit.converters.parity import check_parity
    from edgebvit.models import create_model
    from edgebvit.models.profile import profile_model
    from edgebvit.models.layers import binary_layers

    tf.keras.utils.set_random_seed(0)
    model = create_model(name)
    rng = np.random.default_rng(0)
    _trained_looking(model, rng)
    stats = profile_model(model)
    t0 = time.perf_counter()
    flatbuffer = convert(model, ExportOptions())
    convert_s = time.perf_counter() - t0
    report = inspect_flatbuffer(flatbuffer)
    keras_bconvs = len(binary_layers(model))
    counts = report.op_counts()
    x = rng.normal(size=(parity_samples, *model.input_shape[1:])).astype(np.float32)
    parity = check_parity(model, flatbuffer, x)
    return {
        "model": name,
        "binary_params": stats.binary_params,
        "float_params": stats.float_params,
        "flatbuffer_bytes": report.file_bytes,
        "float32_equivalent_bytes": report.float32_equivalent_bytes,
        "lce_bconv2d": counts.get("LceBconv2d", 0),
        "keras_binary_convs": keras_bconvs,
        "float_conv2d": counts.get("CONV_2D", 0) + counts.get("DEPTHWISE_CONV_2D", 0),
        "float_fc_const": sum(op.op_type == "FULLY_CONNECTED" and not op.attention for op in report.ops),
        "total_macs": report.total_macs,
        "attention_macs": report.attention_macs,
        "binary_mac_share": report.binary_mac_share,
        "binary_mac_share_excluding_attention": report.binary_mac_share_excluding_attention,
        "grouped_bconv": report.has_grouped_bconv,
        "parity_top1": parity.top1_agreement,
        "parity_max_abs_diff": parity.max_abs_diff,
        "parity_samples": parity.samples,
        "convert_seconds": round(convert_s, 1),
    }


def to_markdown(rows) -> str:
    head = ("| variant | params binary / float | flatbuffer (float32 eq.) | LceBconv2d / Keras binary convs "
            "| float CONV_2D, const FC | binary MACs (excl. attention) | attention MACs | parity top-1, max diff |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        lines.append(
            f"| `{r['model']}` | {r['binary_params'] / 1e6:.2f} M / {r['float_params'] / 1e6:.2f} M "
            f"| {r['flatbuffer_bytes'] / 1024:.0f} KiB ({r['float32_equivalent_bytes'] / 1024:.0f} KiB) "
            f"| {r['lce_bconv2d']} / {r['keras_binary_convs']} | {r['float_conv2d']}, {r['float_fc_const']} "
            f"| {100 * r['binary_mac_share']:.1f}% ({100 * r['binary_mac_share_excluding_attention']:.1f}%) "
            f"| {r['attention_macs'] / 1e6:.2f} M | {100 * r['parity_top1']:.0f}%, {r['parity_max_abs_diff']:.2g} |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", default=["*_32", "*_32_*"],
                        help="registry names or globs (default: the 32x32 variants)")
    parser.add_argument("--out", default="runs/zoo_report", help="output directory")
    parser.add_argument("--parity", type=int, default=32, help="random inputs for the parity check")
    parser.add_argument("--students-only", action=argparse.BooleanOptionalAction, default=True,
                        help="skip the float teachers (default: on)")
    args = parser.parse_args(argv)

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
    rows = []
    for name in names:
        print(f"{name} ...", flush=True)
        rows.append(measure(name, args.parity))
        print(json.dumps(rows[-1]), flush=True)
        atomic_write_json(os.path.join(args.out, "zoo_export.json"), rows)
        atomic_write_text(os.path.join(args.out, "zoo_export.md"), to_markdown(rows))
    print(to_markdown(rows))
    print(f"wrote {os.path.join(args.out, 'zoo_export.md')} and zoo_export.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
