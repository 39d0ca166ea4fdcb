"""`edgebvit bench`: time a flatbuffer here, on a Linux board over ssh, or on an Android phone over adb."""
from __future__ import annotations

from pathlib import Path

import click


def _threads(ctx, param, value: str) -> tuple:
    try:
        threads = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("want a comma-separated list of integers, e.g. 1,2,4") from None
    if not threads or min(threads) < 1:
        raise click.BadParameter("want positive thread counts, e.g. 1,2,4")
    return threads


@click.command("bench")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--device", default="local", show_default=True, metavar="DEVICE",
              help="local (LCE Python interpreter here), ssh://user@host[:port] (Raspberry Pi or any Linux "
                   "board) or adb[:serial] (Android).")
@click.option("--runner", type=click.Choice(["auto", "binary", "python"]), default="auto", show_default=True,
              help="Remote runner: binary = lce_benchmark_model (ssh/adb); python = edgebvit's interpreter "
                   "benchmark on an ssh host with numpy + larq_compute_engine. auto: binary on devices.")
@click.option("--threads", default="1", show_default=True, callback=_threads, metavar="N[,N...]",
              help="Thread counts to sweep, e.g. 1,2,4.")
@click.option("--xnnpack", type=click.Choice(["on", "off", "both"]), default="off", show_default=True,
              help="XNNPACK delegate for the float ops.")
@click.option("--indirect-bgemm", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="LCE's indirect BGEMM kernel; auto turns it on when the model has grouped binary convs.")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed runs per configuration.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed warm-up runs.")
@click.option("--profile", is_flag=True,
              help="Op profiling (binary runner): split time into binary ops, float attention and other float ops.")
@click.option("--taskset", metavar="MASK", help="Pin to CPUs by hex mask (e.g. f0 for the big cores of many phones).")
@click.option("--benchmark-binary", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Local lce_benchmark_model to push for the run (else one on the device PATH).")
@click.option("--remote-binary", metavar="PATH", help="lce_benchmark_model already on the device at PATH.")
@click.option("--remote-python", default="python3", show_default=True, metavar="CMD",
              help="Python on the ssh host for --runner python.")
@click.option("--remote-tmp", metavar="DIR", help="Where the remote temp dir is made [/tmp; adb: /data/local/tmp].")
@click.option("--identity", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="ssh private key.")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VAL", help="Extra ssh -o option (repeatable).")
@click.option("--timeout", type=click.IntRange(min=1), default=300, show_default=True,
              help="Seconds allowed per remote command.")
@click.option("--connect-timeout", type=click.IntRange(min=1), default=10, show_default=True, help="ssh ConnectTimeout.")
@click.option("--results", type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL file the records are appended to [bench_results.jsonl next to the flatbuffer].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON report of this run [<stem>.bench.json next to the flatbuffer].")
@click.option("--compare", is_flag=True, help="Compare: FILES are results files (.jsonl or .bench.json); print a "
                                               "table and write a PNG chart.")
@click.option("--chart", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG for --compare [bench_compare.png next to the first results file].")
@click.option("-v", "--verbose", is_flag=True, help="Log each step (remote dirs, pushes, runs) to stderr.")
def command(files, device, runner, threads, xnnpack, indirect_bgemm, runs, warmup, profile, taskset, benchmark_binary,
            remote_binary, remote_python, remote_tmp, identity, ssh_options, timeout, connect_timeout, results, out,
            compare, chart, verbose) -> None:
    """Benchmark FILE.tflite, or compare results with --compare RESULTS...

    \b
    On this x86-64 host the LCE interpreter runs reference binary kernels: its numbers are labelled
    "host reference kernels (x86-64): not ARM64 speed". ARM64 latency comes from a device:
      edgebvit bench model.tflite --threads 1,4
      edgebvit bench model.tflite --device ssh://pi@raspberrypi.local --threads 1,2,4 --profile
      edgebvit bench model.tflite --device adb --benchmark-binary lce_benchmark_model_android_arm64 --taskset f0
      edgebvit bench --compare runs/a/bench_results.jsonl runs/b/bench_results.jsonl
    Every configuration becomes a JSON record appended to --results; remote files are always removed.
    """
    from edgebvit.bench.records import append_records, load_records
    from edgebvit.bench.report import format_table, write_chart
    from edgebvit.errors import EdgebvitError
    from edgebvit.fileio import atomic_write_json

    if compare:
        if not files:
            raise EdgebvitError("--compare needs one or more results files")
        records = load_records(list(files))
        click.echo(format_table(records))
        chart_path = chart or files[0].parent / "bench_compare.png"
        write_chart(records, chart_path)
        click.echo(f"chart: {chart_path}")
        return
    if len(files) != 1:
        raise EdgebvitError("give exactly one FILE.tflite to benchmark (or --compare RESULTS...)")
    model_path = files[0]
    if model_path.suffix != ".tflite":
        raise EdgebvitError(f"{model_path} is not a .tflite file (use --compare for results files)")

    from edgebvit.bench.harness import BenchOptions, run_bench

    opts = BenchOptions(device=device, runner=runner, threads=threads, xnnpack=xnnpack, indirect_bgemm=indirect_bgemm,
                        runs=runs, warmup=warmup, profile=profile, taskset=taskset, timeout=timeout,
                        connect_timeout=connect_timeout, identity=identity, ssh_options=tuple(ssh_options),
                        benchmark_binary=benchmark_binary, remote_binary=remote_binary, remote_python=remote_python,
                        remote_tmp=remote_tmp)
    log = (lambda m: click.echo(m, err=True)) if verbose else (lambda _m: None)
    records = run_bench(model_path, opts, log=log)

    results_path = results or model_path.parent / "bench_results.jsonl"
    out_path = out or model_path.with_name(model_path.stem + ".bench.json")
    atomic_write_json(out_path, {"schema": "edgebvit.bench.report/1", "model": str(model_path),
                                 "records": [r.to_dict() for r in records]})
    append_records(results_path, records)
    click.echo(format_table(records))
    click.echo(f"report: {out_path}")
    click.echo(f"results appended: {results_path}")
