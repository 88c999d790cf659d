"""Learning-curve and training-cost models of MCAL (Eqs. 2 and 3 of the paper).

The learning curve of every θ is fitted in one batched, jit-compiled call (step 4 of the
algorithm); the training cost of a round is linear in the image-epochs it trains (step 5).
The per-θ scipy reference of the same fit is in ``mcal_jax.fit_reference``.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, overload

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mcal_jax.parallel import on_host
from mcal_jax.profile import THETAS

with warnings.catch_warnings():
    # jaxopt 0.8.5 announces on import that it is no longer maintained; its solvers work.
    warnings.filterwarnings(
        "ignore", message="JAXopt is no longer maintained", category=DeprecationWarning
    )
    import jaxopt

#: Fewest test items above τ_θ, in the latest round, for a θ's curve to be trusted.
MIN_TEST_ITEMS = 20

#: Error count put in place of a zero error count when taking log ε̂ (one home for it: the
#: fit, its scipy reference and the report all use this value).
PSEUDO_COUNT = 0.5

# Rounds are padded (with zero-weight points) to a multiple of this, so that the fit
# compiles once per few rounds rather than once per round.
ROUND_BUCKET = 8
# Stopping tolerance on the gradient norm of the normalised (Σw = 1) objective; float32
# round-off leaves gradients of about 1e-6 at the optimum, hence the 100× margin for
# calling a fit converged.
_LM_TOL = 1e-6


# Host (numpy) or device (jax) arrays: the fits run on the device, their records on the host.
Arrays = np.ndarray | jax.Array
# A number or an array, numpy or jax alike: the cost formulas serve both the jitted grid
# search and the host's float64 bill. Their arithmetic mixes the two (numpy scalars with
# jax arrays), which the libraries' stubs cannot follow through a union: checked as Any.
Numeric = Any


@struct.dataclass
class PowerLawFit:
    """Truncated power laws ε_θ(b) = α_θ · b^(−γ_θ) · exp(−b / k_θ), one per θ (Eq. 2).

    All fields are arrays of shape [num_thetas]. ``inv_k`` is 1/k (0 means a plain power
    law). ``trusted`` is False for a θ whose error points rest on too few test items
    (fewer than ``min_test_items`` in the latest round, or test items in only one round)
    or whose fit did not converge to finite values.
    """

    thetas: Arrays
    alpha: Arrays
    gamma: Arrays
    inv_k: Arrays
    trusted: Arrays


def predict_error(fit: PowerLawFit, b: Arrays) -> jax.Array:
    """ε_θ(b) for every θ and every training-set size in ``b``: shape [num_thetas, len(b)]."""
    b = jnp.asarray(b, jnp.float32)[None, :]
    log_eps = jnp.log(fit.alpha)[:, None] - fit.gamma[:, None] * jnp.log(b) - fit.inv_k[:, None] * b
    return jnp.exp(log_eps)


@overload
def log_error_targets(
    errors: jax.Array, counts: Arrays, pseudo_count: float | jax.Array
) -> tuple[jax.Array, jax.Array]: ...
@overload
def log_error_targets(
    errors: np.ndarray, counts: Arrays, pseudo_count: float | jax.Array
) -> tuple[np.ndarray, np.ndarray]: ...
def log_error_targets(
    errors: Arrays, counts: Arrays, pseudo_count: float | jax.Array
) -> tuple[Arrays, Arrays]:
    """Targets log ε̂ and weights w of the fit; shared with the scipy reference.

    ε̂ = max(errors, pseudo_count) / count keeps the log finite for a zero error count;
    w = count, so a point measured on more test items pulls harder. Points with no test
    items get weight 0 (and target 0).
    """
    xp = jnp if isinstance(errors, jax.Array) else np
    has_items = counts > 0
    rate = xp.maximum(errors, pseudo_count) / xp.where(has_items, counts, 1)
    return xp.where(has_items, xp.log(rate), 0.0), xp.where(has_items, counts, 0)


@on_host
def fit_truncated_power_laws(
    train_sizes: np.ndarray,
    errors: np.ndarray,
    counts: np.ndarray,
    *,
    thetas: np.ndarray = THETAS,
    min_test_items: int = MIN_TEST_ITEMS,
    pseudo_count: float = PSEUDO_COUNT,
    max_iter: int = 30,
    refine: bool = True,
) -> PowerLawFit:
    """Fits Eq. 2 to the error profiles of all rounds so far, for every θ at once (step 4).

    The objective per θ is Σ_j w_j · (log ε̂_j − log ε_θ(b_j))², w_j = the test count behind
    round j's estimate (see ``log_error_targets``), subject to α > 0, γ ≥ 0, 1/k ≥ 0. In
    log space the model log α − γ·log b − b/k is linear in (log α, γ, 1/k), so the
    constrained optimum is found exactly by an active-set enumeration: the weighted
    least-squares solution (batched ``lstsq``) on each of the four faces {none, γ = 0,
    1/k = 0, both = 0}, keeping the feasible one with the smallest objective. The
    Levenberg–Marquardt solve (jaxopt, vmapped over θ) then starts from that solution on
    its face, with the other parameters held at their bound. For this linear residual it
    moves the parameters by round-off only (predictions agree with a float64 scipy fit to
    ~2e-5 either way); its gradient test is the convergence check behind ``trusted``, and
    it is the place where a non-linear residual would be solved.

    Identifiability, per θ, from the n rounds that have test items above τ_θ: 1/k is fixed
    to 0 when n < 3 (a plain power law; docs/algorithm.md, step 4), and γ is fixed to 0 when n < 2
    (a single point says nothing about the slope; α is then that point's error). Such a
    one-point curve is not trusted: extrapolating a flat curve would claim more labels
    never help. ``trusted`` also needs ≥ ``min_test_items`` test items in the latest round
    and finite parameters; a θ with no data gets α = 1, γ = 1/k = 0.

    Args:
      train_sizes: [R] |B_j| of each round, in round order.
      errors: [R, Θ] test errors above τ_θ per round (``ErrorProfile.test_errors``).
      counts: [R, Θ] test items above τ_θ per round (``ErrorProfile.test_counts``).
      thetas: [Θ] the θ of the columns.
      min_test_items: fewest test items in the latest round for a trusted θ.
      pseudo_count: error count used in place of zero errors.
      max_iter: Levenberg–Marquardt iterations.
      refine: run the Levenberg–Marquardt solve; False keeps the exact active-set solution
        and trusts it when finite (the plan's resampled replicates, thousands of fits).
    """
    b = np.asarray(train_sizes, np.float64)
    errors = np.asarray(errors, np.float64)
    counts = np.asarray(counts, np.float64)
    thetas = np.asarray(thetas, np.float32)
    _check_curve_inputs(b, errors, counts, thetas)
    num_rounds = b.shape[0]
    padded = -(-num_rounds // ROUND_BUCKET) * ROUND_BUCKET
    pad = padded - num_rounds
    b = np.concatenate([b, np.full(pad, b[-1])])
    errors = np.concatenate([errors, np.zeros((pad, errors.shape[1]))])
    counts_p = np.concatenate([counts, np.zeros((pad, counts.shape[1]))])
    alpha, gamma, inv_k, ok = _fit_power_laws_padded(
        jnp.asarray(b, jnp.float32),
        jnp.asarray(errors, jnp.float32),
        jnp.asarray(counts_p, jnp.float32),
        jnp.float32(pseudo_count),
        max_iter=max_iter if refine else 0,
    )
    trusted = ok & jnp.asarray(counts[-1] >= min_test_items)
    return PowerLawFit(
        thetas=jnp.asarray(thetas), alpha=alpha, gamma=gamma, inv_k=inv_k, trusted=trusted
    )


def _check_curve_inputs(
    b: np.ndarray, errors: np.ndarray, counts: np.ndarray, thetas: np.ndarray
) -> None:
    if b.ndim != 1 or b.shape[0] == 0:
        raise ValueError(f"fit_truncated_power_laws: train_sizes must be 1-D, non-empty: {b}")
    if not np.all(np.isfinite(b)) or np.any(b <= 0):
        raise ValueError(f"fit_truncated_power_laws: train_sizes must be positive, got {b}")
    expected = (b.shape[0], thetas.shape[0])
    for name, x in (("errors", errors), ("counts", counts)):
        if x.shape != expected:
            raise ValueError(
                f"fit_truncated_power_laws: {name} has shape {x.shape}, expected "
                f"{expected} (rounds, thetas)"
            )
    if np.any(errors < 0) or np.any(errors > counts):
        raise ValueError("fit_truncated_power_laws: need 0 <= errors <= counts everywhere")


# The four faces of the constraint set γ ≥ 0, 1/k ≥ 0 (columns: log α, γ, 1/k).
_FACES = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 0], [1, 0, 0]], np.float32)


def design_matrix(b: jax.Array | np.ndarray, scale: float | jax.Array) -> jax.Array | np.ndarray:
    """Columns of log ε = c − γ·log(b/s) − κ·(b/s), with s = ``scale``.

    Sizes are scaled by the largest one for conditioning; the parameters map back as
    log α = c + γ·log s and 1/k = κ / s.
    """
    xp = jnp if isinstance(b, jax.Array) else np
    x = b / scale
    return xp.stack([xp.ones_like(x), -xp.log(x), -x], axis=-1)


def _residual(
    q: jax.Array, x: jax.Array, y: jax.Array, sqrt_w: jax.Array, face: jax.Array
) -> jax.Array:
    return sqrt_w * (y - x @ (q * face))


@partial(jax.jit, static_argnames="max_iter")
def _fit_power_laws_padded(
    b: jax.Array, errors: jax.Array, counts: jax.Array, pseudo_count: jax.Array, *, max_iter: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    y, w = log_error_targets(errors, counts, pseudo_count)  # [R, Θ]
    num_points = jnp.sum(w > 0, axis=0)  # [Θ]
    scale = jnp.max(jnp.where(jnp.any(w > 0, axis=1), b, 0.0))
    scale = jnp.where(scale > 0, scale, 1.0)
    x = design_matrix(b, scale)  # [R, 3]
    # Normalising the weights leaves the minimiser unchanged and makes _LM_TOL meaningful;
    # a θ without data gets a harmless dummy problem whose result is replaced below.
    w = jnp.where(num_points > 0, w / jnp.maximum(jnp.sum(w, axis=0), 1e-30), 1.0)
    sqrt_w = jnp.sqrt(w).T  # [Θ, R]
    y = y.T
    allowed = jnp.stack(
        [jnp.ones_like(num_points), num_points >= 2, num_points >= 3], axis=-1
    ).astype(jnp.float32)  # [Θ, 3]
    faces = jnp.asarray(_FACES)[None] * allowed[:, None]  # [Θ, 4, 3]

    def solve_face(sw: jax.Array, yy: jax.Array, face: jax.Array) -> tuple[jax.Array, jax.Array]:
        q = jnp.linalg.lstsq((sw[:, None] * x) * face, sw * yy)[0] * face
        r = sw * (yy - x @ q)
        feasible = (q[1] >= -1e-6) & (q[2] >= -1e-6)
        return q, jnp.where(feasible, jnp.sum(r * r), jnp.inf)

    q_all, sse = jax.vmap(jax.vmap(solve_face, (None, None, 0)))(sqrt_w, y, faces)
    best = jnp.argmin(sse, axis=1)  # the all-fixed face is always feasible
    q0 = jnp.take_along_axis(q_all, best[:, None, None], axis=1)[:, 0]
    face = jnp.take_along_axis(faces, best[:, None, None], axis=1)[:, 0]
    q0 = q0.at[:, 1:].set(jnp.maximum(q0[:, 1:], 0.0))

    if max_iter:
        lm = jaxopt.LevenbergMarquardt(
            residual_fun=_residual,
            maxiter=max_iter,
            tol=_LM_TOL,
            solver="qr",
            materialize_jac=True,
            implicit_diff=False,
        )
        q, state = jax.vmap(lambda q0_, sw, yy, f: lm.run(q0_, x, yy, sw, f))(q0, sqrt_w, y, face)
        q = jnp.maximum(q * face, jnp.array([-jnp.inf, 0.0, 0.0]))
        converged = (state.error <= 100 * _LM_TOL) | (state.iter_num < max_iter)
    else:  # the active-set solution is the exact optimum of this linear problem
        q, converged = q0, jnp.ones(q0.shape[0], bool)

    gamma = q[:, 1]
    log_alpha = q[:, 0] + gamma * jnp.log(scale)
    inv_k = q[:, 2] / scale
    has_data = num_points > 0
    alpha = jnp.where(has_data, jnp.exp(log_alpha), 1.0)
    gamma = jnp.where(has_data, gamma, 0.0)
    inv_k = jnp.where(has_data, inv_k, 0.0)
    finite = jnp.isfinite(alpha) & (alpha > 0) & jnp.isfinite(gamma) & jnp.isfinite(inv_k)
    ok = has_data & (num_points >= 2) & converged & finite
    return alpha, gamma, inv_k, ok


@struct.dataclass
class TrainingCostModel:
    """Cost of one active-learning round: κ · images(|B|) + overhead (Eq. 3, generalised).

    ``usd_per_image_epoch`` is κ, the price of one image through forward and backward;
    ``usd_per_round`` a fixed per-round overhead (0 unless the measurements show one). A
    round on b items processes images(b) = max(``epochs`` · b, ``min_images``) images:
    ``epochs`` passes over B, or the step floor's ``min_images`` (min_steps × batch) when
    B is small. (Each pass rounds |B| up to whole batches; the model leaves that out, an
    error of at most one batch per pass.)
    """

    usd_per_image_epoch: float
    usd_per_round: float
    epochs: float
    min_images: float = 0.0

    def growth_usd(self, b_from: Numeric, b_to: Numeric, delta: Numeric) -> tuple[Numeric, Numeric]:
        """(n, USD) of the rounds that grow B from ``b_from`` to ``b_to`` in steps of
        ``delta`` (see :func:`rounds_to_grow`); numpy or jax arrays alike."""
        floor = self.min_images / self.epochs
        rounds, size_sum = rounds_to_grow(b_from, b_to, delta, floor)
        return (
            rounds,
            self.usd_per_image_epoch * self.epochs * size_sum + self.usd_per_round * rounds,
        )


def rounds_to_grow(
    b_from: Numeric, b_to: Numeric, delta: Numeric, floor: Numeric = 0.0
) -> tuple[Numeric, Numeric]:
    """The rounds that grow B from ``b_from`` to ``b_to`` in steps of ``delta`` (Eq. 3,
    generalised to a partial last round and a floor): (n, Σ max(size, ``floor``)), floats.

    n = ⌈(b_to − b_from)/δ⌉ rounds train on b_from + δ, b_from + 2δ, …, and a last one on
    b_to itself (none when b_to ≤ b_from: the round at b_from is already paid). Without a
    floor their sizes add up to n·b_from + (b_to − b_from) + δ·n(n − 1)/2; with one, the J
    rounds below it count as ``floor`` each. With b_from = 0, b_to a multiple of δ and no
    floor or overhead, κ·epochs·Σ sizes is the paper's Eq. 3, k·|B|·(|B|/δ + 1), with
    k = κ·epochs / 2. Broadcasts over numpy or jax arrays (inside jit too); the results
    are floats, as δ·n² overflows int32 at Fashion-MNIST scale.
    """
    n = -((b_from - b_to) // delta) * 1.0
    grows = n > 0
    n = n * grows
    # J = #{j in 1..n−1 : b_from + jδ < floor}: the rounds the floor lifts.
    below = -((b_from - floor) // delta) - 1.0
    below = below * (below > 0)
    below = below + (n - 1.0 - below) * (below > n - 1.0)  # at most n − 1
    below = below * grows
    above = n - 1.0 - below
    middle = above * b_from + delta * ((n - 1.0) * n - below * (below + 1.0)) / 2.0
    last = b_to + (floor - b_to) * (floor > b_to)  # max(b_to, floor)
    return n, (below * floor + middle + last) * grows


def fit_training_cost(
    images: np.ndarray, usd: np.ndarray, *, epochs: float, min_images: float = 0.0
) -> TrainingCostModel:
    """Fits the cost of a round, κ · images (+ c), to the rounds measured so far (step 5).

    κ ≥ 0 is the least-squares slope through the origin. With ≥ 3 rounds a fixed
    per-round overhead c ≥ 0 is also tried (non-negative least squares on [images, 1])
    and kept when it lowers Akaike's criterion n·log(SSE/n) + 2·(parameters): one extra
    parameter must buy a real drop in the residual, not the drop that any extra parameter
    buys on noise. Fitting on the images each round really processed makes the model
    right for rounds lifted by a step floor, whose images are not |B| · epochs.

    Args:
      images: [R] images each round put through forward and backward.
      usd: [R] measured cost of each round's training.
      epochs: the passes over B a future round makes.
      min_images: a future round's floor on images (min_steps × batch; 0: none).
    """
    x = np.asarray(images, np.float64)
    u = np.asarray(usd, np.float64)
    if x.ndim != 1 or x.size == 0 or u.shape != x.shape:
        raise ValueError(
            "fit_training_cost: images and usd must be 1-D of one non-zero length, got "
            f"shapes {x.shape}, {u.shape}"
        )
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise ValueError(f"fit_training_cost: images must be positive and finite, got {x}")
    if not np.all(np.isfinite(u)) or np.any(u < 0):
        raise ValueError(f"fit_training_cost: usd must be non-negative and finite, got {u}")
    if not (epochs > 0 and min_images >= 0):
        raise ValueError(
            f"fit_training_cost: need epochs > 0, min_images ≥ 0: {epochs}, {min_images}"
        )
    kappa = max(float(x @ u / (x @ x)), 0.0)
    overhead = 0.0
    if x.size >= 3:
        n = x.size
        # Floor on SSE so an exact fit does not make log(SSE) −inf for both models.
        floor = 1e-12 * float(u @ u) + 1e-300
        sse_slope = max(float(np.sum((u - kappa * x) ** 2)), floor)
        k2, c2 = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), u, rcond=None)[0]
        if k2 < 0:  # the face κ = 0 of the NNLS problem: a constant cost per round
            k2, c2 = 0.0, float(np.mean(u))
        if c2 > 0:
            sse_both = max(float(np.sum((u - k2 * x - c2) ** 2)), floor)
            if n * np.log(sse_both / n) + 4 < n * np.log(sse_slope / n) + 2:
                kappa, overhead = float(k2), float(c2)
    return TrainingCostModel(
        usd_per_image_epoch=kappa,
        usd_per_round=overhead,
        epochs=float(epochs),
        min_images=float(min_images),
    )
