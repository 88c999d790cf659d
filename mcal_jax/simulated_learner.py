"""A simulated learner: a classifier whose errors follow a known per-item model.

It stands in for training in the whole labeling loop (`mcal_jax.learner.Learner`), so
that a complete MCAL run, settings, controller, ledger and finish included, takes a
fraction of a second and its labels' true error is known exactly. `benchmarks.certificate`
runs the loop thousands of times with it to measure how often the certificate fails.

The model, per item i with true label y_i and per round (a ``seed``):

- the mean error over the pool after training on b labels is a power law in b that
  flattens at a floor, e(b) = floor + scale · (b / 100)^(−gamma), below chance;
- an item is wrong when ρ·a_i + √(1 − ρ²)·η_i < z_i, with a_i fixed per item (its
  errors persist from round to round with correlation ρ = ``persistence``), η_i fresh each
  round, and z_i = q(b) + signal·d_i + missed·h_i + c_{y_i}: d_i is the difficulty the
  classifier's confidence sees, h_i the part it misses, c_k a shock shared by every item
  of class k in one round (``cluster_shock``: errors correlated across items), and q(b)
  is set so that the mean of Φ(z_i) is e(b);
- the confidence is 1 − Φ(q(b) + signal·d_i + jitter·ξ_i) with ξ_i fresh each round: it
  ranks items by what the classifier sees, not by what it misses, and saturates at
  float32's 1.0 for the easiest items, so ties occur as with softmax margins;
- a wrong item is predicted as a uniformly chosen other class.

Training cost is simulated as well: a round processes the images its recipe would
(`TrainConfig.images`) at ``seconds_per_image``
device seconds each, and scoring costs ``seconds_per_item`` per item.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.special

from mcal_jax.learner import Learned
from mcal_jax.recipe import TrainConfig
from mcal_jax.scores import Scores


@dataclasses.dataclass(frozen=True)
class ErrorModel:
    """How the simulated classifier errs; see the module docstring for each field."""

    floor: float = 0.02
    scale: float = 0.3
    gamma: float = 0.5
    signal: float = 1.5
    missed: float = 0.5
    persistence: float = 0.8
    cluster_shock: float = 0.0
    jitter: float = 0.2
    seconds_per_image: float = 1e-4
    seconds_per_item: float = 2e-5

    def __post_init__(self) -> None:
        for name in ("floor", "scale", "gamma", "signal", "missed", "cluster_shock", "jitter"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"ErrorModel.{name} = {value!r}: must be a finite number ≥ 0")
        if not 0 <= self.persistence <= 1:
            raise ValueError(f"ErrorModel.persistence = {self.persistence!r}: must lie in [0, 1]")
        if self.floor + self.scale <= 0:
            raise ValueError("ErrorModel: floor + scale must be > 0")

    def mean_error(self, train_size: float, num_classes: int) -> float:
        """e(b): the pool's mean error after training on ``train_size`` labels."""
        rate = self.floor + self.scale * (max(train_size, 1.0) / 100.0) ** (-self.gamma)
        return float(min(rate, 0.9 * (1.0 - 1.0 / num_classes)))


class SimulatedLearner:
    """A `Learner` over a pool with true ``labels`` whose classifier errs as ``model``
    says; the items' fixed traits are drawn from ``seed``."""

    def __init__(self, labels: np.ndarray, model: ErrorModel, *, num_classes: int, seed: int = 0):
        self.labels = np.asarray(labels, np.int64)
        self.model = model
        self.num_classes = int(num_classes)
        if self.num_classes < 2 or self.labels.size == 0:
            raise ValueError("SimulatedLearner: needs a non-empty pool and at least 2 classes")
        rng = np.random.default_rng([seed, 7])
        n = self.labels.size
        self._seen = rng.standard_normal(n)  # d_i
        self._missed = rng.standard_normal(n)  # h_i
        self._persistent = rng.standard_normal(n)  # a_i
        self._wrong_class = rng.integers(1, self.num_classes, n)
        self.seed = seed

    def true_error(self, indices: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """Whether each prediction is wrong (the ground truth is known here)."""
        return predicted != self.labels[np.asarray(indices)]

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
        del model, ensemble  # one simulated classifier; an ensemble adds passes only
        m, size = self.model, len(train[0])
        rng = np.random.default_rng([self.seed, seed, size])
        n = self.labels.size
        spread = np.sqrt(1.0 + m.signal**2 + m.missed**2 + m.cluster_shock**2)
        q = scipy.special.ndtri(m.mean_error(size, self.num_classes)) * spread
        score = np.asarray(score, np.int64)
        shock = rng.normal(0.0, m.cluster_shock, self.num_classes) if m.cluster_shock else None
        fresh, jitter = rng.standard_normal(n), rng.standard_normal(n)
        seen = q + m.signal * self._seen[score]
        z = seen + m.missed * self._missed[score]
        if shock is not None:
            z = z + shock[self.labels[score]]
        noise = m.persistence * self._persistent[score]
        noise = noise + np.sqrt(1.0 - m.persistence**2) * fresh[score]
        wrong = noise < z
        truth = self.labels[score]
        predicted = np.where(wrong, (truth + self._wrong_class[score]) % self.num_classes, truth)
        confidence = 1.0 - scipy.special.ndtr(seen + m.jitter * jitter[score])
        full_confidence = np.zeros(n, np.float32)
        full_predicted = np.full(n, -1, np.int32)
        full_confidence[score] = confidence.astype(np.float32)
        full_predicted[score] = predicted
        with_pseudo = pseudo is not None and len(pseudo[0]) > 0
        images = float(recipe.images(size, pseudo=with_pseudo))
        steps = recipe.steps(size)
        return Learned(
            scores=Scores(full_confidence, full_predicted),
            images_processed=images,
            device_seconds=images * m.seconds_per_image,
            scoring_seconds=len(score) * m.seconds_per_item,
            forward_passes=len(score),
            steps=steps,
            epochs=steps / max(1, -(-size // recipe.batch_size)),
        )
