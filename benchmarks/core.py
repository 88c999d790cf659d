r"""Speed of MCAL's per-round core: pool scoring, the batched learning-curve fit, the plan.

    python -m benchmarks.core                       # defaults: small model, 20,000 items
    python -m benchmarks.core --model=tiny --pool_size=2048 --repeats=3
    python -m benchmarks.core --model=resnet18 --pool_size=50000 --batch_size=2048 \
        --image_shape=32x32x3                       # a GPU: scoring in bfloat16

Prints a table (measurement, value, target, ok?) and, as its very last line, one JSON object
with the numbers, so that scripts can read ``tail -n 1``. What is measured, and why:

- ``scoring_items_per_s``: ``Scorer.score`` over the whole pool, from host indices to
  pool-sized host arrays (index upload, one call per batch, the single fetch and the host
  scatter included): what every round pays to rank U and measure T.
- ``forward_items_per_s``: the bare jitted model forward + argmax on the same fixed-size
  batches of pool indices, dispatched the same way (one call per batch, one wait at the
  end). Both divide the same item count (the pool; the padding of the last batch is paid by
  both), so ``scoring_fraction_of_forward`` is the share of the bare forward's speed that
  scoring keeps. Target ≥ 0.9.
- ``fit_ms``: ``fit_truncated_power_laws`` for all 20 θ in one call (on the host CPU, as
  every fit and plan runs: ``fit_device``), on error counts drawn
  from known truncated power laws (Eq. 2) over ``--rounds`` rounds; ``scipy_fit_ms``: the
  per-θ scipy loop on the same data. Target ≥ 20× faster.
- ``plan_ms``: ``controller.plan`` (both fits included) on a ``--rounds``-round history of a
  Fashion-MNIST-sized job (N = 70,000, |T| = 3,500, ε = 5%, 0.04 USD a label);
  ``plan_from_models_ms``: the θ × b search alone. Target: plan < 50 ms.

Every timing leaves the first call (the compile) out, waits for the device
(``jax.block_until_ready`` or a host fetch), and reports the median of ``--repeats`` calls.
The two sides of each comparison are timed in alternation, so that other work on a shared
machine slows both alike: on a busy CPU the absolute numbers drift, the ratios much less.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np
from absl import app, flags

from benchmarks import pools
from mcal_jax import controller, parallel, scoring
from mcal_jax import pool as pool_lib
from mcal_jax import train as train_lib
from mcal_jax.data import make_synthetic
from mcal_jax.fit import (
    PowerLawFit,
    fit_training_cost,
    fit_truncated_power_laws,
    predict_error,
)
from mcal_jax.fit_reference import fit_truncated_power_laws_scipy
from mcal_jax.profile import THETAS

# Flags that benchmarks.profile_step defines too (the test suite imports both):
# allow_override shares one flag, so their defaults are None and resolved in main().
_MODEL = flags.DEFINE_string(
    "model", None, "Classifier (mcal_jax.models); default small.", allow_override=True
)
_POOL_SIZE = flags.DEFINE_integer("pool_size", 20_000, "Items in the synthetic pool.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "Global batch size; default 1024.", allow_override=True
)
_METRIC = flags.DEFINE_enum("metric", "margin", scoring.METRICS, "Active-learning metric M.")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Rounds (points per θ curve) in the fit and plan.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per measurement; the median counts.")
_NUM_DEVICES = flags.DEFINE_integer("num_devices", None, "Devices in the mesh (default: all).")

#: name -> (comparison, threshold); the targets of the benchmark.
TARGETS: dict[str, tuple[str, float]] = {
    "scoring_fraction_of_forward": (">=", 0.9),
    "fit_speedup_vs_scipy": (">=", 20.0),
    "plan_ms": ("<", 50.0),
}

# The planning job: Fashion-MNIST-sized, the paper's Amazon price, δ0 = 1% of N.
_NUM_ITEMS, _NUM_TEST, _EPSILON, _HUMAN_USD = 70_000, 3_500, 0.05, 0.04
_DELTA0, _MIN_DELTA = 700, 70
_USD_PER_IMAGE_EPOCH, _EPOCHS = 1.5e-6, 200.0  # the paper's Table 1 price, per image-epoch
_SCORING_USD_PER_ITEM = 1e-7


def median_seconds(fns: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall seconds of each ``fns[name]()`` over ``repeats`` calls, after one untimed
    warm-up call of each (the compile).

    The calls are interleaved (a, b, a, b, ...) so that a change in the load of a shared
    machine slows every function alike and leaves their ratio alone. Each function must
    return only once its device work is done (fetch or block on its outputs).
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def synthetic_error_counts(
    num_rounds: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train sizes [R] and test errors / counts [R, Θ] from known truncated power laws.

    ε_θ(b) = α_θ · b^(−γ) · exp(−b/k) (Eq. 2) with α_θ = 8θ², γ = 0.5, k = 100,000: 30%
    error at θ = 1 after the first 700 labels, 9.4% after 7,000, so that ten rounds in, the
    plan still buys labels and searches δ (θ* = 0.9). B grows by δ0 = 700 a round and T
    holds 3,500 items, θ·|T| of them above τ_θ; errors are binomial draws.
    """
    rng = np.random.default_rng(seed)
    sizes = _DELTA0 * np.arange(1, num_rounds + 1, dtype=np.float64)
    thetas = THETAS.astype(np.float64)
    rate = 8.0 * thetas[None, :] ** 2 * sizes[:, None] ** -0.5 * np.exp(-sizes[:, None] / 1e5)
    counts = np.broadcast_to(np.round(thetas * _NUM_TEST), rate.shape).astype(np.int64)
    errors = rng.binomial(counts, np.minimum(rate, 1.0))
    return sizes, errors.astype(np.float64), counts.astype(np.float64)


