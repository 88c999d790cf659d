"""Pools in ``.npy`` files, memory-mapped: read by index, never loaded whole.

A folder DIR named by ``npy:DIR`` holds:

- ``images.npy``: uint8 [N, H, W, C] or [N, H, W] (grayscale), in C order. It is opened
  memory-mapped (``np.load(..., mmap_mode="r")``): loading reads only its header, and
  ``Dataset.images`` is the ``np.memmap``, so a pool may be larger than memory.
- ``labels.npy`` (optional): integers [N], each ≥ 0, the ground truth. Without it the
  pool has no ground truth (``Dataset.labels`` is None): people label it.
- ``classes.json`` (optional, with ``labels.npy`` only): a JSON list of the class names,
  class k being the k-th; it sets the number of classes, which is otherwise the largest
  label + 1.

``save_npy`` writes a ``Dataset`` in this form; ``benchmarks.make_pool`` writes a synthetic
pool of any size without holding it in memory.
"""

from __future__ import annotations

import json
import os

import numpy as np

from mcal_jax.dataset import DataError, Dataset

IMAGES, LABELS, CLASSES = "images.npy", "labels.npy", "classes.json"
_NPY_MAGIC = b"\x93NUMPY"


def load_npy(directory: str) -> Dataset:
    """The pool in ``directory`` (module docstring), its images memory-mapped; DataError
    naming the file and what is wrong with it."""
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: npy pool folder not found")
    images_path = os.path.join(directory, IMAGES)
    if not os.path.isfile(images_path):
        raise DataError(
            f"{images_path}: file not found (an npy pool folder holds {IMAGES}, and "
            f"optionally {LABELS} and {CLASSES})"
        )
    images = _open_npy(images_path, mmap=True)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        got = f"{images.dtype} of shape {list(images.shape)}"
        raise DataError(f"{images_path}: images are {got}, expected uint8 [N, H, W(, C)]")
    if not images.flags.c_contiguous:
        raise DataError(
            f"{images_path}: stored in Fortran order; write it in C order "
            "(np.save of np.ascontiguousarray(images))"
        )
    if len(images) == 0:
        raise DataError(f"{images_path}: holds no images")
    if images.ndim == 3:
        images = images[..., None]  # a view: still memory-mapped
    labels_path, classes_path = (os.path.join(directory, n) for n in (LABELS, CLASSES))
    if not os.path.exists(labels_path):
        if os.path.exists(classes_path):
            raise DataError(
                f"{classes_path}: class names without {LABELS}; a pool without ground truth "
                f"takes its classes from data.classes: remove {CLASSES} or add {LABELS}"
            )
        return Dataset(images, None, 0, f"npy:{directory}")
    labels = _read_labels(labels_path, len(images))
    names = _read_classes(classes_path) if os.path.exists(classes_path) else ()
    num_classes = len(names) if names else int(labels.max()) + 1
    if names and labels.max() >= num_classes:
        i = int(np.argmax(labels >= num_classes))
        raise DataError(
            f"{labels_path}: label {labels[i]} at index {i} is outside [0, {num_classes}) "
            f"of the {num_classes} classes in {classes_path}"
        )
    return Dataset(images, labels, num_classes, f"npy:{directory}", class_names=names)


def save_npy(directory: str | os.PathLike, dataset: Dataset) -> None:
    """Writes ``dataset`` so that ``load_dataset("npy:" + directory)`` reads it back (the
    folder is created; files of these names in it are replaced)."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    np.save(os.path.join(directory, IMAGES), np.ascontiguousarray(dataset.images))
    for name in (LABELS, CLASSES):
        if os.path.exists(os.path.join(directory, name)):
            os.remove(os.path.join(directory, name))
    if dataset.labels is not None:
        np.save(os.path.join(directory, LABELS), dataset.labels)
    if dataset.class_names:
        with open(os.path.join(directory, CLASSES), "w") as f:
            json.dump(list(dataset.class_names), f)


def _open_npy(path: str, *, mmap: bool) -> np.ndarray:
    """The array of the ``.npy`` file ``path``, memory-mapped when ``mmap``; DataError for
    a file that is not one, a truncated one, or one of Python objects (pickles)."""
    with open(path, "rb") as f:
        magic = f.read(len(_NPY_MAGIC))
    if magic != _NPY_MAGIC:
        raise DataError(f"{path}: not a .npy file (no NumPy magic number); write it with np.save")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:  # pickled objects, a corrupt header, a file shorter than its shape
        raise DataError(f"{path}: unreadable .npy file ({e})") from None
    return np.asanyarray(array)


def _read_labels(path: str, num_images: int) -> np.ndarray:
    """The labels in ``path``, read whole (4 to 8 bytes an item)."""
    labels = _open_npy(path, mmap=False)
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
        got = f"{labels.dtype} of shape {list(labels.shape)}"
        raise DataError(f"{path}: labels are {got}, expected integers [N]")
    if len(labels) != num_images:
        raise DataError(f"{path}: {len(labels)} labels for the {num_images} images of {IMAGES}")
    if labels.min() < 0:
        i = int(np.argmax(labels < 0))
        raise DataError(f"{path}: label {labels[i]} at index {i} is negative")
    return labels


def _read_classes(path: str) -> tuple[str, ...]:
    """The class names in ``path``: a JSON list of distinct strings."""
    try:
        with open(path) as f:
            names = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(f'{path}: expected a JSON list of class names, e.g. ["cat", "dog"]')
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{path}: class name(s) listed twice: {', '.join(map(repr, twice))}")
    return tuple(names)
