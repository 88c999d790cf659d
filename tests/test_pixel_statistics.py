"""The pool's normalisation statistics: exact integer sums, in chunks of bounded size."""

import numpy as np
import pytest

from mcal_jax import pool as pool_lib


@pytest.mark.parametrize("shape", [(3000, 64, 64, 3), (5000, 28, 28, 1), (1, 5, 7, 2)])
def test_statistics_are_those_of_all_pixels_whatever_the_chunks(shape):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    images[..., 0] //= 2  # channels that differ
    pixels = images.reshape(-1, shape[-1]).astype(np.float64) / 255.0
    mean, std = pool_lib.pixel_statistics(images)  # (3000, 64, 64, 3): two 32 MB chunks
    assert mean.dtype == std.dtype == np.float32 and mean.shape == (shape[-1],)
    np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, pixels.std(0), rtol=1e-5)


def test_a_constant_pool_has_a_small_positive_spread():
    mean, std = pool_lib.pixel_statistics(np.full((4, 8, 8, 3), 255, np.uint8))
    np.testing.assert_array_equal(mean, np.ones(3, np.float32))
    assert np.all(std > 0) and np.all(std < 1e-5)
