"""converters/inspect.py: the flatbuffer read back, MACs checked against larq's own profile."""
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import edgebvit  # noqa: F401  (legacy Keras before TensorFlow)
from edgebvit.cli import cli
from edgebvit.converters.inspect import inspect_flatbuffer, plot_macs
from edgebvit.errors import FlatbufferError

pytestmark = pytest.mark.slow


def _mixed_model():
    """One of everything inspect must count: binary 1x1, grouped binary 3x3, float conv,
    depthwise, QuantDense on tokens, an activation x activation matmul and a Dense head."""
    import larq as lq
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    q = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)
    x = tf.keras.Input((8, 8, 3))
    h = tf.keras.layers.Conv2D(64, 3, padding="same", name="stem")(x)
    h = tf.keras.layers.BatchNormalization(name="bn0")(h)
    h = lq.layers.QuantConv2D(64, 1, name="bin1x1", **q)(h)
    h = tf.keras.layers.BatchNormalization(name="bn1")(h)
    h = lq.layers.QuantConv2D(64, 3, padding="same", pad_values=1.0, groups=2, name="bin_grouped", **q)(h)
    h = tf.keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(h)
    t = tf.keras.layers.Reshape((64, 64), name="tokens")(h)
    t = lq.layers.QuantDense(32, input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="qdense")(t)
    a = tf.keras.layers.Lambda(lambda v: tf.matmul(v, v, transpose_b=True), name="attn")(t)  # (B, 64, 64)
    g = tf.keras.layers.GlobalAveragePooling1D(name="gap")(a)
    out = tf.keras.layers.Dense(10, name="head")(g)
    model = tf.keras.Model(x, out)
    for bn in ("bn0", "bn1"):  # non-trivial statistics: no exact sign ties at the binarizers
        layer = model.get_layer(bn)
        rng = np.random.default_rng(1)
        g_, b_, m_, v_ = layer.get_weights()
        layer.set_weights([rng.uniform(0.5, 1.5, g_.shape), rng.normal(0.05, 0.3, b_.shape),
                           rng.normal(0, 0.5, m_.shape), rng.uniform(1, 2, v_.shape)])
    return model


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    import larq_compute_engine as lce

    model = _mixed_model()
    fb = lce.convert_keras_model(model)
    path = tmp_path_factory.mktemp("inspect") / "mixed.tflite"
    path.write_bytes(fb)
    return model, fb, path


def _larq_macs(model, name, precision=None):
    import larq as lq

    prof = {p.name: p for p in lq.models.ModelProfile(model).layer_profiles}
    return prof[name].op_count(op_type="mac", precision=precision)


def test_mac_counts_match_larq_profile(converted):
    model, fb, _ = converted
    r = inspect_flatbuffer(fb)
    by_type = {t.op_type: t for t in r.by_type()}
    # Binary convs: both count the same two layers.
    assert by_type["LceBconv2d"].count == 2
    assert by_type["LceBconv2d"].macs == _larq_macs(model, "bin1x1", 1) + _larq_macs(model, "bin_grouped", 1)
    assert by_type["CONV_2D"].macs == _larq_macs(model, "stem", 32)
    assert by_type["DEPTHWISE_CONV_2D"].macs == _larq_macs(model, "dw", 32)
    # Constant-weight FULLY_CONNECTED = QuantDense (larq calls it 1-bit, LCE runs it float) + head.
    fc_const = sum(op.macs for op in r.ops if op.op_type == "FULLY_CONNECTED" and not op.attention)
    assert fc_const == _larq_macs(model, "qdense") + _larq_macs(model, "head", 32)
    assert {op.precision for op in r.ops if op.op_type == "FULLY_CONNECTED"} == {"float"}
    # larq does not count the Lambda matmul; inspect does, as attention: 64x64 out, K = 32.
    assert r.attention_macs == 64 * 64 * 32
    assert r.binary_macs == by_type["LceBconv2d"].macs
    assert r.binary_mac_share == pytest.approx(r.binary_macs / r.total_macs)
    assert r.binary_mac_share_excluding_attention > r.binary_mac_share


def test_bconv_options_groups_and_packed_filters(converted):
    _, fb, _ = converted
    r = inspect_flatbuffer(fb)
    bconvs = [op for op in r.ops if op.op_type == "LceBconv2d"]
    grouped = [op for op in bconvs if op.groups == 2]
    assert len(grouped) == 1 and r.has_grouped_bconv
    g = grouped[0]
    assert g.options["channels_in"] == 64 and g.options["pad_values"] == 1
    filt = g.inputs[1]
    assert filt.dtype == "INT32" and filt.shape == (64, 3, 3, 1)  # 32 channels per group = 1 word
    assert g.macs == 8 * 8 * 64 * 3 * 3 * 32
    assert g.precision == "binary"
    assert any("bin_grouped" in t.name for t in g.outputs + g.inputs)  # names map back to Keras layers
    # Packed weights: the float32-equivalent of the file is several times its size.
    assert r.float32_equivalent_bytes > 3 * r.file_bytes
    assert r.weight_bytes < r.file_bytes


def test_grouped_model_runs_with_indirect_bgemm(converted):
    from edgebvit.converters.parity import check_parity

    model, fb, _ = converted
    x = np.random.default_rng(0).normal(size=(20, 8, 8, 3)).astype(np.float32)
    res = check_parity(model, fb, x)
    assert res.indirect_bgemm is True
    assert res.top1_agreement == 1.0 and res.max_abs_diff < 1e-2


def test_plain_tflite_is_a_report_not_an_error(tmp_path):
    import tensorflow as tf

    x = tf.keras.Input((4,))
    m = tf.keras.Model(x, tf.keras.layers.Dense(3)(x))
    fb = tf.lite.TFLiteConverter.from_keras_model(m).convert()
    r = inspect_flatbuffer(fb)
    assert not r.is_lce and r.op_counts() == {"FULLY_CONNECTED": 1} and r.total_macs == 12


def test_bad_files_raise_flatbuffer_error(tmp_path, converted):
    _, fb, _ = converted
    cases = {
        "empty.tflite": b"",
        "text.tflite": b"hello, not a flatbuffer at all\n",
        "truncated.tflite": fb[: len(fb) // 2],
        "corrupt.tflite": fb[:8] + bytes(len(fb) - 8),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FlatbufferError):
            inspect_flatbuffer(tmp_path / name)
    with pytest.raises(FlatbufferError, match="no such file"):
        inspect_flatbuffer(tmp_path / "missing.tflite")
    with pytest.raises(FlatbufferError, match="directory"):
        inspect_flatbuffer(tmp_path)


def test_cli_inspect_text_json_plot(converted, tmp_path):
    import json

    _, _, path = converted
    runner = CliRunner()
    res = runner.invoke(cli, ["inspect", str(path)])
    assert res.exit_code == 0, res.output
    assert "LceBconv2d" in res.output and "attention" in res.output and "binary MAC share" in res.output
    res = runner.invoke(cli, ["inspect", str(path), "--json", "--plot", str(tmp_path / "macs.png")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["op_counts"]["LceBconv2d"] == 2 and data["has_grouped_bconv"] is True
    assert (tmp_path / "macs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_inspect_bad_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    res = CliRunner().invoke(cli, ["inspect", str(bad)])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [f"error: {bad}: not a TFLite flatbuffer (no TFL3 identifier)"]
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_subprocess_inspect_truncated_no_traceback(converted, tmp_path):
    _, fb, _ = converted
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(fb[:200])
    proc = subprocess.run([sys.executable, "-m", "edgebvit", "inspect", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: {bad}: corrupt or truncated TFLite flatbuffer"
