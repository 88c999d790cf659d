r"""What training a classifier costs on this machine: the rates behind MCAL's training bill.

    python -m benchmarks.train_cost --models=tiny,resnet20 --batch_sizes=128 \
        --image_shape=28x28x1 --out=/tmp/bench_train.jsonl          # a 2-core CPU, about 1 minute
    python -m benchmarks.train_cost --models=resnet18,resnet20 --batch_sizes=256,512 \
        --out=bench_train.jsonl --vs_torch                          # a GPU

For every model and global batch size it prints one table row and writes one JSON line
(``--out``, overwritten) with:

- ``train_images_per_s``: images through forward + backward + update per second of
  ``Trainer.train`` over ``--train_images`` labeled items for ``--epochs`` epochs, the
  library's own training loop (compile excluded, device synchronised by the trainer).
- ``score_images_per_s``: ``Scorer.score`` (margin) over the same items, host fetch
  included.
- ``device_seconds_per_image_epoch``: ``TrainResult.device_seconds / images_processed``,
  the device time MCAL's ledger bills (wall seconds × devices; on a CPU with simulated
  devices every simulated device counts, as in the ledger).
- ``usd_per_image``: one full training of ``--full_training_epochs`` epochs, per labeled
  image, at ``--usd_per_device_hour`` (default: :data:`mcal_jax.costs.USD_PER_DEVICE_HOUR`
  by device kind, else platform: the price a measured-cost MCAL run charges). This is the
  per-image training price c_T of Eq. 3, measured instead of taken from the paper's Table 1.
- ``flops_per_image``: the model FLOPs of one training image, counted from the
  architecture (:func:`mcal_jax.flops.model_flops_per_image`: the convolutions and dense
  layers of the forward and backward passes). This is the numerator of MFU.
- ``xla_flops_per_image``: XLA's cost analysis of the compiled training step (one device's
  program, times the devices, over the global batch), as the compiler sees it. On a GPU it
  leaves out the cuDNN convolutions and comes out about 100× low; on a CPU it counts them,
  plus augmentation and the optimizer update.
- ``mfu``: model FLOP utilisation, ``flops_per_image × train_images_per_s`` over the
  peak: the dense bfloat16 peak of each accelerator times the devices (:data:`PEAK_FLOPS`,
  whatever ``--compute_dtype``), or on a CPU ``--cpu_peak_flops`` for the whole host, since
  simulated devices share its cores. null where the device kind has no known peak.

Training and scoring run once untimed (compile and warm-up), then ``--repeats`` times in
alternation, so that a change of load on a shared machine slows both alike; the median
counts. ``--vs_torch`` trains the same architecture in PyTorch in the same process
(:mod:`benchmarks.torch_resnets`), twice: with only the model compiled
(``torch_train_images_per_s``, ``jax_vs_torch``) and tuned, the whole step compiled with
CUDA graphs and a fused optimizer (``torch_tuned_train_images_per_s``, ``jax_vs_torch_tuned``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence

import jax
import numpy as np
from absl import app, flags

from benchmarks import pools
from benchmarks.pools import make_pool, parse_image_shape
from mcal_jax import costs, data, flops, models, parallel, scoring
from mcal_jax import pool as pool_lib
from mcal_jax import train as train_lib

#: Dense bfloat16 peak FLOP/s of one device, by a substring of its JAX device kind, most
#: specific first (vendor data sheets, without sparsity).
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),
    ("A100", 312e12),
)

#: Default CPU peak: the cores this process may use × 32 float32 FLOP per cycle (two
#: 8-wide AVX2 FMA units) × 3 GHz; 1.9e11 on a 2-core VM. Set --cpu_peak_flops for yours.
DEFAULT_CPU_PEAK_FLOPS = len(os.sched_getaffinity(0)) * 32 * 3e9

#: Labeled items and epochs timed per training when not given: a few seconds of a
#: ResNet-20 on a 2-core CPU; two CIFAR-10-sized epochs on an accelerator.
DEFAULT_WORK = {"cpu": (1024, 1), "accelerator": (50_000, 2)}

REQUIRED_KEYS = (
    "model",
    "batch_size",
    "device",
    "train_images_per_s",
    "score_images_per_s",
    "device_seconds_per_image_epoch",
    "usd_per_image",
    "flops_per_image",
    "xla_flops_per_image",
    "mfu",
)

_MODELS = flags.DEFINE_list("models", ["resnet20"], "Models to measure (mcal_jax.models).")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["256"], "Global batch sizes to measure.")
_OUT = flags.DEFINE_string("out", None, "JSONL file for the measurements (overwritten).")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 10, "Classes of the synthetic data.")
_TRAIN_IMAGES = flags.DEFINE_integer("train_images", None, "Labeled items per training.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Epochs per timed training.")
_FULL_EPOCHS = flags.DEFINE_integer("full_training_epochs", 200, "Epochs of one full training.")
_USD = flags.DEFINE_float("usd_per_device_hour", None, "Default: mcal_jax.costs' table.")
_CPU_PEAK = flags.DEFINE_float("cpu_peak_flops", DEFAULT_CPU_PEAK_FLOPS, "Host FLOP/s.")
# Same meaning as in benchmarks.core; allow_override lets one process (the test suite)
# import both benchmarks, which then share the one flag.
_REPEATS = flags.DEFINE_integer(
    "repeats", 3, "Timed calls per measurement; the median counts.", allow_override=True
)
_VS_TORCH = flags.DEFINE_bool("vs_torch", False, "Also time the same ResNet in PyTorch.")


def peak_flops(device: jax.Device, num_devices: int, cpu_peak_flops: float) -> float | None:
    """Peak FLOP/s of the mesh: the per-device dense bf16 peak × devices; on a CPU the
    host's figure, once. None for an accelerator not in :data:`PEAK_FLOPS`."""
    if device.platform == "cpu":
        return cpu_peak_flops
    for name, peak in PEAK_FLOPS:
        if name in device.device_kind:
            return peak * num_devices
    return None


