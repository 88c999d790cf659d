"""Arrays of pool indices (and integer labels), checked the same way wherever they enter."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def shown(values: npt.ArrayLike, limit: int = 10) -> str:
    """The first ``limit`` values for an error message, e.g. ``3, 7, 9, ...``."""
    values = np.asarray(values).ravel()
    return ", ".join(str(v) for v in values[:limit]) + (", ..." if len(values) > limit else "")


def as_int_array(values: object, what: str, size: int | None = None) -> np.ndarray:
    """``values`` (a list or array of integers) as a 1-D int64 array.

    ValueError naming ``what`` when they are not a 1-D array of integers; with ``size``,
    IndexError listing the values outside [0, size).
    """
    array = np.asarray(values)
    if array.size == 0:
        array = array.astype(np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{what}: expected a 1-D array of integers; got shape {array.shape}, "
            f"dtype {array.dtype}"
        )
    array = array.astype(np.int64)
    if size is not None:
        bad = array[(array < 0) | (array >= size)]
        if bad.size:
            raise IndexError(f"{what}: {bad.size} outside [0, {size}): {shown(bad)}")
    return array


def labeled_items(
    indices: npt.ArrayLike, labels: npt.ArrayLike, what: str, *, size: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, labels) checked as a set of distinct items of a pool of ``size`` with one
    label in [0, ``num_classes``) each; errors name ``what`` (``labeled``, ``pseudo``)."""
    indices = as_int_array(indices, f"{what}_indices", size=size)
    labels = as_int_array(labels, f"{what}_labels", size=num_classes)
    if indices.shape != labels.shape:
        raise ValueError(
            f"{what}_indices {indices.shape} and {what}_labels {labels.shape} must be of one length"
        )
    if len(np.unique(indices)) != len(indices):
        raise ValueError(f"{what}_indices has duplicates")
    return indices, labels
