"""The literature's heads on BinaryViT (docs/papers.md 3.1): DeiT's distillation token and head,
CaiT's class attention. Shapes, the heads' average, the trainer's split of the loss between the
heads, one real training run with a teacher, export to LCE with every binary linear an
`LceBconv2d`, and the one-line error without a teacher."""
import json

import numpy as np
import pytest
from conftest import run_cli

import edgebvit  # noqa: F401
import larq as lq
import tensorflow as tf

import edgebvit.models as zoo
from edgebvit.errors import ModelError
from edgebvit.models import binaryvit as B
from edgebvit.training import Trainer
from edgebvit.training.distill import distillation_heads

SMALL = dict(input_shape=(16, 16, 1), num_classes=10, patch_size=4, depths=1, embed_dims=32, num_heads=1,
             mlp_ratios=2)
LITERATURE = ["binaryvit_tiny_32_distill", "binaryvit_tiny_32_cls_distill", "binaryvit_tiny_32_cait",
              "binaryvit_tiny_32_cait_distill", "binaryvit_pyramid_tiny_32_cait", "binaryvit_deit_s_distill_224",
              "binaryvit_pyramid_s_224_cait_distill"]


def _small(name, **extra):
    info = zoo.get_model_info(name)
    over = dict(SMALL, **extra)
    if len(info.config.stages()) > 1:
        over.update(patch_size=2, depths=(1, 1), embed_dims=(32, 64), num_heads=(1, 2), mlp_ratios=(2, 2),
                    sr_ratios=(2, 1))
    return zoo.create_model(name, **over)


def _x(n=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 16, 16, 1)).astype(np.float32)


def test_literature_variants_are_registered_with_their_switches():
    assert set(LITERATURE) <= set(zoo.list_models(tag="literature"))
    for name in LITERATURE:
        cfg = zoo.get_model_info(name).config
        assert cfg.distill_token == ("distill" in name), name
        assert (cfg.head == "class_attention") == ("cait" in name), name
        cfg.validate()


@pytest.mark.parametrize("name", ["binaryvit_tiny_32_distill", "binaryvit_tiny_32_cls_distill",
                                  "binaryvit_tiny_32_cait_distill"])
def test_distilled_model_infers_with_the_mean_of_its_two_heads(name):
    tf.keras.utils.set_random_seed(0)
    model = _small(name)
    heads = distillation_heads(model)
    assert heads is not None
    x = _x()
    cls_logits, dist_logits = (t.numpy() for t in heads(x, training=False))
    assert cls_logits.shape == dist_logits.shape == (4, 10)
    assert not np.allclose(cls_logits, dist_logits)  # two different heads
    np.testing.assert_allclose(model(x, training=False).numpy(), (cls_logits + dist_logits) / 2, rtol=1e-5, atol=1e-6)


def test_distillation_token_rides_the_trunk_beside_the_patches():
    model = _small("binaryvit_tiny_32_distill")
    # 4x4 patches plus the distillation token, as one row; the pooling branches see only the grid.
    assert model.get_layer("dist_token").output.shape[1:] == (1, 17, 32)
    assert model.get_layer("block0_pool_grid").output.shape[1:] == (4, 4, 32)
    assert model.get_layer("block0_pool_row0").output.shape[1:] == (1, 17, 32)
    assert model.get_layer("head_patches").output.shape[1:] == (4, 4, 32)
    cls = _small("binaryvit_tiny_32_cls_distill")  # DeiT: [class, distillation, patches]
    assert cls.get_layer("cls_token").output.shape[1:] == (1, 18, 32)
    assert distillation_heads(_small("binaryvit_tiny_32")) is None


def test_class_attention_queries_only_the_tokens_and_leaves_the_patches_frozen():
    tf.keras.utils.set_random_seed(0)
    model = _small("binaryvit_tiny_32_cait_distill")
    core = model.get_layer("ca0_attn_core")
    q_shape, k_shape, _ = core.input_shape
    assert q_shape[1:] == (1, 2, 32)  # class and distillation token (the query linear is cut to them)
    assert k_shape[1:] == (1, 18, 32)  # the tokens and the 16 patches
    assert model.get_layer("ca1_out").output.shape[1:] == (1, 2, 32)
    # The trunk has no class token: the patches leaving the last block feed both CA blocks unchanged.
    assert not any(l.name in ("cls_token", "dist_token") for l in model.layers)
    # The patches leaving the trunk feed the tokens' creation and both blocks' concat, nothing else:
    # no block updates them.
    patches = model.get_layer("ca_patches")
    consumers = {node.outbound_layer.name for node in patches._outbound_nodes}
    assert consumers == {"ca_tokens", "ca0_concat", "ca1_concat"}
    for block in ("ca0", "ca1"):
        assert model.get_layer(f"{block}_concat").input[1] is patches.output
    # The class-attention output depends on the image: the tokens attend to the patches.
    x = _x()
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        tokens = tf.keras.Model(model.inputs, model.get_layer("ca1_out").output)(xt, training=False)
    assert float(tf.reduce_max(tf.abs(tape.gradient(tokens, xt)))) > 0


