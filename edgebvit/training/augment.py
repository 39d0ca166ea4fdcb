"""Training-time augmentation for small datasets, as tf.data map functions (never in the model).

Per image (on float32 pixels in [0, 255], before normalisation): pad-and-crop, horizontal flip,
RandAugment (Cubuk et al. 2020: N ops drawn uniformly per image, magnitude M of 30). Per batch
(on normalised images and one-hot labels): mixup (Zhang et al. 2018) and cutmix (Yun et al.
2019), as DeiT uses them; label smoothing is applied to the one-hot labels.

Every switch lives in `edgebvit.training.config.AugmentConfig`; with all of them off these functions are
not added to the pipeline at all.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import tensorflow as tf

from edgebvit.training.config import AugmentConfig

_MAX_MAGNITUDE = 30.0


class Seeds:
    """Stateless random seeds, a fresh one for every random draw of one image or one batch.

    Each draw folds a counter into `root` (a shape-[2] integer seed), so the same root always
    gives the same augmentation, in any order and on any thread: the training pipeline roots
    every image's seeds in (run seed, epoch, index), which makes a resumed run see exactly the
    images an uninterrupted one would. With `root=None` a root is drawn from TensorFlow's global
    generator (different every call, as plain `tf.random` ops are).
    """

    def __init__(self, root=None):
        if root is None:
            root = tf.random.uniform([2], maxval=2 ** 31 - 1, dtype=tf.int64)
        self.root = tf.cast(root, tf.int64)
        self.count = 0

    def __call__(self) -> tf.Tensor:
        self.count += 1
        return tf.random.experimental.stateless_fold_in(self.root, self.count)


def _seeds(seeds: Optional[Seeds]) -> Seeds:
    return seeds if seeds is not None else Seeds()


# ------------------------------------------------------------------------------------------
# Geometry through TensorFlow's projective-transform kernel (what Keras' RandomRotation uses)
# ------------------------------------------------------------------------------------------
def _transform(image: tf.Tensor, matrix: List[tf.Tensor]) -> tf.Tensor:
    """Apply a 3x3 projective map (8 coefficients, output -> input coordinates); fill with 0."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    transform = tf.reshape(tf.stack([tf.cast(m, tf.float32) for m in matrix]), (1, 8))
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.stack([h, w]),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
    )[0]


def _rotate(image, degrees):
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    a = degrees * math.pi / 180.0
    c, s = tf.cos(a), tf.sin(a)
    # Rotation about the image centre, written as the inverse map Keras uses.
    x0 = ((w - 1) - (c * (w - 1) - s * (h - 1))) / 2.0
    y0 = ((h - 1) - (s * (w - 1) + c * (h - 1))) / 2.0
    return _transform(image, [c, -s, x0, s, c, y0, 0.0, 0.0])


def _shear_x(image, k):
    return _transform(image, [1.0, k, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def _shear_y(image, k):
    return _transform(image, [1.0, 0.0, 0.0, k, 1.0, 0.0, 0.0, 0.0])


def _translate(image, dx, dy):
    return _transform(image, [1.0, 0.0, -dx, 0.0, 1.0, -dy, 0.0, 0.0])


# ------------------------------------------------------------------------------------------
# Colour ops (pixels in [0, 255])
# ------------------------------------------------------------------------------------------
def _gray(image):
    if image.shape[-1] == 3:
        return tf.image.rgb_to_grayscale(image)
    return image


def _blend(a, b, factor):
    """b + factor * (a - b), clipped: factor 1 gives a, 0 gives b (PIL's ImageEnhance)."""
    return tf.clip_by_value(b + factor * (a - b), 0.0, 255.0)


def _autocontrast(image):
    lo = tf.reduce_min(image, axis=(0, 1), keepdims=True)
    hi = tf.reduce_max(image, axis=(0, 1), keepdims=True)
    scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1e-3), 1.0)
    return tf.clip_by_value(tf.where(hi > lo, (image - lo) * scale, image), 0.0, 255.0)


