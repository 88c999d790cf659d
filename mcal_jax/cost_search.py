"""The plan's search: C(b) over a grid of training-set sizes b, with, for every b, the θ
and the size of T_cert that make it cheapest (docs/algorithm.md, step 6), in one jitted,
vectorised call, and the bill at its cheapest b term by term; and the same search over
curves refitted to resampled test counts, whose spread says how sure a plan's saving is.
`mcal_jax.controller` decides from them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mcal_jax.fit import (
    Arrays,
    Numeric,
    PowerLawFit,
    TrainingCostModel,
    predict_error,
    rounds_to_grow,
)
from mcal_jax.profile import bound_surface, predicted_bound
from mcal_jax.records import ControllerConfig, History, is_int

# Bisection steps on log |T_cert| (14: within 0.1% of the smallest feasible size at any
# pool size below 2^20); the replicate plans, whose savings only measure a spread, search
# coarser grids.
_BISECTIONS = 14
# The plan sizes T_cert for a draw with this many standard deviations more errors than
# predicted, and one error more: sized for the mean, the certificate falls short about half
# the time (in simulation, 1 gives the same mean bill with half the spread of 0 and less
# than 2), and the certificate counts whole errors: sized for a fraction of one, a small
# T_cert fails on the first (a 2,000-item pool, 62 items planned for 0.9 errors, one seen
# among the most confident: 5% machine-labeled instead of 68%).
_CERT_MARGIN = 1.0
_CERT_EXTRA_ERRORS = 1.0
_REPLICATE_BISECTIONS = 8
_REPLICATE_B_GRID = 64
_Tree = TypeVar("_Tree")


@struct.dataclass
class Prices:
    """The numbers a plan prices with: float64 on the host, `for_device` in a grid search."""

    num_items: Arrays
    num_test: Arrays  # |T_plan| now
    b_now: Arrays
    delta: Arrays
    epsilon: Arrays
    human_usd: Arrays
    so_far_usd: Arrays  # device dollars spent
    scoring_usd_per_item: Arrays

    @classmethod
    def of(cls, config: ControllerConfig, history: History) -> Prices:
        n_items, b_now = config.num_items, history.train_size
        values = {
            "num_items": n_items,
            "num_test": test_size(config, history),
            "b_now": b_now,
            "delta": history.delta,
            "epsilon": float(config.epsilon),
            "human_usd": float(config.human_usd_per_label),
            "so_far_usd": sum(history.training_usd) + sum(history.scoring_usd),
            # The last round scored the N − |B| items outside B.
            "scoring_usd_per_item": history.scoring_usd[-1] / max(n_items - b_now, 1),
        }
        return cls(
            **{k: np.asarray(v, np.int64 if is_int(v) else np.float64) for k, v in values.items()}
        )

    def for_device(self) -> Prices:
        """int32 and float32 copies: one dtype per field, so new values never recompile."""
        return jax.tree.map(
            lambda x: x.astype(np.int32 if np.issubdtype(x.dtype, np.integer) else np.float32),
            self,
        )


@struct.dataclass
class Grid:
    """C(b) on a grid of b from |B| to N − |T_plan|, with, per b, the cheapest |T_cert|, the
    largest feasible θ (its index, −1 when none), and the predicted error and bound there."""

    b_grid: Arrays
    cost_by_b: Arrays
    theta_star_by_b: Arrays
    theta_index_by_b: Arrays
    cert_size_by_b: Arrays
    machine_error_by_b: Arrays
    machine_bound_by_b: Arrays
    best: Arrays  # index of the minimum of cost_by_b


def test_size(config: ControllerConfig, history: History) -> int:
    """|T_plan| as the last round measured it (the config's size when not recorded)."""
    return history.test_sizes[-1] if history.test_sizes else config.num_test


def future_usd(
    b: Numeric, b_now: Numeric, delta: Numeric, cost_model: TrainingCostModel, p: Prices
) -> tuple[Numeric, Numeric, Numeric]:
    """(rounds, training USD, scoring USD) of growing B from ``b_now`` to ``b`` in rounds of
    ``delta`` (Eq. 3 generalised, `TrainingCostModel.growth_usd`); each round also scores
    the other N − size items. Numpy and jax alike, so the jitted grid search and the
    host-side δ search share it."""
    rounds, training = cost_model.growth_usd(b_now, b, delta)
    _, size_sum = rounds_to_grow(b_now, b, delta)
    scoring = p.scoring_usd_per_item * (rounds * p.num_items - size_sum)
    return rounds, training, scoring


def _cost_grid(
    fit: PowerLawFit,
    cost_model: TrainingCostModel,
    surface: jax.Array | None,
    fractions: jax.Array,
    p: Prices,
    num_b_grid: int,
    constraint: str,
    bisections: int = _BISECTIONS,
) -> Grid:
    """C(b, θ*(b)) with the cheapest |T_cert| for every b (Section 3, Eqs. 1-3).

    At b, the items left once B and T_plan are taken, L = N − |T_plan| − b, lose n to
    T_cert, and |S| = θ · (L − n). (n, θ, b) is feasible iff θ is trusted and the
    constraint holds with the bound predicted for n · ``fractions``[θ] test items above
    τ_θ (`profile.predicted_bound` of ``surface``, for the errors ε_θ(b) predicts among
    them plus `_CERT_MARGIN` standard deviations and `_CERT_EXTRA_ERRORS`; ``surface``
    None plans on ε_θ(b) itself, with no T_cert to size). Feasibility only grows with n (the bound
    tightens and |S| shrinks), so the cheapest n for θ is the smallest feasible one,
    found by bisection in log n; θ*(b) is the θ whose bill C_h · (N − |S|) is then
    lowest (0, with n = 0, when no θ is feasible at any n).
    """
    pool = p.num_items - p.num_test
    frac = jnp.arange(num_b_grid, dtype=jnp.float32) / (num_b_grid - 1)
    b = p.b_now + jnp.round((pool - p.b_now) * frac).astype(jnp.int32)
    error = predict_error(fit, b)  # [Θ, G]
    left = jnp.broadcast_to((pool - b).astype(jnp.float32), error.shape)
    thetas = jnp.broadcast_to(fit.thetas[:, None], error.shape)

    def feasible(n: jax.Array) -> tuple[jax.Array, jax.Array]:
        if surface is None:  # the point estimate, as the paper plans
            bound = error
        else:  # sized for an unlucky T_cert draw, by a whole error at least
            items = n * fractions[:, None]
            e = jnp.clip(error, 0.0, 1.0)
            wrong = items * e + _CERT_MARGIN * jnp.sqrt(items * e * (1.0 - e))
            rate = (wrong + _CERT_EXTRA_ERRORS) / jnp.maximum(items, 1.0)
            bound = predicted_bound(surface, rate, items)
        if constraint == "overall":
            ok = thetas * (left - n) * bound <= p.epsilon * p.num_items
        else:
            ok = bound <= p.epsilon
        return ok & fit.trusted[:, None], bound

    # Bisection on log n over [0, log L]: ``high`` always feasible once ``possible``.
    low, high = jnp.zeros_like(left), jnp.log(jnp.maximum(left, 1.0))
    possible = feasible(jnp.maximum(left, 1.0))[0] & (left >= 1.0)
    for _ in range(bisections):
        middle = 0.5 * (low + high)
        ok = feasible(jnp.exp(middle))[0]
        low, high = jnp.where(ok, low, middle), jnp.where(ok, middle, high)
    cert = jnp.minimum(jnp.ceil(jnp.exp(high) - 1e-3), left)
    ok, bound = feasible(cert)
    ok = ok & possible & (cert < left)
    machine = jnp.where(ok, thetas * (left - cert), 0.0)  # [Θ, G]
    index = jnp.argmax(machine, axis=0)  # the θ that machine-labels most: the cheapest
    g = jnp.arange(num_b_grid)
    any_feasible = ok[index, g]
    theta_star = jnp.where(any_feasible, fit.thetas[index], 0.0)
    _, training, scoring = future_usd(b, p.b_now, p.delta, cost_model, p)
    cost_by_b = p.human_usd * (p.num_items - machine[index, g]) + p.so_far_usd + training + scoring
    return Grid(
        b_grid=b,
        cost_by_b=cost_by_b,
        theta_star_by_b=theta_star,
        theta_index_by_b=jnp.where(any_feasible, index, -1),
        cert_size_by_b=jnp.where(any_feasible, cert[index, g], 0.0).astype(jnp.int32),
        machine_error_by_b=jnp.where(any_feasible, error[index, g], 0.0),
        machine_bound_by_b=jnp.where(any_feasible, bound[index, g], 0.0),
        best=jnp.argmin(cost_by_b),
    )


search_grid = jax.jit(_cost_grid, static_argnames=("num_b_grid", "constraint"))


@functools.partial(jax.jit, static_argnames=("num_b_grid", "constraint"))
def _replicate_savings(
    fits: PowerLawFit,
    cost_model: TrainingCostModel,
    surface: jax.Array | None,
    fractions: jax.Array,
    p: Prices,
    num_b_grid: int,
    constraint: str,
) -> Arrays:
    """C(|B|) − min_b C(b) of every replicate fit (stacked on a leading axis)."""
    grid = functools.partial(
        _cost_grid,
        num_b_grid=num_b_grid,
        constraint=constraint,
        bisections=_REPLICATE_BISECTIONS,
    )
    grids = jax.vmap(grid, (0, None, None, None, None))(fits, cost_model, surface, fractions, p)
    return grids.cost_by_b[:, 0] - jnp.min(grids.cost_by_b, axis=1)


def _as_float32(tree: _Tree) -> _Tree:
    """Host float32 copies of a fit's arrays (``trusted`` stays bool): a model left on an
    accelerator would pull the search back there."""
    return jax.tree.map(
        lambda x: jnp.asarray(np.asarray(x), jnp.bool_ if x.dtype == bool else jnp.float32),
        jax.tree.map(np.asarray, tree),
    )


def search(
    config: ControllerConfig,
    history: History,
    error_model: PowerLawFit,
    cost_model: TrainingCostModel,
    replicates: PowerLawFit | None,
    fractions: np.ndarray | None = None,
) -> tuple[Grid, float]:
    """The plan's grid (on the host) and the standard deviation of the replicates' savings
    (0 without replicates). ``fractions`` are the shares of T_cert expected above each
    τ_θ (default: those of T_plan in the latest round)."""
    if fractions is None:
        counts = np.asarray(history.test_counts[-1], np.float64)
        fractions = counts / max(test_size(config, history), 1)
    shares = jnp.asarray(fractions, jnp.float32)
    surface = None if config.confidence is None else jnp.asarray(bound_surface(config.confidence))
    prices = Prices.of(config, history).for_device()
    cost32 = _as_float32(cost_model)
    args = (cost32, surface, shares, prices)
    grid = jax.device_get(
        search_grid(
            _as_float32(error_model),
            *args,
            num_b_grid=config.num_b_grid,
            constraint=config.constraint,
        )
    )
    if replicates is None:
        return grid, 0.0
    savings = _replicate_savings(
        _as_float32(replicates),
        *args,
        num_b_grid=min(config.num_b_grid, _REPLICATE_B_GRID),
        constraint=config.constraint,
    )
    return grid, float(np.std(np.asarray(savings, np.float64)))


@dataclasses.dataclass(frozen=True)
class Bill:
    """Eq. 1 at the grid's cheapest b, term by term: B_opt = ``b_grid[best]``, θ* there (0
    when no θ is feasible) and |T_cert|, priced again in float64 on the host so that the
    terms add up exactly."""

    best: int
    b_opt: int
    theta_star: float
    cert_size: int
    machine: float  # |S|, continuous
    human_usd: float
    fixed_usd: float  # human labels and the device time spent so far
    future_rounds: int
    future_training_usd: float
    future_scoring_usd: float
    cost_star: float


def bill(
    config: ControllerConfig,
    history: History,
    grid: Grid,
    cost_model: TrainingCostModel,
    prices: Prices,
) -> Bill:
    """The `Bill` at the cheapest b of ``grid``, priced with the host's ``prices``."""
    best = int(grid.best)
    b_opt, theta_index = int(grid.b_grid[best]), int(grid.theta_index_by_b[best])
    theta_star = float(history.thetas[theta_index]) if theta_index >= 0 else 0.0
    cert_size = int(grid.cert_size_by_b[best])
    machine = theta_star * (config.num_items - test_size(config, history) - b_opt - cert_size)
    human_usd = config.human_usd_per_label * (config.num_items - machine)
    rounds, training, scoring = future_usd(
        np.int64(b_opt), np.int64(history.train_size), np.int64(history.delta), cost_model, prices
    )
    fixed_usd = human_usd + sum(history.training_usd) + sum(history.scoring_usd)
    return Bill(
        best=best,
        b_opt=b_opt,
        theta_star=theta_star,
        cert_size=cert_size,
        machine=machine,
        human_usd=human_usd,
        fixed_usd=fixed_usd,
        future_rounds=int(rounds),
        future_training_usd=float(training),
        future_scoring_usd=float(scoring),
        cost_star=fixed_usd + float(training) + float(scoring),
    )


def resampled_counts(config: ControllerConfig, history: History) -> tuple[np.ndarray, np.ndarray]:
    """[R, replicates · Θ] error and test counts: every round's error profile resampled
    ``plan_replicates`` times as a bootstrap of T_plan's items. The items of each band of
    confidence between consecutive τ_θ (and below the last) are drawn again (multinomial
    over the bands), and so are their errors (binomial at the band's rate), so the counts
    stay nested in θ."""
    reps = config.plan_replicates
    rng = np.random.default_rng([config.seed, history.num_rounds, 17])
    counts = np.asarray(history.test_counts, np.int64)
    errors = np.asarray(history.test_errors, np.int64)
    sizes = history.test_sizes or (config.num_test,) * history.num_rounds
    out_errors, out_counts = [], []
    for r in range(history.num_rounds):
        # Measured profiles are nested; clipping keeps a hand-made history (rounded
        # rates, counts that are not monotone) a valid distribution too.
        band = np.maximum(np.diff(counts[r], prepend=0), 0)
        band_errors = np.clip(np.diff(errors[r], prepend=0), 0, band)
        total = max(int(sizes[r]), int(counts[r, -1]))
        weights = np.append(band, total - counts[r, -1]) / max(total, 1)
        drawn = rng.multinomial(total, weights, size=reps)[:, :-1]  # [reps, Θ]
        rate = np.divide(band_errors, band, out=np.zeros(band.shape), where=band > 0)
        wrong = rng.binomial(drawn, rate)
        out_counts.append(np.cumsum(drawn, axis=1).reshape(-1))
        out_errors.append(np.cumsum(wrong, axis=1).reshape(-1))
    return np.stack(out_errors), np.stack(out_counts)
