r"""The learning curve MCAL fits, measured on real data: held-out error against |B|, so that
training defaults (epochs, ``train.min_steps``) can be chosen from numbers.

    python -m benchmarks.learning_curve --config=configs/fashion_mnist.py:cpu \
        --sizes=100,200,400,800,1600,3200,6400 --min_steps=0,300 --seeds=0 \
        --out=/tmp/lc_fmnist.jsonl --plot=/tmp/lc_fmnist.png   # about 5 minutes on 2 CPU cores

The config file is the one launch.mcal takes (``--config.FIELD=VALUE`` overrides work): it
gives the data, the model (``config.models[0]``), the recipe (``config.train``), the metric,
the devices and the base seed. For each seed of ``--seeds`` one seeded permutation of the
pool gives the held-out set H (its first ``--held_out`` items) and every training set B (the
first |B| items of the rest: the sets are nested, so the curve compares like with like).
For each value of ``--min_steps`` (it replaces ``train.min_steps``; one curve each) and each
size, the model is trained from scratch on B with the true labels (a benchmark buys
nothing) and H is scored. Each measurement is printed and written at once, as one JSON line
of ``--out`` (overwritten) with:

- ``errors``: for each θ of ``--thetas``, the error among the ⌈θ·|H|⌉ items of H the model
  is most confident about (ties broken by item order); θ = 1 is the plain test error, a
  smaller θ the error of the items MCAL would machine-label. ``wrong`` and ``items`` are the
  counts behind each rate.
- ``steps``, ``images`` (steps × global batch), ``passes`` (epochs over B), ``final_loss``.
- ``device_seconds`` (wall × devices, the ledger's bill) and ``wall_seconds`` of training,
  compile excluded; ``compile_seconds``, the training step's compile (nonzero on a recipe's
  first training only), is kept apart.

With ``--semi_supervised``, each size is trained a second time semi-supervised
(``train.semi_supervised``, docs/algorithm.md step 2), its teacher the supervised model just
trained: the student also fits the teacher's most confident ``train.pseudo_fraction`` of the
items outside B (H included, as MCAL includes T), and its line says ``"semi_supervised":
true``.

The end prints the mean (± sample std when several seeds) error at each θ per min_steps and
size; ``--plot`` draws it against |B| (log-log), one colour per θ, one line style per
min_steps. Draws use ``numpy.random.default_rng((config.seed, seed))``; training uses seed
``config.seed · 1000 + seed``, the same for every size and min_steps.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from mcal_jax import data, parallel, scoring
from mcal_jax import pool as pool_lib
from mcal_jax import train as train_lib
from mcal_jax.recipe import TrainConfig

#: The keys every JSON line has (others describe the setting).
# fmt: off
REQUIRED_KEYS = (
    "model", "min_steps", "size", "seed", "held_out", "thetas", "errors", "wrong", "items",
    "steps", "images", "passes", "device_seconds", "wall_seconds", "compile_seconds",
    "final_loss",
)
# fmt: on

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_SIZES = flags.DEFINE_list("sizes", ["100", "200", "400", "800", "1600", "3200", "6400"], "|B|.")
_MIN_STEPS = flags.DEFINE_list("min_steps", ["0", "300"], "train.min_steps values, a curve each.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds: draws of H and B, and the training seed.")
_HELD_OUT = flags.DEFINE_integer("held_out", 10_000, "Items in the held-out set H.")
_THETAS = flags.DEFINE_list("thetas", ["1.0", "0.8"], "Fractions of H, most confident first.")
# Also a flag of benchmarks.train_cost (same meaning); allow_override lets one process (the
# test suite) import both.
_OUT = flags.DEFINE_string("out", None, "JSONL file (overwritten).", allow_override=True)
_PLOT = flags.DEFINE_string("plot", None, "PNG of error against |B| (optional).")
_SEMI = flags.DEFINE_bool("semi_supervised", False, "Also train each size semi-supervised.")


def error_at_thetas(
    confidence: np.ndarray, correct: np.ndarray, thetas: Sequence[float]
) -> tuple[list[float], list[int], list[int]]:
    """Error rates, wrong counts and item counts among the ⌈θ·n⌉ most confident of n items
    (at least one), for each θ in (0, 1]; ties in confidence are broken by item order."""
    confidence, correct = np.asarray(confidence), np.asarray(correct, bool)
    if confidence.shape != correct.shape or confidence.ndim != 1 or not len(confidence):
        raise ValueError("confidence and correct must be non-empty and of one length")
    order = np.argsort(-confidence, kind="stable")
    wrong_so_far = np.cumsum(~correct[order])
    errors, wrong, items = [], [], []
    for theta in thetas:
        if not 0 < theta <= 1:
            raise ValueError(f"θ={theta} must lie in (0, 1]")
        k = max(1, math.ceil(theta * len(confidence) - 1e-9))
        wrong.append(int(wrong_so_far[k - 1]))
        items.append(k)
        errors.append(wrong[-1] / k)
    return errors, wrong, items


def train_config(config: ml_collections.ConfigDict, min_steps: int) -> TrainConfig:
    """``config.train`` as the run builds it (mcal_jax.run.settings), with ``min_steps``."""
    fields = config.train.to_dict()
    fields["decay_epochs"] = tuple(fields["decay_epochs"])
    fields["min_steps"] = min_steps
    return TrainConfig(**fields)


def measure_curves(
    config: ml_collections.ConfigDict,
    *,
    sizes: Sequence[int],
    min_steps: Sequence[int],
    seeds: Sequence[int] = (0,),
    held_out: int = 10_000,
    thetas: Sequence[float] = (1.0, 0.8),
    semi_supervised: bool = False,
    out: str | None = None,
    echo: Callable[[str], object] = print,
) -> list[dict]:
    """Measures every (seed, min_steps, size); returns the records (see the module
    docstring), writing each to ``out`` and printing its row as soon as it is measured."""
    sizes, thetas = sorted(int(s) for s in sizes), [float(t) for t in thetas]
    if not sizes or sizes[0] < 1 or not min_steps or min(min_steps) < 0 or not seeds:
        raise ValueError("need sizes ≥ 1, min_steps ≥ 0 and at least one seed")
    dataset = data.load_dataset(
        config.data.dataset, split=config.data.split, data_dir=config.data.data_dir
    )
    labels = dataset.labels
    if labels is None:
        raise ValueError(f"{dataset.name} has no ground truth to train on and test against")
    if held_out < 1 or held_out + sizes[-1] > len(dataset):
        raise ValueError(
            f"held_out={held_out} + the largest size {sizes[-1]} exceed the {len(dataset)} items"
        )
    error_at_thetas(np.zeros(1), np.ones(1), thetas)  # rejects a θ outside (0, 1]
    recipes = {floor: train_config(config, int(floor)) for floor in min_steps}
    model = config.models[0]
    pool = pool_lib.upload(dataset, parallel.make_mesh(config.num_devices or None))
    first = recipes[min_steps[0]]
    scorer = scoring.get_scorer(
        model, pool, config.mcal.metric, config.score_batch_size, first.compute_dtype
    )
    echo(
        f"{model} on {config.data.dataset} ({len(dataset)} items), |H| = {held_out}, "
        f"{first.epochs} epochs of batch {first.batch_size}, {pool.mesh.size} device(s)"
    )
    header = (
        f"{'size':>6} {'min_steps':>9} {'':>4} {'seed':>4} {'steps':>6} {'passes':>7} "
        + " ".join(f"{f'err@{t:g}':>9}" for t in thetas)
    )
    echo(header + f" {'seconds':>8} {'compile':>8}")
    sink = open(out, "w") if out and parallel.is_main_process() else None  # noqa: SIM115
    records = []
    everything = np.arange(len(dataset))
    try:
        variants = (False, True) if semi_supervised else (False,)
        teacher = None  # the supervised model just trained on the same B
        for seed, floor, size, semi in itertools.product(seeds, min_steps, sizes, variants):
            permutation = np.random.default_rng((int(config.seed), seed)).permutation(len(dataset))
            test, rest = permutation[:held_out], permutation[held_out:]
            labeled = rest[:size]
            pseudo_indices = pseudo_labels = None
            if semi and teacher is not None:
                outside = np.setdiff1d(everything, labeled)
                fraction = recipes[floor].pseudo_fraction
                ties = np.random.default_rng((int(config.seed), seed, 1)).permutation(len(dataset))
                pseudo_indices, pseudo_labels = teacher.pseudo_labels(outside, fraction, ties)
            recipe = dataclasses.replace(recipes[floor], semi_supervised=semi)
            result = train_lib.train(
                model,
                pool,
                labeled,
                labels[labeled],
                recipe,
                pseudo_indices=pseudo_indices,
                pseudo_labels=pseudo_labels,
                seed=int(config.seed) * 1000 + seed,
            )
            scores = scorer.score(result.variables, test if semi else everything)
            teacher = None if semi else scores
            correct = scores.predicted[test] == labels[test]
            errors, wrong, items = error_at_thetas(scores.confidence[test], correct, thetas)
            record = {
                "dataset": config.data.dataset,
                "model": model,
                "semi_supervised": semi,
                "min_steps": int(floor),
                "size": size,
                "seed": seed,
                "held_out": held_out,
                "thetas": thetas,
                "errors": errors,
                "wrong": wrong,
                "items": items,
                "steps": result.steps,
                "images": result.images_processed,
                "passes": result.epochs,
                "device_seconds": result.device_seconds,
                "wall_seconds": result.wall_seconds,
                "compile_seconds": result.compile_seconds,
                "final_loss": result.final_loss,
                "epochs": recipes[floor].epochs,
                "batch_size": recipes[floor].batch_size,
                "num_devices": result.num_devices,
            }
            records.append(record)
            if sink:
                sink.write(json.dumps(record, allow_nan=False) + "\n")
                sink.flush()
            echo(
                f"{size:>6} {floor:>9} {'semi' if semi else '':>4} {seed:>4} {result.steps:>6} "
                f"{result.epochs:>7.1f} "
                + " ".join(f"{e:>9.4f}" for e in errors)
                + f" {result.wall_seconds:>8.1f} {result.compile_seconds:>8.1f}"
            )
    finally:
        if sink:
            sink.close()
    return records


def summarize(records: Sequence[dict]) -> list[dict]:
    """Per (semi-supervised or not, min_steps, size): the seeds, mean steps, and mean and
    sample std (None for one seed) of the error at each θ."""
    groups: dict[tuple[bool, int, int], list[dict]] = {}
    for r in records:
        key = (bool(r.get("semi_supervised", False)), r["min_steps"], r["size"])
        groups.setdefault(key, []).append(r)
    rows = []
    for (semi, floor, size), group in sorted(groups.items()):
        errors = np.array([r["errors"] for r in group], np.float64)
        rows.append(
            {
                "semi_supervised": semi,
                "min_steps": floor,
                "size": size,
                "seeds": len(group),
                "thetas": group[0]["thetas"],
                "steps": float(np.mean([r["steps"] for r in group])),
                "mean": errors.mean(0).tolist(),
                "std": errors.std(0, ddof=1).tolist() if len(group) > 1 else None,
            }
        )
    return rows


def format_summary(rows: Sequence[dict]) -> str:
    """The summary as a table: one row per (semi-supervised or not, min_steps, size)."""
    if not rows:
        return "no measurements"
    thetas = rows[0]["thetas"]
    width = 17 if any(r["std"] for r in rows) else 9
    header = f"{'semi':>4} {'min_steps':>9} {'size':>6} {'seeds':>5} {'steps':>7} " + " ".join(
        f"{f'err@{t:g}':>{width}}" for t in thetas
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = [
            f"{m:.4f}" + (f" ± {s:.4f}" if r["std"] else "")
            for m, s in zip(r["mean"], r["std"] or r["mean"], strict=True)
        ]
        lines.append(
            f"{'yes' if r.get('semi_supervised') else 'no':>4} "
            f"{r['min_steps']:>9} {r['size']:>6} {r['seeds']:>5} {r['steps']:>7.0f} "
            + " ".join(f"{c:>{width}}" for c in cells)
        )
    return "\n".join(lines)


def plot_curves(rows: Sequence[dict], path: str, title: str = "") -> str:
    """Mean error against |B| (log-log) for each θ (colour) and min_steps (line style)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, as in mcal_jax.report
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    curves = sorted({(bool(r.get("semi_supervised")), r["min_steps"]) for r in rows})
    styles = ["-", "--", ":", "-."]
    for i, theta in enumerate(rows[0]["thetas"] if rows else []):
        for j, (semi, floor) in enumerate(curves):
            curve = [
                r for r in rows
                if (bool(r.get("semi_supervised")), r["min_steps"]) == (semi, floor)
            ]  # fmt: skip
            ax.plot(
                [r["size"] for r in curve],
                [max(r["mean"][i], 1e-4) for r in curve],  # a zero error stays on the plot
                linestyle=styles[j % len(styles)],
                marker="o",
                color=f"C{i}",
                label=f"θ = {theta:g}, min_steps = {floor}" + (", semi" if semi else ""),
            )
    ax.set(xscale="log", yscale="log", xlabel="|B| (labeled training items)")
    ax.set(ylabel="held-out error among the θ most confident", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _parse(name: str, values: Sequence[str], kind: type, low: float) -> list:
    try:
        parsed = [kind(v) for v in values]
    except ValueError:
        parsed = []
    if not parsed or min(parsed) < low:
        raise app.UsageError(f"--{name}={','.join(values)}: expected {kind.__name__}s ≥ {low}")
    return parsed


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"benchmarks.learning_curve takes no positional arguments: {argv[1:]}")
    if _CONFIG.value is None or not _OUT.value:
        raise app.UsageError("--config and --out are required")
    start = time.perf_counter()
    records = measure_curves(
        _CONFIG.value,
        sizes=_parse("sizes", _SIZES.value, int, 1),
        min_steps=_parse("min_steps", _MIN_STEPS.value, int, 0),
        seeds=_parse("seeds", _SEEDS.value, int, 0),
        held_out=_HELD_OUT.value,
        thetas=_parse("thetas", _THETAS.value, float, 1e-9),
        semi_supervised=_SEMI.value,
        out=_OUT.value,
    )
    rows = summarize(records)
    print(format_summary(rows), flush=True)
    print(f"wrote {len(records)} measurements to {_OUT.value}")
    if _PLOT.value and parallel.is_main_process():
        title = f"{records[0]['model']} on {records[0]['dataset']}, |H| = {_HELD_OUT.value}"
        print(f"plot: {plot_curves(rows, _PLOT.value, title)}")
    print(f"total wall time {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    app.run(main)
