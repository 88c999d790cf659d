"""The MCAL labeling run (Algorithm 1 as MCAL_SPEC.md runs it): the loop that trains, buys
labels and writes files around the pure decisions of :mod:`mcal_jax.controller`.

Every round of ``mcal(config, workdir)`` trains each active candidate on B, scores U and T,
measures the error profile, plans, and buys the next δ least-confident items of U. After
the last round it machine-labels the items of U above the certified threshold and buys
human labels for the rest.

Resuming: every label is bought through the :class:`~mcal_jax.ledger.Ledger` under a key
("test", "round3/train", "residual") and written durably before it is used, and each
finished round is recorded in ``state.json`` (written atomically) together with the batch
it decided to buy next. A rerun of the same command replays the ledger, skips the
finished rounds, buys the recorded batch only if the ledger does not hold it yet, and goes
on; training is deterministic for a seed, so the result equals an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from mcal_jax import controller, labelers, models, parallel, scoring
from mcal_jax import pool as pool_lib
from mcal_jax import profile as profile_lib
from mcal_jax import train as train_lib
from mcal_jax.data import load_dataset
from mcal_jax.ledger import Ledger
from mcal_jax.outputs import (
    append_metrics,
    atomic_write_json,
    checkpoint_variables,
    history_from_json,
    history_to_json,
    load_scores,
    log_round,
    plan_summary,
    read_json,
    save_scores,
    write_final_outputs,
)


@dataclasses.dataclass
class Setup:
    """Everything a run needs, built once; nothing here has been paid for yet."""

    config: ml_collections.ConfigDict
    workdir: str
    num_items: int
    num_classes: int
    pool: pool_lib.DevicePool
    labeler: labelers.SimulatedLabeler
    ledger: Ledger
    train_config: train_lib.TrainConfig
    test_indices: np.ndarray
    initial_batch: np.ndarray
    delta0: int
    min_delta: int
    dataset_name: str


def validate(config: ml_collections.ConfigDict) -> None:
    """Rejects invalid settings before anything is bought (the error names the field)."""
    m = config.mcal
    problems = []
    if not 0 < m.epsilon < 1:
        problems.append(f"mcal.epsilon={m.epsilon} must lie in (0, 1)")
    if m.constraint not in profile_lib.CONSTRAINTS:
        problems.append(f"mcal.constraint={m.constraint!r}: use one of {profile_lib.CONSTRAINTS}")
    if not 0 < m.test_fraction < 1:
        problems.append(f"mcal.test_fraction={m.test_fraction} must lie in (0, 1)")
    if not 0 < m.delta0_fraction < 1:
        problems.append(f"mcal.delta0_fraction={m.delta0_fraction} must lie in (0, 1)")
    if m.test_fraction + m.delta0_fraction >= 1:
        problems.append("mcal.test_fraction + mcal.delta0_fraction must be below 1")
    if not 0 < m.confidence < 1:
        problems.append(f"mcal.confidence={m.confidence} must lie in (0, 1)")
    if m.metric not in scoring.METRICS:
        problems.append(f"mcal.metric={m.metric!r}: use one of {scoring.METRICS}")
    if not 0 <= config.labeling.error_rate < 1:
        problems.append(f"labeling.error_rate={config.labeling.error_rate} must lie in [0, 1)")
    try:
        labelers.usd_per_label(config.labeling.service)
    except ValueError as error:
        problems.append(f"labeling.service: {error}")
    unknown = [name for name in config.models if name not in models.MODEL_NAMES]
    if unknown or not config.models:
        problems.append(f"models={tuple(config.models)}: choose from {models.MODEL_NAMES}")
    if config.cost.mode not in ("measured", "per_image_epoch"):
        problems.append(f"cost.mode={config.cost.mode!r}: use measured or per_image_epoch")
    for name, value in config.cost.usd_per_device_hour.items():
        if value < 0:
            problems.append(f"cost.usd_per_device_hour.{name}={value} is negative")
    for name in config.models if config.cost.mode == "per_image_epoch" else ():
        if name not in config.cost.usd_per_image_epoch:
            problems.append(f"cost.usd_per_image_epoch has no rate for model {name!r}")
    try:
        train_lib.TrainConfig(**_train_fields(config))
    except ValueError as error:
        problems.append(str(error))
    if problems:
        raise ValueError("invalid config:\n  " + "\n  ".join(problems))


def _train_fields(config) -> dict:
    fields = config.train.to_dict()
    fields["decay_epochs"] = tuple(fields["decay_epochs"])
    return fields


def prepare(config: ml_collections.ConfigDict, workdir: str) -> Setup:
    """Loads the data, uploads the pool, opens the ledger and draws T and B0 (seeded)."""
    validate(config)
    os.makedirs(workdir, exist_ok=True)
    saved = read_json(os.path.join(workdir, "config.json"))
    if saved is not None and saved != json.loads(config.to_json()):
        raise ValueError(
            f"{workdir}/config.json holds a different config: resume with the same settings "
            "or use a new --workdir"
        )
    atomic_write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()))

    dataset = load_dataset(
        config.data.dataset, split=config.data.split, data_dir=config.data.data_dir
    )
    rng = np.random.default_rng(config.seed)
    if config.data.max_items and config.data.max_items < len(dataset):
        dataset = dataset.subset(np.sort(rng.choice(len(dataset), config.data.max_items, False)))
    n = len(dataset)
    num_test = int(round(config.mcal.test_fraction * n))
    delta0 = max(1, int(round(config.mcal.delta0_fraction * n)))
    if num_test < config.mcal.min_test_items or num_test + delta0 >= n:
        raise ValueError(
            f"a pool of {n} items leaves |T|={num_test}, δ0={delta0}: T must hold at least "
            f"mcal.min_test_items={config.mcal.min_test_items} and T + B0 less than the pool"
        )
    order = rng.permutation(n)
    mesh = parallel.make_mesh(config.num_devices or None)
    labeler = labelers.SimulatedLabeler(
        dataset.labels,
        dataset.num_classes,
        usd_per_label=labelers.usd_per_label(config.labeling.service),
        error_rate=config.labeling.error_rate,
        seed=config.seed,
    )
    return Setup(
        config=config,
        workdir=workdir,
        num_items=n,
        num_classes=dataset.num_classes,
        pool=pool_lib.upload(dataset, mesh),
        labeler=labeler,
        ledger=Ledger(os.path.join(workdir, "ledger.jsonl"), writer=parallel.is_main_process()),
        train_config=train_lib.TrainConfig(**_train_fields(config)),
        test_indices=np.sort(order[:num_test]),
        initial_batch=np.sort(order[num_test : num_test + delta0]),
        delta0=delta0,
        min_delta=max(1, int(round(config.mcal.min_delta_fraction * n))),
        dataset_name=dataset.name,
    )


def device_usd_per_hour(config) -> float:
    """The configured price of one device of this machine: by device kind, else platform."""
    device = jax.devices()[0]
    prices = config.cost.usd_per_device_hour
    return float(prices.get(device.device_kind, prices.get(device.platform, 0.0)))


def training_usd(setup: Setup, model: str, result: train_lib.TrainResult, size: int) -> float:
    cost = setup.config.cost
    if cost.mode == "per_image_epoch":
        return size * result.epochs * cost.usd_per_image_epoch[model]
    return result.device_seconds / 3600 * device_usd_per_hour(setup.config)


def scoring_usd(setup: Setup, model: str, items: int, device_seconds: float) -> float:
    cost = setup.config.cost
    if cost.mode == "per_image_epoch":
        return items * cost.usd_per_image_epoch[model] * cost.scoring_fraction_of_image_epoch
    return device_seconds / 3600 * device_usd_per_hour(setup.config)


def controller_config(setup: Setup, scoring_usd_per_item: float) -> controller.ControllerConfig:
    m = setup.config.mcal
    return controller.ControllerConfig(
        num_items=setup.num_items,
        num_test=len(setup.test_indices),
        epsilon=m.epsilon,
        constraint=m.constraint,
        human_usd_per_label=setup.labeler.usd_per_label,
        delta0=setup.delta0,
        min_delta=setup.min_delta,
        stability_tolerance=m.stability_tolerance,
        batch_slack=m.batch_slack,
        min_rounds_for_stability=m.min_rounds_for_stability,
        budget_usd=m.budget_usd,
        scoring_usd_per_item=scoring_usd_per_item,
    )


@dataclasses.dataclass
class RoundOutcome:
    """One candidate's round: what it measured and what it plans."""

    model: str
    history: controller.History
    plan: controller.Plan
    scores: scoring.Scores
    profile: profile_lib.ErrorProfile
    train_result: train_lib.TrainResult


