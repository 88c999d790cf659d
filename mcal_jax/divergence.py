"""Training that diverged: the errors, and the checks of the loss and the weights."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from mcal_jax import models

if TYPE_CHECKING:
    from tqdm.auto import tqdm


class DivergedError(FloatingPointError):
    """Training diverged: the loss, the trained weights or their predictions are not finite."""


class NonFiniteLossError(DivergedError):
    """Training diverged: the loss became NaN or infinite."""


@jax.jit
def all_finite(tree: models.PyTree) -> jax.Array:
    """Whether every array of ``tree`` (weights, statistics) is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def check_loss(
    epoch: int, loss_sum: jax.Array, steps: int, progress_bar: tqdm | None = None
) -> float:
    """The mean loss of a pass of ``steps`` steps; NonFiniteLossError when it is not finite."""
    value = float(loss_sum) / steps
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"training loss is {value} at epoch {epoch}: lower train.learning_rate or check "
            "the data"
        )
    if progress_bar is not None:
        progress_bar.set_postfix(loss=f"{value:.4f}")
    return value
