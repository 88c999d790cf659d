"""Synthetic data on the devices, for the benchmarks: the pool, and the flags of its
images that several benchmarks take (defined here once, so that one process, the test
suite, can import every benchmark; None means the benchmark's own default)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from absl import app, flags

from mcal_jax import data, parallel
from mcal_jax import pool as pool_lib

IMAGE_SHAPE = flags.DEFINE_string("image_shape", None, "Synthetic images, HxWxC.")
COMPUTE_DTYPE = flags.DEFINE_enum(
    "compute_dtype",
    None,
    ["bfloat16", "float32"],
    "Compute dtype; default bfloat16 on accelerators, float32 on CPUs.",
)


def parse_image_shape(text: str) -> tuple[int, int, int]:
    """The shape ``"HxWxC"`` of ``--image_shape`` as a tuple, e.g. (32, 32, 3)."""
    try:
        shape = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"--image_shape={text!r}: expected HxWxC with positive integers")
    return shape


def positive_ints(name: str, values: Sequence[str]) -> list[int]:
    """The list flag ``--name`` as positive integers; a UsageError naming it otherwise."""
    try:
        parsed = [int(v) for v in values]
    except ValueError:
        parsed = []
    if not parsed or min(parsed) < 1:
        raise app.UsageError(f"--{name}={','.join(values)}: expected positive integers")
    return parsed


def make_pool(
    num_items: int, image_shape: Sequence[int], num_classes: int, num_devices: int | None = None
) -> tuple[data.Dataset, pool_lib.DevicePool]:
    """A synthetic dataset of ``num_items`` and its pool on the devices."""
    height, width, channels = image_shape
    spec = f"synthetic:n={num_items},shape={height}x{width}x{channels},classes={num_classes}"
    dataset = data.load_dataset(spec)
    return dataset, pool_lib.upload(dataset, parallel.make_mesh(num_devices))


def write_jsonl(path: str, records: Sequence[Mapping[str, object]]) -> None:
    """``records`` to ``path`` (overwritten), one JSON object a line (NaN refused), and
    says so."""
    with open(path, "w") as f:
        for record in records:
            f.write(json.dumps(record, allow_nan=False) + "\n")
    print(f"wrote {len(records)} measurements to {path}")
