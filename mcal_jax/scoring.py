"""Scoring the pool with the active-learning metric M (docs/algorithm.md, step 2).

Every round scores the unlabeled pool U and the test set T_plan with the freshly trained
classifier: the confidences rank the items outside B for the next batch (least confident
first, Algorithm 1 line 10), set the thresholds τ_θ of the error profile, and finally
choose what is machine-labeled.

One compiled program per (model, metric, batch size) serves every round and every pool
size: the items to score are padded to whole global batches (the padding repeats a real
item and is dropped on the host), each batch's indices are split over the devices
(``P("data")``), and each device gathers its images from its replica of the pool and
scores them. The host dispatches one call per batch without waiting and fetches all the
results once at the end. (XLA:CPU runs convolutions inside a device-side loop an order of
magnitude slower, so the loop over batches stays on the host.)

A host-placed pool (`mcal_jax.pool.HostPool`) is scored by the same program less the
gather: a background thread reads each global batch's images on the host and sends them
split over the devices, a few batches ahead of the devices (`mcal_jax.streaming`), and
the host keeps at most a few batches in flight, so neither host nor device memory grows
with the pool. The batches, and so the scores, are those of a device-placed pool.

Under ``jax.distributed`` a host pool can also be scored a shard per process
(`Scorer.score_shard`): each process reads and scores only its own range of items on its
own devices, and the scores stay with it (`mcal_jax.sharded_scores` takes the decisions
from them).

A scorer may also average: over the members of an ensemble (``score`` given a sequence of
variables), with ``test_time_flip`` over each image and its mirror, and with
``test_time_shift`` = s over the image and its four copies moved s pixels (`view_offsets`).
The metric is then taken on the mean of the softmax probabilities, so one item gets one
confidence and one predicted label however many forward passes it took
(`Scorer.views` per member). The learner can spend the views on the items the image
alone leaves below a confidence only (`TrainConfig.test_time_views_below`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Generator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mcal_jax import models, sharded_scores, streaming
from mcal_jax.parallel import DATA_AXIS
from mcal_jax.pool import DevicePool, HostPool, Pool, normalize, replicate
from mcal_jax.scores import Scores

METRICS = ("margin", "entropy", "least_confidence", "random")


def confidence_from_logits(
    logits: jax.Array, metric: str, key: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Per-item confidence (higher = more confident) and predicted label.

    - margin: top-1 minus top-2 softmax probability (the paper's default metric M).
    - entropy: 1 − H(p) / log K, so a uniform prediction scores 0 and a one-hot 1.
    - least_confidence: the top-1 probability.
    - random: uniform noise, the passive-learning control (needs ``key``: one key per item).
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
        confidence = jax.vmap(jax.random.uniform)(key)
    else:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    return confidence, predicted


class Scorer:
    """The compiled scoring program for one (model, pool, metric, batch size)."""

    def __init__(
        self,
        model_name: str,
        pool: Pool,
        *,
        metric: str = "margin",
        batch_size: int = 1024,
        compute_dtype: str = "float32",
        test_time_flip: bool = False,
        test_time_shift: int = 0,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
        problem = shift_problem(test_time_shift, pool.image_shape)
        if problem:
            raise ValueError(f"test_time_shift={test_time_shift}: {problem}")
        self.pool = pool
        self.mesh = pool.mesh
        self.metric = metric
        self.num_devices = self.mesh.size
        self.global_batch = -(-batch_size // self.num_devices) * self.num_devices
        self.dtype = jnp.dtype(compute_dtype)
        self.test_time_flip = test_time_flip
        self.offsets = view_offsets(test_time_shift)
        self.model = models.create_model(
            model_name, num_classes=pool.num_classes, dtype=self.dtype, axis_name=None
        )
        self._index_sharding = NamedSharding(self.mesh, P(None, DATA_AXIS))
        # A host pool's batches arrive split over the devices; a device pool is replicated.
        self.streamed = isinstance(pool, HostPool)
        images_spec = P(DATA_AXIS) if self.streamed else P()
        in_specs = (P(), images_spec, P(), P(), P(DATA_AXIS), P())
        self._score_batch = jax.jit(
            jax.shard_map(
                functools.partial(self._per_device_score, gather=True),
                mesh=self.mesh,
                in_specs=in_specs,
                out_specs=(P(), P()),
                check_vma=False,
            )
        )
        # A shard's scores stay on the devices that scored them (`score_shard`).
        self._score_shard_batch = jax.jit(
            jax.shard_map(
                functools.partial(self._per_device_score, gather=False),
                mesh=self.mesh,
                in_specs=in_specs,
                out_specs=(P(DATA_AXIS), P(DATA_AXIS)),
                check_vma=False,
            )
        )

    def _mean_log_probs(
        self,
        members: Sequence[models.PyTree],
        batch: jax.Array,
        mean: jax.Array,
        std: jax.Array,
    ) -> jax.Array:
        """Logits of the uint8 images ``batch`` whose softmax is the softmax averaged over
        the ensemble ``members`` and each image's views (`views`): the log of that average.
        A single member with a single view gives its own logits."""
        views: list[jax.Array] = []
        for offset in self.offsets:
            x = normalize(shifted(batch, offset), mean, std, self.dtype)
            views.extend((x, x[:, :, ::-1, :]) if self.test_time_flip else (x,))
        logits: list[jax.Array] = [
            self.model.apply(v, view, train=False)  # type: ignore[misc]  # apply may return (out, state)
            for v in members
            for view in views
        ]
        if len(logits) == 1:
            return logits[0]
        log_probs = jnp.stack([jax.nn.log_softmax(z.astype(jnp.float32)) for z in logits])
        return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(len(logits))

    @property
    def views(self) -> int:
        """Forward passes per item and ensemble member: the offsets, each with its mirror
        under ``test_time_flip``."""
        return len(self.offsets) * (2 if self.test_time_flip else 1)

    def _per_device_score(
        self,
        members: Sequence[models.PyTree],
        images: jax.Array,
        mean: jax.Array,
        std: jax.Array,
        index: jax.Array,
        key: jax.Array,
        *,
        gather: bool,
    ) -> tuple[jax.Array, jax.Array]:
        """Scores this device's share ``index`` of a batch: ``images`` is that share's
        images for a host pool, the whole replicated pool otherwise. With ``gather`` every
        device returns the whole batch's scores, else its share's."""
        batch = images if self.streamed else images[index]
        logits = self._mean_log_probs(members, batch, mean, std)
        # The random metric draws one number per item from (seed, item index), so it does
        # not depend on batching or on the number of devices.
        item_key = jax.vmap(jax.random.fold_in, (None, 0))(key, index)
        confidence, predicted = confidence_from_logits(logits, self.metric, item_key)
        if not gather:
            return confidence, predicted
        # Every process gets the whole batch's results (other hosts' shards are not
        # fetchable under jax.distributed); a few KB per batch.
        everyone = functools.partial(jax.lax.all_gather, axis_name=DATA_AXIS, tiled=True)
        return everyone(confidence), everyone(predicted)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """``indices`` padded with copies of the first to [num_batches, global_batch]."""
        indices = np.asarray(indices, np.int32)
        num_batches = max(1, -(-len(indices) // self.global_batch))
        padded = np.full(num_batches * self.global_batch, indices[0], np.int32)
        padded[: len(indices)] = indices
        return padded.reshape(num_batches, self.global_batch)

    def batches(self, indices: np.ndarray) -> jax.Array:
        """:meth:`rows` on the devices, each batch split over the ``data`` axis."""
        rows = self.rows(indices)
        return jax.make_array_from_callback(rows.shape, self._index_sharding, lambda i: rows[i])

    def _inputs(self, indices: np.ndarray) -> Generator[tuple[jax.Array, jax.Array], None, None]:
        """(images, indices) of each batch of the score program: the replicated pool and
        the batch's indices, or for a host pool the batch's images and indices, each read,
        split over the devices and sent by a background thread, a few batches ahead."""
        pool = self.pool
        if isinstance(pool, DevicePool):
            rows = self.batches(indices)
            for b in range(rows.shape[0]):
                yield pool.images, rows[b]
            return
        yield from self._stream(pool, self.rows(indices))

    def _stream(
        self, pool: HostPool, rows: np.ndarray
    ) -> Generator[tuple[jax.Array, jax.Array], None, None]:
        """(images, indices) of each global batch of ``rows`` of a host pool, each device's
        share read by its own process, sent by a background thread a few batches ahead."""
        shape = (self.global_batch, *pool.image_shape)

        def put(row: np.ndarray) -> tuple[jax.Array, jax.Array]:
            images = streaming.put_sharded(
                self.mesh, shape, np.dtype(np.uint8), lambda part: pool.read(row[part])
            )
            index = streaming.put_sharded(
                self.mesh, row.shape, np.dtype(np.int32), lambda part: row[part]
            )
            return images, index

        batches = streaming.prefetch(put(row) for row in rows)
        with contextlib.closing(batches):
            yield from batches

    def score(self, variables: models.PyTree, indices: np.ndarray, seed: int = 0) -> Scores:
        """Scores ``pool[indices]`` with one model's ``variables``, or with the average of
        an ensemble's (a list or tuple of variables); returns pool-sized host arrays."""
        members = tuple(variables) if isinstance(variables, (list, tuple)) else (variables,)
        indices = np.asarray(indices)
        if len(indices) == 0:
            raise ValueError("nothing to score: empty index set")
        pool = self.pool
        key = jax.random.wrap_key_data(
            replicate(self.mesh, np.asarray(jax.random.key_data(jax.random.key(seed))))
        )
        outputs = []
        for images, index in self._inputs(indices):
            outputs.append(self._score_batch(members, images, pool.mean, pool.std, index, key))
            if self.streamed and len(outputs) > streaming.IN_FLIGHT:
                jax.block_until_ready(outputs[-1 - streaming.IN_FLIGHT])
        outputs = jax.device_get(outputs)  # one wait, at the end
        confidence = np.concatenate([c for c, _ in outputs])[: len(indices)]
        predicted = np.concatenate([p for _, p in outputs])[: len(indices)]
        full_confidence = np.zeros(len(pool), np.float32)
        full_predicted = np.full(len(pool), -1, np.int32)
        full_confidence[indices] = confidence
        full_predicted[indices] = predicted
        return Scores(full_confidence, full_predicted)

    def score_shard(
        self, variables: models.PyTree, indices: np.ndarray, seed: int = 0
    ) -> sharded_scores.ShardScores:
        """Scores the items of ``indices`` (the same on every process) in this process's
        shard of a host pool (`sharded_scores.shard_range`): each process reads and scores
        its own shard's items on its own devices, and the scores stay there (no process
        receives another's). A collective under ``jax.distributed``: every process calls
        it. Each item gets the score `score` gives it."""
        pool = self.pool
        if not isinstance(pool, HostPool):
            raise ValueError("Scorer.score_shard: the pool is device-placed; it needs a HostPool")
        if len(indices) == 0:
            raise ValueError("nothing to score: empty index set")
        members = tuple(variables) if isinstance(variables, (list, tuple)) else (variables,)
        process, processes = jax.process_index(), jax.process_count()
        ranges = [sharded_scores.shard_range(len(pool), q, processes) for q in range(processes)]
        owners = np.array([device.process_index for device in self.mesh.devices.flat])
        per_device = self.global_batch // self.num_devices
        rows, items = sharded_scores.shard_rows(np.asarray(indices), ranges, owners, per_device)
        key = jax.random.wrap_key_data(
            replicate(self.mesh, np.asarray(jax.random.key_data(jax.random.key(seed))))
        )
        outputs = []
        for images, index in self._stream(pool, rows):
            outputs.append(
                self._score_shard_batch(members, images, pool.mean, pool.std, index, key)
            )
            if len(outputs) > streaming.IN_FLIGHT:
                jax.block_until_ready(outputs[-1 - streaming.IN_FLIGHT])
        mine = items[process]
        confidence = _own_rows([c for c, _ in outputs])[: len(mine)]
        predicted = _own_rows([p for _, p in outputs])[: len(mine)]
        start, stop = ranges[process]
        shard_confidence = np.zeros(stop - start, np.float32)
        shard_predicted = np.full(stop - start, -1, np.int32)
        shard_confidence[mine - start] = confidence
        shard_predicted[mine - start] = predicted
        return sharded_scores.ShardScores(
            start, shard_confidence, shard_predicted, len(pool), sharded_scores.ProcessExchange()
        )

    def forward_fn(self) -> Callable[[models.PyTree, jax.Array], jax.Array]:
        """The bare jitted model forward over the same batches (the benchmark's baseline);
        a device-placed pool's only."""
        pool = self.pool
        if isinstance(pool, HostPool):
            raise ValueError("Scorer.forward_fn: the pool is host-placed; it needs a DevicePool")

        @jax.jit
        def forward(variables: models.PyTree, index: jax.Array) -> jax.Array:
            logits = self._mean_log_probs((variables,), pool.images[index], pool.mean, pool.std)
            return jnp.argmax(logits, axis=-1)

        return forward


