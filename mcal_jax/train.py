"""Data-parallel training of a classifier on a labeled subset B of the device-resident pool.

One call of :func:`train` is one active-learning round's "train D(B_i)" (Algorithm 1,
line 12): it trains from scratch on B and returns the variables with the measured bill
(device seconds, images processed) from which the training-cost model of Eq. 3 is fitted.

Every round runs on the same compiled programs, with everything on the device:

- B enters as a boolean mask over the pool, so no shape changes between rounds; each pass
  over B takes a fresh random order from one small jitted ``argsort``.
- A step is one jitted call with no host transfer: from the step counter in the train
  state it finds its batch, its augmentation key and its learning rate. The host only
  dispatches steps and reads one loss per pass, a pass late. (XLA:CPU runs convolutions
  inside a device-side loop an order of magnitude slower, so the loop stays on the host.)
- Each device runs its own program (``jax.shard_map``): it gathers its share of the global
  batch from its replica of the pool, augments it, and averages gradients with an explicit
  ``lax.pmean``; BatchNorm averages its statistics over the same ``data`` axis, so 8
  devices take exactly the step one device takes on the whole global batch.
- The last batch of a pass wraps around, so every step has the full global batch.
- A round runs max(epochs × ⌈|B| / batch⌉, ``min_steps``) steps; the learning rate follows
  the schedule across the steps actually run (:mod:`mcal_jax.recipe`).
- Semi-supervised (``semi_supervised``, with pseudo-labeled items given): each step also
  takes ``unlabeled_ratio`` × batch items outside B with a teacher's labels, in one forward
  pass with B's; a second compiled variant of the step, used only then.
- ``microbatch_size`` runs a device's rows in slices, gradients summed (`mcal_jax.microbatch`).

A host-placed pool (`mcal_jax.pool.HostPool`) trains on the same batches: the host draws
each pass's order of B itself (the same numbers the device draws), reads each step's global
batch (with its pseudo-labeled part) and its labels, and sends them split over the devices
from a background thread a few steps ahead (`mcal_jax.train_feed`); the step then takes its
share instead of gathering it. Which items each device trains on, and their augmentation,
are those of a device-placed pool, step for step.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from mcal_jax import microbatch, models, streaming, train_feed
from mcal_jax.divergence import DivergedError, all_finite, check_loss
from mcal_jax.divergence import NonFiniteLossError as NonFiniteLossError  # for callers
from mcal_jax.indices import labeled_items
from mcal_jax.parallel import DATA_AXIS
from mcal_jax.pool import HostPool, Pool, augment, normalize, replicate
from mcal_jax.recipe import TrainConfig, learning_rate, make_optimizer, schedule_epoch, step_slices

P = PartitionSpec


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a round's training produced and what it cost."""

    variables: dict  # {"params": ..., "batch_stats": ...}, replicated on the mesh
    device_seconds: float  # wall seconds of the training epochs × devices; compile excluded
    wall_seconds: float
    compile_seconds: float  # 0.0 when the program was already compiled
    images_processed: int  # images through forward+backward (steps × global batch)
    steps: int  # optimizer steps: max(epochs × ⌈|B| / batch⌉, min_steps)
    epochs: float  # passes over B: steps / ⌈|B| / batch⌉
    final_loss: float
    num_devices: int


@struct.dataclass
class TrainState:
    params: models.PyTree
    batch_stats: models.PyTree
    opt_state: models.PyTree
    step: jax.Array  # int32 optimizer steps taken


