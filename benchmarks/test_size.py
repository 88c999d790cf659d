r"""What a certifying test set of another size would have cost: finished runs re-certified
with random subsets of their own T_cert, holding their B and their labeling classifier's
scores fixed.

    python -m benchmarks.test_size --workdirs='/tmp/sweeps/fmnist_cpu/*' \
        --fractions=0.01,0.015,0.02,0.025,0.03,0.04,0.05 --draws=100

A larger T_cert tightens the bound of step 10 (docs/algorithm.md) and so certifies more
machine labels, but each of its items is a human label. For each finished run of
``--workdirs`` (globs) and each fraction f of N no larger than the run's own |T_cert|,
``--draws`` times: T' is a random f·N items of the run's T_cert; the rest of T_cert joins U
(it could then be machine-labeled, as any item outside T_plan, B and T'); the threshold is
certified on T' exactly as step 10 does (fixed-sequence testing on the pre-set grid, the
run's ε, constraint and 1 − α); and the bill is the human labels of everything not
machine-labeled plus the run's device cost. (A run that certified on T_plan,
``mcal.certify_on = "plan"``, is re-certified with subsets of T_plan.) The ground truth
(the data set's labels, so simulated runs only) gives the true error of each labeling and
whether it broke ε.

With ``--fresh``, T' is instead drawn as step 10 draws T_cert: uniformly from every item
outside T_plan and B (the run's T_cert among them), so fractions above the run's own
|T_cert| are possible, and at the run's own size the spread of the bill is the luck of its
T_cert's draw (the rest of those items is U, as above).

It prints, per fraction: the bill's mean ± std over runs and draws, |S|, the true and
certified overall error and the rate of labelings whose true error exceeds ε (it should
stay ≤ α). The step-10 choice of |T_cert| is the run's plan; this shows what other sizes
would have cost on the same run.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import app, flags

from mcal_jax import profile
from mcal_jax.ledger import Ledger
from mcal_jax.report import read_run_json
from mcal_jax.run.prepare import load_data
from mcal_jax.run.workdir import Workdir
from mcal_jax.scores import Scores
from mcal_jax.summary import read_summary

_WORKDIRS = flags.DEFINE_list("workdirs", None, "finished runs (globs)")
_FRACTIONS = flags.DEFINE_list(
    "fractions", ["0.01", "0.015", "0.02", "0.025", "0.03", "0.04", "0.05"], "|T'| / N"
)
_DRAWS = flags.DEFINE_integer("draws", 100, "random subsets of T_cert per run and fraction")
_SEED = flags.DEFINE_integer("seed", 0, "seed of the subsets")
_FRESH = flags.DEFINE_bool("fresh", False, "draw T' from all items outside T_plan and B")


@dataclasses.dataclass(frozen=True)
class Labeling:
    """One re-certification: its bill, machine-labeled items, true and certified overall
    error (over N), and the ε it was held to."""

    usd: float
    machine: int
    true_error: float
    bound: float
    epsilon: float


@dataclasses.dataclass(frozen=True, eq=False)
class FinishedRun:
    """What re-certifying a finished run needs, read once: the ground truth, the test set
    that certified, the other labeled items (T_plan and B), the labeling classifier's
    scores, the device cost spent and the run's terms."""

    truth: np.ndarray
    test: np.ndarray
    train: np.ndarray
    scores: Scores
    device_usd: float
    usd_per_label: float
    epsilon: float
    constraint: str
    confidence: float  # 1 − α


