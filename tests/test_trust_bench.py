"""Issue #18, bench and inspect: no output replaces an input, every artifact names the sha256 of
the flatbuffer it describes, and bad input (records, outputs, directories, corrupt flatbuffers)
is one `error: ...` line naming the file, exit 2.

Fast: the checked-in tests/data/bench/tiny.tflite and the local LCE interpreter, no conversion.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgebvit import fileio
from edgebvit.bench import harness, interp_bench
from edgebvit.bench.harness import BenchOptions, run_bench
from edgebvit.bench.records import BenchRecord, DeviceFacts, LatencyStats, append_records, load_records
from edgebvit.cli import cli
from edgebvit.errors import EdgebvitError, FlatbufferError

DATA = Path(__file__).parent / "data" / "bench"
TINY = DATA / "tiny.tflite"
TINY_SHA = hashlib.sha256(TINY.read_bytes()).hexdigest()


def _bench(*args):
    return CliRunner().invoke(cli, ["bench", *map(str, args)])


def _inspect(*args):
    return CliRunner().invoke(cli, ["inspect", *map(str, args)])


def _one_error(result) -> str:
    """The single output line of a refused command (exit 2, no traceback); returns it."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "M.tflite"
    shutil.copy(TINY, path)
    return path


@pytest.fixture
def no_run(monkeypatch):
    """Fail the test if a benchmark actually runs: every refusal here must come first."""
    def refuse(*_a, **_k):
        raise AssertionError("the interpreter ran before the refusal")
    monkeypatch.setattr(interp_bench, "bench_one", refuse)


def _record(threads=1, sha="0" * 64) -> BenchRecord:
    return BenchRecord(
        model_path="/m/model.tflite", model_sha256=sha, model_bytes=10, device="local", runner="local-interpreter",
        threads=threads, xnnpack=False, indirect_bgemm=False, warmup=1, runs=3,
        latency=LatencyStats.from_samples_us([1000.0, 1100.0, 1500.0]),
        facts=DeviceFacts(architecture="x86_64", cpu_model="cpu", os="Linux", os_bits=64), tool="t",
        tool_version="v", edgebvit_version="0.1.0", timestamp="2026-01-01T00:00:00+00:00")


# ---------------------------------------------------------------------------------------------
# class 6: no output replaces an input; outputs are named for what they hold


def test_out_onto_the_model_is_refused_and_the_model_survives(model, tmp_path, no_run):
    """Old code: `--out M.tflite` overwrote the model with JSON and exited 0."""
    (tmp_path / "link.json").symlink_to(model)
    (tmp_path / "link.jsonl").symlink_to(model)
    os.link(model, tmp_path / "hard.jsonl")
    for opt, path in (("--out", model), ("--out", tmp_path / "link.json"), ("--results", tmp_path / "link.jsonl"),
                      ("--results", tmp_path / "hard.jsonl")):
        line = _one_error(_bench(model, opt, path))
        assert line == (f"error: {opt} {path} is the model being benchmarked ({model}): refusing to overwrite an "
                        f"input; choose another {opt} path")
    assert model.read_bytes() == TINY.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["M.tflite", "hard.jsonl", "link.json", "link.jsonl"]


def test_out_onto_benchmark_binary_or_ssh_key_is_refused(model, tmp_path, no_run):
    """Old code: the report replaced whatever --benchmark-binary / --identity named."""
    key = tmp_path / "id.json"
    key.write_text("PRIVATE KEY")
    line = _one_error(_bench(model, "--identity", key, "--out", key))
    assert f"--out {key} is --identity" in line and "refusing to overwrite an input" in line
    binary = tmp_path / "lce.jsonl"
    binary.write_text("#!/bin/sh\n")
    line = _one_error(_bench(model, "--benchmark-binary", binary, "--results", binary))
    assert f"--results {binary} is --benchmark-binary" in line
    assert key.read_text() == "PRIVATE KEY" and binary.read_text() == "#!/bin/sh\n"


@pytest.mark.parametrize("opt, name, want", [
    ("--out", "report.txt", ".json"), ("--out", "report.jsonl", ".json"), ("--out", "report", ".json"),
    ("--results", "results.json", ".jsonl"), ("--results", "other.tflite", ".jsonl"),
])
def test_output_suffix_must_match_what_is_written(model, tmp_path, no_run, opt, name, want):
    """Old code wrote JSON to any name (exit 0)."""
    line = _one_error(_bench(model, opt, tmp_path / name))
    assert line.startswith(f"error: {opt} {tmp_path / name}: ") and f"whose name ends in {want}," in line
    assert not (tmp_path / name).exists()


