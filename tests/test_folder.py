"""Image folders as pools (mcal_jax.folder, ``folder:DIR``): order, paths, conversion, ground
truth from class subfolders, and errors that name the file."""

import os

import numpy as np
import pytest
from PIL import Image

from mcal_jax import folder
from mcal_jax.data import DataError, load_dataset


def _save(path, array, **options):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **options)


def _gray(value, size=(6, 4)):
    """A grayscale image (height, width) whose pixels are all ``value``, with a mark."""
    image = np.full(size, value, np.uint8)
    image[0, 0] = 255 - value
    return image


def test_flat_folder_in_path_order_with_paths_and_exact_pixels(tmp_path):
    names = ["b.png", "a.PNG", "sub/c.png", "a0.jpeg"]
    for k, name in enumerate(names):
        _save(tmp_path / name, _gray(10 * k + 1), **({"quality": 100} if "jp" in name else {}))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"ignored")
    pool = load_dataset(f"folder:{tmp_path}", image_shape="6x4x1")
    assert pool.paths == ("a.PNG", "a0.jpeg", "b.png", "sub/c.png")  # sorted relative paths
    assert pool.labels is None and pool.num_classes == 0 and pool.class_names == ()
    assert pool.image_shape == (6, 4, 1) and pool.name == f"folder:{tmp_path}"
    np.testing.assert_array_equal(pool.images[0, :, :, 0], _gray(11))  # a.PNG, lossless
    np.testing.assert_array_equal(pool.images[2, :, :, 0], _gray(1))
    np.testing.assert_array_equal(pool.images[3, :, :, 0], _gray(21))
    assert abs(int(pool.images[1, 3, 3, 0]) - 31) <= 2  # the JPEG, nearly exact
    # A subset keeps each item's path.
    assert pool.subset([3, 0]).paths == ("sub/c.png", "a.PNG")


def test_class_subfolders_are_the_ground_truth(tmp_path):
    for name, value in [("dog/1.png", 1), ("cat/x/2.png", 2), ("cat/3.png", 3), ("eel/4.png", 4)]:
        _save(tmp_path / name, _gray(value))
    pool = load_dataset(f"folder:{tmp_path}", image_shape="6x4x1")
    assert pool.class_names == ("cat", "dog", "eel") and pool.num_classes == 3
    assert pool.paths == ("cat/3.png", "cat/x/2.png", "dog/1.png", "eel/4.png")
    np.testing.assert_array_equal(pool.labels, [0, 0, 1, 2])
    # One image at the top level: a flat folder, no ground truth.
    _save(tmp_path / "top.png", _gray(5))
    assert load_dataset(f"folder:{tmp_path}", image_shape="6x4x1").labels is None


def test_channels_and_sizes_are_converted(tmp_path):
    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[..., 0] = 200  # pure red
    _save(tmp_path / "a.png", rgb)
    _save(tmp_path / "b.png", np.full((4, 6), 90, np.uint8))  # gray, half size
    _save(tmp_path / "c.png", np.full((8, 12, 4), 60, np.uint8))  # RGBA
    gray = load_dataset(f"folder:{tmp_path}", image_shape="8x12x1")
    assert gray.images.shape == (3, 8, 12, 1)
    assert np.all(gray.images[0] == round(200 * 0.299))  # Pillow's luminance of red
    assert np.all(gray.images[1] == 90)  # resized: a flat image stays flat
    color = load_dataset(f"folder:{tmp_path}", image_shape="4x6x3")
    assert color.images.shape == (3, 4, 6, 3)
    assert np.all(color.images[0] == [200, 0, 0]) and np.all(color.images[1] == 90)
    assert np.all(color.images[2] == 60)  # alpha dropped


@pytest.mark.parametrize(
    "setup, shape, problem",
    [
        (lambda d: None, "6x4x1", "no images found"),
        (lambda d: (d / "bad.png").write_bytes(b"not a png"), "6x4x1", "bad.png: not a readable"),
        (lambda d: _save(d / "wide.png", _gray(1, (6, 9))), "6x4x1", "wide.png: 9x6 pixels"),
        (lambda d: _save(d / "a.png", _gray(1)), "6x4", "data.image_shape='6x4': expected"),
        (lambda d: _save(d / "a.png", _gray(1)), "6x4x2", "channels 1 or 3"),
        (lambda d: _save(d / "a.png", _gray(1)), "", "set data.image_shape"),
    ],
)
def test_errors_name_the_file_or_the_setting(tmp_path, setup, shape, problem):
    setup(tmp_path)
    with pytest.raises(DataError, match=problem):
        load_dataset(f"folder:{tmp_path}", image_shape=shape)


def test_spec_errors(tmp_path):
    with pytest.raises(DataError, match="image folder not found"):
        load_dataset(f"folder:{tmp_path / 'missing'}", image_shape="6x4x1")
    with pytest.raises(DataError, match="nothing after 'folder:'"):
        load_dataset("folder:", image_shape="6x4x1")
    with pytest.raises(DataError, match="applies to folder:DIR datasets only"):
        load_dataset("synthetic:n=10", image_shape="6x4x1")
    with pytest.raises(DataError, match="split must be 'all'"):
        load_dataset(f"folder:{tmp_path}", split="train", image_shape="6x4x1")
    assert folder.parse_shape("32X32x3") == (32, 32, 3)
