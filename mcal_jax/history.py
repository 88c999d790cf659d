"""What MCAL has measured, round by round: the input of every decision of
:mod:`mcal_jax.controller`, as an immutable record a test can write with three lines of
numbers."""

from __future__ import annotations

import dataclasses
import functools
from typing import Protocol

import numpy as np


def is_int(value) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


class InvalidFieldError(ValueError):
    """A field of a decision record has an invalid value; ``field`` names it."""

    def __init__(self, owner: object, field: str, wanted: str):
        self.field, self.value, self.wanted = field, getattr(owner, field), wanted
        super().__init__(f"{type(owner).__name__}.{field} = {self.value!r}: must be {wanted}")


def check_field(owner, field: str, ok, wanted: str) -> None:
    """Raises `InvalidFieldError` for ``owner.field`` unless ``ok``."""
    if not ok:
        raise InvalidFieldError(owner, field, wanted)


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
    images: tuple[float, ...]
    scoring_usd: tuple[float, ...]
    cost_star: tuple[float, ...]
    spent_usd: float
    delta: int

    def __post_init__(self):
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
        check("delta", is_int(self.delta) and self.delta >= 1, "an integer ≥ 1")
        fields: dict[str, object] = {"thetas": thetas, "test_errors": errors, "test_counts": counts}
        fields["train_sizes"] = tuple(int(v) for v in sizes)
        for name in ("training_usd", "images", "scoring_usd", "cost_star"):
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
        images: float,
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
            images=(*self.images, images),
            scoring_usd=(*self.scoring_usd, scoring_usd),
            spent_usd=self.spent_usd + training_usd + scoring_usd + labels_usd,
        )

    def record_plan(self, plan: PlanOutcome) -> History:
        """The history after acting on ``plan``: its C* kept for the next stability test
        (Algorithm 1, line 23) and its δ current (line 21)."""
        delta = plan.next_delta if plan.next_delta > 0 else self.delta
        return dataclasses.replace(
            self, cost_star=(*self.cost_star, plan.cost_star_usd), delta=int(delta)
        )


class PlanOutcome(Protocol):
    """What the next round's history keeps of a plan: a `Plan`, or a plan read back from
    a run's records."""

    @property
    def cost_star_usd(self) -> float: ...

    @property
    def next_delta(self) -> int: ...