def test_compare_chart_refuses_a_compared_file_and_a_wrong_suffix(tmp_path):
    results = append_records(tmp_path / "r.jsonl", [_record()])
    before = results.read_bytes()
    (tmp_path / "c.png").symlink_to(results)
    line = _one_error(_bench("--compare", results, "--chart", tmp_path / "c.png"))
    assert line == (f"error: --chart {tmp_path / 'c.png'} is a results file being compared ({results}): refusing to "
                    "overwrite an input; choose another --chart path")
    line = _one_error(_bench("--compare", results, "--chart", tmp_path / "c.jpg"))
    assert "whose name ends in .png" in line and not (tmp_path / "c.jpg").exists()
    assert results.read_bytes() == before and (tmp_path / "c.png").is_symlink()


def test_results_file_that_is_not_a_results_file_is_not_appended_to(model, tmp_path, no_run):
    """Old code appended JSON lines to any existing file named by --results."""
    for name, content in (("notes.jsonl", b"my notes\n"), ("report.jsonl", b'{\n  "records": []\n}\n'),
                          ("bin.jsonl", b"\x1c\x00\x00\x00TFL3\x00\x00")):
        path = tmp_path / name
        path.write_bytes(content)
        line = _one_error(_bench(model, "--results", path))
        assert line.startswith(f"error: --results {path} is not a bench results file (")
        assert path.read_bytes() == content
    with pytest.raises(EdgebvitError, match="not a bench results file"):
        append_records(tmp_path / "notes.jsonl", [_record()])
    assert (tmp_path / "notes.jsonl").read_bytes() == b"my notes\n"


def test_outputs_are_checked_before_the_benchmark_runs(model, tmp_path, no_run):
    """Old code ran the whole sweep, then died with a NotADirectoryError traceback."""
    blocker = tmp_path / "f.txt"
    blocker.write_text("")
    line = _one_error(_bench(model, "--out", blocker / "sub" / "r.json"))
    assert line == f"error: --out {blocker / 'sub' / 'r.json'}: {blocker} is not a directory; choose another --out path"
    line = _one_error(_bench(model, "--out", tmp_path))
    assert line.startswith(f"error: --out {tmp_path} is a directory")


def test_every_artifact_names_the_model_sha256(model, tmp_path):
    """Old code: the JSON report and the chart did not say which flatbuffer they describe."""
    result = _bench(model, "--runs", "2", "--warmup", "0")
    assert result.exit_code == 0, result.output
    assert f"M.tflite: sha256 {TINY_SHA}" in result.output
    report = json.loads((tmp_path / "M.bench.json").read_text())
    assert report["model_sha256"] == TINY_SHA and report["model_bytes"] == TINY.stat().st_size
    rows = [json.loads(line) for line in (tmp_path / "bench_results.jsonl").read_text().splitlines()]
    assert rows and all(r["model_sha256"] == TINY_SHA for r in rows)
    chart = tmp_path / "cmp.png"
    other = append_records(tmp_path / "other.jsonl", [_record(sha="ab" * 32)])
    result = _bench("--compare", tmp_path / "bench_results.jsonl", other, "--chart", chart)
    assert result.exit_code == 0, result.output
    from PIL import Image

    text = Image.open(chart).text
    assert text["edgebvit.model_sha256"].split() == [TINY_SHA, "ab" * 32]
    assert f"M.tflite (sha256 {TINY_SHA})" in text["Description"]


