"""The in-memory dataset and the one validation every source goes through (docs/guarantees.md, Input data).

What every loader guarantees (issue #18), each enforced in one place:

* No code runs from a data file. ``.npz`` files are read with ``allow_pickle=False``. CIFAR batches
  are pickles, so they go through `_CifarUnpickler`, which admits only the globals the real files
  use (numpy's ``_reconstruct``, ``ndarray`` and ``dtype``, plus ``_codecs.encode`` restricted to
  latin-1, the form Python 3 gives bytes at protocol <= 2); any other global is refused with
  ``refusing to unpickle <global> from FILE: not a CIFAR batch``. Image files are decoded by PIL.
* Every source's arrays pass through `_validate_arrays`, where the data enters: images uint8
  (N, H, W[, C]) of one size, labels 1-D whole-number class indices (an (N, 1) column is accepted;
  one-hot or score matrices, strings, booleans, fractions, negatives are refused), one label per
  image, no empty split, labels in [0, classes) where classes = len(class_names) if given, else
  the largest training label + 1 (a test label beyond that is refused). Float labels with whole
  values are accepted as indices, with a note. Any failure is one `DataError` line naming the file.
* Pixels are never clipped: 16-bit PNG/TIFF images are scaled to 8 bits (``v >> 8``, the high byte,
  as PIL itself does for 16-bit RGB); 32-bit integer and floating-point images, and ``.npz`` images
  that are not uint8, are refused with how to convert them (their range is not defined).
* Nothing downstream sees class order: image folders are shuffled (seeded) after reading, and
  `subsample`, `parity_sample`, `split_validation` and the folder hold-out are seeded, stratified
  random samples (every class is represented once the sample has at least one image per class).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgebvit.errors import DataError



@dataclass
class Dataset:
    """A dataset in memory: uint8 images (N, H, W, C) and int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: List[str]
    source: str = ""
    notes: List[str] = field(default_factory=list)

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> str:
        h, w, c = self.input_shape
        text = (
            f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test images, "
            f"{h}x{w}x{c}, {self.num_classes} classes (from {self.source})"
        )
        return text + "".join(f"; note: {n}" for n in self.notes)


# ------------------------------------------------------------------------------------------
# Normalisation (applied in the input pipeline and to parity images; not inside the model)
# ------------------------------------------------------------------------------------------
def normalize(x):
    """uint8 [0, 255] -> float32 [-1, 1], for numpy arrays and TensorFlow tensors alike.

    The one definition of the model's input scale: the tf.data pipeline and the parity images
    export checks with both call it, so the flatbuffer is always fed what the model was trained on.
    """
    if isinstance(x, (np.ndarray, list, tuple, int, float)):
        return (np.asarray(x, np.float32) / 127.5) - 1.0
    import tensorflow as tf

    return (tf.cast(x, tf.float32) / 127.5) - 1.0


# ------------------------------------------------------------------------------------------
# Validation: the one path every loader's arrays take into a Dataset
# ------------------------------------------------------------------------------------------
@dataclass
class _Part:
    """One piece of a split as a loader read it, with the names its messages use."""

    split: str  # "train" or "test"
    x: Any
    y: Any
    x_desc: str  # names the file (and array) the images came from, e.g. "toy.npz x_train"
    y_desc: str


_CONVERT_HINT = (
    "convert them to uint8 first (full-range 16-bit data: (x >> 8).astype(np.uint8); "
    "floats in [0, 1]: np.round(x * 255).astype(np.uint8))"
)


