"""Datasets: read real image data from local files into uint8 arrays, then `tf.data` pipelines.

Nothing here downloads. Supported sources (`--data`):

* ``fashion_mnist`` / ``mnist``: the idx files (``*-images-idx3-ubyte[.gz]``) from ``--data-dir``,
  ``$EDGEBVIT_DATA_DIR``, Debian's ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist),
  or the Keras cache (~/.keras/datasets/...). 28x28 images are zero-padded to 32x32.
* ``cifar10`` / ``cifar100``: the standard "python version" batch archives, unpacked
  (``cifar-10-batches-py/``, ``cifar-100-python/``) or as the ``.tar.gz``, from ``--data-dir`` or the
  Keras cache.
* a path to an ``.npz`` with ``x_train, y_train, x_test, y_test`` (uint8 images NHWC or NHW) and
  optionally ``class_names``.
* a path to an image folder, one subfolder per class; with ``train/`` and ``test/`` (or ``val/``)
  subfolders those are the splits, else a seeded, stratified fraction is held out for testing.

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

One file for now: the in-memory loaders and the tf.data pipeline that feeds them; the streaming
ImageNet-style input planned next will split the pipeline into its own module.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgebvit.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}

FASHION_MNIST_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]

_IDX_SEARCH = {
    "fashion_mnist": ["/usr/share/datasets/fashion-mnist", "~/.keras/datasets/fashion-mnist"],
    "mnist": ["/usr/share/datasets/mnist", "~/.keras/datasets/mnist"],
}
_INSTALL_HINT = {
    "fashion_mnist": "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
    "or pass --data-dir DIR holding the four *-idx?-ubyte[.gz] files",
    "mnist": "pass --data-dir DIR holding the four MNIST *-idx?-ubyte[.gz] files",
    "cifar10": "download cifar-10-python.tar.gz from the CIFAR page and pass --data-dir DIR holding it "
    "(or its unpacked cifar-10-batches-py/)",
    "cifar100": "download cifar-100-python.tar.gz from the CIFAR page and pass --data-dir DIR holding it "
    "(or its unpacked cifar-100-python/)",
}
BUILTIN_DATASETS = tuple(_INSTALL_HINT)


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


# ------------------------------------------------------------------------------------------
# idx (MNIST family)
# ------------------------------------------------------------------------------------------
def _open_maybe_gz(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}; re-download or reinstall the file") from None


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format): magic, dims, big-endian, then uint8 data."""
    raw = _open_maybe_gz(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not a uint8 idx file (bad magic number); re-download it")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(
            f"{path} is truncated or corrupt: expected {expected} bytes of data, found {len(raw) - header}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _find_idx_dir(name: str, data_dir: Optional[Path]) -> Path:
    candidates: List[Path] = []
    if data_dir is not None:
        # An explicit --data-dir is the only place looked: silently training on other files
        # than the ones the user named would be worse than an error.
        candidates += [data_dir, data_dir / name.replace("_", "-"), data_dir / name]
    elif os.environ.get("EDGEBVIT_DATA_DIR"):
        env = Path(os.environ["EDGEBVIT_DATA_DIR"])
        candidates += [env / name.replace("_", "-"), env / name, env]
    if data_dir is None:
        candidates += [Path(p).expanduser() for p in _IDX_SEARCH[name]]
    for d in candidates:
        if _idx_file(d, "train-images-idx3-ubyte") is not None:
            return d
    where = ", ".join(str(c) for c in candidates)
    raise DataError(f"{name} not found (looked in {where}); {_INSTALL_HINT[name]}")


def _idx_file(d: Path, stem: str) -> Optional[Path]:
    for suffix in (".gz", ""):
        p = d / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _require_idx(d: Path, stem: str, name: str) -> Path:
    p = _idx_file(d, stem)
    if p is None:
        raise DataError(f"{d} has no {stem}[.gz]; {_INSTALL_HINT[name]}")
    return p


def pad_to(x: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (N, H, W, C) images symmetrically to size x size (28 -> 32 for patch-4 grids)."""
    h, w = x.shape[1:3]
    if h == size and w == size:
        return x
    if h > size or w > size:
        raise DataError(f"images are {h}x{w}, larger than the requested {size}x{size}")
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(x, ((0, 0), (top, size - h - top), (left, size - w - left), (0, 0)))


def load_idx_dataset(name: str, data_dir: Optional[Path] = None, *, image_size: int = 32) -> Dataset:
    d = _find_idx_dir(name, data_dir)
    files = {
        key: _require_idx(d, stem, name)
        for key, stem in (
            ("x_train", "train-images-idx3-ubyte"),
            ("y_train", "train-labels-idx1-ubyte"),
            ("x_test", "t10k-images-idx3-ubyte"),
            ("y_test", "t10k-labels-idx1-ubyte"),
        )
    }
    arrays = {key: read_idx(f) for key, f in files.items()}
    classes = FASHION_MNIST_CLASSES if name == "fashion_mnist" else [str(i) for i in range(10)]
    parts = [_Part(split, arrays[f"x_{split}"], arrays[f"y_{split}"], str(files[f"x_{split}"]),
                   str(files[f"y_{split}"])) for split in ("train", "test")]
    ds = _validate_arrays(name, str(d), parts, classes)
    ds.x_train, ds.x_test = pad_to(ds.x_train, image_size), pad_to(ds.x_test, image_size)
    return ds


# ------------------------------------------------------------------------------------------
# CIFAR python batches
# ------------------------------------------------------------------------------------------
def _cifar_layout(name: str) -> Tuple[str, str, List[str], str, str]:
    if name == "cifar10":
        return ("cifar-10-batches-py", "cifar-10-python.tar.gz",
                [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels")
    return ("cifar-100-python", "cifar-100-python.tar.gz", ["train"], "test", "fine_labels")


def _numpy_reconstruct():
    try:  # numpy >= 2 keeps it in numpy._core; real CIFAR files name numpy.core.multiarray
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that cannot run code: a CIFAR "python version" batch is a pickle, and a plain
    `pickle.load` would call whatever callable the file names (``os.system`` included).

    The batches hold only dicts, lists, bytes, str and ints, which pickle builds without looking up
    any global, and numpy arrays, which need exactly three: ``numpy.core.multiarray._reconstruct``
    (``numpy._core.multiarray`` as numpy 2 spells it), ``numpy.ndarray`` and ``numpy.dtype``. Python
    3 writes bytes at protocol <= 2 as ``_codecs.encode(text, "latin1")``, so that one is admitted
    too, as a wrapper that accepts only str and latin-1. Every other global is refused with a
    one-line DataError before anything is called.
    """

    def __init__(self, blob: bytes, where: str):
        super().__init__(io.BytesIO(blob), encoding="bytes")
        self._where = where
        reconstruct = _numpy_reconstruct()
        self._allowed = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): self._latin1_bytes,
        }

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(f"refusing to unpickle {module}.{name} from {self._where}: not a CIFAR batch "
                            "(only dicts, lists, bytes, numbers and numpy arrays are read); "
                            "use the archive from the CIFAR page") from None

    def _latin1_bytes(self, text: Any, encoding: Any = "utf-8") -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise DataError(f"refusing to unpickle _codecs.encode from {self._where}: not a CIFAR batch "
                            f"(it is admitted only to make latin-1 bytes, here {encoding!r}); "
                            "use the archive from the CIFAR page")
        return text.encode("latin1")


