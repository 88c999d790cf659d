"""MCAL's decisions: how many labels to buy, in what batches, and when to stop.

Pure functions from what has been measured (a `History`) and the fitted models
(`mcal_jax.fit`) to a `Plan`; the loop that trains, buys labels and writes files calls them.
They implement Section 3 and Algorithm 1 (lines 9 and 18-22) of the paper, as amended by
the project's specification:

- the total cost is Eq. 1 with nothing left out, C = C_h · (|T| + |B| + |R|) + C_train +
  C_score, i.e. C_h · (N − |S|) plus every dollar of device time, spent and predicted;
- |S| = θ · |X∖(T ∪ B)| for the largest θ whose predicted error ε_θ(b) (Eq. 2) meets the
  error constraint, searched over a θ × b grid in one jitted, vectorised call;
- future training follows Eq. 3 generalised to a per-round overhead and a last, partial
  round: growing B from |B| to b in steps of δ costs Σ_rounds κ · size · epochs + overhead.

Choices the paper leaves open, made here:

- Item counts in the cost are continuous (|S| = θ · |U| need not be an integer); `Plan`
  reports |S| rounded.
- "Buying more labels no longer pays" (B_opt ≤ |B|) stops the loop only once
  `min_rounds_for_stability` rounds are in the fit: with fewer points the learning curve is
  barely determined (a single point fits a flat curve), so the loop keeps buying δ0.
- The floor `min_delta` limits how finely the remaining labels are split into rounds; it
  never makes a round buy past B_opt, so the last round may be smaller than the floor.
- When the models are unstable δ keeps its current value (Algorithm 1 changes δ only inside
  the stability test, line 19-22), which is δ0 until the first stable round.
"""

from __future__ import annotations

import dataclasses
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
)

CONSTRAINTS = ("overall", "machine_subset")


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check(owner, field: str, ok, wanted: str) -> None:
    if not ok:
        name = type(owner).__name__
        raise ValueError(f"{name}.{field} = {getattr(owner, field)!r}: must be {wanted}")


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    """What the user asks for and what things cost; see the specification's loop, steps 6-9.

    ``constraint`` is "overall" (the paper's: errors(S) / N ≤ ε, human labels count as
    correct) or "machine_subset" (errors(S) / |S| ≤ ε, what the authors' code enforced).
    ``scoring_usd_per_item`` is the device cost of scoring one item once; every round scores
    the unlabeled pool and T. ``num_b_grid`` is fixed so repeated plans compile once.
    """

    num_items: int
    num_test: int
    epsilon: float
    constraint: str
    human_usd_per_label: float
    delta0: int
    min_delta: int
    stability_tolerance: float = 0.05
    batch_slack: float = 0.05
    min_rounds_for_stability: int = 3
    budget_usd: float | None = None
    scoring_usd_per_item: float = 0.0
    num_b_grid: int = 1024

    def __post_init__(self):
        check = functools.partial(_check, self)
        check("num_items", _is_int(self.num_items) and self.num_items >= 2, "an integer ≥ 2")
        n = self.num_items
        check("num_test", _is_int(self.num_test) and 0 <= self.num_test < n, f"in [0, {n})")
        pool = n - self.num_test
        check("epsilon", 0.0 < self.epsilon < 1.0, "a target error in (0, 1)")
        check("constraint", self.constraint in CONSTRAINTS, f"one of {CONSTRAINTS}")
        check("human_usd_per_label", self.human_usd_per_label > 0.0, "a price > 0 USD")
        ok = _is_int(self.delta0) and 1 <= self.delta0 <= pool
        check("delta0", ok, f"an integer in [1, N − |T| = {pool}]")
        check("min_delta", _is_int(self.min_delta) and self.min_delta >= 1, "an integer ≥ 1")
        check("stability_tolerance", self.stability_tolerance > 0.0, "> 0")
        check("batch_slack", self.batch_slack >= 0.0, "≥ 0")
        rounds = self.min_rounds_for_stability
        check("min_rounds_for_stability", _is_int(rounds) and rounds >= 1, "an integer ≥ 1")
        check("budget_usd", self.budget_usd is None or self.budget_usd > 0.0, "None or > 0")
        check("scoring_usd_per_item", self.scoring_usd_per_item >= 0.0, "≥ 0")
        check("num_b_grid", _is_int(self.num_b_grid) and self.num_b_grid >= 2, "an integer ≥ 2")


