"""npy:DIR pools (mcal_jax.npy_pool): memory-mapped, read back exactly, refused with the
file and the problem named; benchmarks.make_pool; and the parts of a run that read every
image (the workdir's fingerprint, the upload) giving the same answer on a memory map."""

import hashlib
import json
import os

import numpy as np
import pytest

from benchmarks import make_pool
from mcal_jax import data, parallel
from mcal_jax import pool as pool_lib
from mcal_jax.data import DataError, Dataset, load_dataset
from mcal_jax.run import prepare, workdir
from mcal_jax.synthetic import SyntheticGenerator

SPEC = "synthetic:n=300,shape=12x10x1,classes=3,seed=5"
# dataset_fingerprint(load_dataset(SPEC))["images_sha256"] as workdirs hold it: a change of
# how the images are hashed must not change it.
SPEC_IMAGES_SHA256 = "029c394aacd57de58bcd3bf280f569b26a0e1010039a2462a7d0744e96dbcee5"


def _named(ds):
    return Dataset(ds.images, ds.labels, 3, "x", class_names=("ant", "bee", "cat"))


def test_round_trip_is_memory_mapped_with_labels_and_class_names(tmp_path):
    original = _named(load_dataset(SPEC))
    data.save_npy(tmp_path, original)
    pool = load_dataset(f"npy:{tmp_path}")
    assert isinstance(pool.images, np.memmap)
    np.testing.assert_array_equal(pool.images, original.images)
    np.testing.assert_array_equal(pool.labels, original.labels)
    assert pool.num_classes == 3 and pool.class_names == ("ant", "bee", "cat")
    assert pool.name == f"npy:{tmp_path}"


