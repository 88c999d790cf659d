"""Scoring the pool with the active-learning metric M (spec step 2).

Every round scores the unlabeled pool U and the test set T with the freshly trained
classifier: the confidences rank U for buying (least confident first, Algorithm 1 line 10),
set the thresholds τ_θ of the error profile, and finally choose what is machine-labeled.

One compiled program per (model, metric, batch size) serves every round: the items to
score enter as a boolean mask over the whole pool (fixed shape); inside, each device walks
its share of fixed-size batches of the selected items (a traced trip count, so the work is
proportional to the mask's size, not the pool's), scatters its results into a pool-sized
buffer, and one ``psum`` over the ``data`` axis assembles them on every device.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from mcal_jax import models
from mcal_jax.parallel import DATA_AXIS
from mcal_jax.pool import DevicePool, normalize, replicate

METRICS = ("margin", "entropy", "least_confidence", "random")


def confidence_from_logits(logits: jax.Array, metric: str, key: jax.Array | None = None):
    """Per-item confidence (higher = more confident) and predicted label.

    - margin: top-1 minus top-2 softmax probability (the paper's default metric M).
    - entropy: 1 − H(p) / log K, so a uniform prediction scores 0 and a one-hot 1.
    - least_confidence: the top-1 probability.
    - random: uniform noise, the passive-learning control (needs ``key``).
    """
    logits = logits.astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1)
    predicted = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if metric == "margin":
        top2 = jax.lax.top_k(probs, 2)[0]
        confidence = top2[:, 0] - top2[:, 1]
    elif metric == "entropy":
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        entropy = -jnp.sum(probs * log_probs, axis=-1)
        confidence = 1.0 - entropy / jnp.log(logits.shape[-1])
    elif metric == "least_confidence":
        confidence = jnp.max(probs, axis=-1)
    elif metric == "random":
        if key is None:
            raise ValueError("the random metric needs a key")
        confidence = jax.random.uniform(key, predicted.shape)
    else:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    return confidence, predicted


@dataclasses.dataclass(frozen=True)
class Scores:
    """Host arrays over the whole pool; entries outside the scored mask are 0 / -1."""

    confidence: np.ndarray  # float32 [N]
    predicted: np.ndarray  # int32 [N]


class Scorer:
    """The compiled scoring program for one (model, pool, metric, batch size)."""

    def __init__(
        self,
        model_name: str,
        pool: DevicePool,
        *,
        metric: str = "margin",
        batch_size: int = 1024,
        compute_dtype: str = "float32",
    ):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
        self.pool = pool
        self.mesh = pool.mesh
        self.metric = metric
        self.num_devices = self.mesh.size
        self.local_batch = -(-batch_size // self.num_devices)
        self.global_batch = self.local_batch * self.num_devices
        self.dtype = jnp.dtype(compute_dtype)
        self.model = models.create_model(
            model_name, num_classes=pool.num_classes, dtype=self.dtype, axis_name=None
        )
        specs = (P(), P(), P(), P(), P(), P())
        self._score = jax.jit(
            jax.shard_map(
                self._per_device_score,
                mesh=self.mesh,
                in_specs=specs,
                out_specs=(P(), P()),
                check_vma=False,
            )
        )

    def _logits(self, variables, images, mean, std, index):
        x = normalize(images[index], mean, std, self.dtype)
        return self.model.apply(variables, x, train=False)

    def _per_device_score(self, variables, images, mean, std, mask, key):
        num_items = images.shape[0]
        count = jnp.sum(mask, dtype=jnp.int32)
        order = jnp.argsort(~mask, stable=True)  # the selected items first, in pool order
        steps = (count + self.global_batch - 1) // self.global_batch
        device = jax.lax.axis_index(DATA_AXIS)

        def body(i, carry):
            confidence, predicted = carry
            position = i * self.global_batch + device * self.local_batch
            position = position + jnp.arange(self.local_batch)
            valid = position < count
            index = order[jnp.minimum(position, num_items - 1)]
            logits = self._logits(variables, images, mean, std, index)
            conf, pred = confidence_from_logits(
                logits, self.metric, jax.random.fold_in(key, i * self.num_devices + device)
            )
            # Padding rows write to a scratch slot past the end (dropped below).
            target = jnp.where(valid, index, num_items)
            confidence = confidence.at[target].set(conf, mode="drop")
            predicted = predicted.at[target].set(pred + 1, mode="drop")
            return confidence, predicted

        init = (jnp.zeros(num_items, jnp.float32), jnp.zeros(num_items, jnp.int32))
        confidence, predicted = jax.lax.fori_loop(0, steps, body, init)
        # Each item was written by exactly one device: a sum assembles the pool.
        confidence = jax.lax.psum(confidence, DATA_AXIS)
        predicted = jax.lax.psum(predicted, DATA_AXIS) - 1
        return confidence, predicted

    def score_device(self, variables, mask: jax.Array, seed: int = 0):
        """Scores the items where ``mask`` (replicated bool [N]) is set; device arrays."""
        pool = self.pool
        key = jax.random.key(seed)
        return self._score(variables, pool.images, pool.mean, pool.std, mask, key)

    def score(self, variables, indices: np.ndarray, seed: int = 0) -> Scores:
        """Scores ``pool[indices]``; returns pool-sized host arrays."""
        mask = np.zeros(len(self.pool), bool)
        mask[np.asarray(indices)] = True
        confidence, predicted = self.score_device(variables, replicate(self.mesh, mask), seed)
        return Scores(np.asarray(confidence), np.asarray(predicted))

    def forward_fn(self):
        """The bare jitted model forward over the same batches (the benchmark's baseline)."""

        @jax.jit
        def forward(variables, index):
            logits = self._logits(variables, self.pool.images, self.pool.mean, self.pool.std, index)
            return jnp.argmax(logits, axis=-1)

        return forward


@functools.lru_cache(maxsize=16)
def get_scorer(
    model_name: str,
    pool: DevicePool,
    metric: str = "margin",
    batch_size: int = 1024,
    compute_dtype: str = "float32",
) -> Scorer:
    """The cached :class:`Scorer`: scoring after every round reuses one compiled program."""
    return Scorer(
        model_name, pool, metric=metric, batch_size=batch_size, compute_dtype=compute_dtype
    )


def accuracy(model_name: str, pool: DevicePool, variables, indices: np.ndarray) -> float:
    """Fraction of ``pool[indices]`` the model labels correctly (uses the pool's labels)."""
    scores = get_scorer(model_name, pool).score(variables, indices)
    indices = np.asarray(indices)
    truth = np.asarray(pool.labels)[indices]
    return float(np.mean(scores.predicted[indices] == truth))
