"""The pool type ``Dataset`` (uint8 images, int32 labels) and ``DataError``, which loaders raise.

A ``Dataset`` holds the whole pool X that MCAL labels in host memory as uint8 NHWC images and
int32 labels; the ground-truth labels play the human annotator in simulation. Loaders live in
``mcal_jax.data`` (spec strings, files, TFDS) and ``mcal_jax.synthetic`` (generated data).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt


class DataError(ValueError):
    """Bad input to a dataset loader: the message names the file or dataset and the problem."""


@dataclasses.dataclass(frozen=True, eq=False)  # Arrays: compare by identity.
class Dataset:
    """Images and labels of a pool, validated on construction.

    Attributes:
      images: uint8 [N, H, W, C] (C = 1 for grayscale, so always rank 4).
      labels: int32 [N], each in [0, num_classes).
      num_classes: number of classes.
      name: where the data came from (the spec string), used in messages.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str

    def __post_init__(self):
        images, labels = np.asarray(self.images), np.asarray(self.labels)

        def check(ok: bool, problem: str) -> None:
            if not ok:
                raise DataError(f"dataset {self.name!r}: {problem}")

        check(images.dtype == np.uint8, f"images have dtype {images.dtype}, expected uint8")
        check(images.ndim == 4, f"images have shape {images.shape}, expected [N, H, W, C]")
        check(np.issubdtype(labels.dtype, np.integer), f"labels have dtype {labels.dtype}")
        check(labels.ndim == 1, f"labels have shape {labels.shape}, expected [N]")
        check(len(images) == len(labels), f"{len(images)} images but {len(labels)} labels")
        k = self.num_classes
        check(isinstance(k, int | np.integer) and k >= 1, f"num_classes {k!r} is not an int >= 1")
        bad = np.flatnonzero((labels < 0) | (labels >= k))
        if bad.size:
            i = bad[0]
            check(False, f"label {labels[i]} at index {i} is outside [0, {k}) ({bad.size} such)")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels.astype(np.int32, copy=False))
        object.__setattr__(self, "num_classes", int(self.num_classes))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        height, width, channels = (int(d) for d in self.images.shape[1:])
        return height, width, channels

    def subset(self, indices: npt.ArrayLike) -> Dataset:
        """The items at ``indices`` (integer indices or a boolean mask), in that order."""
        indices = np.asarray(indices)
        return Dataset(self.images[indices], self.labels[indices], self.num_classes, self.name)
