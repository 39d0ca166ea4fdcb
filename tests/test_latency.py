"""The ARM64 latency estimate (edgebvit.bench.latency): terms read from a hand-built flatbuffer,
the fit and its leave-one-out errors, the shipped profiles against the published numbers they were
fitted to, the error band in every printed estimate, and one-line errors for bad profiles."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgebvit.bench import latency as L
from edgebvit.errors import EdgebvitError
from edgebvit.flatbuffer import parse, schema

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"


# ---- a flatbuffer built by hand: known shapes, known terms ---------------------------------
def _hand_built() -> bytes:
    """CONV_2D (float, 3x3, 3->16 on 8x8) -> LceQuantize -> LceBconv2d (40 -> 20 channels, 1x1)
    -> ADD, built with TFLite's schema: every term of the estimate is known in closed form."""
    import flatbuffers
    from flatbuffers import flexbuffers

    s = schema()
    F32, I32 = s.TensorType.FLOAT32, s.TensorType.INT32
    buffers = [s.BufferT()]

    def buf(nbytes: int) -> int:
        b = s.BufferT()
        b.data = list(np.random.default_rng(len(buffers)).integers(0, 255, nbytes, dtype=np.uint8))
        buffers.append(b)
        return len(buffers) - 1

    tensors = []

    def tensor(name, shape, ttype, buffer=0) -> int:
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), list(shape), ttype, buffer
        tensors.append(t)
        return len(tensors) - 1

    x = tensor("input", (1, 8, 8, 3), F32)
    w = tensor("stem/kernel", (40, 3, 3, 3), F32, buf(40 * 27 * 4))
    b = tensor("stem/bias", (40,), F32, buf(40 * 4))
    h = tensor("stem/out", (1, 8, 8, 40), F32)
    q = tensor("block0_q/out", (1, 8, 8, 2), I32)  # 40 channels bit-packed into 2 words
    fw = tensor("block0_bc/kernel", (20, 1, 1, 2), I32, buf(20 * 2 * 4))
    mul = tensor("block0_bc/mul", (20,), F32, buf(20 * 4))
    bias = tensor("block0_bc/bias", (20,), F32, buf(20 * 4))
    y = tensor("block0_bc/out", (1, 8, 8, 20), F32)
    z = tensor("block0_add/out", (1, 8, 8, 20), F32)

    codes = []
    for builtin, custom in ((s.BuiltinOperator.CONV_2D, None), (s.BuiltinOperator.CUSTOM, b"LceQuantize"),
                            (s.BuiltinOperator.CUSTOM, b"LceBconv2d"), (s.BuiltinOperator.ADD, None)):
        c = s.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode = builtin, min(builtin, 127)
        c.customCode, c.version = custom, 1
        codes.append(c)

    def op(code, ins, outs, custom_options=None, builtin=None):
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, list(ins), list(outs)
        if custom_options is not None:
            o.customOptions = list(custom_options)
        if builtin is not None:
            o.builtinOptionsType, o.builtinOptions = builtin
        return o

    conv_opts = s.Conv2DOptionsT()
    conv_opts.strideH = conv_opts.strideW = 1
    bconv_opts = flexbuffers.Dumps({"channels_in": 40, "dilation_height_factor": 1, "dilation_width_factor": 1,
                                    "fused_activation_function": 0, "pad_values": 0, "padding": 0,
                                    "stride_height": 1, "stride_width": 1})
    ops = [op(0, (x, w, b), (h,), builtin=(s.BuiltinOptions.Conv2DOptions, conv_opts)),
           op(1, (h,), (q,), custom_options=b""),
           op(2, (q, fw, mul, bias), (y,), custom_options=bconv_opts),
           op(3, (y, y), (z,), builtin=(s.BuiltinOptions.AddOptions, s.AddOptionsT()))]
    sg = s.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators = tensors, [x], [z], ops
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [sg], buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


CONV_MACS = 8 * 8 * 40 * 3 * 3 * 3
BCONV_MACS = 8 * 8 * 20 * 40
BCONV_PADDED = 8 * 8 * 24 * 64  # output channels to a multiple of 8, input channels to 32


def _profile(**over) -> L.Profile:
    coeffs = {"binary_gmacs": 10.0, "int8_gmacs": 50.0, "float_gmacs": 100.0, "other_mb": 2.0, "weight_mb": 3.0,
              "ops": 0.01}
    kw = dict(name="test-1t", device="Test board", threads=1, coefficients=coeffs, loo_median_error=0.1,
              loo_max_error=0.25, calibration_models=5, calibration_source="unit test",
              op_types=("CONV_2D", "LceBconv2d", "LceQuantize"))
    kw.update(over)
    return L.Profile(**kw)


