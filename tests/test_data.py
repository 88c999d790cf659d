"""Tests of mcal_jax.data and mcal_jax.dataset: IDX, npz, TFDS (mocked), Debian Fashion-MNIST."""

import gzip
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mcal_jax import data, dataset, synthetic
from mcal_jax.data import DataError, Dataset, load_dataset, read_idx, write_idx


def _images(n, h=5, w=4, offset=0):
    """Images whose first pixel is offset + index, so order can be checked."""
    images = np.random.default_rng(offset).integers(0, 256, (n, h, w), dtype=np.uint8)
    images[:, 0, 0] = offset + np.arange(n)
    return images


def _write_idx_dir(directory, train_labels, test_labels, gz_test=True):
    directory.mkdir(exist_ok=True)
    train_images, test_images = _images(len(train_labels)), _images(len(test_labels), offset=100)
    suffix = ".gz" if gz_test else ""
    write_idx(directory / "train-images-idx3-ubyte", train_images)
    write_idx(directory / "train-labels-idx1-ubyte", np.asarray(train_labels, np.uint8))
    write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", test_images)
    write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", np.asarray(test_labels, np.uint8))
    return train_images, test_images


# IDX files.


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(60).reshape(3, 4, 5) - 20).astype(dtype)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


def test_idx_bytes_follow_the_format(tmp_path):
    path = tmp_path / "x"
    write_idx(path, np.array([1, 256], np.int32))
    assert path.read_bytes() == bytes.fromhex("0000 0c01 00000002 00000001 00000100")
    write_idx(path, np.zeros((2, 3), np.uint8))
    assert path.read_bytes()[:12] == bytes.fromhex("0000 0802 00000002 00000003")


def test_idx_dir_joins_train_then_test(tmp_path):
    train_images, test_images = _write_idx_dir(tmp_path / "d", [0, 1, 2, 3, 0, 1], [4, 0, 2])
    spec = f"idx:{tmp_path / 'd'}"
    pool = load_dataset(spec)
    assert pool.name == spec and len(pool) == 9 and pool.image_shape == (5, 4, 1)
    assert pool.images.dtype == np.uint8 and pool.labels.dtype == np.int32
    np.testing.assert_array_equal(pool.images[..., 0], np.concatenate([train_images, test_images]))
    np.testing.assert_array_equal(pool.labels, [0, 1, 2, 3, 0, 1, 4, 0, 2])
    train, test = load_dataset(spec, split="train"), load_dataset(spec, split="test")
    np.testing.assert_array_equal(train.images[:, 0, 0, 0], np.arange(6))
    np.testing.assert_array_equal(test.images[:, 0, 0, 0], 100 + np.arange(3))
    # max + 1 over both label files, so a split without label 4 still has 5 classes.
    assert pool.num_classes == train.num_classes == test.num_classes == 5


# npz files.


