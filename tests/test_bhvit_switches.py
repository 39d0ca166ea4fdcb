"""BHViT's two official switches (docs/papers.md 0 and 2.6): `--gsb` (GSB attention quantizer) and
`--recu` (ReCU weight binarisation), each against a NumPy transcription of the official code's
forward and backward, then on a reduced model: one training step and an LCE export whose binary
layers are all `LceBconv2d` and whose outputs equal Keras's."""
import math

import numpy as np
import pytest

import edgebvit  # noqa: F401
import larq as lq
import tensorflow as tf

from edgebvit.errors import ModelError
from edgebvit.models import layers as L
from edgebvit.models.layers.quantizers import recu_clip
from edgebvit.models.registry import create_model, get_model_info


# ---- GSB ---------------------------------------------------------------------------------------

def _gsb_reference(p, alpha, alpha2, alpha3, dy):
    """`GSB_Attention.forward/backward` (official transformer/utils_quant.py) in NumPy."""
    eps = 1e-5
    q_w = p / alpha
    q_w_b = np.clip(np.round(q_w), 0.0, 1.0)  # np.round: half to even, as torch.round
    row_max = q_w.max(axis=3, keepdims=True)
    t2 = (q_w > 0.9 * row_max).astype(np.float64)
    t1 = (q_w > 0.7 * row_max).astype(np.float64)
    t0 = q_w_b - t1
    t1 = t1 - t2
    a, a2, a3 = (v if v > eps else eps for v in (alpha, alpha2, alpha3))
    out = (t0 + t1 * a2 + t2 * a3) * a
    q = p / a
    middle = 1.0 - (q < 0.0) - (q > 1.0)
    h = middle * (-q)
    g = t0 * (1 + h) + a2 * t1 * (1 + h) + a3 * t2 * (1 + h)
    grads = dict(alpha=(g * dy).sum(), alpha2=(a * t1 * dy).sum(), alpha3=(a * t2 * dy).sum(),
                 p=a * (t0 + t1 * a2 + t2 * a3) * dy)
    return out, grads


@pytest.mark.parametrize("alpha,alpha2,alpha3", [(0.005, 1.0, 1.0), (0.08, 1.7, 2.4), (0.3, 0.5, 1e-7)])
def test_gsb_matches_the_official_forward_and_backward(alpha, alpha2, alpha3):
    rng = np.random.default_rng(0)
    scores = rng.normal(scale=3.0, size=(2, 3, 5, 16))
    p = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    dy = rng.normal(size=p.shape)
    quant = L.GSBQuantizer()
    quant.build(p.shape)
    for var, value in ((quant.alpha, alpha), (quant.alpha2, alpha2), (quant.alpha3, alpha3)):
        var.assign(value)
    p_t = tf.constant(p, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(p_t)
        out = quant(p_t)
        loss = tf.reduce_sum(out * tf.constant(dy, tf.float32))
    d_p, d_a, d_a2, d_a3 = tape.gradient(loss, [p_t, quant.alpha, quant.alpha2, quant.alpha3])
    want, grads = _gsb_reference(p.astype(np.float32).astype(np.float64), np.float32(alpha), np.float32(alpha2),
                                 np.float32(alpha3), dy)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d_p.numpy(), grads["p"], rtol=1e-4, atol=1e-6)
    for got, key in ((d_a, "alpha"), (d_a2, "alpha2"), (d_a3, "alpha3")):
        np.testing.assert_allclose(float(got), grads[key], rtol=1e-4, atol=1e-5)


def test_gsb_has_no_integer_attention_form():
    from edgebvit.converters.int8_layers import prob_levels

    core = L.QDAttention(num_heads=1, qd_form="gsb", name="core")
    x = tf.zeros((1, 1, 4, 8))
    core([x, x, x])
    with pytest.raises(ModelError, match="GSB attention has no fixed integer thresholds.*--integer none"):
        prob_levels(core)


# ---- ReCU --------------------------------------------------------------------------------------

