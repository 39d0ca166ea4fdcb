"""models/bhvit.py: BHViT's blocks against hand/numpy references, parameter counts against
docs/papers.md 2.1, one training step, and LCE export (all binary layers -> LceBconv2d, parity).

Model builds and the LCE conversion are the slow parts (tens of seconds each here), so every
model is built once per module and the three reduced export models go through the converter
together as one multi-input, multi-output model (each output has its own class count).
"""
import importlib
import math

import numpy as np
import pytest
from conftest import heavy

import edgebvit  # noqa: F401  (selects tf_keras before TensorFlow loads)
import larq as lq
import tensorflow as tf

import edgebvit.models.bhvit as B
from edgebvit.errors import ModelError
from edgebvit.models import layers as L
from edgebvit.models.registry import create_model, get_model_info, list_models, resolve_config

VARIANTS = ["bhvit_tiny", "bhvit_small", "bhvit_tiny_fpds", "bhvit_small_fpds", "bhvit_tiny_32", "bhvit_small_32",
            "bhvit_tiny_32_gsb", "bhvit_tiny_32_recu"]
IMAGENET = VARIANTS[:4]
SMALL_IMAGE = VARIANTS[4:6]


# ---- registry -------------------------------------------------------------------------------

def test_variants_registered_with_paper_metadata():
    assert list_models("bhvit*") == VARIANTS
    top1 = {n: get_model_info(n).paper_top1 for n in VARIANTS}
    assert top1 == {"bhvit_tiny": 64.0, "bhvit_small": 68.4, "bhvit_tiny_fpds": 66.0, "bhvit_small_fpds": 70.1,
                    "bhvit_tiny_32": None, "bhvit_small_32": None, "bhvit_tiny_32_gsb": None,
                    "bhvit_tiny_32_recu": None}
    assert {get_model_info(n).family for n in VARIANTS} == {"bhvit"}
    assert get_model_info("bhvit_small").config.depths == (3, 4, 8, 4)
    assert get_model_info("bhvit_tiny_32").input_shape == (32, 32, 3)


def test_reimport_is_idempotent():
    importlib.reload(B)  # must neither raise "registered twice" nor duplicate names
    assert list_models("bhvit*") == VARIANTS


@pytest.mark.parametrize("overrides, fragment", [
    (dict(window_size=5), "not a multiple of window_size"),
    (dict(qd_form="ternary"), "qd_form"),
    (dict(grouped_conv_form="depthwise"), "grouped_conv_form"),
    (dict(input_shape=(100, 100, 3)), "must be a multiple of"),
    (dict(depths=(2, 2, 6)), "depths has 3 entries"),
    (dict(mixers=("msgdc", "msgdc", "msmha", "conv")), "mixers"),
])
def test_bad_config_is_a_one_line_model_error(overrides, fragment):
    with pytest.raises(ModelError, match=fragment) as err:
        create_model("bhvit_tiny", **overrides)
    assert "\n" not in str(err.value)


def test_conv_form_auto_splits_only_where_lce_needs_it():
    cfg = get_model_info("bhvit_tiny").config
    assert B.conv_form(cfg, 64) == "split"  # 16 channels per group: LCE rejects grouped
    assert B.conv_form(cfg, 128) == "grouped"  # 32 per group: LceBconv2d (indirect BGEMM)
    forced = resolve_config("bhvit_tiny", grouped_conv_form="grouped")
    assert B.conv_form(forced, 64) == "grouped"


def test_registered_variants_avoid_lce_zero_padding_bug():
    for name in VARIANTS:
        assert B.lce_zero_padding_hazards(get_model_info(name).config) == [], name
    zero_padded_32 = resolve_config("bhvit_tiny_32", msgdc_pad_values=0.0)
    hazards = B.lce_zero_padding_hazards(zero_padded_32)
    assert hazards and all("stage 2" in h for h in hazards)  # 8x8 grid < 11 (d=5), 7 (d=3)


# ---- shifts ---------------------------------------------------------------------------------

def test_circular_roll_matches_numpy():
    x = np.arange(2 * 5 * 4 * 3, dtype=np.float32).reshape(2, 5, 4, 3)
    for axis in (1, 2):
        for shift in (-7, -2, -1, 0, 1, 2, 4, 5, 9):
            np.testing.assert_array_equal(L.circular_roll(tf.constant(x), shift, axis).numpy(),
                                          np.roll(x, shift, axis=axis))