def planning_problem(
    num_rounds: int, seed: int = 0
) -> tuple[controller.ControllerConfig, controller.History]:
    """The controller config and a ``num_rounds``-round history with the plans recorded.

    Each round is appended and planned in turn (as the MCAL loop does), so the history holds
    C* and B_opt of the earlier rounds and the timed plan takes the stable branch (the δ
    search).
    """
    config = controller.ControllerConfig(
        num_items=_NUM_ITEMS,
        num_test=_NUM_TEST,
        epsilon=_EPSILON,
        constraint="overall",
        human_usd_per_label=_HUMAN_USD,
        delta0=_DELTA0,
        min_delta=_MIN_DELTA,
        train_epochs=_EPOCHS,
    )
    sizes, errors, counts = synthetic_error_counts(num_rounds, seed)
    noise = np.random.default_rng(seed + 1).normal(1.0, 0.02, num_rounds)
    history = controller.History.start(THETAS, _DELTA0, spent_usd=_HUMAN_USD * _NUM_TEST)
    for r in range(num_rounds):
        if r > 0:
            history = history.record_plan(controller.plan(config, history))
        history = history.append_round(
            train_size=int(sizes[r]),
            test_errors=errors[r],
            test_counts=counts[r],
            training_usd=float(_USD_PER_IMAGE_EPOCH * _EPOCHS * sizes[r] * noise[r]),
            images=_EPOCHS * sizes[r],
            scoring_usd=_SCORING_USD_PER_ITEM * (_NUM_ITEMS - sizes[r]),
            labels_usd=_HUMAN_USD * (sizes[r] - (sizes[r - 1] if r else 0.0)),
            # Each round certifies more than its labels cost, so no stop rule fires.
            certified_machine=int(min(_NUM_ITEMS - _NUM_TEST - sizes[r], 40_000 + 2_000 * r)),
        )
    # Noisy counts move B_opt from round to round; the last plan is recorded as if it had
    # found today's B_opt, so the timed plan is stable and takes the δ search, the branch
    # that does the most work.
    today = controller.plan(config, history).b_opt
    return config, dataclasses.replace(history, b_opts=(*history.b_opts[:-1], today))