def _check_images(x: Any, desc: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        # Refused, not rescaled: a uint16 array may hold 10-, 12- or 16-bit data and a float array
        # any range, so any guess could be silently wrong.
        raise DataError(f"{desc} must be uint8 images (N, H, W[, C]), got {x.dtype} {x.shape}; {_CONVERT_HINT}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or min(x.shape[1:]) < 1:
        raise DataError(f"{desc} must be uint8 images (N, H, W[, C]), got {x.dtype} {x.shape}")
    return x


def _check_labels(y: Any, desc: str, notes: List[str]) -> np.ndarray:
    """Labels -> 1-D int64 class indices, or a one-line DataError; range is checked by the caller."""
    y = np.asarray(y)
    kind = y.dtype.kind
    if kind in "USO":
        what = "strings" if kind in "US" else "Python objects"
        raise DataError(f"{desc} holds {what} ({y.dtype}); labels must be integer class indices 0..C-1 "
                        "(map names to indices and pass the names as class_names)")
    if kind not in "iuf":
        raise DataError(f"{desc} has dtype {y.dtype}; labels must be integer class indices 0..C-1")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # an (N, 1) column of indices, as keras.datasets returns them
    if y.ndim == 2:
        raise DataError(f"{desc} has shape {y.shape}, one-hot or per-class scores; pass class indices "
                        "of shape (N,) instead, e.g. y.argmax(axis=1)")
    if y.ndim != 1:
        raise DataError(f"{desc} has shape {y.shape}; labels must be a 1-D array of class indices (N,)")
    if kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y)) | (np.abs(y) > 2.0 ** 62)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{desc}: label {float(y[i])} at index {i} is not a whole number; labels must be "
                            "integer class indices 0..C-1")
        if y.size:
            notes.append(f"{desc}: float labels with whole-number values read as class indices")
    elif kind == "u" and y.size and int(y.max()) > 2 ** 62:
        i = int(np.argmax(y))
        raise DataError(f"{desc}: label {int(y[i])} at index {i} is not a class index; labels must be 0..C-1")
    return y.astype(np.int64)


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _validate_arrays(
    name: str, source: str, parts: Sequence[_Part], class_names: Optional[Sequence[str]] = None,
    notes: Sequence[str] = (),
) -> Dataset:
    """The one gate from a loader's arrays to a `Dataset`; every failure is one DataError line.

    Images: uint8 (N, H, W[, C]), one size for every part and split. Labels: see `_check_labels`;
    exactly one per image. Neither split may be empty. Classes: ``len(class_names)`` when given,
    else the largest training label + 1; every label must lie in [0, classes), so a test label
    with no training class is refused rather than silently scored wrong.
    """
    notes = list(notes)
    xs: Dict[str, List[np.ndarray]] = {"train": [], "test": []}
    ys: Dict[str, List[np.ndarray]] = {"train": [], "test": []}
    checked: List[Tuple[_Part, np.ndarray, np.ndarray]] = []
    ref: Optional[Tuple[str, Tuple[int, ...]]] = None
    for part in parts:
        x = _check_images(part.x, part.x_desc)
        y = _check_labels(part.y, part.y_desc, notes)
        if len(x) != len(y):
            raise DataError(f"{part.x_desc} has {len(x)} images but {part.y_desc} has {len(y)} labels; "
                            "every image needs exactly one label")
        if len(x) and ref is None:
            ref = (part.x_desc, x.shape[1:])
        elif len(x) and x.shape[1:] != ref[1]:
            size = "x".join(map(str, x.shape[1:]))
            raise DataError(f"{part.x_desc} images are {size} (HxWxC) but {ref[0]} images are "
                            f"{'x'.join(map(str, ref[1]))}; all images must have one size")
        xs[part.split].append(x)
        ys[part.split].append(y)
        checked.append((part, x, y))
    for split in ("train", "test"):
        if not sum(len(x) for x in xs[split]):
            where = ", ".join(p.x_desc for p in parts if p.split == split) or source
            raise DataError(f"{where} has no {split} images; both splits need at least one image")

    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if not class_names:
            raise DataError(f"{source}: class_names is empty; give one name per class or leave it out")
        n_classes = len(class_names)
    else:
        n_classes = max(int(y.max()) for y in ys["train"] if len(y)) + 1
    for part, _, y in checked:
        if not len(y):
            continue
        if y.min() < 0:
            i = _first(y < 0)
            raise DataError(f"{part.y_desc}: label {int(y[i])} at index {i} is negative; labels must be "
                            f"class indices in [0, {n_classes})")
        if y.max() >= n_classes:
            i = _first(y >= n_classes)
            if class_names is not None:
                why = f"only {n_classes} class names are given"
            else:
                why = (f"training labels go only up to {n_classes - 1}, so class {int(y[i])} has no "
                       "training images; fix the labels or give class_names naming every class")
            raise DataError(f"{part.y_desc}: label {int(y[i])} at index {i} is outside [0, {n_classes}): {why}")
    y_train = np.concatenate(ys["train"])
    y_test = np.concatenate(ys["test"])
    untrained = n_classes - len(np.unique(y_train))
    if untrained:
        notes.append(f"{untrained} of {n_classes} classes have no training images")
    def joined(arrays: List[np.ndarray]) -> np.ndarray:
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    return Dataset(
        name, joined(xs["train"]), y_train, joined(xs["test"]), y_test,
        list(class_names) if class_names is not None else [str(i) for i in range(n_classes)],
        source, notes,
    )


# ------------------------------------------------------------------------------------------
# Seeded, stratified samples: subsets, splits, parity images
# ------------------------------------------------------------------------------------------
# Independent random streams per use, so e.g. changing --max-test-samples leaves the training
# sample alone.
_STREAM_TRAIN, _STREAM_TEST, _STREAM_PARITY, _STREAM_VAL, _STREAM_HOLDOUT, _STREAM_SHUFFLE = range(1, 7)
_STREAM_CALIBRATION = 7


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFF_FFFF_FFFF_FFFF, stream])