@pytest.mark.parametrize("overrides,match", [
    (dict(distill_token=True, depths=(1, 1), embed_dims=(32, 64)), "head='class_attention'"),
    (dict(distill_token=True, sr_ratios=2), "without K/V reduction"),
    (dict(head="class_attention", class_attention_depth=0), "class_attention_depth >= 1"),
    (dict(head="cait"), "head must be one of"),
])
def test_bad_literature_configs_are_one_line_errors(overrides, match):
    cfg = B.BinaryViTConfig(input_shape=(16, 16, 1), patch_size=2, **{k: v for k, v in overrides.items()})
    with pytest.raises(ModelError, match=match):
        cfg.validate()


def test_trainer_gives_the_label_to_the_class_head_and_the_teacher_to_the_distillation_head():
    tf.keras.utils.set_random_seed(0)
    student = _small("binaryvit_tiny_32_distill")
    teacher = _small("binaryvit_tiny_32")
    teacher.trainable = False
    trainer = Trainer(student, teacher=teacher, distill_mode="hard")
    trainer.w_ce.assign(0.5)
    trainer.w_kd.assign(0.5)
    x = _x(8, seed=3)
    y = tf.one_hot(np.arange(8) % 10, 10)
    cls_logits, dist_logits = distillation_heads(student)(x, training=False)
    terms = trainer.compute_losses(x, y, cls_logits, dist_logits)
    ce = tf.keras.losses.categorical_crossentropy(y, cls_logits, from_logits=True).numpy().mean()
    t_labels = np.argmax(teacher(x, training=False).numpy(), -1)
    kd = tf.keras.losses.sparse_categorical_crossentropy(t_labels, dist_logits, from_logits=True).numpy().mean()
    np.testing.assert_allclose(float(terms["ce"]), ce, rtol=1e-5)
    np.testing.assert_allclose(float(terms["kd"]), kd, rtol=1e-5)
    np.testing.assert_allclose(float(terms["loss"]), 0.5 * ce + 0.5 * kd, rtol=1e-5)
    # The train step routes the terms: with the teacher's weight at 0 only the class head moves,
    # with the label weight at 0 only the distillation head.
    trainer.compile(optimizer=tf.keras.optimizers.legacy.SGD(1e-1))
    for w_ce, w_kd, moves in ((1.0, 0.0, "head"), (0.0, 1.0, "head_dist")):
        trainer.w_ce.assign(w_ce)
        trainer.w_kd.assign(w_kd)
        before = {n: student.get_layer(n).kernel.numpy().copy() for n in ("head", "head_dist")}
        trainer.train_on_batch(x, y)
        for n, b in before.items():
            assert np.array_equal(student.get_layer(n).kernel.numpy(), b) == (n != moves), (w_ce, w_kd, n)


def test_distillation_head_without_a_teacher_is_one_line_and_writes_nothing(tmp_path, data):
    out = tmp_path / "run"
    proc = run_cli("train", "--model", "binaryvit_tiny_32_distill", "--data", data, "--epochs", "1",
                   "--out", out)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: model binaryvit_tiny_32_distill has a distillation head"), proc.stderr
    assert "--teacher RUN_DIR" in lines[-1]
    assert not out.exists()


@pytest.mark.parametrize("weights,head", [(["distill.weight=1.0"], "class head"),
                                          (["distill.weight=0.0"], "distillation head")])
def test_a_head_that_would_never_train_is_refused(tmp_path, data, weights, head):
    """`--teacher` alone means the papers' soft KD at weight 1: the class head would get no loss."""
    (tmp_path / "teacher").mkdir()
    out = tmp_path / "run"
    proc = run_cli("train", "--model", "binaryvit_tiny_32_distill", "--data", data, "--epochs", "1",
                   "--teacher", tmp_path / "teacher", *weights, "--out", out)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: model binaryvit_tiny_32_distill: its {head}") and "never train" in last, last
    assert "distill.weight=0.5" in last
    assert not out.exists()


@pytest.mark.slow
def test_distilled_class_attention_model_trains_with_a_teacher_and_exports_binary(tmp_path, data):
    teacher = tmp_path / "teacher"
    proc = run_cli("train", "--model", "cnn_small_32", "--data", data, "--set", "widths=[8,16]", "--epochs", "1",
                   "--steps-per-epoch", "2", "--batch-size", "16", "--out", teacher)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    student = tmp_path / "student"
    proc = run_cli("train", "--model", "binaryvit_tiny_32_cait_distill", "--data", data, "--set", "depths=1",
                   "--set", "embed_dims=32", "--set", "num_heads=1", "--teacher", teacher, "distill.mode=hard",
                   "distill.weight=0.5", "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "16",
                   "--out", student)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = (student / "metrics.csv").read_text()
    assert "kd" in metrics.splitlines()[0]
    proc = run_cli("export", student, "--tflite")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((student / "model.export.json").read_text())
    assert report["status"] == "ok" and report["parity"]["top1_agreement"] >= 0.99
    from edgebvit.models.loading import load_keras_model

    model = load_keras_model(student / "model.keras")
    binary_convs = sum(isinstance(l, lq.layers.QuantConv2D) for l in model.submodules)
    assert report["inspection"]["op_counts"]["LceBconv2d"] == binary_convs
    per_block = report["inspection"]["ops_per_block"]
    assert {"block0", "ca0", "ca1"} <= set(per_block)
