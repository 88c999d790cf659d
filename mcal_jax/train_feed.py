"""What each training step of `mcal_jax.train.Trainer` is fed, for both placements.

A training is a number of passes over B, each in a fresh random order (`StepPlan`). With
a device-placed pool the devices draw each pass's order themselves and gather every batch
from their replica (`device_feed`). With a host-placed pool the host draws the same order
from the same random numbers, reads each step's global batch (`step_items`: the items the
devices would have gathered, device after device) and sends it split over the devices
from a background thread a few steps ahead (`streamed_feed`). Either way every step
trains on the same items with the same augmentation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Iterator
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from mcal_jax import parallel, streaming
from mcal_jax.parallel import DATA_AXIS
from mcal_jax.pool import HostPool, replicate


class Trainer(Protocol):
    """What the feeds read of a `mcal_jax.train.Trainer`."""

    mesh: Any  # jax.sharding.Mesh
    pool: Any  # DevicePool or HostPool
    config: Any  # TrainConfig
    num_devices: int
    epoch_order: Any  # `epoch_order`, jitted
    uniform_draws: Any  # `jax.random.uniform`, jitted


P = PartitionSpec


Feed = Callable[[], Generator[tuple, None, None]]  # a training's step arguments, step by step


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """A training's steps, pass by pass, and the keys of its random draws: from ``key``,
    fold 0 initialises, 1 augments, 2 orders the passes over B, 3 the pseudo-labeled items."""

    key: jax.Array
    steps_per_pass: int  # ⌈|B| / batch⌉
    total_steps: int

    @property
    def num_passes(self) -> int:
        return -(-self.total_steps // self.steps_per_pass)

    def steps_in_pass(self, index: int) -> int:
        """Steps of pass ``index``: whole passes, the last one cut at the step count."""
        return min(self.steps_per_pass, self.total_steps - index * self.steps_per_pass)

    def order_key(self, index: int) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(self.key, 2), index)

    @property
    def pseudo_key(self) -> jax.Array:
        return jax.random.fold_in(self.key, 3)


def step_items(
    step: int,
    in_pass: int,
    order: np.ndarray,
    num_devices: int,
    batch_size: int,
    pseudo: tuple[np.ndarray, int] | None = None,
) -> np.ndarray:
    """The pool items of optimizer step ``step`` (the ``in_pass``-th of its pass over B,
    whose items are ``order``), device after device: each device's share of B's global
    batch, then with ``pseudo`` = (the pseudo-labeled items in their order, the ratio) its
    share of the pseudo-labeled batch. These are the items `Trainer._per_device_step`
    gathers on the devices, in that order."""
    local = batch_size // num_devices
    labeled = order[(in_pass * batch_size + np.arange(batch_size)) % len(order)]
    labeled = labeled.reshape(num_devices, local)
    if pseudo is None:
        return labeled.reshape(-1)
    pseudo_order, ratio = pseudo
    extra = (step * ratio * batch_size + np.arange(ratio * batch_size)) % len(pseudo_order)
    shares = pseudo_order[extra].reshape(num_devices, ratio * local)
    return np.concatenate([labeled, shares], axis=1).reshape(-1)


def epoch_order(labeled_mask: jax.Array, key: jax.Array) -> jax.Array:
    """B in a fresh random order, the unlabeled items after it (the same on every device)."""
    keys = jax.random.uniform(key, labeled_mask.shape)
    return jnp.argsort(jnp.where(labeled_mask, keys, 2.0)).astype(jnp.int32)


def device_feed(
    trainer: Trainer, plan: StepPlan, mask: np.ndarray, pool_labels: np.ndarray,
    pseudo: tuple[np.ndarray, np.ndarray] | None, total: jax.Array, step_key: jax.Array,
) -> tuple[tuple, Feed]:  # fmt: skip
    """(example arguments to compile with, the step arguments step by step) for a
    device pool: the pool and labels, each pass's order of B drawn on the device."""
    pool = trainer.pool
    labeled_mask = replicate(trainer.mesh, mask)
    data = (pool.images, replicate(trainer.mesh, pool_labels), pool.mean, pool.std)
    count = replicate(trainer.mesh, np.asarray(mask.sum(), np.int32))
    extra: tuple = ()  # (the pseudo-labeled items in a random order, their count)
    if pseudo is not None:
        pseudo_mask = replicate(trainer.mesh, np.isin(np.arange(len(pool)), pseudo[0]))
        pseudo_order = trainer.epoch_order(pseudo_mask, plan.pseudo_key)
        extra = ((pseudo_order, replicate(trainer.mesh, np.asarray(len(pseudo[0]), np.int32))),)
    replicated = NamedSharding(trainer.mesh, P())
    order_shape = jax.ShapeDtypeStruct((len(pool),), jnp.int32, sharding=replicated)

    def inputs() -> Generator[tuple, None, None]:
        for index in range(plan.num_passes):
            order = trainer.epoch_order(labeled_mask, plan.order_key(index))
            for _ in range(plan.steps_in_pass(index)):
                yield (data, order, count, total, step_key, *extra)

    return (data, order_shape, count, total, step_key, *extra), inputs


def streamed_feed(
    trainer: Trainer, plan: StepPlan, labeled: np.ndarray, pool_labels: np.ndarray,
    pseudo: tuple[np.ndarray, np.ndarray] | None, total: jax.Array, step_key: jax.Array,
) -> tuple[tuple, Feed]:  # fmt: skip
    """(example arguments to compile with, the step arguments step by step) for a
    host pool: each step's images and labels (B's items, then the pseudo-labeled
    ones), read on the host and sent split over the devices by a background thread."""
    pool = trainer.pool
    assert isinstance(pool, HostPool)
    config = trainer.config
    ratio = config.unlabeled_ratio if pseudo is not None else 0
    rows = config.batch_size * (1 + ratio)
    shape = (rows, *pool.image_shape)
    split = NamedSharding(trainer.mesh, P(DATA_AXIS))
    example = (
        jax.ShapeDtypeStruct(shape, jnp.uint8, sharding=split),
        jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=split),
        pool.mean, pool.std, total, step_key,
    )  # fmt: skip

    def put(items: np.ndarray) -> tuple:
        images = streaming.put_sharded(
            trainer.mesh, shape, np.dtype(np.uint8), lambda part: pool.read(items[part])
        )
        labels = streaming.put_sharded(
            trainer.mesh, (rows,), np.dtype(np.int32), lambda part: pool_labels[items[part]]
        )
        return images, labels, pool.mean, pool.std, total, step_key

    def batches() -> Iterator[tuple]:
        extra = None
        if pseudo is not None:
            extra = (host_order(trainer, np.sort(pseudo[0]), plan.pseudo_key), ratio)
        for index in range(plan.num_passes):
            order = host_order(trainer, np.sort(labeled), plan.order_key(index))
            for in_pass in range(plan.steps_in_pass(index)):
                step = index * plan.steps_per_pass + in_pass
                yield put(
                    step_items(step, in_pass, order, trainer.num_devices, config.batch_size, extra)
                )

    return example, lambda: streaming.prefetch(batches())


def host_order(trainer: Trainer, items: np.ndarray, key: jax.Array) -> np.ndarray:
    """The sorted ``items`` in the random order `epoch_order` puts them in with
    ``key``: the same uniform numbers, drawn on the host's CPU, sorted stably."""
    host_key = jax.device_put(key, parallel.host_device())
    draws = np.asarray(trainer.uniform_draws(host_key, (len(trainer.pool),)))
    return items[np.argsort(draws[items], kind="stable")]
