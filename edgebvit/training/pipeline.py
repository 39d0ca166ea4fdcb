"""The training input stream, reproducible epoch by epoch (docs/guarantees.md, Resume).

Epoch `e` of a run is a pure function of (run seed, e): its order is a stateless random
permutation seeded by (seed, e), and every image's augmentation (and every batch's mixup/cutmix)
is seeded by (seed, e, index) through stateless random ops. A run resumed at epoch k therefore sees exactly the batches an
uninterrupted run sees from epoch k on, whichever epoch the process started at, and parallel
augmentation cannot reorder random draws. Each epoch is exactly `steps_per_epoch` batches.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from edgebvit.training import augment as aug
from edgebvit.training.data import normalize

_MIX_STREAM = 1 << 40  # keeps the batch-mixing seeds apart from the per-image ones


def epoch_seed(seed: int, epoch) -> tf.Tensor:
    """The shape-[2] stateless root seed of one epoch."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])


def training_dataset(x: np.ndarray, y: np.ndarray, *, batch_size: int, steps_per_epoch: int, first_epoch: int,
                     epochs: int, seed: int, num_classes: int, augment=None) -> tf.data.Dataset:
    """Batches of (normalised images, one-hot labels) for epochs `first_epoch`..`epochs - 1`."""
    # The arrays are in memory already (the `cache` option is for the evaluation pipelines): each
    # epoch gathers from them in a stateless random permutation, a full shuffle of the epoch.
    images, labels = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    per_image = aug.image_augmenter(augment) if augment is not None else None
    mixer = aug.batch_mixer(augment) if augment is not None else None
    smoothing = augment.label_smoothing if augment is not None else 0.0
    n = len(x)

    def one_epoch(epoch):
        root = epoch_seed(seed, epoch)
        order = tf.argsort(tf.random.stateless_uniform([n], tf.random.experimental.stateless_fold_in(root, -1)))
        ds = tf.data.Dataset.from_tensor_slices(order).map(
            lambda i: (i, (tf.gather(images, i), tf.gather(labels, i))), num_parallel_calls=tf.data.AUTOTUNE)
        if per_image is not None:
            ds = ds.map(
                lambda i, ab: (i, (per_image(tf.cast(ab[0], tf.float32),
                                             seed=tf.random.experimental.stateless_fold_in(root, i)), ab[1])),
                num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.map(lambda i, ab: ab)
        ds = ds.batch(batch_size, drop_remainder=False).take(steps_per_epoch)
        ds = ds.map(lambda a, b: (normalize(a), aug.smooth_labels(tf.one_hot(b, num_classes), smoothing)),
                    num_parallel_calls=tf.data.AUTOTUNE)
        if mixer is not None:
            ds = ds.enumerate().map(
                lambda i, xy: mixer(xy[0], xy[1], seed=tf.random.experimental.stateless_fold_in(root, _MIX_STREAM + i)),
                num_parallel_calls=tf.data.AUTOTUNE)
        return ds

    epochs_ds = tf.data.Dataset.range(first_epoch, epochs)
    return epochs_ds.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def steps_in_epoch(n_images: int, batch_size: int, cap: Optional[int]) -> int:
    """Batches per epoch: every image once (the last batch may be short), at most `cap`."""
    steps = -(-n_images // batch_size)
    return min(steps, cap) if cap else steps
