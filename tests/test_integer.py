"""converters/integer.py: exact integer attention, the lean graph, calibrated int8 and its gate."""
import json

import numpy as np
import pytest
from conftest import randomize_bn, run_cli

import edgebvit  # noqa: F401
import tensorflow as tf

import edgebvit.models as zoo
from edgebvit.converters import int8_layers, integer
from edgebvit.models import layers as L

pytestmark = pytest.mark.slow


def _small(name, classes, **extra):
    """A reduced zoo model at 16x16 (BinaryViT) or 32x32 (BHViT) with live attention."""
    info = zoo.get_model_info(name)
    if info.family == "bhvit":
        cfg = dict(depths=(1, 1, 1, 1), embed_dims=(64, 128, 128, 128), mlp_ratios=(2, 2, 2, 2),
                   num_heads=(1, 2, 2, 2), num_classes=classes)
    else:
        cfg = dict(input_shape=(16, 16, 1), num_classes=classes, patch_size=4, depths=1, embed_dims=32,
                   num_heads=1, mlp_ratios=2)
    m = zoo.create_model(name, **{**cfg, **extra})
    m._name = f"{name}_{classes}"  # unique inside a combined model
    randomize_bn(m, np.random.default_rng(classes))
    randomize_shifts(m, np.random.default_rng(classes + 100))
    return m


def randomize_shifts(model, rng):
    """Trained-looking shifts, slopes and LayerScales: every move of the lean graph then matters."""
    for layer in model.submodules:
        if isinstance(layer, (L.RPReLU, L.LearnableBias, L.BinarySign, L.LayerScale)):
            layer.set_weights([rng.normal(0.0, 0.2, w.shape).astype(np.float32) for w in layer.get_weights()])


# ---- the integer core is exact in the flatbuffer --------------------------------------------------

def _core_model(levels, *, heads=2, dim=64, lsa=False):
    """One input (8, 8, 3C) -> +-1 Q, K, V -> IntegerAttention: a single input keeps the
    interpreter's input order out of the comparison."""
    x = tf.keras.Input((8, 8, 3 * dim), name="qkv")
    q, k, v = (int8_layers.RangeObserver(fixed=(-1.0, 1.0), narrow_range=True, name=f"sign_{n}")(tf.sign(t) + 0.0)
               for n, t in zip("qkv", tf.split(x, 3, axis=-1)))
    scale = np.linspace(0.1, 0.2, heads) if lsa else 1.0 / np.sqrt(dim // heads)
    core = int8_layers.IntegerAttention(num_heads=heads, head_dim=dim // heads, score_scale=scale, levels=levels,
                                        mask_diagonal=lsa, layout="grid", quantize=True, name="core")
    return tf.keras.Model(x, core((q, k, v)))


def _median_probability(heads, dim, x):
    """A threshold amid the softmax probabilities of the test inputs: it splits the decisions."""
    q, k, _ = np.split(np.sign(x.reshape(len(x), 64, 3 * dim)), 3, axis=-1)
    d = dim // heads
    s = np.einsum("bqhd,bkhd->bhqk", q.reshape(len(x), 64, heads, d), k.reshape(len(x), 64, heads, d)) / np.sqrt(d)
    p = np.unique(np.exp(s) / np.exp(s).sum(-1, keepdims=True))
    lo = len(p) // 4  # the widest gap between two probabilities that occur, in the middle half:
    i = lo + 1 + int(np.argmax(np.diff(p[lo:3 * lo]) / p[lo + 1:3 * lo]))  # no decision is a float tie
    assert (p[i] - p[i - 1]) / p[i] > 1e-3
    return float((p[i - 1] + p[i]) / 2)


@pytest.mark.parametrize("form", ["bit", "thermometer", "lsq", "lsa", "one_head"])
def test_integer_core_is_exact_in_the_flatbuffer(form):
    """Scores, the quantizer's decisions and the integer context equal Keras's in the flatbuffer:
    thresholds at the median probability put half of all decisions next to a threshold."""
    from edgebvit.converters.export import ExportOptions, convert
    from edgebvit.converters.parity import make_interpreter, run_interpreter

    heads, dim = (1, 32) if form == "one_head" else (2, 64)
    x = np.random.default_rng(3).normal(size=(6, 8, 8, 3 * dim)).astype(np.float32)
    t = _median_probability(heads, dim, x)
    if form in ("bit", "lsa", "one_head"):
        levels = int8_layers.ProbLevels(thresholds=np.full((heads, 1), t), scale=np.full(heads, 2 * t))
    elif form == "thermometer":
        levels = int8_layers.ProbLevels(thresholds=np.tile([t / 2, t, 2 * t], (heads, 1)), scale=np.ones(heads),
                                        strict=False)
    else:  # LSQ: per-head scales and thresholds
        levels = int8_layers.ProbLevels(thresholds=np.array([[t / 2, t, 3 * t], [t, 2 * t, 4 * t]]),
                                        scale=np.array([0.01, 0.03]))
    model = _core_model(levels, heads=heads, dim=dim, lsa=form == "lsa")
    keras = model.predict(x, verbose=0)
    interp, _ = make_interpreter(convert(model, ExportOptions()))
    lce = run_interpreter(interp, x).reshape(keras.shape)
    assert np.abs(keras).max() > 0
    assert np.abs(lce - keras).max() <= 1e-5 * np.abs(keras).max()


def test_dead_binarizer_is_reported_and_outputs_zero():
    core = L.MultiHeadAttentionCore(num_heads=2, prob_quant="binary")
    q = tf.sign(tf.random.normal((1, 4, 4, 8))) + 0.0
    core((q, q, q))
    core.prob_binarizer.alpha.assign(-0.01)  # what a too-large first step does: no gradient brings it back
    levels = int8_layers.prob_levels(core)
    assert not np.any(levels.scale)
    assert float(tf.reduce_max(tf.abs(core((q, q, q))))) == 0.0


# ---- the twin computes the model's function ----------------------------------------------------

@pytest.mark.parametrize("name", ["binaryvit_tiny_32", "binaryvit_tiny_32_spt_lsa"])
def test_float_twin_is_the_same_function(name):
    tf.keras.utils.set_random_seed(0)
    m = _small(name, 10)
    info = integer.integer_twin(m, mode="float")
    assert "PReLU" in info.replaced.values() and "integer attention" in info.replaced.values()
    assert info.moved_shifts > 0 and info.fused_pools == 1 and "shifted BatchNorm" in info.replaced.values()
    x = np.random.default_rng(0).normal(size=(16, 16, 16, 1)).astype(np.float32)
    a, b = m(x, training=False).numpy(), info.model(x, training=False).numpy()
    assert np.abs(a - b).max() <= 1e-3 * max(1.0, np.abs(a).max())


@pytest.mark.parametrize("name", ["binaryvit_tiny_32", "binaryvit_tiny_32_spt_lsa", "bhvit_tiny_32"])
def test_attention_twin_is_the_same_function(name):
    """Every range of mode "attention" holds its value set exactly: fake-quant changes nothing."""
    tf.keras.utils.set_random_seed(0)
    m = _small(name, 10)
    info = integer.integer_twin(m, mode="attention")
    shape = m.input_shape[1:]
    x = np.random.default_rng(0).normal(size=(8, *shape)).astype(np.float32)
    a, b = m(x, training=False).numpy(), info.model(x, training=False).numpy()
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max())