@pytest.mark.parametrize("channels", [None, 1, 3])
def test_npz(tmp_path, channels):
    shape = (7, 6, 5) if channels is None else (7, 6, 5, channels)
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    labels = np.array([0, 2, 1, 2, 0, 1, 2], np.int64)
    np.savez(tmp_path / "a.npz", images=images, labels=labels)
    ds = load_dataset(f"npz:{tmp_path / 'a.npz'}")
    assert ds.images.shape == (7, 6, 5, channels or 1) and ds.num_classes == 3
    np.testing.assert_array_equal(ds.images.reshape(shape), images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.labels.dtype == np.int32
    np.savez(tmp_path / "b.npz", images=images, labels=labels, num_classes=np.int64(10))
    assert load_dataset(f"npz:{tmp_path / 'b.npz'}").num_classes == 10


def test_save_npz_round_trip(tmp_path):
    ds = Dataset(_images(4)[..., None], np.array([1, 0, 1, 0]), 7, "x")
    data.save_npz(tmp_path / "ds.npz", ds)
    back = load_dataset(f"npz:{tmp_path / 'ds.npz'}")
    np.testing.assert_array_equal(back.images, ds.images)
    np.testing.assert_array_equal(back.labels, ds.labels)
    assert back.num_classes == 7


# Dataset.


def test_dataset_subset_and_shape():
    ds = Dataset(_images(5)[..., None], np.array([0, 1, 2, 1, 0], np.uint8), 3, "toy")
    sub = ds.subset([4, 1])
    assert len(sub) == 2 and sub.image_shape == (5, 4, 1) and sub.num_classes == 3
    np.testing.assert_array_equal(sub.labels, [0, 1])
    np.testing.assert_array_equal(sub.images, ds.images[[4, 1]])
    assert len(ds.subset(ds.labels == 1)) == 2


def test_a_pool_without_ground_truth_or_with_paths_and_names():
    images = _images(3)[..., None]
    bare = Dataset(images, None, 0, "flat", paths=("a.png", "b.png", "c.png"))
    assert (
        len(bare) == 3 and bare.labels is None and bare.subset([2, 0]).paths == ("c.png", "a.png")
    )
    named = Dataset(images, np.array([1, 0, 1]), 2, "named", class_names=("cat", "dog"))
    assert named.subset([1]).class_names == ("cat", "dog")
    with pytest.raises(DataError, match="num_classes 2 without labels"):
        Dataset(images, None, 2, "x")
    with pytest.raises(DataError, match="2 paths for 3 images"):
        Dataset(images, None, 0, "x", paths=("a", "b"))
    with pytest.raises(DataError, match="1 class names for 2 classes"):
        Dataset(images, np.array([1, 0, 1]), 2, "x", class_names=("cat",))
    with pytest.raises(DataError, match="has no labels; an npz pool needs them"):
        data.save_npz("unused.npz", bare)


def test_data_reexports_the_pool_type_and_the_generator():
    assert data.Dataset is dataset.Dataset and data.DataError is dataset.DataError
    assert data.make_synthetic is synthetic.make_synthetic


# Bad input: every error is a DataError whose message names the file and the problem.


def _corrupt(tmp_path, name, edit):
    path = tmp_path / name
    write_idx(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    path.write_bytes(edit(raw))
    return path


@pytest.mark.parametrize(
    "name, edit, problem",
    [
        ("t", lambda b: b[:-1], "truncated IDX file"),
        ("t", lambda b: b[:6], "header of 3 dimensions is cut off"),
        ("t", lambda b: b[:2], "truncated IDX file"),
        ("t", lambda b: b + b"\0", "corrupt IDX file"),
        ("t", lambda b: b"\x01" + b[1:], "bad magic number 0x01000803"),
        ("t", lambda b: b[:2] + b"\x07" + b[3:], "unknown data type code 0x07"),
        ("t.gz", lambda b: gzip.compress(b)[:-9], "corrupt or truncated gzip"),
        ("t.gz", lambda b: b, "corrupt or truncated gzip"),  # Not gzip at all.
    ],
)
def test_read_idx_rejects_bad_files(tmp_path, name, edit, problem):
    path = _corrupt(tmp_path, name, edit)
    with pytest.raises(DataError, match=problem) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found") as info:
        read_idx(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)


def test_idx_dir_errors(tmp_path):
    d = tmp_path / "d"
    _write_idx_dir(d, [0, 1, 2], [1, 0])
    os.remove(d / "t10k-labels-idx1-ubyte.gz")
    assert len(load_dataset(f"idx:{d}", split="train")) == 3
    with pytest.raises(DataError, match="neither t10k-labels-idx1-ubyte nor .*gz found"):
        load_dataset(f"idx:{d}")
    write_idx(d / "t10k-labels-idx1-ubyte", np.array([1, 0, 1], np.uint8))
    with pytest.raises(DataError, match="holds 2 images but .*t10k-labels-idx1-ubyte holds 3"):
        load_dataset(f"idx:{d}", split="test")
    write_idx(d / "train-images-idx3-ubyte", np.zeros((3, 5, 4), np.float32))
    with pytest.raises(DataError, match="train-images-idx3-ubyte: images are float32"):
        load_dataset(f"idx:{d}", split="train")
    with pytest.raises(DataError, match="IDX directory not found"):
        load_dataset(f"idx:{tmp_path / 'missing'}")


def _npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


_IMAGES = np.zeros((4, 3, 3), np.uint8)
_LABELS = np.array([0, 1, 2, 1])


@pytest.mark.parametrize(
    "arrays, problem",
    [
        ({"images": _IMAGES, "labels": _LABELS[:3]}, "4 images but 3 labels"),
        (
            {"images": _IMAGES, "labels": _LABELS, "num_classes": 2},
            r"label 2 at index 2 .*\[0, 2\)",
        ),
        ({"images": _IMAGES, "labels": _LABELS - 1}, "label -1 at index 0 is outside"),
        ({"images": _IMAGES.astype(np.float32), "labels": _LABELS}, "images have dtype float32"),
        ({"images": _IMAGES[:, 0], "labels": _LABELS}, r"images have shape \(4, 3\), expected"),
        ({"images": _IMAGES[..., None, None], "labels": _LABELS}, r"shape \(4, 3, 3, 1, 1\)"),
        ({"images": _IMAGES, "labels": _LABELS.astype(np.float32)}, "labels have dtype float32"),
        ({"images": _IMAGES, "labels": _LABELS[:, None]}, r"labels have shape \(4, 1\)"),
        ({"images": _IMAGES, "labels": _LABELS, "num_classes": 2.5}, "num_classes must be an int"),
        ({"images": _IMAGES}, r"missing array\(s\) labels"),
        ({"images": _IMAGES, "labels": np.array([0, "a"], object)}, "pickles are refused"),
    ],
)
def test_npz_rejects_bad_arrays(tmp_path, arrays, problem):
    path = _npz(tmp_path, **arrays)
    with pytest.raises(DataError, match=problem) as info:
        load_dataset(f"npz:{path}")
    assert str(path) in str(info.value)


def test_npz_missing_or_not_npz(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_dataset(f"npz:{tmp_path / 'none.npz'}")
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"x.npz: not an npz \(zip\) archive"):
        load_dataset(f"npz:{tmp_path / 'x.npz'}")


@pytest.mark.parametrize(
    "spec, split, problem",
    [
        ("cifar10", "all", "unknown dataset spec 'cifar10'; valid forms: .*tfds:NAME.*npz:PATH"),
        ("csv:a.csv", "all", "unknown dataset spec 'csv:a.csv'"),
        ("idx:", "all", "has nothing after 'idx:'"),
        ("synthetic:", "validation", "unknown split 'validation'.*train, test, all"),
        ("synthetic:n=10,colour=3", "all", "bad item 'colour=3'; expected KEY=VAL"),
        ("synthetic:n=ten", "all", "bad value"),
        ("synthetic:shape=32x32", "all", "bad value"),
        ("synthetic:classes=1", "all", "classes >= 2"),
        ("synthetic:n=6", "test", "too few items"),
    ],
)
def test_bad_specs(spec, split, problem):
    with pytest.raises(DataError, match=problem):
        load_dataset(spec, split=split)


# TFDS, mocked: no network, no TensorFlow, no prepared files.


class _FakeSource:
    """A data source like ``tfds.data_source``'s: records are dicts of numpy values."""

    def __init__(self, info, split):
        self.offset, self.n = {"train": (0, 9), "test": (100, 5)}[split]
        self.shape = info.features["image"].shape
        self.num_classes = info.features["label"].num_classes

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        value = self.offset + i
        image = np.full(self.shape, value, np.uint8)
        return {"image": image, "label": np.int64(value % self.num_classes), "id": str(value)}

    def __getitems__(self, keys):
        return [self[i] for i in keys]


def _fake_as_data_source(builder, split, **kwargs):
    del kwargs
    if isinstance(split, list | tuple):
        return [_FakeSource(builder.info, s) for s in split]
    return _FakeSource(builder.info, split)


@pytest.mark.parametrize(
    "name, shape, num_classes", [("mnist", (28, 28, 1), 10), ("cifar100", (32, 32, 3), 100)]
)
def test_tfds_mocked(monkeypatch, name, shape, num_classes):
    monkeypatch.setattr(data, "_TFDS_CHUNK", 4)  # Several batched reads per split.
    with tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=_fake_as_data_source
    ):
        pool = load_dataset(f"tfds:{name}")
        test = load_dataset(f"tfds:{name}", split="test")
    assert pool.name == f"tfds:{name}" and pool.num_classes == num_classes
    assert pool.images.shape == (14,) + shape and pool.images.dtype == np.uint8
    first_pixels = np.concatenate([np.arange(9), 100 + np.arange(5)])
    np.testing.assert_array_equal(pool.images[:, 0, 0, 0], first_pixels)
    np.testing.assert_array_equal(pool.labels, first_pixels % num_classes)
    np.testing.assert_array_equal(test.images, pool.images[9:])


def test_fashion_mnist_falls_back_to_tfds(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=_fake_as_data_source
    ):
        pool = load_dataset("fashion_mnist")
    assert pool.name == "fashion_mnist" and pool.num_classes == 10
    assert pool.images.shape == (14, 28, 28, 1)


def test_tfds_errors(tmp_path):
    with pytest.raises(DataError, match="tfds:no_such_dataset_xyz: cannot open") as info:
        load_dataset("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))
    assert "\n" not in str(info.value)  # Not TFDS's list of every dataset.
    with pytest.raises(
        DataError, match=r"tfds:mnist: not prepared in .*pip install mcal_jax\[tf\]"
    ):
        load_dataset("tfds:mnist", data_dir=str(tmp_path), download=False)


# The real Fashion-MNIST from the Debian package.


def test_debian_fashion_mnist():
    if not os.path.isdir(data.DEBIAN_FASHION_MNIST_DIR):
        if os.environ.get("MCAL_REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"MCAL_REQUIRE_REAL_DATA=1 but {data.DEBIAN_FASHION_MNIST_DIR} is absent")
        pytest.skip(
            f"{data.DEBIAN_FASHION_MNIST_DIR} absent (apt-get install dataset-fashion-mnist)"
        )
    pool = load_dataset("fashion_mnist")
    assert pool.name == "fashion_mnist" and pool.num_classes == 10
    assert pool.images.shape == (70_000, 28, 28, 1) and pool.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(pool.labels, minlength=10), [7_000] * 10)
    # Train first (its labels begin 9, 0, 0, 3), then test (9, 2, 1, 1).
    np.testing.assert_array_equal(pool.labels[:4], [9, 0, 0, 3])
    np.testing.assert_array_equal(pool.labels[60_000:60_004], [9, 2, 1, 1])
    assert int(pool.images[0].sum()) == 76_247 and int(pool.images[60_000].sum()) == 33_456
    test = load_dataset("fashion_mnist", split="test")
    np.testing.assert_array_equal(test.images, pool.images[60_000:])