def xla_flops_per_image(trainer: train_lib.Trainer) -> float | None:
    """FLOPs of one training step per image, from XLA's cost analysis of the compiled step.

    The compiled program is one device's share of the SPMD step, so its count is scaled by
    the devices and divided by the global batch. None if the backend reports no count.
    """
    flops = float(trainer.step_cost_analysis().get("flops", 0.0))
    if not flops > 0:
        return None
    return flops * trainer.num_devices / trainer.config.batch_size


def measure(
    model: str,
    batch_size: int,
    *,
    train_images: int | None = None,
    epochs: int | None = None,
    image_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    compute_dtype: str | None = None,
    full_training_epochs: int = 200,
    usd_per_device_hour: float | None = None,
    cpu_peak_flops: float = DEFAULT_CPU_PEAK_FLOPS,
    repeats: int = 3,
    num_devices: int | None = None,
    pool: tuple[data.Dataset, pool_lib.DevicePool] | None = None,
) -> dict:
    """Measures ``model`` at global ``batch_size``; returns the JSON-ready record (the keys
    of :data:`REQUIRED_KEYS` and the settings that produced them; see the module docstring).

    ``pool`` (from :func:`make_pool`) lets several measurements share one upload; it must
    hold ``train_images`` items of ``image_shape``.
    """
    device = jax.devices()[0]
    on_cpu = device.platform == "cpu"
    default_images, default_epochs = DEFAULT_WORK["cpu" if on_cpu else "accelerator"]
    train_images = default_images if train_images is None else train_images
    epochs = default_epochs if epochs is None else epochs
    compute_dtype = compute_dtype or ("float32" if on_cpu else "bfloat16")
    if model not in models.MODEL_NAMES:
        raise ValueError(
            f"benchmarks.train_cost: unknown model {model!r}; one of {models.MODEL_NAMES}"
        )
    for name, value in (
        ("batch_size", batch_size),
        ("train_images", train_images),
        ("epochs", epochs),
        ("full_training_epochs", full_training_epochs),
        ("repeats", repeats),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"benchmarks.train_cost: {name} = {value!r}: must be an integer ≥ 1")
    if usd_per_device_hour is None:
        usd_per_device_hour = costs.device_usd_per_hour(device=device)
    if pool is None:
        pool = make_pool(train_images, image_shape, num_classes, num_devices)
    dataset, device_pool = pool
    if len(dataset) != train_images or dataset.image_shape != tuple(image_shape):
        raise ValueError(
            f"benchmarks.train_cost: the pool holds {len(dataset)} items of {dataset.image_shape}, "
            f"expected train_images={train_images} of {tuple(image_shape)}"
        )

    config = train_lib.TrainConfig(
        epochs=epochs, batch_size=batch_size, schedule="constant", compute_dtype=compute_dtype
    )
    trainer = train_lib.Trainer(model, device_pool, config)
    scorer = scoring.Scorer(
        model, device_pool, metric="margin", batch_size=batch_size, compute_dtype=compute_dtype
    )
    indices = np.arange(train_images)
    labels = dataset.labels
    assert labels is not None  # a synthetic pool has its labels

    warm = trainer.train(indices, labels, seed=0)  # compiles; the first run is not timed
    variables = warm.variables
    scorer.score(variables, indices)
    runs: list[train_lib.TrainResult] = []
    score_seconds: list[float] = []
    for r in range(repeats):
        runs.append(trainer.train(indices, labels, seed=r + 1))
        start = time.perf_counter()
        scorer.score(variables, indices)  # returns host arrays: synchronised
        score_seconds.append(time.perf_counter() - start)

    images = warm.images_processed
    wall = statistics.median(run.wall_seconds for run in runs)
    device_seconds = statistics.median(run.device_seconds for run in runs)
    train_rate = images / wall
    per_image_epoch = device_seconds / images
    model_flops = flops.model_flops_per_image(model, image_shape, num_classes)
    peak = peak_flops(device, trainer.num_devices, cpu_peak_flops)
    usd = None
    if usd_per_device_hour is not None:
        usd = per_image_epoch * full_training_epochs * usd_per_device_hour / 3600
    return {
        "model": model,
        "batch_size": batch_size,
        "device": device.device_kind,
        "platform": device.platform,
        "num_devices": trainer.num_devices,
        "compute_dtype": compute_dtype,
        "image_shape": list(image_shape),
        "num_classes": num_classes,
        "train_images": train_images,
        "epochs": epochs,
        "repeats": repeats,
        "images_per_training": images,
        "train_seconds": wall,
        "compile_seconds": warm.compile_seconds,
        "train_images_per_s": train_rate,
        "score_seconds": statistics.median(score_seconds),
        "score_images_per_s": train_images / statistics.median(score_seconds),
        "device_seconds_per_image_epoch": per_image_epoch,
        "full_training_epochs": full_training_epochs,
        "usd_per_device_hour": usd_per_device_hour,
        "usd_per_image": usd,
        "flops_per_image": model_flops,
        "xla_flops_per_image": xla_flops_per_image(trainer),
        "peak_flops": peak,
        "mfu": model_flops * train_rate / peak if peak else None,
        "jax_version": jax.__version__,
    }


