"""The MCAL labeling loop (Algorithm 1 of the paper, as docs/algorithm.md runs it): it
trains, buys labels and writes files around the pure decisions of
:mod:`mcal_jax.controller`.

Each round trains every active candidate on B, scores U and T_plan, measures the error
profile on T_plan, charges the device time, plans, and takes the next batch of
least-confident items outside B: it buys those of U and moves those of T_plan to B (their
labels were bought already). After the last round the baselines run (when asked for) and
the finish (`mcal_jax.run.finish`) buys T_cert, certifies the machine labels on it alone,
and buys human labels for the rest. No label of T_cert is read before then.

Resuming: every label is bought through the ledger under a key (``test``,
``round3/train``, ``certify``, ``residual``) and is on disk before it is used; each
finished round is one `RoundRecord` line of ``rounds.jsonl``, appended after the round's
scores and checkpoints and before its next batch is bought. A rerun checks that the files
agree (`mcal_jax.run.integrity`), replays the records, buys the recorded batch if the
ledger does not hold it yet, and goes on; training is deterministic for a seed, so the
result equals an uninterrupted run. A round cut short is run again (its device time is
charged again, under a fresh key: it was paid twice).
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections
import numpy as np
from absl import logging

from mcal_jax import controller, parallel
from mcal_jax.dataset import Dataset
from mcal_jax.learner import Learner
from mcal_jax.profile import THETAS
from mcal_jax.run import baselines, finish, labeling, state
from mcal_jax.run.measure import Measurement, charge, measure
from mcal_jax.run.prepare import Context, Split, prepare
from mcal_jax.run.workdir import Workdir
from mcal_jax.scores import PoolScores
from mcal_jax.summary import Summary


def mcal(
    config: ml_collections.ConfigDict,
    workdir: str,
    make_learner: Callable[[Dataset], Learner] | None = None,
) -> Summary:
    """Labels the whole dataset of ``config`` at minimum cost; writes everything to
    ``workdir`` (see README) and returns the summary (what ``summary.json`` holds).
    Rerunning resumes, and rerunning a finished run returns its summary again and changes
    no file. ``make_learner(pool)`` gives the learner that trains and scores (default: the
    Flax learner on the devices; `mcal_jax.simulated_learner` for simulations). One
    process at a time runs in a workdir: a second one is refused (`lock.WorkdirBusyError`)
    before it reads it."""
    with Workdir(workdir).locked():
        ctx = prepare(config, workdir, make_learner)
        run = resume(ctx)
        while not run.stopped:
            run = run_round(ctx, run)
        compared = None
        if ctx.settings.baselines is not None:
            compared = baselines.run_baselines(ctx, run.rounds[-1].lead)
        parallel.sync("mcal: rounds written")  # the other hosts read what process 0 wrote
        return finish.finish(ctx, run, compared)


def resume(ctx: Context) -> state.RunState:
    """The state after the finished rounds on disk, with every label they decided to buy
    bought (T_plan and B0 before round 1; the recorded next batch after the last round)."""
    settings = ctx.settings
    records = ctx.workdir.read_rounds()
    ctx.workdir.write_metrics(records)
    run = state.RunState.replay(records, settings.models, THETAS, settings.delta0)
    ctx.ledger.buy(ctx.labeler, ctx.plan_test, purpose="test", key=state.TEST_PURCHASE_KEY)
    if not records:
        _take_batch(ctx, ctx.initial_batch, 1)
    elif not run.stopped:
        _take_batch(ctx, np.asarray(records[-1].next_batch, np.int64), run.next_round)
    return run


def run_round(ctx: Context, run: state.RunState) -> state.RunState:
    """Algorithm 1, lines 10-22: train and measure every active candidate, charge the
    device time, plan, select, record the round, and buy the next batch."""
    settings, ledger, r = ctx.settings, ctx.ledger, run.next_round
    train_indices, train_labels = ledger.bought("train")
    split = Split.of(ctx, train_indices)
    unlabeled = split.unlabeled
    teacher = _teacher(ctx, r)
    measured = {
        model: measure(ctx, model, train_indices, train_labels, unlabeled, r, teacher=teacher)
        for model in run.active
    }
    for m in measured.values():
        charge(ctx, f"round{r}", m)
    key = state.train_purchase_key(r)
    labels_usd = ledger.usd(key) if ledger.has(key) else 0.0  # a batch all from T is free
    if r == 1:
        labels_usd += ledger.usd(state.TEST_PURCHASE_KEY)
    test_size = len(ctx.test_set()[0])

    histories, plans = dict(run.histories), {}
    for model, m in measured.items():
        grown = run.histories[model].append_round(
            m.train_size,
            m.profile.test_errors,
            m.profile.test_counts,
            m.training_usd,
            m.learned.images_processed,
            m.scoring_usd,
            labels_usd=labels_usd,
            certified_machine=m.certified_machine,
            test_size=test_size,
        )
        plans[model] = controller.plan(settings.controller, grown)
        histories[model] = grown.record_plan(plans[model])
    kept = run.active
    if len(kept) > 1 and r >= settings.selection_rounds:
        chosen = controller.select_architecture(plans)
        if chosen is not None:
            logging.info("architecture selection: keeping %s", chosen)
            kept = (chosen,)
    lead = min(kept, key=lambda model: plans[model].cost_star_usd)
    plan = plans[lead]
    next_batch = (
        ()
        if plan.stop
        else measured[lead].scores.least_confident(split.candidates, plan.batch, ctx.tie_order)
    )

    ctx.workdir.save_scores(f"round{r}", measured[lead].scores)
    for model, m in measured.items():
        if m.learned.variables is not None:
            ctx.workdir.save_checkpoint(f"round{r}", model, m.learned.variables)
    record = state.RoundRecord(
        round=r,
        lead=lead,
        kept=kept,
        candidates={
            model: _model_round(m, plans[model], test_size) for model, m in measured.items()
        },
        labels_usd=labels_usd,
        spent_usd=ledger.totals()["total"],
        stop=plan.stop,
        reason=plan.reason,
        next_batch=tuple(int(i) for i in next_batch),
    )
    ctx.workdir.append_round(record)
    run = run.after(record, histories)
    ctx.workdir.write_metrics(run.rounds)
    _log_round(record)
    if not plan.stop:
        _take_batch(ctx, np.asarray(next_batch, np.int64), r + 1)
    return run


def _take_batch(ctx: Context, batch: np.ndarray, round_index: int) -> None:
    """Adds ``batch`` to B for round ``round_index``: its items of T_plan move to B with the
    labels T bought (`Ledger.move`), the others are bought. A rerun repeats both under the
    same keys, which records nothing new."""
    from_test = np.intersect1d(batch, ctx.ledger.purchased("test")[0])
    if from_test.size:
        key = state.train_move_key(round_index)
        ctx.ledger.move(from_test, source="test", purpose="train", key=key)
    bought = np.setdiff1d(batch, from_test)
    if bought.size:
        if ctx.settings.labeling.suggestions and round_index > 1:  # the model that chose them
            stage = f"round{round_index - 1}"
            labeling.suggest(ctx.labeler, ctx.workdir.load_scores(stage), bought, stage)
        key = state.train_purchase_key(round_index)
        ctx.ledger.buy(ctx.labeler, bought, purpose="train", key=key)


def _teacher(ctx: Context, round_index: int) -> PoolScores | None:
    """The scores a semi-supervised round learns from: the previous round's lead model's
    (saved with the round, so a resumed run learns from the same); None in round 1 or
    when the rounds are supervised."""
    if not ctx.settings.train.semi_supervised or round_index == 1:
        return None
    return ctx.workdir.load_scores(f"round{round_index - 1}")


def _model_round(m: Measurement, plan: controller.Plan, test_size: int) -> state.ModelRound:
    return state.ModelRound(
        model=m.model,
        train_size=m.train_size,
        test_errors=state.ints(m.profile.test_errors),
        test_counts=state.ints(m.profile.test_counts),
        training_usd=m.training_usd,
        scoring_usd=m.scoring_usd,
        epochs=m.learned.epochs,
        images=int(m.learned.images_processed),
        device_seconds=m.learned.device_seconds,
        scoring_seconds=m.learned.scoring_seconds,
        certified_machine=m.certified_machine,
        plan=plan,
        test_size=test_size,
    )


def _log_round(record: state.RoundRecord) -> None:
    plan = record.plan
    logging.info(
        "round %d [%s]: |B|=%d  C*=%.2f USD  b_opt=%d  θ*=%.2f  |T_cert|=%d  saving=%.2f±%.2f"
        "  δ=%d  spent=%.2f USD%s",
        record.round,
        record.lead,
        record.train_size,
        plan.cost_star_usd,
        plan.b_opt,
        plan.theta_star,
        plan.cert_size,
        plan.saving_usd,
        plan.saving_uncertainty_usd,
        len(record.next_batch),
        record.spent_usd,
        f"  stop: {record.reason}" if record.stop else "",
    )