def _scoring_benchmark(
    model: str,
    pool_size: int,
    batch_size: int,
    metric: str,
    repeats: int,
    num_devices: int | None,
    image_shape: str,
    compute_dtype: str,
) -> dict:
    mesh = parallel.make_mesh(num_devices)
    pool = pool_lib.upload(make_synthetic(f"n={pool_size},shape={image_shape},classes=10"), mesh)
    trainer = train_lib.Trainer(model, pool, train_lib.TrainConfig(batch_size=mesh.size))
    state = trainer.init(jax.random.key(0))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    scorer = scoring.Scorer(
        model, pool, metric=metric, batch_size=batch_size, compute_dtype=compute_dtype
    )
    indices = np.arange(pool_size)

    forward = scorer.forward_fn()
    rows = scorer.batches(indices)

    def run_forward() -> None:
        jax.block_until_ready([forward(variables, rows[b]) for b in range(rows.shape[0])])

    seconds = median_seconds(
        {"score": lambda: scorer.score(variables, indices), "forward": run_forward}, repeats
    )
    score_s, forward_s = seconds["score"], seconds["forward"]
    return {
        "scoring_items_per_s": pool_size / score_s,
        "forward_items_per_s": pool_size / forward_s,
        "scoring_ms": 1e3 * score_s,
        "forward_ms": 1e3 * forward_s,
        "num_batches": int(rows.shape[0]),
        "global_batch": int(scorer.global_batch),
        "num_devices": int(mesh.size),
    }


def _fit_benchmark(rounds: int, repeats: int) -> dict:
    sizes, errors, counts = synthetic_error_counts(rounds)

    def jax_fit() -> PowerLawFit:
        return jax.block_until_ready(fit_truncated_power_laws(sizes, errors, counts))

    seconds = median_seconds(
        {"jax": jax_fit, "scipy": lambda: fit_truncated_power_laws_scipy(sizes, errors, counts)},
        repeats,
    )
    fit_s, scipy_s = seconds["jax"], seconds["scipy"]
    # Both fits solve one problem: how far apart are their curves at the measured sizes?
    ours, reference = jax_fit(), fit_truncated_power_laws_scipy(sizes, errors, counts)
    trusted = np.asarray(ours.trusted) & np.asarray(reference.trusted)
    a, b = np.asarray(predict_error(ours, sizes)), np.asarray(predict_error(reference, sizes))
    gap = np.abs(a - b) / np.maximum(b, 1e-12)
    return {
        "fit_ms": 1e3 * fit_s,
        "scipy_fit_ms": 1e3 * scipy_s,
        "fit_speedup_vs_scipy": scipy_s / fit_s,
        # None (JSON null) when no θ is trusted by both fits.
        "fit_max_rel_gap_vs_scipy": float(gap[trusted].max()) if trusted.any() else None,
    }


def _plan_benchmark(rounds: int, repeats: int) -> dict:
    config, history = planning_problem(rounds)
    sizes = np.asarray(history.train_sizes, np.float64)
    error_model = fit_truncated_power_laws(
        sizes, history.test_errors, history.test_counts, thetas=history.thetas
    )
    cost_model = fit_training_cost(
        np.asarray(history.images), np.asarray(history.training_usd), epochs=config.train_epochs
    )
    seconds = median_seconds(
        {
            "plan": lambda: controller.plan(config, history),
            "search": lambda: controller.plan_from_models(config, history, error_model, cost_model),
        },
        repeats,
    )
    plan_s, search_s = seconds["plan"], seconds["search"]
    return {"plan_ms": 1e3 * plan_s, "plan_from_models_ms": 1e3 * search_s}