def _sharpness(image, factor):
    c = image.shape[-1]
    k = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    k = tf.tile(k[:, :, None, None], [1, 1, c, 1])
    blurred = tf.nn.depthwise_conv2d(image[None], k, [1, 1, 1, 1], "SAME")[0]
    return _blend(image, blurred, factor)


def _posterize(image, bits):
    shift = tf.cast(8 - bits, tf.int32)
    q = tf.bitwise.left_shift(tf.bitwise.right_shift(tf.cast(image, tf.int32), shift), shift)
    return tf.cast(q, tf.float32)


def randaugment_ops(magnitude: float, seeds: Optional[Seeds] = None) -> List[Callable[[tf.Tensor], tf.Tensor]]:
    """The RandAugment op list (without Equalize), each at `magnitude` (0..30) with random sign."""
    m = magnitude / _MAX_MAGNITUDE
    seeds = _seeds(seeds)

    def signed(v):
        return tf.where(tf.random.stateless_uniform([], seeds()) < 0.5, -v, v)

    def size(image):
        return tf.cast(tf.shape(image)[0], tf.float32)

    return [
        lambda im: im,  # identity
        _autocontrast,
        lambda im: _rotate(im, signed(30.0 * m)),
        lambda im: tf.where(im < 256.0 - 256.0 * m, im, 255.0 - im),  # solarize
        lambda im: _posterize(im, tf.cast(tf.round(8.0 - 4.0 * m), tf.int32)),
        lambda im: _blend(im, tf.reduce_mean(_gray(im)), 1.0 + signed(0.9 * m)),  # contrast
        lambda im: _blend(im, tf.zeros_like(im), 1.0 + signed(0.9 * m)),  # brightness
        lambda im: _blend(im, _gray(im) * tf.ones_like(im), 1.0 + signed(0.9 * m)),  # color
        lambda im: _sharpness(im, 1.0 + signed(0.9 * m)),
        lambda im: _shear_x(im, signed(0.3 * m)),
        lambda im: _shear_y(im, signed(0.3 * m)),
        lambda im: _translate(im, signed(0.45 * m) * size(im), 0.0),
        lambda im: _translate(im, 0.0, signed(0.45 * m) * size(im)),
    ]


def rand_augment(image: tf.Tensor, num_ops: int, magnitude: float, seeds: Optional[Seeds] = None) -> tf.Tensor:
    """Apply `num_ops` ops drawn uniformly at random (per image) at `magnitude`."""
    seeds = _seeds(seeds)
    ops = randaugment_ops(magnitude, seeds)
    shape = image.shape
    for _ in range(num_ops):
        idx = tf.random.stateless_uniform([], seeds(), 0, len(ops), dtype=tf.int32)
        image = tf.switch_case(idx, [lambda f=f: f(image) for f in ops])
        image = tf.ensure_shape(image, shape)
    return image


def pad_crop(image: tf.Tensor, pad: int, seeds: Optional[Seeds] = None) -> tf.Tensor:
    """Zero-pad by `pad` pixels on every side and crop a random window of the original size."""
    h, w, c = image.shape
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(padded, (h, w, c), seed=_seeds(seeds)())


def image_augmenter(cfg: AugmentConfig) -> Optional[Callable[..., tf.Tensor]]:
    """Per-image function ``fn(image, seed=None)`` (float [0, 255] HWC -> same), or None when every
    per-image op is off. With a shape-[2] `seed` the result is a pure function of (image, seed)."""
    if not (cfg.pad_crop or cfg.flip or cfg.randaugment_ops):
        return None

    def fn(image, seed=None):
        seeds = Seeds(seed)
        if cfg.pad_crop:
            image = pad_crop(image, cfg.pad_crop, seeds)
        if cfg.flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=seeds())
        if cfg.randaugment_ops:
            image = rand_augment(image, cfg.randaugment_ops, cfg.randaugment_magnitude, seeds)
        return tf.clip_by_value(image, 0.0, 255.0)

    return fn


