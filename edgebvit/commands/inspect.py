"""`edgebvit inspect`: what a .tflite flatbuffer contains, read from the file itself."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

import click

from edgebvit.fileio import json_default  # numpy scalars in reports


@click.command("inspect")
# Directories are accepted and refused by the command with a "did you mean" pointing at the flatbuffer.
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the full report (every operator) as JSON.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, metavar="FILE.png",
              help="Also write a PNG chart of MACs by precision per operator.")
@click.option("--device-profile", "device_profiles", multiple=True, metavar="NAME",
              help="Estimate latency on a device profile: pi4b, pixel1 (1 thread) or pi4b-4t, pixel1-4t; "
                   "repeat for several, 'all' for every profile. Calibrated on published Larq Zoo latencies; "
                   "printed with its error band, never as a measurement.")
@click.option("--latency-profiles", type=click.Path(path_type=Path), default=None, metavar="FILE.json",
              help="Profiles fitted by tools/fit_latency.py (e.g. with your own device records) "
                   "instead of the shipped ones.")
def command(file: Path, as_json: bool, plot: Optional[Path], device_profiles: Tuple[str, ...],
            latency_profiles: Optional[Path]) -> None:
    """Explain FILE.tflite: operators by type, MACs by precision, binary share, size.

    Per operator: type (LCE custom ops by name), shapes, MACs, precision (binary / int8 /
    float), constant bytes read and tensor names, which carry the Keras layer names. Attention
    matmuls (BATCH_MATMUL, activation x activation FULLY_CONNECTED) are counted on their own.

    With --device-profile, also an estimated ARM64 latency split into binary ops, attention and
    other ops, with the leave-one-out error of its calibration (docs/latency.md).
    """
    from edgebvit.bench.paths import Output, check_model_argument, check_outputs, writing
    from edgebvit.converters.inspect import format_report, inspect_flatbuffer, plot_macs

    check_model_argument(file)
    profiles = []
    if device_profiles or latency_profiles is not None:
        from edgebvit.bench.latency import load_profiles, resolve_profile

        known = load_profiles(latency_profiles)
        names = sorted(known) if "all" in device_profiles else (device_profiles or ("pi4b",))
        profiles = [resolve_profile(n, known) for n in names]
    report = inspect_flatbuffer(file)
    estimates = []
    if profiles:
        from edgebvit.bench.latency import estimate, format_estimate

        estimates = [estimate(report, p) for p in profiles]
    if plot is not None:
        # The plot may not replace the flatbuffer it describes (nor be anything but a .png).
        check_outputs([Output(plot, "--plot", "the MAC chart (PNG)", (".png",))],
                      inputs=[("the flatbuffer being inspected", file)])
        with writing(plot, "MAC chart"):
            plot_macs(report, plot)
    if as_json:
        d = report.to_dict()
        if estimates:
            d["latency_estimates"] = [e.to_dict() for e in estimates]
        click.echo(json.dumps(d, indent=2, default=json_default))
    else:
        click.echo(format_report(report))
        for e in estimates:
            click.echo("")
            click.echo(format_estimate(e))
        if plot is not None:
            click.echo(f"\nplot: {plot}")
