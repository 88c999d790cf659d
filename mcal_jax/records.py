"""The records of MCAL's decisions, immutable, so that a test can write one with three
lines of numbers: what the user asks for (`ControllerConfig`), what has been measured round
by round (`History`), and what :mod:`mcal_jax.controller` decided (`Plan`)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Protocol

import numpy as np
import numpy.typing as npt

from mcal_jax.fit import PowerLawFit, TrainingCostModel
from mcal_jax.profile import CONSTRAINTS


def is_int(value: object) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


class InvalidFieldError(ValueError):
    """A field of a decision record has an invalid value; ``field`` names it."""

    def __init__(self, owner: object, field: str, wanted: str) -> None:
        self.field, self.value, self.wanted = field, getattr(owner, field), wanted
        super().__init__(f"{type(owner).__name__}.{field} = {self.value!r}: must be {wanted}")


def check_field(owner: object, field: str, ok: bool | np.bool_, wanted: str) -> None:
    """Raises `InvalidFieldError` for ``owner.field`` unless ``ok``."""
    if not ok:
        raise InvalidFieldError(owner, field, wanted)


@dataclasses.dataclass(frozen=True, eq=False)
class History:
    """What has been measured, one entry per completed round (train D(B_i), score U and T_plan).

    ``test_errors`` and ``test_counts`` [R, Θ] are, per round and θ, the misclassified and
    all T items with confidence ≥ τ_θ (as in ``ErrorProfile``): ε_T(θ) is their ratio.
    ``certified_machine`` is, per round, how many items of U the round's model could
    machine-label under the certificate right away if T_plan certified (step 10 applied to
    that round with T_plan: an estimate for the stop rules, never a certificate).
    ``cost_star``, ``b_opts`` and ``no_longer_pays`` hold the C*, the B_opt and whether
    buying more no longer paid, planned after each earlier round (`record_plan`), for the
    stability test and the stop rules. ``spent_usd`` is
    everything paid so far, human labels included; ``delta`` the current batch size δ.
    """

    train_sizes: tuple[int, ...]
    test_errors: np.ndarray
    test_counts: np.ndarray
    thetas: np.ndarray
    training_usd: tuple[float, ...]
    images: tuple[float, ...]
    scoring_usd: tuple[float, ...]
    cost_star: tuple[float, ...]
    spent_usd: float
    delta: int
    certified_machine: tuple[int, ...] = ()
    b_opts: tuple[int, ...] = ()
    no_longer_pays: tuple[bool, ...] = ()
    test_sizes: tuple[int, ...] = ()  # per round, |T| (empty: the config's num_test)

    def __post_init__(self) -> None:
        check = functools.partial(check_field, self)
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
        for name in ("training_usd", "images", "scoring_usd"):
            check(name, len(getattr(self, name)) == shape[0], f"one entry per round ({shape[0]})")
        check("cost_star", len(self.cost_star) <= shape[0], f"at most {shape[0]} entries")
        check("b_opts", len(self.b_opts) == len(self.cost_star), "one entry per C*")
        same = len(self.no_longer_pays) == len(self.cost_star)
        check("no_longer_pays", same, "one entry per C*")
        machine = self.certified_machine
        enough = len(machine) == shape[0] and all(m >= 0 for m in machine)
        check("certified_machine", enough, f"one count ≥ 0 per round ({shape[0]})")
        check("delta", is_int(self.delta) and self.delta >= 1, "an integer ≥ 1")
        tests = self.test_sizes
        per_round = len(tests) in (0, shape[0]) and all(is_int(t) and t >= 0 for t in tests)
        check("test_sizes", per_round, f"empty or one integer ≥ 0 per round ({shape[0]})")
        fields: dict[str, object] = {"thetas": thetas, "test_errors": errors, "test_counts": counts}
        fields["train_sizes"] = tuple(int(v) for v in sizes)
        for name in ("training_usd", "images", "scoring_usd", "cost_star"):
            fields[name] = tuple(float(v) for v in getattr(self, name))
        for name in ("certified_machine", "b_opts", "test_sizes"):
            fields[name] = tuple(int(v) for v in getattr(self, name))
        fields["no_longer_pays"] = tuple(bool(v) for v in self.no_longer_pays)
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @classmethod
    def start(cls, thetas: npt.ArrayLike, delta: int, spent_usd: float = 0.0) -> History:
        """An empty history: before round 1, with ``spent_usd`` already paid (T_plan's
        labels, say)."""
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
        test_errors: npt.ArrayLike,
        test_counts: npt.ArrayLike,
        training_usd: float,
        images: float,
        scoring_usd: float,
        labels_usd: float = 0.0,
        certified_machine: int = 0,
        test_size: int | None = None,
    ) -> History:
        """The history after one more round; ``labels_usd`` is what its new labels cost,
        ``certified_machine`` how much of U its model could machine-label right away (on
        T_plan), ``test_size`` the |T_plan| it was measured on (kept when given for every
        round)."""
        test_sizes = (*self.test_sizes, test_size) if test_size is not None else ()
        return dataclasses.replace(
            self,
            train_sizes=(*self.train_sizes, train_size),
            test_errors=np.vstack([self.test_errors, np.reshape(test_errors, (1, -1))]),
            test_counts=np.vstack([self.test_counts, np.reshape(test_counts, (1, -1))]),
            training_usd=(*self.training_usd, training_usd),
            images=(*self.images, images),
            scoring_usd=(*self.scoring_usd, scoring_usd),
            spent_usd=self.spent_usd + training_usd + scoring_usd + labels_usd,
            certified_machine=(*self.certified_machine, certified_machine),
            test_sizes=test_sizes if len(test_sizes) == self.num_rounds + 1 else (),
        )

    def record_plan(self, plan: PlanOutcome) -> History:
        """The history after acting on ``plan``: its C* and B_opt kept for the next
        stability test (Algorithm 1, line 23) and its δ current (line 21)."""
        delta = plan.next_delta if plan.next_delta > 0 else self.delta
        return dataclasses.replace(
            self,
            cost_star=(*self.cost_star, plan.cost_star_usd),
            b_opts=(*self.b_opts, plan.b_opt),
            no_longer_pays=(*self.no_longer_pays, plan.no_longer_pays),
            delta=int(delta),
        )


class PlanOutcome(Protocol):
    """What the next round's history keeps of a plan: a `Plan`, or a plan read back from
    a run's records."""

    @property
    def cost_star_usd(self) -> float: ...

    @property
    def b_opt(self) -> int: ...

    @property
    def no_longer_pays(self) -> bool: ...

    @property
    def next_delta(self) -> int: ...


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    """What the user asks for and what things cost; docs/algorithm.md, steps 6-9.

    ``constraint`` is "overall" (errors(S) / N ≤ ε) or "machine_subset" (errors(S) / |S|
    ≤ ε). ``num_test`` is |T_plan| at the start, the test set the rounds read.
    ``confidence`` is 1 − α of the certificate step 10 will give on T_cert, which the plan
    predicts (None: plan on the point estimate). ``max_rounds`` caps the rounds of a run
    (None: no cap). ``train_epochs`` and ``train_min_images`` describe how a future round
    trains (its passes over B, and the images of its step floor) for the training-cost
    model. ``num_b_grid`` is fixed so repeated plans compile once. ``plan_replicates``
    plans are refitted to resampled test counts to measure how uncertain a plan's saving
    is (0: taken as certain); ``seed`` seeds that resampling, so a plan is a function of
    its inputs.
    """

    num_items: int
    num_test: int
    epsilon: float
    constraint: str
    human_usd_per_label: float
    delta0: int
    min_delta: int
    train_epochs: float
    train_min_images: float = 0.0
    stability_tolerance: float = 0.05
    batch_slack: float = 0.05
    min_rounds_for_stability: int = 3
    budget_usd: float | None = None
    max_rounds: int | None = None
    confidence: float | None = 0.95
    num_b_grid: int = 1024
    plan_replicates: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        check = functools.partial(check_field, self)
        check("num_items", is_int(self.num_items) and self.num_items >= 2, "an integer ≥ 2")
        n = self.num_items
        check("num_test", is_int(self.num_test) and 0 <= self.num_test < n, f"in [0, {n})")
        pool = n - self.num_test
        check("epsilon", 0.0 < self.epsilon < 1.0, "a target error in (0, 1)")
        check("constraint", self.constraint in CONSTRAINTS, f"one of {CONSTRAINTS}")
        check("human_usd_per_label", self.human_usd_per_label > 0.0, "a price > 0 USD")
        ok = is_int(self.delta0) and 1 <= self.delta0 <= pool
        check("delta0", ok, f"an integer in [1, N − |T| = {pool}]")
        check("min_delta", is_int(self.min_delta) and self.min_delta >= 1, "an integer ≥ 1")
        check("train_epochs", self.train_epochs > 0, "> 0")
        check("train_min_images", self.train_min_images >= 0, "≥ 0")
        check("stability_tolerance", self.stability_tolerance > 0.0, "> 0")
        check("batch_slack", self.batch_slack >= 0.0, "≥ 0")
        rounds = self.min_rounds_for_stability
        check("min_rounds_for_stability", is_int(rounds) and rounds >= 1, "an integer ≥ 1")
        check("budget_usd", self.budget_usd is None or self.budget_usd > 0.0, "None or > 0")
        ok = self.max_rounds is None or (is_int(self.max_rounds) and self.max_rounds >= 1)
        check("max_rounds", ok, "None or an integer ≥ 1")
        ok = self.confidence is None or 0.0 < self.confidence < 1.0
        check("confidence", ok, "None or a level in (0, 1)")
        check("num_b_grid", is_int(self.num_b_grid) and self.num_b_grid >= 2, "an integer ≥ 2")
        ok = is_int(self.plan_replicates) and self.plan_replicates >= 0
        check("plan_replicates", ok, "an integer ≥ 0")
        check("seed", is_int(self.seed), "an integer")


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """The decision after one round; the cost terms add up to ``cost_star_usd`` (Eq. 1).

    ``human_labels_usd`` prices every human label, bought or to buy (T_plan, B_opt, T_cert
    and the residual); ``scoring_usd`` is scoring so far plus predicted. ``machine_error``
    and ``machine_bound`` are the predicted error at B_opt and θ* and the bound step 10
    would certify there with ``cert_size`` items in T_cert. ``cost_now_usd`` is C(|B|),
    the price of stopping now; ``saving_usd`` = C(|B|) − C* what more labels are predicted
    to save, and ``saving_uncertainty_usd`` how sure that is: one standard deviation of
    the savings of plans refitted to resampled test counts (the slack β·C* without them).
    ``next_delta`` is δ, the batch size the loop carries, and ``next_batch_size`` what the
    next round buys: δ, or less where B_opt is nearer (both 0 when ``stop``; a plan read
    from an older record buys δ).
    ``error_model`` and ``cost_model`` are the fits the plan used; the curve ``cost_by_b``
    (with ``theta_star_by_b`` and the best |T_cert| ``cert_size_by_b``) over ``b_grid``
    starts at the current |B|: its first point is what stopping now would do.
    """

    b_opt: int
    theta_star: float
    num_machine: int
    machine_error: float
    machine_bound: float
    cost_star_usd: float
    cost_now_usd: float
    saving_usd: float
    saving_uncertainty_usd: float
    human_labels_usd: float
    training_so_far_usd: float
    future_training_usd: float
    scoring_usd: float
    future_rounds: int
    next_delta: int
    stable: bool
    no_longer_pays: bool
    stop: bool
    reason: str
    cert_size: int
    b_grid: np.ndarray
    cost_by_b: np.ndarray
    theta_star_by_b: np.ndarray
    cert_size_by_b: np.ndarray
    error_model: PowerLawFit
    cost_model: TrainingCostModel
    next_batch_size: int | None = None

    @property
    def batch(self) -> int:
        """How many items the next round buys."""
        return self.next_delta if self.next_batch_size is None else self.next_batch_size

    @property
    def cert_size_now(self) -> int:
        """|T_cert| that makes stopping now cheapest, by the plan's curves (step 10 decides
        the size it buys from the labeling classifier's own confidences)."""
        return int(self.cert_size_by_b[0])
