"""edgebvit/data.py: every source on small files made here, in their real on-disk formats."""
import gzip
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest

import edgebvit  # noqa: F401
from edgebvit.training.data import load_dataset, make_tf_dataset, read_idx, split_validation
from edgebvit.errors import DataError


# ------------------------------------------------------------------------------------------
# idx (MNIST family)
# ------------------------------------------------------------------------------------------
def _idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def _write_idx_dir(d, n_train=12, n_test=6, gz=True):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    d.mkdir(parents=True, exist_ok=True)
    for stem, arr in arrays.items():
        raw = _idx_bytes(arr)
        (d / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_pair_loads_and_pads_to_32(tmp_path, gz):
    arrays = _write_idx_dir(tmp_path / "fm", gz=gz)
    ds = load_dataset("fashion_mnist", data_dir=str(tmp_path / "fm"))
    assert ds.x_train.shape == (12, 32, 32, 1) and ds.x_test.shape == (6, 32, 32, 1)
    np.testing.assert_array_equal(ds.x_train[:, 2:30, 2:30, 0], arrays["train-images-idx3-ubyte"])
    assert ds.x_train[:, :2].max() == 0  # zero padding
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.class_names[0] == "t-shirt/top"
    mn = load_dataset("mnist", data_dir=str(tmp_path / "fm"))
    assert mn.class_names == [str(i) for i in range(10)]


def test_idx_truncated_and_bad_magic_are_reported(tmp_path):
    _write_idx_dir(tmp_path, gz=False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(f)
    f.write_bytes(b"\x12\x34\x56\x78" + b"\0" * 10)
    with pytest.raises(DataError, match="bad magic"):
        load_dataset("fashion_mnist", data_dir=str(tmp_path))


def test_idx_missing_names_the_places_searched(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEBVIT_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="not found"):
        load_dataset("mnist", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", data_dir=str(tmp_path / "nope"))


# ------------------------------------------------------------------------------------------
# CIFAR python batches (the pickles are dicts with bytes keys, as the real ones load)
# ------------------------------------------------------------------------------------------
def _cifar_batch(n, label_key, seed):
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"fake", b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
         label_key: rng.integers(0, 10, n).tolist(), b"filenames": [b"x.png"] * n}
    return pickle.dumps(d, protocol=2), d


def _write_cifar10(root, *, as_tar: bool):
    files = {f"data_batch_{i}": _cifar_batch(4, b"labels", i) for i in range(1, 6)}
    files["test_batch"] = _cifar_batch(3, b"labels", 9)
    files["batches.meta"] = (pickle.dumps({b"label_names": [b"airplane"] * 10}), None)
    root.mkdir(parents=True, exist_ok=True)
    if as_tar:
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name, (blob, _) in files.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    else:
        d = root / "cifar-10-batches-py"
        d.mkdir()
        for name, (blob, _) in files.items():
            (d / name).write_bytes(blob)
    return files


@pytest.mark.parametrize("as_tar", [True, False])
def test_cifar10_archive_and_unpacked(tmp_path, as_tar):
    files = _write_cifar10(tmp_path, as_tar=as_tar)
    ds = load_dataset("cifar10", data_dir=str(tmp_path))
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    first = files["data_batch_1"][1]
    # CIFAR rows are channel-planar (1024 R, 1024 G, 1024 B): pixel (0, 1) of channel G
    assert ds.x_train[0, 0, 1, 1] == first[b"data"][0, 1024 + 1]
    assert list(ds.y_train[:4]) == first[b"labels"]
    assert ds.class_names[0] == "airplane" and ds.num_classes == 10


def test_cifar100_and_keras_cache(tmp_path, monkeypatch):
    d = tmp_path / ".keras" / "datasets" / "cifar-100-python"
    d.mkdir(parents=True)
    (d / "train").write_bytes(_cifar_batch(5, b"fine_labels", 1)[0])
    (d / "test").write_bytes(_cifar_batch(2, b"fine_labels", 2)[0])
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("EDGEBVIT_DATA_DIR", raising=False)
    ds = load_dataset("cifar100")
    assert ds.x_train.shape == (5, 32, 32, 3) and ds.num_classes == 100


def test_cifar_corrupt_batch_is_reported(tmp_path):
    _write_cifar10(tmp_path, as_tar=False)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=str(tmp_path))


# ------------------------------------------------------------------------------------------
# Image folders and .npz
# ------------------------------------------------------------------------------------------
def _png(path, value, size=(20, 24)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_image_folder_with_splits_resizes(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for c, value in (("cat", 10), ("dog", 200)):
            for i in range(n):
                _png(tmp_path / split / c / f"{i}.png", value)
    ds = load_dataset(str(tmp_path), image_size=16, channels=3)
    assert ds.class_names == ["cat", "dog"]
    assert ds.x_train.shape == (6, 16, 16, 3) and ds.x_test.shape == (4, 16, 16, 3)
    assert set(ds.x_train[ds.y_train == 1].ravel()) == {200}
    gray = load_dataset(str(tmp_path), image_size=8, channels=1)
    assert gray.x_train.shape == (6, 8, 8, 1)


def test_image_folder_corrupt_images_reported_by_path(tmp_path):
    for c in ("a", "b"):
        for i in range(3):
            _png(tmp_path / c / f"{i}.png", 50)
    bad1 = tmp_path / "a" / "broken.png"
    bad1.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    bad2 = tmp_path / "b" / "empty.jpg"
    bad2.write_bytes(b"")
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path))
    msg = str(err.value)
    assert "2 corrupt" in msg and str(bad1) in msg and str(bad2) in msg
    bad1.unlink()
    bad2.unlink()
    ds = load_dataset(str(tmp_path), seed=1)  # no split dirs: a seeded 20% test split
    assert len(ds.x_train) + len(ds.x_test) == 6 and len(ds.x_test) == 1


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "toy.npz"
    np.savez(p, x_train=rng.integers(0, 256, (8, 16, 16), dtype=np.uint8), y_train=np.arange(8) % 3,
             x_test=rng.integers(0, 256, (4, 16, 16), dtype=np.uint8), y_test=np.arange(4) % 3)
    ds = load_dataset(str(p))
    assert ds.input_shape == (16, 16, 1) and ds.num_classes == 3
    np.savez(p, x_train=np.zeros((2, 4, 4), np.float32), y_train=[0, 1], x_test=np.zeros((1, 4, 4)), y_test=[0])
    with pytest.raises(DataError, match="uint8"):
        load_dataset(str(p))
    np.savez(p, x_train=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="lacks arrays"):
        load_dataset(str(p))
    with pytest.raises(DataError, match="unknown data"):
        load_dataset("imagenet")


# ------------------------------------------------------------------------------------------
# Validation split and the tf.data pipeline
# ------------------------------------------------------------------------------------------
def _toy(n=40):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), (np.arange(n) % 4).astype(np.int64)


