"""Baselines under the same harness, cost model and seeds as MCAL (docs/algorithm.md,
"Baselines").

- Human-only: every item labeled by humans, C_h · N.
- AL(δ): margin active learning with a fixed batch δ. After each round it prices "stop
  now" (step 10 with the current model: certified machine labels above the threshold,
  humans for the rest) and stops when every remaining item can be machine-labeled under
  the bound or the pool is exhausted, paying what it bought by then.
- Oracle-assisted AL (the paper's): the cheapest AL(δ) over the configured δ grid.
- Hindsight: AL(δ) stopped at the round whose "stop now" price was the cheapest, for the
  best δ: the floor no real user can reach, the yardstick for MCAL.

Every price is a final labeling as MCAL's: when the config trains a final classifier
(``final_train``), AL(δ) trains one at its stop too (and hindsight at its round), so the
methods are compared on equal terms; the per-round "stop now" prices, which decide when
AL stops, use the round's own classifier.

The AL runs share MCAL's T (already bought) and its random B0 draw, and their labels are
simulated through the same labeler without being written to MCAL's ledger: they price
what an AL user would have paid. Like MCAL, AL chooses its batches from every item
outside its B, T's included; a chosen item of T joins its B (its label was paid with T)
and leaves its T. Each δ's result is saved in ``baselines.json`` as soon
as it is done, so a rerun skips the finished ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from absl import logging

from mcal_jax.run.measure import certified_choice, least_confident, measure, measure_final
from mcal_jax.run.prepare import Context, Split
from mcal_jax.run.state import ALResult
from mcal_jax.scoring import Scores


def stop_now_usd(
    ctx: Context, scores: Scores, split: Split, device_usd: float
) -> tuple[float, int]:
    """(price, machine-labeled items) of stopping after this round (step 10 applied now):
    human labels for T (as bought), B and every item of U below the certified threshold,
    plus the device time spent so far."""
    test_indices, test_labels = split.test
    choice = certified_choice(ctx.settings, scores, split.unlabeled, test_indices, test_labels)
    machine = min(choice.num_machine, len(split.unlabeled))
    humans = ctx.num_items - machine
    return humans * ctx.settings.usd_per_label + device_usd, machine


def active_learning(ctx: Context, model: str, fraction: float, max_rounds: int) -> ALResult:
    """AL(δ = ``fraction`` · N) from MCAL's B0, at most ``max_rounds`` rounds; priced as
    MCAL is, by a final labeling at its stop (see `final_usd`)."""
    delta = max(1, int(round(fraction * ctx.num_items)))
    labeled = np.asarray(ctx.initial_batch)
    labels = ctx.labeler.label(labeled)
    device_usd, prices, sizes, spent, machine = 0.0, [], [], [], 0
    teacher: Scores | None = None  # the previous round's scores, for a semi-supervised round
    for round_index in range(1, max_rounds + 1):
        split = Split.of(ctx, labeled)
        unlabeled = split.unlabeled
        m = measure(
            ctx, model, labeled, labels, unlabeled, round_index, teacher=teacher, test=split.test
        )
        teacher = m.scores
        device_usd += m.training_usd + m.scoring_usd
        price, machine = stop_now_usd(ctx, m.scores, split, device_usd)
        prices.append(price)
        sizes.append(len(labeled))
        spent.append(device_usd)
        logging.info(
            "AL(δ=%d) round %d: |B|=%d, stop-now %.2f USD, %d machine-labeled",
            delta, round_index, len(labeled), price, machine,
        )  # fmt: skip
        if machine >= len(unlabeled):  # everything left is machine-labeled (or nothing is left)
            break
        batch = least_confident(m.scores, split.candidates, min(delta, len(unlabeled)))
        labeled = np.concatenate([labeled, batch])
        labels = np.concatenate([labels, ctx.labeler.label(batch)])  # T's items: as bought
    last, best = len(prices) - 1, int(np.argmin(prices))
    final = [
        final_usd(ctx, model, labeled[: sizes[k]], labels[: sizes[k]], spent[k], k + 1)
        if ctx.settings.final_train is not None
        else (prices[k], machine)
        for k in sorted({last, best})
    ]
    (total, machine), (at_best, _) = final[-1], final[0]
    return ALResult(
        delta_fraction=float(fraction),
        delta=delta,
        total_usd=total,
        rounds=len(prices),
        train_size=sizes[last],
        machine=machine,
        stop_now_usd=tuple(prices),
        train_sizes=tuple(sizes),
        best_round=best + 1,
        best_round_usd=at_best,
    )


def final_usd(
    ctx: Context,
    model: str,
    labeled: np.ndarray,
    labels: np.ndarray,
    device_usd: float,
    round_index: int,
) -> tuple[float, int]:
    """(price, machine-labeled items) of stopping with ``labeled`` as B and labeling with a
    final classifier trained on it with the run's ``final_train`` recipe, as MCAL does
    (`measure.measure_final`)."""
    split = Split.of(ctx, labeled)
    recipe = ctx.settings.final_train
    assert recipe is not None
    *teachers, m = measure_final(
        ctx, model, labeled, labels, split.unlabeled, round_index, recipe, test=split.test
    )
    device_usd += sum(t.training_usd + t.scoring_usd for t in (*teachers, m))
    return stop_now_usd(ctx, m.scores, split, device_usd)


def compare(al: Mapping[str, ALResult], human_only_usd: float) -> dict:
    """Oracle-assisted AL (the cheapest AL(δ) total) and hindsight (stopping AL(δ) at its
    round of cheapest "stop now", for the best δ), next to every AL(δ) and human-only."""
    if not al:
        raise ValueError("compare: no AL(δ) results")
    oracle = min(al.values(), key=lambda r: r.total_usd)
    hindsight = min(
        [(r.best_round_usd, r, r.best_round) for r in al.values()]
        + [(r.total_usd, r, r.rounds) for r in al.values()],
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