def test_shift_branches_match_numpy():
    x = np.random.default_rng(0).normal(size=(2, 6, 5, 8)).astype(np.float32)
    for taps in (3, 5):
        for axis in (1, 2):
            want = sum(np.roll(x, s, axis=axis) for s in range(-(taps // 2), taps // 2 + 1)) / taps
            got = L.ShiftMean(taps=taps, axis=axis)(tf.constant(x)).numpy()
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    for s in (1, 2):
        c = np.split(x, 4, axis=-1)
        want = np.concatenate([np.roll(c[0], s, 1), np.roll(c[1], -s, 1), np.roll(c[2], s, 2), np.roll(c[3], -s, 2)], -1)
        np.testing.assert_array_equal(L.ChannelShiftMix(shift=s)(tf.constant(x)).numpy(), want)


# ---- MSMHA pieces ---------------------------------------------------------------------------

def _np_windows(x, ws):
    """The official windows_split, on NHWC."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // ws) * (w // ws), ws * ws, c)


def test_window_partition_and_merge_round_trip_exactly():
    x = np.random.default_rng(1).normal(size=(3, 14, 21, 5)).astype(np.float32)
    win = L.WindowPartition(window=7)(tf.constant(x)).numpy()
    np.testing.assert_array_equal(win, _np_windows(x, 7))
    back = L.WindowMerge(window=7, height=14, width=21)(tf.constant(win)).numpy()
    np.testing.assert_array_equal(back, x)


def test_merged_tokens_follow_the_official_padding_quirk():
    x = np.random.default_rng(2).normal(size=(2, 7, 7, 4)).astype(np.float32)
    layer = L.MergedTokens(window=7, padding=3)
    got = layer(tf.constant(x)).numpy()
    # One token on a 7x7 grid: padding 3 means it pools rows/cols 0..3 only; the average divides
    # by 49 (zeros of the padding count), the max ignores the padding; a starts at 0.5.
    corner = x[:, :4, :4, :]
    want = 0.5 * corner.max(axis=(1, 2)) + 0.5 * corner.sum(axis=(1, 2)) / 49.0
    np.testing.assert_allclose(got[:, 0, 0, :], want, rtol=1e-5, atol=1e-6)
    aligned = L.MergedTokens(window=7, padding=0)(tf.constant(x)).numpy()
    np.testing.assert_allclose(aligned[:, 0, 0], 0.5 * x.max(axis=(1, 2)) + 0.5 * x.mean(axis=(1, 2)), rtol=1e-5)


def test_token_split_puts_windows_back_and_spreads_merged_tokens():
    rng = np.random.default_rng(3)
    ws, h, w, c = 2, 4, 4, 3
    windows = rng.normal(size=(2, 4, ws * ws, c)).astype(np.float32)
    merged = rng.normal(size=(2, 4, 4, c)).astype(np.float32)  # 4 windows x 4 merged tokens
    got = L.TokenSplit(window=ws, height=h, width=w)(tf.constant(np.concatenate([windows, merged], 2))).numpy()
    x1 = L.WindowMerge(window=ws, height=h, width=w)(tf.constant(windows)).numpy()
    x2 = merged.mean(axis=1).reshape(2, 2, 2, c).repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_allclose(got, 0.5 * x1 + 0.5 * x2, rtol=1e-6, atol=1e-6)


# ---- QD attention ---------------------------------------------------------------------------

def test_qd_fixed_is_the_thermometer_of_round_3a():
    p = np.array([0.0, 0.1, 0.17, 0.16, 0.5, 0.84, 0.83, 1.0], np.float32)
    # 3p = 0, .3, .51, .48, 1.5, 2.52, 2.49, 3 -> sum over sigma=1..3 of [3p >= sigma - 0.5]
    want = np.array([0, 0, 1, 0, 2, 3, 2, 3], np.float32)
    thermometer = sum((3 * p >= s - 0.5).astype(np.float32) for s in (1, 2, 3))
    np.testing.assert_array_equal(thermometer, want)
    pt = tf.constant(p)
    with tf.GradientTape() as tape:
        tape.watch(pt)
        out = L.QDThermometer(levels=3)(pt)
    np.testing.assert_array_equal(out.numpy(), want)
    np.testing.assert_allclose(tape.gradient(out, pt).numpy(), 3.0)  # straight-through on 3P


def test_qd_lsq_first_batch_init_forward_and_scaled_gradient():
    rng = np.random.default_rng(4)
    heads = 2
    p1 = tf.nn.softmax(tf.constant(rng.normal(size=(3, heads, 5, 5)).astype(np.float32)), -1)
    q = L.QDLsq(num_heads=heads, levels=3)
    eval_out = q(p1, training=False).numpy()  # not initialised yet: alpha 1, z 0
    np.testing.assert_allclose(eval_out, np.clip(np.round(3 * p1.numpy()), 0, 3), atol=1e-6)

    x1 = 3 * p1.numpy()
    q(p1, training=True)  # the first training call initialises alpha and z from this batch
    alpha0 = 2 * np.abs(x1).mean(axis=(0, 2, 3)) / math.sqrt(3)
    zp0 = 0.1 * x1.min(axis=(0, 2, 3))
    np.testing.assert_allclose(q.alpha.numpy(), alpha0, rtol=1e-5)
    np.testing.assert_allclose(q.zero_point.numpy(), zp0, rtol=1e-5)
    assert q.initialized.numpy() == 1.0

    p2 = tf.nn.softmax(tf.constant(rng.normal(size=(4, heads, 5, 5)).astype(np.float32)), -1)
    x2 = 3 * p2.numpy()
    with tf.GradientTape() as tape:
        out = q(p2, training=True)  # initialised: no re-init from this batch
        loss = tf.reduce_sum(out)
    np.testing.assert_allclose(q.alpha.numpy(), alpha0, rtol=1e-6)
    a, z = alpha0[None, :, None, None], zp0[None, :, None, None]
    v = x2 / a + z
    r = np.round(v)
    np.testing.assert_allclose(out.numpy(), a * np.clip(r, 0, 3), rtol=1e-5, atol=1e-6)
    # LSQ gradient of alpha: (round(v) - x/alpha) inside the range, the clip level outside, times
    # the gradient scale heads / sqrt(numel * 3).
    inside = (r >= 0) & (r <= 3)
    d_alpha = np.where(inside, r - x2 / a, np.clip(r, 0, 3)).sum(axis=(0, 2, 3))
    g = heads / math.sqrt(x2.size * 3)
    grad = tape.gradient(loss, q.alpha).numpy()
    np.testing.assert_allclose(grad, g * d_alpha, rtol=1e-4, atol=1e-6)


def test_qd_attention_is_per_window_softmax_attention():
    rng = np.random.default_rng(5)
    q, k, v = (np.sign(rng.normal(size=(2, 3, 6, 8))).astype(np.float32) for _ in range(3))
    layer = L.QDAttention(num_heads=2, qd_form="fixed")
    got = layer([tf.constant(q), tf.constant(k), tf.constant(v)]).numpy()
    want = np.zeros_like(q)
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        s = np.einsum("brtd,brsd->brts", q[..., sl], k[..., sl]) / 2.0
        pr = np.exp(s - s.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        want[..., sl] = np.einsum("brts,brsd->brtd", np.floor(3 * pr + 0.5), v[..., sl])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ---- MSGDC ----------------------------------------------------------------------------------

def _msgdc_model(form, residual=False, channels=64, grid=12):
    cfg = B.BHViTConfig(grouped_conv_form=form, msgdc_branch_residual=residual)
    x = tf.keras.Input((grid, grid, channels))
    return tf.keras.Model(x, B.msgdc(x, cfg, name="m"))


def _randomise(model, seed):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "moving_variance" in w.name or "gamma" in w.name:
            w.assign(rng.uniform(0.5, 1.5, w.shape))
        else:
            w.assign(rng.normal(0, 0.3, w.shape))


def _copy_grouped_to_split(grouped, split, groups=4):
    by_name = {w.name.split("/")[0] + "/" + w.name.split("/")[-1]: w for w in grouped.weights}
    for w in split.weights:
        layer, var = w.name.split("/")[0], w.name.split("/")[-1]
        if "_g" in layer and layer.rsplit("_g", 1)[1].isdigit() and "kernel" in var:
            base, i = layer.rsplit("_g", 1)
            kernel = by_name[f"{base}/{var}"].numpy()
            cg = kernel.shape[-1] // groups
            w.assign(kernel[..., int(i) * cg:(int(i) + 1) * cg])
        else:
            w.assign(by_name[f"{layer}/{var}"])


@pytest.mark.parametrize("residual", [False, True])
def test_msgdc_split_form_equals_grouped_form(residual):
    grouped, split = _msgdc_model("grouped", residual), _msgdc_model("split", residual)
    assert sum(isinstance(l, lq.layers.QuantConv2D) for l in grouped.layers) == 3
    assert sum(isinstance(l, lq.layers.QuantConv2D) for l in split.layers) == 12
    _randomise(grouped, seed=6)
    _copy_grouped_to_split(grouped, split)
    # Per-channel alpha and centring: ScaledSign of a group's kernel slice == slice of ScaledSign.
    for d in (1, 2, 3):
        g = grouped.get_layer(f"m_cov{d}")
        qg = g.kernel_quantizer(g.kernel).numpy()
        for i in range(4):
            s = split.get_layer(f"m_cov{d}_g{i}")
            np.testing.assert_allclose(s.kernel_quantizer(s.kernel).numpy(), qg[..., 16 * i:16 * (i + 1)], rtol=1e-6)
    x = np.random.default_rng(7).normal(size=(2, 12, 12, 64)).astype(np.float32)
    np.testing.assert_allclose(split(x, training=False).numpy(), grouped(x, training=False).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(split(x, training=True).numpy(), grouped(x, training=True).numpy(), rtol=1e-4, atol=1e-4)


def test_msgdc_matches_a_hand_written_reference():
    model = _msgdc_model("grouped", residual=True, channels=64, grid=11)
    _randomise(model, seed=8)
    x = np.random.default_rng(9).normal(size=(2, 11, 11, 64)).astype(np.float32)
    w = {v.name: v.numpy() for v in model.weights}
    get = lambda key: next(val for name, val in w.items() if name.startswith(key))  # noqa: E731
    u = x + get("m_move/bias")
    s = np.where(u >= 0, 1.0, -1.0).astype(np.float32)  # larq sign: sign(0) = +1
    total = 0
    for i, d in enumerate((1, 3, 5), start=1):
        k = get(f"m_cov{i}/kernel")
        kc = k - k.mean(axis=(0, 1, 2), keepdims=True)
        kq = np.abs(k).mean(axis=(0, 1, 2), keepdims=True) * np.where(kc >= 0, 1.0, -1.0)
        # grouped conv, one group at a time, zero padding of the +-1 input
        parts = [tf.nn.conv2d(s[..., 16 * j:16 * (j + 1)], kq[..., 16 * j:16 * (j + 1)].astype(np.float32), 1, "SAME",
                              dilations=d).numpy() for j in range(4)]
        h = np.concatenate(parts, -1) + get(f"m_cov{i}_bias/bias") + x  # per-branch residual on
        h = h - get(f"m_act{i}/shift_in")
        h = np.where(h >= 0, h, h * get(f"m_act{i}/slope")) + get(f"m_act{i}/shift_out")
        total = total + h
    gamma, beta, mean, var = (get(f"m_norm/{n}") for n in ("gamma", "beta", "moving_mean", "moving_variance"))
    want = (total - mean) / np.sqrt(var + 1e-5) * gamma + beta
    np.testing.assert_allclose(model(x, training=False).numpy(), want, rtol=1e-4, atol=1e-4)


# ---- parameter counts (docs/papers.md 2.1) -------------------------------------------------------

PAPER_PARAMS = {"bhvit_tiny": (13.8e6, 13.2e6), "bhvit_small": (22.7e6, 22.1e6),
                "bhvit_tiny_fpds": (13.8e6, 13.2e6), "bhvit_small_fpds": (22.7e6, 22.1e6)}


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_variants_build_and_match_paper_parameter_counts(name):
    model = create_model(name)
    assert model.output_shape == (None, 1000)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    head = model.get_layer("head")
    head_params = sum(int(np.prod(w.shape)) for w in head.trainable_weights)
    ten_class = trainable - head_params + (head.kernel.shape[0] + 1) * 10  # same model, 10-class head
    want_1000, want_10 = PAPER_PARAMS[name]
    assert abs(trainable / want_1000 - 1) < 0.03, trainable
    assert abs(ten_class / want_10 - 1) < 0.03, ten_class
    # Stage 1 MSGDC is split per group (16 ch/group), stage 2 grouped (32 ch/group).
    assert isinstance(model.get_layer("s1b1_msgdc_cov3_g3"), lq.layers.QuantConv2D)
    assert model.get_layer("s2b1_msgdc_cov3").groups == 4
    assert model.get_layer("s2b1_msgdc_cov3").dilation_rate == (5, 5)
    assert model.get_layer("s3b1_msmha_tfa_tokens").output_shape == (None, 4, 49 + 4, 256)
    assert model.get_layer("s4b1_msmha_tfa_tokens").output_shape == (None, 1, 49 + 1, 512)


# ---- reduced models: one training step, one export ------------------------------------------

def reduced_overrides(name, num_classes=10):
    """Depth 1 per stage and MLP ratio 2, widths 64/128 kept (they decide split vs grouped)."""
    return dict(depths=(1, 1, 1, 1), embed_dims=(64, 128, 128, 128), mlp_ratios=(2, 2, 2, 2),
                num_heads=(1, 2, 2, 2), num_classes=num_classes)


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_one_training_step(name, trained_reduced):
    loss0, loss1, model = trained_reduced[repr(resolve_config(name, **reduced_overrides(name)))]
    assert np.isfinite(loss0) and np.isfinite(loss1)
    quantizers = [l.quantizer for l in model.submodules if isinstance(l, L.QDAttention)]
    assert quantizers
    if get_model_info(name).config.qd_form == "gsb":  # its three scales train from 0.005, 1, 1
        assert all(not np.isclose(q.alpha.numpy(), 0.005) for q in quantizers)
        return
    assert all(q.initialized.numpy() == 1.0 for q in quantizers)  # first batch initialised QD
    assert all(not np.allclose(q.alpha.numpy(), 1.0) for q in quantizers)


@pytest.fixture(scope="module")
def trained_reduced():
    """Every variant at reduced size (tiny/small coincide there): two Adam steps each."""
    out = {}
    for name in VARIANTS:
        key = repr(resolve_config(name, **reduced_overrides(name)))
        if key in out:
            continue
        tf.keras.utils.set_random_seed(0)
        model = create_model(name, **reduced_overrides(name))
        n = 8 if model.input_shape[1] <= 32 else 2  # 224x224 inputs: a small batch keeps it quick
        x = tf.random.normal((n, *model.input_shape[1:]))
        y = tf.one_hot(tf.range(n) % 10, 10)
        opt = tf.keras.optimizers.legacy.Adam(1e-3)
        kernels = [l.kernel for l in model.submodules if isinstance(l, lq.layers.QuantConv2D)]
        before = [k.numpy().copy() for k in kernels]

        @tf.function(autograph=False)
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.keras.losses.categorical_crossentropy(y, model(x, training=True), from_logits=True))
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        losses = [float(step()), float(step())]
        moved = sum(not np.array_equal(b, k.numpy()) for b, k in zip(before, kernels))
        assert moved == len(kernels), f"{len(kernels) - moved} binary kernels got no gradient"
        out[key] = (losses[0], losses[1], model)
    return out


EXPORTS = {
    # name -> (overrides on top of reduced_overrides, class count identifying the output)
    "imagenet": ("bhvit_tiny", dict(), 10),
    # Float downsampling, plus the non-default switches: paper QD, per-branch residual, split
    # convs everywhere, aligned merged-token pools.
    "fpds_alt": ("bhvit_tiny_fpds", dict(depths=(0, 1, 1, 0), qd_form="fixed", msgdc_branch_residual=True,
                                         grouped_conv_form="split", merge_padding="aligned"), 7),
    "small_image": ("bhvit_tiny_32", dict(), 5),
}


@pytest.fixture(scope="module")
def exported():
    """The reduced export models, converted together once: (models, flatbuffer, inputs)."""
    from edgebvit.converters.export import ExportOptions, convert

    tf.keras.utils.set_random_seed(1)
    models = {}
    for key, (name, extra, classes) in EXPORTS.items():
        m = create_model(name, **{**reduced_overrides(name, classes), **extra})
        _randomise_bn(m, seed=len(models))
        models[key] = m
    i224 = tf.keras.Input((224, 224, 3))
    i32 = tf.keras.Input((32, 32, 3))
    combined = tf.keras.Model([i224, i32], [models["imagenet"](i224), models["fpds_alt"](i224), models["small_image"](i32)])
    fb = convert(combined, ExportOptions())
    rng = np.random.default_rng(2)
    inputs = {224: rng.normal(size=(2, 224, 224, 3)).astype(np.float32), 32: rng.normal(size=(3, 32, 32, 3)).astype(np.float32)}
    return models, fb, inputs


def _randomise_bn(model, seed):
    """Non-trivial BN statistics, so the folded inference BN is exercised."""
    rng = np.random.default_rng(seed)
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            g, b, mu, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.2, b.shape),
                               rng.normal(0, 0.2, mu.shape), rng.uniform(0.5, 2.0, v.shape)])


def _binary_convs(model):
    return [l for l in model.submodules if isinstance(l, lq.layers.QuantConv2D)]


@pytest.mark.slow
@heavy
def test_every_binary_layer_becomes_lce_bconv(exported):
    from edgebvit.converters.inspect import inspect_flatbuffer

    models, fb, _ = exported
    report = inspect_flatbuffer(fb)
    bconvs = [op for op in report.ops if op.op_type == "LceBconv2d"]
    keras_binary = [l for m in models.values() for l in _binary_convs(m)]
    assert len(bconvs) == len(keras_binary)
    assert sum(int(op.groups) > 1 for op in bconvs) == sum(l.groups > 1 for l in keras_binary)
    counts = report.op_counts()
    # Float convs: the stems (3) and fpds_alt's three float patch merges; nothing binary left float.
    assert counts.get("CONV_2D") == 3 + 3
    const_fc = [op for op in report.ops if op.op_type == "FULLY_CONNECTED" and not op.attention]
    assert len(const_fc) == 3  # the three classifier heads


@pytest.mark.slow
@heavy
def test_export_parity_with_keras(exported):
    from edgebvit.converters.parity import make_interpreter

    models, fb, inputs = exported
    interp, indirect = make_interpreter(fb)
    assert indirect  # grouped LceBconv2d in the file: parity picked the indirect BGEMM kernel
    n = 2  # the interpreter feeds samples one by one; pair the first n of each input
    feeds = [inputs[224][:n] if s[1] == 224 else inputs[32][:n] for s in interp.input_shapes]
    outs = interp.predict(feeds)
    by_classes = {np.asarray(o).shape[-1]: np.asarray(o) for o in outs}
    for key, (_, _, classes) in EXPORTS.items():
        x = inputs[224 if key != "small_image" else 32][:n]
        want = models[key].predict(x, verbose=0)
        got = by_classes[classes]
        assert (got.argmax(-1) == want.argmax(-1)).all(), key
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * max(1.0, np.abs(want).max()), err_msg=key)


@pytest.mark.slow
@heavy
def test_bench_and_parity_select_indirect_bgemm_for_grouped_bconv(exported):
    import larq_compute_engine as lce

    from edgebvit.flatbuffer import parse
    from edgebvit.bench.harness import BenchOptions, expand_configs

    models, fb, _ = exported
    summary = parse(fb)
    grouped = sum(l.groups > 1 for m in models.values() for l in _binary_convs(m))
    assert grouped == 6  # stage-2 MSGDC (d = 1, 3, 5) of the imagenet and small_image models
    assert summary.grouped_bconvs == grouped
    assert all(cfg.indirect_bgemm for cfg in expand_configs(BenchOptions(), summary))
    # Why it matters: LCE's default BGEMM kernel refuses the grouped bconv (fails to allocate).
    with pytest.raises(RuntimeError, match="AllocateTensors"):
        lce.testing.Interpreter(fb, num_threads=1, use_indirect_bgemm=False)