def test_split_validation_is_seeded_and_disjoint(tmp_path):
    from edgebvit.training.data import Dataset

    x, y = _toy()
    x[:, 0, 0, 0] = np.arange(40)  # a unique id per image
    ds = Dataset("toy", x, y, x[:4], y[:4], ["a", "b", "c", "d"])
    rest, (xv, yv) = split_validation(ds, 0.25, seed=3)
    assert len(xv) == 10 and len(rest.x_train) == 30
    assert not set(xv[:, 0, 0, 0]) & set(rest.x_train[:, 0, 0, 0])
    again, (xv2, _) = split_validation(ds, 0.25, seed=3)
    np.testing.assert_array_equal(xv, xv2)
    with pytest.raises(DataError):
        split_validation(ds, 1.0, seed=0)


def test_pipeline_normalises_one_hots_and_shuffles_with_seed():
    x, y = _toy()
    first = [next(iter(make_tf_dataset(x, y, batch_size=8, training=True, seed=s, num_classes=4)))
             for s in (7, 7, 8)]
    xb, yb = first[0]
    assert xb.shape == (8, 8, 8, 1) and yb.shape == (8, 4)
    assert float(np.min(xb)) >= -1.0 and float(np.max(xb)) <= 1.0
    np.testing.assert_array_equal(first[0][0].numpy(), first[1][0].numpy())
    assert not np.array_equal(first[0][0].numpy(), first[2][0].numpy())
    ev = list(make_tf_dataset(x, y, batch_size=16, training=False, num_classes=4))
    assert [len(b[0]) for b in ev] == [16, 16, 8]
    np.testing.assert_array_equal(np.argmax(np.concatenate([b[1] for b in ev]), -1), y)
    np.testing.assert_allclose(ev[0][0].numpy(), x[:16] / 127.5 - 1.0, atol=1e-6)