def test_terms_of_a_hand_built_flatbuffer():
    rows = L.op_rows(parse(_hand_built(), "hand.tflite"))
    assert [r.op_type for r in rows] == ["CONV_2D", "LceQuantize", "LceBconv2d", "ADD"]
    conv, quant, bconv, add = rows
    assert (conv.macs, conv.precision, conv.part) == (CONV_MACS, "float", "other")
    assert (bconv.macs, bconv.padded_macs, bconv.part) == (BCONV_MACS, BCONV_PADDED, "binary")
    assert quant.macs == 0 and quant.out_bytes == 8 * 8 * 2 * 4 and quant.part == "binary"
    assert add.out_bytes == 8 * 8 * 20 * 4
    t = L.total_terms(rows)
    assert t["float_gmacs"] == pytest.approx(CONV_MACS / 1e9)
    assert t["binary_gmacs"] == pytest.approx(BCONV_PADDED / 1e9)
    assert t["int8_gmacs"] == 0
    assert t["other_mb"] == pytest.approx((8 * 8 * 2 * 4 + 8 * 8 * 20 * 4) / 1e6)
    assert t["weight_mb"] == pytest.approx((40 * 27 * 4 + 40 * 4 + 20 * 2 * 4 + 20 * 4 + 20 * 4) / 1e6)
    assert t["ops"] == 4


def test_estimate_is_the_sum_of_its_terms_split_by_part():
    est = L.estimate(_hand_built(), _profile())
    expect_binary = (10.0 * BCONV_PADDED / 1e9 + 2.0 * (8 * 8 * 2 * 4) / 1e6 + 3.0 * (20 * 2 * 4 + 20 * 4 + 20 * 4) / 1e6
                     + 2 * 0.01)
    expect_other = 100.0 * CONV_MACS / 1e9 + 3.0 * (40 * 27 * 4 + 40 * 4) / 1e6 + 2.0 * (8 * 8 * 20 * 4) / 1e6 + 2 * 0.01
    assert est.parts_ms["binary"] == pytest.approx(expect_binary)
    assert est.parts_ms["other"] == pytest.approx(expect_other)
    assert est.parts_ms["attention"] == 0
    assert est.total_ms == pytest.approx(expect_binary + expect_other)
    assert sum(est.terms_ms.values()) == pytest.approx(est.total_ms)
    assert est.low_ms == pytest.approx(est.total_ms / 1.25) and est.high_ms == pytest.approx(est.total_ms * 1.25)
    # ADD is in no calibration model of this profile: its share is reported as extrapolated.
    assert est.unseen_types == ("ADD",)
    assert est.unseen_ms == pytest.approx(2.0 * (8 * 8 * 20 * 4) / 1e6 + 0.01)


def test_printed_estimate_says_estimated_with_its_band():
    text = L.format_estimate(L.estimate(_hand_built(), _profile()))
    first = text.splitlines()[0]
    assert first.startswith("estimated latency on Test board, 1 thread [test-1t]:")
    assert "range" in first and "ms" in first
    assert "leave-one-out error on 5 published models: median 10%, max 25%" in text
    assert "not a measurement" in text
    assert "extrapolated" in text and "ADD" in text
    for line in text.splitlines()[2:5]:
        assert line.endswith("estimated)")


# ---- the fit ------------------------------------------------------------------------------
def test_nnls_recovers_known_coefficients_and_stays_non_negative():
    rng = np.random.default_rng(0)
    X = rng.uniform(0.1, 2.0, size=(12, 6))
    truth = np.array([30.0, 0.0, 250.0, 1.5, 4.0, 0.02])
    y = X @ truth
    b = L.nnls_relative(X.tolist(), y.tolist())
    assert np.allclose(b, truth, rtol=1e-6, atol=1e-9)
    assert max(abs(e) for e in L.leave_one_out(X.tolist(), y.tolist())) < 1e-6
    # A target that would need a negative coefficient: the fit clamps it to zero instead.
    y_neg = X @ np.array([30.0, -5.0, 250.0, 1.5, 4.0, 0.02])
    assert min(L.nnls_relative(X.tolist(), y_neg.tolist())) >= 0.0