def torch_unavailable_reason() -> str | None:
    """Why ``--vs_torch`` cannot run here, or None when PyTorch imports."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        return f"PyTorch is not installed ({e})"
    return None


def vs_torch(
    record: dict,
    *,
    image_shape: Sequence[int],
    num_classes: int,
    train_images: int,
    epochs: int,
    repeats: int,
) -> dict:
    """The PyTorch twins' rates for the model and batch of ``record``, and JAX's rate over
    each: ``torch_*`` for the twin with only the model compiled, ``torch_tuned_*`` for the
    whole step compiled (CUDA graphs, fused optimizer; :mod:`benchmarks.torch_resnets`),
    each training ``epochs`` over ``train_images`` synthetic images, ``repeats`` times."""
    from benchmarks import torch_resnets

    out = {}
    for prefix, tuned in (("torch", False), ("torch_tuned", True)):
        rate = torch_resnets.train_images_per_s(
            record["model"],
            batch_size=record["batch_size"],
            compute_dtype=record["compute_dtype"],
            tuned=tuned,
            image_shape=image_shape,
            num_classes=num_classes,
            train_images=train_images,
            epochs=epochs,
            repeats=repeats,
        )
        out[f"{prefix}_train_images_per_s"] = rate
        out[f"jax_vs_{prefix}"] = record["train_images_per_s"] / rate
    print(
        f"{record['model']} batch {record['batch_size']}: JAX "
        f"{record['train_images_per_s']:,.0f} img/s, PyTorch {out['torch_train_images_per_s']:,.0f}"
        f" (tuned {out['torch_tuned_train_images_per_s']:,.0f}); JAX/PyTorch "
        f"{out['jax_vs_torch']:.2f} (tuned {out['jax_vs_torch_tuned']:.2f})",
        flush=True,
    )
    return out


def format_table(records: Sequence[dict]) -> str:
    """One row per measurement: the numbers of :data:`REQUIRED_KEYS`, and the PyTorch
    comparison where there is one."""

    def shown(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    with_torch = any("jax_vs_torch" in r for r in records)
    header = (
        f"{'model':<10} {'batch':>6} {'train img/s':>12} {'score img/s':>12} "
        f"{'dev-s/img-ep':>13} {'USD/img':>10} {'GFLOP/img':>10} {'XLA GFLOP':>10} {'MFU':>7}"
    )
    header += (
        f" {'torch img/s':>12} {'JAX/torch':>10} {'tuned img/s':>12} {'JAX/tuned':>10}"
        if with_torch
        else ""
    )
    lines = []
    if records:
        first = records[0]
        lines.append(
            f"training cost on {first['num_devices']} × {first['device']} "
            f"({first['compute_dtype']}, jax {first['jax_version']}): "
            f"{'x'.join(map(str, first['image_shape']))} images, {first['train_images']} items "
            f"× {first['epochs']} epoch(s) per timed training, median of {first['repeats']}; "
            f"USD/img: one {first['full_training_epochs']}-epoch training at "
            f"{shown(first['usd_per_device_hour'], '.2f')} USD per device-hour"
        )
    lines += [header, "-" * len(header)]
    for r in records:
        gflops = r["flops_per_image"] / 1e9
        xla = r.get("xla_flops_per_image")
        xla_gflops = None if xla is None else xla / 1e9
        mfu = None if r["mfu"] is None else 100 * r["mfu"]
        row = (
            f"{r['model']:<10} {r['batch_size']:>6} {r['train_images_per_s']:>12,.0f} "
            f"{r['score_images_per_s']:>12,.0f} {r['device_seconds_per_image_epoch']:>13.3g} "
            f"{shown(r['usd_per_image'], '.3g'):>10} {gflops:>10.4g} "
            f"{shown(xla_gflops, '.4g'):>10} {shown(mfu, '.3g') + '%':>7}"
        )
        if with_torch:
            for prefix in ("torch", "torch_tuned"):
                rate, ratio = r.get(f"{prefix}_train_images_per_s"), r.get(f"jax_vs_{prefix}")
                row += f" {shown(rate, ',.0f'):>12} {shown(ratio, '.2f'):>10}"
        lines.append(row)
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"benchmarks.train_cost takes no positional arguments, got {argv[1:]}")
    unknown = [m for m in _MODELS.value if m not in models.MODEL_NAMES]
    if unknown or not _MODELS.value:
        raise app.UsageError(f"--models: unknown {unknown}; choose from {models.MODEL_NAMES}")
    batch_sizes = pools.positive_ints("batch_sizes", _BATCH_SIZES.value)
    image_shape = parse_image_shape(pools.IMAGE_SHAPE.value or "32x32x3")
    on_cpu = jax.devices()[0].platform == "cpu"
    train_images = _TRAIN_IMAGES.value or DEFAULT_WORK["cpu" if on_cpu else "accelerator"][0]
    epochs = _EPOCHS.value or DEFAULT_WORK["cpu" if on_cpu else "accelerator"][1]
    compute_dtype = pools.COMPUTE_DTYPE.value or ("float32" if on_cpu else "bfloat16")
    torch_problem = torch_unavailable_reason() if _VS_TORCH.value else None
    if torch_problem:
        print(f"--vs_torch: {torch_problem}; skipping the PyTorch comparison.", flush=True)
    run_torch = _VS_TORCH.value and torch_problem is None

    pool = make_pool(train_images, image_shape, _NUM_CLASSES.value)
    records = []
    for model in _MODELS.value:
        for batch_size in batch_sizes:
            record = measure(
                model,
                batch_size,
                train_images=train_images,
                epochs=epochs,
                image_shape=image_shape,
                num_classes=_NUM_CLASSES.value,
                compute_dtype=compute_dtype,
                full_training_epochs=_FULL_EPOCHS.value,
                usd_per_device_hour=_USD.value,
                cpu_peak_flops=_CPU_PEAK.value,
                repeats=_REPEATS.value,
                pool=pool,
            )
            if run_torch:
                record.update(
                    vs_torch(
                        record,
                        image_shape=image_shape,
                        num_classes=_NUM_CLASSES.value,
                        train_images=train_images,
                        epochs=epochs,
                        repeats=_REPEATS.value,
                    )
                )
            records.append(record)
    print(format_table(records), flush=True)
    if _OUT.value and parallel.is_main_process():
        pools.write_jsonl(_OUT.value, records)


if __name__ == "__main__":
    app.run(main)