@dataclasses.dataclass
class Measurement:
    """One trained model's round: its scores on U ∪ T, its error profile, its bill."""

    result: train_lib.TrainResult
    scores: scoring.Scores
    profile: profile_lib.ErrorProfile
    train_size: int
    training_usd: float
    scoring_usd: float
    scored_items: int
    scoring_seconds: float


def measure_round(
    setup: Setup,
    model: str,
    train_idx: np.ndarray,
    train_labels: np.ndarray,
    unlabeled: np.ndarray,
    seed: int,
) -> Measurement:
    """Spec step 2–3: train D(B) from scratch, score U ∪ T with M, and measure ε_T(θ)."""
    config = setup.config
    result = train_lib.train(
        model, setup.pool, train_idx, train_labels, setup.train_config, seed=seed, progress=True
    )
    scorer = scoring.get_scorer(
        model, setup.pool, config.mcal.metric, config.score_batch_size, config.train.compute_dtype
    )
    to_score = np.concatenate([unlabeled, setup.test_indices])
    start = time.perf_counter()
    scores = scorer.score(result.variables, to_score, seed=seed)
    score_seconds = (time.perf_counter() - start) * setup.pool.mesh.size
    _, test_labels = setup.ledger.bought("test")
    test_correct = scores.predicted[setup.test_indices] == test_labels
    profile = profile_lib.error_profile(
        scores.confidence[unlabeled], scores.confidence[setup.test_indices], test_correct
    )
    return Measurement(
        result=result,
        scores=scores,
        profile=profile,
        train_size=len(train_idx),
        training_usd=training_usd(setup, model, result, len(train_idx)),
        scoring_usd=scoring_usd(setup, model, len(to_score), score_seconds),
        scored_items=len(to_score),
        scoring_seconds=score_seconds,
    )


