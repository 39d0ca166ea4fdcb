"""Every registered variant builds, trains one step and exports to an LCE flatbuffer that computes
what Keras computes.

Each variant runs at a reduced size that keeps its switches (head, pooling branches, LayerScale,
pyramid + patch merging, SPT/LSA, precision): one or two stages of depth 1 and width 32 on 16x16
inputs. Variants whose reduced configs coincide (tiny / small / ImageNet rows of the same switch
set) share one model. LCE conversion costs tens of seconds per call here, so all distinct reduced
models go through the converter together as one multi-output model; each output has its own
class count, which identifies it in the flatbuffer.
"""
import math

import numpy as np
import pytest
from conftest import heavy, randomize_bn

import edgebvit  # noqa: F401
import larq as lq
import tensorflow as tf

import edgebvit.models as zoo
from edgebvit.models.registry import resolve_config

pytestmark = pytest.mark.slow

# BHViT has its own reduced configs, build/step/export tests and counts in tests/test_bhvit.py.
NAMES = [n for n in zoo.list_models() if zoo.get_model_info(n).family != "bhvit"]
INPUT = (16, 16, 1)


def reduced_overrides(name):
    """Small config with the variant's switches: 16x16 input, depth 1, width 32."""
    info = zoo.get_model_info(name)
    cfg = info.config
    if info.family == "cnn":
        return dict(input_shape=INPUT, widths=(8, 16), convs_per_stage=1)
    common = dict(input_shape=INPUT, num_classes=10)
    if isinstance(cfg.depths, tuple) and len(cfg.depths) > 1:
        # Two stages keep the pyramid's parts: SR attention (r=2), patch merging, new pos-emb.
        return dict(common, patch_size=2, depths=(1, 1), embed_dims=(32, 64), num_heads=(1, 2),
                    mlp_ratios=(2, 2), sr_ratios=(2, 1))
    return dict(common, patch_size=4, depths=1, embed_dims=32, num_heads=1, mlp_ratios=2)


def _groups():
    """Distinct reduced configs -> the registered names that reduce to them (registration order)."""
    groups = {}
    for name in NAMES:
        key = repr(resolve_config(name, **reduced_overrides(name)))
        groups.setdefault(key, []).append(name)
    return list(groups.values())


GROUPS = _groups()
REPRESENTATIVE = {name: group[0] for group in GROUPS for name in group}


def _binary_convs(model):
    return [l for l in model.submodules if isinstance(l, lq.layers.QuantConv2D)]


@pytest.fixture(scope="module")
def reduced_models():
    """One reduced model per distinct config, each with its own class count (10 + index)."""
    tf.keras.utils.set_random_seed(0)
    models = {}
    for i, group in enumerate(GROUPS):
        rep = group[0]
        models[rep] = zoo.create_model(rep, **{**reduced_overrides(rep), "num_classes": 10 + i})
    return models


def test_registry_has_the_ladder_and_teachers():
    assert "binaryvit_tiny_32" in NAMES
    top1 = {n: zoo.get_model_info(n).paper_top1 for n in NAMES if zoo.get_model_info(n).paper_top1}
    assert sorted(top1.values()) == [48.5, 56.4, 60.2, 61.8, 67.7, 70.6]
    assert all(zoo.get_model_info(n).input_shape == (224, 224, 3) for n in top1)
    teachers = zoo.list_models(role="teacher")
    assert "cnn_small_32" in teachers and "vit_tiny_32_fp" in teachers
    for n in teachers:
        assert zoo.get_model_info(n).config.__class__.__name__ == "CNNConfig" or not zoo.get_model_info(n).config.binary


