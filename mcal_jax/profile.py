"""Error profiles on the test set T and the certified machine-labeling threshold.

Step 3 of the algorithm (docs/algorithm.md) measures, for every θ, the classifier's error
on the test items that are at least as confident as the most confident fraction θ of the
unlabeled pool U. Step 10 turns the last profile into the machine-labeling decision with
an exact binomial upper bound, tested in a fixed sequence so that choosing the threshold
on T keeps the bound valid.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

#: Fractions of the pool the learning curves are measured and planned at: 0.05, ..., 1.00.
THETAS: np.ndarray = (np.arange(1, 21) / 20).astype(np.float32)
#: The pre-set grid the final certificate tests (step 10): every 0.1% of U's confidence
#: quantiles. Fixed-sequence testing spends no α per step, so a finer grid costs nothing
#: but lets the threshold stop closer to where the bound binds.
CERTIFY_THETAS: np.ndarray = (np.arange(1, 1001) / 1000).astype(np.float32)

CONSTRAINTS = ("overall", "machine_subset")

# θ·|U| is computed in float32; this relative slack keeps e.g. 0.15·100 from rounding
# up to 16 items because float32(0.15) is a hair above 0.15.
_ROUNDING_SLACK = 1e-6


@dataclasses.dataclass(frozen=True)
class ErrorProfile:
    """ε_T(θ) for every θ, with the counts behind it (step 3 of the algorithm).

    ``thresholds[i]`` is τ_θ, the confidence above which a fraction ``thetas[i]`` of the
    pool lies; the counts are over items with confidence ≥ τ_θ. A threshold, not a
    fraction, is carried from U to T because active learning drains the hard items from
    U, so the same fraction means a lower confidence level in U than in T. Host arrays:
    the scores it is measured from are on the host.
    """

    thetas: np.ndarray
    thresholds: np.ndarray
    test_errors: np.ndarray
    test_counts: np.ndarray
    pool_counts: np.ndarray

    @property
    def error_rate(self) -> np.ndarray:
        """ε_T(θ): errors per test item above τ_θ (0 where no test item is above it)."""
        return self.test_errors / np.maximum(self.test_counts, 1)


def error_profile(
    pool_confidence: np.ndarray | jax.Array,
    test_confidence: np.ndarray | jax.Array,
    test_correct: np.ndarray | jax.Array,
    thetas: np.ndarray | jax.Array = THETAS,
    pool_mask: np.ndarray | jax.Array | None = None,
    test_mask: np.ndarray | jax.Array | None = None,
) -> ErrorProfile:
    """Measures ε_T(θ) for all θ at once with one sort of each set (on the host: the
    scores are host arrays, and a compiled version would compile again for every size
    of U and T).

    Tie rule: τ_θ is the ⌈θ·|U|⌉-th largest pool confidence, and every item (of U or T)
    whose confidence is ≥ τ_θ counts as above the threshold. Items tied with τ_θ are
    therefore all included, so ``pool_counts`` is ⌈θ·|U|⌉ without ties and can exceed it
    with ties: machine labeling is decided per item by its confidence, and items with
    equal confidence cannot be told apart. An empty pool (no items, or every item masked)
    gives τ_θ = +inf and zero pool counts, test counts and test errors for every θ.

    Args:
      pool_confidence: [N_pool] confidence (higher = more confident) of the items of U.
      test_confidence: [N_test] confidence of the items of T.
      test_correct: [N_test] bool, whether the classifier's label of the test item is right.
      thetas: [Θ] fractions of U in (0, 1].
      pool_mask: optional bool [N_pool]; False marks padding of a fixed-size array, which
        is left out of |U| and of every count.
      test_mask: optional bool [N_test], the same for T.
    """
    pool_confidence = np.asarray(pool_confidence, np.float32)
    test_confidence = np.asarray(test_confidence, np.float32)
    test_correct = np.asarray(test_correct)
    if pool_confidence.ndim != 1 or test_confidence.ndim != 1:
        raise ValueError(
            "error_profile: pool_confidence and test_confidence must be 1-D, got shapes "
            f"{pool_confidence.shape} and {test_confidence.shape}"
        )
    if test_correct.shape != test_confidence.shape:
        raise ValueError(
            f"error_profile: test_correct has shape {test_correct.shape}, expected "
            f"{test_confidence.shape} (one flag per test item)"
        )
    masks = (("pool", pool_mask, pool_confidence), ("test", test_mask, test_confidence))
    for name, mask, ref in masks:
        if mask is not None and np.shape(mask) != ref.shape:
            raise ValueError(
                f"error_profile: {name}_mask has shape {np.shape(mask)}, expected {ref.shape}"
            )
    if pool_mask is not None:
        pool_confidence = pool_confidence[np.asarray(pool_mask, bool)]
    if test_mask is not None:
        keep = np.asarray(test_mask, bool)
        test_confidence, test_correct = test_confidence[keep], test_correct[keep]
    thetas = np.asarray(thetas, np.float32)
    num_pool = pool_confidence.size
    zeros = np.zeros(thetas.shape, np.int32)
    if num_pool == 0:
        return ErrorProfile(thetas, np.full(thetas.shape, np.inf, np.float32), zeros, zeros, zeros)
    pool_sorted = np.sort(pool_confidence)
    thresholds = pool_sorted[num_pool - threshold_ranks(thetas, num_pool)]
    pool_counts = num_pool - np.searchsorted(pool_sorted, thresholds, side="left")
    return profile_at(thetas, thresholds, pool_counts, test_confidence, test_correct)


def threshold_ranks(thetas: np.ndarray, num_pool: int) -> np.ndarray:
    """⌈θ·|U|⌉ for every θ, in 1 … |U| (``num_pool`` > 0): τ_θ is the pool confidence of
    that rank, counted from the most confident (`error_profile`)."""
    thetas = np.asarray(thetas, np.float32)
    wanted = np.ceil(thetas * np.float32(num_pool) * np.float32(1 - _ROUNDING_SLACK))
    return np.clip(wanted.astype(np.int64), 1, num_pool)


def profile_at(
    thetas: np.ndarray,
    thresholds: np.ndarray,
    pool_counts: np.ndarray,
    test_confidence: np.ndarray | jax.Array,
    test_correct: np.ndarray | jax.Array,
) -> ErrorProfile:
    """The error profile at the pool's thresholds τ_θ (with ``pool_counts`` items of U at
    or above each): T's items and errors at or above each τ_θ, from one sort of T."""
    test_confidence = np.asarray(test_confidence, np.float32)
    order = np.argsort(test_confidence, kind="stable")
    test_sorted = test_confidence[order]
    # wrong_before[i] = errors among the i least confident test items.
    wrong_before = np.concatenate([[0], np.cumsum(~np.asarray(test_correct, bool)[order])])
    first_above = np.searchsorted(test_sorted, thresholds, side="left")
    return ErrorProfile(
        thetas=np.asarray(thetas, np.float32),
        thresholds=np.asarray(thresholds, np.float32),
        test_errors=(wrong_before[-1] - wrong_before[first_above]).astype(np.int32),
        test_counts=(test_confidence.size - first_above).astype(np.int32),
        pool_counts=np.asarray(pool_counts).astype(np.int32),
    )


