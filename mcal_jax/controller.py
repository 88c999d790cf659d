"""MCAL's decisions: how many labels to buy, in what batches, and when to stop.

Pure functions from what has been measured (a `History`) and the fitted models
(`mcal_jax.fit`) to a `Plan`; the loop that trains, buys labels and writes files calls them.
They implement Section 3 and Algorithm 1 (lines 9 and 18-22) of the paper as
docs/algorithm.md (steps 6-9) describes it:

- the total cost is Eq. 1 with nothing left out, C = C_h · (|T_plan| + |B| + |T_cert| +
  |R|) + C_train + C_score, i.e. C_h · (N − |S|) plus every dollar of device time, spent
  and predicted;
- |S| = θ · |U| for the θ whose certificate step 10 is predicted to give makes the bill
  lowest, U being what is left once B, T_plan and T_cert are taken; searched over a θ × b
  grid, with the smallest T_cert that certifies each θ, in one jitted, vectorised call
  (`mcal_jax.cost_search`);
- future training follows Eq. 3 generalised to a per-round overhead, a last, partial round
  and a step floor: growing B from |B| to b in steps of δ costs
  Σ_rounds κ · max(epochs · size, min_images) + overhead.

Choices the paper leaves open, made here:

- Item counts in the cost are continuous; `Plan` reports |S| rounded.
- θ is feasible when the Clopper–Pearson bound that step 10 will certify on T_cert meets
  the constraint, predicted from ε_θ(b) and the T_cert items expected above τ_θ (|T_cert|
  times the fraction of T_plan above it), for a draw one standard deviation and one whole
  error unluckier than the prediction; `confidence` None plans on the point estimate, as
  the paper does.
  Each T_cert item is a human label, so for each θ the smallest T_cert that certifies it
  is taken. Step 10 sizes the T_cert it buys the same way (`certificate_size`), from the
  labeling classifier's confidences and T_plan's errors at them.
- Stability is measured on B_opt, the decision itself (|ΔB_opt| / B_opt < Δ), not on C*:
  one θ step moves C* by 15-30% at Fashion-MNIST scale, so a C* test flips on noise.
- A plan's saving C(|B|) − C* is an estimate. Its spread is measured by refitting the
  curves to test counts resampled from T_plan's (`plan_replicates` times) and planning
  again; the saving is significant when it exceeds one standard deviation of the
  replicates' savings (without replicates, when it exceeds the slack β·C*). "Buying more
  labels no longer pays" when it is not: the loop never stops while the plan predicts a
  lower bill by more than its uncertainty (a cap aside), and a saving the data cannot
  tell from zero is not worth more labels, the more so as the rounds' curves, which the
  plans extrapolate, keep falling after the final classifier's have flattened. Stopping
  is irreversible, so it stops the loop only when the decision holds: the plan is stable,
  or the previous plan said so too. With fewer than `min_rounds_for_stability` rounds, or
  no trusted curve, it never stops.
  It also stops when the latest model could machine-label every remaining item on T_plan:
  more labels cannot buy more machine labels. These rules read T_plan as much as they
  like; the certificate reads only T_cert.
- The floor `min_delta` limits how finely the remaining labels are split into rounds; it
  never makes a round buy past B_opt, so the last round may be smaller than the floor.
- When the models are unstable δ keeps its current value (Algorithm 1 changes δ only inside
  the stability test, line 19-22), which is δ0 until the first stable round. A round buys
  δ, but never past B_opt once the curves are trusted and fitted on enough rounds (and at
  least the floor): on a small pool δ0 is a large share of it, and the rounds that only
  confirm a stop bought a tenth of a 2,000-item pool each. δ itself stays.
- Every stop and every δ is decided here: once stable, δ is raised so that B reaches
  B_opt within the rounds `max_rounds` still allows; δ never exceeds the unlabeled pool.
- The scoring price per item is measured: the last round scored the N − |B| items
  outside B for ``History.scoring_usd[-1]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mcal_jax import cost_search
from mcal_jax.fit import (
    MIN_TEST_ITEMS,
    PowerLawFit,
    TrainingCostModel,
    fit_training_cost,
    fit_truncated_power_laws,
)
from mcal_jax.parallel import on_host
from mcal_jax.profile import ErrorProfile
from mcal_jax.records import ControllerConfig, History, Plan

# How a stop reason begins when the budget cap stopped the loop (the summary reports it).
BUDGET_REACHED = "budget cap reached"


@dataclasses.dataclass(frozen=True)
class _Stability:
    stable: bool
    why: str  # "models stable (...)" or "models not yet stable (...)"


def _stability(config: ControllerConfig, history: History, b_opt: int) -> _Stability:
    """Line 19, measured on the decision: B_opt moved by less than Δ (relative) since the
    last plan, with at least ``min_rounds_for_stability`` rounds in the fit."""
    enough_rounds = history.num_rounds >= config.min_rounds_for_stability
    previous = history.b_opts[-1] if history.b_opts else None
    moved = abs(b_opt - previous) / max(b_opt, previous, 1) if previous is not None else np.inf
    tolerance = config.stability_tolerance
    if enough_rounds and moved < tolerance:
        return _Stability(True, f"models stable (B_opt moved {moved:.1%} < {tolerance:.1%})")
    if not enough_rounds:
        why = f"{history.num_rounds} of {config.min_rounds_for_stability} rounds fitted"
    elif previous is None:
        why = "no earlier B_opt to compare with"
    else:
        why = f"B_opt moved {moved:.1%} (tolerance {tolerance:.1%})"
    return _Stability(False, f"models not yet stable ({why})")


def _next_delta(
    config: ControllerConfig,
    history: History,
    b_opt: int,
    fixed_usd: float,
    cost_star: float,
    cost_model: TrainingCostModel,
    prices: cost_search.Prices,
) -> tuple[int, str]:
    """Line 20, vectorised over the number of remaining rounds n: δ = ⌈(B_opt − |B|)/n⌉ for
    the largest n whose predicted total stays ≤ C*·(1 + β) (should none fit, e.g. β = 0 and
    round-off, the cheapest n), raised to reach B_opt within ``max_rounds``."""
    remaining = b_opt - history.train_size
    n = np.arange(1, max(1, remaining // config.min_delta) + 1, dtype=np.int64)
    deltas = -(-remaining // n)
    _, training_n, scoring_n = cost_search.future_usd(
        np.int64(b_opt), np.int64(history.train_size), deltas, cost_model, prices
    )
    total_n = fixed_usd + training_n + scoring_n
    ceiling = cost_star * (1.0 + config.batch_slack)
    within = np.flatnonzero(total_n <= ceiling)
    pick = int(within[-1]) if within.size else int(np.argmin(total_n))
    delta = int(deltas[pick])
    relation = "≤" if within.size else "> (none fits; the cheapest)"
    reason = (
        f"δ = {delta}: {-(-remaining // delta)} more rounds cost {total_n[pick]:.2f} "
        f"{relation} C*·(1+β) = {ceiling:.2f} USD"
    )
    if config.max_rounds is not None:
        # A cap the search does not see: reach B_opt within the rounds still allowed.
        needed = -(-remaining // (config.max_rounds - history.num_rounds))
        if needed > delta:
            delta = needed
            reason += f"; δ raised to {needed} to reach B_opt within max_rounds"
    return delta, reason


def _check_inputs(config: ControllerConfig, history: History, error_model: PowerLawFit) -> int:
    """N − |T_plan|, the pool B grows in, once the history and the curves agree."""
    if history.num_rounds == 0:
        raise ValueError("plan_from_models: the history has no rounds; train round 1 first")
    thetas = history.thetas
    if np.shape(error_model.thetas) != thetas.shape or not np.allclose(
        np.asarray(error_model.thetas), thetas, atol=1e-6
    ):
        raise ValueError(
            f"plan_from_models: error_model.thetas {np.asarray(error_model.thetas)} "
            f"differ from history.thetas {thetas}"
        )
    pool = config.num_items - cost_search.test_size(config, history)
    if history.train_size > pool:
        raise ValueError(f"plan_from_models: |B| = {history.train_size} exceeds N − |T| = {pool}")
    return pool


@dataclasses.dataclass(frozen=True)
class _Payoff:
    """Whether more labels still pay: the plan's saving C(|B|) − C* against its spread."""

    saving: float
    uncertainty: float
    significant: bool  # saving > uncertainty
    any_trusted: bool  # some θ's learning curve is trusted
    informed: bool  # that, and enough rounds fitted to read the curves
    no_longer_pays: bool  # informed, and no significant saving


