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
    and -1). ``forward_passes`` is the passes per scored item (an ensemble or
    test-time views take several). ``variables`` is the trained model, for checkpoints and
    for ensembles (None when there is nothing to keep, as for a simulated learner).
    """

    scores: PoolScores
    images_processed: float  # through forward and backward
    device_seconds: float  # training, compile excluded, times the devices used
    scoring_seconds: float  # scoring, times the devices used
    forward_passes: int
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
        scorer = scoring.get_scorer(
            model,
            self.pool,
            self.metric,
            self.score_batch_size,
            self.compute_dtype,
            recipe.test_time_flip,
            recipe.test_time_shift,
        )
        members = (result.variables, *ensemble)
        start = time.perf_counter()
        scores: PoolScores
        if self.sharded:  # each process scores and keeps its own shard's items
            scores = scorer.score_shard(members, score, seed=seed)
        else:
            scores = scorer.score(members, score, seed=seed)
        scoring_seconds = (time.perf_counter() - start) * self.pool.mesh.size
        return Learned(
            scores=scores,
            images_processed=float(result.images_processed),
            device_seconds=result.device_seconds,
            scoring_seconds=scoring_seconds,
            forward_passes=len(members) * scorer.views,
            steps=result.steps,
            epochs=result.epochs,
            variables=result.variables,
        )
