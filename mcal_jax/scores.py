"""A classifier's scores of the pool, and the decisions the run takes from them.

`Scores` holds the whole pool's scores in one process. Under ``jax.distributed`` with a
host-placed pool, each process holds only its shard's (`sharded_scores.ShardScores`).
Both are `PoolScores`: the loop, the final labeling and the baselines take every decision
through its methods (the least confident candidates, the error profile, the pseudo-labels,
the items above a threshold), so the same code runs whether or not the scores are split,
and the split decisions are exactly the whole pool's.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Self

import numpy as np

from mcal_jax import profile as profile_lib


class PoolScores(Protocol):
    """The scores of a pool of ``num_items`` items; every method returns the same on every
    process (a collective where the scores are split: each process calls it with the same
    arguments)."""

    @property
    def num_items(self) -> int: ...

    def scores_of(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(confidence, predicted) of a few ``items`` (a test set's), in their order."""
        ...

    def all_finite(self, items: np.ndarray) -> bool:
        """Whether every one of ``items`` has a finite confidence."""
        ...

    def least_confident(
        self, candidates: np.ndarray, count: int, tie_order: np.ndarray
    ) -> np.ndarray:
        """Algorithm 1, line 10: the ``count`` least confident ``candidates``, ties broken
        by ``tie_order`` (each item's rank in the run's random order), sorted."""
        ...

    def pseudo_labels(
        self, items: np.ndarray, fraction: float, tie_order: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, predicted labels) of the ⌊``fraction`` · |items|⌋ most confident of
        ``items`` (which must have been scored), ties broken by ``tie_order``, sorted: the
        training targets a semi-supervised round takes from its teacher. Uses no label."""
        ...

    def profile(
        self,
        unlabeled: np.ndarray,
        test_confidence: np.ndarray,
        test_correct: np.ndarray,
        thetas: np.ndarray = profile_lib.THETAS,
    ) -> profile_lib.ErrorProfile:
        """`profile.error_profile` with these scores for U = ``unlabeled`` and a test set
        given by its confidences and whether each was right (perhaps another model's)."""
        ...

    def above(self, items: np.ndarray, threshold: float) -> np.ndarray:
        """The items of ``items`` whose confidence is at least ``threshold``, sorted."""
        ...

    def whole(self) -> tuple[np.ndarray, np.ndarray]:
        """(confidence [N], predicted [N]) of the whole pool, for the run's outputs."""
        ...

    def with_scores_of(self, items: np.ndarray, other: Self) -> Self:
        """These scores with those of ``items`` taken from ``other`` (the same pool's,
        split alike)."""
        ...


def error_profile(
    scores: PoolScores,
    unlabeled: np.ndarray,
    test_indices: np.ndarray,
    test_labels: np.ndarray,
    thetas: np.ndarray = profile_lib.THETAS,
) -> profile_lib.ErrorProfile:
    """ε_T(θ) of ``scores`` for U = ``unlabeled``, measured on T = (``test_indices``,
    ``test_labels``) with the same scores."""
    confidence, predicted = scores.scores_of(test_indices)
    return scores.profile(unlabeled, confidence, predicted == np.asarray(test_labels), thetas)


@dataclasses.dataclass(frozen=True)
class Scores:
    """Host arrays over the whole pool; entries outside the scored mask are 0 / -1."""

    confidence: np.ndarray  # float32 [N]
    predicted: np.ndarray  # int32 [N]

    @property
    def num_items(self) -> int:
        return len(self.confidence)

    def scores_of(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        items = np.asarray(items, np.int64)
        return self.confidence[items], self.predicted[items]

    def all_finite(self, items: np.ndarray) -> bool:
        return bool(np.all(np.isfinite(self.confidence[np.asarray(items, np.int64)])))

    def with_scores_of(self, items: np.ndarray, other: Scores) -> Scores:
        items = np.asarray(items, np.int64)
        confidence, predicted = self.confidence.copy(), self.predicted.copy()
        confidence[items], predicted[items] = other.confidence[items], other.predicted[items]
        return Scores(confidence, predicted)

    def least_confident(
        self, candidates: np.ndarray, count: int, tie_order: np.ndarray
    ) -> np.ndarray:
        candidates = np.asarray(candidates)
        order = np.lexsort((tie_order[candidates], self.confidence[candidates]))
        return np.sort(candidates[order[:count]])

    def pseudo_labels(
        self, items: np.ndarray, fraction: float, tie_order: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if not 0 < fraction <= 1:
            raise ValueError(f"pseudo_labels: fraction={fraction} must lie in (0, 1]")
        items = np.asarray(items)
        order = np.lexsort((tie_order[items], -self.confidence[items]))
        chosen = np.sort(items[order[: int(fraction * len(items))]])
        return chosen, self.predicted[chosen]

    def profile(
        self,
        unlabeled: np.ndarray,
        test_confidence: np.ndarray,
        test_correct: np.ndarray,
        thetas: np.ndarray = profile_lib.THETAS,
    ) -> profile_lib.ErrorProfile:
        return profile_lib.error_profile(
            self.confidence[np.asarray(unlabeled, np.int64)], test_confidence, test_correct, thetas
        )

    def above(self, items: np.ndarray, threshold: float) -> np.ndarray:
        items = np.asarray(items, np.int64)
        return np.sort(items[self.confidence[items] >= threshold])

    def whole(self) -> tuple[np.ndarray, np.ndarray]:
        return self.confidence, self.predicted