@dataclasses.dataclass(frozen=True, eq=False)
class History:
    """What has been measured, one entry per completed round (train D(B_i), score U and T).

    ``test_errors`` and ``test_counts`` [R, Θ] are, per round and θ, the misclassified and
    all T items with confidence ≥ τ_θ (as in ``ErrorProfile``): ε_T(θ) is their ratio.
    ``cost_star`` holds the C* planned after each earlier round (`record_plan`), for the
    stability test. ``spent_usd`` is everything paid so far, human labels included;
    ``delta`` the current batch size δ.
    """

    train_sizes: tuple[int, ...]
    test_errors: np.ndarray
    test_counts: np.ndarray
    thetas: np.ndarray
    training_usd: tuple[float, ...]
    epochs: tuple[float, ...]
    scoring_usd: tuple[float, ...]
    cost_star: tuple[float, ...]
    spent_usd: float
    delta: int

    def __post_init__(self):
        check = functools.partial(_check, self)
        thetas = np.asarray(self.thetas, np.float64)
        ok = thetas.ndim == 1 and thetas.size > 0 and np.all((thetas > 0) & (thetas <= 1))
        check("thetas", ok, "a non-empty 1-D array in (0, 1]")
        sizes, shape = np.asarray(self.train_sizes), (len(self.train_sizes), thetas.size)
        check("train_sizes", np.all(sizes >= 1) and np.all(np.diff(sizes) > 0), "increasing, ≥ 1")
        errors, counts = np.asarray(self.test_errors, float), np.asarray(self.test_counts, float)
        ok = counts.shape == shape and np.all(counts >= 0)
        check("test_counts", ok, f"{list(shape)} [rounds, thetas] counts ≥ 0")
        ok = errors.shape == shape and np.all((errors >= 0) & (errors <= counts))
        check("test_errors", ok, f"{list(shape)} [rounds, thetas] error counts in [0, counts]")
        for name in ("training_usd", "epochs", "scoring_usd"):
            check(name, len(getattr(self, name)) == shape[0], f"one entry per round ({shape[0]})")
        check("cost_star", len(self.cost_star) <= shape[0], f"at most {shape[0]} entries")
        check("delta", _is_int(self.delta) and self.delta >= 1, "an integer ≥ 1")
        fields = {"thetas": thetas, "test_errors": errors, "test_counts": counts}
        fields["train_sizes"] = tuple(int(v) for v in sizes)
        for name in ("training_usd", "epochs", "scoring_usd", "cost_star"):
            fields[name] = tuple(float(v) for v in getattr(self, name))
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @classmethod
    def start(cls, thetas, delta: int, spent_usd: float = 0.0) -> History:
        """An empty history: before round 1, with ``spent_usd`` already paid (e.g. T's labels)."""
        thetas = np.asarray(thetas, np.float64)
        empty = np.zeros((0, thetas.size))
        return cls((), empty, empty, thetas, (), (), (), (), float(spent_usd), int(delta))

    @property
    def num_rounds(self) -> int:
        return len(self.train_sizes)

    @property
    def train_size(self) -> int:
        """The current |B|."""
        if not self.train_sizes:
            raise ValueError("History has no rounds yet, so no current |B|")
        return self.train_sizes[-1]

    def append_round(
        self,
        train_size: int,
        test_errors,
        test_counts,
        training_usd: float,
        epochs: float,
        scoring_usd: float,
        labels_usd: float = 0.0,
    ) -> History:
        """The history after one more round; ``labels_usd`` is what its new labels cost."""
        return dataclasses.replace(
            self,
            train_sizes=(*self.train_sizes, train_size),
            test_errors=np.vstack([self.test_errors, np.reshape(test_errors, (1, -1))]),
            test_counts=np.vstack([self.test_counts, np.reshape(test_counts, (1, -1))]),
            training_usd=(*self.training_usd, training_usd),
            epochs=(*self.epochs, epochs),
            scoring_usd=(*self.scoring_usd, scoring_usd),
            spent_usd=self.spent_usd + training_usd + scoring_usd + labels_usd,
        )

    def record_plan(self, plan: Plan) -> History:
        """The history after acting on ``plan``: its C* kept for the next stability test
        (Algorithm 1, line 23) and its δ current (line 21)."""
        delta = plan.next_delta if plan.next_delta > 0 else self.delta
        return dataclasses.replace(
            self, cost_star=(*self.cost_star, plan.cost_star_usd), delta=int(delta)
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """The decision after one round; the cost terms add up to ``cost_star_usd`` (Eq. 1).

    ``human_labels_usd`` prices every human label, bought or to buy (T, B_opt and the
    residual); ``scoring_usd`` is scoring so far plus predicted. ``next_delta`` is 0 when
    ``stop``. The curve ``cost_by_b`` (with ``theta_star_by_b``) over ``b_grid`` is for
    reports.
    """

    b_opt: int
    theta_star: float
    num_machine: int
    machine_error: float
    cost_star_usd: float
    human_labels_usd: float
    training_so_far_usd: float
    future_training_usd: float
    scoring_usd: float
    future_rounds: int
    next_delta: int
    stable: bool
    stop: bool
    reason: str
    b_grid: np.ndarray
    cost_by_b: np.ndarray
    theta_star_by_b: np.ndarray


def _future_rounds_usd(b, b_now, delta, rates: Mapping):
    """Closed-form cost of growing B from ``b_now`` to ``b`` in rounds of ``delta``.

    n = ⌈(b − |B|)/δ⌉ rounds train on |B| + δ, |B| + 2δ, …, |B| + (n−1)δ and finally b, so
    Σ sizes = n·|B| + (b − |B|) + δ·n(n−1)/2 (Eq. 3 of the paper with a partial last round).
    Each round also scores the other N − size items. Integer sizes; works on numpy and jax
    arrays alike, so the jitted grid search and the host-side δ search share it.
    """
    rounds = -((b_now - b) // delta)
    n = rounds * 1.0
    sizes = n * b_now + (b - b_now) + delta * n * (n - 1.0) / 2.0
    training = rates["kappa_epochs"] * sizes + rates["usd_per_round"] * n
    scoring = rates["scoring_usd"] * (n * rates["num_items"] - sizes)
    return rounds, training, scoring


@functools.partial(jax.jit, static_argnames=("num_b_grid", "constraint"))
def _search_grid(fit: PowerLawFit, p: dict, *, num_b_grid: int, constraint: str) -> dict:
    """C(b, θ*(b)) on a fixed grid of b from |B| to N − |T| (Section 3, Eqs. 1-3).

    For every (θ, b): |S| = θ · (N − |T| − b), feasible iff θ is trusted and the constraint
    holds with ε_θ(b); θ*(b) is the largest feasible θ (the cheapest, as C falls with |S|)
    or 0 when none is. Returns the curve and the index of its minimum.
    """
    pool = p["num_items"] - p["num_test"]
    frac = jnp.arange(num_b_grid, dtype=jnp.float32) / (num_b_grid - 1)
    b = p["b_now"] + jnp.round((pool - p["b_now"]) * frac).astype(jnp.int32)
    error = predict_error(fit, b)  # [Θ, G]
    unlabeled = (pool - b).astype(jnp.float32)
    machine = fit.thetas[:, None] * unlabeled[None, :]
    if constraint == "overall":
        feasible = machine * error <= p["epsilon"] * p["num_items"]
    else:
        feasible = error <= p["epsilon"]
    feasible = feasible & fit.trusted[:, None]
    theta_index = jnp.argmax(jnp.where(feasible, fit.thetas[:, None], -1.0), axis=0)
    any_feasible = jnp.any(feasible, axis=0)
    theta_star = jnp.where(any_feasible, fit.thetas[theta_index], 0.0)
    _, training, scoring = _future_rounds_usd(b, p["b_now"], p["delta"], p)
    human = p["human_usd"] * (p["num_items"] - theta_star * unlabeled)
    cost = human + p["so_far_usd"] + training + scoring
    return {
        "b_grid": b,
        "cost_by_b": cost,
        "theta_star_by_b": theta_star,
        "theta_index_by_b": jnp.where(any_feasible, theta_index, -1),
        "machine_error_by_b": jnp.where(any_feasible, error[theta_index, jnp.arange(b.size)], 0),
        "best": jnp.argmin(cost),
    }


def plan_from_models(
    config: ControllerConfig,
    history: History,
    error_model: PowerLawFit,
    cost_model: TrainingCostModel,
) -> Plan:
    """Algorithm 1, lines 18-22 and the loop test, given fitted models.

    B_opt = argmin_b C(b, θ*(b)) with C the full Eq. 1 (human labels of T, B and the
    residual, training and scoring spent and predicted with the current δ). Stable iff at
    least ``min_rounds_for_stability`` rounds are in the fit and C* moved by less than Δ
    since the last plan (line 19). Once stable, δ = ⌈(B_opt − |B|)/n⌉ for the largest n
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
    n_items, n_test, b_now = config.num_items, config.num_test, history.train_size
    pool = n_items - n_test
    if b_now > pool:
        raise ValueError(f"plan_from_models: |B| = {b_now} exceeds N − |T| = {pool}")
    training_so_far, scoring_so_far = sum(history.training_usd), sum(history.scoring_usd)
    rates = {
        "num_items": n_items,
        "kappa_epochs": float(cost_model.usd_per_image_epoch) * float(cost_model.epochs),
        "usd_per_round": float(cost_model.usd_per_round),
        "scoring_usd": float(config.scoring_usd_per_item),
    }
    given = {
        **rates,
        "num_test": n_test,
        "b_now": b_now,
        "delta": history.delta,
        "epsilon": float(config.epsilon),
        "human_usd": float(config.human_usd_per_label),
        "so_far_usd": training_so_far + scoring_so_far,
    }
    # Fixed dtypes, so that new values never trigger a new compile.
    prices = {k: jnp.asarray(v, jnp.int32 if _is_int(v) else jnp.float32) for k, v in given.items()}
    fit = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), error_model)
    fit = fit.replace(trusted=jnp.asarray(error_model.trusted, jnp.bool_))
    grid = jax.device_get(
        _search_grid(fit, prices, num_b_grid=config.num_b_grid, constraint=config.constraint)
    )
    best = int(grid["best"])
    b_opt, theta_index = int(grid["b_grid"][best]), int(grid["theta_index_by_b"][best])
    theta_star = float(thetas[theta_index]) if theta_index >= 0 else 0.0

    # The breakdown at B_opt again in float64 on the host, so the terms add up exactly.
    machine = theta_star * (pool - b_opt)
    human_usd = config.human_usd_per_label * (n_items - machine)
    rounds, future_training, future_scoring = _future_rounds_usd(
        np.int64(b_opt), np.int64(b_now), np.int64(history.delta), rates
    )
    fixed_usd = human_usd + training_so_far + scoring_so_far
    cost_star = fixed_usd + float(future_training) + float(future_scoring)

    previous = history.cost_star[-1] if history.cost_star else None
    change = abs(cost_star - previous) / cost_star if previous is not None else np.inf
    enough_rounds = history.num_rounds >= config.min_rounds_for_stability
    stable = bool(enough_rounds and change < config.stability_tolerance)
    if not enough_rounds:
        why_unstable = f"{history.num_rounds} of {config.min_rounds_for_stability} rounds fitted"
    elif previous is None:
        why_unstable = "no earlier C* to compare with"
    else:
        why_unstable = f"C* moved {change:.1%} (tolerance {config.stability_tolerance:.1%})"
    summary = (
        f"B_opt = {b_opt}, θ* = {theta_star:.2f}, |S| ≈ {machine:.0f}, "
        f"C* = {cost_star:.2f} USD (human-only {config.human_usd_per_label * n_items:.2f})"
    )

    stop, next_delta = True, 0
    if b_now >= pool:
        reason = f"pool exhausted: |B| = {b_now} = N − |T| = {pool}; {summary}"
    elif config.budget_usd is not None and history.spent_usd >= config.budget_usd:
        reason = (
            f"budget cap reached: spent {history.spent_usd:.2f} ≥ {config.budget_usd:.2f} USD; "
            f"{summary}"
        )
    elif b_opt <= b_now and enough_rounds:
        reason = f"buying more labels no longer pays: B_opt = {b_opt} ≤ |B| = {b_now}; {summary}"
    elif not stable:
        stop, next_delta = False, min(history.delta, pool - b_now)
        reason = f"models not yet stable ({why_unstable}); δ stays {next_delta}; {summary}"
    else:
        # Line 20, vectorised over the number of remaining rounds n.
        remaining = b_opt - b_now
        n = np.arange(1, max(1, remaining // config.min_delta) + 1, dtype=np.int64)
        deltas = -(-remaining // n)
        _, training_n, scoring_n = _future_rounds_usd(
            np.int64(b_opt), np.int64(b_now), deltas, rates
        )
        total_n = fixed_usd + training_n + scoring_n
        bound = cost_star * (1.0 + config.batch_slack)
        within = np.flatnonzero(total_n <= bound)
        pick = int(within[-1]) if within.size else int(np.argmin(total_n))
        stop, next_delta = False, int(deltas[pick])
        relation = "≤" if within.size else "> (none fits; the cheapest)"
        reason = (
            f"models stable (C* moved {change:.1%} < {config.stability_tolerance:.1%}); "
            f"δ = {next_delta}: {-(-remaining // next_delta)} more rounds cost "
            f"{total_n[pick]:.2f} {relation} C*·(1+β) = {bound:.2f} USD; {summary}"
        )
    return Plan(
        b_opt=b_opt,
        theta_star=theta_star,
        num_machine=int(round(machine)),
        machine_error=float(grid["machine_error_by_b"][best]),
        cost_star_usd=float(cost_star),
        human_labels_usd=float(human_usd),
        training_so_far_usd=float(training_so_far),
        future_training_usd=float(future_training),
        scoring_usd=float(scoring_so_far + future_scoring),
        future_rounds=int(rounds),
        next_delta=next_delta,
        stable=stable,
        stop=stop,
        reason=reason,
        b_grid=np.asarray(grid["b_grid"]),
        cost_by_b=np.asarray(grid["cost_by_b"]),
        theta_star_by_b=np.asarray(grid["theta_star_by_b"]),
    )


def plan(config: ControllerConfig, history: History) -> Plan:
    """Fit both models to the whole history (Algorithm 1, lines 13 and 16), then plan."""
    sizes = np.asarray(history.train_sizes, np.float64)
    error_model = fit_truncated_power_laws(
        sizes, history.test_errors, history.test_counts, thetas=history.thetas
    )
    cost_model = fit_training_cost(
        sizes, np.asarray(history.epochs), np.asarray(history.training_usd)
    )
    return plan_from_models(config, history, error_model, cost_model)


def next_batch_size(plan: Plan, history: History, *, rounds_left: int, num_unlabeled: int) -> int:
    """δ for the next round: the plan's (Algorithm 1, line 21), or the current δ while the
    models are unstable; raised, once stable, so that B reaches b_opt within the
    ``rounds_left`` rounds a run may still take (a cap the search itself does not see);
    never more than the unlabeled pool."""
    delta = plan.next_delta or history.delta
    if plan.stable and rounds_left > 0:
        delta = max(delta, -(-(plan.b_opt - history.train_size) // rounds_left))
    return int(min(delta, num_unlabeled))


def select_architecture(plans: Mapping[str, Plan]) -> str | None:
    """The candidate with the lowest C*, once every candidate's plan is stable (Section 4,
    "Extending MCAL to selecting the cheapest DNN architecture"); None until then."""
    if not plans:
        raise ValueError("select_architecture: no candidate plans given")
    if not all(p.stable for p in plans.values()):
        return None
    return min(plans, key=lambda name: plans[name].cost_star_usd)
