"""lce_benchmark_model output parser: every line type, prefixes, exponents, tables, truncation.

The fixtures in tests/data/bench/ are laid out exactly as the tool's C++ prints them (see
tests/data/bench/README.md); their numbers are illustrative, not a measurement.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from edgebvit.bench.parser import (BenchmarkOutputError, parse_benchmark_output, parse_stat_line, strip_prefix)
from edgebvit.bench.records import classify_op, split_ops

DATA = Path(__file__).parent / "data" / "bench"
PLAIN = (DATA / "lce_benchmark_model_plain.txt").read_text()
PROFILE = (DATA / "lce_benchmark_model_profile.txt").read_text()
PROFILE_OLD = (DATA / "lce_benchmark_model_profile_old_tf.txt").read_text()


def test_plain_output_every_line_type():
    out = parse_benchmark_output(PLAIN)
    assert out.model_size_mb == pytest.approx(0.003552)
    assert out.init_ms == pytest.approx(1.234)
    assert (out.init_us, out.first_inference_us, out.warmup_avg_us, out.inference_avg_us) == (1234, 2950, 2012, 1726.4)
    assert out.warmup.count == 5 and out.warmup.avg_us == 2012
    inf = out.inference
    assert (inf.count, inf.first_us, inf.curr_us, inf.min_us, inf.avg_us, inf.std_us) == (50, 1803, 1712, 1690, 1726.4, 38)
    assert inf.max_us == pytest.approx(1950.34)  # printed as 1.95034e+03
    assert (out.mem_init_mb, out.mem_overall_mb) == (pytest.approx(1.23047), 2.5)
    assert out.peak_mem_mb is None and out.profile is None
    assert out.params["Num threads"] == "1" and out.params["Graph"] == "/data/local/tmp/model.tflite"


def test_peak_memory_line():
    text = PLAIN + "INFO: Overall peak memory footprint (MB) via periodic monitoring: 5.625\n"
    assert parse_benchmark_output(text).peak_mem_mb == 5.625


@pytest.mark.parametrize("line, expected", [
    ("count=50 first=23456 curr=22000 min=21000 max=25000 avg=22500 std=800", (50, 21000, 25000, 22500, 800)),
    ("count=3 first=2.95034e+06 curr=2.9e+06 min=2.9e+06 max=2.95034e+06 avg=2.91678e+06 std=23706",
     (3, 2.9e6, 2.95034e6, 2.91678e6, 23706)),
    ("count=20 curr=1500(all same)", (20, 1500, 1500, 1500, 0.0)),
    ("count=1 curr=1500", (1, 1500, 1500, 1500, 0.0)),
])
def test_stat_line_variants(line, expected):
    st = parse_stat_line(line)
    assert (st.count, st.min_us, st.max_us, st.avg_us, st.std_us) == pytest.approx(expected)


def test_stat_line_with_percentiles_and_non_stat_lines():
    st = parse_stat_line("count=4 first=10 curr=12 min=10 max=14 avg=12 std=1 p5=10 median=12 p95=14")
    assert (st.median_us, st.p95_us) == (12, 14)
    assert parse_stat_line("count=0").count == 0
    assert parse_stat_line("Inference timings in us: Init: 1") is None
    assert parse_stat_line("account=5") is None


@pytest.mark.parametrize("prefix", [
    "INFO: ",
    "I tflite  : ",
    "11-21 18:17:32.728  1234  1234 I tflite  : ",
    "I/tflite  ( 1234): ",
    "11-21 18:17:32.728  1234  1234 I tflite  : INFO: ",
])
def test_prefixes_are_tolerated(prefix):
    lines = [ln[len("INFO: "):] if ln.startswith("INFO: ") else ln for ln in PROFILE.splitlines()]
    text = "\n".join(prefix + ln for ln in lines)
    out = parse_benchmark_output(text, expect_profile=True)
    assert out.inference.avg_us == 1726.4 and out.inference.count == 50
    assert out.mem_overall_mb == 2.5 and out.init_ms == pytest.approx(1.234)
    assert len(out.profile.run_order) == 11 and len(out.profile.by_node_type) == 8


def test_strip_prefix():
    assert strip_prefix("INFO: count=1 curr=5") == "count=1 curr=5"
    assert strip_prefix("I tflite  : Initialized session in 3ms.") == "Initialized session in 3ms."
    assert strip_prefix("no prefix here") == "no prefix here"


@pytest.mark.parametrize("text", [PROFILE, PROFILE_OLD], ids=["tsl", "old-tf-with-start-column"])
def test_profile_tables(text):
    out = parse_benchmark_output(text, expect_profile=True)
    prof = out.profile
    assert prof.tables_seen == ["Run Order", "Top by Computation Time", "Summary by node type"]
    assert prof.nodes_executed == 11
    first = prof.run_order[0]
    assert (first.node_type, first.name, first.avg_ms, first.first_ms, first.times_called) == (
        "LceQuantize", "model/stem/quant", 0.048, 0.052, 1)
    assert prof.run_order[-1].name == "model/head/MatMul;model/head/BiasAdd"
    fc = prof.run_order[4]
    assert fc.node_type == "FULLY_CONNECTED" and fc.times_called == 2 and fc.per_run_ms == pytest.approx(0.368)
    assert [r.avg_ms for r in prof.top_by_time] == sorted((r.avg_ms for r in prof.top_by_time), reverse=True)
    bconv = next(r for r in prof.by_node_type if r.node_type == "LceBconv2d")
    assert (bconv.count, bconv.avg_ms, bconv.times_called) == (3, pytest.approx(1.057), 3)
    assert prof.by_node_type[-1].cdf_percent == pytest.approx(100.0, abs=0.01)
    # The initialization profile is kept apart, not mixed into the op split.
    assert [r.node_type for r in out.init_profile.run_order] == ["ModifyGraphWithDelegate", "AllocateTensors"]
    if text is PROFILE_OLD:
        assert prof.run_order[1].start_ms == pytest.approx(0.048)


def test_tables_with_tabs_turned_into_spaces():
    """Some log collectors expand tabs; the columns are still recoverable."""
    out = parse_benchmark_output(PROFILE.expandtabs(8), expect_profile=True)
    assert len(out.profile.run_order) == 11 and out.profile.run_order[1].name == "model/block0/attn/qkv/conv"


def test_op_split_from_profile():
    split = split_ops(parse_benchmark_output(PROFILE, expect_profile=True).profile)
    assert split.source_table == "Run Order"
    assert split.binary_ms == pytest.approx(0.048 + 0.402 + 0.144 + 0.511 + 0.027)
    assert split.float_attention_ms == pytest.approx(0.221 + 0.097 + 2 * 0.184)
    assert split.other_float_ms == pytest.approx(0.018 + 0.012 + 0.009)
    assert split.total_ms == pytest.approx(sum(split.by_type_ms.values()))


def test_classify_op():
    assert classify_op("LceBconv2d", "model/attn/qkv") == "binary"  # binary wins over the name
    assert classify_op("LceBMaxPool2d") == "binary"
    assert classify_op("SOFTMAX") == "attention" and classify_op("BATCH_MATMUL") == "attention"
    assert classify_op("FULLY_CONNECTED", "blk/attention/MatMul") == "attention"
    assert classify_op("FULLY_CONNECTED", "head/MatMul") == "other"
    assert classify_op("TfLiteXNNPackDelegate") == "delegate"


def _cut_before(text: str, needle: str) -> str:
    return text[: text.index(needle)]


def test_truncated_before_final_timings():
    with pytest.raises(BenchmarkOutputError, match="missing the 'Inference timings in us:' line"):
        parse_benchmark_output(_cut_before(PLAIN, "INFO: Inference timings"))


def test_truncated_before_any_timing():
    with pytest.raises(BenchmarkOutputError, match="no 'count=... avg=...' timing line"):
        parse_benchmark_output(_cut_before(PLAIN, "INFO: count=5"))


def test_truncated_profile_names_missing_table():
    text = _cut_before(PROFILE, "Number of nodes executed")
    with pytest.raises(BenchmarkOutputError, match=r"missing the '==== Summary by node type ====' op-profiling table"):
        parse_benchmark_output(text, expect_profile=True)
    # without --profile, the same output is fine
    assert parse_benchmark_output(text).inference.count == 50


def test_profile_requested_but_absent():
    with pytest.raises(BenchmarkOutputError, match=r"missing the '==== Run Order ====' op-profiling table"):
        parse_benchmark_output(PLAIN, expect_profile=True)


def test_row_cut_mid_line():
    idx = PROFILE.index("\tmodel/block0/add")
    text = PROFILE[: idx - 30]  # ends inside a row of the Run Order table
    with pytest.raises(BenchmarkOutputError, match="truncated output"):
        parse_benchmark_output(text, expect_profile=True)


def test_tool_error_is_quoted():
    text = "INFO: STARTING!\nERROR: Could not open '/data/local/tmp/x.tflite'.\nERROR: Benchmarking failed.\n"
    with pytest.raises(BenchmarkOutputError, match=r"lce_benchmark_model failed: Could not open '/data/local/tmp/x.tflite'"):
        parse_benchmark_output(text)


def test_not_benchmark_output():
    with pytest.raises(BenchmarkOutputError, match="not lce_benchmark_model output"):
        parse_benchmark_output("bash: lce_benchmark_model: command not found\n")


def test_zero_timed_runs():
    text = PLAIN.replace("count=50 first=1803 curr=1712 min=1690 max=1.95034e+03 avg=1726.4 std=38", "count=0")
    with pytest.raises(BenchmarkOutputError, match="0 timed inferences"):
        parse_benchmark_output(text)


def test_error_messages_are_one_line():
    with pytest.raises(BenchmarkOutputError) as info:
        parse_benchmark_output(PLAIN.replace("Inference timings", "Inference\ntimings"))
    assert "\n" not in str(info.value)