def test_rebuild_never_touches_the_original():
    tf.keras.utils.set_random_seed(0)
    m = _small("binaryvit_tiny_32", 10)
    before = [w.copy() for w in m.get_weights()]
    info = integer.integer_twin(m, mode="full")
    integer.calibrate(info, np.random.default_rng(0).normal(size=(8, 16, 16, 1)).astype(np.float32))
    assert all(np.array_equal(a, b) for a, b in zip(before, m.get_weights()))
    assert all(not o.calibrating for o in info.observers())


# ---- every family's attention runs in int8 in the flatbuffer -----------------------------------

@pytest.fixture(scope="module")
def attention_export():
    """BinaryViT, its SPT/LSA variant and BHViT with both QD forms, one combined conversion."""
    from edgebvit.converters.export import ExportOptions, convert

    tf.keras.utils.set_random_seed(1)
    models = {"binaryvit": _small("binaryvit_tiny_32", 11), "lsa": _small("binaryvit_tiny_32_spt_lsa", 12),
              "bhvit_lsq": _small("bhvit_tiny_32", 13), "bhvit_fixed": _small("bhvit_tiny_32", 14, qd_form="fixed")}
    # Named inputs: the flatbuffer orders inputs by name, and Keras's automatic names (input_9,
    # input_10) would sort differently depending on how many inputs earlier tests made.
    i16, i32 = tf.keras.Input((16, 16, 1), name="image16"), tf.keras.Input((32, 32, 3), name="image32")
    outs = [models["binaryvit"](i16), models["lsa"](i16), models["bhvit_lsq"](i32), models["bhvit_fixed"](i32)]
    combined = tf.keras.Model([i16, i32], outs)
    info = integer.integer_twin(combined, mode="attention")  # rebuilds the nested models too
    fb = convert(info.model, ExportOptions())
    return combined, info, fb


def test_every_attention_matmul_is_int8(attention_export):
    from edgebvit.converters.inspect import inspect_flatbuffer

    _, info, fb = attention_export
    report = inspect_flatbuffer(fb)
    assert report.attention_macs > 0
    assert report.attention_int8_share == 1.0
    assert not [op for op in report.ops if op.attention and op.precision != "int8"]
    assert all(a["scores_exact"] for a in info.attention)
    assert {a["prob_levels"] for a in info.attention} == {1, 3}