def test_grayscale_rank_3_and_a_pool_without_ground_truth(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.save(tmp_path / "images.npy", images)
    pool = load_dataset(f"npy:{tmp_path}")
    assert isinstance(pool.images, np.memmap) and pool.images.shape == (2, 3, 4, 1)
    np.testing.assert_array_equal(pool.images[..., 0], images)
    assert pool.labels is None and pool.num_classes == 0 and pool.class_names == ()


def test_without_class_names_the_classes_are_the_largest_label_plus_one(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((3, 2, 2, 3), np.uint8))
    np.save(tmp_path / "labels.npy", np.array([0, 4, 1], np.int64))
    pool = load_dataset(f"npy:{tmp_path}")
    assert pool.num_classes == 5 and pool.class_names == ()
    assert pool.labels.dtype == np.int32


def _bad(tmp_path, images=None, labels=None, classes=None):
    np.save(tmp_path / "images.npy", np.zeros((3, 2, 2), np.uint8) if images is None else images)
    if labels is not None:
        np.save(tmp_path / "labels.npy", labels)
    if classes is not None:
        (tmp_path / "classes.json").write_text(classes)


@pytest.mark.parametrize(
    "files, problem",
    [
        ({"images": np.zeros((3, 2, 2), np.float32)}, r"images.npy: images are float32 of shape"),
        ({"images": np.zeros((3, 2), np.uint8)}, r"images.npy: images are uint8 of shape \[3, 2\]"),
        ({"images": np.zeros((0, 2, 2), np.uint8)}, r"images.npy: holds no images"),
        (
            {"images": np.asfortranarray(np.zeros((3, 2, 2), np.uint8))},
            r"images.npy: stored in Fortran order",
        ),
        ({"labels": np.array([0.0, 1.0, 1.0])}, r"labels.npy: labels are float64 of shape \[3\]"),
        ({"labels": np.array([0, 1])}, r"labels.npy: 2 labels for the 3 images of images.npy"),
        ({"labels": np.array([0, -2, 1])}, r"labels.npy: label -2 at index 1 is negative"),
        (
            {"labels": np.array([0, 1, 2]), "classes": '["a", "b"]'},
            r"labels.npy: label 2 at index 2 is outside \[0, 2\) of the 2 classes in .*classes",
        ),
        (
            {"labels": np.array([0, 1, 1]), "classes": '{"a": 0}'},
            r"classes.json: expected a JSON list of class names",
        ),
        (
            {"labels": np.array([0, 1, 1]), "classes": '["a", 1]'},
            r"classes.json: expected a JSON list of class names",
        ),
        ({"labels": np.array([0, 1, 1]), "classes": "[a"}, r"classes.json: not valid JSON"),
        (
            {"labels": np.array([0, 1, 1]), "classes": '["a", "b", "a"]'},
            r"classes.json: class name\(s\) listed twice: 'a'",
        ),
        ({"classes": '["a", "b"]'}, r"classes.json: class names without labels.npy"),
        # More names than labels need is fine; fewer is the out-of-range case above.
    ],
)
def test_bad_files_are_refused_naming_the_file(tmp_path, files, problem):
    _bad(tmp_path, **files)
    with pytest.raises(DataError, match=problem):
        load_dataset(f"npy:{tmp_path}")


def test_missing_folder_missing_images_and_files_that_are_not_npy(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: npy pool folder not found"):
        load_dataset(f"npy:{tmp_path / 'nowhere'}")
    with pytest.raises(DataError, match=r"images.npy: file not found \(an npy pool folder"):
        load_dataset(f"npy:{tmp_path}")
    (tmp_path / "images.npy").write_bytes(b"PK\x03\x04 a zip, say")
    with pytest.raises(DataError, match=r"images.npy: not a .npy file \(no NumPy magic"):
        load_dataset(f"npy:{tmp_path}")
    np.save(tmp_path / "images.npy", np.array([{"a": 1}], object))
    with pytest.raises(DataError, match=r"images.npy: unreadable .npy file"):
        load_dataset(f"npy:{tmp_path}")
    np.save(tmp_path / "images.npy", np.zeros((100, 4, 4), np.uint8))
    cut = (tmp_path / "images.npy").read_bytes()[:-10]
    (tmp_path / "images.npy").write_bytes(cut)
    with pytest.raises(DataError, match=r"images.npy: unreadable .npy file"):
        load_dataset(f"npy:{tmp_path}")
    np.save(tmp_path / "images.npy", np.zeros((3, 4, 4), np.uint8))
    (tmp_path / "labels.npy").write_text("0\n1\n2\n")
    with pytest.raises(DataError, match=r"labels.npy: not a .npy file"):
        load_dataset(f"npy:{tmp_path}")


def test_spec_forms():
    with pytest.raises(DataError, match=r"has nothing after 'npy:'"):
        load_dataset("npy:")
    with pytest.raises(DataError, match=r"an npy folder holds one pool; split must be 'all'"):
        load_dataset("npy:x", split="train")
    with pytest.raises(DataError, match=r"valid forms: .*npy:DIR"):
        load_dataset("npx:x")


def test_the_fingerprint_hashes_a_memory_map_as_the_same_images_in_memory(tmp_path, monkeypatch):
    in_memory = load_dataset(SPEC)
    whole = hashlib.sha256(np.ascontiguousarray(in_memory.images).data).hexdigest()
    assert whole == SPEC_IMAGES_SHA256
    data.save_npy(tmp_path, in_memory)
    mapped = load_dataset(f"npy:{tmp_path}")
    for chunk_bytes in (64 << 20, 7 * 12 * 10, 1):  # one chunk; 7 items; one item a chunk
        monkeypatch.setattr(workdir, "_HASH_CHUNK_BYTES", chunk_bytes)
        for ds in (in_memory, mapped):
            assert workdir.dataset_fingerprint(ds)["images_sha256"] == SPEC_IMAGES_SHA256


def test_upload_of_a_memory_map_equals_that_of_the_same_images_in_memory(tmp_path):
    in_memory = load_dataset(SPEC)
    data.save_npy(tmp_path, in_memory)
    mesh = parallel.make_mesh()
    a = pool_lib.upload(in_memory, mesh)
    b = pool_lib.upload(load_dataset(f"npy:{tmp_path}"), mesh)
    np.testing.assert_array_equal(np.asarray(b.images), in_memory.images)
    np.testing.assert_array_equal(np.asarray(b.mean), np.asarray(a.mean))
    np.testing.assert_array_equal(np.asarray(b.std), np.asarray(a.std))
    assert b.num_classes == a.num_classes == 3


def test_max_items_copies_only_the_chosen_items(tmp_path):
    from configs import synthetic as synthetic_config

    data.save_npy(tmp_path, load_dataset(SPEC))
    config = synthetic_config.get_config()
    config.data.dataset, config.data.max_items = f"npy:{tmp_path}", 40
    subset, _ = prepare.load_data(config)
    config.data.dataset = SPEC
    expected, _ = prepare.load_data(config)
    assert len(subset) == 40 and not isinstance(subset.images, np.memmap)
    np.testing.assert_array_equal(subset.images, expected.images)
    np.testing.assert_array_equal(subset.labels, expected.labels)


# benchmarks.make_pool


def test_make_pool_writes_the_synthetic_pool_chunk_by_chunk(tmp_path):
    calls = []
    written = make_pool.write_pool(
        str(tmp_path / "a"),
        size=1000,
        shape="6x5x3",
        classes=4,
        seed=2,
        chunk=256,
        progress=lambda items, size: calls.append(items),
    )
    assert calls == [256, 512, 768, 1000]
    files = {n: (tmp_path / "a" / n).read_bytes() for n in ("images.npy", "labels.npy")}
    assert set(os.listdir(tmp_path / "a")) == set(files)
    assert written == sum(len(b) for b in files.values())
    assert len(files["images.npy"]) - 1000 * 6 * 5 * 3 == 128  # the .npy header
    pool = load_dataset(f"npy:{tmp_path / 'a'}")
    expected = load_dataset("synthetic:n=1000,shape=6x5x3,classes=4,seed=2")
    np.testing.assert_array_equal(pool.images, expected.images)
    np.testing.assert_array_equal(pool.labels, expected.labels)
    assert pool.num_classes == 4
    # The same flags, the same bytes; another chunk size too.
    for chunk in (256, 999):
        make_pool.write_pool(
            str(tmp_path / "b"), size=1000, shape="6x5x3", classes=4, seed=2, chunk=chunk,
            overwrite=True,
        )  # fmt: skip
        for name, content in files.items():
            assert (tmp_path / "b" / name).read_bytes() == content
    make_pool.write_pool(str(tmp_path / "c"), size=1000, shape="6x5x3", classes=4, seed=3)
    assert (tmp_path / "c" / "images.npy").read_bytes() != files["images.npy"]


def test_make_pool_refuses_a_non_empty_folder_unless_told(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"folder exists and is not empty; pass --overwrite"):
        make_pool.write_pool(str(tmp_path), size=10, shape="4x4x1")
    (tmp_path / "classes.json").write_text('["stale"]')
    make_pool.write_pool(str(tmp_path), size=10, shape="4x4x1", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["images.npy", "labels.npy", "notes.txt"]
    assert len(load_dataset(f"npy:{tmp_path}")) == 10
    with pytest.raises(DataError, match=r"--chunk=0: must be ≥ 1"):
        make_pool.write_pool(str(tmp_path / "d"), size=10, chunk=0)
    with pytest.raises(DataError, match=r"need n, H, W, C >= 1"):
        make_pool.write_pool(str(tmp_path / "d"), size=0)


def test_the_generator_makes_any_range_of_the_synthetic_pool():
    generator = SyntheticGenerator.from_params("n=5000,shape=8x8x3,classes=4,seed=2")
    pool = load_dataset("synthetic:n=5000,shape=8x8x3,classes=4,seed=2")
    for start, stop in [(0, 5000), (100, 4200), (4095, 4097), (4999, 5000), (3, 3)]:
        np.testing.assert_array_equal(generator.images(start, stop), pool.images[start:stop])
    np.testing.assert_array_equal(generator.labels, pool.labels)
    assert generator.name == pool.name


def test_classes_json_round_trip_keeps_names(tmp_path):
    data.save_npy(tmp_path, _named(load_dataset(SPEC)))
    assert json.loads((tmp_path / "classes.json").read_text()) == ["ant", "bee", "cat"]
    data.save_npy(tmp_path, load_dataset(SPEC))  # unnamed: the old names go
    assert not (tmp_path / "classes.json").exists()
