"""Datasets: read real image data from local files into uint8 arrays, then `tf.data` pipelines.

Nothing here downloads. Supported sources (`--data`):

* ``fashion_mnist`` / ``mnist``: the idx files (``*-images-idx3-ubyte[.gz]``) from ``--data-dir``,
  ``$EDGEBVIT_DATA_DIR``, Debian's ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist),
  or the Keras cache (~/.keras/datasets/...). 28x28 images are zero-padded to 32x32.
* ``cifar10`` / ``cifar100``: the standard "python version" batch archives, unpacked
  (``cifar-10-batches-py/``, ``cifar-100-python/``) or as the ``.tar.gz``, from ``--data-dir`` or the
  Keras cache.
* a path to an ``.npz`` with ``x_train, y_train, x_test, y_test`` (uint8 images NHWC or NHW).
* a path to an image folder, one subfolder per class; with ``train/`` and ``test/`` (or ``val/``)
  subfolders those are the splits, else a seeded fraction is held out for testing.

One file for now (~440 lines): the in-memory loaders and the tf.data pipeline that feeds them;
the streaming ImageNet-style input planned next will split the pipeline into its own module.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

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
        return (
            f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test images, "
            f"{h}x{w}x{c}, {self.num_classes} classes (from {self.source})"
        )


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
    arrays = {
        key: read_idx(_require_idx(d, stem, name))
        for key, stem in (
            ("x_train", "train-images-idx3-ubyte"),
            ("y_train", "train-labels-idx1-ubyte"),
            ("x_test", "t10k-images-idx3-ubyte"),
            ("y_test", "t10k-labels-idx1-ubyte"),
        )
    }
    for split in ("train", "test"):
        if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise DataError(f"{d}: {split} images and labels differ in count; re-download the files")
    classes = FASHION_MNIST_CLASSES if name == "fashion_mnist" else [str(i) for i in range(10)]
    return Dataset(
        name=name,
        x_train=pad_to(arrays["x_train"][..., None], image_size),
        y_train=arrays["y_train"].astype(np.int64),
        x_test=pad_to(arrays["x_test"][..., None], image_size),
        y_test=arrays["y_test"].astype(np.int64),
        class_names=list(classes),
        source=str(d),
    )


# ------------------------------------------------------------------------------------------
# CIFAR python batches
# ------------------------------------------------------------------------------------------
def _cifar_layout(name: str) -> Tuple[str, str, List[str], str, str]:
    if name == "cifar10":
        return ("cifar-10-batches-py", "cifar-10-python.tar.gz",
                [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels")
    return ("cifar-100-python", "cifar-100-python.tar.gz", ["train"], "test", "fine_labels")


def _unpickle(blob: bytes, where: str) -> Dict:
    try:
        return pickle.loads(blob, encoding="bytes")
    except Exception as exc:  # noqa: BLE001 (any unpickling failure means a corrupt batch)
        raise DataError(f"cannot read CIFAR batch {where}: {exc}; re-download the archive") from None


def load_cifar(name: str, data_dir: Optional[Path] = None) -> Dataset:
    folder, archive, train_files, test_file, label_key = _cifar_layout(name)
    if data_dir is not None:
        roots = [data_dir]  # explicit: only there (see _find_idx_dir)
    else:
        roots = [Path(os.environ["EDGEBVIT_DATA_DIR"])] if os.environ.get("EDGEBVIT_DATA_DIR") else []
        roots.append(Path("~/.keras/datasets").expanduser())
    blobs: Optional[Dict[str, bytes]] = None
    source = ""
    for root in roots:
        unpacked = root / folder if (root / folder).is_dir() else (root if (root / test_file).is_file() else None)
        if unpacked is not None and (unpacked / test_file).is_file():
            blobs = {}
            for f in [*train_files, test_file]:
                if not (unpacked / f).is_file():
                    raise DataError(f"{unpacked} lacks {f}; re-download {archive}")
                blobs[f] = (unpacked / f).read_bytes()
            source = str(unpacked)
            break
        tgz = root / archive
        if tgz.is_file():
            try:
                with tarfile.open(tgz, "r:gz") as tar:
                    blobs = {}
                    for f in [*train_files, test_file]:
                        member = tar.extractfile(f"{folder}/{f}")
                        if member is None:
                            raise DataError(f"{tgz} lacks {folder}/{f}; re-download it")
                        blobs[f] = member.read()
            except (tarfile.TarError, OSError, EOFError, KeyError) as exc:
                raise DataError(f"cannot read {tgz}: {exc}; re-download it") from None
            source = str(tgz)
            break
    if blobs is None:
        raise DataError(f"{name} not found in {', '.join(map(str, roots))}; {_INSTALL_HINT[name]}")

    def decode(fname: str) -> Tuple[np.ndarray, np.ndarray]:
        batch = _unpickle(blobs[fname], f"{source}:{fname}")
        try:
            x = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            y = np.asarray(batch[label_key.encode()], np.int64)
        except (KeyError, ValueError) as exc:
            raise DataError(f"CIFAR batch {source}:{fname} is malformed ({exc}); re-download it") from None
        return x, y

    xs, ys = zip(*(decode(f) for f in train_files))
    x_test, y_test = decode(test_file)
    n_classes = 10 if name == "cifar10" else 100
    classes = CIFAR10_CLASSES if name == "cifar10" else [str(i) for i in range(n_classes)]
    return Dataset(name, np.concatenate(xs), np.concatenate(ys), x_test, y_test, list(classes), source)


# ------------------------------------------------------------------------------------------
# .npz and image folders
# ------------------------------------------------------------------------------------------
def load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test") if k in z}
            names = [str(s) for s in z["class_names"]] if "class_names" in z else None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path} as .npz: {exc}") from None
    missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays)
    if missing:
        raise DataError(f"{path} lacks arrays {', '.join(sorted(missing))} (need x_train, y_train, x_test, y_test)")
    for k in ("x_train", "x_test"):
        if arrays[k].ndim == 3:
            arrays[k] = arrays[k][..., None]
        if arrays[k].ndim != 4 or arrays[k].dtype != np.uint8:
            raise DataError(f"{path}: {k} must be uint8 images (N, H, W[, C]), got {arrays[k].dtype} {arrays[k].shape}")
    n_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    return Dataset(
        path.stem, arrays["x_train"], arrays["y_train"].astype(np.int64).ravel(),
        arrays["x_test"], arrays["y_test"].astype(np.int64).ravel(),
        names or [str(i) for i in range(n_classes)], str(path),
    )


def _class_dirs(root: Path) -> List[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_image(path: Path, size: int, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: {exc}") from None
    return arr[..., None] if channels == 1 else arr


def _read_class_tree(root: Path, classes: Sequence[str], size: int, channels: int):
    """Read every image under root/<class>/; unreadable files are collected and reported together
    (by path) rather than silently skipped, so a bad download cannot shrink the dataset unnoticed."""
    xs, ys, bad = [], [], []
    for label, cls in enumerate(classes):
        d = root / cls
        if not d.is_dir():
            continue
        for f in sorted(d.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    xs.append(_read_image(f, size, channels))
                except DataError as exc:
                    bad.append((f, exc))
                    continue
                ys.append(label)
    if bad:
        shown = "; ".join(str(p) for p, _ in bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise DataError(f"{len(bad)} corrupt or unreadable image(s) under {root}: {shown} "
                        f"(first error: {bad[0][1]}); fix or remove them")
    return xs, ys


def load_image_folder(
    root: Path, *, image_size: int = 32, channels: int = 3, test_fraction: float = 0.2, seed: int = 0
) -> Dataset:
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; pass an image folder with one subfolder per class")
    split_dirs = {p.name for p in _class_dirs(root)}
    if "train" in split_dirs and ({"test", "val"} & split_dirs):
        train_root, test_root = root / "train", root / ("test" if "test" in split_dirs else "val")
        classes = [p.name for p in _class_dirs(train_root)]
        x_tr, y_tr = _read_class_tree(train_root, classes, image_size, channels)
        x_te, y_te = _read_class_tree(test_root, classes, image_size, channels)
    else:
        classes = [p.name for p in _class_dirs(root)]
        xs, ys = _read_class_tree(root, classes, image_size, channels)
        order = np.random.default_rng(seed).permutation(len(xs))
        n_test = max(1, int(round(len(xs) * test_fraction))) if len(xs) > 1 else 0
        test_idx, train_idx = order[:n_test], order[n_test:]
        x_tr, y_tr = [xs[i] for i in train_idx], [ys[i] for i in train_idx]
        x_te, y_te = [xs[i] for i in test_idx], [ys[i] for i in test_idx]
    if len(classes) < 2:
        raise DataError(f"{root} needs at least two class subfolders, found {len(classes)}")
    if not x_tr or not x_te:
        raise DataError(
            f"{root} has no readable images for {'training' if not x_tr else 'testing'} "
            f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))} files in the class subfolders)"
        )
    return Dataset(
        root.name, np.stack(x_tr), np.asarray(y_tr, np.int64), np.stack(x_te), np.asarray(y_te, np.int64),
        classes, str(root),
    )


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
    """Hold out a seeded `fraction` of the training set for validation; returns (train, (x_val, y_val))."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1), got {fraction}")
    n_val = int(len(ds.x_train) * fraction)
    if n_val == 0:
        return ds, (ds.x_train[:0], ds.y_train[:0])
    order = np.random.default_rng(seed).permutation(len(ds.x_train))
    val, train = order[:n_val], order[n_val:]
    rest = Dataset(ds.name, ds.x_train[train], ds.y_train[train], ds.x_test, ds.y_test,
                   ds.class_names, ds.source, ds.notes)
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