def test_integer_attention_flatbuffer_agrees_with_keras(attention_export):
    from edgebvit.converters.parity import make_interpreter

    combined, info, fb = attention_export
    rng = np.random.default_rng(5)
    x16 = rng.normal(size=(12, 16, 16, 1)).astype(np.float32)
    x32 = rng.normal(size=(12, 32, 32, 3)).astype(np.float32)
    keras = combined.predict([x16, x32], verbose=0)
    interp, _ = make_interpreter(fb)
    lce = interp.predict([x16, x32])
    by_classes = {np.asarray(o).shape[-1]: np.asarray(o).reshape(12, -1) for o in lce}
    for k in keras:
        lo = by_classes[k.shape[-1]]
        agree = (k.argmax(-1) == lo.argmax(-1)).mean()
        assert agree >= 10 / 12, (k.shape[-1], agree)


# ---- the CLI: modes, calibration and the gate --------------------------------------------------

def _run_dir(tmp_path, n=40):
    tf.keras.utils.set_random_seed(2)
    m = _small("binaryvit_tiny_32", 10)
    run = tmp_path / "run"
    run.mkdir()
    m.save(run / "model.keras")
    rng = np.random.default_rng(1)
    np.savez(run / "parity_images.npz", x=rng.normal(size=(n, 16, 16, 1)).astype(np.float32),
             y=rng.integers(0, 10, n).astype(np.int64))
    (run / "config.json").write_text(json.dumps({"model": "tiny", "data": "random", "model_overrides": {}}))
    return run, m


def test_full_int8_without_calibration_is_one_line(tmp_path):
    run, _ = _run_dir(tmp_path)
    r = run_cli("export", run, "--tflite", "--integer", "full")
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert err[-1].startswith("error: --integer full needs calibration images")
    assert "--calibration-data" in r.stderr and "Traceback" not in r.stderr
    assert not (run / "model.tflite").exists()


def test_bad_calibration_fails_the_parity_gate(tmp_path):
    run, _ = _run_dir(tmp_path)
    # Ranges from two images of one class, shrunk: most tensors clip in int8.
    x = np.random.default_rng(9).normal(size=(2, 16, 16, 1)).astype(np.float32) * 0.05
    np.savez(tmp_path / "bad.npz", x=x, y=np.zeros(2, np.int64))
    r = run_cli("export", run, "--tflite", "--integer", "full", "--calibration-data", tmp_path / "bad.npz",
                "--json")
    assert r.returncode == 3, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("error: parity failed")
    report = json.loads((run / "model.export.json").read_text())
    assert report["status"] == "parity_failed"
    assert report["integer"]["mode"] == "full"
    assert report["integer"]["calibration"]["images"] == 2


def test_default_export_is_integer_attention_end_to_end(tmp_path):
    """No --integer: auto, which exports exact integer attention and the lean graph."""
    run, _ = _run_dir(tmp_path)
    r = run_cli("export", run, "--tflite")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((run / "model.export.json").read_text())
    assert report["integer"]["mode"] == "attention" and report["integer"]["requested"] == "auto"
    assert report["integer"]["lean"]["moved_shifts"] > 0 and "lean graph:" in r.stdout
    assert report["inspection"]["macs"]["attention_int8_share"] == 1.0
    assert report["parity"]["top1_agreement"] >= 0.99
    assert "integer: attention" in r.stdout and "in int8)" in r.stdout


def test_lean_graph_drops_shift_and_pool_ops():
    """Moved shifts leave no SUB, fused pooling no PAD or AVERAGE_POOL_2D; a third fewer ops."""
    from collections import Counter

    from edgebvit.converters.export import ExportOptions, convert
    from edgebvit.converters.inspect import inspect_flatbuffer

    tf.keras.utils.set_random_seed(4)
    m = _small("binaryvit_tiny_32", 10)
    before = Counter(op.op_type for op in inspect_flatbuffer(convert(m, ExportOptions())).ops)
    info = integer.integer_twin(m, mode="attention")
    after = Counter(op.op_type for op in inspect_flatbuffer(convert(info.model, ExportOptions())).ops)
    assert before["SUB"] > 0 and before["AVERAGE_POOL_2D"] == 4
    assert after["SUB"] == 0 and after["PAD"] == 0 and after["AVERAGE_POOL_2D"] == 0
    assert sum(after.values()) <= 0.7 * sum(before.values()), (before, after)


def test_auto_falls_back_to_none_when_attention_fails_the_gate(tmp_path, monkeypatch):
    """The default takes the best mode that passes the gate, and the report says what it refused."""
    from edgebvit.converters.export import ExportOptions, export

    run, _ = _run_dir(tmp_path)

    def broken(model, mode, calibration=None):  # a twin whose logits are negated: top-1 disagrees
        twin = tf.keras.Model(model.inputs, tf.keras.layers.Rescaling(-1.0)(model.outputs[0]))
        return twin, {"mode": "attention", "replaced": {}, "attention": [], "dead_attention": []}

    monkeypatch.setattr(integer, "integer_model", broken)
    report = export(run, ExportOptions(progress=False))
    assert report.status == "ok" and report.integer["mode"] == "none"
    assert report.integer["refused"]["mode"] == "attention"
    assert report.integer["refused"]["reason"]  # the gate's own words (agreement, degenerate outputs, ...)
    assert report.parity["top1_agreement"] >= 0.99