def clopper_pearson_upper(
    errors: np.ndarray | jax.Array,
    counts: np.ndarray | jax.Array,
    confidence: float = 0.95,
) -> np.ndarray:
    """One-sided exact (Clopper–Pearson) upper bound on a binomial error rate.

    P(true rate ≤ bound) ≥ ``confidence`` whatever the rate: the bound is the
    ``confidence`` quantile of Beta(errors + 1, counts − errors). With no items there is
    no information and the bound is 1; with every item wrong it is 1 as well.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"clopper_pearson_upper: confidence must be in (0, 1), got {confidence}")
    errors = np.asarray(errors, np.float64)
    counts = np.asarray(counts, np.float64)
    if errors.shape != counts.shape:
        raise ValueError(
            f"clopper_pearson_upper: errors has shape {errors.shape}, counts {counts.shape}"
        )
    if np.any(errors < 0) or np.any(errors > counts):
        raise ValueError(
            "clopper_pearson_upper: need 0 <= errors <= counts, got errors="
            f"{errors.tolist()} counts={counts.tolist()}"
        )
    bounded = errors < counts
    safe_b = np.where(bounded, counts - errors, 1.0)
    upper = scipy.stats.beta.ppf(confidence, errors + 1.0, safe_b)
    return np.where(bounded, upper, 1.0)


# Where `bound_surface` tabulates the bound: error rates 0, then 1e-4 … 1 (geometric), and
# test counts 1 … 10^7 (geometric, uniform in log count).
BOUND_RATES: np.ndarray = np.concatenate([[0.0], np.geomspace(1e-4, 1.0, 255)])
BOUND_COUNTS: np.ndarray = np.geomspace(1.0, 1e7, 160)


@functools.lru_cache(maxsize=8)
def bound_surface(confidence: float | None) -> np.ndarray:
    """[len(BOUND_COUNTS), len(BOUND_RATES)]: the Clopper–Pearson bound at ``confidence``
    that step 10 would certify if a fraction r of n test items were wrong, for each n in
    `BOUND_COUNTS` and r in `BOUND_RATES` (r itself when ``confidence`` is None: the point
    estimate). Expected error counts need not be whole; `predicted_bound` interpolates it."""
    counts = np.broadcast_to(BOUND_COUNTS[:, None], (BOUND_COUNTS.size, BOUND_RATES.size))
    rates = np.broadcast_to(BOUND_RATES[None, :], counts.shape)
    if confidence is None:
        return np.array(rates, np.float32)
    return clopper_pearson_upper(rates * counts, counts, confidence).astype(np.float32)


def predicted_bound(surface: jax.Array, rate: jax.Array, count: jax.Array) -> jax.Array:
    """The bound of `bound_surface` for an error ``rate`` among ``count`` test items,
    interpolated (linearly in the rate and in log count; 1 below one item); traceable, and
    broadcast over ``rate`` and ``count``."""
    rate, count = jnp.broadcast_arrays(jnp.clip(rate, 0.0, 1.0), jnp.asarray(count, jnp.float32))
    log_counts = np.log(BOUND_COUNTS)
    step = log_counts[1] - log_counts[0]
    where = jnp.clip(jnp.log(jnp.maximum(count, 1.0)) / step, 0.0, BOUND_COUNTS.size - 1.001)
    row = jnp.floor(where).astype(jnp.int32)
    row_weight = where - row
    rates = jnp.asarray(BOUND_RATES, jnp.float32)
    col = jnp.clip(jnp.searchsorted(rates, rate, side="right") - 1, 0, rates.size - 2)
    col_weight = (rate - rates[col]) / (rates[col + 1] - rates[col])
    table = jnp.asarray(surface)

    def at(r: jax.Array, c: jax.Array) -> jax.Array:
        return table[r, c] * (1 - col_weight) + table[r, c + 1] * col_weight

    bound = at(row, col) * (1 - row_weight) + at(row + 1, col) * row_weight
    return jnp.where(count < 1.0, 1.0, bound)


@dataclasses.dataclass(frozen=True)
class MachineLabelingChoice:
    """The certified machine-labeling decision of step 10.

    The items of U with confidence ≥ ``threshold`` (``num_machine`` of them) are labeled
    by the classifier; ``estimated_error`` is ε_T at that threshold and ``upper_bound``
    its one-sided Clopper–Pearson bound at ``confidence``. ``start_theta`` is the θ at
    which the fixed sequence started (the first θ at which zero test errors would pass; 0
    when no θ could pass) and ``tested`` how many thresholds it tested from there, the
    failing one included (0 when none could pass). When no threshold passes, ``theta``
    is 0, ``threshold`` +inf and nothing is machine-labeled (so the machine-labeled error
    and its bound are 0).
    """

    theta: float
    threshold: float
    num_machine: int
    estimated_error: float
    upper_bound: float
    confidence: float
    constraint: str
    tested: int
    start_theta: float = 0.0


def choose_machine_threshold(
    profile: ErrorProfile,
    *,
    epsilon: float,
    constraint: str,
    num_items: int,
    confidence: float = 0.95,
) -> MachineLabelingChoice:
    """Largest θ whose error bound meets ε, by fixed-sequence testing (step 10).

    The thresholds are tested from the most confident (smallest θ) to the least, each at
    level 1 − ``confidence``, and testing stops at the first failure; the last passing θ
    is kept. Because the order is fixed before looking at T's errors, the chosen
    threshold's bound holds at ``confidence`` although T was used to choose it, which is
    not true of "the largest θ that passes" when a later θ passes after a failure.

    Start of the sequence: the most confident θ often has too few test items to pass
    even with no error (for ``"machine_subset"`` fewer than ⌈ln α / ln(1 − ε)⌉ items, 59
    for ε = α = 5%; for ``"overall"`` the same with the per-θ tolerance ε·N/|S_θ|), and
    starting there would stop the sequence at once. So the sequence starts at the first
    θ at which zero errors *would* pass, which is decided from the test and pool counts
    alone, never from T's labels. This keeps the guarantee: the counts depend only on
    the confidences of U and T. Conditional on the confidences, the start and the order
    are fixed, and what remains random is whether each test item is right, which is
    exactly what every test in the sequence is about. Given the confidences, the errors
    above τ_θ are a sum of independent Bernoulli draws whose lower tail (where the test
    passes) is no heavier than that of the binomial with the same mean (Hoeffding 1956),
    so each Clopper–Pearson test keeps its level, and the fixed-sequence argument applies
    as before: a wrong certificate needs the first tested θ whose true error exceeds ε
    to pass, which happens with probability ≤ 1 − ``confidence``. The θ skipped before
    the start are not tested, so they cannot be wrongly certified. A start chosen from
    the observed errors would not have this property.

    A θ whose τ_θ leaves no pool item (an empty U) cannot be chosen: there is nothing to
    machine-label.

    Constraints (docs/algorithm.md): ``"machine_subset"`` requires bound(ε_T(θ)) ≤ ε on the
    machine-labeled items; ``"overall"`` requires |S|·bound / N ≤ ε over the whole
    dataset of ``num_items`` = N items, human labels counting as correct.
    """
    if constraint not in CONSTRAINTS:
        raise ValueError(
            f"choose_machine_threshold: unknown constraint {constraint!r}; "
            f"valid: {', '.join(repr(c) for c in CONSTRAINTS)}"
        )
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"choose_machine_threshold: epsilon must be in (0, 1), got {epsilon}")
    if num_items <= 0:
        raise ValueError(f"choose_machine_threshold: num_items must be positive, got {num_items}")
    thetas = np.asarray(profile.thetas, np.float64)
    thresholds = np.asarray(profile.thresholds, np.float64)
    errors = np.asarray(profile.test_errors, np.int64)
    counts = np.asarray(profile.test_counts, np.int64)
    pool_counts = np.asarray(profile.pool_counts, np.int64)

    def meets(upper: np.ndarray) -> np.ndarray:
        if constraint == "machine_subset":
            return upper <= epsilon
        return pool_counts * upper / num_items <= epsilon

    upper = clopper_pearson_upper(errors, counts, confidence)
    passes = meets(upper)
    # Counts only: would this θ pass with no error among its test items?
    could_pass = meets(clopper_pearson_upper(np.zeros_like(counts), counts, confidence))
    could_pass &= pool_counts > 0

    order = np.argsort(thetas, kind="stable")
    startable = np.flatnonzero(could_pass[order])
    if startable.size == 0:
        return _nothing_machine_labeled(confidence, constraint, tested=0, start_theta=0.0)
    start = int(startable[0])
    sequence = order[start:]
    start_theta = float(str(np.asarray(profile.thetas)[sequence[0]]))
    failed = np.flatnonzero(~passes[sequence])
    num_passing = int(failed[0]) if failed.size else len(sequence)
    tested = min(num_passing + 1, len(sequence))
    if num_passing == 0:
        return _nothing_machine_labeled(confidence, constraint, tested, start_theta)
    i = sequence[num_passing - 1]
    return MachineLabelingChoice(
        theta=float(str(np.asarray(profile.thetas)[i])),  # 0.15, not float32's 0.15000000596
        threshold=float(thresholds[i]),
        num_machine=int(pool_counts[i]),
        estimated_error=float(errors[i] / max(counts[i], 1)),
        upper_bound=float(upper[i]),
        confidence=confidence,
        constraint=constraint,
        tested=tested,
        start_theta=start_theta,
    )


def certify(
    pool_confidence: jax.Array,
    test_confidence: jax.Array,
    test_correct: jax.Array,
    *,
    epsilon: float,
    constraint: str,
    num_items: int,
    confidence: float,
) -> MachineLabelingChoice:
    """Step 10's certified threshold for the pool U from its test items: the error profile
    on the fine pre-set grid `CERTIFY_THETAS` (every 0.1% of U's confidence quantiles),
    then `choose_machine_threshold`."""
    profile = error_profile(pool_confidence, test_confidence, test_correct, thetas=CERTIFY_THETAS)
    return choose_machine_threshold(
        profile,
        epsilon=epsilon,
        constraint=constraint,
        num_items=num_items,
        confidence=confidence,
    )


def _nothing_machine_labeled(
    confidence: float, constraint: str, tested: int, start_theta: float
) -> MachineLabelingChoice:
    return MachineLabelingChoice(
        theta=0.0,
        threshold=float("inf"),
        num_machine=0,
        estimated_error=0.0,
        upper_bound=0.0,
        confidence=confidence,
        constraint=constraint,
        tested=tested,
        start_theta=start_theta,
    )


__all__ = [
    "THETAS",
    "CERTIFY_THETAS",
    "CONSTRAINTS",
    "ErrorProfile",
    "error_profile",
    "threshold_ranks",
    "profile_at",
    "clopper_pearson_upper",
    "BOUND_RATES",
    "BOUND_COUNTS",
    "bound_surface",
    "predicted_bound",
    "MachineLabelingChoice",
    "choose_machine_threshold",
    "certify",
]
