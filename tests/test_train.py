"""Data-parallel training: 8 devices take exactly the 1-device step; real data is learned."""

import os

import jax
import numpy as np
import pytest

from mcal_jax import parallel, recipe, scoring
from mcal_jax import pool as pool_lib
from mcal_jax import train as train_lib
from mcal_jax.data import DEBIAN_FASHION_MNIST_DIR, Dataset, load_dataset


def _toy_dataset(n=512, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.int32)
    noise = rng.integers(0, 80, (n, 28, 28, 1))
    images = (noise + labels[:, None, None, None] * 15).astype(np.uint8)
    return Dataset(images=images, labels=labels, num_classes=10, name="toy")


NO_AUGMENT = dict(crop_padding=0, horizontal_flip=False)


def _one_step(num_devices, optimizer="sgd"):
    pool = pool_lib.upload(_toy_dataset(), parallel.make_mesh(num_devices))
    config = train_lib.TrainConfig(
        epochs=1,
        batch_size=64,
        schedule="constant",
        learning_rate=0.05,
        optimizer=optimizer,
        **NO_AUGMENT,
    )
    # |B| = one global batch and one epoch: exactly one optimizer step.
    data = _toy_dataset()
    idx = np.arange(100, 164)
    result = train_lib.Trainer("tiny", pool, config).train(idx, data.labels[idx], seed=3)
    return jax.device_get(result.variables), result


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_data_parallel_step_equals_single_device_step(optimizer):
    assert jax.device_count() == 8
    one, _ = _one_step(1, optimizer)
    eight, result = _one_step(8, optimizer)
    assert result.num_devices == 8
    initial = jax.device_get(
        train_lib.Trainer(
            "tiny",
            pool_lib.upload(_toy_dataset(), parallel.make_mesh(1)),
            train_lib.TrainConfig(epochs=1, batch_size=64, optimizer=optimizer),
        ).init(jax.random.fold_in(jax.random.key(3), 0))
    )
    moved = 0.0
    for (path, a), b, init in zip(
        jax.tree_util.tree_leaves_with_path(one),
        jax.tree.leaves(eight),
        jax.tree.leaves({"params": initial.params, "batch_stats": initial.batch_stats}),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=str(path))
        moved = max(moved, float(np.max(np.abs(a - init))))
    assert moved > 1e-3  # the step really changed the parameters and statistics


def test_rounds_reuse_one_compiled_program():
    pool = pool_lib.upload(_toy_dataset(), parallel.make_mesh(2))
    config = train_lib.TrainConfig(epochs=2, batch_size=32, schedule="cosine")
    labels = _toy_dataset().labels
    first = train_lib.train("tiny", pool, np.arange(50), labels[:50], config)
    second = train_lib.train("tiny", pool, np.arange(200), labels[:200], config, seed=1)
    assert first.compile_seconds > 0
    assert second.compile_seconds == 0.0
    # ceil(|B| / batch) full batches per epoch, the last one wrapping around.
    assert first.images_processed == 2 * 2 * 32
    assert second.images_processed == 7 * 2 * 32
    assert second.device_seconds == pytest.approx(2 * second.wall_seconds)


def test_step_floor_trains_small_sets_longer_on_the_same_schedule():
    pool = pool_lib.upload(_toy_dataset(), parallel.make_mesh(1))
    config = train_lib.TrainConfig(epochs=2, batch_size=32, min_steps=20, schedule="cosine")
    labels = _toy_dataset().labels
    small = train_lib.train("tiny", pool, np.arange(50), labels[:50], config)
    # 2 epochs of ⌈50 / 32⌉ = 2 steps would be 4 steps: the floor makes it 20.
    assert (small.steps, small.images_processed, small.epochs) == (20, 20 * 32, 10.0)
    large = train_lib.train("tiny", pool, np.arange(500), labels[:500], config)
    assert (large.steps, large.images_processed, large.epochs) == (32, 32 * 32, 2.0)
    # The schedule spans the steps run: the paper's ÷10 at epoch 80 of 200 comes at 40%.
    paper = train_lib.TrainConfig(epochs=200, min_steps=1000, learning_rate=0.1)
    total = paper.steps(256)  # one step per pass: 200 steps, floored to 1000
    assert total == 1000
    lrs = [
        float(train_lib.learning_rate(paper, recipe.schedule_epoch(paper, s, total)))
        for s in (399, 400, 599, 600)
    ]
    np.testing.assert_allclose(lrs, [0.1, 0.01, 0.01, 1e-3], rtol=1e-5)