def _recu_reference_weight(w):
    """The official `QuantizeLinear` forward with recu=True, PyTorch's (out, in) layout as (in, out)
    columns: ``binary.detach() - clipped.detach() + clipped`` (value and gradient)."""
    alpha = tf.stop_gradient(tf.reduce_mean(tf.abs(w), axis=0, keepdims=True))
    real = w - tf.reduce_mean(w, axis=0, keepdims=True)
    n = int(w.shape[0])
    std = tf.sqrt(tf.reduce_sum(tf.square(real), axis=0, keepdims=True) / (n - 1) + 1e-5)
    real = real / (std / 2 / np.sqrt(2))
    q_tau = tf.stop_gradient(-tf.reduce_mean(tf.abs(real)) * np.log(2 - 2 * 0.92))
    binary = alpha * tf.sign(real)
    clipped = tf.clip_by_value(real, -q_tau, q_tau)
    return tf.stop_gradient(binary) - tf.stop_gradient(clipped) + clipped


def test_recu_forward_is_scaled_sign_and_its_gradient_is_the_official_one():
    rng = np.random.default_rng(1)
    w2d = tf.constant(rng.laplace(scale=0.05, size=(24, 6)), tf.float32)  # (in, out)
    kernel = tf.reshape(w2d, (1, 1, 24, 6))
    dy = tf.constant(rng.normal(size=(1, 1, 24, 6)), tf.float32)
    recu, plain = L.ReCUSign(), L.ScaledSign(centre=True)
    np.testing.assert_array_equal(recu(kernel).numpy(), plain(kernel).numpy())  # +-alpha per output channel
    assert all(len(np.unique(np.abs(recu(kernel).numpy()[..., o]))) == 1 for o in range(6))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(kernel)
        tape.watch(w2d)
        ours = tf.reduce_sum(recu(kernel) * dy)
        ref = tf.reduce_sum(_recu_reference_weight(w2d) * tf.reshape(dy, (24, 6)))
    g_ours = tape.gradient(ours, kernel).numpy().reshape(24, 6)
    g_ref = tape.gradient(ref, w2d).numpy()
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-4, atol=1e-6)


def test_gsb_rows_below_half_alpha_get_the_official_negative_base():
    """Where P > 0.7 max_row P but P <= alpha / 2, T0 is -1 (the official code does not clip it):
    such a row's levels are alpha (alpha3 - 1) and alpha (alpha2 - 1), not alpha alpha3, alpha alpha2."""
    quant = L.GSBQuantizer()
    quant.build((1, 1, 1, 4))
    for var, value in ((quant.alpha, 0.5), (quant.alpha2, 2.0), (quant.alpha3, 3.0)):
        var.assign(value)
    # q = P / alpha = [0.4, 0.3, 0.24, 0.22]: no entry reaches the base mask (q > 1/2);
    # q > 0.9 max = 0.36 for the first, q > 0.7 max = 0.28 for the first two.
    low = quant(tf.constant([[[[0.20, 0.15, 0.12, 0.11]]]])).numpy().ravel()
    np.testing.assert_allclose(low, [0.5 * (3.0 - 1.0), 0.5 * (2.0 - 1.0), 0.0, 0.0], rtol=1e-6)
    want, _ = _gsb_reference(np.array([[[[0.20, 0.15, 0.12, 0.11]]]], np.float32).astype(np.float64), 0.5, 2.0, 3.0,
                             np.ones((1, 1, 1, 4)))
    np.testing.assert_allclose(low, want.ravel(), rtol=1e-6)


def test_recu_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="tau must lie in"):
        L.ReCUSign(tau=1.0)
    with pytest.raises(ValueError, match="needs centre=True"):
        L.binary_conv(8, 1, name="c", recu=True, centre=False)


def test_bop_with_recu_is_refused_in_one_line():
    from edgebvit.errors import EdgebvitError
    from edgebvit.training.config import RunConfig
    from edgebvit.training.optim import make_optimizer

    model = create_model("bhvit_tiny_32_recu", **REDUCED)
    cfg = RunConfig(model="bhvit_tiny_32_recu")
    cfg.optim.optimizer = "bop"
    cfg.optim.weight_decay = 0.0
    with pytest.raises(EdgebvitError, match="optimizer bop needs unclipped straight-through gradients.*recu=false"):
        make_optimizer(cfg, 10, model)