def _payoff(
    config: ControllerConfig,
    history: History,
    error_model: PowerLawFit,
    saving: float,
    uncertainty: float,
) -> _Payoff:
    """The `_Payoff` of a saving with that uncertainty (the stop rule's last tests)."""
    enough_rounds = history.num_rounds >= config.min_rounds_for_stability
    any_trusted = bool(np.any(np.asarray(error_model.trusted)))
    significant = saving > uncertainty
    informed = enough_rounds and any_trusted
    return _Payoff(
        saving, uncertainty, significant, any_trusted, informed, informed and not significant
    )


def _go_on(
    config: ControllerConfig,
    history: History,
    pool: int,
    stability: _Stability,
    bill: cost_search.Bill,
    cost_model: TrainingCostModel,
    prices: cost_search.Prices,
) -> tuple[int, str]:
    """(δ, why) for a loop that goes on: `_next_delta` once the models are stable and B_opt
    lies ahead, else δ stays; either way at most the unlabeled items left."""
    whys = [stability.why]
    if stability.stable and bill.b_opt > history.train_size:
        delta, how = _next_delta(
            config, history, bill.b_opt, bill.fixed_usd, bill.cost_star, cost_model, prices
        )
    else:
        delta, how = history.delta, f"δ stays {history.delta}"
    whys.append(how)
    left = pool - history.train_size
    if delta > left:
        delta = left
        whys.append(f"δ capped at the {left} unlabeled items left")
    return delta, "; ".join(whys)


