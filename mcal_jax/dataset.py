"""The pool type ``Dataset`` (uint8 images, int32 labels) and ``DataError``, which loaders raise.

A ``Dataset`` holds the whole pool X that MCAL labels as uint8 NHWC images, in host memory
or memory-mapped from a file, and, when they are known, int32 ground-truth labels, which
play the human annotator in simulation. A pool read from files (``mcal_jax.folder``) also
keeps each item's path, and names its classes when its folders do. Loaders live in
``mcal_jax.data`` (spec strings, files, TFDS), ``mcal_jax.folder`` (image folders),
``mcal_jax.npy_pool`` (memory-mapped ``.npy`` files) and ``mcal_jax.synthetic`` (generated
data).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from mcal_jax import host_images


class DataError(ValueError):
    """Bad input to a dataset loader: the message names the file or dataset and the problem."""


@dataclasses.dataclass(frozen=True, eq=False)  # Arrays: compare by identity.
class Dataset:
    """Images and labels of a pool, validated on construction.

    Attributes:
      images: uint8 [N, H, W, C] (C = 1 for grayscale, so always rank 4); an ``np.memmap``
        for a pool read from ``.npy`` files.
      labels: int32 [N], each in [0, num_classes); None when the pool has no ground truth
        (a flat folder of images: people will label it).
      num_classes: number of classes; 0 when the pool has no ground truth.
      name: where the data came from (the spec string), used in messages.
      paths: each item's file, relative to the folder it was read from; () when the pool
        was not read from image files.
      class_names: the name of each class (``class_names[k]`` is class k); () when the
        classes are only numbered.
    """

    images: np.ndarray
    labels: np.ndarray | None
    num_classes: int
    name: str
    paths: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        images = np.asanyarray(self.images)  # an np.memmap stays one: nothing is read

        def check(ok: bool, problem: str) -> None:
            if not ok:
                raise DataError(f"dataset {self.name!r}: {problem}")

        check(images.dtype == np.uint8, f"images have dtype {images.dtype}, expected uint8")
        check(images.ndim == 4, f"images have shape {images.shape}, expected [N, H, W, C]")
        k = self.num_classes
        check(isinstance(k, int | np.integer), f"num_classes {k!r} is not an int")
        if self.labels is None:
            check(k == 0, f"num_classes {k} without labels: a pool without labels has 0")
        else:
            labels = np.asarray(self.labels)
            check(np.issubdtype(labels.dtype, np.integer), f"labels have dtype {labels.dtype}")
            check(labels.ndim == 1, f"labels have shape {labels.shape}, expected [N]")
            check(len(images) == len(labels), f"{len(images)} images but {len(labels)} labels")
            check(k >= 1, f"num_classes {k!r} is not an int >= 1")
            bad = np.flatnonzero((labels < 0) | (labels >= k))
            if bad.size:
                i = bad[0]
                check(
                    False, f"label {labels[i]} at index {i} is outside [0, {k}) ({bad.size} such)"
                )
            object.__setattr__(self, "labels", labels.astype(np.int32, copy=False))
        paths, names = tuple(self.paths), tuple(self.class_names)
        check(len(paths) in (0, len(images)), f"{len(paths)} paths for {len(images)} images")
        check(len(names) in (0, k), f"{len(names)} class names for {k} classes")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "num_classes", int(k))
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "class_names", names)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        height, width, channels = (int(d) for d in self.images.shape[1:])
        return height, width, channels

    def subset(self, indices: npt.ArrayLike) -> Dataset:
        """The items at ``indices`` (integer indices or a boolean mask), in that order."""
        indices = np.asarray(indices)
        items = np.arange(len(self))[indices]
        return Dataset(
            host_images.gather(self.images, items),  # a memory map's pages read are released
            None if self.labels is None else self.labels[items],
            self.num_classes,
            self.name,
            tuple(self.paths[i] for i in items) if self.paths else (),
            self.class_names,
        )
