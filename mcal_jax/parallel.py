"""Device mesh and multi-host setup for data-parallel training and scoring.

Every parallel program in mcal_jax is a per-device function under ``jax.shard_map`` over a
one-dimensional mesh whose axis is named :data:`DATA_AXIS`, with explicit collectives
(``lax.pmean`` of gradients, ``lax.psum`` of scores): the programming model of
``jax.pmap``, which JAX itself now implements on top of ``shard_map``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh

DATA_AXIS = "data"

_P = ParamSpec("_P")
_R = TypeVar("_R")


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D ``data`` mesh over the first ``num_devices`` devices (default: all, on all hosts)."""
    devices = jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(
                f"num_devices={num_devices} but {len(devices)} devices are visible: "
                f"{[d.platform for d in devices][:4]}..."
            )
        devices = devices[:num_devices]
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices
    )


def maybe_initialize_distributed() -> None:
    """Joins a multi-host job when launched under one; a no-op on a single host.

    ``jax.distributed.initialize()`` discovers the coordinator itself under SLURM, Open MPI
    and Cloud TPU; elsewhere set ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` (see BUILD.md). On CPUs (tests) also set
    ``JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo``.
    """
    under_slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    explicit = "JAX_COORDINATOR_ADDRESS" in os.environ
    if under_slurm or explicit:
        # jax reads JAX_COORDINATOR_ADDRESS itself, but not the process count and id.
        count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
        jax.distributed.initialize(
            num_processes=None if count is None else int(count),
            process_id=None if index is None else int(index),
        )
        logging.info(
            "jax.distributed: process %d of %d, %d local / %d global devices",
            jax.process_index(),
            jax.process_count(),
            jax.local_device_count(),
            jax.device_count(),
        )


def is_main_process() -> bool:
    """Only process 0 writes files in a multi-host job."""
    return jax.process_index() == 0


def main_process_value(value: int) -> int:
    """Process 0's ``value`` on every process of a multi-host job (a collective: every
    process calls it); ``value`` itself in a single process."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def sync(name: str) -> None:
    """Waits until every process of a multi-host job has come here (nothing to wait for
    in a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def host_device() -> jax.Device:
    """This process's first CPU device; JAX has one next to every accelerator."""
    return jax.local_devices(backend="cpu")[0]


def on_host(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Runs ``fn`` with the host CPU as JAX's default device.

    For the power-law fits and the plan: solves over a few hundred numbers, whose many
    small kernels would each wait on a launch on an accelerator (there the all-θ fit took
    5.6 ms, a third of it on the host). Their inputs must be host arrays (numpy), or
    jit would follow them to the device they are committed to.
    """

    @functools.wraps(fn)
    def on_host_device(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with jax.default_device(host_device()):
            return fn(*args, **kwargs)

    return on_host_device