def _next_batch(
    config: ControllerConfig, history: History, payoff: _Payoff, b_opt: int, delta: int
) -> tuple[int, str]:
    """(what the next round buys, why when not δ): δ, or, once ``payoff`` is informed, no
    more than B_opt is away (at least the floor `min_delta`: a round that only confirms a
    stop buys little). δ stays: a plan that moves B_opt out gets its rounds of δ back."""
    ahead = b_opt - history.train_size
    if not payoff.informed or ahead >= delta:
        return delta, ""
    batch = min(delta, max(ahead, config.min_delta))
    return batch, f"; this round buys {batch}, B_opt being {max(ahead, 0)} labels away"


def _summary(
    config: ControllerConfig, bill: cost_search.Bill, cost_now: float, payoff: _Payoff
) -> str:
    """The plan in one line, for its reason."""
    return (
        f"B_opt = {bill.b_opt}, θ* = {bill.theta_star:.2f}, |T_cert| = {bill.cert_size}, "
        f"|S| ≈ {bill.machine:.0f}, C* = {bill.cost_star:.2f} USD "
        f"(human-only {config.human_usd_per_label * config.num_items:.2f}); "
        f"stopping now costs {cost_now:.2f}, "
        f"saving {payoff.saving:.2f} ± {payoff.uncertainty:.2f} USD"
    )


