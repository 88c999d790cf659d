"""Baselines under the same harness, cost model and seeds as MCAL (docs/algorithm.md,
"Baselines").

- Human-only: every item labeled by humans, C_h · N.
- AL(δ): margin active learning with a fixed batch δ. After each round it prices "stop
  now" (step 10 with the current model: certified machine labels above the threshold,
  humans for the rest) and stops when every remaining item can be machine-labeled under
  the bound or the pool is exhausted, paying what it bought by then.
- Oracle-assisted AL (the paper's): the cheapest AL(δ) over the configured δ grid.
- Hindsight: the cheapest "stop now" price over every δ and round: the floor no real user
  can reach, the yardstick for MCAL.

The AL runs share MCAL's T (already bought) and its random B0 draw, and their labels are
simulated through the same labeler without being written to MCAL's ledger: they price
what an AL user would have paid. Each δ's result is saved in ``baselines.json`` as soon
as it is done, so a rerun skips the finished ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from absl import logging

from mcal_jax import profile as profile_lib
from mcal_jax.run.finish import certified_choice
from mcal_jax.run.measure import least_confident, measure
from mcal_jax.run.prepare import Context
from mcal_jax.run.settings import Settings
from mcal_jax.run.state import ALResult


def stop_now_usd(
    settings: Settings,
    profile: profile_lib.ErrorProfile,
    num_labeled: int,
    num_unlabeled: int,
    device_usd: float,
) -> tuple[float, int]:
    """(price, machine-labeled items) of stopping after this round (step 10 applied now):
    human labels for T, B and every item of U below the certified threshold, plus the
    device time spent so far."""
    machine = min(certified_choice(settings, profile).num_machine, num_unlabeled)
    humans = settings.num_test + num_labeled + (num_unlabeled - machine)
    return humans * settings.usd_per_label + device_usd, machine


def active_learning(ctx: Context, model: str, fraction: float, max_rounds: int) -> ALResult:
    """AL(δ = ``fraction`` · N) from MCAL's B0, at most ``max_rounds`` rounds."""
    delta = max(1, int(round(fraction * ctx.num_items)))
    labeled = np.asarray(ctx.initial_batch)
    labels = ctx.labeler.label(labeled)
    device_usd, prices, sizes, machine = 0.0, [], [], 0
    for round_index in range(1, max_rounds + 1):
        unlabeled = ctx.unlabeled(labeled)
        m = measure(ctx, model, labeled, labels, unlabeled, round_index)
        device_usd += m.training_usd + m.scoring_usd
        price, machine = stop_now_usd(
            ctx.settings, m.profile, len(labeled), len(unlabeled), device_usd
        )
        prices.append(price)
        sizes.append(len(labeled))
        logging.info(
            "AL(δ=%d) round %d: |B|=%d, stop-now %.2f USD, %d machine-labeled",
            delta, round_index, len(labeled), price, machine,
        )  # fmt: skip
        if machine >= len(unlabeled):  # everything left is machine-labeled (or nothing is left)
            break
        batch = least_confident(m.scores, unlabeled, min(delta, len(unlabeled)))
        labeled = np.concatenate([labeled, batch])
        labels = np.concatenate([labels, ctx.labeler.label(batch)])
    return ALResult(
        delta_fraction=float(fraction),
        delta=delta,
        total_usd=prices[-1],
        rounds=len(prices),
        train_size=sizes[-1],
        machine=machine,
        stop_now_usd=tuple(prices),
        train_sizes=tuple(sizes),
    )


def compare(al: Mapping[str, ALResult], human_only_usd: float) -> dict:
    """Oracle-assisted AL (the cheapest AL(δ) total) and hindsight (the cheapest "stop now"
    over every δ and round), next to every AL(δ) and human-only labeling."""
    if not al:
        raise ValueError("compare: no AL(δ) results")
    oracle = min(al.values(), key=lambda r: r.total_usd)
    hindsight = min(
        ((price, r, i + 1) for r in al.values() for i, price in enumerate(r.stop_now_usd)),
        key=lambda item: item[0],
    )
    return {
        "al": {key: dataclasses.asdict(r) for key, r in al.items()},
        "human_only": human_only_usd,
        "oracle_al": {"delta_fraction": oracle.delta_fraction, "total_usd": oracle.total_usd},
        "hindsight": {
            "total_usd": hindsight[0],
            "delta_fraction": hindsight[1].delta_fraction,
            "round": hindsight[2],
        },
    }


def run_baselines(ctx: Context, model: str) -> dict:
    """AL(δ) for every configured δ with ``model``, then the comparison; resumes from and
    saves to ``baselines.json`` after each δ."""
    settings = ctx.settings
    if settings.baselines is None:
        raise ValueError("run_baselines: the config does not ask for baselines")
    saved = ctx.workdir.read_baselines() or {}
    al = {}
    for key, value in saved.get("al", {}).items():
        try:
            al[key] = ALResult.from_json(value)
        except TypeError:
            continue  # written by another version: run it again
    for fraction in _unfinished(settings.baselines.delta_fractions, al):
        al[f"{fraction:g}"] = active_learning(ctx, model, fraction, settings.baselines.max_rounds)
        ctx.workdir.write_baselines({"al": {k: dataclasses.asdict(r) for k, r in al.items()}})
    result = compare(al, settings.num_items * settings.usd_per_label)
    ctx.workdir.write_baselines(result)
    return result


def _unfinished(fractions: Sequence[float], done: Mapping[str, ALResult]) -> list[float]:
    return [f for f in fractions if f"{f:g}" not in done]
