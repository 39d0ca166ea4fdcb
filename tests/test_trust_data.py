"""Issue #18 for input data (edgebvit/training/data.py): no code runs from a data file, no silent
wrong numbers, one-line errors naming the file, and no class order leaking into any sample.

Every fixture is a small real file written here: CIFAR batches as pickles (as Python 3 writes them
and as Python 2's cPickle wrote the real ones), .npz archives, PNG/TIFF/JPEG images via PIL.
"""
import io
import os
import pickle
import struct
import tarfile
import zlib

import numpy as np
import pytest

import edgebvit  # noqa: F401
from edgebvit.errors import DataError
from edgebvit.training import data  # module access, so each test fails on its own where a name is new
from edgebvit.training.data import Dataset, load_dataset


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg
    return msg


# ------------------------------------------------------------------------------------------
# CIFAR: pickles that run code are refused; real-format batches load
# ------------------------------------------------------------------------------------------
def _py2_obj(v) -> bytes:
    """One value as Python 2's cPickle (protocol 2) writes it: str as BINSTRING, arrays through
    numpy.core.multiarray._reconstruct / numpy.ndarray / numpy.dtype, the form of the real files."""
    if isinstance(v, bytes):
        return (b"U" + bytes([len(v)]) + v) if len(v) < 256 else (b"T" + struct.pack("<I", len(v)) + v)
    if isinstance(v, int):
        return b"J" + struct.pack("<i", v)
    if isinstance(v, list):
        return b"](" + b"".join(_py2_obj(i) for i in v) + b"e"
    assert isinstance(v, np.ndarray) and v.dtype == np.uint8
    shape = b"(" + b"".join(_py2_obj(int(d)) for d in v.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _py2_obj(b"u1") + b"\x89\x88\x87R"
             + b"(K\x03" + _py2_obj(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_obj(b"b") + b"\x87R"
            + b"(K\x01" + shape + dtype + b"\x89" + _py2_obj(v.tobytes()) + b"tb")


def _py2_pickle(batch: dict) -> bytes:
    return b"\x80\x02}(" + b"".join(_py2_obj(k) + _py2_obj(v) for k, v in batch.items()) + b"u."


def _batch(n, seed, label_key=b"labels", n_classes=10):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch", label_key: rng.integers(0, n_classes, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), b"filenames": [b"img.png"] * n}


def _write_cifar10(root, blobs, *, as_tar=False):
    """cifar-10-batches-py/ (or its .tar.gz) holding `blobs`: {batch name: pickle bytes}."""
    root.mkdir(parents=True, exist_ok=True)
    if as_tar:
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name, blob in blobs.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    else:
        (root / "cifar-10-batches-py").mkdir()
        for name, blob in blobs.items():
            (root / "cifar-10-batches-py" / name).write_bytes(blob)


CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class _RunsCommand:
    """Unpickles as a call of `fn(*args)`: what a malicious 'batch' does."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("as_tar", [False, True])
@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_batch_that_runs_a_command_is_refused(tmp_path, as_tar, protocol):
    marker = tmp_path / "MARKER"
    blobs = {f: pickle.dumps(_batch(2, i), protocol=2) for i, f in enumerate(CIFAR10_FILES)}
    evil = _batch(2, 99)
    evil[b"data"] = _RunsCommand(os.system, f"touch {marker}")
    blobs["data_batch_3"] = pickle.dumps(evil, protocol=protocol)
    _write_cifar10(tmp_path / "d", blobs, as_tar=as_tar)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_dir=str(tmp_path / "d"))
    msg = _one_line(err)
    assert not marker.exists()
    assert "refusing to unpickle" in msg and "system from" in msg and "data_batch_3" in msg
    assert "not a CIFAR batch" in msg


@pytest.mark.parametrize("payload", [
    pickle.dumps(_RunsCommand(eval, "1 + 1"), protocol=2),
    pickle.dumps({b"data": _RunsCommand(getattr, "text", "upper")}, protocol=4),
    pickle.dumps({b"data": _RunsCommand(np.ones, 3)}, protocol=2),
    b"c_codecs\nencode\n(X\x01\x00\x00\x00xX\x05\x00\x00\x00rot13tR.",  # the allowed global, misused
], ids=["builtins.eval", "builtins.getattr", "numpy.ones", "codecs-not-latin1"])
def test_cifar_refuses_every_other_global(tmp_path, payload):
    blobs = {f: pickle.dumps(_batch(2, i), protocol=2) for i, f in enumerate(CIFAR10_FILES)}
    blobs["test_batch"] = payload
    _write_cifar10(tmp_path, blobs)
    with pytest.raises(DataError, match=r"refusing to unpickle \S+ from \S+test_batch: not a CIFAR batch"):
        load_dataset("cifar10", data_dir=str(tmp_path))


@pytest.mark.parametrize("writer", ["python2", "python3-protocol2", "python3-protocol4"])
def test_cifar_real_format_batches_still_load(tmp_path, writer):
    batches = {f: _batch(3 if f == "test_batch" else 4, i) for i, f in enumerate(CIFAR10_FILES)}
    dump = {"python2": _py2_pickle,
            "python3-protocol2": lambda b: pickle.dumps(b, protocol=2),
            "python3-protocol4": lambda b: pickle.dumps(b, protocol=4)}[writer]
    _write_cifar10(tmp_path, {f: dump(b) for f, b in batches.items()}, as_tar=True)
    ds = load_dataset("cifar10", data_dir=str(tmp_path))
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    want = np.concatenate([batches[f][b"data"] for f in CIFAR10_FILES[:5]])
    np.testing.assert_array_equal(ds.x_train, want.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert ds.y_train.tolist() == sum((batches[f][b"labels"] for f in CIFAR10_FILES[:5]), [])
    assert ds.y_test.tolist() == batches["test_batch"][b"labels"] and ds.num_classes == 10


def test_cifar100_python2_format_loads(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    train, test = _batch(6, 1, b"fine_labels", 100), _batch(2, 2, b"fine_labels", 100)
    train[b"coarse_labels"] = [0] * 6
    (d / "train").write_bytes(_py2_pickle(train))
    (d / "test").write_bytes(_py2_pickle(test))
    ds = load_dataset("cifar100", data_dir=str(tmp_path))
    assert ds.y_train.tolist() == train[b"fine_labels"] and ds.num_classes == 100


def test_cifar_labels_are_validated_per_file(tmp_path):
    blobs = {f: pickle.dumps(_batch(2, i), protocol=2) for i, f in enumerate(CIFAR10_FILES)}
    bad = _batch(2, 7)
    bad[b"labels"] = [3, 10]  # cifar10 has classes 0..9
    blobs["data_batch_4"] = pickle.dumps(bad, protocol=2)
    _write_cifar10(tmp_path, blobs)
    with pytest.raises(DataError, match=r"data_batch_4 labels: label 10 at index 1 is outside \[0, 10\)"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    bad[b"labels"], bad[b"data"] = [1, 2], bad[b"data"].astype(np.int16)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_4 is malformed \(data must be uint8"):
        load_dataset("cifar10", data_dir=str(tmp_path))


# ------------------------------------------------------------------------------------------
# .npz: one validation path, one-line errors naming the file, no silent wrong numbers
# ------------------------------------------------------------------------------------------
def _npz(path, **override):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.integers(0, 256, (8, 6, 6), dtype=np.uint8), y_train=np.arange(8) % 4,
                  x_test=rng.integers(0, 256, (5, 6, 6), dtype=np.uint8), y_test=np.arange(5) % 4)
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


BAD_NPZ = {
    # the run: 80% of test labels name a class no training image has -> "100.00%" accuracy
    "test-label-beyond-train-classes": (
        dict(y_test=np.array([0, 7, 7, 7, 7])),
        r"y_test: label 7 at index 1 is outside \[0, 4\): training labels go only up to 3"),
    "label-beyond-class-names": (
        dict(y_train=np.array([0, 1, 2, 3, 0, 1, 2, 5]), class_names=np.array(list("abcd"))),
        r"y_train: label 5 at index 7 is outside \[0, 4\): only 4 class names"),
    "negative-label": (dict(y_train=np.array([0, 1, 2, 3, -1, 1, 2, 3])), r"y_train: label -1 at index 4 is negative"),
    "fractional-label": (dict(y_test=np.array([0, 1.5, 2, 3, 0])), r"y_test: label 1.5 at index 1 is not a whole"),
    "nan-label": (dict(y_test=np.array([0, 1, np.nan, 3, 0])), r"y_test: label nan at index 2 is not a whole number"),
    "one-hot-labels": (dict(y_train=np.eye(4)[np.arange(8) % 4]), r"y_train has shape \(8, 4\), one-hot.*argmax"),
    "string-labels": (dict(y_train=np.array(list("abcdabcd"))), r"y_train holds strings .* class_names"),
    "bool-labels": (dict(y_test=np.array([True, False, True, False, True])), r"y_test has dtype bool"),
    "3d-labels": (dict(y_train=np.zeros((8, 2, 2), np.int64)), r"y_train has shape \(8, 2, 2\); labels must be a 1-D"),
    "length-mismatch": (dict(y_train=np.arange(7) % 4), r"x_train has 8 images but \S+ y_train has 7 labels"),
    "empty-test-split": (dict(x_test=np.zeros((0, 6, 6), np.uint8), y_test=np.zeros(0, np.int64)),
                         r"x_test has no test images"),
    "image-size-mismatch": (dict(x_test=np.zeros((5, 7, 6), np.uint8)), r"x_test images are 7x6x1 .* one size"),
    "uint16-images": (dict(x_train=np.full((8, 6, 6), 4000, np.uint16)), r"x_train must be uint8 .* uint16 .* >> 8"),
    "empty-class-names": (dict(class_names=np.array([], dtype="<U1")), r"class_names is empty"),
    "2d-class-names": (dict(class_names=np.array([["a", "b"], ["c", "d"]])), r"class_names has shape \(2, 2\)"),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_npz_bad_arrays_are_one_line_errors_naming_the_file(tmp_path, case):
    override, pattern = BAD_NPZ[case]
    p = _npz(tmp_path / "toy.npz", **override)
    with pytest.raises(DataError, match=pattern) as err:
        load_dataset(str(p))
    assert str(p) in _one_line(err)


def test_npz_that_is_a_single_npy_array_is_an_error(tmp_path):
    p = tmp_path / "x.npz"
    with open(p, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match="single array, not an .npz archive"):
        load_dataset(str(p))


def test_npz_accepted_label_forms(tmp_path):
    # whole-number floats are read as indices, with a note; an (N, 1) column as keras.datasets gives
    p = _npz(tmp_path / "f.npz", y_train=(np.arange(8) % 4).astype(np.float32), y_test=(np.arange(5) % 4)[:, None])
    ds = load_dataset(str(p))
    assert ds.y_train.dtype == np.int64 and ds.y_train.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert ds.y_test.tolist() == [0, 1, 2, 3, 0]
    assert any("float labels" in n for n in ds.notes) and "note: " in ds.describe()
    # class_names given: the class count is theirs, even past the largest label (bytes names decoded)
    p = _npz(tmp_path / "n.npz", class_names=np.array([b"a", b"b", b"c", b"d", b"e"]))
    ds = load_dataset(str(p))
    assert ds.class_names == ["a", "b", "c", "d", "e"] and ds.num_classes == 5
    assert any("1 of 5 classes have no training images" in n for n in ds.notes)


# ------------------------------------------------------------------------------------------
# idx: the labels file is validated like any other source
# ------------------------------------------------------------------------------------------
def _idx(arr):
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def test_idx_labels_out_of_range_and_count_mismatch_name_the_file(tmp_path):
    files = {"train-images-idx3-ubyte": np.zeros((4, 28, 28)), "train-labels-idx1-ubyte": np.array([0, 1, 2, 3]),
             "t10k-images-idx3-ubyte": np.zeros((2, 28, 28)), "t10k-labels-idx1-ubyte": np.array([1, 12])}
    for stem, arr in files.items():
        (tmp_path / stem).write_bytes(_idx(arr))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: label 12 at index 1 is outside \[0, 10\)"):
        load_dataset("mnist", data_dir=str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.array([1, 2, 3])))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte has 2 images but \S+t10k-labels-idx1-ubyte has 3"):
        load_dataset("mnist", data_dir=str(tmp_path))


# ------------------------------------------------------------------------------------------
# Image folders: deep pixels are scaled (never clipped), empty/unknown class folders are errors
# ------------------------------------------------------------------------------------------
def _png16(path, arr):
    """A 16-bit PNG written byte by byte (PIL cannot write 16-bit RGB): gray (H, W) or RGB (H, W, 3)."""
    h, w = arr.shape[:2]
    color_type = 2 if arr.ndim == 3 else 0
    raw = b"".join(b"\0" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _save(path, arr, **kw):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    v16 = np.full((8, 8), 30000, np.uint16)  # 8-bit equivalent: 30000 >> 8 == 117
    _png16(tmp_path / "gray16" / "a.png", v16)
    _save(tmp_path / "tiff16" / "a.tif", v16)
    _png16(tmp_path / "rgb16" / "a.png", np.stack([v16] * 3, -1))
    _save(tmp_path / "gray8" / "a.png", np.full((8, 8), 117, np.uint8))
    with Image.open(tmp_path / "gray16" / "a.png") as im:
        assert im.mode.startswith("I")  # the deep mode that convert("L") would clip to 255
    for channels in (1, 3):
        ds = load_dataset(str(tmp_path), image_size=8, channels=channels, seed=0)
        every = np.concatenate([ds.x_train, ds.x_test])
        assert len(every) == 4 and set(np.unique(every).tolist()) == {117}, ds.class_names


@pytest.mark.parametrize("kind", ["float", "int32"])
def test_images_without_a_defined_8_bit_scale_are_refused(tmp_path, kind):
    for c in ("a", "b"):
        _save(tmp_path / c / "ok.png", np.full((4, 4), 9, np.uint8))
    arr = np.full((4, 4), 0.5, np.float32) if kind == "float" else np.full((4, 4), 70000, np.int32)
    bad = tmp_path / "b" / "deep.tif"
    _save(bad, arr)
    with pytest.raises(DataError, match="floating-point pixels" if kind == "float" else "32-bit integer pixels") as err:
        load_dataset(str(tmp_path), image_size=4)
    assert str(bad) in _one_line(err)


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    _save(tmp_path / "flat" / "cat" / "0.png", np.zeros((4, 4, 3), np.uint8))
    _save(tmp_path / "flat" / "dog" / "0.jpg", np.full((4, 4, 3), 200, np.uint8), quality=95)
    (tmp_path / "flat" / "bird").mkdir()
    (tmp_path / "flat" / "bird" / "README.txt").write_text("not an image")
    with pytest.raises(DataError, match="class folder .*bird has no readable images") as err:
        load_dataset(str(tmp_path / "flat"), image_size=4)
    assert str(tmp_path / "flat" / "bird") in _one_line(err)
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            _save(tmp_path / "split" / split / c / "0.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "split" / "test" / "dog" / "0.png").unlink()
    with pytest.raises(DataError, match=r"class folder \S+test/dog has no readable images"):
        load_dataset(str(tmp_path / "split"), image_size=4)


def test_test_class_unknown_to_train_is_an_error(tmp_path):
    for split, classes in (("train", ("cat", "dog")), ("test", ("cat", "dog", "eel"))):
        for c in classes:
            _save(tmp_path / split / c / "0.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"\S+test has class folder\(s\) eel that \S+train lacks"):
        load_dataset(str(tmp_path), image_size=4)


def _class_folder(root, n_classes, per_class, splits=("train", "test")):
    """Class c's images are all pixel value 10 * c + 1, so every image says which class it is."""
    for split in splits:
        for c in range(n_classes):
            for i in range(per_class[split] if isinstance(per_class, dict) else per_class):
                d = root / split / f"class{c:02d}" if split else root / f"class{c:02d}"
                _save(d / f"{i}.png", np.full((4, 4), 10 * c + 1, np.uint8))


def test_image_folder_is_shuffled_with_its_seed_and_keeps_images_with_labels(tmp_path):
    _class_folder(tmp_path, 10, {"train": 4, "test": 2})
    ds = load_dataset(str(tmp_path), image_size=4, channels=1, seed=0)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        np.testing.assert_array_equal(x[:, 0, 0, 0], 10 * y + 1)  # shuffled together
        assert np.any(np.diff(y) < 0)  # not in class order
    assert len(set(ds.y_train[:10].tolist())) > 3  # the first images are not the first classes
    again = load_dataset(str(tmp_path), image_size=4, channels=1, seed=0)
    other = load_dataset(str(tmp_path), image_size=4, channels=1, seed=1)
    np.testing.assert_array_equal(ds.y_train, again.y_train)
    assert not np.array_equal(ds.y_train, other.y_train)
    assert np.bincount(ds.y_train).tolist() == [4] * 10


def test_image_folder_holdout_is_stratified(tmp_path):
    _class_folder(tmp_path, 3, 5, splits=("",))
    for seed in range(8):
        ds = load_dataset(str(tmp_path), image_size=4, channels=1, seed=seed)  # 20% of 15 -> 3 test images
        assert sorted(ds.y_test.tolist()) == [0, 1, 2], seed
        assert np.bincount(ds.y_train).tolist() == [4, 4, 4]


# ------------------------------------------------------------------------------------------
# subsample, parity_sample, split_validation: seeded, stratified, never the first classes
# ------------------------------------------------------------------------------------------
def _class_ordered(n_classes=10, per_class=20, n_test_per_class=10):
    """A Dataset sorted by class, each image carrying its own id in pixel (0, 0) and more."""
    def split(per, offset):
        y = np.repeat(np.arange(n_classes), per).astype(np.int64)
        ids = np.arange(len(y)) + offset
        x = np.zeros((len(y), 4, 4, 1), np.uint8)
        x[:, 0, 0, 0], x[:, 0, 1, 0], x[:, 1, 0, 0] = ids % 256, ids // 256, y
        return x, y
    x_tr, y_tr = split(per_class, 0)
    x_te, y_te = split(n_test_per_class, 10_000)
    return Dataset("ordered", x_tr, y_tr, x_te, y_te, [f"c{i}" for i in range(n_classes)], "mem")


def _ids(x):
    return x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 1, 0].astype(int)