def run_benchmark(
    *,
    model: str = "small",
    pool_size: int = 20_000,
    batch_size: int = 1024,
    metric: str = "margin",
    rounds: int = 10,
    repeats: int = 5,
    num_devices: int | None = None,
    image_shape: str = "28x28x1",
    compute_dtype: str | None = None,
) -> dict:
    """Runs every measurement (see the module docstring) and returns the JSON-ready record.
    ``image_shape`` is HxWxC of the synthetic pool; ``compute_dtype`` of scoring defaults
    to bfloat16 on accelerators, float32 on CPUs."""
    if compute_dtype is None:
        compute_dtype = "float32" if jax.devices()[0].platform == "cpu" else "bfloat16"
    for name, value, low in (
        ("pool_size", pool_size, 1),
        ("batch_size", batch_size, 1),
        ("rounds", rounds, 1),
        ("repeats", repeats, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"benchmarks.core: {name} = {value!r}: must be an integer ≥ {low}")
    result: dict = {
        "model": model,
        "pool_size": pool_size,
        "batch_size": batch_size,
        "metric": metric,
        "rounds": rounds,
        "repeats": repeats,
        "image_shape": image_shape,
        "compute_dtype": compute_dtype,
    }
    result.update(
        _scoring_benchmark(
            model, pool_size, batch_size, metric, repeats, num_devices, image_shape, compute_dtype
        )
    )
    result["scoring_fraction_of_forward"] = (
        result["scoring_items_per_s"] / result["forward_items_per_s"]
    )
    result.update(_fit_benchmark(rounds, repeats))
    result.update(_plan_benchmark(rounds, repeats))
    device = jax.devices()[0]
    result.update(
        device_kind=device.device_kind,
        platform=device.platform,
        fit_device=parallel.host_device().device_kind,  # fits and plans run on the host
        jax_version=jax.__version__,
        targets_met={name: meets_target(name, result[name]) for name in TARGETS},
    )
    return result


def meets_target(name: str, value: float) -> bool:
    """Whether ``value`` of the measurement ``name`` meets its entry in :data:`TARGETS`."""
    comparison, threshold = TARGETS[name]
    return value >= threshold if comparison == ">=" else value < threshold


def format_table(result: dict) -> str:
    """The human-readable table: measurement, value, target, ok?"""
    rows = [
        ("scoring (Scorer.score, host fetch incl.)", "scoring_items_per_s", "items/s"),
        ("bare forward + argmax", "forward_items_per_s", "items/s"),
        ("scoring / forward", "scoring_fraction_of_forward", ""),
        (f"fit, all {len(THETAS)} θ in one call", "fit_ms", "ms"),
        ("fit, scipy loop over θ", "scipy_fit_ms", "ms"),
        ("fit speed-up vs scipy", "fit_speedup_vs_scipy", "×"),
        ("fit: max rel. gap of ε(b) vs scipy", "fit_max_rel_gap_vs_scipy", ""),
        ("plan (both fits + search)", "plan_ms", "ms"),
        ("plan_from_models (search only)", "plan_from_models_ms", "ms"),
    ]
    header = f"{'measurement':<42} {'value':>14} {'target':>10}  ok?"
    lines = [
        f"mcal_jax core benchmark: {result['model']} on {result['pool_size']} "
        f"{result['image_shape']} items ({result['compute_dtype']}) "
        f"(batch {result['global_batch']}, {result['num_batches']} batches), metric "
        f"{result['metric']}, {result['num_devices']} × {result['device_kind']}, "
        f"jax {result['jax_version']}; fits and plans on the host {result['fit_device']}; "
        f"{result['rounds']} rounds; median of "
        f"{result['repeats']} after a warm-up",
        header,
        "-" * len(header),
    ]
    for label, key, unit in rows:
        value = result[key]
        if value is None:
            shown = "n/a"
        else:
            shown = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
        target, ok = "", ""
        if key in TARGETS:
            comparison, threshold = TARGETS[key]
            target = f"{comparison} {threshold:g}"
            ok = "yes" if result["targets_met"][key] else "NO"
        lines.append(f"{label:<42} {shown + ' ' + unit:>14} {target:>10}  {ok}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"benchmarks.core takes no positional arguments, got {argv[1:]}")
    result = run_benchmark(
        model=_MODEL.value or "small",
        pool_size=_POOL_SIZE.value,
        batch_size=_BATCH_SIZE.value or 1024,
        metric=_METRIC.value,
        rounds=_ROUNDS.value,
        repeats=_REPEATS.value,
        num_devices=_NUM_DEVICES.value,
        image_shape=pools.IMAGE_SHAPE.value or "28x28x1",
        compute_dtype=pools.COMPUTE_DTYPE.value,
    )
    print(format_table(result))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    app.run(main)