def run_round(
    setup: Setup, model: str, history: controller.History, round_index: int, labels_usd: float
) -> RoundOutcome:
    """Algorithm 1, lines 12–18 for one candidate: train D(B_i), score U ∪ T, error
    profile, record the costs in the ledger, fit and plan."""
    ledger = setup.ledger
    train_idx, train_labels = ledger.bought("train")
    seed = setup.config.seed * 1000 + round_index
    m = measure_round(setup, model, train_idx, train_labels, unlabeled_indices(setup), seed)
    ledger.charge(
        category="training",
        usd=m.training_usd,
        key=_charge_key(ledger, round_index, model, "training"),
        device_seconds=m.result.device_seconds,
        images=m.result.images_processed,
        model=model,
    )
    ledger.charge(
        category="scoring",
        usd=m.scoring_usd,
        key=_charge_key(ledger, round_index, model, "scoring"),
        device_seconds=m.scoring_seconds,
        items=m.scored_items,
        model=model,
    )
    history = history.append_round(
        m.train_size,
        np.asarray(m.profile.test_errors),
        np.asarray(m.profile.test_counts),
        m.training_usd,
        m.result.epochs,
        m.scoring_usd,
        labels_usd=labels_usd,
    )
    config = controller_config(setup, m.scoring_usd / m.scored_items)
    plan = controller.plan(config, history)
    history = history.record_plan(plan)
    checkpoint_variables(setup.workdir, round_index, model, m.result.variables)
    return RoundOutcome(model, history, plan, m.scores, m.profile, m.result)


def _charge_key(ledger: Ledger, round_index: int, model: str, category: str) -> str:
    """A fresh key: a round redone after a restart really was paid for twice."""
    key = f"round{round_index}/{model}/{category}"
    retry = 0
    while ledger.has(key if not retry else f"{key}/retry{retry}"):
        retry += 1
    return key if not retry else f"{key}/retry{retry}"


def unlabeled_indices(setup: Setup) -> np.ndarray:
    """U = X ∖ (T ∪ B), from the ledger (what was bought is what is labeled)."""
    bought, _ = setup.ledger.labels()
    mask = np.ones(setup.num_items, bool)
    mask[bought] = False
    return np.flatnonzero(mask)


def least_confident(scores: scoring.Scores, unlabeled: np.ndarray, count: int) -> np.ndarray:
    """Algorithm 1, line 10: the ``count`` least confident items of U by the metric M."""
    order = np.argsort(scores.confidence[unlabeled], kind="stable")
    return np.sort(unlabeled[order[:count]])