def test_recu_clip_threshold_is_the_laplace_quantile_at_tau():
    w = tf.constant(np.random.default_rng(2).normal(size=(1, 1, 64, 4)), tf.float32)
    clipped = recu_clip(w, 0.92).numpy()
    wc = w.numpy() - w.numpy().mean(axis=(0, 1, 2), keepdims=True)
    ws = wc / (np.sqrt(wc.var(axis=(0, 1, 2), ddof=1, keepdims=True) + 1e-5) / 2 / math.sqrt(2))
    q_tau = -np.abs(ws).mean() * math.log(2 - 2 * 0.92)
    assert math.isclose(q_tau, 1.8326 * np.abs(ws).mean(), rel_tol=1e-4)
    np.testing.assert_allclose(clipped, np.clip(ws, -q_tau, q_tau), rtol=1e-4, atol=1e-5)
    assert (np.abs(ws) > q_tau).any()  # some weights are clipped: their gradient is zero


# ---- on a model --------------------------------------------------------------------------------

REDUCED = dict(depths=(1, 1, 1, 1), embed_dims=(64, 128, 128, 128), mlp_ratios=(2, 2, 2, 2), num_heads=(1, 2, 2, 2),
               num_classes=6)


def test_switches_reach_the_right_layers():
    model = create_model("bhvit_tiny_32_recu", **REDUCED)
    recu = {l.name for l in model.submodules
            if isinstance(l, lq.layers.QuantConv2D) and isinstance(l.kernel_quantizer, L.ReCUSign)}
    binary = {l.name for l in model.submodules if isinstance(l, lq.layers.QuantConv2D)}
    # The linears (query/key/value, dense, fc1/fc2) only: the official convs never see the flag.
    assert recu and all(any(k in n for k in ("query", "key", "value", "dense", "fc1", "fc2")) for n in recu)
    assert all("cov" in n or "down" in n for n in binary - recu)
    gsb = create_model("bhvit_tiny_32_gsb", **REDUCED)
    cores = [l for l in gsb.submodules if isinstance(l, L.QDAttention)]
    assert cores and all(isinstance(c.quantizer, L.GSBQuantizer) for c in cores)
    assert get_model_info("bhvit_tiny_32_gsb").config.qd_form == "gsb"


@pytest.mark.slow
def test_gsb_recu_model_trains_and_exports_to_binary_with_parity():
    from edgebvit.converters.export import ExportOptions, convert
    from edgebvit.converters.inspect import inspect_flatbuffer
    from edgebvit.converters.parity import make_interpreter

    tf.keras.utils.set_random_seed(0)
    model = create_model("bhvit_tiny_32", qd_form="gsb", recu=True, **REDUCED)
    x = tf.random.normal((8, 32, 32, 3))
    y = tf.one_hot(tf.range(8) % 6, 6)
    kernels = [l.kernel for l in model.submodules if isinstance(l, lq.layers.QuantConv2D)]
    before = [k.numpy().copy() for k in kernels]
    opt = tf.keras.optimizers.legacy.Adam(1e-3)
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.keras.losses.categorical_crossentropy(y, model(x, training=True), from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        assert all(g is not None for g in grads)
        opt.apply_gradients(zip(grads, model.trainable_variables))
    assert np.isfinite(float(loss))
    assert all(not np.array_equal(b, k.numpy()) for b, k in zip(before, kernels))
    fb = convert(model, ExportOptions())
    report = inspect_flatbuffer(fb)
    assert report.op_counts().get("LceBconv2d") == len(kernels)
    interp, _ = make_interpreter(fb)
    xs = np.random.default_rng(3).normal(size=(2, 32, 32, 3)).astype(np.float32)
    got = np.asarray(interp.predict(xs))
    want = model.predict(xs, verbose=0)
    assert (got.argmax(-1) == want.argmax(-1)).all()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * max(1.0, np.abs(want).max()))
