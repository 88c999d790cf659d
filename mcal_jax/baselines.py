"""Baselines under the same harness, cost model and seeds as MCAL (MCAL_SPEC.md, "Baselines").

- Human-only: every item labeled by humans, C_h · N.
- AL(δ): margin active learning with a fixed batch δ. After each round it prices "stop
  now" (spec step 10 with the current model: certified machine labels above the threshold,
  humans for the rest) and stops when every remaining item can be machine-labeled under
  the bound or the pool is exhausted, paying what it bought by then.
- Oracle-assisted AL (the paper's): the cheapest AL(δ) over the configured δ grid.
- Hindsight: the cheapest "stop now" price over every δ and round: the floor no real user
  can reach, the yardstick for MCAL.

The AL runs share MCAL's T (already bought) and its random B0 draw, and their labels are
simulated through the same labeler without being written to MCAL's ledger: they price
what an AL user would have paid. Each δ's result is stored in ``state.json`` as soon as it
is done, so a rerun skips the finished ones.
"""

from __future__ import annotations

import numpy as np
from absl import logging

from mcal_jax import profile as profile_lib


def stop_now_usd(setup, profile, num_labeled: int, num_unlabeled: int, spent_device_usd: float):
    """The price of stopping after this round (spec step 10 applied now): human labels for
    T, B and everything of U below the certified threshold, plus device spend so far."""
    m = setup.config.mcal
    choice = profile_lib.choose_machine_threshold(
        profile,
        epsilon=m.epsilon,
        constraint=m.constraint,
        num_items=setup.num_items,
        confidence=m.confidence,
    )
    machine = min(choice.num_machine, num_unlabeled)
    humans = len(setup.test_indices) + num_labeled + (num_unlabeled - machine)
    return humans * setup.labeler.usd_per_label + spent_device_usd, machine


def active_learning(setup, model: str, delta: int, max_rounds: int) -> dict:
    """AL(δ) from B0 with a fixed δ; returns its price and its per-round "stop now" prices."""
    from mcal_jax.run import least_confident, measure_round  # the loop's own round

    labeler = setup.labeler
    labeled = np.asarray(setup.initial_batch)
    labels = labeler.label(labeled)
    device_usd = 0.0
    rounds = []
    for round_index in range(1, max_rounds + 1):
        mask = np.ones(setup.num_items, bool)
        mask[setup.test_indices] = False
        mask[labeled] = False
        unlabeled = np.flatnonzero(mask)
        seed = setup.config.seed * 1000 + round_index
        m = measure_round(setup, model, labeled, labels, unlabeled, seed)
        device_usd += m.training_usd + m.scoring_usd
        price, machine = stop_now_usd(setup, m.profile, len(labeled), len(unlabeled), device_usd)
        rounds.append({"train_size": len(labeled), "stop_now_usd": price, "machine": machine})
        logging.info(
            "AL(δ=%d) round %d: |B|=%d, stop-now %.2f USD, %d machine-labeled",
            delta, round_index, len(labeled), price, machine,
        )  # fmt: skip
        if machine >= len(unlabeled) or len(unlabeled) == 0:
            break
        batch = least_confident(m.scores, unlabeled, min(delta, len(unlabeled)))
        labeled = np.concatenate([labeled, batch])
        labels = np.concatenate([labels, labeler.label(batch)])
    return {
        "delta": delta,
        "total_usd": rounds[-1]["stop_now_usd"],
        "rounds": len(rounds),
        "train_size": rounds[-1]["train_size"],
        "machine": rounds[-1]["machine"],
        "stop_now_usd": [r["stop_now_usd"] for r in rounds],
        "train_sizes": [r["train_size"] for r in rounds],
    }


def run_baselines(setup, model: str, state: dict, save) -> dict:
    """AL(δ) for every configured δ, then oracle-assisted AL and hindsight. ``state`` holds
    finished δs (resume); ``save(state)`` persists it after each."""
    config = setup.config
    results = state.setdefault("baselines", {}).setdefault("al", {})
    for fraction in config.baselines.delta_fractions:
        key = f"{fraction:g}"
        if key in results:
            continue
        delta = max(1, int(round(fraction * setup.num_items)))
        results[key] = active_learning(setup, model, delta, config.baselines.max_rounds)
        results[key]["delta_fraction"] = fraction
        save(state)
    oracle_key = min(results, key=lambda k: results[k]["total_usd"])
    hindsight = min(
        (
            (price, key, i + 1)
            for key, result in results.items()
            for i, price in enumerate(result["stop_now_usd"])
        ),
        key=lambda item: item[0],
    )
    baselines = state["baselines"]
    baselines["human_only"] = setup.num_items * setup.labeler.usd_per_label
    baselines["oracle_al"] = {
        "delta_fraction": results[oracle_key]["delta_fraction"],
        "total_usd": results[oracle_key]["total_usd"],
    }
    baselines["hindsight"] = {
        "total_usd": hindsight[0],
        "delta_fraction": results[hindsight[1]]["delta_fraction"],
        "round": hindsight[2],
    }
    save(state)
    return baselines