def test_leave_one_out_errors_are_out_of_sample():
    X = [[1.0, 0, 0, 0, 0, 0], [2.0, 0, 0, 0, 0, 0], [3.0, 0, 0, 0, 0, 0]]
    y = [10.0, 20.0, 60.0]  # the last point is off the line the first two make
    errs = L.leave_one_out(X, y)
    # Without the third point the slope is 10: it is predicted at 30, -50%.
    assert errs[2] == pytest.approx(-0.5, abs=0.02)
    fit = L.fit_points([L.CalibrationPoint(model=f"m{i}", published_ms=v, terms=dict(zip(L.TERMS, row)))
                        for i, (row, v) in enumerate(zip(X, y))])
    assert fit.loo_max == pytest.approx(max(abs(e) for e in errs))


def test_int8_macs_are_priced_as_float_macs():
    """Tied terms share one coefficient: int8 MACs are fitted together with float MACs."""
    pts = [L.CalibrationPoint(model=f"m{i}", published_ms=ms,
                              terms=dict(zip(L.TERMS, (0.0, i8, fl, 0.0, 0.0, 0.0))))
           for i, (i8, fl, ms) in enumerate([(0.0, 1.0, 100.0), (1.0, 1.0, 200.0), (2.0, 0.0, 200.0)])]
    fit = L.fit_points(pts)
    assert fit.coefficients["int8_gmacs"] == fit.coefficients["float_gmacs"] == pytest.approx(100.0)


