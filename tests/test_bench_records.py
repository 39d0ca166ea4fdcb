"""Bench records: statistics, safe appends, loading errors, the comparison table and chart."""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgebvit.flatbuffer import parse
from edgebvit.bench.parser import parse_benchmark_output
from edgebvit.bench.records import (HOST_X86_NOTE, BenchRecord, DeviceFacts, LatencyStats, append_records,
                                    load_records, split_ops)
from edgebvit.bench.report import format_table
from edgebvit.cli import cli
from edgebvit.errors import EdgebvitError, FlatbufferError

DATA = Path(__file__).parent / "data" / "bench"


def _record(threads=1, notes=(), split=None, device="local") -> BenchRecord:
    return BenchRecord(
        model_path="/m/model.tflite", model_sha256="0" * 64, model_bytes=10, device=device, runner="local-interpreter",
        threads=threads, xnnpack=False, indirect_bgemm=False, warmup=1, runs=3,
        latency=LatencyStats.from_samples_us([1000.0 * threads, 1100.0 * threads, 1500.0 * threads]),
        facts=DeviceFacts(architecture="x86_64", cpu_model="cpu", os="Linux", os_bits=64), tool="t",
        tool_version="v", edgebvit_version="0.1.0", timestamp="2026-01-01T00:00:00+00:00", kernel_notes=list(notes),
        op_split=split)


def test_latency_stats_match_numpy():
    rng = np.random.default_rng(1)
    samples = rng.gamma(4.0, 300.0, size=101)
    st = LatencyStats.from_samples_us(samples, first_us=5000)
    ms = samples / 1000
    assert st.count == 101 and st.first_ms == 5.0
    assert st.mean_ms == pytest.approx(ms.mean()) and st.std_ms == pytest.approx(ms.std())
    assert st.median_ms == pytest.approx(np.median(ms)) and st.p90_ms == pytest.approx(np.percentile(ms, 90))
    assert (st.min_ms, st.max_ms) == (pytest.approx(ms.min()), pytest.approx(ms.max()))
    with pytest.raises(EdgebvitError):
        LatencyStats.from_samples_us([])


def test_record_roundtrip_with_split(tmp_path):
    split = split_ops(parse_benchmark_output((DATA / "lce_benchmark_model_profile.txt").read_text(),
                                             expect_profile=True).profile)
    rec = _record(split=split)
    path = append_records(tmp_path / "r.jsonl", [rec])
    (back,) = load_records([path])
    assert back == rec


def _append_many(args):
    path, start = args
    for i in range(25):
        append_records(Path(path), [_record(threads=start + i)])


def test_concurrent_appends_keep_lines_whole(tmp_path):
    path = tmp_path / "r.jsonl"
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_append_many, [(str(path), 1), (str(path), 100)])
    recs = load_records([path])
    assert sorted(r.threads for r in recs) == list(range(1, 26)) + list(range(100, 125))


def test_append_after_a_torn_line(tmp_path):
    path = tmp_path / "r.jsonl"
    append_records(path, [_record()])
    with open(path, "a") as f:
        f.write('{"schema": "edgebvit.bench/1", "trunc')  # a writer killed mid-line
    append_records(path, [_record(threads=2)])
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["threads"] == 2
    with pytest.raises(EdgebvitError, match=r"r.jsonl:2: not a JSON record"):
        load_records([path])


def test_load_errors(tmp_path):
    with pytest.raises(EdgebvitError, match="results file not found"):
        load_records([tmp_path / "none.jsonl"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"schema": "other/1"}\n')
    with pytest.raises(EdgebvitError, match=r"bad.jsonl:1: not an edgebvit bench record"):
        load_records([bad])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(EdgebvitError, match="no bench records"):
        load_records([empty])


def test_table_labels_x86_and_shows_split():
    split = split_ops(parse_benchmark_output((DATA / "lce_benchmark_model_profile.txt").read_text(),
                                             expect_profile=True).profile)
    text = format_table([_record(notes=[HOST_X86_NOTE]), _record(threads=4, split=split, device="adb")])
    assert text.splitlines()[0] == f"NOTE: {HOST_X86_NOTE}"
    assert "op time split" in text and "1.132 | 0.686 | 0.039 | 0.000" in text
    assert "x86-64" not in format_table([_record()]).splitlines()[0]


def test_compare_cli_writes_png(tmp_path):
    split = split_ops(parse_benchmark_output((DATA / "lce_benchmark_model_profile.txt").read_text(),
                                             expect_profile=True).profile)
    a = append_records(tmp_path / "a.jsonl", [_record(notes=[HOST_X86_NOTE]), _record(threads=2)])
    b = tmp_path / "b.bench.json"
    b.write_text(json.dumps({"records": [_record(threads=4, split=split, device="ssh://pi@pi").to_dict()]}))
    result = CliRunner().invoke(cli, ["bench", "--compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "ssh://pi@pi" in result.output and HOST_X86_NOTE in result.output
    png = tmp_path / "bench_compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_needs_files():
    result = CliRunner().invoke(cli, ["bench", "--compare"])
    assert result.exit_code == 2 and "error: --compare needs" in result.output


def test_flatbuffer_reader_on_fixture():
    s = parse((DATA / "tiny.tflite").read_bytes())
    assert s.op_counts() == {"FULLY_CONNECTED": 1, "LceBconv2d": 1, "LceQuantize": 1, "MEAN": 1}
    assert [(b.options["channels_in"], b.groups) for b in s.bconvs] == [(32, 1)] and s.grouped_bconvs == 0
    with pytest.raises(FlatbufferError, match="TFL3"):
        parse(b"\0" * 64)
    data = bytearray((DATA / "tiny.tflite").read_bytes())
    with pytest.raises(FlatbufferError, match="corrupt or truncated|truncated"):
        parse(bytes(data[:200]))
