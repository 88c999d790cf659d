"""Tests of mcal_jax.fit: batched truncated power laws (Eq. 2) and training cost (Eq. 3)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcal_jax import fit as F
from mcal_jax.fit_reference import fit_truncated_power_laws_scipy
from mcal_jax.profile import THETAS

ALPHA, GAMMA, K = 2.0, 0.5, 20_000.0
SIZES = np.linspace(500, 15_000, 10)


def _truth(b):
    return ALPHA * b ** (-GAMMA) * np.exp(-b / K)


def _noisy_rounds(seed, sizes=SIZES):
    """Binomial error counts at realistic test counts 3500·θ, the same curve for every θ."""
    rng = np.random.default_rng(seed)
    counts = np.broadcast_to(np.round(3500 * THETAS).astype(int), (len(sizes), 20))
    return rng.binomial(counts, _truth(sizes)[:, None]), counts


def test_noise_free_curves_are_recovered_exactly():
    counts = np.full((10, 20), 1e6)
    alphas = 1.0 + THETAS  # a different curve per θ
    eps = alphas[None, :] * SIZES[:, None] ** (-GAMMA) * np.exp(-SIZES[:, None] / K)
    fit = F.fit_truncated_power_laws(SIZES, eps * counts, counts)
    np.testing.assert_allclose(fit.alpha, alphas, rtol=2e-3)
    np.testing.assert_allclose(fit.gamma, GAMMA, atol=3e-4)
    np.testing.assert_allclose(fit.inv_k, 1 / K, rtol=3e-3)
    assert bool(np.all(fit.trusted))


def test_noisy_curves_recover_the_truth():
    errors, counts = _noisy_rounds(seed=0)
    fit = F.fit_truncated_power_laws(SIZES, errors, counts)
    sel = THETAS >= 0.5  # ≥ 1750 test items, 13 to 150 errors per point
    b = np.linspace(500, 15_000, 30)
    rel = np.abs(np.asarray(F.predict_error(fit, b))[sel] / _truth(b) - 1)
    # Medians over 11 independent noisy curves; a plain power law, a wrong sign or a
    # wrong weighting fails these.
    assert np.median(rel.max(axis=1)) < 0.2
    assert np.median(np.abs(np.asarray(fit.gamma)[sel] - GAMMA)) < 0.15
    assert 0.6 < np.median(np.asarray(fit.inv_k)[sel]) * K < 1.6
    assert bool(np.all(fit.trusted))


@pytest.mark.parametrize("num_rounds", [10, 4, 2, 1])
def test_batched_fit_equals_scipy_curve_fit(num_rounds):
    errors, counts = _noisy_rounds(seed=3)
    errors, counts = errors[:num_rounds].copy(), counts[:num_rounds].copy()
    counts[: num_rounds - 1, 1] = 0  # θ = 0.10 measured in the latest round only
    errors[: num_rounds - 1, 1] = 0
    b = SIZES[:num_rounds]
    ours = F.fit_truncated_power_laws(b, errors, counts)
    ref = fit_truncated_power_laws_scipy(b, errors, counts)
    grid = np.linspace(500, 30_000, 40)
    np.testing.assert_allclose(
        F.predict_error(ours, grid), F.predict_error(ref, grid), rtol=1e-3, atol=0
    )
    np.testing.assert_array_equal(ours.trusted, ref.trusted)
    if num_rounds >= 3:  # the bounds are active for some θ, so both sides handled them
        assert np.any(np.asarray(ref.inv_k) == 0) or np.any(np.asarray(ref.gamma) == 0)


def test_zero_error_counts_stay_finite():
    errors, counts = _noisy_rounds(seed=4)
    errors[:, :3] = 0
    fit = F.fit_truncated_power_laws(SIZES, errors, counts)
    for field in (fit.alpha, fit.gamma, fit.inv_k):
        assert np.all(np.isfinite(field))
    # Zero errors at a constant count: a flat curve at the pseudo-count rate 0.5 / count.
    pred = np.asarray(F.predict_error(fit, SIZES))[:3]
    np.testing.assert_allclose(pred, 0.5 / counts[:, :3].T, rtol=1e-4)


def test_fewer_than_three_points_fit_a_plain_power_law():
    errors, counts = _noisy_rounds(seed=5)
    fit = F.fit_truncated_power_laws(SIZES[:2], errors[:2], counts[:2])
    np.testing.assert_array_equal(fit.inv_k, 0.0)
    assert np.all(np.asarray(fit.gamma) > 0)
    # Two points and two parameters: the power law passes through both.
    rate = errors[:2] / counts[:2]
    np.testing.assert_allclose(np.asarray(F.predict_error(fit, SIZES[:2])).T, rate, rtol=1e-4)
    # Per θ too: a θ with test items in only two rounds of ten.
    counts = counts.copy()
    counts[:8, 7] = 0
    errors = np.where(counts > 0, errors, 0)
    fit = F.fit_truncated_power_laws(SIZES, errors, counts)
    assert float(fit.inv_k[7]) == 0.0 and float(fit.inv_k[-1]) > 0


def test_one_round_is_flat_and_untrusted():
    errors, counts = _noisy_rounds(seed=6)
    fit = F.fit_truncated_power_laws(SIZES[:1], errors[:1], counts[:1])
    np.testing.assert_array_equal(fit.gamma, 0.0)
    np.testing.assert_allclose(fit.alpha, errors[0] / counts[0], rtol=1e-5)
    assert not np.any(np.asarray(fit.trusted))


def test_trusted_needs_enough_test_items_in_the_latest_round():
    errors, counts = _noisy_rounds(seed=7)
    counts = counts.copy()
    counts[-1, 0] = 19  # latest round too small at θ = 0.05
    counts[0, 1] = 5  # an early small round does not matter
    errors = np.minimum(errors, counts)
    fit = F.fit_truncated_power_laws(SIZES, errors, counts, min_test_items=20)
    assert not bool(fit.trusted[0]) and bool(fit.trusted[1])
    assert int(np.sum(np.asarray(fit.trusted))) == 19
    counts[:, 2] = 0  # no data at all: neutral parameters, not trusted
    fit = F.fit_truncated_power_laws(SIZES, np.minimum(errors, counts), counts)
    assert not bool(fit.trusted[2]) and float(fit.alpha[2]) == 1.0


def test_one_compile_per_round_bucket():
    sizes = np.linspace(500, 15_000, 24)
    errors, counts = _noisy_rounds(seed=8, sizes=sizes)
    before = F._fit_power_laws_padded._cache_size()
    F.fit_truncated_power_laws(sizes[:17], errors[:17], counts[:17])  # bucket of 24 rounds
    assert F._fit_power_laws_padded._cache_size() == before + 1
    for seed in range(3):  # same shape, new values (pseudo_count is traced, not static)
        e, c = _noisy_rounds(seed, sizes=sizes)
        F.fit_truncated_power_laws(sizes[:17], e[:17], c[:17], pseudo_count=0.25 + seed)
    F.fit_truncated_power_laws(sizes, errors, counts)  # 24 rounds: the same bucket
    assert F._fit_power_laws_padded._cache_size() == before + 1


def test_fits_run_on_the_host_whatever_the_default_device():
    # The suite's 8 simulated devices stand in for accelerators: with device 3 as the
    # default, the fit still runs on (and returns arrays of) the host's first CPU device.
    errors, counts = _noisy_rounds(seed=1)
    with jax.default_device(jax.devices()[3]):
        assert jnp.zeros(1).devices() == {jax.devices()[3]}
        fit = F.fit_truncated_power_laws(SIZES, errors, counts)
    host = jax.local_devices(backend="cpu")[0]
    assert fit.alpha.devices() == fit.trusted.devices() == {host} != {jax.devices()[3]}


def test_fit_rejects_bad_inputs():
    errors, counts = _noisy_rounds(seed=9)
    with pytest.raises(ValueError, match=r"errors has shape \(10, 19\)"):
        F.fit_truncated_power_laws(SIZES, errors[:, :19], counts)
    with pytest.raises(ValueError, match="errors <= counts"):
        F.fit_truncated_power_laws(SIZES, counts + 1, counts)
    with pytest.raises(ValueError, match="train_sizes must be positive"):
        F.fit_truncated_power_laws(SIZES - 600, errors, counts)


def _weighted_log_fit(b, errors, counts, weights):
    """Weighted least squares of log(errors/counts) on [1, −log(b/s), −b/s], in float64."""
    s = b.max()
    x = np.stack([np.ones_like(b), -np.log(b / s), -b / s], axis=1)
    sw = np.sqrt(weights)
    q = np.linalg.lstsq(x * sw[:, None], np.log(errors / counts) * sw, rcond=None)[0]
    return np.exp(x @ q), q


def test_rounds_are_weighted_by_their_test_counts():
    # Five rounds on one curve; the middle round's rate is 1.6× too high. Columns 0-9
    # measured it on 100 test items (3000 elsewhere), columns 10-19 on 1000 (300 or 3000
    # elsewhere), so the weighted fits differ between the halves (by over 20%) and each
    # from an unweighted fit (by up to 17%) on the rounds' own sizes.
    b = np.array([1000.0, 2000, 4000, 8000, 16000])
    rate = _truth(b) * np.array([1, 1, 1.6, 1, 1])
    counts = np.empty((5, 20))
    counts[:, :10] = np.array([3000, 3000, 100, 3000, 3000])[:, None]
    counts[:, 10:] = np.array([3000, 300, 1000, 300, 3000])[:, None]
    errors = np.round(rate[:, None] * counts)
    fit = F.fit_truncated_power_laws(b, errors, counts)
    got = np.asarray(F.predict_error(fit, b))
    for cols in (slice(0, 10), slice(10, 20)):
        c, e = counts[:, cols.start], errors[:, cols.start]
        weighted, q = _weighted_log_fit(b, e, c, c)
        assert q[1] > 0 and q[2] > 0  # interior: the unconstrained optimum is the fit's
        unweighted, _ = _weighted_log_fit(b, e, c, np.ones(5))
        assert np.max(np.abs(weighted / unweighted - 1)) > 0.1
        np.testing.assert_allclose(got[cols], np.broadcast_to(weighted, (10, 5)), rtol=1e-4)
    assert np.max(np.abs(got[0] / got[10] - 1)) > 0.2


def test_log_error_targets_by_hand():
    errors = np.array([0, 3, 0, 5, 2])
    counts = np.array([10, 100, 0, 5, 40])
    # max(errors, 0.5) / count: 0.05, 0.03, (no items), 1, 0.05.
    want_y = [-2.995732273553991, -3.506557897319982, 0.0, 0.0, -2.995732273553991]
    want_w = [10, 100, 0, 5, 40]
    y, w = F.log_error_targets(errors, counts, F.PSEUDO_COUNT)
    np.testing.assert_allclose(y, want_y, rtol=1e-12)
    np.testing.assert_array_equal(w, want_w)
    # The jax path (inside the jitted fit) gives the same, in float32.
    y32, w32 = F.log_error_targets(jnp.asarray(errors, jnp.float32), jnp.asarray(counts), 0.5)
    assert isinstance(y32, jax.Array)
    np.testing.assert_allclose(y32, want_y, rtol=1e-6)
    np.testing.assert_array_equal(w32, want_w)
    # Another pseudo-count: 0.25 / 10 = 0.025.
    y, _ = F.log_error_targets(np.array([0.0]), np.array([10.0]), 0.25)
    np.testing.assert_allclose(y, [-3.6888794541139363], rtol=1e-12)
    assert F.PSEUDO_COUNT == 0.5


def test_jaxopt_warning_filter_is_local():
    assert not any("JAXopt" in str(getattr(f[1], "pattern", "")) for f in warnings.filters)


def test_training_cost_recovers_slope_and_overhead():
    rng = np.random.default_rng(0)
    b = np.arange(1, 8) * 700.0
    epochs = np.full(7, 30.0)
    usd = 2e-6 * b * epochs + 0.15
    noisy = usd * (1 + 0.005 * rng.standard_normal(7))
    model = F.fit_training_cost(b * epochs, noisy, epochs=30.0)
    assert model.usd_per_image_epoch == pytest.approx(2e-6, rel=0.03)
    assert model.usd_per_round == pytest.approx(0.15, rel=0.1)
    assert model.epochs == 30.0
    one_round = model.growth_usd(0.0, 3500.0, 3500.0)
    assert one_round[0] == 1 and one_round[1] == pytest.approx(2e-6 * 3500 * 30 + 0.15, rel=0.01)


def test_training_cost_without_overhead_keeps_it_zero():
    rng = np.random.default_rng(1)
    b = np.arange(1, 8) * 700.0
    epochs = np.array([20, 20, 30, 30, 30, 40, 40.0])
    usd = 3e-6 * b * epochs * (1 + 0.01 * rng.standard_normal(7))
    model = F.fit_training_cost(b * epochs, usd, epochs=40.0)
    assert model.usd_per_round == 0.0
    assert model.usd_per_image_epoch == pytest.approx(3e-6, rel=0.02)
    assert model.epochs == 40.0  # how future rounds train
    # Two rounds: no overhead is tried, even if the data have one.
    two = F.fit_training_cost(b[:2] * epochs[:2], 3e-6 * b[:2] * 20 + 1.0, epochs=20.0)
    assert two.usd_per_round == 0.0 and two.usd_per_image_epoch > 3e-6
    with pytest.raises(ValueError, match="usd must be non-negative"):
        F.fit_training_cost(b * epochs, -usd, epochs=40.0)


def test_training_cost_is_fitted_on_images_so_floored_rounds_predict_right():
    """Rounds lifted by a step floor process more images than |B| · epochs: fitting on
    |B| · epochs would overprice every large round; on images, κ is the true price."""
    b = np.array([100.0, 200.0, 400.0, 800.0, 1600.0])
    images = np.maximum(8 * b, 300 * 64.0)  # 8 epochs, at least 300 steps of 64
    usd = 2e-6 * images
    model = F.fit_training_cost(images, usd, epochs=8.0, min_images=300 * 64.0)
    assert model.usd_per_image_epoch == pytest.approx(2e-6, rel=1e-9)
    for size in (50.0, 1000.0, 6400.0):
        rounds, cost = model.growth_usd(size - 1.0, size, 1.0)  # one round on `size`
        assert cost == pytest.approx(2e-6 * max(8 * size, 300 * 64.0), rel=1e-9)


def _growth_usd(model, b_from, b_to, delta):
    return model.growth_usd(b_from, b_to, delta)[1]


@pytest.mark.parametrize("min_images", [0.0, 25.0 * 2500])
def test_growth_usd_equals_explicit_sum_over_rounds(min_images):
    model = F.TrainingCostModel(
        usd_per_image_epoch=1.5e-6, usd_per_round=0.2, epochs=25.0, min_images=min_images
    )
    rng = np.random.default_rng(2)
    b_from = rng.integers(0, 3000, 50).astype(float)
    b_to = b_from + rng.integers(-500, 8000, 50)
    delta = rng.integers(100, 1500, 50).astype(float)
    got = np.asarray(_growth_usd(model, b_from, b_to, delta))
    for i in range(50):
        expected, size = 0.0, b_from[i]
        while size < b_to[i]:
            size = min(size + delta[i], b_to[i])
            expected += 1.5e-6 * max(size * 25.0, min_images) + 0.2
        assert got[i] == pytest.approx(expected, rel=1e-5, abs=1e-9)
    jitted = jax.jit(lambda bt: _growth_usd(model, b_from, bt, delta))
    np.testing.assert_allclose(jitted(b_to), got, rtol=1e-6)


def test_growth_usd_is_eq3_from_zero():
    model = F.TrainingCostModel(usd_per_image_epoch=1e-6, usd_per_round=0.0, epochs=200.0)
    delta = 700.0
    b = delta * np.arange(1, 30)
    k = model.usd_per_image_epoch * model.epochs / 2
    np.testing.assert_allclose(
        _growth_usd(model, 0.0, b, delta), k * b * (b / delta + 1), rtol=1e-5
    )
