"""Reference for ``fit_truncated_power_laws``: the same problem, one θ at a time in scipy.

Not used by the algorithm. It is the check of the batched fit in the tests and the
baseline of the fitting-speed comparison: a plain Python loop over θ calling
``scipy.optimize.curve_fit`` (trust-region reflective with bounds, float64) on the same
targets, weights, bounds and identifiability rules.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import scipy.optimize

from mcal_jax.fit import PSEUDO_COUNT, PowerLawFit, design_matrix, log_error_targets
from mcal_jax.profile import THETAS


def fit_truncated_power_laws_scipy(
    train_sizes: np.ndarray,
    errors: np.ndarray,
    counts: np.ndarray,
    *,
    thetas: np.ndarray = THETAS,
    min_test_items: int = 20,
    pseudo_count: float = PSEUDO_COUNT,
) -> PowerLawFit:
    """Per-θ ``curve_fit`` of log ε = c − γ·log(b/s) − κ·(b/s), γ ≥ 0, κ ≥ 0.

    ``sigma`` = 1/√w makes curve_fit minimise Σ w·(log ε̂ − log ε)², the batched fit's
    objective. As there, only rounds with test items count, 1/k = 0 with fewer than 3 of
    them, γ = 0 with fewer than 2, and b is scaled by its largest value s.
    """
    b = np.asarray(train_sizes, np.float64)
    errors = np.asarray(errors, np.float64)
    counts = np.asarray(counts, np.float64)
    thetas = np.asarray(thetas, np.float32)
    y_all, w_all = log_error_targets(errors, counts, pseudo_count)
    rows_with_data = np.any(w_all > 0, axis=1)
    scale = float(b[rows_with_data].max()) if rows_with_data.any() else 1.0

    num_thetas = thetas.shape[0]
    alpha = np.ones(num_thetas)
    gamma = np.zeros(num_thetas)
    inv_k = np.zeros(num_thetas)
    ok = np.zeros(num_thetas, bool)
    for t in range(num_thetas):
        use = w_all[:, t] > 0
        n = int(use.sum())
        if n == 0:
            continue
        y, w = y_all[use, t], w_all[use, t]
        num_params = min(n, 3)

        if num_params == 1:
            q = np.array([np.sum(w * y) / np.sum(w)])
        else:
            lower = [-np.inf] + [0.0] * (num_params - 1)
            p0 = [float(np.mean(y))] + [0.1] * (num_params - 1)
            with warnings.catch_warnings():
                # With as many points as parameters the covariance (unused) is undefined.
                warnings.simplefilter("ignore", scipy.optimize.OptimizeWarning)
                q, _ = scipy.optimize.curve_fit(
                    _log_model,
                    b[use] / scale,
                    y,
                    p0=p0,
                    sigma=1.0 / np.sqrt(w),
                    bounds=(lower, np.inf),
                    ftol=1e-14,
                    xtol=1e-14,
                    gtol=1e-14,
                    max_nfev=10_000,
                )
        q = np.concatenate([q, np.zeros(3 - num_params)])
        gamma[t] = q[1]
        alpha[t] = np.exp(q[0] + q[1] * np.log(scale))
        inv_k[t] = q[2] / scale
        ok[t] = n >= 2 and np.isfinite(alpha[t]) and alpha[t] > 0
    trusted = ok & (counts[-1] >= min_test_items)
    return PowerLawFit(
        thetas=jnp.asarray(thetas),
        alpha=jnp.asarray(alpha, jnp.float32),
        gamma=jnp.asarray(gamma, jnp.float32),
        inv_k=jnp.asarray(inv_k, jnp.float32),
        trusted=jnp.asarray(trusted),
    )


def _log_model(b_scaled: np.ndarray, *q: float) -> np.ndarray:
    """log ε at b/s for the leading len(q) parameters of (c, γ, κ); the rest are 0."""
    return np.asarray(design_matrix(b_scaled, 1.0))[:, : len(q)] @ np.asarray(q)
