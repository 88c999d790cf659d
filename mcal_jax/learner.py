"""How the labeling loop trains and scores: the `Learner` protocol and its default, the
Flax learner.

The loop (``mcal_jax.run``) needs one thing of a classifier: trained on B's labels
(possibly with pseudo-labels on other items), score the items it is asked about with the
metric M, and say what the work cost in images and device seconds. `FlaxLearner` does it
with the data-parallel Flax trainer and the compiled scorer on the pool (on the devices or
streamed from the host); `mcal_jax.simulated_learner.SimulatedLearner` does it from a known
per-item error model, so that a whole run takes milliseconds and its true error is known
exactly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, Protocol

import jax
import numpy as np

from mcal_jax import scoring
from mcal_jax import train as train_lib
from mcal_jax.pool import HostPool, Pool
from mcal_jax.recipe import TrainConfig
from mcal_jax.scores import PoolScores


@dataclasses.dataclass(frozen=True)
class Learned:
    """What one trained classifier measured, and what the work cost.

    ``scores`` covers the whole pool (each process's shard of it, when a host pool is
    scored by several processes); only the items asked for are scored (the others hold 0
    and -1). ``forward_passes`` counts the images through the model's forward pass over
    all the scored items (an ensemble or test-time views take several per item).
    ``variables`` is the trained model, for checkpoints and for ensembles (None when there
    is nothing to keep, as for a simulated learner).
    """

    scores: PoolScores
    images_processed: float  # through forward and backward
    device_seconds: float  # training, compile excluded, times the devices used
    scoring_seconds: float  # scoring, times the devices used
    forward_passes: int  # over all the scored items
    steps: int
    epochs: float
    variables: Any = None


class Learner(Protocol):
    """Trains a classifier on B and scores items with it (docs/algorithm.md, step 2)."""

    def learn(
        self,
        model: str,
        train: tuple[np.ndarray, np.ndarray],
        recipe: TrainConfig,
        *,
        score: np.ndarray,
        seed: int,
        pseudo: tuple[np.ndarray, np.ndarray] | None = None,
        ensemble: Sequence[Any] = (),
    ) -> Learned:
        """Trains ``model`` from scratch on ``train`` = (indices, labels) with ``recipe``
        (also fitting ``pseudo`` = (indices, labels), when given), then scores the items
        ``score``, averaging with the ``ensemble`` members' predictions (earlier
        `Learned.variables`) when given. Deterministic for a ``seed``."""
        ...


class FlaxLearner:
    """The default learner: `train.train` on ``pool``, on the devices or streamed from the
    host (data-parallel over its mesh), then the compiled scorer with ``metric`` in batches of
    ``score_batch_size`` at ``compute_dtype``."""

    def __init__(
        self,
        pool: Pool,
        *,
        metric: str = "margin",
        score_batch_size: int = 1024,
        compute_dtype: str = "float32",
    ):
        self.pool = pool
        self.metric = metric
        self.score_batch_size = score_batch_size
        self.compute_dtype = compute_dtype

    @property
    def sharded(self) -> bool:
        """Whether the scores are split a shard per process (`Scorer.score_shard`): a pool
        on the host in a job of several processes, each of which reads only its shard."""
        return isinstance(self.pool, HostPool) and jax.process_count() > 1

    def learn(
        self,
        model: str,
        train: tuple[np.ndarray, np.ndarray],
        recipe: TrainConfig,
        *,
        score: np.ndarray,
        seed: int,
        pseudo: tuple[np.ndarray, np.ndarray] | None = None,
        ensemble: Sequence[Any] = (),
    ) -> Learned:
        pseudo_indices, pseudo_labels = pseudo if pseudo is not None else (None, None)
        result = train_lib.train(
            model,
            self.pool,
            train[0],
            train[1],
            recipe,
            pseudo_indices=pseudo_indices,
            pseudo_labels=pseudo_labels,
            seed=seed,
            progress=True,
        )
        members = (result.variables, *ensemble)
        start = time.perf_counter()
        scores, passes = self._score(model, members, score, recipe, seed)
        scoring_seconds = (time.perf_counter() - start) * self.pool.mesh.size
        return Learned(
            scores=scores,
            images_processed=float(result.images_processed),
            device_seconds=result.device_seconds,
            scoring_seconds=scoring_seconds,
            forward_passes=passes,
            steps=result.steps,
            epochs=result.epochs,
            variables=result.variables,
        )

    def _score(
        self,
        model: str,
        members: tuple[Any, ...],
        items: np.ndarray,
        recipe: TrainConfig,
        seed: int,
    ) -> tuple[PoolScores, int]:
        """The scores of ``items`` averaged over ``members`` and the recipe's views, and the
        forward passes they took. With ``recipe.test_time_views_below`` < 1 the views are
        spent where they can move an item across a threshold: every item is scored on the
        image alone first, and only those whose confidence is below it again over every
        view (the others keep the one pass's score, a deterministic function of the item
        like any other)."""

        def scorer(flip: bool, shift: int) -> scoring.Scorer:
            return scoring.get_scorer(
                model,
                self.pool,
                self.metric,
                self.score_batch_size,
                self.compute_dtype,
                flip,
                shift,
            )

        def run(scorer: scoring.Scorer, items: np.ndarray) -> PoolScores:
            if self.sharded:  # each process scores and keeps its own shard's items
                return scorer.score_shard(members, items, seed=seed)
            return scorer.score(members, items, seed=seed)

        views = scorer(recipe.test_time_flip, recipe.test_time_shift)
        if recipe.test_time_views_below >= 1 or views.views == 1:
            return run(views, items), len(members) * views.views * len(items)
        scores = run(scorer(False, 0), items)
        again = np.setdiff1d(items, scores.above(items, recipe.test_time_views_below))
        passes = len(members) * len(items)
        if len(again):
            scores = scores.with_scores_of(again, run(views, again))
            passes += len(members) * views.views * len(again)
        return scores, passes
