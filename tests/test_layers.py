"""models/layers/: each building block's forward behaviour and the custom gradients, checked
against the formulas of docs/papers.md (section 0, 1.2-1.4, 3)."""
import math

import numpy as np
import pytest

import edgebvit  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import larq as lq
import tensorflow as tf

from edgebvit.models import layers as L


def _grid(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


# ---- quantizers and their gradients ---------------------------------------------------------

@pytest.mark.parametrize("centre", [False, True])
def test_scaled_sign_forward_is_plus_minus_alpha_per_output_channel(centre):
    w = _grid((1, 1, 16, 4)) * 0.5 + 0.2
    q = L.ScaledSign(centre=centre)(w).numpy()
    wn = w.numpy()
    alpha = np.abs(wn).mean(axis=(0, 1, 2))  # of the uncentred weights
    ref = wn - wn.mean(axis=(0, 1, 2), keepdims=True) if centre else wn
    np.testing.assert_allclose(q, alpha * np.where(ref >= 0, 1.0, -1.0), rtol=1e-6)
    assert L.ScaledSign.precision == 1


@pytest.mark.parametrize("centre", [False, True])
def test_scaled_sign_gradient_is_ste_masked_by_abs_wc_le_1(centre):
    w = tf.Variable(_grid((1, 1, 8, 3), seed=1) * 1.5)
    g = _grid((1, 1, 8, 3), seed=2)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(L.ScaledSign(centre=centre)(w) * g)
    grad = tape.gradient(loss, w).numpy()
    wn, gn = w.numpy(), g.numpy()
    alpha = np.abs(wn).mean(axis=(0, 1, 2), keepdims=True)  # detached: no gradient through it
    wc = wn - wn.mean(axis=(0, 1, 2), keepdims=True) if centre else wn
    inner = alpha * gn * (np.abs(wc) <= 1.0)
    want = inner - inner.mean(axis=(0, 1, 2), keepdims=True) if centre else inner
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)
    assert (np.abs(wc) > 1).any() and (np.abs(wc) <= 1).any()  # both sides of the mask exercised


def test_scaled_sign_without_mask_reaches_minority_signs_of_bop_latents():
    """Bop keeps latents at exactly +-1. In a channel of mostly +1 the centred -1 weights sit near
    -2: the official mask starves them, ste_mask="none" passes their gradient through."""
    wn = np.ones((1, 1, 32, 2), np.float32)
    wn[0, 0, :3, :] = -1.0  # minority signs; centred value -1 - 26/32 = -1.8125
    w = tf.Variable(wn)
    g = tf.constant(_grid((1, 1, 32, 2), seed=3))

    def grad(mask):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(L.ScaledSign(centre=True, ste_mask=mask)(w) * g)
        return tape.gradient(loss, w).numpy()

    masked, unmasked = grad("centred"), grad("none")
    alpha = np.abs(wn).mean(axis=(0, 1, 2), keepdims=True)
    gn = g.numpy()
    want = alpha * gn - (alpha * gn).mean(axis=(0, 1, 2), keepdims=True)  # centring's own gradient
    np.testing.assert_allclose(unmasked, want, rtol=1e-5, atol=1e-7)
    inner = alpha * gn * np.concatenate([np.zeros((1, 1, 3, 2)), np.ones((1, 1, 29, 2))], axis=2)
    np.testing.assert_allclose(masked, inner - inner.mean(axis=(0, 1, 2), keepdims=True), rtol=1e-5, atol=1e-7)
    # Same forward either way, so the exported model does not depend on the optimizer.
    np.testing.assert_array_equal(L.ScaledSign(ste_mask="none")(w).numpy(), L.ScaledSign()(w).numpy())
    with pytest.raises(ValueError, match="ste_mask"):
        L.ScaledSign(ste_mask="abs")


def test_binary_sign_forward_and_approx_sign_gradient():
    x = tf.Variable(np.linspace(-1.5, 1.5, 13, dtype=np.float32).reshape(1, 1, 13, 1) + 0.01)
    layer = L.BinarySign()
    layer.build(x.shape)
    layer.bias.assign([0.25])
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(y)
    dx, db = tape.gradient(loss, [x, layer.bias])
    t = x.numpy() + 0.25
    np.testing.assert_array_equal(y.numpy(), np.where(t >= 0, 1.0, -1.0))  # larq sign(0) = +1
    want = np.where(np.abs(t) <= 1, 2 - 2 * np.abs(t), 0.0)  # Bi-Real ApproxSign
    np.testing.assert_allclose(dx.numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db.numpy(), [want.sum()], rtol=1e-5)


