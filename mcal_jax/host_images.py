"""Reading a pool's images in host memory or memory-mapped from a file, resident memory bounded.

A memory-mapped pool (``npy:DIR``, `mcal_jax.npy_pool`) is read through its map, and every
page read is mapped into the process: it counts in the process's resident memory (RSS)
until the process ends or the kernel takes it back. One pass over a 3.9 GB pool would
leave 3.9 GB resident. So every read here releases the pages it went through once their
bytes are copied or used (``madvise(MADV_DONTNEED)``): they stay in the kernel's page
cache, so reading them again costs no disk read, but they no longer count for the process.
An array in memory is read as it is and nothing is released. The reads are vectorised
NumPy indexing; none loops over items in Python.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

import numpy as np


def release(images: np.ndarray, start: int, stop: int) -> None:
    """Drops rows [``start``, ``stop``) of a read-only memory-mapped ``images`` from the
    process's resident memory; a no-op for any other array. The bytes stay readable (the
    next read maps them again, from the page cache)."""
    mapped = _mapping(images)
    if mapped is None or stop <= start:
        return
    buffer, offset = mapped
    row = images.strides[0]
    first = offset + start * row
    last = min(len(buffer), offset + stop * row)
    first -= first % mmap.PAGESIZE  # madvise takes whole pages
    if last > first:
        buffer.madvise(mmap.MADV_DONTNEED, first, last - first)


def gather(images: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``images[indices]`` as a new in-memory array, releasing the mapped pages read."""
    indices = np.asarray(indices)
    batch = np.asarray(images)[indices]
    if indices.size:
        release(images, int(indices.min()), int(indices.max()) + 1)
    return batch


def chunks(images: np.ndarray, rows: int) -> Iterator[np.ndarray]:
    """``images`` in consecutive chunks of ``rows`` rows (the last may be shorter), each a
    view valid until the next is asked for: its mapped pages are released then."""
    for start in range(0, len(images), rows):
        stop = min(len(images), start + rows)
        try:
            yield np.asarray(images[start:stop])
        finally:
            release(images, start, stop)


def _mapping(images: np.ndarray) -> tuple[mmap.mmap, int] | None:
    """(the map, the offset of ``images[0]`` in it) when ``images`` is a C-ordered view of
    a read-only ``np.memmap``, else None. Only such a map is released: its pages hold
    nothing that is not in its file (``MADV_DONTNEED`` on anonymous or copy-on-write
    memory would lose data)."""
    buffer = getattr(images, "_mmap", None)
    if not isinstance(images, np.memmap) or not isinstance(buffer, mmap.mmap):
        return None
    if images.mode != "r" or not images.flags.c_contiguous or buffer.closed:
        return None
    offset = images.ctypes.data - np.frombuffer(buffer, np.uint8).ctypes.data
    if not 0 <= offset <= len(buffer) - images.nbytes:
        return None
    return buffer, offset