def test_subsample_is_a_seeded_stratified_sample_of_every_class():
    ds = _class_ordered()
    sub = data.subsample(ds, max_train=30, max_test=10, seed=0)
    assert np.bincount(sub.y_train, minlength=10).tolist() == [3] * 10
    assert np.bincount(sub.y_test, minlength=10).tolist() == [1] * 10
    np.testing.assert_array_equal(sub.x_train[:, 1, 0, 0], sub.y_train)  # images stay with labels
    assert len(set(_ids(sub.x_train))) == 30  # no duplicates
    assert sub.num_classes == 10 and any("stratified" in n for n in sub.notes)
    again = data.subsample(ds, max_train=30, max_test=10, seed=0)
    other = data.subsample(ds, max_train=30, max_test=10, seed=1)
    np.testing.assert_array_equal(_ids(sub.x_train), _ids(again.x_train))
    assert set(_ids(sub.x_train)) != set(_ids(other.x_train))
    assert len(ds.x_train) == 200 and len(ds.x_test) == 100  # the input is left alone
    whole = data.subsample(ds, max_train=None, max_test=1000, seed=0)
    np.testing.assert_array_equal(whole.y_train, ds.y_train)
    assert len(whole.x_test) == 100
    for bad in (0, -3, 2.5, True):
        with pytest.raises(DataError, match="max_train must be a positive number"):
            data.subsample(ds, max_train=bad, max_test=None, seed=0)


