"""Datasets: read real image data from local files into uint8 arrays, then `tf.data` pipelines.

Nothing here downloads; `sources.py` lists the supported `--data` sources.

The pieces: `dataset.py` (the Dataset, `normalize`, the one validation, seeded stratified
samples), `sources.py` (the loaders), and here `load_dataset`'s dispatch is re-exported beside
the evaluation pipeline `make_tf_dataset` (training itself streams from `pipeline.py`).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from edgebvit.training.dataset import (Dataset, _stratified_pick, normalize, parity_sample,  # noqa: F401
                                       split_validation, subsample)
from edgebvit.training.sources import (BUILTIN_DATASETS, CIFAR10_CLASSES, FASHION_MNIST_CLASSES,  # noqa: F401
                                       IMAGE_SUFFIXES, load_cifar, load_dataset, load_idx_dataset,
                                       load_image_folder, load_npz, pad_to, read_idx)


def make_tf_dataset(
    x: np.ndarray, y: np.ndarray, *, batch_size: int, training: bool, seed: int = 0,
    num_classes: Optional[int] = None, augment=None, cache: bool = True,
):
    """uint8 arrays -> batched, normalised `tf.data.Dataset` of (images, one-hot labels).

    Order: cache (the decoded uint8 arrays, so augmentation differs every epoch) -> seeded
    shuffle (training only) -> per-image augmentation -> batch -> normalise to [-1, 1] ->
    label smoothing and mixup/cutmix -> prefetch. `augment` is an `AugmentConfig`; it is
    applied only when `training`, and only here: the exported model never contains it.
    """
    import tensorflow as tf

    from edgebvit.training import augment as aug

    if num_classes is None:
        num_classes = int(y.max()) + 1 if len(y) else 1
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if cache:
        ds = ds.cache()
    per_image = aug.image_augmenter(augment) if (augment is not None and training) else None
    mixer = aug.batch_mixer(augment) if (augment is not None and training) else None
    smoothing = augment.label_smoothing if (augment is not None and training) else 0.0
    if training:
        ds = ds.shuffle(min(len(x), 50_000), seed=seed, reshuffle_each_iteration=True)
    if per_image is not None:
        ds = ds.map(lambda a, b: (per_image(tf.cast(a, tf.float32)), b), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=False)

    def finish(a, b):
        labels = aug.smooth_labels(tf.one_hot(b, num_classes), smoothing)
        return normalize(a), labels

    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    if mixer is not None:
        ds = ds.map(mixer, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
