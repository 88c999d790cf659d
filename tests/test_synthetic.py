"""Tests of mcal_jax.synthetic: determinism, balance, splits and difficulty of synthetic data."""

import numpy as np

from mcal_jax.data import load_dataset


def test_synthetic_is_deterministic_and_balanced():
    a = load_dataset("synthetic:n=1003,shape=12x10x1,classes=7,seed=3")
    b = load_dataset("synthetic:seed=3,classes=7,shape=12x10x1,n=1003")
    assert a.name == b.name == "synthetic:n=1003,shape=12x10x1,classes=7,seed=3,noise=1.5,shift=1"
    assert a.images.shape == (1003, 12, 10, 1) and a.num_classes == 7
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = load_dataset("synthetic:n=1003,shape=12x10x1,classes=7,seed=4")
    assert not np.array_equal(a.images, c.images)
    counts = np.bincount(a.labels, minlength=7)
    assert counts.min() == 143 and counts.max() == 144
    assert 100 < a.images.mean() < 156 and a.images.std() > 25  # Uses the uint8 range.


def test_synthetic_splits():
    spec = "synthetic:n=700,shape=8x8x3"
    pool, train, test = (load_dataset(spec, split=s) for s in ("all", "train", "test"))
    assert (len(train), len(test)) == (600, 100)
    np.testing.assert_array_equal(np.concatenate([train.images, test.images]), pool.images)
    np.testing.assert_array_equal(np.concatenate([train.labels, test.labels]), pool.labels)


def _nearest_mean_accuracy(spec):
    train, test = load_dataset(spec, split="train"), load_dataset(spec, split="test")
    x, x_test = (d.images.reshape(len(d), -1).astype(np.float32) for d in (train, test))
    means = np.stack([x[train.labels == c].mean(0) for c in range(train.num_classes)])
    distances = ((x_test[:, None] - means[None]) ** 2).sum(-1)
    return (distances.argmin(1) == test.labels).mean()


def test_synthetic_is_learnable_and_noise_sets_difficulty():
    # Even a nearest-class-mean rule learns it; with noise, not perfectly (chance is 10%).
    clean = _nearest_mean_accuracy("synthetic:n=1400,noise=0")
    default = _nearest_mean_accuracy("synthetic:n=1400")
    noisy = _nearest_mean_accuracy("synthetic:n=1400,noise=3")
    assert clean == 1.0
    assert 0.6 < default < 0.98
    assert 0.2 < noisy < default - 0.15