def test_attention_prob_binarizer_forward_and_bit_gradients():
    p = tf.Variable(np.array([[0.0, 0.001, 0.0024, 0.0026, 0.004, 0.005, 0.02, 0.5]], np.float32))
    binarizer = L.AttentionProbBinarizer()
    binarizer.build(p.shape)
    alpha = float(binarizer.alpha.numpy())
    assert alpha == pytest.approx(0.005)
    g = tf.constant(np.linspace(-1, 1, 8, dtype=np.float32)[None])
    with tf.GradientTape() as tape:
        out = binarizer(p)
        loss = tf.reduce_sum(out * g)
    d_p, d_alpha = tape.gradient(loss, [p, binarizer.alpha])
    q = p.numpy() / alpha
    np.testing.assert_allclose(out.numpy(), alpha * np.clip(np.round(q), 0, 1), rtol=1e-6)
    assert np.isin(out.numpy(), [0.0, np.float32(alpha)]).all()
    in_range = (q >= 0) & (q <= 1)
    np.testing.assert_allclose(d_p.numpy(), g.numpy() * in_range)
    want_alpha = np.sum(g.numpy() * ((np.round(q) - q) * in_range + (q > 1)))
    assert float(d_alpha) == pytest.approx(want_alpha, rel=1e-5)


# ---- element-wise layers ---------------------------------------------------------------------

def test_rprelu_formula_and_init():
    x = _grid((2, 3, 3, 4))
    layer = L.RPReLU()
    layer.build(x.shape)
    np.testing.assert_allclose(layer.slope.numpy(), 0.25)
    layer.shift_in.assign([0.1, -0.2, 0.0, 0.3])
    layer.shift_out.assign([1.0, 2.0, 3.0, 4.0])
    layer.slope.assign([0.25, 0.5, -1.0, 0.0])
    h = x.numpy() - layer.shift_in.numpy()
    want = np.where(h > 0, h, layer.slope.numpy() * h) + layer.shift_out.numpy()
    np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-6)


def test_layerscale_affine_and_inits():
    x = _grid((1, 2, 2, 3))
    ls = L.LayerScale()
    np.testing.assert_allclose(ls(x).numpy(), 0.1 * x.numpy(), rtol=1e-6)  # official init_ones: a = 0.1
    off = L.LayerScale(init_scale=0.0)
    np.testing.assert_array_equal(off(x).numpy(), 0.0)  # branches start switched off
    ls.shift.assign([1.0, 2.0, 3.0])
    np.testing.assert_allclose(ls(x).numpy(), 0.1 * x.numpy() + [1.0, 2.0, 3.0], rtol=1e-6)


def test_channel_shortcuts_tile_and_average():
    x = tf.reshape(tf.range(12, dtype=tf.float32), (1, 1, 2, 6))
    wide = L.channel_shortcut(x, 18, name="w").numpy()
    np.testing.assert_array_equal(wide[..., 7], x.numpy()[..., 1])  # channel k <- k mod C
    narrow = L.channel_shortcut(x, 2, name="n").numpy()
    np.testing.assert_allclose(narrow[0, 0, 0], [1.0, 4.0])  # means of channels 0-2, 3-5
    assert L.channel_shortcut(x, 6, name="i") is x
    with pytest.raises(ValueError, match="no shortcut"):
        L.channel_shortcut(x, 4, name="bad")


def test_zero_padded_avg_pool_counts_the_padding_like_pytorch():
    x = np.random.default_rng(3).normal(size=(1, 4, 5, 2)).astype(np.float32)
    got = L.zero_padded_avg_pool(tf.constant(x), (1, 3), name="p").numpy()
    pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    want = (pad[:, :, :-2] + pad[:, :, 1:-1] + pad[:, :, 2:]) / 3.0  # divisor always 3
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[:, :, 0], (x[:, :, 0] + x[:, :, 1]) / 2)  # Keras 'same' would do this


def test_multi_pool_branches_start_off_and_cover_both_orientations():
    x = _grid((1, 5, 5, 4))
    out = L.multi_pool_branches(x, (3, 5), name="pool")
    assert len(out) == 4
    for o in out:
        assert o.shape == x.shape
        np.testing.assert_array_equal(o.numpy(), 0.0)


# ---- binary linear on the token grid -------------------------------------------------------

