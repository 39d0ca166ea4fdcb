"""The fused training kernels compute the layers' reference functions: values, gradients, training.

Each kernel is compared with the reference graph it replaces on inputs that include the ties
(x == 0 for the sign, |x| == 1 for its gradient window, x == threshold for RPReLU), and a whole
model's first training steps are compared loss by loss with `--kernels reference`.
"""
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from edgebvit.models import create_model
from edgebvit.models import layers as L
from edgebvit.models.layers import fused
from edgebvit.training import Trainer, make_optimizer
from edgebvit.training.config import RunConfig


def _values(shape, rng, ties=()):
    x = rng.normal(0.0, 1.0, shape).astype(np.float32)
    flat = x.reshape(-1)
    for i, t in enumerate(ties):  # exact tie values at known places
        flat[i * 7: i * 7 + 3] = t
    return tf.constant(x)


def _layer_grads(layer, x, training):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        # a non-uniform upstream gradient, so every weighting of dy matters
        loss = tf.reduce_sum(y * tf.reshape(tf.cast(tf.range(tf.size(y)) % 5 - 2, y.dtype), tf.shape(y)))
    return y, tape.gradient(loss, [x, *layer.trainable_variables])


def _assert_same(layer, x, *, atol=1e-5):
    """Fused (training=True) vs the reference graph (training=True under reference_kernels)."""
    y_f, g_f = _layer_grads(layer, x, True)
    with fused.reference_kernels():
        y_r, g_r = _layer_grads(layer, x, True)
    np.testing.assert_allclose(y_f.numpy(), y_r.numpy(), atol=atol, rtol=1e-5)
    assert len(g_f) == len(g_r)
    for a, b in zip(g_f, g_r):
        np.testing.assert_allclose(tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy(),
                                   atol=atol, rtol=1e-5)


def test_approx_sign_kernel_equals_larq():
    import larq as lq

    rng = np.random.default_rng(0)
    x = _values((4, 5, 6, 8), rng, ties=(0.0, 1.0, -1.0))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_f = fused.approx_sign(x)
        y_r = lq.quantizers.approx_sign(x)
    np.testing.assert_array_equal(y_f.numpy(), y_r.numpy())
    assert (y_f.numpy().reshape(-1)[:3] == 1.0).all()  # larq's sign(0) = +1
    np.testing.assert_array_equal(tape.gradient(y_f, x).numpy(), tape.gradient(y_r, x).numpy())


def test_approx_sign_layer_and_binary_sign():
    rng = np.random.default_rng(1)
    x = _values((2, 4, 4, 16), rng, ties=(0.0, 1.0))
    q = L.ApproxSign()
    _assert_same(q, x)
    sign = L.BinarySign()
    sign.build(x.shape)
    sign.bias.assign(rng.normal(0, 0.1, 16).astype(np.float32))
    _assert_same(sign, x)


def test_rprelu_kernel_equals_reference():
    rng = np.random.default_rng(2)
    layer = L.RPReLU()
    layer.build((None, 4, 4, 16))
    layer.set_weights([rng.normal(0, 0.3, 16).astype(np.float32), rng.uniform(-0.5, 1.5, 16).astype(np.float32),
                       rng.normal(0, 0.3, 16).astype(np.float32)])
    x = _values((3, 4, 4, 16), rng).numpy()
    x[0, 0, 0, :] = layer.shift_in.numpy()  # h == 0 exactly: the relu gradients are 0 there
    _assert_same(layer, tf.constant(x))
    _assert_same(layer, tf.constant(x.reshape(3, 16, 16)))  # (B, N, C) as well


def test_layerscale_and_shortcuts_equal_reference():
    rng = np.random.default_rng(3)
    ls = L.LayerScale(init_scale=0.1)
    ls.build((None, 4, 4, 16))
    ls.shift.assign(rng.normal(0, 0.1, 16).astype(np.float32))
    x = _values((2, 4, 4, 16), rng)
    _assert_same(ls, x)
    _assert_same(L.ChannelTile(repeats=4), x)
    _assert_same(L.ChannelAvgPool(factor=4), x)


def test_elastic_binarizer_equals_reference():
    rng = np.random.default_rng(4)
    layer = L.AttentionProbBinarizer(alpha_init=0.05)
    p = tf.nn.softmax(_values((2, 2, 16, 16), rng) * 3.0, axis=-1)
    _assert_same(layer, p)


def test_inference_graph_has_no_fused_kernel():
    """Export and conversion see the reference graph: training=False never calls an XLA kernel."""
    model = create_model("binaryvit_tiny_32", depths=1, embed_dims=64, input_shape=(16, 16, 1))
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, 16, 16, 1), tf.float32))
    compiled = [f.name for f in fn.graph.as_graph_def().library.function
                if f.attr.get("_XlaMustCompile") and f.attr["_XlaMustCompile"].b]
    assert compiled == []
    fn_train = tf.function(lambda x: model(x, training=True)).get_concrete_function(
        tf.TensorSpec((2, 16, 16, 1), tf.float32))
    assert any(f.attr.get("_XlaMustCompile") and f.attr["_XlaMustCompile"].b
               for f in fn_train.graph.as_graph_def().library.function)


BHVIT_REDUCED = dict(depths=(1, 1, 1, 1), embed_dims=(64, 128, 128, 128), mlp_ratios=(2, 2, 2, 2),
                     num_heads=(1, 2, 2, 2))