def test_subsample_of_imbalanced_classes_is_proportional_and_covers_all():
    y = np.repeat(np.arange(4), [200, 20, 2, 1]).astype(np.int64)
    x = np.zeros((len(y), 2, 2, 1), np.uint8)
    ds = Dataset("imb", x, y, x[:4], y[:4], list("abcd"), "mem")
    counts = np.bincount(data.subsample(ds, max_train=22, max_test=None, seed=3).y_train, minlength=4)
    assert counts.sum() == 22 and counts.min() >= 1 and counts[0] > counts[1] > counts[2] >= counts[3]
    rng = np.random.default_rng(0)
    for _ in range(200):  # the allocator's invariants on random class sizes
        sizes = rng.integers(1, 30, rng.integers(1, 8))
        y = np.repeat(np.arange(len(sizes)), sizes)
        n = int(rng.integers(0, len(y) + 1))
        idx = data._stratified_pick(y, n, np.random.default_rng(1))
        assert len(idx) == n == len(set(idx.tolist()))
        if n >= len(sizes):
            assert len(np.unique(y[idx])) == len(sizes)


def test_parity_sample_covers_every_class():
    ds = _class_ordered()
    x, y = data.parity_sample(ds, 20, seed=0)
    assert x.dtype == np.uint8 and y.dtype == np.int64 and x.shape == (20, 4, 4, 1)
    assert np.bincount(y, minlength=10).tolist() == [2] * 10  # the first 20 would be classes 0 and 1
    np.testing.assert_array_equal(x[:, 1, 0, 0], y)
    np.testing.assert_array_equal(x, data.parity_sample(ds, 20, seed=0)[0])
    assert len(data.parity_sample(ds, 500, seed=0)[0]) == 100
    x0, y0 = data.parity_sample(ds, 0, seed=0)
    assert x0.shape == (0, 4, 4, 1) and y0.shape == (0,)


def test_split_validation_is_stratified_and_keeps_every_class_in_training():
    ds = _class_ordered(n_classes=4, per_class=10)
    rest, (xv, yv) = data.split_validation(ds, 0.2, seed=0)
    assert np.bincount(yv, minlength=4).tolist() == [2] * 4
    assert np.bincount(rest.y_train, minlength=4).tolist() == [8] * 4
    assert not set(_ids(xv)) & set(_ids(rest.x_train))
    tiny = _class_ordered(n_classes=4, per_class=2)  # 8 images, 4 held out: one of each class
    rest, (_, yv) = data.split_validation(tiny, 0.5, seed=5)
    assert sorted(yv.tolist()) == [0, 1, 2, 3] and sorted(rest.y_train.tolist()) == [0, 1, 2, 3]
