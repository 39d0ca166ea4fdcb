"""`edgebvit export`: Keras/larq model -> LCE flatbuffer, with a report that explains it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

import click

from edgebvit.errors import ModelError
from edgebvit.fileio import json_default  # numpy scalars in reports


def _parse_range(value: Optional[str]) -> Optional[Tuple[float, float]]:
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise ModelError(f"--experimental-default-int8-range expects MIN,MAX (e.g. -3,3), got {value!r}") from None
    if not lo < hi:
        raise ModelError(f"--experimental-default-int8-range: MIN must be below MAX, got {value!r}")
    return lo, hi


@click.command("export")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--tflite", "tflite", is_flag=True, required=True, help="Write an LCE TFLite flatbuffer (the only format).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output .tflite (default: RUN_DIR/model.tflite, or next to the model file).")
@click.option("--target", type=click.Choice(["arm", "xcore"]), default="arm", show_default=True,
              help="LCE converter target.")
@click.option("--input-type", type=click.Choice(["float32", "int8"]), default="float32", show_default=True)
@click.option("--output-type", type=click.Choice(["float32", "int8"]), default="float32", show_default=True)
@click.option("--experimental-default-int8-range", "int8_range", metavar="MIN,MAX", default=None,
              help="EXPERIMENTAL, for latency tests only: fallback int8 ranges for float ops without "
                   "calibration. Outputs are not accurate; parity will usually fail.")
@click.option("--integer", type=click.Choice(["auto", "none", "attention", "full"]), default="auto", show_default=True,
              help="What runs in int8 besides the binary convs. attention: both attention matmuls in int8 with "
                   "exact ranges from the known value sets (+-1 Q/K/V, integer scores, the quantized "
                   "probabilities as integer counts; softmax in float between them), no calibration, plus the "
                   "lean graph (shifts folded into neighbouring biases, RPReLU as PRELU, pooling branches as "
                   "depthwise convs). full: also every other op in int8 with per-tensor ranges calibrated on "
                   "training images (the run's calibration_images.npz or --calibration-data); the parity gate "
                   "decides whether it is usable. none: float outside the binary convs. auto: attention, or "
                   "none where the model has no integer form or attention fails the parity gate.")
@click.option("--calibration-data", type=click.Path(path_type=Path), default=None,
              help="NPZ with x: a few hundred model-ready training images, for --integer full on a plain model "
                   "file (a run directory uses its calibration_images.npz).")
@click.option("--rewrite/--no-rewrite", default=True, show_default=True,
              help="Rewrite QuantDense as 1x1 QuantConv2D so it becomes a binary LceBconv2d.")
@click.option("--parity-images", type=click.IntRange(min=0), default=None,
              help="Samples to compare Keras and the flatbuffer on (0 skips the parity gate). Default: 500 "
                   "held-out images; with random inputs (no parity data) 500, capped for large inputs "
                   "(50 at 224x224x3; the report states the cap).")
@click.option("--parity-data", type=click.Path(path_type=Path), default=None,
              help="NPZ with x (model-ready float32 NHWC) and optional y, for a plain model file "
                   "(a run directory uses its parity_images.npz).")
@click.option("--min-agreement", type=click.FloatRange(0.0, 1.0), default=0.99, show_default=True,
              help="Minimum top-1 agreement between Keras and the flatbuffer, ties excluded; below it exits 3.")
@click.option("--import", "import_modules", metavar="MODULE", multiple=True,
              help="Import MODULE before loading the model (repeatable), for custom layers and quantizers "
                   "from another code base (e.g. --import larq_zoo).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def command(model: Path, tflite: bool, output: Optional[Path], target: str, input_type: str, output_type: str,
            int8_range: Optional[str], integer: str, calibration_data: Optional[Path], rewrite: bool, parity_images: Optional[int], parity_data: Optional[Path],
            min_agreement: float, import_modules: Tuple[str, ...], as_json: bool) -> None:
    """Convert MODEL (a run directory or a .keras/.h5/SavedModel) to an LCE flatbuffer.

    Writes FILE.tflite and FILE.export.json, and prints what the converter made of the model:
    operators by type, MACs in binary vs float ops (attention matmuls apart), the binary MAC
    share, file size vs float32, layers that will not be binary (precheck) and Keras-vs-LCE
    parity on held-out images. Exit status 3 when parity is below --min-agreement (top-1
    disagreements on near-tied samples are reported as ties, not counted; degenerate outputs are
    judged by the relative logit error); the report then names the first layer whose converted
    output diverges. The report carries the sha256 of the flatbuffer it describes.

    Loading never runs code from the model file: a Lambda layer (in .h5, .keras or SavedModel) is
    refused, and .keras files load in Keras's safe mode.
    """
    from edgebvit.converters.export import ExportOptions, export, format_export_report
    from edgebvit.errors import ParityError

    options = ExportOptions(
        output=output, target=target, input_type=input_type, output_type=output_type,
        experimental_default_int8_range=_parse_range(int8_range), rewrite=rewrite, integer=integer,
        calibration_data=calibration_data,
        parity_images=parity_images, parity_data=parity_data, min_agreement=min_agreement,
        import_modules=tuple(import_modules), progress=True,
    )
    try:
        report = export(model, options)
    except ParityError as err:
        report = getattr(err, "report", None)
        if report is not None:
            click.echo(json.dumps(report.to_dict(), indent=2, default=json_default) if as_json else format_export_report(report))
        raise
    click.echo(json.dumps(report.to_dict(), indent=2, default=json_default) if as_json else format_export_report(report))