def _unpickle(blob: bytes, where: str) -> Any:
    try:
        return _CifarUnpickler(blob, where).load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 (any unpickling failure means a corrupt batch)
        raise DataError(f"cannot read CIFAR batch {where}: {exc}; re-download the archive") from None


def _cifar_part(split: str, blob: bytes, where: str, label_key: str) -> _Part:
    """The CIFAR-specific checks of one batch (a dict holding uint8 (N, 3072) data and labels);
    what the labels mean is left to `_validate_arrays`, like every other source's."""
    batch = _unpickle(blob, where)
    if not isinstance(batch, dict):
        raise DataError(f"CIFAR batch {where} is malformed (a {type(batch).__name__}, not a dict); re-download it")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(label_key.encode(), batch.get(label_key))
    if data is None or labels is None:
        missing = "data" if data is None else label_key
        raise DataError(f"CIFAR batch {where} is malformed (no {missing!r} entry); re-download it")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"CIFAR batch {where} is malformed (data must be uint8 (N, 3072), got {got}); re-download it")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are channel-planar: R, G, B
    return _Part(split, x, labels, f"{where} data", f"{where} {label_key}")


def load_cifar(name: str, data_dir: Optional[Path] = None) -> Dataset:
    folder, archive, train_files, test_file, label_key = _cifar_layout(name)
    if data_dir is not None:
        roots = [data_dir]  # explicit: only there (see _find_idx_dir)
    else:
        roots = [Path(os.environ["EDGEBVIT_DATA_DIR"])] if os.environ.get("EDGEBVIT_DATA_DIR") else []
        roots.append(Path("~/.keras/datasets").expanduser())
    blobs: Optional[Dict[str, Tuple[str, bytes]]] = None  # batch name -> (where, pickle bytes)
    source = ""
    for root in roots:
        unpacked = root / folder if (root / folder).is_dir() else (root if (root / test_file).is_file() else None)
        if unpacked is not None and (unpacked / test_file).is_file():
            blobs = {}
            for f in [*train_files, test_file]:
                if not (unpacked / f).is_file():
                    raise DataError(f"{unpacked} lacks {f}; re-download {archive}")
                try:
                    blobs[f] = (str(unpacked / f), (unpacked / f).read_bytes())
                except OSError as exc:
                    raise DataError(f"cannot read {unpacked / f}: {exc}") from None
            source = str(unpacked)
            break
        tgz = root / archive
        if tgz.is_file():
            try:
                with tarfile.open(tgz, "r:gz") as tar:
                    blobs = {}
                    for f in [*train_files, test_file]:
                        member = tar.extractfile(f"{folder}/{f}")  # read in memory, never extracted
                        if member is None:
                            raise DataError(f"{tgz} lacks {folder}/{f}; re-download it")
                        blobs[f] = (f"{tgz}:{folder}/{f}", member.read())
            except (tarfile.TarError, OSError, EOFError, KeyError, zlib.error) as exc:
                raise DataError(f"cannot read {tgz}: {exc}; re-download it") from None
            source = str(tgz)
            break
    if blobs is None:
        raise DataError(f"{name} not found in {', '.join(map(str, roots))}; {_INSTALL_HINT[name]}")

    parts = [_cifar_part("train", blobs[f][1], blobs[f][0], label_key) for f in train_files]
    parts.append(_cifar_part("test", blobs[test_file][1], blobs[test_file][0], label_key))
    classes = CIFAR10_CLASSES if name == "cifar10" else [str(i) for i in range(100)]
    return _validate_arrays(name, source, parts, classes)