def shift_problem(shift: int, image_shape: tuple[int, ...]) -> str:
    """What is wrong with moving images of ``image_shape`` (H, W, ...) by ``shift`` pixels
    for their views, or "" when nothing is."""
    height, width = image_shape[:2]
    if 0 <= shift < min(height, width):
        return ""
    return f"must be in [0, {min(height, width)}) pixels for images of {height}x{width}"


def view_offsets(shift: int) -> tuple[tuple[int, int], ...]:
    """The (rows, columns) an image is moved by for its views: itself, and with ``shift``
    > 0 also ``shift`` pixels up, down, left and right."""
    if shift == 0:
        return ((0, 0),)
    return ((0, 0), (shift, 0), (-shift, 0), (0, shift), (0, -shift))


def shifted(images: jax.Array, offset: tuple[int, int]) -> jax.Array:
    """The uint8 batch [B, H, W, C] moved by ``offset`` (rows, columns), the pixels moved
    in zero (black, as the training crops pad)."""
    dy, dx = offset
    if dy == dx == 0:
        return images
    p = max(abs(dy), abs(dx))
    _, height, width, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    return padded[:, p - dy : p - dy + height, p - dx : p - dx + width, :]


def _own_rows(outputs: Sequence[jax.Array]) -> np.ndarray:
    """This process's rows of each of ``outputs`` (global arrays split over the ``data``
    axis), concatenated batch after batch in the order of their rows."""
    parts: list[np.ndarray] = []
    for output in outputs:
        shards = sorted(output.addressable_shards, key=lambda s: s.index[0].start or 0)
        parts.extend(np.asarray(s.data) for s in shards)
    return np.concatenate(parts)


@functools.lru_cache(maxsize=16)
def get_scorer(
    model_name: str,
    pool: Pool,
    metric: str = "margin",
    batch_size: int = 1024,
    compute_dtype: str = "float32",
    test_time_flip: bool = False,
    test_time_shift: int = 0,
) -> Scorer:
    """The cached :class:`Scorer`: scoring after every round reuses one compiled program."""
    return Scorer(
        model_name,
        pool,
        metric=metric,
        batch_size=batch_size,
        compute_dtype=compute_dtype,
        test_time_flip=test_time_flip,
        test_time_shift=test_time_shift,
    )


def accuracy(
    model_name: str,
    pool: Pool,
    variables: models.PyTree,
    indices: np.ndarray,
    labels: np.ndarray,
) -> float:
    """Fraction of ``pool[indices]`` the model labels as ``labels``."""
    scores = get_scorer(model_name, pool).score(variables, indices)
    return float(np.mean(scores.predicted[np.asarray(indices)] == np.asarray(labels)))
