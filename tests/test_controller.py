"""Tests for mcal_jax.controller: the plan against a brute-force search over every integer b."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from mcal_jax import controller, cost_search
from mcal_jax import fit as fit_module
from mcal_jax.controller import (
    ControllerConfig,
    History,
    plan,
    plan_from_models,
    select_architecture,
)
from mcal_jax.fit import PowerLawFit, TrainingCostModel

THETAS = np.round(np.arange(1, 21) * 0.05, 2)
N, NUM_TEST, POOL = 2000, 100, 1900
COST = TrainingCostModel(usd_per_image_epoch=1.5e-6, usd_per_round=0.01, epochs=200.0)
# Error grows with θ and falls with b: θ* climbs from 0.45 at b = 100 to 1.0 by b ≈ 1000.
ALPHA = 0.05 + 2.0 * THETAS**2
GAMMA, INV_K = 0.5, 1.0 / 3000.0


def make_fit(alpha=ALPHA, gamma=GAMMA, inv_k=INV_K, trusted=None, thetas=THETAS) -> PowerLawFit:
    shape = np.shape(thetas)
    as32 = lambda x: jnp.asarray(np.broadcast_to(x, shape), jnp.float32)
    trusted = np.ones(shape, bool) if trusted is None else np.asarray(trusted)
    return PowerLawFit(as32(thetas), as32(alpha), as32(gamma), as32(inv_k), jnp.asarray(trusted))


def make_config(**changes) -> ControllerConfig:
    base = dict(
        num_items=N,
        num_test=NUM_TEST,
        epsilon=0.05,
        constraint="machine_subset",
        human_usd_per_label=0.04,
        delta0=30,
        min_delta=5,
        train_epochs=200.0,
        confidence=None,  # plan on the point estimate; the bound has tests of its own
        num_b_grid=2048,
    )
    return ControllerConfig(**{**base, **changes})


def make_history(
    sizes=(40, 70, 100),
    b_opts=(),
    delta=30,
    thetas=THETAS,
    spent=4.0,
    scoring=2e-3,
    certified=None,
    counts=50,
    no_longer_paid=None,
):
    """Rounds on ``sizes`` with ``counts`` T items above every τ_θ (a tenth of them wrong);
    ``b_opts`` are the B_opt the plans after the last rounds found, ``no_longer_paid``
    whether they found that more labels no longer pay (default: no). Each round's model
    certifies ``certified`` items of U (one count, or one per round; default 5·|B|, so
    that every round's labels paid for themselves)."""
    history = History.start(thetas, delta, spent_usd=spent)
    if certified is None:
        certified = [5 * size for size in sizes]
    certified = np.broadcast_to(certified, len(sizes))
    for size, machine in zip(sizes, certified, strict=True):
        errors, counts = np.full(len(thetas), counts // 10), np.full(len(thetas), counts)
        history = history.append_round(
            size, errors, counts, 3e-4 * size, 200 * size, scoring, 1.2, int(machine)
        )
    paid = tuple(no_longer_paid) if no_longer_paid is not None else (False,) * len(b_opts)
    return dataclasses.replace(
        history, cost_star=(1.0,) * len(b_opts), b_opts=tuple(b_opts), no_longer_pays=paid
    )


def brute_force(config, history, fit, cost_model, delta=None):
    """C(b, θ*(b)) for every integer b in float64, future rounds simulated one by one, on
    the point estimate (``confidence`` None): θ is feasible at b when its error meets the
    constraint once T_cert's n items are taken from the L = N − |T| − b left; n is at least
    one item, and under ``overall`` the smallest that makes θ·(L − n)·error ≤ ε·N."""
    thetas, alpha = np.asarray(fit.thetas, float), np.asarray(fit.alpha, float)
    gamma, inv_k = np.asarray(fit.gamma, float), np.asarray(fit.inv_k, float)
    pool, b_now = config.num_items - config.num_test, history.train_size
    delta = history.delta if delta is None else delta
    b = np.arange(b_now, pool + 1)
    error = alpha[:, None] * b ** -gamma[:, None] * np.exp(-b * inv_k[:, None])
    left = (pool - b).astype(float)
    if config.constraint == "overall":
        need = left - config.epsilon * config.num_items / (thetas[:, None] * error)
        cert = np.maximum(1.0, np.ceil(need))
    else:
        cert = np.where(error <= config.epsilon, 1.0, np.inf)
    ok = (cert < left) & np.asarray(fit.trusted)[:, None]
    machine = np.where(ok, thetas[:, None] * (left - cert), 0.0)
    best_theta = np.argmax(machine, axis=0)
    columns = np.arange(b.size)
    theta_star = np.where(ok[best_theta, columns], thetas[best_theta], 0.0)
    size, training, scoring = np.full(b.shape, b_now), np.zeros(b.shape), np.zeros(b.shape)
    kappa, epochs, floor = (
        cost_model.usd_per_image_epoch,
        cost_model.epochs,
        cost_model.min_images,
    )
    # The last round scored the N − |B| items outside B.
    scoring_per_item = history.scoring_usd[-1] / (config.num_items - b_now)
    while np.any(size < b):
        active = size < b
        size = np.where(active, np.minimum(size + delta, b), size)
        images = np.maximum(epochs * size, floor)
        training += active * (kappa * images + cost_model.usd_per_round)
        scoring += active * scoring_per_item * (config.num_items - size)
    so_far = sum(history.training_usd) + sum(history.scoring_usd)
    human = config.human_usd_per_label * (config.num_items - machine[best_theta, columns])
    return b, human + so_far + training + scoring, theta_star


@pytest.mark.parametrize("floor", [0.0, 500 * 200.0])
def test_plan_matches_brute_force_when_grid_holds_every_integer(floor):
    """With a step floor (every round trains at least as much as on 500 items) too."""
    config, history, fit = make_config(), make_history(), make_fit()
    cost_model = dataclasses.replace(COST, min_images=floor)
    p = plan_from_models(config, history, fit, cost_model)
    b, cost, theta_star = brute_force(config, history, fit, cost_model)
    best = int(np.argmin(cost))
    assert 100 < b[best] < POOL  # an interior optimum, not an end of the range
    assert np.isclose(p.cost_star_usd, cost[best], rtol=1e-5)
    assert np.isclose(cost[p.b_opt - 100], cost[best], rtol=1e-5)
    assert abs(p.b_opt - b[best]) <= 2
    assert p.theta_star == pytest.approx(theta_star[p.b_opt - 100])
    total = p.human_labels_usd + p.training_so_far_usd + p.future_training_usd + p.scoring_usd
    assert p.cost_star_usd == pytest.approx(total, rel=1e-12)
    assert p.cert_size == 1  # on the point estimate, T_cert needs no more than one item
    human = 0.04 * (N - p.theta_star * (POOL - p.b_opt - p.cert_size))
    assert p.human_labels_usd == pytest.approx(human)
    assert p.future_rounds == -(-(p.b_opt - 100) // 30)
    assert p.b_grid[0] == 100 and p.b_grid[-1] == POOL and p.b_grid.size == 2048


@pytest.mark.parametrize("constraint", ["machine_subset", "overall"])
def test_coarse_grid_within_its_resolution(constraint):
    config = make_config(num_b_grid=64, constraint=constraint)
    history, fit = make_history(), make_fit()
    p = plan_from_models(config, history, fit, COST)
    b, cost, theta_star = brute_force(config, history, fit, COST)
    best = int(np.argmin(cost))
    # Some grid point g lies in [b*, b* + h]; θ*(g) ≥ θ*(b*) as the error falls with b, so
    # C(g) ≤ C(g, θ*(b*)): the tolerance is the worst such C over that window.
    h = int(np.ceil((POOL - 100) / 63))
    window = slice(best, min(best + h, b.size - 1) + 1)
    at_fixed_theta = cost[window] + 0.04 * (theta_star[window] - theta_star[best]) * (
        POOL - b[window]
    )
    tolerance = float(at_fixed_theta.max() - cost[best])
    assert 0 < tolerance < 0.05 * cost[best]
    assert set(np.diff(p.b_grid)) <= {h - 1, h}
    assert cost[best] * (1 - 1e-6) <= p.cost_star_usd <= cost[best] + tolerance + 1e-5
    assert np.isclose(cost[p.b_opt - 100], p.cost_star_usd, rtol=1e-5)


def test_next_delta_is_the_smallest_within_the_slack():
    config = make_config()
    first = plan_from_models(config, make_history(), make_fit(), COST)
    history = make_history(b_opts=(first.b_opt,))
    p = plan_from_models(config, history, make_fit(), COST)
    assert p.stable and not p.stop and p.b_opt == first.b_opt
    remaining = p.b_opt - 100
    bound = p.cost_star_usd * (1 + config.batch_slack)

    def cost_with(delta):
        b, cost, _ = brute_force(config, history, make_fit(), COST, delta=delta)
        return cost[p.b_opt - 100]

    assert config.min_delta <= p.next_delta < history.delta
    assert cost_with(p.next_delta) <= bound
    rounds = -(-remaining // p.next_delta)
    smaller = {-(-remaining // n) for n in range(rounds + 1, remaining // config.min_delta + 1)}
    smaller = sorted(d for d in smaller if d < p.next_delta)
    assert smaller, "the test needs a smaller δ to compare with"
    assert all(cost_with(d) > bound for d in smaller)
    assert f"δ = {p.next_delta}: {rounds} more rounds" in p.reason


def test_flat_curve_stops_and_overall_admits_a_larger_theta():
    """The previous plan already found B_opt = |B| (at 70): the decision holds, so it stops."""
    # ε_θ constant in b; θ ∈ {0.25, 0.5, 0.75, 1}. machine_subset: ε_θ ≤ 0.05 → θ* = 0.5.
    # overall at b = |B| = 100, N = 1000, |T| = 50, one item of T_cert: θ = 0.75 gives
    # 636.75 · 0.07 / 1000 = 0.045 ≤ 0.05, but θ = 1 needs |S| · 0.2 ≤ 50, |S| ≤ 250 < 636.75.
    thetas = np.array([0.25, 0.5, 0.75, 1.0])
    fit = make_fit(alpha=[0.01, 0.04, 0.07, 0.2], gamma=0.0, inv_k=0.0, thetas=thetas)
    history = make_history(thetas=thetas, b_opts=(70,), no_longer_paid=(True,))
    base = dict(num_items=1000, num_test=50, num_b_grid=512)
    subset = plan_from_models(make_config(**base), history, fit, COST)
    overall = plan_from_models(make_config(**base, constraint="overall"), history, fit, COST)
    spent_device = sum(history.training_usd) + sum(history.scoring_usd)
    for p, theta, machine in ((subset, 0.5, 424), (overall, 0.75, 637)):
        assert p.b_opt == 100 and p.stop and p.next_delta == 0
        assert p.theta_star == theta and p.num_machine == machine and p.cert_size == 1
        assert p.cost_star_usd == pytest.approx(0.04 * (1000 - theta * 849) + spent_device)
        assert p.future_training_usd == 0.0
        assert "no longer pays" in p.reason and "so did the previous plan" in p.reason
    assert overall.cost_star_usd == pytest.approx(subset.cost_star_usd - 0.04 * 0.25 * 849)
    # θ = 0.75 untrusted: never chosen, anywhere on the curve.
    untrusted = make_fit(alpha=[0.01, 0.04, 0.07, 0.2], gamma=0.0, inv_k=0.0, thetas=thetas,
                         trusted=[True, True, False, True])  # fmt: skip
    config = make_config(**base, constraint="overall")
    p = plan_from_models(config, history, untrusted, COST)
    assert p.theta_star == 0.5 and not np.any(np.isclose(p.theta_star_by_b, 0.75))


def test_no_stop_on_a_flat_curve_before_enough_rounds():
    thetas = np.array([0.5, 1.0])
    fit = make_fit(alpha=[0.01, 0.2], gamma=0.0, inv_k=0.0, thetas=thetas)
    p = plan_from_models(make_config(), make_history((40, 70), thetas=thetas), fit, COST)
    assert p.b_opt == 70 and not p.stop and p.next_delta == 30
    assert "2 of 3 rounds" in p.reason


def test_a_round_buys_no_more_than_b_opt_is_away_once_the_curves_are_fitted():
    """A flat curve: B_opt is the |B| of now. After three rounds the plan says once that
    more labels no longer pay, so the loop goes on to confirm it, buying only the floor
    (not δ0, a tenth of a small pool); δ itself stays for later rounds. After two rounds
    the curve is not yet read so: the round buys δ."""
    thetas = np.array([0.5, 1.0])
    fit = make_fit(alpha=[0.01, 0.2], gamma=0.0, inv_k=0.0, thetas=thetas)
    p = plan_from_models(make_config(), make_history(thetas=thetas), fit, COST)
    assert p.b_opt == 100 and not p.stop and "not yet a decision" in p.reason
    assert p.next_delta == 30 and p.batch == 5 == make_config().min_delta
    assert "this round buys 5, B_opt being 0 labels away" in p.reason
    assert make_history(thetas=thetas).record_plan(p).delta == 30
    early = plan_from_models(make_config(), make_history((40, 70), thetas=thetas), fit, COST)
    assert early.batch == early.next_delta == 30
    # B_opt far ahead: δ.
    far = plan_from_models(make_config(), make_history(), make_fit(), COST)
    assert far.b_opt > 100 + far.next_delta and far.batch == far.next_delta


def test_no_feasible_theta_means_human_only():
    fit = make_fit(alpha=10.0, gamma=0.0, inv_k=0.0)  # error 10 everywhere
    history = make_history(b_opts=(100,))  # stable: B_opt did not move
    p = plan_from_models(make_config(), history, fit, COST)
    spent_device = sum(history.training_usd) + sum(history.scoring_usd)
    assert p.theta_star == 0.0 and p.b_opt == 100 and p.num_machine == 0
    assert p.cost_star_usd == pytest.approx(0.04 * N + spent_device)
    assert np.all(p.theta_star_by_b == 0.0) and p.stop


def test_pool_exhausted_and_budget_cap_stop():
    config = make_config()
    p = plan_from_models(config, make_history((40, 70, POOL)), make_fit(), COST)
    assert p.stop and p.next_delta == 0 and p.b_opt == POOL
    assert "pool exhausted" in p.reason and str(POOL) in p.reason
    history = make_history(spent=20.0)
    spent = history.spent_usd  # 20 + the three rounds' labels and device time
    capped = plan_from_models(make_config(budget_usd=spent), history, make_fit(), COST)
    assert capped.stop and "budget cap" in capped.reason and f"{spent:.2f}" in capped.reason
    uncapped = plan_from_models(make_config(budget_usd=spent + 1), history, make_fit(), COST)
    assert not uncapped.stop and uncapped.next_delta == 30


def test_next_delta_never_exceeds_the_pool():
    history = make_history((40, 70, POOL - 10), certified=0)
    fit = make_fit(alpha=0.5, gamma=0.0, inv_k=0.0)  # no θ ever feasible: B_opt = |B|
    # Three rounds of five needed: no stop yet, δ0 = 30 capped at the 10 items left.
    config = make_config(min_rounds_for_stability=5)
    p = plan_from_models(config, history, fit, COST)
    assert not p.stop and p.next_delta == 10


def test_stability_needs_enough_rounds_and_a_small_change_of_b_opt():
    config, fit = make_config(), make_fit()
    b = plan_from_models(config, make_history(), fit, COST).b_opt
    two_rounds = plan_from_models(config, make_history((70, 100), (b,)), fit, COST)
    assert not two_rounds.stable and two_rounds.next_delta == 30
    assert plan_from_models(config, make_history(b_opts=(b, int(b * 1.04))), fit, COST).stable
    moved = plan_from_models(config, make_history(b_opts=(b, int(b * 1.2))), fit, COST)
    assert not moved.stable and moved.next_delta == 30 and "B_opt moved" in moved.reason
    assert not plan_from_models(config, make_history(), fit, COST).stable  # nothing to compare


def test_select_architecture():
    p = plan_from_models(make_config(), make_history(), make_fit(), COST)
    cheap = dataclasses.replace(p, cost_star_usd=10.0, stable=True)
    dear = dataclasses.replace(p, cost_star_usd=12.0, stable=True)
    assert select_architecture({"resnet56": dear, "resnet20": cheap}) == "resnet20"
    unstable = dataclasses.replace(dear, stable=False)
    assert select_architecture({"resnet20": cheap, "resnet56": unstable}) is None
    with pytest.raises(ValueError, match="no candidate"):
        select_architecture({})


def test_cheaper_labels_never_buy_more():
    """Eq. 1 with fixed models: C = C_h·f(b) + g(b), with g the device cost. If C_h falls,
    the minimiser cannot move to a b with more device cost, so B_opt does not grow (the
    paper's Table 2 reports the opposite; it cannot come from Eq. 1 alone)."""
    history, fit = make_history(), make_fit()
    amazon = plan_from_models(make_config(), history, fit, COST)
    satyam = plan_from_models(make_config(human_usd_per_label=0.003), history, fit, COST)
    assert satyam.b_opt < amazon.b_opt
    assert satyam.future_training_usd < amazon.future_training_usd
    free = TrainingCostModel(usd_per_image_epoch=0.0, usd_per_round=0.0, epochs=200.0)
    config, unscored = make_config(), make_history(scoring=0.0)
    b_free = {
        price: plan_from_models(
            dataclasses.replace(config, human_usd_per_label=price), unscored, fit, free
        ).b_opt
        for price in (0.04, 0.003)
    }
    assert b_free[0.04] == b_free[0.003]  # free training: B_opt does not depend on C_h


def test_one_compile_for_repeated_plans():
    config = make_config(num_b_grid=333)
    before = cost_search.search_grid._cache_size()
    plan_from_models(config, make_history(), make_fit(), COST)
    assert cost_search.search_grid._cache_size() == before + 1
    plan_from_models(config, make_history((10, 50, 90, 120), delta=7), make_fit(alpha=0.3), COST)
    cost = TrainingCostModel(usd_per_image_epoch=2e-6, usd_per_round=0.0, epochs=10)
    plan_from_models(dataclasses.replace(config, epsilon=0.02), make_history(), make_fit(), cost)
    assert cost_search.search_grid._cache_size() == before + 1


def test_history_helpers_and_validation():
    history = make_history()
    assert history.num_rounds == 3 and history.train_size == 100
    assert history.spent_usd == pytest.approx(4.0 + 3e-4 * 210 + 3 * 2e-3 + 3 * 1.2)
    p = plan_from_models(make_config(), make_history(b_opts=(500,)), make_fit(), COST)
    recorded = history.record_plan(p)
    assert recorded.cost_star == (p.cost_star_usd,) and recorded.delta == p.next_delta
    assert recorded.b_opts == (p.b_opt,) and recorded.no_longer_pays == (p.no_longer_pays,)
    with pytest.raises(ValueError, match=r"History.test_errors"):
        dataclasses.replace(history, test_errors=np.zeros((2, 20)))
    with pytest.raises(ValueError, match=r"History.test_errors"):
        dataclasses.replace(history, test_errors=history.test_counts + 1)
    with pytest.raises(ValueError, match=r"History.train_sizes"):
        dataclasses.replace(history, train_sizes=(40, 40, 100))
    with pytest.raises(ValueError, match="no rounds"):
        plan_from_models(make_config(), History.start(THETAS, 30), make_fit(), COST)


@pytest.mark.parametrize(
    "field, value",
    [("epsilon", 1.5), ("constraint", "per_class"), ("delta0", 5000), ("num_b_grid", 1),
     ("human_usd_per_label", 0.0), ("num_test", N), ("budget_usd", -1.0), ("max_rounds", 0),
     ("plan_replicates", -1)],
)  # fmt: skip
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"ControllerConfig\.{field} = {value!r}"):
        make_config(**{field: value})


@pytest.mark.skipif(
    not hasattr(fit_module, "fit_truncated_power_laws"), reason="fitting functions not yet written"
)
def test_plan_end_to_end_on_sampled_curves():
    """Error counts on T from the true curves; the fitted plan lands near the true optimum.

    One θ step changes C by C_h · 0.05 · |U| ≈ 8% here, so a plan only gets within 2% when
    the fitted curves put θ*'s steps at the right b."""
    config, true_fit = make_config(), make_fit()
    sizes = (100, 150, 200, 250, 300, 350)
    history = History.start(THETAS, 30)
    for size in sizes:
        rates = np.asarray(fit_module.predict_error(true_fit, np.array([size])))[:, 0]
        counts = np.round(THETAS * 400 + 20)
        errors = np.round(rates * counts)
        usd = COST.growth_usd(0.0, size, size)[1]
        history = history.append_round(size, errors, counts, usd, COST.epochs * size, 2e-3)
    p = plan(config, history)
    b, cost, _ = brute_force(config, history, true_fit, COST)
    assert abs(p.b_opt - b[np.argmin(cost)]) <= 50
    assert cost[p.b_opt - 350] <= 1.02 * cost.min()
    assert p.cost_star_usd == pytest.approx(cost[p.b_opt - 350], rel=0.02)


def test_round_cap_raises_delta_to_reach_b_opt_and_stops_at_the_cap():
    config, fit = make_config(), make_fit()
    b = plan_from_models(config, make_history(), fit, COST).b_opt
    history = make_history(b_opts=(b,))  # stable: B_opt did not move
    free = plan_from_models(config, history, fit, COST)
    assert free.stable and not free.stop
    remaining = free.b_opt - history.train_size
    loose = plan_from_models(make_config(max_rounds=1000), history, fit, COST)
    assert loose.next_delta == free.next_delta  # the cap is far: the slack rule decides
    rounds_left = max(1, remaining // (4 * free.next_delta))
    tight = make_config(max_rounds=history.num_rounds + rounds_left)
    capped = plan_from_models(tight, history, fit, COST)
    assert capped.next_delta == -(-remaining // rounds_left) > free.next_delta
    assert "to reach B_opt within max_rounds" in capped.reason
    # Unstable models keep δ whatever the cap; the round at the cap stops.
    unstable = plan_from_models(tight, make_history(b_opts=(2 * b,)), fit, COST)
    assert not unstable.stable and unstable.next_delta == 30
    at_cap = plan_from_models(make_config(max_rounds=3), history, fit, COST)
    assert at_cap.stop and at_cap.next_delta == 0 and "round cap" in at_cap.reason
    # Never more than the unlabeled pool: 10 items left.
    near_end = make_history((40, 70, POOL - 10), b_opts=(b,))
    p = plan_from_models(make_config(max_rounds=4), near_end, make_fit(alpha=0.5, gamma=0.0,
                         inv_k=0.0), COST)  # fmt: skip
    assert p.next_delta <= 10


def test_one_noisy_round_does_not_stop_the_run():
    """Rounds measured on the true curves, then one lucky round with no test error at all:
    its fit says B_opt ≤ |B|, which the first version took as the irreversible stop. The
    decision does not hold yet (B_opt jumped, and the previous plan wanted more labels),
    so it keeps buying δ. (No replicates and no slack β: any saving is taken as real.)"""
    config = make_config(confidence=0.95, batch_slack=0.0, plan_replicates=0)
    true_fit = make_fit()
    history = History.start(THETAS, 30)
    counts = np.round(THETAS * 400 + 20)
    plans = []
    for size in (100, 200, 300, 400):
        rates = np.asarray(fit_module.predict_error(true_fit, np.array([size])))[:, 0]
        errors = np.zeros(len(THETAS)) if size == 400 else np.round(rates * counts)
        history = history.append_round(
            size, errors, counts, 3e-4 * size, 200 * size, 2e-3, certified_machine=2 * size
        )
        plans.append(plan(config, history))
        history = history.record_plan(plans[-1])
    noisy = plans[3]
    assert noisy.b_opt <= 400 and history.num_rounds >= config.min_rounds_for_stability
    assert not noisy.stop and noisy.next_delta == 30 and "not yet a decision" in noisy.reason
    assert plans[2].b_opt > 400  # before the lucky round, the plan wanted more labels


def test_no_longer_pays_twice_in_a_row_stops():
    fit = make_fit(alpha=0.01, gamma=0.0, inv_k=0.0)  # flat and feasible: B_opt = |B|
    once = plan_from_models(make_config(), make_history(b_opts=(900,)), fit, COST)
    assert once.b_opt == 100 and once.no_longer_pays and not once.stop  # 900 was wanted
    history = make_history(b_opts=(900,), no_longer_paid=(True,))
    twice = plan_from_models(make_config(), history, fit, COST)
    assert twice.stop and "so did the previous plan" in twice.reason


def _replicates(fit: PowerLawFit, scales) -> PowerLawFit:
    """Replicate curves: ``fit`` with its α multiplied by each of ``scales``."""
    scales = np.asarray(scales, np.float32)[:, None]
    stack = lambda x: jnp.broadcast_to(jnp.asarray(x), (scales.shape[0], *np.shape(x)))
    return PowerLawFit(
        stack(fit.thetas), jnp.asarray(scales * np.asarray(fit.alpha)), stack(fit.gamma),
        stack(fit.inv_k), stack(fit.trusted),
    )  # fmt: skip


def test_more_labels_no_longer_pay_when_the_saving_is_within_its_uncertainty():
    """B_opt lies beyond |B|: more labels are predicted to save something. With replicate
    plans, the saving is held against the spread of their own savings: within it, a stable
    plan stops (whatever the slack β); beyond it, the loop never stops. Without replicates
    the slack β·C* stands in for that spread."""
    config, fit, sizes = make_config(), make_fit(), (250, 300, 350)
    p = plan_from_models(config, make_history(sizes, certified=0), fit, COST)
    assert p.b_opt > 350 and p.cost_now_usd == pytest.approx(p.cost_by_b[0])
    assert p.saving_usd == pytest.approx(p.cost_now_usd - p.cost_by_b.min(), rel=1e-6)
    assert p.saving_usd > 0
    stable = make_history(sizes, b_opts=(p.b_opt,), certified=0)
    slack = p.saving_usd / p.cost_star_usd
    # No replicates: the slack decides, and the reason quotes it.
    wide = plan_from_models(
        dataclasses.replace(config, batch_slack=slack + 1e-3), stable, fit, COST
    )
    assert wide.saving_uncertainty_usd == pytest.approx((slack + 1e-3) * wide.cost_star_usd)
    assert wide.no_longer_pays and wide.stable and wide.stop
    assert f"saving {wide.saving_usd:.2f} ± {wide.saving_uncertainty_usd:.2f} USD" in wide.reason
    narrow = plan_from_models(
        dataclasses.replace(config, batch_slack=slack - 1e-3), stable, fit, COST
    )
    assert not narrow.stop and "lower bill by more than its uncertainty" in narrow.reason
    # Replicates whose savings spread more than the saving: stop, even with no slack at all.
    noisy = _replicates(fit, [0.25, 0.5, 1.0, 2.0, 4.0])
    none = dataclasses.replace(config, batch_slack=0.0)
    q = plan_from_models(none, stable, fit, COST, noisy)
    assert q.saving_uncertainty_usd > q.saving_usd > 0 and q.stop and q.b_opt == p.b_opt
    # Identical replicates have no spread: the saving is real, go on, however wide the slack.
    same = _replicates(fit, [1.0, 1.0])
    huge = dataclasses.replace(config, batch_slack=10.0)
    r = plan_from_models(huge, stable, fit, COST, same)
    assert r.saving_uncertainty_usd == pytest.approx(0.0, abs=1e-3) and not r.stop
    assert not r.no_longer_pays and r.next_delta > 0


def test_latest_model_certifying_every_remaining_item_stops():
    history = make_history(certified=(50, 60, POOL - 100))  # all of U, after |B| = 100
    p = plan_from_models(make_config(), history, make_fit(), COST)
    assert p.stop and "already machine-labels all 1800 remaining items on T_plan" in p.reason
    short_history = make_history(certified=(50, 60, POOL - 101))
    short = plan_from_models(make_config(), short_history, make_fit(), COST)
    assert not short.stop


@pytest.mark.parametrize("constraint", ["machine_subset", "overall"])
def test_plan_sizes_t_cert_to_certify_what_it_promises(constraint):
    """At each b and θ, the plan's |T_cert| is the smallest n whose Clopper–Pearson bound
    (scipy's beta), for the errors predicted among the n·θ items above τ_θ plus one
    standard deviation and one error more, meets the constraint; θ*(b) is the θ that then
    machine-labels most of what is left. Brute force over every integer n, at a sample of b."""
    import scipy.stats

    config = make_config(confidence=0.95, constraint=constraint)
    counts = np.round(THETAS * NUM_TEST)  # T_plan items above τ_θ: a fraction θ of T_plan
    history = dataclasses.replace(
        make_history(), test_counts=np.tile(counts, (3, 1)), test_errors=np.zeros((3, 20))
    )
    fit = make_fit()
    p = plan_from_models(config, history, fit, COST)
    n = np.arange(1, POOL + 1, dtype=float)
    checked = 0
    for g in range(0, p.b_grid.size, 97):
        b = float(p.b_grid[g])
        left = POOL - b
        error = np.asarray(fit.alpha) * b**-GAMMA * np.exp(-b * INV_K)
        items = n[None, :] * (counts / NUM_TEST)[:, None]  # [Θ, n]
        sd = np.sqrt(items * (error * (1 - error))[:, None])
        wrong = np.minimum(items * error[:, None] + sd + 1.0, items)
        bound = np.where(wrong < items, scipy.stats.beta.ppf(0.95, wrong + 1, items - wrong), 1)
        machine = THETAS[:, None] * (left - n[None, :])
        ok = (machine * bound <= 0.05 * N) if constraint == "overall" else (bound <= 0.05)
        ok &= n[None, :] < left
        smallest = np.where(ok.any(axis=1), n[np.argmax(ok, axis=1)], np.inf)
        best = THETAS * (left - smallest)
        if not np.isfinite(best).any():
            assert p.theta_star_by_b[g] == 0.0 and p.cert_size_by_b[g] == 0
            continue
        k = int(np.argmax(np.where(np.isfinite(best), best, -1.0)))
        checked += 1
        # Interpolating the tabulated bound moves n by a fraction of a percent.
        assert p.theta_star_by_b[g] == pytest.approx(THETAS[k])
        assert p.cert_size_by_b[g] == pytest.approx(smallest[k], rel=0.01, abs=2)
        human = 0.04 * (N - THETAS[k] * (left - p.cert_size_by_b[g]))
        assert p.cost_by_b[g] >= human  # human labels plus device dollars
    assert checked >= 10
    assert p.cert_size == p.cert_size_by_b[np.argmin(p.cost_by_b)] > 0
    assert p.cert_size_now == p.cert_size_by_b[0]
    point = plan_from_models(make_config(constraint=constraint), history, fit, COST)
    assert p.cost_star_usd > point.cost_star_usd  # certifying costs labels
    assert p.machine_bound > p.machine_error


def test_certificate_size_takes_a_profile_at_its_word():
    """Step 10 sizes T_cert from a measured profile: its rates stand for the error above
    each threshold, with a share θ of T_cert above τ_θ. A better profile needs fewer items
    to certify, and a hopeless one none at all; on the planning grid it is the size a plan
    over a flat curve at those rates finds for stopping now."""
    from mcal_jax.profile import ErrorProfile

    config = make_config(confidence=0.95, constraint="overall")
    counts = np.round(THETAS * NUM_TEST).astype(int)
    history = History.start(THETAS, 30).append_round(
        100, np.zeros(20), counts, 0.0, 1.0, 0.0, test_size=NUM_TEST
    )

    def profile(rate):
        errors = np.floor(rate * counts)
        return ErrorProfile(THETAS.astype(np.float32), np.zeros(20), errors, counts, counts)

    size = lambda rate, c=config: controller.certificate_size(c, history, profile(rate))
    assert 0 < size(0.02) < size(0.05)
    assert size(0.5, make_config(confidence=0.95, constraint="machine_subset")) == 0
    at_five = profile(0.05)
    rates = at_five.test_errors / np.maximum(counts, 1)
    flat = make_fit(alpha=np.maximum(rates, 1e-6), gamma=0.0, inv_k=0.0, trusted=counts >= 20)
    flat_history = dataclasses.replace(history, test_errors=at_five.test_errors[None])
    planned = plan_from_models(config, flat_history, flat, COST)
    assert planned.cert_size_now == size(0.05)


def test_no_error_on_t_plan_still_sizes_t_cert_for_one():
    """No error seen on T_plan promises none in T_cert only on average: the certificate
    counts whole errors, so the size leaves room for one wrong item of T_cert among all it
    would machine-label (sized for the expected fraction of one, a 2,000-item pool lost its
    certificate to the first error: 5% machine-labeled instead of 68%)."""
    import scipy.stats

    from mcal_jax.profile import ErrorProfile

    config = make_config(confidence=0.95, constraint="overall")
    counts = np.round(THETAS * NUM_TEST).astype(int)
    history = History.start(THETAS, 30).append_round(
        100, np.zeros(20), counts, 0.0, 1.0, 0.0, test_size=NUM_TEST
    )
    clean = ErrorProfile(THETAS.astype(np.float32), np.zeros(20), np.zeros(20), counts, counts)
    size = controller.certificate_size(config, history, clean)
    left = N - NUM_TEST - 100  # θ* = 1: all of what is left but T_cert is machine-labeled
    one_error = scipy.stats.beta.ppf(0.95, 2, size - 1)
    assert (left - size) * one_error <= 0.05 * N * 1.002, size
    assert size < 2 * 95  # and not much more: about 90 items suffice


def test_resampled_counts_are_nested_and_centred_on_the_measured_ones():
    config = make_config(plan_replicates=400)
    history = make_history(counts=90)
    history = dataclasses.replace(history, test_sizes=(100, 100, 100))
    errors, counts = cost_search.resampled_counts(config, history)
    assert errors.shape == counts.shape == (3, 400 * len(THETAS))
    errors, counts = errors.reshape(3, 400, -1), counts.reshape(3, 400, -1)
    assert np.all(np.diff(counts, axis=2) >= 0) and np.all(np.diff(errors, axis=2) >= 0)
    assert np.all(errors <= counts) and np.all(counts <= 100)
    np.testing.assert_allclose(counts.mean(axis=1), history.test_counts, rtol=0.05)
    np.testing.assert_allclose(errors.mean(axis=1), history.test_errors, rtol=0.2)
    assert np.all(counts.std(axis=1) > 0)  # the items were drawn again
    again = cost_search.resampled_counts(config, history)
    np.testing.assert_array_equal(again[0].reshape(3, 400, -1), errors)  # seeded: pure


def test_plan_with_replicates_is_a_function_of_its_inputs():
    config = make_config(confidence=0.95, plan_replicates=8)
    history = make_history(counts=90)
    first, second = plan(config, history), plan(config, history)
    assert first.saving_uncertainty_usd == second.saving_uncertainty_usd > 0
    assert first.reason == second.reason
    other_seed = plan(dataclasses.replace(config, seed=1), history)
    assert other_seed.saving_uncertainty_usd != first.saving_uncertainty_usd


def test_plans_run_on_the_host():
    """Both entry points of the plan carry `parallel.on_host` (tests/test_fit.py shows
    what it does): a plan's many small kernels must not wait on accelerator launches."""
    from mcal_jax import parallel

    for fn in (controller.plan, controller.plan_from_models):
        assert fn.__code__ is parallel.on_host(lambda: None).__code__, fn.__name__
