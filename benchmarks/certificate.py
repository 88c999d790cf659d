r"""The certificate, end to end: the real labeling loop run many times with a simulated
learner, counting how often the final labels break ε.

    python -m benchmarks.certificate --runs=1000 --out=/tmp/certificate.jsonl

The promise of a run is that its final labels' error is at most ε with probability at
least 1 − α, whatever the loop did before: how many rounds ran, which batches it bought,
when it stopped. Each run here is a whole `mcal_jax.run.mcal` (settings, controller,
ledger, certificate, outputs, in a temporary workdir) whose learner is a
`mcal_jax.simulated_learner.SimulatedLearner`, so its labels' true error is known. Per
scenario and constraint it prints the violation rate (runs whose true error exceeds ε,
in the constraint's units) with its 95% Clopper–Pearson interval, the mean bill and the
mean certified bound; ``--out`` writes the same as one JSON line each.

Scenarios (`SCENARIOS`): an improving power law; an adversarial one, a profile that sits
just above ε while it creeps down, with errors partly fresh each round, so that the
rounds' test labels sometimes look good by chance; correlated errors (a shared shock per
class and round, errors that persist across rounds, much of the difficulty unseen by the
confidence); and a 2,000-item pool. The peeking variant (``mcal.certify_on = "plan"``)
certifies on T_plan, the labels the loop read to fit, plan and stop, instead of the
sealed T_cert: it runs on the adversarial scenario by default (``--peeking``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent import futures

import ml_collections
import numpy as np
import scipy.stats
from absl import app, flags, logging

from configs import common
from mcal_jax.dataset import Dataset
from mcal_jax.simulated_learner import ErrorModel, SimulatedLearner

_RUNS = flags.DEFINE_integer("runs", 1000, "Runs per scenario, constraint and variant.")
_SCENARIOS = flags.DEFINE_list("scenarios", None, "Scenarios to run (default: all).")
_CONSTRAINTS = flags.DEFINE_list("constraints", ["overall", "machine_subset"], "Constraints.")
_PEEKING = flags.DEFINE_list(
    "peeking", ["adversarial"], "Scenarios also run certifying on T_plan (none: '')."
)
_OUT = flags.DEFINE_string(
    "out", None, "Write one JSON line per scenario to this file.", allow_override=True
)
_WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1, "Processes running runs.")
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Where the runs' workdirs go (default: a temporary folder, removed).",
    allow_override=True,
)


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A pool of ``num_items`` items in ``num_classes`` classes whose classifier errs as
    ``model`` says (``subset_model`` under the machine_subset constraint, when given), run
    with the config fields ``overrides`` set."""

    name: str
    num_items: int
    model: ErrorModel
    num_classes: int = 10
    subset_model: ErrorModel | None = None
    overrides: tuple[tuple[str, object], ...] = ()

    def model_for(self, constraint: str) -> ErrorModel:
        if constraint == "machine_subset" and self.subset_model is not None:
            return self.subset_model
        return self.model


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("improving", 20_000, ErrorModel(floor=0.01, scale=0.5, gamma=0.6)),
        # Flat just above what certifying all of U allows: 5.6% of the ~90% of N left
        # is 5% overall; for machine_subset, 5.2%. Fresh errors every round, a confidence
        # that sees nothing, and a loop held for 8 rounds before a plan may stop it: eight
        # rounds in which T_plan can look good by chance and stop the loop.
        Scenario(
            "adversarial",
            20_000,
            ErrorModel(floor=0.056, scale=0.002, gamma=0.3, signal=0.0, persistence=0.0),
            subset_model=ErrorModel(
                floor=0.052, scale=0.002, gamma=0.3, signal=0.0, persistence=0.0
            ),
            overrides=(("mcal.min_rounds_for_stability", 8),),
        ),
        Scenario(
            "correlated",
            20_000,
            ErrorModel(
                floor=0.02, scale=0.4, gamma=0.5, missed=1.0, persistence=0.95, cluster_shock=0.5
            ),
        ),
        Scenario("small_pool", 2_000, ErrorModel(floor=0.01, scale=0.5, gamma=0.6)),
    )
}


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One run: whether its labels broke ε, its bill, its certified bound and true error
    (both in the constraint's units) and how many rounds it ran."""

    violated: bool
    usd: float
    bound: float
    true_error: float
    rounds: int


def pool_file(scenario: Scenario, folder: str) -> str:
    """An ``npz:`` pool of the scenario's size: blank 1×1 images and random classes (the
    simulated learner needs no pixels)."""
    path = os.path.join(folder, f"pool_{scenario.num_items}_{scenario.num_classes}.npz")
    if not os.path.exists(path):
        labels = np.random.default_rng(0).integers(0, scenario.num_classes, scenario.num_items)
        images = np.zeros((scenario.num_items, 1, 1, 1), np.uint8)
        part = f"{path}.{os.getpid()}.npz"
        np.savez(part, images=images, labels=labels)
        os.replace(part, path)
    return path


def run_config(
    pool: str,
    constraint: str,
    seed: int,
    *,
    peeking: bool,
    overrides: Sequence[tuple[str, object]] = (),
) -> ml_collections.ConfigDict:
    """The library's defaults (ε = 5%, α = 5%, T_plan 2% of N and at least 200 items, the
    last round's classifier labels) on the pool, with rounds short enough to simulate:
    at most 12, δ at least 1% of N, device time at a GPU's price."""
    config = common.get_config()
    config.data.dataset = f"npz:{pool}"
    config.seed = seed
    config.models = ("tiny",)
    config.mcal.constraint = constraint
    config.mcal.certify_on = "plan" if peeking else "reserve"
    config.mcal.max_rounds = 12
    config.mcal.min_delta_fraction = 0.01
    config.train.epochs = 8
    config.train.batch_size = 64
    config.train.min_steps = 200
    config.num_devices = 1
    config.cost.usd_per_device_hour = ml_collections.ConfigDict({"cpu": 3.6})
    for field, value in overrides:
        *path, name = field.split(".")
        parent = config
        for part in path:
            parent = parent[part]
        parent[name] = value
    return config.lock()


def run_once(
    scenario: Scenario, constraint: str, seed: int, *, peeking: bool, folder: str
) -> Outcome:
    """One whole MCAL run of the scenario in a fresh workdir under ``folder``."""
    from mcal_jax import run

    config = run_config(
        pool_file(scenario, folder), constraint, seed, peeking=peeking, overrides=scenario.overrides
    )

    def learner(dataset: Dataset) -> SimulatedLearner:
        assert dataset.labels is not None  # pool_file wrote them
        model = scenario.model_for(constraint)
        return SimulatedLearner(dataset.labels, model, num_classes=scenario.num_classes, seed=seed)

    workdir = tempfile.mkdtemp(prefix=f"{scenario.name}_{seed}_", dir=folder)
    try:
        summary = run.mcal(config, workdir, learner)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    error = summary.error
    if error.true is None:
        raise ValueError(f"{scenario.name}: the run knows no ground truth to measure against")
    return Outcome(
        violated=bool(error.true > config.mcal.epsilon),
        usd=summary.cost_usd.total,
        bound=error.upper_bound,
        true_error=error.true,
        rounds=summary.rounds,
    )


def _run_many(args: tuple) -> list[Outcome]:
    scenario, constraint, seeds, peeking, folder = args
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # thousands of runs: their progress lines go
    try:
        return [run_once(scenario, constraint, s, peeking=peeking, folder=folder) for s in seeds]
    finally:
        logging.set_verbosity(verbosity)


def run_scenario(
    scenario: Scenario,
    constraint: str,
    runs: int,
    *,
    peeking: bool = False,
    folder: str,
    pool: futures.Executor | None = None,
) -> dict:
    """``runs`` runs (seeds 0, 1, …) and their summary line: the violation rate with its
    95% Clopper–Pearson interval, the mean bill, bound, true error and rounds."""
    seeds = list(range(runs))
    if pool is None:
        outcomes = _run_many((scenario, constraint, seeds, peeking, folder))
    else:
        chunks = [seeds[i::8] for i in range(8)]
        jobs = [(scenario, constraint, c, peeking, folder) for c in chunks if c]
        outcomes = [o for part in pool.map(_run_many, jobs) for o in part]
    violations = sum(o.violated for o in outcomes)
    low, high = violation_interval(violations, len(outcomes))
    return {
        "scenario": scenario.name,
        "constraint": constraint,
        "peeking": peeking,
        "runs": len(outcomes),
        "violations": violations,
        "violation_rate": violations / len(outcomes),
        "ci_low": low,
        "ci_high": high,
        "mean_usd": float(np.mean([o.usd for o in outcomes])),
        "std_usd": float(np.std([o.usd for o in outcomes], ddof=1)) if runs > 1 else 0.0,
        "mean_bound": float(np.mean([o.bound for o in outcomes])),
        "mean_true_error": float(np.mean([o.true_error for o in outcomes])),
        "mean_rounds": float(np.mean([o.rounds for o in outcomes])),
        "human_only_usd": scenario.num_items * 0.04,
    }


def violation_interval(violations: int, runs: int) -> tuple[float, float]:
    """The two-sided 95% Clopper–Pearson interval of a violation rate."""
    low = scipy.stats.beta.ppf(0.025, violations, runs - violations + 1) if violations else 0.0
    high = (
        scipy.stats.beta.ppf(0.975, violations + 1, runs - violations) if violations < runs else 1.0
    )
    return float(low), float(high)


def table(rows: Sequence[dict]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| scenario | constraint | peeking | runs | violation rate [95% CI] | mean USD "
        "(human-only) | mean bound | mean true error | rounds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['constraint']} | {'yes' if r['peeking'] else 'no'} | "
            f"{r['runs']} | {r['violation_rate']:.1%} [{r['ci_low']:.1%}, {r['ci_high']:.1%}] | "
            f"{r['mean_usd']:.2f} ± {r['std_usd']:.2f} ({r['human_only_usd']:.0f}) | "
            f"{r['mean_bound']:.2%} | {r['mean_true_error']:.2%} | {r['mean_rounds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    del argv
    names = _SCENARIOS.value or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise app.UsageError(f"--scenarios: unknown {unknown}; choose from {list(SCENARIOS)}")
    peeking = [n for n in _PEEKING.value if n]
    if sorted(set(peeking) - set(SCENARIOS)):
        raise app.UsageError(f"--peeking: choose from {list(SCENARIOS)}")
    if _RUNS.value < 1:
        raise app.UsageError("--runs must be ≥ 1")
    jobs = [(n, c, False) for n in names for c in _CONSTRAINTS.value]
    jobs += [(n, c, True) for n in peeking for c in _CONSTRAINTS.value]
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    folder = _WORKDIR.value or tempfile.mkdtemp(prefix="certificate_", dir=shm)
    os.makedirs(folder, exist_ok=True)
    if _OUT.value:
        open(_OUT.value, "w").close()  # this run's rows only
    rows = []
    pool = None
    if _WORKERS.value > 1:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        pool = futures.ProcessPoolExecutor(_WORKERS.value, mp_context=context)
    try:
        for name, constraint, peek in jobs:
            start = time.perf_counter()
            row = run_scenario(
                SCENARIOS[name], constraint, _RUNS.value, peeking=peek, folder=folder, pool=pool
            )
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            print(table([row]).splitlines()[-1], f"({row['seconds']:.0f} s)", flush=True)
            if _OUT.value:
                with open(_OUT.value, "a") as f:
                    f.write(json.dumps(row) + "\n")
    finally:
        if pool is not None:
            pool.shutdown()
        if not _WORKDIR.value:
            shutil.rmtree(folder, ignore_errors=True)
    print(table(rows))


if __name__ == "__main__":
    app.run(main)
