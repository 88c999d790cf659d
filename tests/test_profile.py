"""Tests of mcal_jax.profile: error profiles, Clopper–Pearson bounds, certified threshold."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from mcal_jax import profile as P


def _brute_force_profile(pool, test, correct, pool_mask=None):
    """Step 3 item by item: τ_θ is the ⌈θ·|U|⌉-th largest pool confidence, ties included."""
    valid = pool if pool_mask is None else pool[pool_mask]
    n = len(valid)
    desc = np.sort(valid)[::-1]
    rows = []
    for i in range(1, 21):  # θ = i / 20, so ⌈θ·n⌉ is exact in integers
        k = -(-i * n // 20)
        tau = desc[k - 1]
        above = test >= tau
        rows.append(
            (tau, int(np.sum(~correct & above)), int(above.sum()), int(np.sum(valid >= tau)))
        )
    return [np.array(c) for c in zip(*rows, strict=True)]


@pytest.mark.parametrize("num_pool", [100, 37, 60])
def test_error_profile_matches_brute_force_with_ties_and_mask(num_pool):
    rng = np.random.default_rng(num_pool)
    # Confidences on a grid of 11 values: many ties, in U and T and across them.
    pool = rng.integers(0, 11, num_pool + 13).astype(np.float32) / 10
    test = rng.integers(0, 11, 80).astype(np.float32) / 10
    correct = rng.random(80) < 0.3 + 0.6 * test
    mask = np.ones(num_pool + 13, bool)
    mask[rng.choice(num_pool + 13, 13, replace=False)] = False  # padding
    pool[~mask] = 5.0  # padding must be ignored even with a high confidence

    got = P.error_profile(pool, test, correct, pool_mask=mask)
    tau, errors, counts, pool_counts = _brute_force_profile(pool, test, correct, mask)
    np.testing.assert_array_equal(np.asarray(got.thresholds), tau)
    np.testing.assert_array_equal(np.asarray(got.test_errors), errors)
    np.testing.assert_array_equal(np.asarray(got.test_counts), counts)
    np.testing.assert_array_equal(np.asarray(got.pool_counts), pool_counts)
    np.testing.assert_allclose(np.asarray(got.error_rate), errors / np.maximum(counts, 1))
    assert got.test_errors.dtype == jnp.int32 and got.pool_counts.dtype == jnp.int32
    # Ties only ever add items: never fewer than ⌈θ·|U|⌉, all of U at θ = 1.
    assert np.all(pool_counts >= -(-np.arange(1, 21) * num_pool // 20))
    assert pool_counts[-1] == num_pool and counts[-1] == 80


def test_error_profile_without_ties_takes_exactly_theta_of_the_pool():
    rng = np.random.default_rng(0)
    pool = rng.permutation(200).astype(np.float32)
    test = rng.random(50).astype(np.float32) * 200
    got = P.error_profile(pool, test, np.ones(50, bool))
    np.testing.assert_array_equal(np.asarray(got.pool_counts), np.arange(1, 21) * 10)
    np.testing.assert_array_equal(np.asarray(got.thresholds), 200 - np.arange(1, 21) * 10)
    assert int(got.test_errors.sum()) == 0


def test_error_profile_padding_equals_unpadded_and_test_mask():
    rng = np.random.default_rng(1)
    pool, test = rng.random(64, np.float32), rng.random(40, np.float32)
    correct = rng.random(40) < 0.7
    plain = P.error_profile(pool[:50], test[:30], correct[:30])
    padded = P.error_profile(
        pool,
        test,
        correct,
        pool_mask=np.arange(64) < 50,
        test_mask=np.arange(40) < 30,
    )
    for field in ("thresholds", "test_errors", "test_counts", "pool_counts"):
        np.testing.assert_array_equal(getattr(plain, field), getattr(padded, field))


def test_error_profile_empty_pool_gives_infinite_threshold():
    got = P.error_profile(np.ones(8), np.ones(5), np.zeros(5, bool), pool_mask=np.zeros(8, bool))
    assert np.all(np.isinf(np.asarray(got.thresholds)))
    assert int(got.pool_counts.sum()) == 0 and int(got.test_counts.sum()) == 0


def test_error_profile_compiles_once_per_shape():
    rng = np.random.default_rng(2)
    args = lambda: (rng.random(30), rng.random(12), rng.random(12) < 0.5)  # noqa: E731
    P.error_profile(*args())
    before = P._error_profile._cache_size()
    for _ in range(3):
        P.error_profile(*args())
    assert P._error_profile._cache_size() == before


def test_error_profile_rejects_bad_shapes():
    with pytest.raises(ValueError, match="test_correct has shape"):
        P.error_profile(np.ones(5), np.ones(4), np.ones(3, bool))
    with pytest.raises(ValueError, match="pool_mask has shape"):
        P.error_profile(np.ones(5), np.ones(4), np.ones(4, bool), pool_mask=np.ones(4, bool))


def test_clopper_pearson_zero_errors_closed_form():
    alpha = 0.05
    n = np.array([1, 10, 100, 3500])
    np.testing.assert_allclose(
        P.clopper_pearson_upper(np.zeros(4), n, 1 - alpha), 1 - alpha ** (1 / n), rtol=1e-10
    )
    assert math.isclose(P.clopper_pearson_upper(0, 100)[()], 0.0295130, rel_tol=1e-5)


@pytest.mark.parametrize("k,n", [(1, 10), (5, 100), (37, 400), (99, 100)])
def test_clopper_pearson_matches_two_sided_exact_interval_at_twice_alpha(k, n):
    ci = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact")
    assert math.isclose(P.clopper_pearson_upper(k, n, 0.95)[()], ci.high, rel_tol=1e-9)


def test_clopper_pearson_edge_cases_and_errors():
    np.testing.assert_array_equal(P.clopper_pearson_upper([0, 7, 3], [0, 7, 8])[:2], [1.0, 1.0])
    assert 3 / 8 < P.clopper_pearson_upper([3], [8])[0] < 1.0
    with pytest.raises(ValueError, match="errors <= counts"):
        P.clopper_pearson_upper([5], [4])
    with pytest.raises(ValueError, match="confidence"):
        P.clopper_pearson_upper([0], [4], confidence=1.0)


def _profile(errors, counts, pool_counts, thetas=(0.2, 0.4, 0.6, 0.8, 1.0)):
    num = len(thetas)
    return P.ErrorProfile(
        thetas=jnp.asarray(thetas, jnp.float32),
        thresholds=jnp.linspace(0.9, 0.1, num),
        test_errors=jnp.asarray(errors, jnp.int32),
        test_counts=jnp.asarray(counts, jnp.int32),
        pool_counts=jnp.asarray(pool_counts, jnp.int32),
    )


def test_fixed_sequence_stops_at_first_failure():
    # Bounds: 0/100 → 0.0295, 1/200 → 0.0235, 20/300 → 0.0954 (fails ε = 5%),
    # 0/400 → 0.0075 (would pass, but testing has stopped).
    prof = _profile([0, 1, 20, 0, 0], [100, 200, 300, 400, 500], [10, 20, 30, 40, 50])
    upper = P.clopper_pearson_upper(prof.test_errors, prof.test_counts)
    np.testing.assert_allclose(upper[:4], [0.029513, 0.023498, 0.095402, 0.007461], rtol=1e-4)
    got = P.choose_machine_threshold(
        prof, epsilon=0.05, constraint="machine_subset", num_items=1000
    )
    assert got.theta == 0.4 and got.num_machine == 20 and got.tested == 3
    assert got.threshold == pytest.approx(0.7)
    assert got.estimated_error == pytest.approx(1 / 200)
    assert got.upper_bound == pytest.approx(upper[1])
    assert got.constraint == "machine_subset" and got.confidence == 0.95


def test_overall_constraint_counts_human_labels_as_correct():
    # N = 10,000; |S| at θ = 1000·i. Upper bounds 0.0295, 0.0235, 0.0954, 0.1282:
    # overall error |S|·ub/N = 0.0030, 0.0047, 0.0286, 0.0513 → the fourth fails ε = 5%.
    prof = _profile([0, 1, 20, 40, 0], [100, 200, 300, 400, 500], [1000, 2000, 3000, 4000, 5000])
    got = P.choose_machine_threshold(prof, epsilon=0.05, constraint="overall", num_items=10_000)
    assert got.theta == 0.6 and got.num_machine == 3000 and got.tested == 4
    assert got.upper_bound == pytest.approx(0.095402, rel=1e-4)
    # The same profile under the machine-subset constraint stops at θ = 0.4.
    subset = P.choose_machine_threshold(
        prof, epsilon=0.05, constraint="machine_subset", num_items=10_000
    )
    assert subset.theta == 0.4


def test_all_pass_and_nothing_passes():
    prof = _profile([0, 0, 0, 0, 0], [500] * 5, [1, 2, 3, 4, 5])
    best = P.choose_machine_threshold(prof, epsilon=0.05, constraint="machine_subset", num_items=9)
    assert best.theta == 1.0 and best.num_machine == 5 and best.tested == 5
    bad = _profile([10, 0, 0, 0, 0], [50, 500, 500, 500, 500], [1, 2, 3, 4, 5])
    none = P.choose_machine_threshold(bad, epsilon=0.05, constraint="machine_subset", num_items=9)
    assert none.theta == 0.0 and none.num_machine == 0 and math.isinf(none.threshold)
    assert none.tested == 1


def test_choose_machine_threshold_rejects_bad_arguments():
    prof = _profile([0] * 5, [100] * 5, [1] * 5)
    with pytest.raises(ValueError, match=r"'subset'.*'overall', 'machine_subset'"):
        P.choose_machine_threshold(prof, epsilon=0.05, constraint="subset", num_items=10)
    for eps in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="epsilon must be in"):
            P.choose_machine_threshold(prof, epsilon=eps, constraint="overall", num_items=10)
