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
# Directories are accepted here and refused by the command with a "did you mean" (click's own
# dir_okay=False would print its usage text instead of a one-line error).
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
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
@click.option("--results", type=click.Path(path_type=Path),
              help="JSONL file the records are appended to [bench_results.jsonl next to the flatbuffer].")
@click.option("--out", type=click.Path(path_type=Path),
              help="JSON report of this run [<stem>.bench.json next to the flatbuffer].")
@click.option("--compare", is_flag=True, help="Compare: FILES are results files (.jsonl or .bench.json); print a "
                                               "table and write a PNG chart.")
@click.option("--chart", type=click.Path(path_type=Path),
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
    No output may overwrite an input (the model, --benchmark-binary, --identity, compared files), and
    every artifact names the sha256 of the flatbuffer it describes.
    """
    from edgebvit.bench.paths import RESULTS_FILE, Output, check_model_argument, check_outputs
    from edgebvit.bench.records import append_records, check_results_file, load_records
    from edgebvit.bench.report import format_table, write_chart, write_report
    from edgebvit.errors import EdgebvitError

    if compare:
        if not files:
            raise EdgebvitError("--compare needs one or more results files")
        if out is not None or results is not None:
            raise EdgebvitError("--out and --results belong to a benchmark run; --compare writes only --chart")
        records = load_records(list(files))
        chart_path = chart or files[0].parent / "bench_compare.png"
        check_outputs([Output(chart_path, "--chart", "the comparison chart (PNG)", (".png",))],
                      inputs=[("a results file being compared", f) for f in files])
        click.echo(format_table(records))
        from edgebvit.bench.latency import compare_lines

        estimated = compare_lines(records)
        if estimated:
            click.echo("")
            click.echo("\n".join(estimated))
        write_chart(records, chart_path)
        click.echo(f"chart: {chart_path}")
        return
    if chart is not None:
        raise EdgebvitError("--chart is for --compare; a benchmark run writes --out and --results")
    if len(files) != 1:
        raise EdgebvitError("give exactly one FILE.tflite to benchmark (or --compare RESULTS...)")
    model_path = files[0]
    check_model_argument(model_path)
    if model_path.suffix != ".tflite":
        raise EdgebvitError(f"{model_path} is not a .tflite file (use --compare for results files)")

    results_path = results or model_path.parent / RESULTS_FILE
    out_path = out or model_path.with_name(model_path.stem + ".bench.json")

    def check_paths() -> None:
        # Before any device work: no output may replace an input, each must be writable as what it holds.
        check_outputs([Output(out_path, "--out", "the bench report (JSON)", (".json",)),
                       Output(results_path, "--results", "the bench results (JSON lines)", (".jsonl",), append=True)],
                      inputs=[("the model being benchmarked", model_path), ("--benchmark-binary", benchmark_binary),
                              ("--identity", identity)])
        check_results_file(results_path)

    from edgebvit.bench.harness import BenchOptions, run_bench

    opts = BenchOptions(device=device, runner=runner, threads=threads, xnnpack=xnnpack, indirect_bgemm=indirect_bgemm,
                        runs=runs, warmup=warmup, profile=profile, taskset=taskset, timeout=timeout,
                        connect_timeout=connect_timeout, identity=identity, ssh_options=tuple(ssh_options),
                        benchmark_binary=benchmark_binary, remote_binary=remote_binary, remote_python=remote_python,
                        remote_tmp=remote_tmp)
    log = (lambda m: click.echo(m, err=True)) if verbose else (lambda _m: None)
    records = run_bench(model_path, opts, log=log, preflight=check_paths)

    # The table first: if a write fails below, the measurements are still on the screen. Each
    # artifact is attempted even when the other fails, and the error says what was kept.
    click.echo(format_table(records))
    written, failed = [], []
    for label, path, write in (("results appended", results_path, lambda: append_records(results_path, records)),
                               ("report", out_path, lambda: write_report(out_path, model_path, records))):
        try:
            write()
            written.append((label, path))
        except EdgebvitError as err:
            failed.append(err)
    for label, path in written:
        click.echo(f"{label}: {path}")
    if failed:
        kept = f" ({', '.join(f'{label}: {path}' for label, path in written)})" if written else ""
        raise EdgebvitError("; ".join(str(err) for err in failed) + kept)
