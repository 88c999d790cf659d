"""Learning-curve and training-cost models of MCAL (Eqs. 2 and 3 of the paper).

Only the shared types live here so far; the fitting functions follow.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct


@struct.dataclass
class PowerLawFit:
    """Truncated power laws ε_θ(b) = α_θ · b^(−γ_θ) · exp(−b / k_θ), one per θ (Eq. 2).

    All fields are arrays of shape [num_thetas]. ``inv_k`` is 1/k (0 means a plain power
    law). ``trusted`` is False for a θ whose error points rest on too few test items.
    """

    thetas: jnp.ndarray
    alpha: jnp.ndarray
    gamma: jnp.ndarray
    inv_k: jnp.ndarray
    trusted: jnp.ndarray


def predict_error(fit: PowerLawFit, b: jnp.ndarray) -> jnp.ndarray:
    """ε_θ(b) for every θ and every training-set size in ``b``: shape [num_thetas, len(b)]."""
    b = jnp.asarray(b, jnp.float32)[None, :]
    log_eps = (
        jnp.log(fit.alpha)[:, None]
        - fit.gamma[:, None] * jnp.log(b)
        - fit.inv_k[:, None] * b
    )
    return jnp.exp(log_eps)


@struct.dataclass
class TrainingCostModel:
    """Cost of one active-learning round: κ · |B| · epochs + overhead (Eq. 3, generalised).

    ``usd_per_image_epoch`` is κ; ``usd_per_round`` is a fixed per-round overhead (0 unless
    the measurements show one). ``epochs`` is the number of epochs each round trains.
    """

    usd_per_image_epoch: float
    usd_per_round: float
    epochs: float

    def round_usd(self, b):
        """Predicted cost of one training round on ``b`` labeled items."""
        return self.usd_per_image_epoch * b * self.epochs + self.usd_per_round
