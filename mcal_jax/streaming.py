"""Streaming host batches to the devices: sharded placement, and a background producer.

A host-placed pool (`mcal_jax.pool.HostPool`) sends each batch to the devices split over
the mesh's ``data`` axis: device d receives rows [d·b, (d+1)·b) of a global batch of D·b
rows, exactly the share it would have gathered from a replicated pool. Each process
supplies only its own devices' rows (``jax.make_array_from_callback``), so under
``jax.distributed`` no process reads rows that another process's devices take.

:func:`prefetch` runs the reading and the transfers in a background thread a few batches
ahead, so they overlap the devices' work on earlier batches.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from typing import TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mcal_jax.parallel import DATA_AXIS

T = TypeVar("T")

#: Batches a producer keeps ready ahead of the devices.
PREFETCH_DEPTH = 2

#: Streamed batches the host dispatches beyond the last one known finished: each holds its
#: images on the devices until its program has run, so this bounds the device memory.
IN_FLIGHT = 2


def put_sharded(
    mesh: Mesh, shape: tuple[int, ...], dtype: np.dtype, read: Callable[[slice], np.ndarray]
) -> jax.Array:
    """A global array of ``shape`` split over ``mesh``'s ``data`` axis along its first
    dimension; ``read(rows)`` gives the host values of the rows ``rows`` (a slice), called
    once for each of this process's devices."""
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))

    def shard(index: tuple[slice, ...] | None) -> np.ndarray:
        assert index is not None  # a sharded array: every device has its rows
        values = np.asarray(read(index[0]), dtype)
        return values[(slice(None), *index[1:])]

    return jax.make_array_from_callback(shape, sharding, shard)


_END = object()


def prefetch(items: Iterable[T], depth: int = PREFETCH_DEPTH) -> Generator[T, None, None]:
    """``items`` produced in a background thread, at most ``depth`` ahead of the consumer.
    An error in the producer is raised to the consumer; closing the iterator (or dropping
    it) stops the producer."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as error:  # handed to the consumer, raised there
            put((None, error))

    thread = threading.Thread(target=produce, name="mcal_jax-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()