def test_write_failures_are_one_line_and_keep_what_was_written(model, tmp_path, monkeypatch):
    """Old code: an OSError from a writer was a traceback (exit 1), and the records were lost."""
    (tmp_path / "full.jsonl").symlink_to("/dev/full")
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    result = _bench(model, "--runs", "1", "--warmup", "0", "--results", tmp_path / "full.jsonl")
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert line == result.output.strip().splitlines()[-1]
    assert line.startswith(f"error: cannot write bench results {tmp_path / 'full.jsonl'}: no space left on device")
    assert line.endswith(f"(report: {tmp_path / 'M.bench.json'})")
    assert json.loads((tmp_path / "M.bench.json").read_text())["model_sha256"] == TINY_SHA

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(fileio, "atomic_write_bytes", full)
    result = _bench(model, "--runs", "1", "--warmup", "0", "--out", tmp_path / "r.json")
    assert result.exit_code == 2 and "Traceback" not in result.output
    err = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert err == [f"error: cannot write bench report {tmp_path / 'r.json'}: no space left on device: free some "
                   f"space or write elsewhere (results appended: {tmp_path / 'bench_results.jsonl'})"]
    assert "mean ms" in result.output  # the table came first: the numbers are not lost
    assert len(load_records([tmp_path / "bench_results.jsonl"])) == 1

    def read_only(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    monkeypatch.setattr(fileio, "atomic_write_bytes", read_only)
    result = _bench("--compare", tmp_path / "bench_results.jsonl", "--chart", tmp_path / "c.png")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (f"error: cannot write chart {tmp_path / 'c.png'}: read-only "
                                                      "file system: write elsewhere")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_unwritable_output_folder_is_refused_before_the_run(model, tmp_path, no_run):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = _one_error(_bench(model, "--out", locked / "r.json"))
    finally:
        locked.chmod(0o700)
    assert line.startswith(f"error: --out {locked / 'r.json'}: cannot write in {locked} (permission denied")


def test_inspect_plot_refuses_the_flatbuffer(model, tmp_path):
    (tmp_path / "M.png").symlink_to(model)
    line = _one_error(_inspect(model, "--plot", tmp_path / "M.png"))
    assert "is the flatbuffer being inspected" in line and model.read_bytes() == TINY.read_bytes()
    line = _one_error(_inspect(model, "--plot", model))
    assert "refusing to overwrite an input" in line and model.read_bytes() == TINY.read_bytes()


# ---------------------------------------------------------------------------------------------
# class 7: records are validated on load, one line naming file, line and field


def _good() -> dict:
    return _record().to_dict()


def _with(**path_values):
    def mutate(d):
        for dotted, value in path_values.items():
            *parents, leaf = dotted.split("__")
            target = d
            for p in parents:
                target = target[p]
            if value is KeyError:
                del target[leaf]
            else:
                target[leaf] = value
        return d
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (_with(latency__mean_ms="fast"),
     "field 'latency.mean_ms' must be a finite number, not the string 'fast'"),
    (_with(model_sha256=KeyError), "missing field 'model_sha256'"),
    (_with(latency__count=KeyError), "missing field 'latency.count'"),
    (_with(threads=True), "field 'threads' must be an integer, not the boolean true"),
    (_with(threads=0), "field 'threads' must be at least 1, not the number 0"),
    (_with(runs="50"), "field 'runs' must be an integer, not the string '50'"),
    (_with(facts="x86"), "field 'facts' must be a JSON object, not the string 'x86'"),
    (_with(facts__os_bits="64"), "field 'facts.os_bits' must be an integer, not the string '64'"),
    (_with(kernel_notes=[1]), "field 'kernel_notes' must be a list of strings, not the number 1"),
    (_with(latency__min_ms=-1.0), "field 'latency.min_ms' must be zero or more, not the number -1.0"),
    (_with(model_path=None), "field 'model_path' must be a string, not null"),
    (lambda d: [1, 2], "not an edgebvit bench record (a JSON array, not a JSON object)"),
    (lambda d: "text", "not an edgebvit bench record (the string 'text', not a JSON object)"),
])
def test_load_records_names_file_line_and_field(tmp_path, mutate, message):
    """Old code accepted wrong types (a crash later, in the table or chart) or reported Python's
    own constructor message instead of the field."""
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_good()) + "\n" + json.dumps(mutate(_good())) + "\n")
    with pytest.raises(EdgebvitError) as err:
        load_records([path])
    assert str(err.value) == f"{path}:2: {message}; fix or delete this record"
    report = tmp_path / "r.bench.json"
    report.write_text(json.dumps({"records": [mutate(_good())]}, indent=2))
    with pytest.raises(EdgebvitError) as err:
        load_records([report])
    assert str(err.value) == f"{report}: record 1: {message}; fix or delete this record"


def test_load_records_invalid_json_and_reports(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_good()) + "\n\n" + '{"schema": "edgebvit.bench/1", "thr\n')
    with pytest.raises(EdgebvitError, match=rf"^{path}:3: not a JSON record \(truncated line\?\)"):
        load_records([path])
    report = tmp_path / "cut.bench.json"
    report.write_text(json.dumps({"schema": "edgebvit.bench.report/1", "records": [_good()]}, indent=2)[:300])
    with pytest.raises(EdgebvitError, match=rf"^{report}: not valid JSON \(.* at line \d+\)"):
        load_records([report])
    # A report whose "records" come after a long model path is still read as a report.
    long = tmp_path / "long.bench.json"
    long.write_text(json.dumps({"schema": "edgebvit.bench.report/1", "model": "/x" * 300, "model_sha256": "0" * 64,
                                "records": [_good()]}, indent=2))
    assert load_records([long]) == [_record()]
    bad = tmp_path / "bad.bench.json"
    bad.write_text(json.dumps({"records": {"a": 1}}))
    with pytest.raises(EdgebvitError, match=r"'records' must be a JSON array"):
        load_records([bad])


