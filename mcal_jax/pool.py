"""The item pool X, resident on the devices as uint8, and the on-device image pipeline.

The pool is uploaded once and replicated on every device of the mesh (70,000 Fashion-MNIST
images are 55 MB, CIFAR-10's 60,000 are 184 MB). Training and scoring then gather their
batches by index on each device: no image crosses the host-device boundary after the
upload, and no batch is copied per step. Normalisation and augmentation are pure jnp
functions, traced into the training and scoring programs.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import DTypeLike

from mcal_jax.data import Dataset


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: caches key on it
class DevicePool:
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

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def replicate(mesh: Mesh, array: np.ndarray) -> jax.Array:
    """Places a host array on every device of ``mesh``, also across hosts.

    ``make_array_from_callback`` lets each process supply the copies for its own devices,
    which ``jax.device_put`` of one host array cannot do under ``jax.distributed``.
    """
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def upload(dataset: Dataset, mesh: Mesh, num_classes: int | None = None) -> DevicePool:
    """Uploads ``dataset`` once; the normalisation statistics use images only, never labels.
    ``num_classes`` (the models' outputs) defaults to the dataset's."""
    images = np.ascontiguousarray(dataset.images, dtype=np.uint8)
    # Per-channel statistics in float64 on the host, one pass, chunked to bound memory.
    channels = images.shape[-1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for start in range(0, len(images), 8192):
        chunk = images[start : start + 8192].reshape(-1, channels).astype(np.float64) / 255.0
        total += chunk.sum(0)
        total_sq += np.square(chunk).sum(0)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return DevicePool(
        images=replicate(mesh, images),
        mean=replicate(mesh, mean.astype(np.float32)),
        std=replicate(mesh, std.astype(np.float32)),
        num_classes=dataset.num_classes if num_classes is None else num_classes,
        name=dataset.name,
        mesh=mesh,
    )


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
