"""Baselines under the same harness, cost model and seeds as MCAL (docs/algorithm.md,
"Baselines").

- Human-only: every item labeled by humans, C_h · N.
- AL(δ): margin active learning with a fixed batch δ. After each round it estimates the
  price of stopping now (step 10 applied with its own T_plan: machine labels above the
  threshold, humans for the rest) and stops when every remaining item could be
  machine-labeled that way or the pool is exhausted, paying what it bought by then.
- Oracle-assisted AL (the paper's): the cheapest AL(δ) over the configured δ grid.
- Hindsight: AL(δ) stopped at the round whose "stop now" price was the cheapest, for the
  best δ: the floor no real user can reach, the yardstick for MCAL.

Every price is a certified final labeling as MCAL's: at its stop AL(δ) labels with the
round's classifier, or trains a final classifier when the config has one (``final_train``),
and certifies it on its own T_cert, sized and drawn as MCAL's (and hindsight does the same
at its round), so the methods are compared on equal terms; the per-round "stop now"
prices, which decide when AL stops, are estimates on T_plan.

The AL runs share MCAL's T_plan (already bought), its random B0 draw and its reserve, and
their labels are simulated through the same labeler without being written to MCAL's
ledger: they price what an AL user would have paid. Like MCAL, AL chooses its batches
from every item outside its B, T_plan's included; a chosen item of T_plan joins its B
(its label was paid with T_plan) and leaves its T_plan. The comparison of the δ done so
far (`mcal_jax.summary.Comparison`) is saved in ``baselines.json`` as soon as each δ is
done, so a rerun skips the finished ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from absl import logging

from mcal_jax import controller
from mcal_jax import profile as profile_lib
from mcal_jax.profile import THETAS
from mcal_jax.records import History
from mcal_jax.run.measure import certified_choice, measure, measure_final
from mcal_jax.run.prepare import Context, Split
from mcal_jax.scores import PoolScores
from mcal_jax.summary import ALResult, Comparison, Hindsight, OracleAL


def stop_now_usd(
    ctx: Context, scores: PoolScores, split: Split, device_usd: float
) -> tuple[float, int]:
    """(price, machine-labeled items) of stopping after this round, as AL(δ) estimates it:
    step 10 applied with its own T_plan (the labels it reads, so an estimate, not a
    certificate): human labels for T_plan, B and every item of U below the threshold,
    plus the device time spent so far."""
    test_indices, test_labels = split.test
    choice = certified_choice(ctx.settings, scores, split.unlabeled, test_indices, test_labels)
    machine = min(choice.num_machine, len(split.unlabeled))
    humans = ctx.num_items - machine
    return humans * ctx.settings.usd_per_label + device_usd, machine


def active_learning(ctx: Context, model: str, fraction: float, max_rounds: int) -> ALResult:
    """AL(δ = ``fraction`` · N) from MCAL's B0, at most ``max_rounds`` rounds; priced as
    MCAL is, by a certified final labeling at its stop (see `final_usd`)."""
    delta = max(1, int(round(fraction * ctx.num_items)))
    labeled = np.asarray(ctx.initial_batch)
    labels = ctx.labeler.label(labeled)
    device_usd, prices, sizes, spent, rounds = 0.0, [], [], [], []
    teacher: PoolScores | None = None  # the previous round's scores, for a semi-supervised round
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
        rounds.append((m.scores, m.profile, len(split.test[0])))
        logging.info(
            "AL(δ=%d) round %d: |B|=%d, stop-now %.2f USD, %d machine-labeled",
            delta, round_index, len(labeled), price, machine,
        )  # fmt: skip
        if machine >= len(unlabeled):  # everything left is machine-labeled (or nothing is left)
            break
        batch = m.scores.least_confident(
            split.candidates, min(delta, len(unlabeled)), ctx.tie_order
        )
        labeled = np.concatenate([labeled, batch])
        labels = np.concatenate([labels, ctx.labeler.label(batch)])  # T_plan's items: as bought
    last, best = len(prices) - 1, int(np.argmin(prices))
    final = {
        k: final_usd(ctx, model, labeled[: sizes[k]], labels[: sizes[k]], spent[k], k + 1,
                     *rounds[k])
        for k in sorted({last, best})
    }  # fmt: skip
    (total, machine), (at_best, _) = final[last], final[best]
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
    scores: PoolScores,
    profile: profile_lib.ErrorProfile,
    test_size: int,
) -> tuple[float, int]:
    """(price, machine-labeled items) of stopping with ``labeled`` as B and labeling as
    MCAL's step 10 does: with the round's ``scores``, or with a final classifier trained
    with the run's ``final_train`` recipe on B and what is left of T_plan; then T_cert from
    the reserve, sized from the round's errors on T_plan at the labeling classifier's
    confidence levels (`controller.certificate_size`), bought (simulated, outside the
    ledger) and read once. ``profile`` (on T_plan's ``test_size`` items) is the round's."""
    split = Split.of(ctx, labeled)
    settings = ctx.settings
    labeling = scores
    if settings.final_train is not None:
        train = (np.concatenate([labeled, split.test[0]]), np.concatenate([labels, split.test[1]]))
        test = (np.zeros(0, np.int64), np.zeros(0, np.int32))  # it scores what is left
        if settings.certify_on == "plan":  # T_plan certifies: it neither trains nor is left
            train, test = (labeled, labels), split.test
        *teachers, m = measure_final(
            ctx, model, *train, split.unlabeled, round_index, settings.final_train, test=test
        )
        device_usd += sum(t.training_usd + t.scoring_usd for t in (*teachers, m))
        labeling = m.scores
    if settings.certify_on == "plan":
        cert = split.test[0]
    else:
        test_indices, test_labels = split.test
        test_confidence, test_predicted = scores.scores_of(test_indices)
        at_its_confidence = labeling.profile(
            split.unlabeled,
            test_confidence,
            test_predicted == test_labels,
            thetas=profile_lib.CERTIFY_THETAS,
        )
        history = History.start(THETAS, settings.delta0).append_round(
            len(labeled), profile.test_errors, profile.test_counts, 0.0, 1.0, 0.0,
            test_size=test_size,
        )  # fmt: skip
        size = controller.certificate_size(settings.controller, history, at_its_confidence)
        cert = ctx.cert_candidates(size, labeled)
    left = np.setdiff1d(split.unlabeled, cert)
    cert_labels = ctx.labeler.label(cert) if len(cert) else np.zeros(0, np.int32)
    choice = certified_choice(settings, labeling, left, cert, cert_labels)
    humans = ctx.num_items - choice.num_machine
    return humans * settings.usd_per_label + device_usd, choice.num_machine


def compare(al: Mapping[str, ALResult], human_only_usd: float) -> Comparison:
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
    return Comparison(
        al=dict(al),
        human_only=human_only_usd,
        oracle_al=OracleAL(delta_fraction=oracle.delta_fraction, total_usd=oracle.total_usd),
        hindsight=Hindsight(
            total_usd=hindsight[0], delta_fraction=hindsight[1].delta_fraction, round=hindsight[2]
        ),
    )


def run_baselines(ctx: Context, model: str) -> Comparison:
    """AL(δ) for every configured δ with ``model``, then the comparison; resumes from and
    saves to ``baselines.json`` after each δ."""
    settings = ctx.settings
    if settings.baselines is None:
        raise ValueError("run_baselines: the config does not ask for baselines")
    saved = ctx.workdir.read_baselines()
    al = {} if saved is None else dict(saved.al)
    human_only = settings.num_items * settings.usd_per_label
    for fraction in _unfinished(settings.baselines.delta_fractions, al):
        al[f"{fraction:g}"] = active_learning(ctx, model, fraction, settings.baselines.max_rounds)
        ctx.workdir.write_baselines(compare(al, human_only))
    result = compare(al, human_only)
    ctx.workdir.write_baselines(result)
    return result


def _unfinished(fractions: Sequence[float], done: Mapping[str, ALResult]) -> list[float]:
    return [f for f in fractions if f"{f:g}" not in done]
