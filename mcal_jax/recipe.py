"""How one round trains: the `TrainConfig`, the learning-rate schedule and the optimizer.

The defaults are the paper's (Section 5): 200 epochs, learning rate ÷10 at epochs 80,
120, 160 and 180, mini-batch 256. A round runs at least ``min_steps`` optimizer steps
however small B is (docs/algorithm.md, step 2): a fixed number of epochs on a tiny B is a
dozen steps, and its learning curve would measure the optimizer, not the data. The
schedule is written in epochs but spans the steps actually run: at step s of S, the
schedule stands at epoch s/S · ``epochs``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one round trains. Defaults are the paper's (Section 5): 200 epochs, learning
    rate ÷10 at epochs 80, 120, 160 and 180, mini-batch 256."""

    epochs: int = 200
    min_steps: int = 0  # a round runs max(epochs × steps per epoch, min_steps) steps
    batch_size: int = 256  # global, over all devices
    # Each device runs its rows of a step (labeled and pseudo-labeled) in slices of at most
    # this many, summing their gradients (0: in one piece). The same step, except that
    # BatchNorm normalises each slice by its own statistics; faster where a slice's
    # activations fit the caches (CPUs) or where a whole batch does not fit the memory.
    microbatch_size: int = 0
    optimizer: str = "sgd"  # "sgd" (momentum, optionally Nesterov) or "adam" (AdamW)
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # on convolution and dense kernels only
    schedule: str = "paper"  # "paper" (step decay), "cosine", or "constant"
    decay_epochs: tuple[int, ...] = (80, 120, 160, 180)
    decay_factor: float = 0.1
    warmup_epochs: float = 0.0
    crop_padding: int = 4
    horizontal_flip: bool = True
    compute_dtype: str = "float32"  # "bfloat16" on GPUs: float32 parameters, bf16 compute
    # Semi-supervised (self-training): each step also fits `unlabeled_ratio` × batch images
    # outside B to a teacher's predicted labels, with loss weight `pseudo_weight`. The
    # caller picks the images and labels (docs/algorithm.md, step 2); off by default.
    semi_supervised: bool = False
    unlabeled_ratio: int = 1
    pseudo_weight: float = 1.0
    pseudo_fraction: float = 0.5  # the teacher's most confident fraction of X ∖ B
    # Scoring: average the softmax over each image and its mirror (worth it when the
    # classifier was trained with horizontal_flip), and over the image moved this many
    # pixels up, down, left and right, zero-filled like the training crops (worth it when
    # it was trained with crop_padding; 0: off); only for the items whose confidence over
    # the image alone is below `test_time_views_below` (the others keep that one pass's
    # score; 1.0: every item gets every view); and, for a semi-supervised final classifier
    # only, label with the average of its teacher's and its own predictions.
    test_time_flip: bool = False
    test_time_shift: int = 0
    test_time_views_below: float = 1.0
    teacher_ensemble: bool = False

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "min_steps": self.min_steps >= 0,
            "batch_size": self.batch_size >= 1,
            "microbatch_size": self.microbatch_size >= 0,
            "optimizer": self.optimizer in ("sgd", "adam"),
            "learning_rate": self.learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "schedule": self.schedule in ("paper", "cosine", "constant"),
            "crop_padding": self.crop_padding >= 0,
            "test_time_shift": self.test_time_shift >= 0,
            "test_time_views_below": 0 < self.test_time_views_below <= 1,
            "compute_dtype": self.compute_dtype in ("float32", "bfloat16"),
            "warmup_epochs": 0 <= self.warmup_epochs < self.epochs,
            "unlabeled_ratio": self.unlabeled_ratio >= 1,
            "pseudo_weight": self.pseudo_weight >= 0,
            "pseudo_fraction": 0 < self.pseudo_fraction <= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"train.{name}={getattr(self, name)!r} is not valid")
        object.__setattr__(self, "decay_epochs", tuple(int(e) for e in self.decay_epochs))

    def steps(self, num_labeled: int) -> int:
        """Optimizer steps of a round on ``num_labeled`` items (the last batch of each pass
        over B wraps around, so a pass is ⌈|B| / batch⌉ steps)."""
        return max(self.epochs * -(-num_labeled // self.batch_size), self.min_steps)

    def images(self, num_labeled: int, pseudo: bool = False) -> int:
        """Images through forward and backward in a round on ``num_labeled`` items; with
        ``pseudo`` (semi-supervised with a teacher), the pseudo-labeled images as well."""
        per_step = self.batch_size * (1 + (self.unlabeled_ratio if pseudo else 0))
        return self.steps(num_labeled) * per_step


def step_slices(config: TrainConfig, local_batch: int, pseudo: bool) -> int:
    """How many slices a device's ``local_batch`` labeled rows (with ``pseudo``, and their
    pseudo-labeled rows) run in: the fewest, each with an equal share of both kinds, that
    keep a slice within ``microbatch_size`` rows where the batch allows."""
    rows = local_batch * (1 + (config.unlabeled_ratio if pseudo else 0))
    if not config.microbatch_size or config.microbatch_size >= rows:
        return 1
    wanted = -(-rows // config.microbatch_size)
    return next((s for s in range(wanted, local_batch) if local_batch % s == 0), local_batch)


def schedule_epoch(config: TrainConfig, step: jax.Array, total_steps: jax.Array) -> jax.Array:
    """Where the schedule stands at ``step`` of a round of ``total_steps`` steps: the
    fraction of the round done, in epochs of the configured schedule."""
    return step * config.epochs / total_steps


def learning_rate(config: TrainConfig, epoch: jax.Array) -> jax.Array:
    """The learning rate at fractional schedule epoch ``epoch`` in [0, ``epochs``) (traced)."""
    base = config.learning_rate
    if config.schedule == "paper":
        boundaries = jnp.asarray(config.decay_epochs or (config.epochs,), jnp.float32)
        lr = base * config.decay_factor ** jnp.sum(epoch >= boundaries)
    elif config.schedule == "cosine":
        span = max(config.epochs - config.warmup_epochs, 1e-6)
        progress = jnp.clip((epoch - config.warmup_epochs) / span, 0.0, 1.0)
        lr = base * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    else:
        lr = jnp.asarray(base, jnp.float32)
    if config.warmup_epochs > 0:
        lr = lr * jnp.minimum(1.0, (epoch + 1e-3) / config.warmup_epochs)
    return lr


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optimizer at unit learning rate; the step scales its updates by the schedule."""

    def decay_mask(params: optax.Params) -> optax.Params:
        return jax.tree.map(lambda p: p.ndim > 1, params)

    if config.optimizer == "sgd":
        return optax.chain(
            optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
            optax.sgd(1.0, momentum=config.momentum or None, nesterov=config.nesterov),
        )
    return optax.adamw(1.0, weight_decay=config.weight_decay, mask=decay_mask)