@pytest.mark.parametrize("name", NAMES)
def test_every_variant_builds_and_trains_one_step(name, reduced_models):
    model = reduced_models[REPRESENTATIVE[name]]
    x = tf.constant(np.random.default_rng(1).normal(size=(4, *INPUT)).astype(np.float32))
    y = tf.constant([0, 1, 2, 3])
    opt = tf.keras.optimizers.legacy.Adam(1e-2)
    latent = [l.kernel for l in _binary_convs(model)]
    before = [w.numpy().copy() for w in latent]
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss))
    missing = [v.name for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not missing, f"no gradient reaches {missing}"
    opt.apply_gradients(zip(grads, model.trainable_variables))
    assert all(not np.array_equal(w.numpy(), b) for w, b in zip(latent, before))
    is_binary = getattr(zoo.get_model_info(name).config, "binary", False)
    assert bool(latent) == is_binary


def _attention_macs(model):
    """Q.K^T and P.V MACs: per attention core, 2 * N_q * N_kv * C."""
    total = 0
    for layer in model.submodules:
        if isinstance(layer, zoo.binaryvit.L.MultiHeadAttentionCore):
            q_shape, k_shape = layer.input_shape[0], layer.input_shape[1]
            total += 2 * math.prod(q_shape[1:3]) * math.prod(k_shape[1:3]) * q_shape[-1]
    return total


@pytest.fixture(scope="module")
def exported(reduced_models):
    """All reduced models as one multi-output Keras model, converted once, plus its inspection."""
    from edgebvit.converters.export import ExportOptions, convert
    from edgebvit.converters.inspect import inspect_flatbuffer

    rng = np.random.default_rng(2)
    for m in reduced_models.values():
        randomize_bn(m, rng)
    inp = tf.keras.Input(INPUT, name="image")
    combined = tf.keras.Model(inp, [m(inp) for m in reduced_models.values()], name="zoo")
    flatbuffer = convert(combined, ExportOptions())
    return combined, flatbuffer, inspect_flatbuffer(flatbuffer)


def _ops_of(report, model_name):
    return [op for op in report.ops if f"/{model_name}/" in op.name]


@heavy
def test_every_binary_linear_becomes_lce_bconv2d(reduced_models, exported):
    _, _, report = exported
    for name, model in reduced_models.items():
        ops = _ops_of(report, name)
        assert ops, f"no operator of {name} found by tensor name"
        bconv = [op for op in ops if op.op_type == "LceBconv2d"]
        assert len(bconv) == len(_binary_convs(model)), name
        attention = sum(op.macs for op in ops if op.attention)
        assert attention == _attention_macs(model), name
        assert not [op for op in ops if op.op_type == "BATCH_MATMUL" and not op.attention]
    # The only float FULLY_CONNECTED ops with constant weights are the classifiers, one per model
    # (two with DeiT's distillation head). A classifier's output may be a graph output, whose
    # tensor carries the output's name, not the model's: identify it by its class count (10 +
    # index, distinct per model) instead.
    fc_const = [op for op in report.ops if op.op_type == "FULLY_CONNECTED" and not op.attention]
    heads = [m.output_shape[-1] for m in reduced_models.values()
             for _ in range(2 if any(layer.name == "head_dist" for layer in m.layers) else 1)]
    assert sorted(op.outputs[0].shape[-1] for op in fc_const) == sorted(heads)


@heavy
def test_lce_parity_for_every_variant(reduced_models, exported):
    from edgebvit.converters.parity import make_interpreter, run_interpreter

    combined, flatbuffer, _ = exported
    x = np.random.default_rng(3).normal(size=(24, *INPUT)).astype(np.float32)
    keras_out = combined.predict(x, verbose=0)
    interp, _ = make_interpreter(flatbuffer)
    lce_out = run_interpreter_multi(interp, x)
    by_classes = {o.shape[-1]: o for o in lce_out}
    assert len(by_classes) == len(keras_out)
    for name, k in zip(reduced_models, keras_out):
        l = by_classes[k.shape[-1]]
        scale = max(float(np.abs(k).max()), 1e-6)
        assert float(np.abs(k - l).max()) / scale < 1e-3, name
        assert (k.argmax(-1) == l.argmax(-1)).mean() >= 23 / 24, name


def run_interpreter_multi(interp, x):
    out = interp.predict(x)
    return [np.asarray(o, np.float32).reshape(len(x), -1) for o in (out if isinstance(out, list) else [out])]