def test_non_finite_loss_stops_with_clear_error():
    pool = pool_lib.upload(_toy_dataset(), parallel.make_mesh(1))
    config = train_lib.TrainConfig(
        epochs=3, batch_size=64, learning_rate=1e30, momentum=0.0, schedule="constant"
    )
    with pytest.raises(train_lib.NonFiniteLossError, match="learning_rate"):
        train_lib.train("tiny", pool, np.arange(256), _toy_dataset().labels[:256], config)


def test_non_finite_weights_stop_with_clear_error():
    """Two steps: the first update blows the weights up, the second step's BatchNorm
    statistics overflow to inf and normalise its activations to zero, so both losses are
    finite (the second is huge) while the weights and running statistics are not."""
    pool = pool_lib.upload(_toy_dataset(), parallel.make_mesh(1))
    config = train_lib.TrainConfig(epochs=1, batch_size=32, learning_rate=1e30, schedule="constant")
    labels = _toy_dataset().labels
    with pytest.raises(train_lib.DivergedError, match=r"weights .* train\.learning_rate=1e\+30"):
        train_lib.train("tiny", pool, np.arange(64), labels[:64], config)


def test_paper_learning_rate_schedule():
    config = train_lib.TrainConfig(learning_rate=0.1)
    lrs = [float(train_lib.learning_rate(config, np.float32(e))) for e in (0, 79.9, 80, 150, 190)]
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 1e-3, 1e-5], rtol=1e-5)


def test_invalid_config_names_the_field():
    with pytest.raises(ValueError, match="train.optimizer='rmsprop'"):
        train_lib.TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="train.test_time_shift=-1"):
        train_lib.TrainConfig(test_time_shift=-1)
    pool = pool_lib.upload(_toy_dataset(), parallel.make_mesh(8))
    with pytest.raises(ValueError, match="multiple of the 8 devices"):
        train_lib.Trainer("tiny", pool, train_lib.TrainConfig(batch_size=100))


def _real_fashion_mnist():
    if not os.path.isdir(DEBIAN_FASHION_MNIST_DIR):
        if os.environ.get("MCAL_REQUIRE_REAL_DATA") == "1":
            pytest.fail(
                f"{DEBIAN_FASHION_MNIST_DIR} is missing: apt-get install dataset-fashion-mnist"
            )
        pytest.skip("real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return load_dataset("fashion_mnist", split="all")


def test_short_training_on_real_fashion_mnist_beats_chance():
    data = _real_fashion_mnist()
    chosen = np.random.default_rng(0).choice(len(data), 6000, replace=False)
    # One device: the heavier convolutions of this test gain nothing from simulated devices
    # sharing two cores. Indices below are into the 6,000-item subset.
    pool = pool_lib.upload(data.subset(chosen), parallel.make_mesh(1))
    config = train_lib.TrainConfig(
        epochs=8, batch_size=64, learning_rate=0.1, schedule="cosine", **NO_AUGMENT
    )
    labels = data.labels[chosen]
    # The 5k-parameter model: the real images' path is under test, not the architecture.
    result = train_lib.train("tiny", pool, np.arange(4000), labels[:4000], config)
    accuracy = scoring.accuracy(
        "tiny", pool, result.variables, np.arange(4000, 6000), labels[4000:]
    )
    assert accuracy >= 0.65, accuracy  # chance is 0.10; this run measured 0.74