def _stratified_pick(y: np.ndarray, n: int, rng: np.random.Generator, *, leave_one: bool = False) -> np.ndarray:
    """Indices of n items of y, in random order, drawn at random within each class.

    Each class's share is proportional to its size (largest remainder), and when n is at least
    the number of classes every class gets at least one. With `leave_one` (holding out a split),
    at least one item of every class stays out of the pick whenever n allows.
    """
    y = np.asarray(y)
    n = int(min(max(n, 0), len(y)))
    if n == 0:
        return np.zeros(0, np.int64)
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    cap = counts - 1 if leave_one and n <= int((counts - 1).sum()) else counts.copy()
    eligible = np.flatnonzero(cap > 0)
    quota = np.zeros(len(counts), np.int64)
    if n < len(eligible):  # too few to cover every class: n distinct classes, one item each
        quota[rng.choice(eligible, size=n, replace=False, p=cap[eligible] / cap[eligible].sum())] = 1
    else:
        quota[eligible] = 1
        rest, room = n - len(eligible), cap - quota
        if rest:
            ideal = rest * room / room.sum()
            share = np.minimum(np.floor(ideal).astype(np.int64), room)
            order = rng.permutation(len(counts))  # ties broken at random
            by_remainder = order[np.argsort(-(ideal - share)[order], kind="stable")]
            share[by_remainder[: rest - int(share.sum())]] += 1
            quota += share
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])  # indices per class
    picked = [rng.choice(members[c], size=int(q), replace=False) for c, q in enumerate(quota) if q]
    return rng.permutation(np.concatenate(picked))


def _limit(value: Optional[int], what: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{what} must be a positive number of images, got {value!r}")
    return int(value)


def subsample(ds: Dataset, *, max_train: Optional[int], max_test: Optional[int], seed: int) -> Dataset:
    """At most `max_train` training and `max_test` test images (None: all), as seeded stratified
    random samples in random order, so a subset covers every class once it is large enough (never
    just the first classes of a class-ordered source). Returns a new Dataset; `ds` is unchanged."""
    notes = list(ds.notes)
    arrays = {}
    for split, limit, stream in (("train", _limit(max_train, "max_train"), _STREAM_TRAIN),
                                 ("test", _limit(max_test, "max_test"), _STREAM_TEST)):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        if limit is not None and limit < len(x):
            idx = _stratified_pick(y, limit, _rng(seed, stream))
            covered, total = len(np.unique(y[idx])), len(np.unique(y))
            notes.append(f"{split} is a random {limit} of {len(x)} images, stratified by class (seed {seed})"
                         + (f", covering {covered} of {total} classes" if covered < total else ""))
            x, y = x[idx], y[idx]
        arrays[split] = (x, y)
    return Dataset(ds.name, *arrays["train"], *arrays["test"], list(ds.class_names), ds.source, notes)


def parity_sample(ds: Dataset, n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """A seeded stratified random sample of min(n, test size) test images (uint8, as loaded) and
    their int64 labels, covering every test class once n allows: export's parity gate then checks
    agreement across all classes, not only the first ones."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"the number of parity images must be 0 or more, got {n!r}")
    idx = _stratified_pick(ds.y_test, int(n), _rng(seed, _STREAM_PARITY))
    return np.ascontiguousarray(ds.x_test[idx], np.uint8), ds.y_test[idx].astype(np.int64)


def calibration_sample(ds: Dataset, n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """A seeded stratified random sample of min(n, train size) *training* images (uint8) and
    labels: the int8 calibration set, disjoint from every test image."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"the number of calibration images must be 0 or more, got {n!r}")
    idx = _stratified_pick(ds.y_train, int(n), _rng(seed, _STREAM_CALIBRATION))
    return np.ascontiguousarray(ds.x_train[idx], np.uint8), ds.y_train[idx].astype(np.int64)


def split_validation(ds: Dataset, fraction: float, seed: int) -> Tuple[Dataset, Tuple[np.ndarray, np.ndarray]]:
    """Hold out a seeded, stratified random `fraction` of the training set for validation; returns
    (train, (x_val, y_val)). Every class keeps at least one training image when it has two."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1), got {fraction}")
    n_val = int(len(ds.x_train) * fraction)
    if n_val == 0:
        return ds, (ds.x_train[:0], ds.y_train[:0])
    val = _stratified_pick(ds.y_train, n_val, _rng(seed, _STREAM_VAL), leave_one=True)
    keep = np.ones(len(ds.x_train), bool)
    keep[val] = False
    rest = Dataset(ds.name, ds.x_train[keep], ds.y_train[keep], ds.x_test, ds.y_test,
                   ds.class_names, ds.source, list(ds.notes))
    return rest, (ds.x_train[val], ds.y_train[val])
