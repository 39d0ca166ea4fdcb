"""edgebvit/distill.py and the Trainer's distillation: loss forms, frozen teacher, loading."""
import numpy as np
import pytest

import edgebvit  # noqa: F401
import tensorflow as tf

from edgebvit.training.config import RunConfig
from edgebvit.training.distill import hard_distillation_loss, load_teacher, soft_distillation_loss
from edgebvit.errors import EdgebvitError
from edgebvit.training import Trainer, epoch_plan


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_soft_loss_is_reactnet_distribution_loss_with_tau_squared():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 7)).astype(np.float32), rng.normal(size=(5, 7)).astype(np.float32)
    for tau in (1.0, 3.0):
        want = -(tau ** 2) * np.sum(_softmax(t / tau) * np.log(_softmax(s / tau)), -1)
        np.testing.assert_allclose(soft_distillation_loss(s, t, tau).numpy(), want, rtol=1e-5)
    # Minimised (equal to the teacher's entropy) when the student matches the teacher.
    same = soft_distillation_loss(t, t, 1.0).numpy()
    assert np.all(same <= soft_distillation_loss(s, t, 1.0).numpy() + 1e-6)


def test_hard_loss_uses_teacher_argmax():
    s = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]], np.float32)
    t = np.array([[0.0, 5.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    want = -np.log(_softmax(s)[[0, 1], [1, 2]])
    np.testing.assert_allclose(hard_distillation_loss(s, t).numpy(), want, rtol=1e-5)


def _tiny(seed, name, bn=True):
    tf.keras.utils.set_random_seed(seed)
    x = tf.keras.Input((8, 8, 1))
    h = tf.keras.layers.Conv2D(4, 3, name=f"{name}_conv")(x)
    if bn:
        h = tf.keras.layers.BatchNormalization(name=f"{name}_bn")(h)
    h = tf.keras.layers.GlobalAveragePooling2D()(h)
    return tf.keras.Model(x, tf.keras.layers.Dense(3, name=f"{name}_head")(h), name=name)


def _batch():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
    y = tf.one_hot(rng.integers(0, 3, 16), 3)
    return x, y


def test_teacher_changes_student_loss_and_never_changes():
    x, y = _batch()
    student = _tiny(0, "student")
    teacher_a, teacher_b = _tiny(1, "ta"), _tiny(2, "tb")
    for t in (teacher_a, teacher_b):
        t.trainable = False
    logits = student(x)
    losses = {}
    for label, teacher in (("a", teacher_a), ("b", teacher_b)):
        trainer = Trainer(student, teacher=teacher, distill_mode="soft", temperature=1.0)
        trainer.w_ce.assign(0.0)
        trainer.w_kd.assign(1.0)
        losses[label] = float(trainer.compute_losses(x, y, logits)["loss"])
    plain = Trainer(student)
    ce_only = float(plain.compute_losses(x, y, logits)["loss"])
    assert losses["a"] != pytest.approx(losses["b"], abs=1e-4)
    assert losses["a"] != pytest.approx(ce_only, abs=1e-4)
    # Equal to the soft loss against the teacher's (inference-mode) logits.
    want = np.mean(soft_distillation_loss(logits, teacher_a(x, training=False)).numpy())
    assert losses["a"] == pytest.approx(want, rel=1e-5)

    # Training steps: the student moves, the teacher (weights and BN statistics) does not.
    trainer = Trainer(student, teacher=teacher_a, distill_mode="soft")
    trainer.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-2))
    before_t = [w.copy() for w in teacher_a.get_weights()]
    before_s = [w.copy() for w in student.get_weights()]
    trainer.w_ce.assign(0.5)
    trainer.w_kd.assign(0.5)
    hist = trainer.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat(), epochs=1,
                       steps_per_epoch=3, verbose=0)
    assert "kd" in hist.history and np.isfinite(hist.history["kd"][0])
    for a, b in zip(before_t, teacher_a.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(before_s, student.get_weights()))
    assert not any(v is w for v in trainer.trainable_variables for w in teacher_a.weights)


def test_loss_weights_follow_the_recipes():
    kd_only = RunConfig()
    kd_only.distill.mode, kd_only.distill.teacher = "soft", "t"
    assert epoch_plan(kd_only, 0) == epoch_plan(kd_only, 2)
    plan = epoch_plan(kd_only, 0)
    assert (plan.w_ce, plan.w_kd, plan.w_reg) == (0.0, 1.0, 0.0)
    # BHViT's paper mix: (1 - l - b) CE + l KD + b L_re, regularizer only in the last 10%.
    cfg = RunConfig(epochs=10)
    cfg.distill.mode, cfg.distill.teacher, cfg.distill.weight = "soft", "t", 0.8
    cfg.optim.regularizer_weight = 0.1
    early, late = epoch_plan(cfg, 8), epoch_plan(cfg, 9)
    assert (early.w_ce, early.w_kd, early.w_reg) == pytest.approx((0.2, 0.8, 0.0))
    assert (late.w_ce, late.w_kd, late.w_reg) == pytest.approx((0.1, 0.8, 0.1))
    # The official code's 0.9 KD + 0.1 L_re (KD only, scale mix, on from the start).
    cfg = RunConfig(epochs=4)
    cfg.distill.mode, cfg.distill.teacher = "soft", "t"
    cfg.optim.regularizer_weight, cfg.optim.regularizer_start, cfg.optim.regularizer_mix = 0.1, 0.0, "scale"
    p = epoch_plan(cfg, 0)
    assert (p.w_ce, p.w_kd, p.w_reg) == pytest.approx((0.0, 0.9, 0.1))


def test_load_teacher_from_run_dir(tmp_path):
    teacher = _tiny(3, "t")
    run = tmp_path / "teacher_run"
    run.mkdir()
    teacher.save(run / "model.keras")
    loaded = load_teacher(str(run), input_shape=(8, 8, 1), num_classes=3)
    assert not loaded.trainable and not loaded.trainable_weights
    x, _ = _batch()
    np.testing.assert_allclose(loaded(x, training=False), teacher(x, training=False), rtol=1e-5, atol=1e-6)
    with pytest.raises(EdgebvitError, match="predicts 3 classes"):
        load_teacher(str(run), input_shape=(8, 8, 1), num_classes=10)
    with pytest.raises(EdgebvitError, match="takes inputs"):
        load_teacher(str(run), input_shape=(32, 32, 1), num_classes=3)
    with pytest.raises(EdgebvitError, match="no model.keras"):
        load_teacher(str(tmp_path), input_shape=(8, 8, 1), num_classes=3)