# ------------------------------------------------------------------------------------------
# .npz and image folders
# ------------------------------------------------------------------------------------------
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: Path) -> Dataset:
    """x_train, y_train, x_test, y_test (and optionally class_names), read with allow_pickle=False
    so no code can run from the file; the arrays' meaning is checked by `_validate_arrays`."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"cannot read {path} as .npz: {exc}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds a single array, not an .npz archive; "
                        "save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
    try:
        with z:
            arrays = {k: z[k] for k in _NPZ_KEYS if k in z}
            names_arr = z["class_names"] if "class_names" in z else None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"cannot read {path} as .npz: {exc}") from None
    missing = set(_NPZ_KEYS) - set(arrays)
    if missing:
        raise DataError(f"{path} lacks arrays {', '.join(sorted(missing))} (need x_train, y_train, x_test, y_test)")
    names = None
    if names_arr is not None:
        if names_arr.ndim != 1:
            raise DataError(f"{path} class_names has shape {names_arr.shape}; give a 1-D array of names")
        names = [s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s) for s in names_arr.tolist()]
    parts = [_Part(split, arrays[f"x_{split}"], arrays[f"y_{split}"], f"{path} x_{split}", f"{path} y_{split}")
             for split in ("train", "test")]
    return _validate_arrays(path.stem, str(path), parts, names)


def _class_dirs(root: Path) -> List[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


def _to_8bit(im, path: Path):
    """PIL image -> one with 8-bit samples, scaling (never clipping) deeper ones.

    16-bit grayscale (PIL modes I;16*, and mode I from a PNG, which older Pillow uses for 16-bit
    grayscale PNGs) keeps the high byte, ``v >> 8``, as PIL itself does for 16-bit RGB(A) PNGs,
    so a 16-bit image reads as its 8-bit version would. 32-bit integer (I) and floating-point (F)
    images have no defined full-scale value and are refused.
    """
    from PIL import Image

    if im.mode in _SIXTEEN_BIT_MODES or (im.mode == "I" and im.format == "PNG"):
        a = np.asarray(im).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DataError(f"{path}: 16-bit pixel values outside 0..65535")
        return Image.fromarray((a >> 8).astype(np.uint8))
    if im.mode in ("I", "F"):
        kind = "32-bit integer" if im.mode == "I" else "floating-point"
        raise DataError(f"{path} has {kind} pixels (PIL mode {im.mode}) with no defined 8-bit scale; "
                        "convert it to an 8- or 16-bit PNG")
    return im


def _read_image(path: Path, size: int, channels: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = _to_8bit(im, path).convert("L" if channels == 1 else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, np.uint8)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 (any decoder failure is this file's problem, named by path)
        raise DataError(f"{path}: {exc or type(exc).__name__}") from None
    return arr[..., None] if channels == 1 else arr


def _read_class_tree(root: Path, classes: Sequence[str], size: int, channels: int):
    """Read every image under root/<class>/; unreadable files are collected and reported together
    (by path) rather than silently skipped, so a bad download cannot shrink the dataset unnoticed.
    A class folder without images is an error naming it (it would be a class with nothing in it);
    a missing one is skipped (the caller decides)."""
    xs, ys, bad, empty = [], [], [], []
    for label, cls in enumerate(classes):
        d = root / cls
        if not d.is_dir():
            continue
        found = 0
        for f in sorted(d.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                found += 1
                try:
                    xs.append(_read_image(f, size, channels))
                except DataError as exc:
                    bad.append((f, exc))
                    continue
                ys.append(label)
        if not found:
            empty.append(d)
    if bad:
        shown = "; ".join(str(p) for p, _ in bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise DataError(f"{len(bad)} corrupt, unreadable or unsupported image(s) under {root}: {shown} "
                        f"(first error: {bad[0][1]}); fix, convert or remove them")
    if empty:
        shown = ", ".join(str(d) for d in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        folders, has = ("class folder", "has") if len(empty) == 1 else ("class folders", "have")
        raise DataError(f"{folders} {shown} {has} no readable images (looked for "
                        f"{', '.join(sorted(IMAGE_SUFFIXES))} files); add images or remove the folder")
    return xs, ys


def _stack(xs: List[np.ndarray], size: int, channels: int) -> np.ndarray:
    return np.stack(xs) if xs else np.zeros((0, size, size, channels), np.uint8)


def load_image_folder(
    root: Path, *, image_size: int = 32, channels: int = 3, test_fraction: float = 0.2, seed: int = 0
) -> Dataset:
    """One subfolder per class (sorted names are the classes); train/ + test/ (or val/) are the
    splits, else a seeded stratified `test_fraction` is held out. Both splits are then shuffled
    (seeded), so nothing downstream sees the class order the files were read in."""
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; pass an image folder with one subfolder per class")
    split_dirs = {p.name for p in _class_dirs(root)}
    notes: List[str] = []
    if "train" in split_dirs and ({"test", "val"} & split_dirs):
        train_root, test_root = root / "train", root / ("test" if "test" in split_dirs else "val")
        classes = [p.name for p in _class_dirs(train_root)]
        if len(classes) < 2:
            raise DataError(f"{train_root} needs at least two class subfolders, found {len(classes)}")
        extra = [p.name for p in _class_dirs(test_root) if p.name not in classes]
        if extra:
            raise DataError(f"{test_root} has class folder(s) {', '.join(extra)} that {train_root} lacks, "
                            "so their images could not be labelled; add them to both splits or remove them")
        x_tr, y_tr = _read_class_tree(train_root, classes, image_size, channels)
        x_te, y_te = _read_class_tree(test_root, classes, image_size, channels)
        untested = [c for c in classes if not (test_root / c).is_dir()]
        if untested:
            notes.append(f"{test_root} has no folder for class(es) {', '.join(untested)}: they are not tested")
        where_tr, where_te = str(train_root), str(test_root)
    else:
        classes = [p.name for p in _class_dirs(root)]
        if len(classes) < 2:
            raise DataError(f"{root} needs at least two class subfolders, found {len(classes)}")
        xs, ys = _read_class_tree(root, classes, image_size, channels)
        n_test = max(1, int(round(len(xs) * test_fraction))) if len(xs) > 1 else 0
        test_idx = _stratified_pick(np.asarray(ys, np.int64), n_test, _rng(seed, _STREAM_HOLDOUT), leave_one=True)
        is_test = np.zeros(len(xs), bool)
        is_test[test_idx] = True
        x_tr, y_tr = [xs[i] for i in np.flatnonzero(~is_test)], [ys[i] for i in np.flatnonzero(~is_test)]
        x_te, y_te = [xs[i] for i in test_idx], [ys[i] for i in test_idx]
        where_tr = where_te = str(root)
    parts = [_Part("train", _stack(x_tr, image_size, channels), np.asarray(y_tr, np.int64), where_tr, where_tr),
             _Part("test", _stack(x_te, image_size, channels), np.asarray(y_te, np.int64), where_te, where_te)]
    ds = _validate_arrays(root.name, str(root), parts, classes, notes)
    rng = _rng(seed, _STREAM_SHUFFLE)
    train_order, test_order = rng.permutation(len(ds.x_train)), rng.permutation(len(ds.x_test))
    ds.x_train, ds.y_train = ds.x_train[train_order], ds.y_train[train_order]
    ds.x_test, ds.y_test = ds.x_test[test_order], ds.y_test[test_order]
    return ds


# ------------------------------------------------------------------------------------------
def load_dataset(
    spec: str, *, data_dir: Optional[str] = None, image_size: int = 32, channels: int = 3, seed: int = 0
) -> Dataset:
    """Load `spec`: a built-in name (fashion_mnist, mnist, cifar10, cifar100), a .npz or a folder."""
    ddir = Path(data_dir).expanduser() if data_dir else None
    if ddir is not None and not ddir.exists():
        raise DataError(f"--data-dir {ddir} does not exist")
    if spec in ("fashion_mnist", "mnist"):
        return load_idx_dataset(spec, ddir, image_size=image_size)
    if spec in ("cifar10", "cifar100"):
        return load_cifar(spec, ddir)
    path = Path(spec).expanduser()
    if path.suffix == ".npz":
        if not path.is_file():
            raise DataError(f"{path} does not exist")
        return load_npz(path)
    if path.is_dir():
        return load_image_folder(path, image_size=image_size, channels=channels, seed=seed)
    raise DataError(
        f"unknown data {spec!r}: use one of {', '.join(BUILTIN_DATASETS)}, an .npz file or an image folder"
    )


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