# ------------------------------------------------------------------------------------------
# Batch mixing on one-hot labels
# ------------------------------------------------------------------------------------------
def _beta(alpha: float, seeds: Seeds) -> tf.Tensor:
    a = tf.random.stateless_gamma([], seeds(), alpha)
    b = tf.random.stateless_gamma([], seeds(), alpha)
    return a / (a + b)


def mixup(x: tf.Tensor, y: tf.Tensor, alpha: float, seeds: Optional[Seeds] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    """Blend each image and label with the batch reversed (timm's pairing), weight ~ Beta(a, a)."""
    lam = _beta(alpha, _seeds(seeds))
    return lam * x + (1.0 - lam) * tf.reverse(x, [0]), lam * y + (1.0 - lam) * tf.reverse(y, [0])


def cutmix(x: tf.Tensor, y: tf.Tensor, alpha: float, seeds: Optional[Seeds] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    """Paste a random box from the reversed batch; labels weighted by the box's actual area."""
    seeds = _seeds(seeds)
    lam = _beta(alpha, seeds)
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    cut = tf.sqrt(1.0 - lam)
    ch, cw = tf.cast(hf * cut, tf.int32), tf.cast(wf * cut, tf.int32)
    cy = tf.random.stateless_uniform([], seeds(), 0, h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seeds(), 0, w, dtype=tf.int32)
    y0, y1 = tf.clip_by_value(cy - ch // 2, 0, h), tf.clip_by_value(cy + ch // 2, 0, h)
    x0, x1 = tf.clip_by_value(cx - cw // 2, 0, w), tf.clip_by_value(cx + cw // 2, 0, w)
    rows = tf.logical_and(tf.range(h) >= y0, tf.range(h) < y1)
    cols = tf.logical_and(tf.range(w) >= x0, tf.range(w) < x1)
    box = tf.logical_and(rows[:, None], cols[None, :])[None, :, :, None]
    mixed = tf.where(box, tf.reverse(x, [0]), x)
    area = tf.cast((y1 - y0) * (x1 - x0), tf.float32) / (hf * wf)
    return mixed, (1.0 - area) * y + area * tf.reverse(y, [0])


def batch_mixer(cfg: AugmentConfig) -> Optional[Callable]:
    """Per-batch ``fn(x, one-hot y, seed=None)`` -> mixed (x, y), or None when mixup and cutmix
    are both off. With a shape-[2] `seed` the result is a pure function of (batch, seed)."""
    if not (cfg.mixup_alpha or cfg.cutmix_alpha):
        return None

    def fn(x, y, seed=None):
        seeds = Seeds(seed)

        def mixed():
            if cfg.mixup_alpha and cfg.cutmix_alpha:
                use_cut = tf.random.stateless_uniform([], seeds()) < cfg.mix_switch_prob
                return tf.cond(use_cut, lambda: cutmix(x, y, cfg.cutmix_alpha, seeds),
                               lambda: mixup(x, y, cfg.mixup_alpha, seeds))
            if cfg.cutmix_alpha:
                return cutmix(x, y, cfg.cutmix_alpha, seeds)
            return mixup(x, y, cfg.mixup_alpha, seeds)

        if cfg.mix_prob >= 1.0:
            return mixed()
        return tf.cond(tf.random.stateless_uniform([], seeds()) < cfg.mix_prob, mixed, lambda: (x, y))

    return fn


def smooth_labels(y: tf.Tensor, smoothing: float) -> tf.Tensor:
    """One-hot -> (1 - e) one-hot + e / K."""
    if not smoothing:
        return y
    k = tf.cast(tf.shape(y)[-1], y.dtype)
    return y * (1.0 - smoothing) + smoothing / k
