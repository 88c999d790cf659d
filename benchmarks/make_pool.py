r"""A synthetic pool of any size, written as an ``npy:DIR`` pool without holding it in memory.

    python -m benchmarks.make_pool --out=/tmp/pools/1280000 --size=1280000 --shape=32x32x3

writes ``images.npy`` (uint8 [N, H, W, C]) and ``labels.npy`` (int32 [N]) into ``--out``,
``--chunk`` items at a time: only one chunk's images are in memory (and the labels, 4 bytes
an item). The items are those of ``synthetic:n=N,shape=...,classes=...,seed=...``
(``mcal_jax.synthetic``, a learnable pool), byte for byte, so the same flags give the same
files whatever ``--chunk`` is. ``images.npy`` is written under a temporary name and renamed
when complete. An existing non-empty ``--out`` is refused unless ``--overwrite``, which
replaces the pool's files there and leaves other files alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np
from absl import app, flags

from mcal_jax.dataset import DataError
from mcal_jax.npy_pool import CLASSES, IMAGES, LABELS
from mcal_jax.synthetic import SyntheticGenerator

# "out" and "seed" are flags of other benchmarks too (another meaning for "out");
# allow_override lets one process (the test suite) import them all.
_OUT = flags.DEFINE_string("out", None, "Folder of the pool (npy:DIR).", allow_override=True)
_SIZE = flags.DEFINE_integer("size", 70_000, "Items in the pool.")
_SHAPE = flags.DEFINE_string("shape", "32x32x3", "Image shape, HxWxC.")
_CLASSES = flags.DEFINE_integer("classes", 10, "Classes.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic pool.", allow_override=True)
_CHUNK = flags.DEFINE_integer("chunk", 65_536, "Items generated and written at a time.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the pool in a non-empty --out.")


def write_pool(
    out: str,
    *,
    size: int,
    shape: str = "32x32x3",
    classes: int = 10,
    seed: int = 0,
    chunk: int = 65_536,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Writes the pool into ``out`` and returns the bytes written; ``progress(items,
    bytes)`` is called after each chunk. DataError for bad values or a non-empty ``out``
    without ``overwrite``."""
    if chunk < 1:
        raise DataError(f"--chunk={chunk}: must be ≥ 1")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise DataError(f"{out}: folder exists and is not empty; pass --overwrite to replace")
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError(f"{out}: exists and is not a folder")
    generator = SyntheticGenerator.from_params(
        f"n={size},shape={shape},classes={classes},seed={seed}"
    )
    os.makedirs(out, exist_ok=True)
    for name in (IMAGES, LABELS, CLASSES):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    labels_path = os.path.join(out, LABELS)
    np.save(labels_path, generator.labels)
    written = os.path.getsize(labels_path)
    partial = os.path.join(out, IMAGES + ".partial")
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
        "fortran_order": False,
        "shape": (size, *generator.image_shape),
    }
    # Plain sequential writes, not a writable memory map: the process never holds more
    # than one chunk, not even as mapped pages of the file.
    with open(partial, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, size, chunk):
            f.write(generator.images(start, start + chunk).data)
            if progress is not None:
                progress(min(size, start + chunk), written + f.tell())
        written += f.tell()
    os.replace(partial, os.path.join(out, IMAGES))
    return written


def main(argv: Sequence[str]) -> None:
    del argv
    began = time.perf_counter()

    def progress(items: int, written: int) -> None:
        seconds = time.perf_counter() - began
        print(f"{items:,} / {_SIZE.value:,} items, {written:,} bytes, {seconds:.0f} s", flush=True)

    try:
        written = write_pool(
            str(_OUT.value),  # required: app.run checks it is set
            size=_SIZE.value,
            shape=_SHAPE.value,
            classes=_CLASSES.value,
            seed=_SEED.value,
            chunk=_CHUNK.value,
            overwrite=_OVERWRITE.value,
            progress=progress,
        )
    except DataError as error:
        raise app.UsageError(str(error)) from None
    print(f"Wrote {written:,} bytes to {_OUT.value}: load it as npy:{_OUT.value}")


if __name__ == "__main__":
    flags.mark_flag_as_required("out")
    app.run(main)