BINARYVIT_REDUCED = dict(depths=2, embed_dims=64, input_shape=(16, 16, 1))


def _batches(model, steps, seed=0):
    shape, classes = tuple(model.input_shape[1:]), int(model.output_shape[-1])
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (16 * steps, *shape)).astype(np.float32)
    y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, 16 * steps)]
    return x, y


def _first_losses(name, kernels, optimizer, steps=4, **overrides):
    """The per-step training losses of a fresh model (seed 0) on fixed batches."""
    fused.set_enabled(kernels == "fused")
    try:
        tf.keras.utils.set_random_seed(0)
        student = create_model(name, **overrides)
        trainer = Trainer(student)
        if optimizer == "adam":
            trainer.compile(optimizer=make_optimizer(RunConfig(model=name, epochs=1, batch_size=16), steps, student))
        else:
            trainer.compile(optimizer=tf.keras.optimizers.legacy.SGD(0.05))
        data = iter(tf.data.Dataset.from_tensor_slices(_batches(student, steps)).batch(16))
        step = trainer.make_train_function()
        losses = []
        for _ in range(steps):
            trainer.reset_metrics()  # the per-step loss, not the running mean
            losses.append(float(step(data)["loss"]))
        return np.array(losses)
    finally:
        fused.set_enabled(True)


def test_first_training_steps_unchanged():
    """Same seed, same batches, the default optimizer: the fused kernels give the reference losses."""
    ref = _first_losses("binaryvit_tiny_32", "reference", "adam", **BINARYVIT_REDUCED)
    new = _first_losses("binaryvit_tiny_32", "fused", "adam", **BINARYVIT_REDUCED)
    assert np.all(np.isfinite(ref)) and len(set(np.round(ref, 4))) > 1  # the weights really move
    np.testing.assert_allclose(new, ref, rtol=2e-4, atol=2e-5)


@pytest.mark.slow
def test_bhvit_gradients_unchanged():
    """BHViT (split grouped convs, QD attention, shift branches): the loss and every gradient of a
    training step agree with the reference graphs to float tolerance of the model's gradient scale.

    Gradients, not an Adam trajectory as for BinaryViT above: several BHViT parameters (shifts in
    front of a BatchNorm) have an analytic gradient of 0, computed as float noise of ~1e-9; Adam's first
    steps normalise any gradient to about +-lr, so that noise moves those weights by +-1e-3 in
    directions that depend on summation order, in the reference graph as much as in the fused one,
    and the trajectories part after two steps for that reason alone.
    """
    tf.keras.utils.set_random_seed(0)
    model = create_model("bhvit_tiny_32", **BHVIT_REDUCED)
    x, y = _batches(model, 1)
    model(x, training=False)
    start = [v.numpy() for v in model.variables]

    def loss_and_grads():
        for v, w in zip(model.variables, start):
            v.assign(w)

        @tf.function
        def f():
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = tf.reduce_mean(tf.keras.losses.categorical_crossentropy(y, logits, from_logits=True))
            return loss, tape.gradient(loss, model.trainable_variables)

        loss, grads = f()
        return float(loss), [tf.convert_to_tensor(g).numpy() for g in grads]

    loss_f, g_f = loss_and_grads()
    with fused.reference_kernels():
        loss_r, g_r = loss_and_grads()
    assert loss_f == pytest.approx(loss_r, rel=1e-5)
    scale = max(np.abs(g).max() for g in g_r)
    for v, a, b in zip(model.trainable_variables, g_f, g_r):
        np.testing.assert_allclose(a, b, atol=1e-4 * scale, rtol=1e-3, err_msg=v.name)



def test_pointwise_binary_conv_trains_as_matmul():
    rng = np.random.default_rng(5)
    conv = L.binary_conv(24, 1, name="pw")
    x = _values((2, 4, 4, 16), rng, ties=(0.0,))
    conv.build(x.shape)
    assert conv._pointwise()
    _assert_same(conv, x)
    fn = tf.function(lambda t: conv(t, training=True)).get_concrete_function(tf.TensorSpec(x.shape, tf.float32))
    types = {n.op for n in fn.graph.as_graph_def().node}
    assert "MatMul" in types and "Conv2D" not in types
    fn = tf.function(lambda t: conv(t, training=False)).get_concrete_function(tf.TensorSpec(x.shape, tf.float32))
    assert "Conv2D" in {n.op for n in fn.graph.as_graph_def().node}  # what LCE converts
    assert not L.binary_conv(24, 2, strides=2, name="merge")._pointwise()


def test_saving_a_model_leaves_no_shutdown_tracebacks():
    """Saving traces the training call (fused kernels, custom gradients in graph mode); the process
    must still exit with nothing below its own last line (a CLI error must stay the last line)."""
    script = (
        "import sys, tempfile, edgebvit, tensorflow as tf\n"
        "from edgebvit.models import create_model\n"
        "m = create_model('binaryvit_tiny_32', input_shape=(16, 16, 1), num_classes=10, patch_size=4,\n"
        "                 depths=1, embed_dims=32, num_heads=1, mlp_ratios=2)\n"
        "tf.saved_model.save(m, tempfile.mkdtemp())\n"
        "print('error: the last line', file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Exception ignored" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "error: the last line"