def load_run(workdir: str) -> FinishedRun:
    """Reads a finished run (read only)."""
    unfinished = f"{workdir} is not a finished MCAL run"
    summary = read_summary(os.path.join(workdir, "summary.json"))
    if summary is None:
        raise FileNotFoundError(f"{workdir}/summary.json not found: {unfinished}")
    config = read_run_json(os.path.join(workdir, "config.json"), unfinished)
    files = Workdir(workdir, writer=False)
    final = files.read_final()
    if final is None:
        raise FileNotFoundError(f"{workdir}/final.json not found: {unfinished}")
    ledger = Ledger(os.path.join(workdir, "ledger.jsonl"), writer=False)
    totals = ledger.totals()
    plan_test, train = ledger.bought("test")[0], ledger.bought("train")[0]
    on_plan = config["mcal"].get("certify_on") == "plan"
    test = plan_test if on_plan else ledger.bought("certify")[0]
    return FinishedRun(
        truth=np.asarray(load_data(ml_collections.ConfigDict(config))[0].labels),
        test=test,
        train=train if on_plan else np.concatenate([train, plan_test]),
        scores=Scores(*files.load_scores(final.stage).whole()),
        device_usd=totals["training"] + totals["scoring"],
        usd_per_label=summary.usd_per_label,
        epsilon=summary.epsilon,
        constraint=summary.constraint,
        confidence=config["mcal"]["confidence"],
    )


def recertify(
    run: FinishedRun, fraction: float, draws: int, rng: np.random.Generator, fresh: bool = False
) -> list[Labeling]:
    """``draws`` re-certifications of ``run`` with T' = ``fraction``·N items of its T, or
    with ``fresh`` of everything outside T_plan and B; empty when there are not so many."""
    n = len(run.truth)
    size = int(round(fraction * n))
    outside = np.setdiff1d(np.arange(n), np.concatenate([run.test, run.train]))
    drawn_from = np.concatenate([outside, run.test]) if fresh else run.test
    most = len(drawn_from) - 1 if fresh else len(run.test)  # fresh: leave U an item
    if not 1 <= size <= most:
        return []
    confidence, predicted = run.scores.confidence, run.scores.predicted
    results = []
    for _ in range(draws):
        order = rng.permutation(drawn_from)
        chosen, left = order[:size], order[size:]
        pool = left if fresh else np.concatenate([outside, left])
        choice = profile.certify(
            confidence[pool],
            confidence[chosen],
            predicted[chosen] == run.truth[chosen],
            epsilon=run.epsilon,
            constraint=run.constraint,
            num_items=n,
            confidence=run.confidence,
        )
        machine = pool[confidence[pool] >= choice.threshold]
        wrong = int(np.sum(predicted[machine] != run.truth[machine]))
        subset = run.constraint == "machine_subset"
        results.append(
            Labeling(
                usd=run.usd_per_label * (n - len(machine)) + run.device_usd,
                machine=len(machine),
                true_error=wrong / n,
                bound=choice.upper_bound * len(machine) / n,
                epsilon=run.epsilon * len(machine) / n if subset else run.epsilon,
            )
        )
    return results


def main(argv: Sequence[str]) -> None:
    del argv
    workdirs = sorted(w for pattern in _WORKDIRS.value or () for w in glob.glob(pattern))
    workdirs = [w for w in workdirs if os.path.exists(os.path.join(w, "summary.json"))]
    if not workdirs:
        raise app.UsageError(f"--workdirs={_WORKDIRS.value}: no finished run found")
    runs = [load_run(w) for w in workdirs]
    rng = np.random.default_rng(_SEED.value)
    print(f"{len(workdirs)} runs, {_DRAWS.value} draws each")
    print("| \\|T'\\| / N | bill USD | \\|S\\| | true error | bound | true error > ε |")
    print("|---|---|---|---|---|---|")
    for fraction in map(float, _FRACTIONS.value):
        found = [x for r in runs for x in recertify(r, fraction, _DRAWS.value, rng, _FRESH.value)]
        if not found:
            print(f"| {fraction:.2%} | (no run has so large a T) | | | | |")
            continue
        usd = np.array([x.usd for x in found])
        print(
            f"| {fraction:.2%} | {usd.mean():.2f} ± {usd.std():.2f} "
            f"| {np.mean([x.machine for x in found]):,.0f} "
            f"| {np.mean([x.true_error for x in found]):.2%} "
            f"| {np.mean([x.bound for x in found]):.2%} "
            f"| {np.mean([x.true_error > x.epsilon for x in found]):.1%} |",
            flush=True,
        )


if __name__ == "__main__":
    flags.mark_flag_as_required("workdirs")
    app.run(main)