@on_host
def plan_from_models(
    config: ControllerConfig,
    history: History,
    error_model: PowerLawFit,
    cost_model: TrainingCostModel,
    replicates: PowerLawFit | None = None,
) -> Plan:
    """Algorithm 1, lines 18-22 and the loop test, given fitted models.

    B_opt = argmin_b C(b, θ*(b)) with C the full Eq. 1 (human labels of T_plan, B, T_cert
    and the residual, training and scoring spent and predicted with the current δ).
    ``replicates`` are curves fitted to resampled test counts (leading axis: replicate),
    whose plans measure how uncertain the saving C(|B|) − C* is. Stability, the stop rules
    and δ are as the module docstring says.
    """
    pool = _check_inputs(config, history, error_model)
    grid, saving_std = cost_search.search(config, history, error_model, cost_model, replicates)
    prices = cost_search.Prices.of(config, history)
    bill = cost_search.bill(config, history, grid, cost_model, prices)
    cost_now = float(grid.cost_by_b[0])
    saving = max(cost_now - float(grid.cost_by_b[bill.best]), 0.0)
    # The saving's uncertainty: the replicates' spread, or the slack β·C* without them.
    uncertainty = saving_std if replicates is not None else config.batch_slack * bill.cost_star
    payoff = _payoff(config, history, error_model, saving, uncertainty)
    stability = _stability(config, history, bill.b_opt)
    stop, reason = _stop_rule(config, history, pool, stability, payoff)
    next_delta = next_batch = 0
    if not stop:
        next_delta, why = _go_on(config, history, pool, stability, bill, cost_model, prices)
        next_batch, how = _next_batch(config, history, payoff, bill.b_opt, next_delta)
        reason = f"{reason}; {why}{how}"
    return Plan(
        b_opt=bill.b_opt,
        theta_star=bill.theta_star,
        num_machine=int(round(bill.machine)),
        machine_error=float(grid.machine_error_by_b[bill.best]),
        machine_bound=float(grid.machine_bound_by_b[bill.best]),
        cost_star_usd=float(bill.cost_star),
        cost_now_usd=cost_now,
        saving_usd=saving,
        saving_uncertainty_usd=uncertainty,
        human_labels_usd=float(bill.human_usd),
        training_so_far_usd=float(sum(history.training_usd)),
        future_training_usd=bill.future_training_usd,
        scoring_usd=float(sum(history.scoring_usd) + bill.future_scoring_usd),
        future_rounds=bill.future_rounds,
        next_delta=next_delta,
        next_batch_size=next_batch,
        stable=stability.stable,
        no_longer_pays=payoff.no_longer_pays,
        stop=stop,
        reason=f"{reason}; {_summary(config, bill, cost_now, payoff)}",
        cert_size=bill.cert_size,
        b_grid=np.asarray(grid.b_grid),
        cost_by_b=np.asarray(grid.cost_by_b),
        theta_star_by_b=np.asarray(grid.theta_star_by_b),
        cert_size_by_b=np.asarray(grid.cert_size_by_b),
        error_model=jax.device_get(error_model),
        cost_model=cost_model,
    )


