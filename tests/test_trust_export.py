"""Issue #18, `edgebvit export`: safe loading, artifacts that vouch for themselves, a converter crash
that does not kill the process, and a parity gate that tells ties and degenerate outputs from real
divergence. Models are tiny (16x16 inputs, a few layers): each conversion takes seconds.
"""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import edgebvit  # noqa: F401
from edgebvit.cli import cli
from edgebvit.errors import ModelError, ParityError

pytestmark = pytest.mark.slow

SHAPE = (16, 16, 3)


def _tiny(seed=0, *, head_bias=None, head_scale=1.0, classes=10):
    """Float stem, one binary 1x1 QuantConv2D between BNs with trained-looking statistics, Dense head."""
    import larq as lq
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    x = tf.keras.Input(SHAPE)
    h = tf.keras.layers.Conv2D(32, 3, strides=2, padding="same", name="stem")(x)
    h = tf.keras.layers.BatchNormalization(name="bn0")(h)
    h = lq.layers.QuantConv2D(32, 1, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip", use_bias=False, name="bin1")(h)
    h = tf.keras.layers.BatchNormalization(name="bn1")(h)
    h = tf.keras.layers.GlobalAveragePooling2D(name="gap")(h)
    m = tf.keras.Model(x, tf.keras.layers.Dense(classes, name="head")(h))
    rng = np.random.default_rng(seed)
    for layer in m.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            g, b, mu, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0.05, 0.3, b.shape),
                               rng.normal(0, 0.5, mu.shape), rng.uniform(1, 2, v.shape)])
    head = m.get_layer("head")
    k, b = head.get_weights()
    head.set_weights([k * head_scale, b if head_bias is None else np.asarray(head_bias, np.float32)])
    return m


def _float_model():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    x = tf.keras.Input(SHAPE)
    h = tf.keras.layers.Conv2D(8, 3, strides=2, name="conv")(x)
    h = tf.keras.layers.GlobalAveragePooling2D()(h)
    return tf.keras.Model(x, tf.keras.layers.Dense(4, name="head")(h))


def _images(n, seed=1):
    return np.random.default_rng(seed).normal(size=(n, *SHAPE)).astype(np.float32)


def _run_dir(tmp_path, model, n=60, name="run"):
    run = tmp_path / name
    run.mkdir()
    model.save(run / "model.keras")
    np.savez(run / "parity_images.npz", x=_images(n), y=np.arange(n) % 10)
    (run / "config.json").write_text(json.dumps({"model": "tiny", "data": "random", "model_overrides": {}}))
    return run


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lambda_h5(tmp_path):
    """A legacy .h5 whose Lambda layer creates MARKER whenever Keras rebuilds the model."""
    import tensorflow as tf

    marker = tmp_path / "MARKER"
    fn = eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")  # noqa: S307 - the attack under test
    x = tf.keras.Input(SHAPE)
    h = tf.keras.layers.Lambda(fn, name="payload")(tf.keras.layers.Conv2D(4, 3, name="c")(x))
    path = tmp_path / "lambda.h5"
    tf.keras.Model(x, tf.keras.layers.Dense(2)(tf.keras.layers.Flatten()(h))).save(path)
    marker.unlink()  # saving built (and so ran) the lambda in this process: that is the test's own doing
    return path, marker


def _last_line(text):
    return text.strip().splitlines()[-1]


# ---- 1. no code runs from a model file -------------------------------------------------------

