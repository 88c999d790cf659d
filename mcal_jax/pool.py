"""The item pool X as uint8 images, on the devices or on the host, and the on-device image
pipeline.

Where it lives is ``data.placement`` (`mcal_jax.placement`), chosen by :func:`place`:

- `DevicePool`: uploaded once and replicated on every device of the mesh (70,000
  Fashion-MNIST images are 55 MB, CIFAR-10's 60,000 are 184 MB). Training and scoring then
  gather their batches by index on each device: no image crosses the host-device boundary
  after the upload, and no batch is copied per step.
- `HostPool`: the images stay in host memory, or memory-mapped from their file and never
  read whole (`mcal_jax.host_images`); training and scoring stream each batch to the
  devices (`mcal_jax.streaming`). For pools larger than a device's memory.

Normalisation and augmentation are pure jnp functions, traced into the training and
scoring programs, the same for both placements.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import DTypeLike

from mcal_jax import host_images, parallel, placement
from mcal_jax.data import Dataset


class _Images:
    """What both placements say of their ``images`` [N, H, W, C]: N and (H, W, C)."""

    images: jax.Array | np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        height, width, channels = self.images.shape[1:]
        return int(height), int(width), int(channels)


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: caches key on it
class DevicePool(_Images):
    """A dataset's images on the devices, replicated over ``mesh``.

    Labels are deliberately not here: the only labels a round trains on are the ones it
    bought, handed to :func:`mcal_jax.train.train` with the indices they belong to.
    """

    images: jax.Array  # uint8 [N, H, W, C], replicated
    mean: jax.Array  # float32 [C] per-channel mean of the pool, in [0, 1] units
    std: jax.Array  # float32 [C]
    num_classes: int
    name: str
    mesh: Mesh


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: caches key on it
class HostPool(_Images):
    """A dataset's images in host memory or memory-mapped (never copied whole), streamed
    to the devices of ``mesh`` a batch at a time; the statistics are on the devices.

    :meth:`read` is the one place a pool index becomes image bytes, so a pool that holds
    only some rows (one process's share under ``jax.distributed``) needs only to map
    indices there.
    """

    images: np.ndarray  # uint8 [N, H, W, C], in memory or an np.memmap
    mean: jax.Array  # float32 [C], replicated
    std: jax.Array  # float32 [C], replicated
    num_classes: int
    name: str
    mesh: Mesh

    def read(self, indices: np.ndarray) -> np.ndarray:
        """``images[indices]`` in host memory (a memory map's pages are released after)."""
        return host_images.gather(self.images, indices)


Pool = DevicePool | HostPool


def replicate(mesh: Mesh, array: np.ndarray) -> jax.Array:
    """Places a host array on every device of ``mesh``, also across hosts.

    ``make_array_from_callback`` lets each process supply the copies for its own devices,
    which ``jax.device_put`` of one host array cannot do under ``jax.distributed``.
    """
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def pixel_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``images`` in [0, 1] units, as float32,
    from exact integer sums of the pixels and their squares, 32 MB of images at a time (a
    memory map's pages released after each), so memory stays bounded whatever the pool's
    size. Each chunk is summed as rows of pixels (wide, vectorised sums): 400 to 500 MB/s
    on one core, where float64 pixels ran at 80."""
    channels = images.shape[-1]
    per_image = max(1, int(np.prod(images.shape[1:])))
    total = np.zeros(channels, np.uint64)
    total_sq = np.zeros(channels, np.uint64)
    for chunk in host_images.chunks(images, max(1, 2**25 // per_image)):
        rows = chunk.reshape(-1, chunk.shape[2] * channels)
        total += rows.sum(0, dtype=np.uint64).reshape(-1, channels).sum(0)
        squares = np.square(rows, dtype=np.uint32)  # 255² fits
        total_sq += squares.sum(0, dtype=np.uint64).reshape(-1, channels).sum(0)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / (255.0 * count)
    std = np.sqrt(np.maximum(total_sq / (255.0**2 * count) - mean**2, 1e-12))
    return mean.astype(np.float32), std.astype(np.float32)


def upload(dataset: Dataset, mesh: Mesh, num_classes: int | None = None) -> DevicePool:
    """Uploads ``dataset`` once; the normalisation statistics use images only, never labels.
    ``num_classes`` (the models' outputs) defaults to the dataset's."""
    mean, std = pixel_statistics(dataset.images)
    images = replicate(mesh, np.ascontiguousarray(dataset.images, dtype=np.uint8))
    host_images.release(dataset.images, 0, len(dataset))  # the devices hold their copies
    return DevicePool(
        images=images,
        mean=replicate(mesh, mean),
        std=replicate(mesh, std),
        num_classes=dataset.num_classes if num_classes is None else num_classes,
        name=dataset.name,
        mesh=mesh,
    )


def host_pool(dataset: Dataset, mesh: Mesh, num_classes: int | None = None) -> HostPool:
    """``dataset`` kept on the host (a memory-mapped pool stays mapped), with the same
    statistics :func:`upload` computes, on the devices."""
    mean, std = pixel_statistics(dataset.images)
    return HostPool(
        images=dataset.images,
        mean=replicate(mesh, mean),
        std=replicate(mesh, std),
        num_classes=dataset.num_classes if num_classes is None else num_classes,
        name=dataset.name,
        mesh=mesh,
    )


_WHERE = ("device", "host")


def place(
    dataset: Dataset,
    mesh: Mesh,
    where: str = "auto",
    device_memory_gb: float | None = None,
    num_classes: int | None = None,
) -> Pool:
    """``dataset`` on the devices or on the host, as ``where`` (``data.placement``) says;
    ``auto`` puts it on the devices when its bytes fit ``device_memory_gb`` (default:
    :func:`mcal_jax.placement.default_device_memory_gb` of this process's first device of
    the mesh). Under ``jax.distributed`` every process takes process 0's choice (a
    collective), so all run the same programs. Logs the choice."""
    budget = device_memory_gb
    if budget is None:
        # Only a device of this process reports its memory under jax.distributed.
        own = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
        budget = placement.default_device_memory_gb(own[0] if own else jax.local_devices()[0])
    pool_bytes = int(dataset.images.nbytes)
    chosen = placement.choose(where, pool_bytes, budget)
    chosen = _WHERE[parallel.main_process_value(_WHERE.index(chosen))]
    logging.info(
        "pool %s: %d images, %.3f GB, placed on the %s (data.placement=%s, "
        "data.device_memory_gb=%.3g)",
        dataset.name, len(dataset), pool_bytes / 1e9, chosen, where, budget,
    )  # fmt: skip
    if chosen == "device":
        return upload(dataset, mesh, num_classes)
    return host_pool(dataset, mesh, num_classes)


def normalize(
    images: jax.Array, mean: jax.Array, std: jax.Array, dtype: DTypeLike = jnp.float32
) -> jax.Array:
    """uint8 [.., H, W, C] to zero-mean, unit-variance floats in ``dtype``."""
    x = images.astype(jnp.float32) * (1.0 / 255.0)
    return ((x - mean) / std).astype(dtype)


def augment(
    key: jax.Array, images: jax.Array, *, crop_padding: int, horizontal_flip: bool
) -> jax.Array:
    """Random crop with zero padding and optional horizontal flip, a batch at a time.

    Works on the uint8 batch [B, H, W, C] (before normalisation, so padding is black, as
    in the usual CIFAR recipe). Each image gets its own offsets through a vmapped
    ``dynamic_slice``; no host involvement.
    """
    batch, height, width, _ = images.shape
    crop_key, flip_key = jax.random.split(key)
    if crop_padding > 0:
        p = crop_padding
        padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
        offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * p + 1)

        def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
            return jax.lax.dynamic_slice(
                image, (offset[0], offset[1], 0), (height, width, image.shape[-1])
            )

        images = jax.vmap(crop)(padded, offsets)
    if horizontal_flip:
        flip = jax.random.bernoulli(flip_key, 0.5, (batch, 1, 1, 1))
        images = jnp.where(flip, images[:, :, ::-1, :], images)
    return images