def mcal(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Labels the whole dataset of ``config`` at minimum cost; writes everything to
    ``workdir`` (see README) and returns the summary. Rerunning resumes."""
    setup = prepare(config, workdir)
    ledger, labeler = setup.ledger, setup.labeler
    state_path = os.path.join(workdir, "state.json")
    state = read_json(state_path) or {"rounds": []}

    ledger.buy(labeler, setup.test_indices, purpose="test", key="test")
    labels_usd = ledger.totals()["human_labels"]
    if not state["rounds"]:
        ledger.buy(labeler, setup.initial_batch, purpose="train", key="round1/train")
        histories = {
            m: controller.History.start(profile_lib.THETAS, setup.delta0) for m in config.models
        }
        labels_usd = ledger.totals()["human_labels"]
        active = list(config.models)
    else:
        last = state["rounds"][-1]
        histories = {m: history_from_json(h) for m, h in last["histories"].items()}
        active = last["active"]
        if not last["stop"]:
            ledger.buy(
                labeler,
                np.asarray(last["next_batch"]),
                purpose="train",
                key=f"round{last['round'] + 1}/train",
            )
        labels_usd = len(last["next_batch"]) * labeler.usd_per_label

    while not (state["rounds"] and state["rounds"][-1]["stop"]):
        round_index = len(state["rounds"]) + 1
        outcomes = {m: run_round(setup, m, histories[m], round_index, labels_usd) for m in active}
        histories.update({m: o.history for m, o in outcomes.items()})
        if len(active) > 1 and round_index >= config.mcal.selection_rounds:
            chosen = controller.select_architecture({m: o.plan for m, o in outcomes.items()})
            if chosen is not None:
                logging.info("architecture selection: keeping %s", chosen)
                active = [chosen]
        lead = min(active, key=lambda m: outcomes[m].plan.cost_star_usd)
        plan = outcomes[lead].plan
        unlabeled = unlabeled_indices(setup)
        stop, reason = plan.stop, plan.reason
        if not stop and round_index >= config.mcal.max_rounds:
            stop, reason = True, f"reached mcal.max_rounds={config.mcal.max_rounds}"
        delta = controller.next_batch_size(
            plan,
            histories[lead],
            rounds_left=config.mcal.max_rounds - round_index,
            num_unlabeled=len(unlabeled),
        )
        if not stop:  # the δ actually used stays current until a stable plan changes it
            histories[lead] = dataclasses.replace(histories[lead], delta=max(delta, 1))
        next_batch = [] if stop else least_confident(outcomes[lead].scores, unlabeled, delta)
        save_scores(workdir, round_index, outcomes[lead].scores)
        record = {
            "round": round_index,
            "lead": lead,
            "active": active,
            "stop": stop,
            "reason": reason,
            "train_size": histories[lead].train_size,
            "next_batch": np.asarray(next_batch).tolist(),
            "histories": {m: history_to_json(h) for m, h in histories.items()},
            "plans": {m: plan_summary(o.plan) for m, o in outcomes.items()},
            "device_seconds": {m: o.train_result.device_seconds for m, o in outcomes.items()},
            "spent_usd": ledger.totals()["total"],
        }
        state["rounds"].append(record)
        log_round(record, plan)
        atomic_write_json(state_path, state)
        append_metrics(workdir, record, plan, outcomes[lead])
        if not stop:
            ledger.buy(
                labeler,
                np.asarray(next_batch),
                purpose="train",
                key=f"round{round_index + 1}/train",
            )
            labels_usd = len(next_batch) * labeler.usd_per_label
    if config.baselines.run:
        from mcal_jax.baselines import run_baselines

        run_baselines(
            setup,
            state["rounds"][-1]["lead"],
            state,
            save=lambda value: atomic_write_json(state_path, value),
        )
    if jax.process_count() > 1:  # the other hosts read what process 0 wrote
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("mcal: rounds written")
    return finish(setup, state)


def finish(setup: Setup, state: dict) -> dict:
    """Spec step 10: certify the machine-labeling threshold on T, machine-label U above it,
    buy human labels for the rest, and write labels.npz and summary.json."""
    config, ledger = setup.config, setup.ledger
    last = state["rounds"][-1]
    confidence, predicted = load_scores(setup.workdir, last["round"])
    unlabeled = unlabeled_indices(setup)
    test_idx, test_labels = ledger.bought("test")
    profile = profile_lib.error_profile(
        confidence[unlabeled], confidence[test_idx], predicted[test_idx] == test_labels
    )
    choice = profile_lib.choose_machine_threshold(
        profile,
        epsilon=config.mcal.epsilon,
        constraint=config.mcal.constraint,
        num_items=setup.num_items,
        confidence=config.mcal.confidence,
    )
    machine = unlabeled[confidence[unlabeled] >= choice.threshold]
    residual = np.setdiff1d(unlabeled, machine)
    if len(residual):
        ledger.buy(setup.labeler, residual, purpose="residual", key="residual")
    return write_final_outputs(setup, state, choice, machine, predicted, confidence)
