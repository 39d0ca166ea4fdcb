"""edgebvit/augment.py: each op does what it says, is switchable, and lives in tf.data only."""
import numpy as np
import pytest

import edgebvit  # noqa: F401
import tensorflow as tf

from edgebvit.training import augment as aug
from edgebvit.training.config import AugmentConfig
from edgebvit.training.data import make_tf_dataset


def test_everything_off_adds_nothing():
    cfg = AugmentConfig()
    assert aug.image_augmenter(cfg) is None and aug.batch_mixer(cfg) is None
    y = tf.one_hot([0, 1], 4)
    assert aug.smooth_labels(y, 0.0) is y


def test_pad_crop_shifts_content_and_keeps_shape():
    img = np.zeros((8, 8, 1), np.float32)
    img[3:5, 3:5] = 255.0
    tf.random.set_seed(0)
    outs = [aug.pad_crop(tf.constant(img), 2).numpy() for _ in range(20)]
    assert all(o.shape == (8, 8, 1) for o in outs)
    positions = {tuple(np.argwhere(o[..., 0] == 255.0)[0]) for o in outs if o.max() == 255.0}
    assert len(positions) > 1  # random windows
    assert all(o.sum() <= img.sum() for o in outs)  # only shifted (or cut), never invented


def test_flip_and_randaugment_ops_run_on_gray_and_rgb():
    for c in (1, 3):
        rng = np.random.default_rng(c)
        img = tf.constant(rng.uniform(0, 255, (12, 12, c)).astype(np.float32))
        for op in aug.randaugment_ops(9.0):
            out = op(img)
            assert out.shape == img.shape and np.all(np.isfinite(out.numpy()))
            assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0
        fn = aug.image_augmenter(AugmentConfig(flip=True, randaugment_ops=2, randaugment_magnitude=9))
        outs = [fn(img).numpy() for _ in range(6)]
        assert any(not np.allclose(o, img.numpy()) for o in outs)


def test_rotate_180_and_translate_are_exact():
    img = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    np.testing.assert_allclose(aug._rotate(tf.constant(img), 180.0).numpy(), img[::-1, ::-1], atol=1e-3)
    moved = aug._translate(tf.constant(img), 1.0, 0.0).numpy()
    np.testing.assert_allclose(moved[:, 1:], img[:, :-1])
    assert np.all(moved[:, 0] == 0)


def test_mixup_and_cutmix_keep_label_mass_and_match_pixels():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(6, 8, 8, 1)).astype(np.float32))
    y = tf.one_hot([0, 1, 2, 0, 1, 2], 3)
    tf.random.set_seed(1)
    xm, ym = aug.mixup(x, y, 0.8)
    np.testing.assert_allclose(tf.reduce_sum(ym, -1).numpy(), 1.0, rtol=1e-6)
    lam = float(ym[0, 0])  # sample 0 (class 0) mixed with sample 5 (class 2)
    np.testing.assert_allclose(xm[0].numpy(), lam * x[0].numpy() + (1 - lam) * x[5].numpy(), rtol=1e-5, atol=1e-6)
    for seed in range(5):
        tf.random.set_seed(seed)
        xc, yc = aug.cutmix(x, y, 1.0)
        from_other = np.mean(np.isclose(xc[0].numpy(), x[5].numpy()) & ~np.isclose(x[0].numpy(), x[5].numpy()))
        assert float(yc[0, 2]) == pytest.approx(from_other, abs=1e-6)  # label weight = pasted area
        np.testing.assert_allclose(tf.reduce_sum(yc, -1).numpy(), 1.0, rtol=1e-6)


def test_label_smoothing_and_pipeline_wiring():
    y = aug.smooth_labels(tf.one_hot([1], 4), 0.1).numpy()
    np.testing.assert_allclose(y, [[0.025, 0.925, 0.025, 0.025]], rtol=1e-6)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 8, 8, 1), dtype=np.uint8)
    labels = np.arange(32) % 4
    cfg = AugmentConfig(pad_crop=2, flip=True, randaugment_ops=1, mixup_alpha=0.5, cutmix_alpha=1.0,
                        label_smoothing=0.1)
    xb, yb = next(iter(make_tf_dataset(x, labels, batch_size=16, training=True, num_classes=4, augment=cfg)))
    assert xb.shape == (16, 8, 8, 1) and float(tf.reduce_max(yb)) < 1.0
    # Evaluation ignores augmentation entirely.
    xe, ye = next(iter(make_tf_dataset(x, labels, batch_size=16, training=False, num_classes=4, augment=cfg)))
    np.testing.assert_allclose(xe.numpy(), x[:16] / 127.5 - 1.0, atol=1e-6)
    assert set(np.unique(ye.numpy())) == {0.0, 1.0}
