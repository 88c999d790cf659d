"""MCAL's decisions: how many labels to buy, in what batches, and when to stop.

Pure functions from what has been measured (a `History`) and the fitted models
(`mcal_jax.fit`) to a `Plan`; the loop that trains, buys labels and writes files calls them.
They implement Section 3 and Algorithm 1 (lines 9 and 18-22) of the paper as
docs/algorithm.md (steps 6-9) describes it:

- the total cost is Eq. 1 with nothing left out, C = C_h · (|T| + |B| + |R|) + C_train +
  C_score, i.e. C_h · (N − |S|) plus every dollar of device time, spent and predicted;
- |S| = θ · |X∖(T ∪ B)| for the largest feasible θ, searched over a θ × b grid in one
  jitted, vectorised call;
- future training follows Eq. 3 generalised to a per-round overhead, a last, partial round
  and a step floor: growing B from |B| to b in steps of δ costs
  Σ_rounds κ · max(epochs · size, min_images) + overhead.

Choices the paper leaves open, made here:

- Item counts in the cost are continuous; `Plan` reports |S| rounded.
- θ is feasible when the Clopper–Pearson bound that step 10 will certify meets the
  constraint, predicted from ε_θ(b) and the number of T items above τ_θ in the latest
  round (`confidence`; None plans on the point estimate, as the paper does). The plan
  then promises what the finish can certify.
- Stability is measured on B_opt, the decision itself (|ΔB_opt| / B_opt < Δ), not on C*:
  one θ step moves C* by 15-30% at Fashion-MNIST scale, so a C* test flips on noise.
- "Buying more labels no longer pays" when stopping now, C(|B|), costs at most C*·(1 + β):
  a gain within the slack β is not worth the labels where the curve is flat and its
  extrapolation least sure (B_opt ≤ |B| is the case C(|B|) = C*). Stopping is
  irreversible, so it stops the loop only when the decision holds: the plan is stable, or
  the previous plan said so too. With fewer than `min_rounds_for_stability` rounds it
  never stops (a single point fits a flat curve). The loop also stops when the latest
  model already certifies every remaining item.
- The plans extrapolate fitted curves; each round also measures the price of stopping
  right after it, with its own certificate (`measured_bills`). When that price did not
  fall over the last round, the round's labels did not pay for themselves, measured, and
  the loop stops (`stop_when_bill_rises`): the paper's "stop when the cost rises" on
  what was measured rather than predicted. It matters most when a longer final recipe
  labels: its curve flattens earlier than the rounds' curves that the plans extrapolate.
- |T| is a decision too when the config gives `test_stages`: once enough rounds are fitted,
  every stage from the current |T| up is planned (its test counts above τ_θ scaled to its
  size, its extra labels priced) and the cheapest wins; `Plan.test_size` above the
  current |T| tells the loop to buy T up to it now. The certificate's α is split over the
  stages by the caller (`confidence`), so the bound holds whichever stage ends the run.
- The floor `min_delta` limits how finely the remaining labels are split into rounds; it
  never makes a round buy past B_opt, so the last round may be smaller than the floor.
- When the models are unstable δ keeps its current value (Algorithm 1 changes δ only inside
  the stability test, line 19-22), which is δ0 until the first stable round.
- Every stop and every δ is decided here: once stable, δ is raised so that B reaches
  B_opt within the rounds `max_rounds` still allows; δ never exceeds the unlabeled pool.
- The scoring price per item is measured: the last round scored the N − |B| items of
  U ∪ T for ``History.scoring_usd[-1]``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mcal_jax.fit import (
    PowerLawFit,
    TrainingCostModel,
    fit_training_cost,
    fit_truncated_power_laws,
    predict_error,
    rounds_to_grow,
)
from mcal_jax.parallel import on_host
from mcal_jax.profile import BOUND_RATES, bound_table
from mcal_jax.records import ControllerConfig, History, Plan, is_int


def _future_usd(b, b_now, delta, cost_model: TrainingCostModel, p: Mapping):
    """(rounds, training USD, scoring USD) of growing B from ``b_now`` to ``b`` in rounds of
    ``delta`` (Eq. 3 generalised, `TrainingCostModel.growth_usd`); each round also scores
    the other N − size items. Numpy and jax alike, so the jitted grid search and the
    host-side δ search share it."""
    rounds, training = cost_model.growth_usd(b_now, b, delta)
    _, size_sum = rounds_to_grow(b_now, b, delta)
    scoring = p["scoring_usd_per_item"] * (rounds * p["num_items"] - size_sum)
    return rounds, training, scoring


@functools.partial(jax.jit, static_argnames=("num_b_grid", "constraint"))
def _search_grid(
    fit: PowerLawFit,
    cost_model: TrainingCostModel,
    bounds: jax.Array,
    p: dict,
    *,
    num_b_grid: int,
    constraint: str,
) -> dict:
    """C(b, θ*(b)) on a fixed grid of b from |B| to N − |T| (Section 3, Eqs. 1-3).

    For every (θ, b): |S| = θ · (N − |T| − b), feasible iff θ is trusted and the constraint
    holds with the bound predicted from ε_θ(b) (``bounds``, see `profile.bound_table`); θ*(b) is
    the largest feasible θ (the cheapest, as C falls with |S|) or 0 when none is. Returns
    the curve and the index of its minimum.
    """
    pool = p["num_items"] - p["num_test"]
    frac = jnp.arange(num_b_grid, dtype=jnp.float32) / (num_b_grid - 1)
    b = p["b_now"] + jnp.round((pool - p["b_now"]) * frac).astype(jnp.int32)
    error = predict_error(fit, b)  # [Θ, G]
    rates = jnp.asarray(BOUND_RATES, jnp.float32)
    bound = jax.vmap(jnp.interp, (0, None, 0))(jnp.clip(error, 0.0, 1.0), rates, bounds)
    unlabeled = (pool - b).astype(jnp.float32)
    machine = fit.thetas[:, None] * unlabeled[None, :]
    if constraint == "overall":
        feasible = machine * bound <= p["epsilon"] * p["num_items"]
    else:
        feasible = bound <= p["epsilon"]
    feasible = feasible & fit.trusted[:, None]
    theta_index = jnp.argmax(jnp.where(feasible, fit.thetas[:, None], -1.0), axis=0)
    any_feasible = jnp.any(feasible, axis=0)
    theta_star = jnp.where(any_feasible, fit.thetas[theta_index], 0.0)
    _, training, scoring = _future_usd(b, p["b_now"], p["delta"], cost_model, p)
    human = p["human_usd"] * (p["num_items"] - theta_star * unlabeled)
    cost = human + p["so_far_usd"] + training + scoring
    return {
        "b_grid": b,
        "cost_by_b": cost,
        "theta_star_by_b": theta_star,
        "theta_index_by_b": jnp.where(any_feasible, theta_index, -1),
        "machine_error_by_b": jnp.where(any_feasible, error[theta_index, jnp.arange(b.size)], 0),
        "machine_bound_by_b": jnp.where(any_feasible, bound[theta_index, jnp.arange(b.size)], 0),
        "best": jnp.argmin(cost),
    }


def measured_bills(config: ControllerConfig, history: History) -> np.ndarray:
    """Per round, what stopping right after it would have cost: human labels for all
    but the items its certificate machine-labels (T, B and the residual), plus every
    device dollar spent up to it."""
    device = np.cumsum(np.add(history.training_usd, history.scoring_usd))
    machine = np.asarray(history.certified_machine, np.float64)
    return config.human_usd_per_label * (config.num_items - machine) + device


@on_host
def plan_from_models(
    config: ControllerConfig,
    history: History,
    error_model: PowerLawFit,
    cost_model: TrainingCostModel,
) -> Plan:
    """Algorithm 1, lines 18-22 and the loop test, given fitted models.

    B_opt = argmin_b C(b, θ*(b)) with C the full Eq. 1 (human labels of T, B and the
    residual, training and scoring spent and predicted with the current δ). Stable iff at
    least ``min_rounds_for_stability`` rounds are in the fit and B_opt moved by less than
    Δ (relative) since the last plan (line 19, measured on the decision; see the module
    docstring). Once stable, δ = ⌈(B_opt − |B|)/n⌉ for the largest n
    whose predicted cost stays ≤ C*·(1 + β) (line 20): as many active-learning rounds as the
    training budget allows (should none fit, e.g. β = 0 and round-off, the cheapest n).
    """
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
    n_items, b_now = config.num_items, history.train_size
    n_now = history.test_sizes[-1] if history.test_sizes else config.num_test
    if b_now > n_items - n_now:
        raise ValueError(f"plan_from_models: |B| = {b_now} exceeds N − |T| = {n_items - n_now}")
    training_so_far, scoring_so_far = sum(history.training_usd), sum(history.scoring_usd)
    # The last round scored U ∪ T, the N − |B| items outside B.
    rates = {
        "num_items": n_items,
        "scoring_usd_per_item": history.scoring_usd[-1] / max(n_items - b_now, 1),
    }
    given = {
        **rates,
        "b_now": b_now,
        "delta": history.delta,
        "epsilon": float(config.epsilon),
        "human_usd": float(config.human_usd_per_label),
        "so_far_usd": training_so_far + scoring_so_far,
    }
    # Through numpy: a model left on an accelerator would pull the search back there.
    fit = jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float32), error_model)
    fit = fit.replace(trusted=jnp.asarray(np.asarray(error_model.trusted), jnp.bool_))
    cost32 = jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float32), cost_model)
    # T may grow to a later stage once the fits rest on enough rounds: each size is
    # planned with the test counts above τ_θ scaled to it (T is a random sample, so they
    # grow in proportion), and the cheapest plan, extra test labels included, wins.
    enough_rounds = history.num_rounds >= config.min_rounds_for_stability
    sizes = [t for t in config.stages if n_now < t <= n_items - b_now] if enough_rounds else []
    grids = {}
    for n_test in (n_now, *sizes):
        # Fixed dtypes, so that new values never trigger a new compile.
        prices = {
            k: jnp.asarray(v, jnp.int32 if is_int(v) else jnp.float32)
            for k, v in {**given, "num_test": n_test}.items()
        }
        counts = np.asarray(history.test_counts[-1], np.float64) * (n_test / max(n_now, 1))
        grids[n_test] = jax.device_get(
            _search_grid(
                fit,
                cost32,
                jnp.asarray(bound_table(counts, config.confidence)),
                prices,
                num_b_grid=config.num_b_grid,
                constraint=config.constraint,
            )
        )
    n_test = min(grids, key=lambda t: float(grids[t]["cost_by_b"][grids[t]["best"]]))
    grid, pool = grids[n_test], n_items - n_test
    best = int(grid["best"])
    b_opt, theta_index = int(grid["b_grid"][best]), int(grid["theta_index_by_b"][best])
    theta_star = float(thetas[theta_index]) if theta_index >= 0 else 0.0

    # The breakdown at B_opt again in float64 on the host, so the terms add up exactly.
    machine = theta_star * (pool - b_opt)
    human_usd = config.human_usd_per_label * (n_items - machine)
    rounds, future_training, future_scoring = _future_usd(
        np.int64(b_opt), np.int64(b_now), np.int64(history.delta), cost_model, rates
    )
    fixed_usd = human_usd + training_so_far + scoring_so_far
    cost_star = fixed_usd + float(future_training) + float(future_scoring)

    previous = history.b_opts[-1] if history.b_opts else None
    moved = abs(b_opt - previous) / max(b_opt, previous, 1) if previous is not None else np.inf
    stable = bool(enough_rounds and moved < config.stability_tolerance)
    if not enough_rounds:
        why_unstable = f"{history.num_rounds} of {config.min_rounds_for_stability} rounds fitted"
    elif previous is None:
        why_unstable = "no earlier B_opt to compare with"
    else:
        why_unstable = f"B_opt moved {moved:.1%} (tolerance {config.stability_tolerance:.1%})"
    # Stopping now (b = |B|, the first point of the curve) against the best plan.
    cost_now = float(grid["cost_by_b"][0])
    no_longer_pays = bool(enough_rounds and cost_now <= cost_star * (1.0 + config.batch_slack))
    repeated = bool(history.no_longer_pays and history.no_longer_pays[-1])
    bills = measured_bills(config, history)
    bill_rose = bool(
        config.stop_when_bill_rises and enough_rounds and bills.size >= 2 and bills[-1] >= bills[-2]
    )
    summary = (
        f"B_opt = {b_opt}, θ* = {theta_star:.2f}, |S| ≈ {machine:.0f}, "
        f"C* = {cost_star:.2f} USD (human-only {config.human_usd_per_label * n_items:.2f})"
    )
    if n_test > n_now:
        summary += f"; T grows from {n_now} to {n_test} items"

    stop, next_delta = True, 0
    certified = history.certified_machine[-1] if history.certified_machine else 0
    if b_now >= pool:
        reason = f"pool exhausted: |B| = {b_now} = N − |T| = {pool}; {summary}"
    elif config.budget_usd is not None and history.spent_usd >= config.budget_usd:
        reason = (
            f"budget cap reached: spent {history.spent_usd:.2f} ≥ {config.budget_usd:.2f} USD; "
            f"{summary}"
        )
    elif config.max_rounds is not None and history.num_rounds >= config.max_rounds:
        reason = f"round cap reached: {history.num_rounds} rounds = max_rounds; {summary}"
    elif certified >= pool - b_now:
        reason = f"the latest model already certifies all {pool - b_now} remaining items; {summary}"
    elif bill_rose:
        reason = (
            f"the last round's labels did not pay: stopping now costs {bills[-1]:.2f} USD, "
            f"measured, against {bills[-2]:.2f} a round earlier; {summary}"
        )
    elif no_longer_pays and (stable or repeated):
        holds = "the plan is stable" if stable else "and so did the previous plan"
        reason = (
            f"buying more labels no longer pays: stopping now costs {cost_now:.2f} ≤ "
            f"C*·(1+β) = {cost_star * (1 + config.batch_slack):.2f} USD, {holds}; {summary}"
        )
    elif not stable:
        stop, next_delta = False, history.delta
        reason = f"models not yet stable ({why_unstable}); δ stays {history.delta}; {summary}"
        if no_longer_pays:
            reason = f"more labels no longer pay, once: not yet a decision; {reason}"
    else:
        # Line 20, vectorised over the number of remaining rounds n.
        remaining = b_opt - b_now
        n = np.arange(1, max(1, remaining // config.min_delta) + 1, dtype=np.int64)
        deltas = -(-remaining // n)
        _, training_n, scoring_n = _future_usd(
            np.int64(b_opt), np.int64(b_now), deltas, cost_model, rates
        )
        total_n = fixed_usd + training_n + scoring_n
        ceiling = cost_star * (1.0 + config.batch_slack)
        within = np.flatnonzero(total_n <= ceiling)
        pick = int(within[-1]) if within.size else int(np.argmin(total_n))
        stop, next_delta = False, int(deltas[pick])
        relation = "≤" if within.size else "> (none fits; the cheapest)"
        reason = (
            f"models stable (B_opt moved {moved:.1%} < {config.stability_tolerance:.1%}); "
            f"δ = {next_delta}: {-(-remaining // next_delta)} more rounds cost "
            f"{total_n[pick]:.2f} {relation} C*·(1+β) = {ceiling:.2f} USD; {summary}"
        )
        if config.max_rounds is not None:
            # A cap the search does not see: reach B_opt within the rounds still allowed.
            rounds_left = config.max_rounds - history.num_rounds
            needed = -(-remaining // rounds_left)
            if needed > next_delta:
                next_delta = needed
                reason += f"; δ raised to {needed} to reach B_opt within max_rounds"
    if not stop and next_delta > pool - b_now:
        next_delta = pool - b_now
        reason += f"; δ capped at the {next_delta} unlabeled items left"
    return Plan(
        b_opt=b_opt,
        theta_star=theta_star,
        num_machine=int(round(machine)),
        machine_error=float(grid["machine_error_by_b"][best]),
        machine_bound=float(grid["machine_bound_by_b"][best]),
        cost_star_usd=float(cost_star),
        cost_now_usd=cost_now,
        human_labels_usd=float(human_usd),
        training_so_far_usd=float(training_so_far),
        future_training_usd=float(future_training),
        scoring_usd=float(scoring_so_far + future_scoring),
        future_rounds=int(rounds),
        next_delta=next_delta,
        stable=stable,
        no_longer_pays=no_longer_pays,
        stop=stop,
        reason=reason,
        b_grid=np.asarray(grid["b_grid"]),
        cost_by_b=np.asarray(grid["cost_by_b"]),
        theta_star_by_b=np.asarray(grid["theta_star_by_b"]),
        error_model=jax.device_get(error_model),
        cost_model=cost_model,
        test_size=n_test,
    )


@on_host
def plan(config: ControllerConfig, history: History) -> Plan:
    """Fit both models to the whole history (Algorithm 1, lines 13 and 16), then plan."""
    sizes = np.asarray(history.train_sizes, np.float64)
    error_model = fit_truncated_power_laws(
        sizes, history.test_errors, history.test_counts, thetas=history.thetas
    )
    cost_model = fit_training_cost(
        np.asarray(history.images),
        np.asarray(history.training_usd),
        epochs=config.train_epochs,
        min_images=config.train_min_images,
    )
    return plan_from_models(config, history, error_model, cost_model)


def select_architecture(plans: Mapping[str, Plan]) -> str | None:
    """The candidate with the lowest C*, once every candidate's plan is stable (Section 4,
    "Extending MCAL to selecting the cheapest DNN architecture"); None until then."""
    if not plans:
        raise ValueError("select_architecture: no candidate plans given")
    if not all(p.stable for p in plans.values()):
        return None
    return min(plans, key=lambda name: plans[name].cost_star_usd)
