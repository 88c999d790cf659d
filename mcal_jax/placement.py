"""Where the pool's images live: on every device, or in host memory streamed to the devices.

``data.placement`` chooses:

- ``device``: the pool is uploaded once and replicated on every device
  (`mcal_jax.pool.DevicePool`); training and scoring gather their batches on the device.
- ``host``: the images stay in host memory, or memory-mapped from their file and never
  copied whole (`mcal_jax.pool.HostPool`); each batch is gathered on the host and sent to
  the devices, split over them, by a background thread while the devices work.
- ``auto`` (the default): ``device`` when the pool's bytes fit ``data.device_memory_gb``,
  else ``host``.

Both placements train on the same batches and score the same items with the same programs,
so a run buys the same labels whichever it uses. ``data.device_memory_gb`` is the memory of
one device the pool may take (each device holds a whole replica); unset, half of what JAX
reports the device can allocate (``bytes_limit`` of ``Device.memory_stats()``), leaving the
rest to the models, their optimizer state and activations, or
:data:`DEFAULT_CPU_DEVICE_MEMORY_GB` where JAX reports nothing (CPUs).
"""

from __future__ import annotations

import dataclasses

import jax

PLACEMENTS = ("auto", "device", "host")

#: The default budget where the device reports no memory (a CPU, whose "device memory" is
#: the host's): pools up to 2 GB are replicated, larger ones streamed.
DEFAULT_CPU_DEVICE_MEMORY_GB = 2.0

#: The share of an accelerator's memory the pool may take by default.
DEVICE_MEMORY_FRACTION = 0.5


def default_device_memory_gb(device: jax.Device) -> float:
    """The default ``data.device_memory_gb`` on ``device`` (module docstring)."""
    stats = device.memory_stats() or {}
    limit = stats.get("bytes_limit")
    if not limit:
        return DEFAULT_CPU_DEVICE_MEMORY_GB
    return DEVICE_MEMORY_FRACTION * float(limit) / 1e9


def choose(placement: str, pool_bytes: int, device_memory_gb: float) -> str:
    """``device`` or ``host``: ``placement`` itself unless it is ``auto``, which takes
    ``device`` when ``pool_bytes`` fit ``device_memory_gb`` (in units of 10⁹ bytes)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"data.placement={placement!r}: use one of {PLACEMENTS}")
    if placement != "auto":
        return placement
    return "device" if pool_bytes <= device_memory_gb * 1e9 else "host"


@dataclasses.dataclass(frozen=True)
class PlacementSettings:
    """Where the pool's images live: ``placement`` is ``auto``, ``device`` or ``host``;
    ``device_memory_gb`` the budget ``auto`` compares the pool's bytes with (None: the
    device's default, `default_device_memory_gb`)."""

    placement: str = "auto"
    device_memory_gb: float | None = None


def check(placement: object, device_memory_gb: object, problems: list[str]) -> PlacementSettings:
    """``data.placement`` and ``data.device_memory_gb`` as settings; what is wrong with
    them is appended to ``problems``, naming the field."""
    if placement not in PLACEMENTS:
        problems.append(
            f"data.placement={placement!r}: use one of {PLACEMENTS} (auto: on the devices "
            "when the pool fits data.device_memory_gb, else streamed from the host)"
        )
    budget = device_memory_gb
    if budget is not None and not (isinstance(budget, int | float) and budget > 0):
        problems.append(
            f"data.device_memory_gb={budget}: must be a number of GB > 0 (the memory of one "
            "device the pool may take), or unset for the device's default"
        )
    return PlacementSettings(str(placement), None if budget is None else float(budget))  # type: ignore[arg-type]