# ---- the shipped profiles -------------------------------------------------------------------
def test_shipped_profiles_are_what_the_fit_script_makes(tmp_path):
    out = tmp_path / "profiles.json"
    proc = subprocess.run([sys.executable, str(TOOLS / "fit_latency.py"), "fit", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh = json.loads(out.read_text())
    shipped = json.loads((ROOT / "edgebvit" / "bench" / L.PROFILES_FILE).read_text())
    assert set(fresh["profiles"]) == set(shipped["profiles"]) == {"pi4b-1t", "pi4b-4t", "pixel1-1t", "pixel1-4t"}
    for name, prof in shipped["profiles"].items():
        for term in L.TERMS:
            assert fresh["profiles"][name]["coefficients"][term] == pytest.approx(prof["coefficients"][term], rel=1e-9)
        assert fresh["profiles"][name]["loo_max_error"] == pytest.approx(prof["loo_max_error"], rel=1e-9)


def _zoo_rows():
    data = json.loads((TOOLS / "latency" / "zoo_ops.json").read_text())
    return {(m["model"], m["variant"]): [L.OpRow.from_list(r) for r in m["ops"]] for m in data["models"]}


def test_zoo_operator_lists_match_the_published_macs():
    """The converted architectures are the ones that were measured: total MACs equal the published
    counts, binary MACs exactly, except XNOR-Net, one of whose binary convs LCE runs as a float
    CONV_2D (its MACs then count as float here: what the device runs)."""
    published = json.loads((TOOLS / "latency" / "published.json").read_text())["published_macs"]
    rows = _zoo_rows()
    assert len(published) - 1 == 13
    for name, (binary, float_macs) in ((k, v) for k, v in published.items() if k != "about"):
        ops = rows[(name, "float")]
        ours_binary = sum(r.macs for r in ops if r.precision == "binary")
        assert sum(r.macs for r in ops) == pytest.approx(binary + float_macs, rel=0.005), name
        if name == "XNORNet":
            assert ours_binary < binary
        else:
            assert ours_binary == binary, name


def test_quicknets_reproduce_their_published_latencies_within_the_reported_error():
    profiles = L.load_profiles()
    rows = _zoo_rows()
    published = json.loads((TOOLS / "latency" / "published.json").read_text())["measurements"]
    checked = 0
    for m in published:
        if not m["model"].startswith("QuickNet") or m["variant"] != "float":
            continue
        prof = profiles[m["profile"]]
        est = L.estimate_rows(rows[(m["model"], "float")], prof)
        assert abs(est.total_ms / m["ms"] - 1) <= prof.loo_max_error + 1e-9, (m, est.total_ms)
        checked += 1
    assert checked == 18  # 3 QuickNets x (2 devices x 1 thread x 2 sources + 2 devices x 4 threads)


# ---- errors ---------------------------------------------------------------------------------
def test_unknown_and_missing_profiles_are_one_line_errors(tmp_path):
    profiles = L.load_profiles()
    assert L.resolve_profile("pi4b", profiles).name == "pi4b-1t"
    assert L.resolve_profile("Pixel1-4T", profiles).name == "pixel1-4t"
    with pytest.raises(EdgebvitError, match=r"^unknown device profile 'jetson': choose one of pi4b-1t, pi4b-4t, "
                                            r"pixel1-1t, pixel1-4t"):
        L.resolve_profile("jetson", profiles)
    with pytest.raises(EdgebvitError, match=r"^latency profiles not found: .*nope\.json \(fit one with"):
        L.load_profiles(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(EdgebvitError, match="not an edgebvit latency-profiles file"):
        L.load_profiles(bad)


def _cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "edgebvit", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_inspect_cli_prints_the_estimate_and_refuses_unknown_profiles(tmp_path):
    f = tmp_path / "hand.tflite"
    f.write_bytes(_hand_built())
    ok = _cli("inspect", str(f), "--device-profile", "pi4b", "--device-profile", "pixel1-4t")
    assert ok.returncode == 0, ok.stderr
    assert "estimated latency on Raspberry Pi 4B" in ok.stdout and "[pi4b-1t]" in ok.stdout
    assert "[pixel1-4t]" in ok.stdout and "leave-one-out error" in ok.stdout
    js = _cli("inspect", str(f), "--device-profile", "all", "--json")
    assert js.returncode == 0, js.stderr
    est = json.loads(js.stdout)["latency_estimates"]
    assert [e["profile"] for e in est] == ["pi4b-1t", "pi4b-4t", "pixel1-1t", "pixel1-4t"]
    assert all(e["estimated"] is True and e["range_ms"][0] < e["total_ms"] < e["range_ms"][1] for e in est)
    bad = _cli("inspect", str(f), "--device-profile", "jetson")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert bad.stderr.startswith("error: unknown device profile 'jetson'")
    missing = _cli("inspect", str(f), "--latency-profiles", str(tmp_path / "none.json"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: latency profiles not found:")


def _device_record(path: Path, data: bytes, cpu: str, threads: int, sha: str = "", median_ms: float = 1.0):
    import hashlib

    from edgebvit.bench.records import BenchRecord, DeviceFacts, LatencyStats

    return BenchRecord(model_path=str(path), model_sha256=sha or hashlib.sha256(data).hexdigest(),
                       model_bytes=len(data), device="ssh://pi@board", runner="lce_benchmark_model",
                       threads=threads, xnnpack=True, indirect_bgemm=False, warmup=1, runs=10,
                       latency=LatencyStats(count=10, mean_ms=median_ms, median_ms=median_ms),
                       facts=DeviceFacts(architecture="aarch64", cpu_model=cpu, os="Linux", os_bits=64),
                       tool="lce_benchmark_model", tool_version="0.16.0", edgebvit_version="test",
                       timestamp="2026-12-02T00:00:00Z")


def test_compare_puts_the_estimate_beside_a_device_measurement(tmp_path):
    f = tmp_path / "hand.tflite"
    data = _hand_built()
    f.write_bytes(data)
    pi = "Raspberry Pi 4 Model B Rev 1.4"
    lines = L.compare_lines([_device_record(f, data, pi, 1),
                             _device_record(f, data, pi, 2),  # no 2-thread profile: no line
                             _device_record(f, data, "Intel Xeon", 1),  # no profile describes it
                             _device_record(f, data, pi, 4, sha="0" * 64)])
    assert len(lines) == 3
    assert "measured 1.00 ms, estimated" in lines[1] and "[pi4b-1t" in lines[1]
    assert "changed since it was measured" in lines[2]


def test_a_users_device_record_joins_the_calibration_set(tmp_path):
    from edgebvit.bench.records import append_records

    f = tmp_path / "hand.tflite"
    data = _hand_built()
    f.write_bytes(data)
    results = tmp_path / "bench_results.jsonl"
    append_records(results, [_device_record(f, data, "Raspberry Pi 4 Model B Rev 1.4", 1, median_ms=0.8)])
    out = tmp_path / "mine.json"
    proc = subprocess.run([sys.executable, str(TOOLS / "fit_latency.py"), "fit", "--out", str(out),
                           "--add-measured", f"pi4b-1t:{results}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mine = json.loads(out.read_text())["profiles"]["pi4b-1t"]
    assert mine["calibration_models"] == 16
    assert mine["calibration"][-1]["model"].startswith("hand.tflite (measured, ssh://pi@board, 1 thr)")
    assert mine["calibration"][-1]["published_ms"] == 0.8
    # The user's file is a profiles file like the shipped one.
    assert L.resolve_profile("pi4b", L.load_profiles(out)).calibration_models == 16