def _stop_rule(
    config: ControllerConfig,
    history: History,
    pool: int,
    stability: _Stability,
    payoff: _Payoff,
) -> tuple[bool, str]:
    """(stop, why), in this order: the caps (pool, budget, rounds); the latest model
    machine-labels every remaining item on T_plan; "buying more labels no longer pays"
    when the decision holds: the plan is stable or the previous plan said so too."""
    b_now = history.train_size
    repeated = bool(history.no_longer_pays and history.no_longer_pays[-1])
    if b_now >= pool:
        return True, f"pool exhausted: |B| = {b_now} = N − |T_plan| = {pool}"
    if config.budget_usd is not None and history.spent_usd >= config.budget_usd:
        spent = f"{history.spent_usd:.2f} ≥ {config.budget_usd:.2f} USD"
        return True, f"{BUDGET_REACHED}: spent {spent}"
    if config.max_rounds is not None and history.num_rounds >= config.max_rounds:
        return True, f"round cap reached: {history.num_rounds} rounds = max_rounds"
    certified = history.certified_machine[-1] if history.certified_machine else 0
    if certified >= pool - b_now:
        return True, (
            f"the latest model already machine-labels all {pool - b_now} remaining items "
            "on T_plan: more labels cannot buy more machine labels"
        )
    if payoff.no_longer_pays and (stability.stable or repeated):
        holds = "the plan is stable" if stability.stable else "and so did the previous plan"
        return True, f"buying more labels no longer pays, {holds}"
    if history.num_rounds < config.min_rounds_for_stability:
        return False, "too few rounds to decide"
    if not payoff.any_trusted:
        return False, "no learning curve is trusted yet"
    if payoff.significant:
        return False, "the plan predicts a lower bill by more than its uncertainty"
    return False, "more labels no longer pay, once: not yet a decision"


@on_host
def plan(config: ControllerConfig, history: History) -> Plan:
    """Fit both models to the whole history (Algorithm 1, lines 13 and 16), and the curves
    of the resampled replicates, then plan."""
    sizes = np.asarray(history.train_sizes, np.float64)
    error_model = fit_truncated_power_laws(
        sizes, history.test_errors, history.test_counts, thetas=history.thetas
    )
    replicates = None
    if config.plan_replicates:
        errors, counts = cost_search.resampled_counts(config, history)
        reps, thetas = config.plan_replicates, np.asarray(history.thetas, np.float32)
        fitted = fit_truncated_power_laws(
            sizes, errors, counts, thetas=np.tile(thetas, reps), refine=False
        )
        replicates = jax.tree.map(lambda x: jnp.reshape(x, (reps, thetas.size)), fitted)
    cost_model = fit_training_cost(
        np.asarray(history.images),
        np.asarray(history.training_usd),
        epochs=config.train_epochs,
        min_images=config.train_min_images,
    )
    return plan_from_models(config, history, error_model, cost_model, replicates)


def select_architecture(plans: Mapping[str, Plan]) -> str | None:
    """The candidate with the lowest C*, once every candidate's plan is stable (Section 4,
    "Extending MCAL to selecting the cheapest DNN architecture"); None until then."""
    if not plans:
        raise ValueError("select_architecture: no candidate plans given")
    if not all(p.stable for p in plans.values()):
        return None
    return min(plans, key=lambda name: plans[name].cost_star_usd)


@on_host
def certificate_size(config: ControllerConfig, history: History, profile: ErrorProfile) -> int:
    """|T_cert| that makes stopping now (at ``history``'s |B|) cheapest when the error above
    each threshold is ``profile``'s rate, taken at its word (no fitted curve), with
    ``profile.thetas`` of T_cert expected above τ_θ (T_cert is a uniform sample of what is
    left, and τ_θ keeps that share of it). Step 10 passes T_plan's errors at the labeling
    classifier's confidence levels (docs/algorithm.md, step 10)."""
    counts = np.asarray(profile.test_counts, np.float64)
    rates = np.asarray(profile.test_errors, np.float64) / np.maximum(counts, 1.0)
    flat = PowerLawFit(
        thetas=np.asarray(profile.thetas, np.float32),
        alpha=np.maximum(rates, 1e-6).astype(np.float32),
        gamma=np.zeros(counts.shape, np.float32),
        inv_k=np.zeros(counts.shape, np.float32),
        trusted=counts >= MIN_TEST_ITEMS,
    )
    no_cost = TrainingCostModel(usd_per_image_epoch=0.0, usd_per_round=0.0, epochs=1.0)
    at_now = dataclasses.replace(config, num_b_grid=2)
    grid, _ = cost_search.search(
        at_now, history, flat, no_cost, None, fractions=np.asarray(profile.thetas)
    )
    return int(grid.cert_size_by_b[0])
