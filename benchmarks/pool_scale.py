r"""Pools up to ImageNet's size: scoring, selection and training speed, and memory, with the
pool on the devices or streamed from the host.

    python -m benchmarks.pool_scale --sizes=70000 --placements=device,host --out=scale.jsonl
    python -m benchmarks.pool_scale --sizes=1280000 --placements=host --device_memory_gb=1

For every size N (``--sizes``) it uses the memory-mapped ``npy:`` pool of N synthetic
32×32×3 images in ``--pool_dir``/N, writing it with :mod:`benchmarks.make_pool` when it is
missing, and for every placement (``--placements``: ``device``, ``host`` or ``auto``,
`mcal_jax.placement`) measures, in a fresh process of its own so that memory peaks do not
mix:

- ``prepare_s``: what a run does with the pool before its first purchase: the images'
  fingerprint (``images_sha256``) and placing the pool (normalisation statistics, the
  upload of a device pool).
- ``score_items_per_s``: ``Scorer.score`` of all N items with ``--model`` (random
  weights), host indices to pool-sized host arrays; compile excluded, median of
  ``--repeats``.
- ``select_ms``: choosing the ⌈``--delta_fraction`` · N⌉ least confident of the N scored
  items, the run's own selection (``Scores.least_confident``, ties broken by
  a random order); median of ``--repeats``.
- ``train_images_per_s``: ``Trainer.train`` on ``--train_items`` random items for one
  epoch in batches of ``--train_batch``; compile excluded, median of ``--repeats``.
- ``peak_rss_gb``: the process's peak resident memory (``VmHWM``) above its resident
  memory once JAX and mcal_jax are imported and the devices are up, in 10⁹ bytes.
- ``device_bytes``: the peak bytes in use on the devices where JAX reports it
  (accelerators), else the bytes of the JAX arrays alive after the work (a CPU, where
  "device" memory is the host's and counts in the RSS too).

A ``device`` placement whose pool exceeds ``--device_memory_gb`` (default: the library's,
`mcal_jax.placement.default_device_memory_gb`) is skipped. It prints a table, with the
host ÷ device scoring rate where both ran, and with ``--out=FILE`` writes one JSON line per
(size, placement).
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from absl import app, flags

from benchmarks import make_pool, pools
from mcal_jax import data, parallel, scoring
from mcal_jax import pool as pool_lib
from mcal_jax import train as train_lib
from mcal_jax.run.workdir import dataset_fingerprint

REQUIRED_KEYS = (
    "size",
    "placement",
    "score_items_per_s",
    "select_ms",
    "train_images_per_s",
    "peak_rss_gb",
    "device_bytes",
)
PLACEMENTS = ("device", "host", "auto")
DEFAULT_SIZES = (70_000, 300_000, 1_280_000)
SHAPE = "32x32x3"

# Flags of other benchmarks too (the test suite imports them all): allow_override shares
# one flag, so defaults are None here and resolved in main().
_SIZES = flags.DEFINE_list(
    "sizes", None, "Pool sizes; default 70000,300000,1280000.", allow_override=True
)
_PLACEMENTS = flags.DEFINE_list("placements", ["device", "host"], "device, host or auto.")
_BUDGET = flags.DEFINE_float(
    "device_memory_gb", None, "GB of one device the pool may take; default: the library's."
)
_POOL_DIR = flags.DEFINE_string(
    "pool_dir", "/tmp/mcal_pools", "Folder of the npy pools, one per size."
)
_OUT = flags.DEFINE_string("out", None, "JSONL file for the measurements.", allow_override=True)
_MODEL = flags.DEFINE_string("model", None, "Classifier; default tiny.", allow_override=True)
_REPEATS = flags.DEFINE_integer("repeats", None, "Timed calls; default 3.", allow_override=True)
_SCORE_BATCH = flags.DEFINE_integer("score_batch", 1024, "Global batch of scoring.")
_TRAIN_ITEMS = flags.DEFINE_integer("train_items", 4096, "Labeled items of the timed training.")
_TRAIN_BATCH = flags.DEFINE_integer("train_batch", 256, "Global batch of training.")
_DELTA = flags.DEFINE_float("delta_fraction", 0.01, "Items selected, as a fraction of N.")
_MEASURE = flags.DEFINE_string("measure", None, "Internal: measure one case (JSON) and print it.")


def resident_bytes() -> int:
    """This process's resident memory now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_resident_bytes() -> int:
    """This process's peak resident memory so far: the high-water mark of its address
    space (``VmHWM``), which starts anew when the process is exec'd. ``ru_maxrss`` does
    not: it keeps the peak of the process it was forked from, so a case started by a
    large parent would report the parent's memory. ``ru_maxrss`` only where there is no
    ``/proc``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def pool_folder(pool_dir: str, size: int) -> str:
    return os.path.join(pool_dir, str(size))


def ensure_pool(pool_dir: str, size: int, log: Callable[[str], None] = print) -> str:
    """The folder of the N = ``size`` pool, written by `benchmarks.make_pool` if missing."""
    folder = pool_folder(pool_dir, size)
    if not os.path.exists(os.path.join(folder, "images.npy")):
        log(f"writing the {size:,}-item pool to {folder} ...")
        make_pool.write_pool(folder, size=size, shape=SHAPE, overwrite=True)
    return folder


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    folder: str,
    placement: str,
    *,
    device_memory_gb: float | None = None,
    model: str = "tiny",
    repeats: int = 3,
    score_batch: int = 1024,
    train_items: int = 4096,
    train_batch: int = 256,
    delta_fraction: float = 0.01,
    baseline: int | None = None,
) -> dict:
    """One case, in this process: the pool in ``folder`` placed as ``placement``; the
    record of the module docstring. ``baseline``: the resident bytes the peak is measured
    above (default: now)."""
    baseline = resident_bytes() if baseline is None else baseline
    mesh = parallel.make_mesh()
    on_cpu = jax.devices()[0].platform == "cpu"
    dtype = "float32" if on_cpu else "bfloat16"
    start = time.perf_counter()
    dataset = data.load_dataset(f"npy:{folder}")
    dataset_fingerprint(dataset)
    pool = pool_lib.place(dataset, mesh, placement, device_memory_gb)
    prepare_s = time.perf_counter() - start
    n = len(pool)

    trainer = train_lib.Trainer(
        model,
        pool,
        train_lib.TrainConfig(
            epochs=1, batch_size=train_batch, schedule="constant", compute_dtype=dtype
        ),
    )
    state = trainer.init(jax.random.key(0))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    scorer = scoring.Scorer(model, pool, batch_size=score_batch, compute_dtype=dtype)
    everything = np.arange(n)
    scorer.score(variables, everything[: 2 * scorer.global_batch])  # compiles
    score_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = scorer.score(variables, everything)
        score_times.append(time.perf_counter() - start)

    rng = np.random.default_rng(0)
    tie_order = rng.permutation(n)
    count = math.ceil(delta_fraction * n)
    select_s = _median_seconds(
        lambda: scores.least_confident(everything, count, tie_order), repeats
    )

    labels = dataset.labels
    assert labels is not None  # make_pool writes labels
    chosen = np.sort(rng.choice(n, min(train_items, n), replace=False))
    warm = trainer.train(chosen, labels[chosen], seed=0)  # compiles
    train_s = statistics.median(
        trainer.train(chosen, labels[chosen], seed=r + 1).wall_seconds for r in range(repeats)
    )
    return {
        "size": n,
        "placement": placement,
        "placed": "host" if isinstance(pool, pool_lib.HostPool) else "device",
        "pool_bytes": int(dataset.images.nbytes),
        "device_memory_gb": device_memory_gb,
        "model": model,
        "device": jax.devices()[0].device_kind,
        "num_devices": mesh.size,
        "compute_dtype": dtype,
        "repeats": repeats,
        "prepare_s": prepare_s,
        "score_items_per_s": n / statistics.median(score_times),
        "select_items": count,
        "select_ms": 1e3 * select_s,
        "train_items": len(chosen),
        "train_images_per_s": warm.images_processed / train_s,
        "peak_rss_gb": (peak_resident_bytes() - baseline) / 1e9,
        "device_bytes": device_bytes(jax.devices()),
        "jax_version": jax.__version__,
    }


def device_bytes(devices: Sequence[jax.Device]) -> int:
    """Peak bytes in use on ``devices`` where JAX reports it, else the bytes of the JAX
    arrays alive now (CPUs report nothing)."""
    stats = [d.memory_stats() or {} for d in devices]
    if all("peak_bytes_in_use" in s for s in stats):
        return int(sum(s["peak_bytes_in_use"] for s in stats))
    return int(sum(shard.data.nbytes for a in jax.live_arrays() for shard in a.addressable_shards))


def measure_in_subprocess(case: dict, env: dict[str, str] | None = None) -> dict:
    """:func:`measure` of ``case`` (its keyword arguments, ``folder`` and ``placement``
    included) in a fresh Python process; its record."""
    command = [sys.executable, "-m", "benchmarks.pool_scale", f"--measure={json.dumps(case)}"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"benchmarks.pool_scale: measuring {case} failed (exit {done.returncode}):\n"
            f"{done.stdout[-2000:]}{done.stderr[-4000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_all(
    sizes: Sequence[int],
    placements: Sequence[str],
    *,
    pool_dir: str,
    device_memory_gb: float | None = None,
    env: dict[str, str] | None = None,
    log: Callable[[str], None] = print,
    **options: object,
) -> list[dict]:
    """Every (size, placement) measured in its own process; a ``device`` placement whose
    pool exceeds ``device_memory_gb`` (when given) is skipped, with a line to ``log``.
    ``options``: the other keyword arguments of :func:`measure`."""
    records = []
    for size in sizes:
        folder = ensure_pool(pool_dir, size, log)
        pool_bytes = os.path.getsize(os.path.join(folder, "images.npy"))
        for placement in placements:
            too_big = device_memory_gb is not None and pool_bytes > device_memory_gb * 1e9
            if placement == "device" and too_big:
                log(
                    f"N={size:,}: device placement skipped, the pool's {pool_bytes / 1e9:.2f} GB "
                    f"exceed --device_memory_gb={device_memory_gb}"
                )
                continue
            case = dict(
                folder=folder, placement=placement, device_memory_gb=device_memory_gb, **options
            )
            record = measure_in_subprocess(case, env)
            log(
                f"N={size:,} {placement}: {record['score_items_per_s']:,.0f} items/s scored, "
                f"peak RSS +{record['peak_rss_gb']:.2f} GB"
            )
            records.append(record)
    rates = {(r["size"], r["placed"]): r["score_items_per_s"] for r in records}
    for r in records:
        if (r["size"], "device") in rates and (r["size"], "host") in rates:
            r["host_vs_device_scoring"] = rates[r["size"], "host"] / rates[r["size"], "device"]
    return records


def format_table(records: Sequence[dict]) -> str:
    header = (
        f"{'size':>10} {'placement':>10} {'prepare s':>10} {'score items/s':>14} "
        f"{'host/device':>12} {'select ms':>10} {'train img/s':>12} {'peak RSS GB':>12} "
        f"{'device MB':>10}"
    )
    lines = []
    if records:
        first = records[0]
        lines.append(
            f"pool scale on {first['num_devices']} × {first['device']} ({first['model']}, "
            f"{first['compute_dtype']}, jax {first['jax_version']}): {SHAPE} memory-mapped "
            f"pools, median of {first['repeats']}; select: the least confident "
            f"{100 * first['select_items'] / first['size']:.3g}% of N"
        )
    lines += [header, "-" * len(header)]
    for r in records:
        ratio = r.get("host_vs_device_scoring")
        shown = f"{ratio:.2f}" if ratio is not None and r["placed"] == "host" else ""
        placement = r["placement"] + (f" ({r['placed']})" if r["placement"] == "auto" else "")
        lines.append(
            f"{r['size']:>10,} {placement:>10} {r['prepare_s']:>10.1f} "
            f"{r['score_items_per_s']:>14,.0f} {shown:>12} {r['select_ms']:>10.1f} "
            f"{r['train_images_per_s']:>12,.0f} {r['peak_rss_gb']:>12.2f} "
            f"{r['device_bytes'] / 1e6:>10.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"benchmarks.pool_scale takes no positional arguments, got {argv[1:]}")
    if _MEASURE.value:  # one case, in the process the parent started for it
        jax.devices()  # the baseline: the libraries imported, the devices up
        baseline = resident_bytes()
        record = measure(**json.loads(_MEASURE.value), baseline=baseline)
        print(json.dumps(record, allow_nan=False), flush=True)
        return
    sizes = pools.positive_ints("sizes", _SIZES.value or [str(s) for s in DEFAULT_SIZES])
    placements = list(_PLACEMENTS.value)
    unknown = [p for p in placements if p not in PLACEMENTS]
    if unknown or not placements:
        raise app.UsageError(f"--placements: unknown {unknown}; use some of {PLACEMENTS}")
    budget = _BUDGET.value
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise app.UsageError(f"--device_memory_gb={budget}: must be a number of GB > 0")
    records = run_all(
        sizes,
        placements,
        pool_dir=_POOL_DIR.value,
        device_memory_gb=budget,
        model=_MODEL.value or "tiny",
        repeats=_REPEATS.value or 3,
        score_batch=_SCORE_BATCH.value,
        train_items=_TRAIN_ITEMS.value,
        train_batch=_TRAIN_BATCH.value,
        delta_fraction=_DELTA.value,
    )
    print(format_table(records), flush=True)
    if _OUT.value:
        pools.write_jsonl(_OUT.value, records)


if __name__ == "__main__":
    app.run(main)
