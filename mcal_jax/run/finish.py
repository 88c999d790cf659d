"""The end of a run (docs/algorithm.md, step 10): train the final classifier when the
config asks for one, buy T_cert and certify the machine-labeling threshold on it, once,
machine-label the items above it, buy human labels for the rest, and write
``labels.npz``, ``labels.csv`` and ``summary.json``.

Idempotent: what is left to label is taken from the test, training and certificate
purchases only (never the residual), T_cert's size is the last round's decision, and the
decision is saved in ``final.json`` before the residual is bought, so a rerun of a
half-finished or finished run makes the same decision, buys nothing twice, and writes the
same files (a finished run's files are left untouched).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence

import numpy as np
from absl import logging

from mcal_jax import controller
from mcal_jax import profile as profile_lib
from mcal_jax.run import labeling, state
from mcal_jax.run.measure import certified_choice, charge, measure_final
from mcal_jax.run.prepare import Context
from mcal_jax.scores import PoolScores
from mcal_jax.summary import (
    Budget,
    Comparison,
    Costs,
    Counts,
    ErrorBounds,
    Fractions,
    MachineFraction,
    Summary,
    Threshold,
    at_chance,
)


def training_labels(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """The labels the final classifier trains on: B, and T_plan too when T_cert certifies
    (T_plan's labels have done their work for the plans; the certificate never reads them)."""
    train = ctx.ledger.bought("train")
    if ctx.settings.certify_on == "plan":
        return train
    test = ctx.test_set()
    return np.concatenate([train[0], test[0]]), np.concatenate([train[1], test[1]])


def final_scores(ctx: Context, run: state.RunState) -> tuple[str, PoolScores]:
    """(stage, scores) of the classifier that labels: the last round's lead, or, when the
    config sets ``final_train``, a final classifier trained once with that recipe on B
    (and T_plan, `training_labels`), seeded, charged like any training; its scores are
    saved, so a rerun neither trains nor pays again. Its recipe is fixed before any label
    of T_cert is bought, so the certificate stays valid; a semi-supervised recipe trains a
    supervised teacher first (charged as ``final_teacher``, and labeling with the student
    when the recipe says ``teacher_ensemble``), see `measure.measure_final`."""
    last = run.rounds[-1]
    recipe = ctx.settings.final_train
    if recipe is None:
        return f"round{last.round}", ctx.workdir.load_scores(f"round{last.round}")
    saved = ctx.workdir.find_scores("final")
    if saved is not None:
        return "final", saved
    train_indices, train_labels = training_labels(ctx)
    left = ctx.outside(ctx.ledger.bought("train")[0])
    # It scores what is left to label (T_plan with it, when T_plan certifies).
    nothing = np.zeros(0, np.int64), np.zeros(0, np.int32)
    test = nothing if ctx.settings.certify_on == "reserve" else None
    *teachers, m = measure_final(
        ctx, last.lead, train_indices, train_labels, left, last.round, recipe, test=test
    )
    for teacher in teachers:
        charge(ctx, "final_teacher", teacher)
    charge(ctx, "final", m)
    if m.learned.variables is not None:
        ctx.workdir.save_checkpoint("final", last.lead, m.learned.variables)
    if recipe.teacher_ensemble and teachers[0].learned.variables is not None:
        # The teacher labels too: keep it with the student.
        ctx.workdir.save_checkpoint("final_teacher", last.lead, teachers[0].learned.variables)
    ctx.workdir.save_scores("final", m.scores)
    logging.info(
        "final classifier: %d steps on %d labels, %d items to label",
        m.learned.steps,
        m.train_size,
        len(left),
    )
    return "final", m.scores


def certificate_size(ctx: Context, run: state.RunState, scores: PoolScores) -> int:
    """|T_cert| for the labeling classifier's ``scores`` (docs/algorithm.md, step 10): the
    size that makes stopping now cheapest when the error of the items above each of its
    thresholds (every 0.1% of what is left) is the last round's error on T_plan at the same
    confidence. Read from what the loop knows, never from T_cert: a final classifier
    trained on T_plan cannot be measured on it, but where it is as confident as the round's
    model was, it is about as often right (more often, as an ensemble: the safe side)."""
    last = run.rounds[-1]
    round_scores = ctx.workdir.load_scores(f"round{last.round}")
    test_indices, test_labels = ctx.test_set()
    left = ctx.outside(ctx.ledger.bought("train")[0])
    test_confidence, test_predicted = round_scores.scores_of(test_indices)
    at_its_confidence = scores.profile(
        left, test_confidence, test_predicted == test_labels, thetas=profile_lib.CERTIFY_THETAS
    )
    history = run.histories[last.lead]
    return controller.certificate_size(ctx.settings.controller, history, at_its_confidence)


def certification_set(
    ctx: Context, run: state.RunState, scores: PoolScores
) -> tuple[np.ndarray, np.ndarray]:
    """The test labels that certify (docs/algorithm.md, step 10): T_cert, the first
    |T_cert| items of the reserve that B did not take (`certificate_size`), bought now; or,
    when ``certify_on`` is "plan", what is left of T_plan (labels the loop read: the bound
    then no longer holds)."""
    if ctx.settings.certify_on == "plan":
        return ctx.test_set()
    size = certificate_size(ctx, run, scores)
    cert = ctx.cert_candidates(size, ctx.ledger.bought("train")[0])
    key = state.CERT_PURCHASE_KEY
    if cert.size:
        return cert, ctx.ledger.buy(ctx.labeler, cert, purpose="certify", key=key)
    return cert, np.zeros(0, np.int32)


def certify(ctx: Context, run: state.RunState) -> state.FinalLabeling:
    """The certified decision: the labeling classifier's scores, then T_cert bought and
    read once to choose the threshold for the items left outside T_plan, B and T_cert."""
    stage, scores = final_scores(ctx, run)
    test_indices, test_labels = certification_set(ctx, run, scores)
    unlabeled = ctx.outside(ctx.ledger.bought("train")[0], test_indices)
    choice = certified_choice(ctx.settings, scores, unlabeled, test_indices, test_labels)
    machine = scores.above(unlabeled, choice.threshold)
    return state.FinalLabeling(stage, run.rounds[-1].lead, choice, machine.astype(np.int64))


def finish(ctx: Context, run: state.RunState, baselines: Comparison | None = None) -> Summary:
    """Step 10 and the outputs; returns the summary (with ``baselines``, when given)."""
    final = ctx.workdir.read_final()
    if final is None:
        final = certify(ctx, run)
        ctx.workdir.write_final(final)
    human = ctx.ledger.bought("train")[0], ctx.ledger.bought("certify")[0], final.machine
    residual = ctx.outside(*human)
    if len(residual):
        if ctx.settings.labeling.suggestions:
            scores = ctx.workdir.load_scores(final.stage)
            labeling.suggest(ctx.labeler, scores, residual, final.stage)
        ctx.ledger.buy(ctx.labeler, residual, purpose="residual", key=state.RESIDUAL_PURCHASE_KEY)
    confidence, predicted = ctx.workdir.load_scores(final.stage).whole()
    n = ctx.num_items
    human_indices, human_labels = ctx.ledger.labels()
    labels = np.full(n, -1, np.int32)
    source = np.full(n, "human", dtype="<U7")
    labels[human_indices] = human_labels
    labels[final.machine] = predicted[final.machine]
    source[final.machine] = "machine"
    if np.any(labels < 0):
        raise RuntimeError(f"{int(np.sum(labels < 0))} items ended without a label")
    ctx.workdir.write_labels(index=np.arange(n), label=labels, source=source, confidence=confidence)
    ctx.workdir.write_labels_csv(labels_csv(ctx.paths, ctx.classes, labels, source, confidence))
    summary = _summary(ctx, run, final, labels, baselines)
    ctx.workdir.write_summary(summary)
    return summary


def labels_csv(
    paths: Sequence[str],
    classes: Sequence[str],
    labels: np.ndarray,
    source: np.ndarray,
    confidence: np.ndarray,
) -> str:
    """``labels.csv``, one row an item in pool order: ``path`` (the item's file, or its
    index when the pool was not read from files), ``label`` (the class name), ``source``
    (human or machine) and ``confidence`` (the labeling classifier's, by the metric M; 0
    for the items it was trained on and did not score: B, and T_plan under a final
    classifier)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "label", "source", "confidence"])
    for i, (label, by, score) in enumerate(zip(labels, source, confidence, strict=True)):
        writer.writerow([paths[i] if paths else i, classes[label], by, f"{float(score):.6g}"])
    return out.getvalue()


def warn_if_at_chance(choice: profile_lib.MachineLabelingChoice, num_classes: int) -> bool:
    """Warns (and returns True) when the machine labels' own error bound is no better than
    guessing: the overall constraint can certify a few such labels among many human ones,
    but they are then no evidence that the classifier learned anything."""
    if not at_chance(choice.upper_bound, choice.num_machine, num_classes):
        return False
    logging.warning(
        "the machine-labeled items' error bound %.1f%% is at or above chance error %.1f%%: "
        "the %d machine labels are certified only through the overall constraint",
        100 * choice.upper_bound,
        100 * (1 - 1 / num_classes),
        choice.num_machine,
    )
    return True


def _summary(
    ctx: Context,
    run: state.RunState,
    final: state.FinalLabeling,
    labels: np.ndarray,
    baselines: Comparison | None,
) -> Summary:
    settings, ledger = ctx.settings, ctx.ledger
    n, choice, machine = ctx.num_items, final.choice, final.machine
    truth = ctx.labeler.true_labels_for_report(machine)  # when a ground truth is known
    machine_errors = None if truth is None else int(np.sum(labels[machine] != truth))
    totals = ledger.totals()
    human_only = n * settings.usd_per_label
    counts = Counts(
        test=len(ledger.bought("test")[0]),
        train=len(ledger.bought("train")[0]),
        certify=len(ledger.bought("certify")[0]),
        machine=len(machine),
        residual=len(ledger.bought("residual")[0]),
    )
    # The bound on the machine-labeled items, and the same errors spread over all N.
    bound_subset, bound_overall = choice.upper_bound, choice.num_machine * choice.upper_bound / n
    warn_if_at_chance(choice, ctx.num_classes)
    overall = settings.controller.constraint == "overall"
    # What the last plan expected to machine-label at the final |B| (its curve starts there).
    last = run.rounds[-1]
    left = n - counts.test - counts.train - last.plan.cert_size_now
    predicted = float(last.plan.theta_star_by_b[0]) * left
    true_overall = true_subset = None  # no ground truth: people labeled a pool of their own
    if machine_errors is not None:
        true_overall, true_subset = machine_errors / n, machine_errors / max(len(machine), 1)
    estimated_subset = choice.estimated_error
    return Summary(
        dataset=ctx.dataset_name,
        num_items=n,
        classes=tuple(ctx.classes),
        epsilon=settings.controller.epsilon,
        constraint=settings.controller.constraint,
        model=final.model,
        counts=counts,
        fractions=Fractions(**{k: v / n for k, v in dataclasses.asdict(counts).items()}),
        machine_fraction=MachineFraction(predicted=predicted / n, certified=len(machine) / n),
        cost_usd=Costs(**totals, human_only=human_only),  # the ledger's totals, by name
        savings_vs_human_only=1 - totals["total"] / human_only,
        budget=_budget(settings.controller.budget_usd, last, totals["total"]),
        error=ErrorBounds(
            # In the constraint's units (overall: errors over all N; machine_subset: over |S|).
            estimated=choice.num_machine * estimated_subset / n if overall else estimated_subset,
            upper_bound=bound_overall if overall else bound_subset,
            upper_bound_overall=bound_overall,
            upper_bound_machine_subset=bound_subset,
            confidence=choice.confidence,
            true=true_overall if overall else true_subset,
            true_overall=true_overall,
            true_machine_subset=true_subset,
        ),
        threshold=Threshold(
            theta=choice.theta,
            confidence_threshold=choice.threshold,
            start_theta=choice.start_theta,
            tested=choice.tested,
        ),
        rounds=len(run.rounds),
        stop_reason=last.reason,
        certify_on=settings.certify_on,
        usd_per_label=settings.usd_per_label,
        cost_mode=settings.pricing.mode,
        baselines=baselines,
    )


def _budget(budget_usd: float | None, last: state.RoundRecord, total_usd: float) -> Budget:
    """What ``budget_usd`` bounded: the loop (its last round recorded the spend so far, and
    whether the cap stopped it), not what was bought after it."""
    stopped = last.stop and last.reason.startswith(controller.BUDGET_REACHED)
    return Budget.of(budget_usd, stopped, last.spent_usd, total_usd)