@pytest.mark.parametrize("out_channels", [32, 128, 8])
def test_binary_linear_shapes_and_extra_residual(out_channels):
    inp = tf.keras.Input((4, 4, 32))
    model = tf.keras.Model(inp, L.binary_linear(inp, out_channels, name="fc"))
    conv = model.get_layer("fc")
    assert isinstance(conv, lq.layers.QuantConv2D) and conv.kernel_size == (1, 1) and not conv.use_bias
    assert isinstance(conv.input_quantizer, lq.quantizers.ApproxSign)
    assert isinstance(conv.kernel_quantizer, L.ScaledSign) and conv.kernel_quantizer.centre
    x = _grid((2, 4, 4, 32))
    assert model(x).shape == (2, 4, 4, out_channels)
    # With the binary branch's BN scaled to 0 the block is RPReLU(shortcut(x)).
    bn = model.get_layer("fc_bn")
    bn.gamma.assign(tf.zeros_like(bn.gamma))
    short = L.channel_shortcut(x, out_channels, name="s").numpy()
    np.testing.assert_allclose(model(x).numpy(), np.where(short > 0, short, 0.25 * short), rtol=1e-5, atol=1e-6)


def test_float_linear_is_the_same_graph_without_quantizers():
    inp = tf.keras.Input((4, 4, 32))
    model = tf.keras.Model(inp, L.token_linear(inp, 64, binary=False, name="fc"))
    assert type(model.get_layer("fc")) is tf.keras.layers.Conv2D
    assert {"fc_bn", "fc_res", "fc_rprelu", "fc_tile"} <= {l.name for l in model.layers}


# ---- attention -------------------------------------------------------------------------------

def _np_attention(q, k, v, heads, scale=None):
    b, h, w, c = q.shape
    d = c // heads
    qh = q.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)
    kh = k.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)
    vh = v.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)
    s = qh @ kh.transpose(0, 1, 3, 2) * (scale if scale is not None else 1 / math.sqrt(d))
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ vh).transpose(0, 2, 1, 3).reshape(b, h, w, c), p


def test_attention_core_float_matches_reference_with_reduced_kv():
    q, k, v = _grid((2, 4, 4, 8), 1), _grid((2, 2, 2, 8), 2), _grid((2, 2, 2, 8), 3)
    core = L.MultiHeadAttentionCore(num_heads=2, prob_quant="none")
    want, _ = _np_attention(q.numpy(), k.numpy(), v.numpy(), 2)
    np.testing.assert_allclose(core([q, k, v]).numpy(), want, rtol=1e-4, atol=1e-5)


def test_attention_core_binary_probabilities_are_zero_or_alpha():
    q = tf.sign(_grid((1, 1, 6, 4), 4))
    core = L.MultiHeadAttentionCore(num_heads=1, prob_quant="binary")
    core([q, q, q])
    core.prob_binarizer.alpha.assign(0.3)  # makes both outcomes likely with 6 tokens
    _, p = _np_attention(q.numpy(), q.numpy(), q.numpy(), 1)
    pb = 0.3 * np.clip(np.round(p / 0.3), 0, 1)
    want = (pb @ q.numpy().reshape(1, 1, 6, 4)).reshape(1, 1, 6, 4)
    np.testing.assert_allclose(core([q, q, q]).numpy(), want, rtol=1e-5, atol=1e-6)


def test_lsa_masks_self_similarity_and_learns_the_temperature():
    x = _grid((1, 1, 5, 4), 5)
    core = L.MultiHeadAttentionCore(num_heads=2, prob_quant="none", lsa=True)
    out = core([x, x, x])
    np.testing.assert_allclose(core.temperature.numpy(), 1 / math.sqrt(2))
    assert core.temperature.trainable
    xn = x.numpy()
    d = 2
    qh = xn.reshape(1, 5, 2, d).transpose(0, 2, 1, 3)
    s = qh @ qh.transpose(0, 1, 3, 2) / math.sqrt(d) - np.eye(5) * 1e9
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert np.allclose(np.diagonal(p, axis1=-2, axis2=-1), 0.0)
    want = (p @ qh).transpose(0, 2, 1, 3).reshape(1, 1, 5, 4)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-5)


def test_spatial_reduction_and_nearest_upsample():
    x = _grid((1, 8, 8, 32))
    src = L.spatial_reduction(x, 4, name="sr")
    assert src.shape == (1, 2, 2, 32)
    assert L.spatial_reduction(x, 1, name="none") is x
    up = L.upsample_nearest(src, 4, name="up").numpy()
    assert up.shape == (1, 8, 8, 32)
    np.testing.assert_array_equal(up[0, 0:4, 0:4], np.broadcast_to(src.numpy()[0, 0, 0], (4, 4, 32)))
    with pytest.raises(ValueError, match="does not reduce"):
        L.spatial_reduction(_grid((1, 6, 6, 32)), 4, name="bad")