def test_compare_with_a_mistyped_record_is_one_line(tmp_path):
    """Old code: the record loaded, then format_table crashed with a ValueError traceback."""
    row = _good()
    row["latency"]["mean_ms"] = "fast"
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(row) + "\n")
    line = _one_error(_bench("--compare", path))
    assert line == f"error: {path}:1: field 'latency.mean_ms' must be a finite number, not the string 'fast'; " \
                   "fix or delete this record"


def test_compare_inputs_that_are_not_results(tmp_path, model):
    run = tmp_path / "run"
    run.mkdir()
    append_records(run / "bench_results.jsonl", [_record()])
    line = _one_error(_bench("--compare", run))
    assert line == f"error: {run} is a directory; did you mean {run}/bench_results.jsonl?"
    assert _one_error(_bench("--compare", model)) == (f"error: {model} is a flatbuffer, not a results file: drop "
                                                      "--compare to benchmark it")


# ---------------------------------------------------------------------------------------------
# class 11: directories and corrupt flatbuffers


def test_bench_run_dir_says_did_you_mean(tmp_path, no_run):
    """Old code: click's usage text ("Invalid value for '[FILES]...': File ... is a directory")."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    line = _one_error(_bench(run))
    assert line == (f"error: {run} is a directory; did you mean {run}/model.tflite? It does not exist yet: run "
                    f"`edgebvit export {run} --tflite` first")
    shutil.copy(TINY, run / "model.tflite")
    assert _one_error(_bench(run)) == f"error: {run} is a directory; did you mean {run}/model.tflite?"


def test_inspect_dir_says_did_you_mean(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(TINY, run / "model.tflite")
    assert _one_error(_inspect(run)) == f"error: {run} is a directory; did you mean {run}/model.tflite?"
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _one_error(_inspect(empty))
    assert line == f"error: {empty} is a directory, not a .tflite file; give the flatbuffer's path"


@pytest.mark.parametrize("cut", [0, 4, 9, 100, 1000, 3000, 3551])
def test_truncated_flatbuffer_is_one_line_naming_the_file(tmp_path, cut, no_run):
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(TINY.read_bytes()[:cut])
    for result in (_bench(bad), _inspect(bad)):
        line = _one_error(result)
        assert line.startswith(f"error: {bad}: "), line


def test_interpreter_refusal_is_one_line_naming_the_file_and_tflite_reason(tmp_path):
    """A flatbuffer the reader accepts but TFLite refuses (schema version 2048). Old code let
    TFLite's own "ERROR: ..." lines through on stderr and gave LCE's internal assertion
    ("interpreter_ != nullptr") with the bare file name."""
    data = bytearray(TINY.read_bytes())
    data[12] = 0xFF  # the model's schema version
    bad = tmp_path / "version.tflite"
    bad.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "edgebvit", "bench", str(bad), "--runs", "1"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: the LCE interpreter refused {bad}: Model provided is schema version 2048 not equal to supported "
        "version 3."]


def test_corrupt_input_shape_is_refused_before_the_interpreter(tmp_path, no_run):
    """An input dimension corrupted to 3 million: old code handed it to the interpreter, which
    tried to fill a 3 GiB input with random numbers."""
    data = bytearray(TINY.read_bytes())
    pattern = struct.pack("<4i", 1, 8, 8, 32)
    where = data.rfind(pattern)  # the input tensor's shape (the other copy is its signature)
    data[where + 8: where + 12] = struct.pack("<i", 3_014_664)
    bad = tmp_path / "shape.tflite"
    bad.write_bytes(bytes(data))
    with pytest.raises(FlatbufferError, match=rf"^{bad}: input 0 of shape \[1, 8, 3014664, 32\] needs 2.9 GiB"):
        run_bench(bad, BenchOptions())
    assert _one_error(_bench(bad)).startswith(f"error: {bad}: input 0 of shape")


def test_model_changed_during_a_remote_run_writes_nothing(model, tmp_path, monkeypatch):
    """The remote runners push the file by path: records must not name a sha256 it no longer has."""
    def run_remote(model_path, *_a, **_k):
        model_path.write_bytes(model_path.read_bytes() + b"\0")  # replaced while on the device
        return []
    monkeypatch.setattr(harness, "run_remote_binary", run_remote)
    monkeypatch.setattr(harness, "make_transport", lambda *_a, **_k: None)
    with pytest.raises(FlatbufferError, match=rf"^{model} changed while it was benchmarked \(sha256 {TINY_SHA[:12]} "):
        run_bench(model, BenchOptions(device="ssh://pi@board"))
