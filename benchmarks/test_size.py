r"""What a test set of another size would have cost: finished runs re-certified with random
subsets of their own T, holding their B and their labeling classifier's scores fixed.

    python -m benchmarks.test_size --workdirs='/tmp/sweeps/fmnist_cpu/*' \
        --fractions=0.01,0.015,0.02,0.025,0.03,0.04,0.05 --draws=100

A larger T tightens the bound of step 10 (docs/algorithm.md) and so certifies more machine
labels, but each of its items is a human label. For each finished run of ``--workdirs``
(globs) and each fraction f of N no larger than the run's own |T|, ``--draws`` times: T' is
a random f·N items of the run's T; the rest of T joins U (it could then be machine-labeled,
as any item outside T and B); the threshold is certified on T' exactly as step 10 does
(fixed-sequence testing on the pre-set grid, the run's ε, constraint and 1 − α, α not
split); and the bill is the human labels of everything not machine-labeled plus the run's
device cost. The ground truth (the data set's labels, so simulated runs only) gives the
true error of each labeling and whether it broke ε.

It prints, per fraction: the bill's mean ± std over runs and draws, |S|, the true and
certified overall error and the rate of labelings whose true error exceeds ε (it should
stay ≤ α). The runs' own B was bought under their own T, so this isolates the test set's
price and precision from the rounds: a run with a smaller T also plans differently.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os

import ml_collections
import numpy as np
from absl import app, flags

from mcal_jax import profile
from mcal_jax.ledger import Ledger
from mcal_jax.run.prepare import load_data
from mcal_jax.run.workdir import Workdir

_WORKDIRS = flags.DEFINE_list("workdirs", None, "finished runs (globs)")
_FRACTIONS = flags.DEFINE_list(
    "fractions", ["0.01", "0.015", "0.02", "0.025", "0.03", "0.04", "0.05"], "|T'| / N"
)
_DRAWS = flags.DEFINE_integer("draws", 100, "random subsets of T per run and fraction")
_SEED = flags.DEFINE_integer("seed", 0, "seed of the subsets")


@dataclasses.dataclass(frozen=True)
class Labeling:
    """One re-certification: its bill, machine-labeled items, true and certified overall
    error (over N), and the ε it was held to."""

    usd: float
    machine: int
    true_error: float
    bound: float
    epsilon: float


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def recertify(
    workdir: str, fraction: float, draws: int, rng: np.random.Generator
) -> list[Labeling]:
    """``draws`` re-certifications of a finished run with T' = ``fraction``·N items of its
    T; empty when the run's T is smaller than that."""
    summary = _read_json(os.path.join(workdir, "summary.json"))
    config = ml_collections.ConfigDict(_read_json(os.path.join(workdir, "config.json")))
    truth = np.asarray(load_data(config)[0].labels)
    n = len(truth)
    ledger = Ledger(os.path.join(workdir, "ledger.jsonl"), writer=False)
    test = ledger.bought("test")[0]
    train = ledger.bought("train")[0]
    size = int(round(fraction * n))
    if size > len(test) or size < 1:
        return []
    files = Workdir(workdir, writer=False)
    final = files.read_final()
    if final is None:
        raise FileNotFoundError(f"{workdir}/final.json: not a finished run")
    scores = files.load_scores(final.stage)
    totals = ledger.totals()
    device_usd = totals["training"] + totals["scoring"]
    price = summary["usd_per_label"]
    epsilon, constraint = summary["epsilon"], summary["constraint"]
    outside = np.setdiff1d(np.arange(n), np.concatenate([test, train]))
    results = []
    for _ in range(draws):
        chosen = rng.permutation(test)[:size]
        pool = np.concatenate([outside, np.setdiff1d(test, chosen)])
        choice = profile.choose_machine_threshold(
            profile.error_profile(
                scores.confidence[pool],
                scores.confidence[chosen],
                scores.predicted[chosen] == truth[chosen],
                thetas=profile.CERTIFY_THETAS,
            ),
            epsilon=epsilon,
            constraint=constraint,
            num_items=n,
            confidence=config.mcal.confidence,
        )
        machine = pool[scores.confidence[pool] >= choice.threshold]
        wrong = int(np.sum(scores.predicted[machine] != truth[machine]))
        results.append(
            Labeling(
                usd=price * (n - len(machine)) + device_usd,
                machine=len(machine),
                true_error=wrong / n,
                bound=choice.upper_bound * len(machine) / n,
                epsilon=epsilon if constraint == "overall" else epsilon * len(machine) / n,
            )
        )
    return results


def main(argv):
    del argv
    workdirs = sorted(w for pattern in _WORKDIRS.value or () for w in glob.glob(pattern))
    workdirs = [w for w in workdirs if os.path.exists(os.path.join(w, "summary.json"))]
    if not workdirs:
        raise app.UsageError(f"--workdirs={_WORKDIRS.value}: no finished run found")
    rng = np.random.default_rng(_SEED.value)
    print(f"{len(workdirs)} runs, {_DRAWS.value} draws each")
    print("| \\|T'\\| / N | bill USD | \\|S\\| | true error | bound | true error > ε |")
    print("|---|---|---|---|---|---|")
    for fraction in map(float, _FRACTIONS.value):
        found = [x for w in workdirs for x in recertify(w, fraction, _DRAWS.value, rng)]
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