# ---- token layout, patch merging, SPT --------------------------------------------------------

def test_class_token_row_and_take_token():
    x = _grid((2, 3, 3, 8))
    cls = L.ClassToken()
    row = cls(x)
    assert row.shape == (2, 1, 10, 8)
    np.testing.assert_array_equal(row.numpy()[:, 0, 1:], x.numpy().reshape(2, 9, 8))
    np.testing.assert_array_equal(row.numpy()[0, 0, 0], cls.token.numpy().reshape(8))
    np.testing.assert_array_equal(L.TakeToken(index=0)(row).numpy(), row.numpy()[:, 0, 0])


@pytest.mark.parametrize("binary", [True, False])
def test_patch_merging_halves_the_grid_and_doubles_width(binary):
    inp = tf.keras.Input((4, 4, 32))
    model = tf.keras.Model(inp, L.patch_merging(inp, 64, binary=binary, name="m"))
    conv = model.get_layer("m_conv")
    assert isinstance(conv, lq.layers.QuantConv2D) == binary
    if binary:
        assert conv.kernel_size == (2, 2) and conv.strides == (2, 2) and not conv.kernel_quantizer.centre
    x = _grid((1, 4, 4, 32))
    assert model(x).shape == (1, 2, 2, 64)
    # Residual path: tile2(AvgPool2x2(BN0(x))); BN0 at init is x / sqrt(1 + eps).
    model.get_layer("m_bn").gamma.assign(tf.zeros(64))
    pooled = x.numpy().reshape(1, 2, 2, 2, 2, 32).mean(axis=(2, 4)) / math.sqrt(1 + 1e-5)
    res = np.concatenate([pooled, pooled], -1)
    np.testing.assert_allclose(model(x).numpy(), np.where(res > 0, res, 0.25 * res), rtol=1e-4, atol=1e-5)


def test_full_precision_patch_merging_has_no_residual():
    inp = tf.keras.Input((4, 4, 16))
    model = tf.keras.Model(inp, L.patch_merging(inp, 32, residual=False, binary=False, name="m"))
    assert model.output_shape == (None, 2, 2, 32)
    assert {type(l).__name__ for l in model.layers} == {"InputLayer", "BatchNormalization", "Conv2D"}


def test_diagonal_shifts_match_the_spt_reference():
    x = np.random.default_rng(6).normal(size=(1, 4, 4, 2)).astype(np.float32)
    out = L.DiagonalShifts(shift=1)(tf.constant(x)).numpy()
    assert out.shape == (1, 4, 4, 10)
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    lu, ru, lb, rb = pad[:, :-2, :-2], pad[:, :-2, 2:], pad[:, 2:, :-2], pad[:, 2:, 2:]
    np.testing.assert_array_equal(out, np.concatenate([x, lu, ru, lb, rb], -1))


def test_space_to_depth_uses_p1_p2_c_order_and_spt_shapes():
    x = np.arange(2 * 2 * 3, dtype=np.float32).reshape(1, 2, 2, 3)
    out = L.SpaceToDepth(block_size=2)(tf.constant(x)).numpy()
    np.testing.assert_array_equal(out.reshape(-1), x.reshape(-1))  # (p1, p2, c) == row-major
    tokens = L.shifted_patch_tokenization(tf.constant(np.zeros((2, 8, 8, 3), np.float32)), 4, 16, name="spt")
    assert tokens.shape == (2, 2, 2, 16)
    with pytest.raises(ValueError, match="even patch"):
        L.shifted_patch_tokenization(tf.zeros((1, 9, 9, 3)), 3, 16, name="odd")


def test_custom_layers_round_trip_through_get_config(tmp_path):
    inp = tf.keras.Input((8, 8, 2))
    h = L.shifted_patch_tokenization(inp, 2, 32, name="spt")
    h = L.PositionEmbedding(name="pos")(h)
    h = L.patch_merging(h, 2 * h.shape[-1], name="merge")
    h = L.binary_linear(h, 128, name="fc1")
    h = L.binary_linear(h, 64, name="fc2")
    s = L.BinarySign(name="sign")(h)
    h = L.MultiHeadAttentionCore(num_heads=2, lsa=True, name="core")([s, s, s])
    h = L.LayerScale(name="ls")(h)
    row = L.ClassToken(name="cls")(h)
    out = tf.keras.layers.Dense(3, name="head")(L.TakeToken(name="take")(row))
    model = tf.keras.Model(inp, out)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    x = _grid((2, 8, 8, 2))
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