def test_cli_refuses_an_hdf5_lambda_and_runs_none_of_it(tmp_path):
    import shutil

    path, marker = _lambda_h5(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "edgebvit", "export", str(path), "--tflite"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert _last_line(proc.stderr).startswith(f"error: {path} contains a Lambda layer")
    assert not marker.exists() and not path.with_suffix(".tflite").exists()

    # A run directory whose model.keras is really HDF5: detected by content, refused the same way.
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(path, run / "model.keras")
    np.savez(run / "parity_images.npz", x=_images(4), y=np.zeros(4))
    res = CliRunner().invoke(cli, ["export", str(run), "--tflite"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "contains a Lambda layer" in res.output and not marker.exists()


# ---- 8. a converter crash is one line, not a dead process -------------------------------------

def test_converter_crash_is_a_one_line_error(tmp_path):
    path = tmp_path / "tiny.keras"
    _tiny().save(path)
    env = {**os.environ, "EDGEBVIT_TEST_CONVERTER_CRASH": "1"}
    proc = subprocess.run([sys.executable, "-m", "edgebvit", "export", str(path), "--tflite", "--parity-images", "0"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = _last_line(proc.stderr)
    assert last.startswith(f"error: LCE converter crashed on {path}: killed by signal 11 (SIGSEGV)"), last
    assert "--no-rewrite" in last
    assert not (tmp_path / "tiny.tflite").exists() and not (tmp_path / "tiny.export.json").exists()


def test_int8_io_on_a_float_model_is_refused_not_silently_float():
    """LCE returns float32 input/output for a model without quantization when int8 is asked."""
    from edgebvit.converters.export import ExportOptions, convert

    with pytest.raises(ModelError, match="int8 input/output needs an int8-quantized model"):
        convert(_tiny(), ExportOptions(input_type="int8", output_type="int8"))


# ---- 9. models from other code bases: --import --------------------------------------------------

def test_import_option_failure_is_one_line(tmp_path):
    path = tmp_path / "tiny.keras"
    _float_model().save(path)
    res = CliRunner().invoke(cli, ["export", str(path), "--tflite", "--import", "trust_no_such_module_xyz"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --import trust_no_such_module_xyz: cannot import it")
    assert "No module named 'trust_no_such_module_xyz'" in lines[0]


# ---- 6. artifacts: sha256, write order, never over an input -----------------------------------

def test_report_names_the_sha256_of_what_it_describes(tmp_path):
    run = _run_dir(tmp_path, _tiny())
    res = CliRunner().invoke(cli, ["export", str(run), "--tflite"])
    assert res.exit_code == 0, res.output
    rep = json.loads((run / "model.export.json").read_text())
    assert rep["tflite_sha256"] == _sha(run / "model.tflite")
    assert rep["source_sha256"] == _sha(run / "model.keras")
    assert rep["parity_data_sha256"] == _sha(run / "parity_images.npz")
    assert f"sha256 {rep['tflite_sha256']}" in res.output


def test_killed_reexport_never_leaves_a_report_beside_another_flatbuffer(tmp_path, monkeypatch):
    """Killed during parity (the slow part), the old flatbuffer and its report stay a pair."""
    import edgebvit.converters.parity as parity
    from edgebvit.converters.export import ExportOptions, export

    path = tmp_path / "m.keras"
    out, report = tmp_path / "m.tflite", tmp_path / "m.export.json"
    _tiny(0).save(path)
    export(path, ExportOptions(parity_images=60))
    first = out.read_bytes()

    _tiny(1).save(path)  # a different model at the same path: a different flatbuffer
    real_check = parity.check_parity

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for SIGTERM/SIGKILL in the middle of the parity gate

    monkeypatch.setattr(parity, "check_parity", killed)
    with pytest.raises(KeyboardInterrupt):
        export(path, ExportOptions(parity_images=60))
    assert out.read_bytes() == first
    assert json.loads(report.read_text())["tflite_sha256"] == _sha(out)

    monkeypatch.setattr(parity, "check_parity", real_check)
    export(path, ExportOptions(parity_images=60))
    assert out.read_bytes() != first and json.loads(report.read_text())["tflite_sha256"] == _sha(out)


def test_parity_failure_still_publishes_flatbuffer_and_report(tmp_path, monkeypatch):
    import importlib

    export_mod = importlib.import_module("edgebvit.converters.export")  # the package re-exports `export`

    other = export_mod.convert(_tiny(7), export_mod.ExportOptions())  # what a broken converter might emit
    monkeypatch.setattr(export_mod, "convert", lambda model, options, label=None: other)
    path = tmp_path / "m.keras"
    _tiny(0).save(path)
    with pytest.raises(ParityError) as err:
        export_mod.export(path, export_mod.ExportOptions(parity_images=60, locate_divergence=False))
    assert err.value.exit_code == 3 and "parity failed" in str(err.value)
    rep = json.loads((tmp_path / "m.export.json").read_text())
    assert rep["status"] == "parity_failed"
    assert (tmp_path / "m.tflite").read_bytes() == other and rep["tflite_sha256"] == _sha(tmp_path / "m.tflite")


def test_output_may_not_overwrite_an_input(tmp_path):
    model = tmp_path / "m.keras"
    _float_model().save(model)
    runner = CliRunner()
    cases = []
    data = tmp_path / "data.tflite"  # an .npz under a .tflite name: np.load does not care
    np.savez(open(data, "wb"), x=_images(4))
    cases.append((["--parity-data", str(data), "-o", str(data)], data, "would overwrite its input (parity data"))
    clash = tmp_path / "out.export.json"  # the report of out.tflite
    np.savez(open(clash, "wb"), x=_images(4))
    cases.append((["--parity-data", str(clash), "-o", str(tmp_path / "out.tflite")], clash,
                  "would overwrite its input (parity data"))
    (tmp_path / "dir.tflite").mkdir()
    cases.append((["-o", str(tmp_path / "dir.tflite")], None, "is a directory"))
    for args, protected, msg in cases:
        before = protected.read_bytes() if protected else None
        res = runner.invoke(cli, ["export", str(model), "--tflite", *args])
        lines = res.output.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and msg in lines[0], (args, res.output)
        if protected:
            assert protected.read_bytes() == before


def test_parity_images_with_nan_are_refused(tmp_path):
    """NaN inputs give NaN logits, whose argmax "agrees" everywhere: a silent pass."""
    run = _run_dir(tmp_path, _float_model(), n=8)
    x = _images(8)
    x[3, 0, 0, 0] = np.nan
    np.savez(run / "parity_images.npz", x=x, y=np.zeros(8))
    res = CliRunner().invoke(cli, ["export", str(run), "--tflite"])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "NaN or infinite" in lines[0], res.output
    assert not (run / "model.tflite").exists()


# ---- 9. the parity gate: ties, degenerate outputs, few samples, caps, progress ----------------

def test_near_tied_logits_are_ties_not_a_failure(tmp_path, monkeypatch):
    """Float-rounding-sized differences flip top-1 where Keras's top-1 margin is tiny: ties."""
    import edgebvit.converters.parity as parity
    from edgebvit.converters.export import ExportOptions, export, format_export_report

    real_run = parity.run_interpreter
    rng = np.random.default_rng(5)

    def noisy(interpreter, x, **kwargs):
        y = real_run(interpreter, x, **kwargs)
        return y + rng.normal(0.0, 3e-4 * float(np.abs(y).max()), y.shape).astype(np.float32)

    monkeypatch.setattr(parity, "run_interpreter", noisy)
    path = tmp_path / "m.keras"
    # Untrained-looking head: a common offset and a small input-dependent part, so logits are
    # near-tied (top-1 margins of a few thousandths) and max |diff| ~ 0.002 flips a few of them.
    _tiny(3, head_bias=[2.0] * 10, head_scale=0.01).save(path)
    report = export(path, ExportOptions(parity_images=200))
    p = report.parity
    assert report.status == "ok" and not p["degenerate"]
    assert p["disagreements"] >= 3 and p["top1_agreement"] < 0.99  # the old gate failed this export
    assert p["ties"] == p["disagreements"] and p["agreement_excluding_ties"] == 1.0
    assert p["tie_tolerance"] > 0 and "tie(s)" in format_export_report(report)


def test_real_divergence_is_not_excused_as_ties():
    from edgebvit.converters.parity import ParityResult, compare_logits

    rng = np.random.default_rng(0)
    keras = rng.normal(size=(200, 10)).astype(np.float32)
    for lce in (keras[:, ::-1].copy(), keras + rng.normal(0, 1.0, keras.shape).astype(np.float32)):
        stats = compare_logits(keras, lce)
        stats.pop("warnings")
        r = ParityResult(**stats)
        assert r.disagreements > 50 and r.ties < r.disagreements / 4
        assert r.verdict(0.99) and "disagree beyond ties" in r.verdict(0.99)


def test_degenerate_outputs_are_flagged_and_judged_by_logit_error(tmp_path):
    path = tmp_path / "onecls.keras"
    _tiny(head_bias=[8.0] + [0.0] * 9, head_scale=0.01).save(path)  # every input lands in class 0
    res = CliRunner().invoke(cli, ["export", str(path), "--tflite", "--parity-images", "60"])
    assert res.exit_code == 0, res.output
    assert "degenerate: parity is not informative" in res.output
    p = json.loads((tmp_path / "onecls.export.json").read_text())["parity"]
    assert p["degenerate"] and p["keras_classes"] == 1 and p["relative_error"] < 1e-3

    from edgebvit.converters.parity import ParityResult, compare_logits

    keras = np.tile(np.asarray([[8.0] + [0.0] * 9], np.float32), (60, 1))
    stats = compare_logits(keras, keras * 1.5)  # a broken conversion that keeps the top-1 class
    stats.pop("warnings")
    r = ParityResult(**stats)
    assert r.degenerate and r.top1_agreement == 1.0 and "degenerate" in r.verdict(0.99)


def test_few_samples_warn(tmp_path):
    run = _run_dir(tmp_path, _tiny(), n=4)
    res = CliRunner().invoke(cli, ["export", str(run), "--tflite"])
    assert res.exit_code == 0, res.output
    assert "only 4 samples compared" in res.output
    p = json.loads((run / "model.export.json").read_text())["parity"]
    assert p["samples"] == 4 and any("only 4 samples" in w for w in p["warnings"])


def test_random_input_count_is_capped_for_large_inputs():
    from edgebvit.converters.export import ExportOptions, default_parity_count

    n, cap = default_parity_count(ExportOptions(), (None, 224, 224, 3), synthetic=True)
    assert n == 50 and "capped at 50" in cap and "224x224x3" in cap
    assert default_parity_count(ExportOptions(), (None, 224, 224, 3), synthetic=False) == (500, None)
    assert default_parity_count(ExportOptions(parity_images=500), (None, 224, 224, 3), synthetic=True) == (500, None)
    assert default_parity_count(ExportOptions(), (None, *SHAPE), synthetic=True) == (500, None)


def test_parity_shows_progress_on_long_runs(monkeypatch):
    import edgebvit.converters.parity as parity
    from edgebvit.converters.export import ExportOptions, convert

    m = _tiny()
    fb = convert(m, ExportOptions())
    monkeypatch.setattr(parity, "PROGRESS_EVERY_S", 0.0)
    lines = []
    parity.check_parity(m, fb, _images(5), progress=lines.append)
    assert lines and all("through the LCE interpreter" in ln for ln in lines) and "4/5" in lines[-1]


# ---- 9. precheck and rewrite say what they could not do ----------------------------------------

def test_precheck_says_when_it_could_not_check(tmp_path):
    from edgebvit.converters.precheck import precheck

    findings = precheck(_float_model())
    assert [f.kind for f in findings] == ["not_checked"] and findings[0].severity == "info"
    assert findings[0].message.startswith("could not check: no larq layer")
    path = tmp_path / "float.keras"
    _float_model().save(path)
    res = CliRunner().invoke(cli, ["export", str(path), "--tflite", "--parity-images", "60"])
    assert res.exit_code == 0, res.output
    assert "precheck: not applicable (no larq layer" in res.output and "0 warning(s)" not in res.output


def test_float_quant_dense_is_not_rewritten():
    import larq as lq
    import tensorflow as tf

    from edgebvit.converters.precheck import precheck
    from edgebvit.converters.rewrites import rewrite_quant_dense

    tf.keras.utils.set_random_seed(0)
    x = tf.keras.Input((8, 32))
    h = lq.layers.QuantDense(32, name="float_qd")(x)  # no quantizers: a plain Dense
    h = lq.layers.QuantDense(32, kernel_quantizer="ste_sign", kernel_constraint="weight_clip", name="kernel_only")(h)
    h = lq.layers.QuantDense(32, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                             kernel_constraint="weight_clip", name="binary")(h)
    m = tf.keras.Model(x, h)
    res = rewrite_quant_dense(m)
    assert res.rewritten == ("binary",)
    skipped = dict(s.split(": ", 1) for s in res.skipped)
    assert set(skipped) == {"float_qd", "kernel_only"}
    assert "float QuantDense" in skipped["float_qd"] and "not binary on both sides" in skipped["kernel_only"]
    kept = {type(l).__name__ for l in res.model.layers if l.name in ("float_qd", "kernel_only")}
    assert kept == {"QuantDense"}
    xin = np.random.default_rng(0).normal(size=(2, 8, 32)).astype(np.float32)
    np.testing.assert_allclose(res.model(xin), m(xin), rtol=1e-5, atol=1e-4)
    msg = {f.layer: f.message for f in precheck(m)}
    assert "not binary on both sides" in msg["kernel_only"] and "float_qd" not in msg
    assert "--rewrite turns it into" in msg["binary"]
