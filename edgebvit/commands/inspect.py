"""`edgebvit inspect`: what a .tflite flatbuffer contains, read from the file itself."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from edgebvit.fileio import json_default  # numpy scalars in reports


@click.command("inspect")
# Directories are accepted and refused by the command with a "did you mean" pointing at the flatbuffer.
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the full report (every operator) as JSON.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, metavar="FILE.png",
              help="Also write a PNG chart of MACs by precision per operator.")
def command(file: Path, as_json: bool, plot: Optional[Path]) -> None:
    """Explain FILE.tflite: operators by type, MACs by precision, binary share, size.

    Per operator: type (LCE custom ops by name), shapes, MACs, precision (binary / int8 /
    float), constant bytes read and tensor names, which carry the Keras layer names. Attention
    matmuls (BATCH_MATMUL, activation x activation FULLY_CONNECTED) are counted on their own.
    """
    from edgebvit.bench.paths import Output, check_model_argument, check_outputs, writing
    from edgebvit.converters.inspect import format_report, inspect_flatbuffer, plot_macs

    check_model_argument(file)
    report = inspect_flatbuffer(file)
    if plot is not None:
        # The plot may not replace the flatbuffer it describes (nor be anything but a .png).
        check_outputs([Output(plot, "--plot", "the MAC chart (PNG)", (".png",))],
                      inputs=[("the flatbuffer being inspected", file)])
        with writing(plot, "MAC chart"):
            plot_macs(report, plot)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=json_default))
    else:
        click.echo(format_report(report))
        if plot is not None:
            click.echo(f"\nplot: {plot}")
