"""Loaders for the datasets users have, from local files only (nothing downloads).

Supported sources (`--data`):

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

Each loader builds its Dataset through `edgebvit.training.dataset._validate_arrays`.

One file (~470 lines): four loaders, each small, that share the search paths and the hints.
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
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgebvit.errors import DataError
from edgebvit.training.dataset import (_STREAM_HOLDOUT, _STREAM_SHUFFLE, Dataset, _Part, _rng,  # noqa: F401
                                       _stratified_pick, _validate_arrays)

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