class Trainer:
    """Compiled training programs for one (model, pool, config); reused by every round."""

    def __init__(self, model_name: str, pool: Pool, config: TrainConfig) -> None:
        self.model_name = model_name
        self.pool = pool
        self.config = config
        self.mesh = pool.mesh
        self.num_devices = self.mesh.size
        if config.batch_size % self.num_devices:
            raise ValueError(
                f"train.batch_size={config.batch_size} must be a multiple of the "
                f"{self.num_devices} devices of the mesh"
            )
        self.model = models.create_model(
            model_name,
            num_classes=pool.num_classes,
            dtype=jnp.dtype(config.compute_dtype),
            axis_name=DATA_AXIS,
        )
        self.tx = make_optimizer(config)
        replicated = NamedSharding(self.mesh, P())
        self._init = jax.jit(self._init_state, out_shardings=replicated)
        self.epoch_order = jax.jit(train_feed.epoch_order, out_shardings=replicated)
        # A host pool's batches arrive split over the devices instead of being gathered.
        self.streamed = isinstance(pool, HostPool)
        self.uniform_draws = jax.jit(jax.random.uniform, static_argnums=1)  # the orders' numbers
        self._steps = {pseudo: self._make_step(pseudo) for pseudo in (False, True)}
        # jax.stages.Compiled per variant (with pseudo-labels or not), after its first use
        self._compiled_steps: dict[bool, jax.stages.Compiled] = {}

    def _make_step(self, pseudo: bool) -> jax.stages.Wrapped:
        in_specs: tuple[P, ...]
        if self.streamed:  # (state, loss_sum, images, labels, mean, std, total_steps, key)
            per_device = functools.partial(self._step_on_batch, pseudo=pseudo)
            in_specs = (P(), P(), P(DATA_AXIS), P(DATA_AXIS), P(), P(), P(), P())
        else:
            per_device = functools.partial(self._per_device_step, pseudo=pseudo)
            in_specs = (P(),) * (8 if pseudo else 7)
        step = jax.shard_map(
            per_device,
            mesh=self.mesh,
            in_specs=in_specs,
            out_specs=(P(), P()),
            # Gradients of replicated parameters are averaged by the explicit pmean below,
            # as under pmap; with check_vma they would arrive already summed.
            check_vma=False,
        )
        return jax.jit(step, donate_argnums=0)

    def _init_state(self, key: jax.Array) -> TrainState:
        dummy = jnp.zeros((1, *self.pool.image_shape), jnp.float32)
        variables = self.model.init(key, dummy, train=False)
        params = variables["params"]
        return TrainState(
            params, variables.get("batch_stats", {}), self.tx.init(params), jnp.int32(0)
        )

    def _per_device_step(
        self, state: TrainState, loss_sum: jax.Array, data: tuple[jax.Array, ...],
        order: jax.Array, num_labeled: jax.Array, total_steps: jax.Array, key: jax.Array,
        pseudo_data: tuple[jax.Array, ...] = (), *, pseudo: bool,
    ) -> tuple[TrainState, jax.Array]:  # fmt: skip
        """One optimizer step on this device's share of the global batch: items of B in
        ``order``, and with ``pseudo`` also ``unlabeled_ratio`` times as many
        pseudo-labeled items (``pseudo_data``: their order and count). ``data`` is the
        pool's (images, labels, mean, std); its labels hold both kinds."""
        images, labels, mean, std = data
        config = self.config
        global_batch = config.batch_size
        local_batch = global_batch // self.num_devices
        steps_per_epoch = (num_labeled + global_batch - 1) // global_batch
        in_epoch = state.step % steps_per_epoch
        device = jax.lax.axis_index(DATA_AXIS)
        position = in_epoch * global_batch + device * local_batch + jnp.arange(local_batch)
        index = order[position % num_labeled]
        if pseudo:  # (step_items draws the same items on the host)
            pseudo_order, num_pseudo = pseudo_data
            ratio = config.unlabeled_ratio
            extra = state.step * ratio * global_batch + device * ratio * local_batch
            extra = extra + jnp.arange(ratio * local_batch)
            index = jnp.concatenate([index, pseudo_order[extra % num_pseudo]])
        return self._step_on_batch(
            state, loss_sum, images[index], labels[index], mean, std, total_steps, key,
            pseudo=pseudo,
        )  # fmt: skip

    def _step_on_batch(
        self, state: TrainState, loss_sum: jax.Array, images: jax.Array, y: jax.Array,
        mean: jax.Array, std: jax.Array, total_steps: jax.Array, key: jax.Array, *, pseudo: bool,
    ) -> tuple[TrainState, jax.Array]:  # fmt: skip
        """The step on this device's uint8 ``images`` with labels ``y``: augmented with a
        key of (step, device), normalised, the loss's gradients averaged over the devices."""
        config = self.config
        local_batch = config.batch_size // self.num_devices
        ratio = config.unlabeled_ratio
        device = jax.lax.axis_index(DATA_AXIS)
        batch = augment(
            jax.random.fold_in(jax.random.fold_in(key, state.step), device),
            images,
            crop_padding=config.crop_padding,
            horizontal_flip=config.horizontal_flip,
        )
        x = normalize(batch, mean, std, jnp.dtype(config.compute_dtype))
        # Per-item loss weights: the batch mean over B, plus pseudo_weight × the mean over
        # the pseudo-labeled part.
        weights = jnp.full((local_batch,), 1.0 / local_batch)
        if pseudo:
            share = config.pseudo_weight / (ratio * local_batch)
            weights = jnp.concatenate([weights, jnp.full((ratio * local_batch,), share)])

        def loss_fn(
            params: models.PyTree, x: jax.Array, y: jax.Array, weights: jax.Array
        ) -> tuple[jax.Array, models.PyTree]:
            variables = {"params": params, "batch_stats": state.batch_stats}
            logits, updated = self.model.apply(variables, x, train=True, mutable=["batch_stats"])
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            return jnp.sum(weights * losses), updated["batch_stats"]

        slices, parts = step_slices(config, local_batch, pseudo), 1 + (ratio if pseudo else 0)
        loss, batch_stats, grads = microbatch.value_and_grad(
            loss_fn, state.params, (x, y, weights), slices, parts
        )
        grads = jax.lax.pmean(grads, DATA_AXIS)
        loss = jax.lax.pmean(loss, DATA_AXIS)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        lr = learning_rate(config, schedule_epoch(config, state.step, total_steps))
        updates = jax.tree.map(lambda u: (lr * u).astype(u.dtype), updates)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, batch_stats, opt_state, state.step + 1), loss_sum + loss

    def init(self, key: jax.Array) -> TrainState:
        return self._init(key)

    def _pseudo_set(
        self, indices: np.ndarray | None, labels: np.ndarray | None, labeled: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The checked pseudo-labeled items and labels, or None when training is
        supervised only (not semi-supervised, or no pseudo-labeled item given)."""
        if (indices is None) != (labels is None):
            raise ValueError("pseudo_indices and pseudo_labels go together")
        if indices is None or labels is None or not self.config.semi_supervised:
            return None
        sizes = dict(size=len(self.pool), num_classes=self.pool.num_classes)
        indices, labels = labeled_items(indices, labels, "pseudo", **sizes)
        if labeled[indices].any():
            raise ValueError("pseudo_indices must lie outside the labeled set")
        return (indices, labels) if len(indices) else None

    def train(
        self,
        labeled_indices: np.ndarray,
        labels: np.ndarray,
        *,
        pseudo_indices: np.ndarray | None = None,
        pseudo_labels: np.ndarray | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> TrainResult:
        """Trains from scratch on ``labeled_indices`` (into the pool) with their ``labels``;
        with ``train.semi_supervised``, each step also fits pseudo-labeled items outside B
        (``pseudo_indices`` with a teacher's ``pseudo_labels``; none given or empty:
        supervised only)."""
        sizes = dict(size=len(self.pool), num_classes=self.pool.num_classes)
        labeled_indices, labels = labeled_items(labeled_indices, labels, "labeled", **sizes)
        num_labeled = len(labeled_indices)
        if num_labeled == 0:
            raise ValueError("cannot train on an empty labeled set")
        mask = np.zeros(len(self.pool), bool)
        mask[labeled_indices] = True
        # Bought labels (and a teacher's on the pseudo-labeled items), scattered over the
        # pool; -1 elsewhere, never read.
        pool_labels = np.full(len(self.pool), -1, np.int32)
        pool_labels[labeled_indices] = labels
        pseudo = self._pseudo_set(pseudo_indices, pseudo_labels, mask)
        if pseudo is not None:
            pool_labels[pseudo[0]] = pseudo[1]
        key = jax.random.key(seed)
        state = self.init(jax.random.fold_in(key, 0))
        step_key = jax.random.wrap_key_data(
            replicate(self.mesh, np.asarray(jax.random.key_data(jax.random.fold_in(key, 1))))
        )
        zero = replicate(self.mesh, np.zeros((), np.float32))
        config = self.config
        steps_per_pass = math.ceil(num_labeled / config.batch_size)
        total_steps = config.steps(num_labeled)
        total = replicate(self.mesh, np.asarray(total_steps, np.int32))
        plan = train_feed.StepPlan(key, steps_per_pass, total_steps)
        variant = pseudo is not None
        if self.streamed:
            example, feed = train_feed.streamed_feed(
                self, plan, labeled_indices, pool_labels, pseudo, total, step_key
            )
        else:
            example, feed = train_feed.device_feed(
                self, plan, mask, pool_labels, pseudo, total, step_key
            )
        compile_seconds = 0.0
        if variant not in self._compiled_steps:
            start = time.perf_counter()
            lowered = self._steps[variant].lower(state, zero, *example)
            self._compiled_steps[variant] = lowered.compile()
            compile_seconds = time.perf_counter() - start
        step = self._compiled_steps[variant]

        # Passes over B in a fresh order each; the last one stops at the step count.
        passes = range(plan.num_passes)
        if progress:
            from tqdm.auto import tqdm

            passes = tqdm(passes, desc=f"train {self.model_name} |B|={num_labeled}", leave=False)
        bar = passes if progress else None
        jax.block_until_ready(state)
        start = time.perf_counter()
        pending: tuple[int, jax.Array, int] | None = None  # each pass's loss is read one
        recent: collections.deque[jax.Array] = collections.deque()  # streamed steps queued
        with contextlib.closing(feed()) as inputs:
            for index in passes:  # pass late, so the device never idles
                loss_sum = zero
                steps = plan.steps_in_pass(index)
                for _ in range(steps):
                    state, loss_sum = step(state, loss_sum, *next(inputs))
                    if self.streamed:  # a streamed batch lives until its step has run
                        recent.append(loss_sum)
                        if len(recent) > streaming.IN_FLIGHT:
                            jax.block_until_ready(recent.popleft())
                if pending is not None:
                    check_loss(*pending, progress_bar=bar)
                pending = (index, loss_sum, steps)
        assert pending is not None  # a round runs at least one step
        final_loss = check_loss(*pending, progress_bar=bar)
        jax.block_until_ready(state)
        wall = time.perf_counter() - start
        # The loss is computed before each update, so it can stay finite while the weights
        # overflow (BatchNorm hides their scale); the last update is never seen by a loss.
        if not bool(all_finite((state.params, state.batch_stats))):
            raise DivergedError(
                f"the weights of {self.model_name} trained on |B|={num_labeled} are not "
                f"finite: lower train.learning_rate={config.learning_rate} or check the data"
            )

        result = TrainResult(
            variables={"params": state.params, "batch_stats": state.batch_stats},
            device_seconds=wall * self.num_devices,
            wall_seconds=wall,
            compile_seconds=compile_seconds,
            images_processed=config.images(num_labeled, pseudo=variant),
            steps=total_steps,
            epochs=total_steps / steps_per_pass,
            final_loss=final_loss,
            num_devices=self.num_devices,
        )
        logging.info(
            "trained %s on |B|=%d: %d steps (%.1f epochs), loss %.4f, %.1f s (%.0f img/s), "
            "compile %.1f s",
            self.model_name, num_labeled, total_steps, result.epochs, final_loss, wall,
            result.images_processed / max(wall, 1e-9), compile_seconds,
        )  # fmt: skip
        return result

    def step_cost_analysis(self) -> dict[str, Any]:
        """XLA's cost estimates of the compiled training step (``"flops"``, ``"bytes
        accessed"``, ...): one device's share of the SPMD program, for one global batch.

        The step is compiled by the first :meth:`train`, so call this after it. Empty when
        the backend gives no estimates.
        """
        if False not in self._compiled_steps:
            raise RuntimeError(
                "Trainer.step_cost_analysis: the training step is not compiled yet; "
                "it is compiled by the first call of train()"
            )
        analysis = self._compiled_steps[False].cost_analysis()
        if isinstance(analysis, list | tuple):  # older JAX: one dict per program
            analysis = analysis[0] if analysis else {}
        return dict(analysis or {})


@functools.lru_cache(maxsize=16)
def get_trainer(model_name: str, pool: Pool, config: TrainConfig) -> Trainer:
    """The cached :class:`Trainer`: one compile per (model, pool, config) per process."""
    return Trainer(model_name, pool, config)


def train(
    model_name: str,
    pool: Pool,
    labeled_indices: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    *,
    pseudo_indices: np.ndarray | None = None,
    pseudo_labels: np.ndarray | None = None,
    seed: int = 0,
    progress: bool = False,
) -> TrainResult:
    """Trains ``model_name`` from scratch on ``pool[labeled_indices]`` with ``labels``,
    data-parallel over ``pool.mesh``; see the module docstring. Repeated calls reuse the
    compiled program."""
    trainer = get_trainer(model_name, pool, config)
    return trainer.train(
        labeled_indices,
        labels,
        pseudo_indices=pseudo_indices,
        pseudo_labels=pseudo_labels,
        seed=seed,
        progress=progress,
    )
