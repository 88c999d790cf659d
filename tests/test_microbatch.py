"""A step in slices (train.microbatch_size): the slices are those the docs name, their
losses and gradients add up, their batch statistics average, and a sliced step trains."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcal_jax import microbatch, parallel, recipe
from mcal_jax import pool as pool_lib
from mcal_jax import train as train_lib
from mcal_jax.data import Dataset


def test_each_slice_takes_its_share_of_every_part():
    rows = jnp.arange(12)  # 4 labeled rows, then two pseudo-labeled parts of 4
    sliced = np.asarray(microbatch.interleave(rows, parts=3, slices=2))
    np.testing.assert_array_equal(sliced, [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]])
    images = jnp.arange(8 * 3).reshape(8, 3)
    np.testing.assert_array_equal(
        np.asarray(microbatch.interleave(images, parts=2, slices=2))[1],
        np.asarray(images)[[2, 3, 6, 7]],
    )


def _centred_loss(w, x, weights):
    """A loss that couples the rows of a slice as BatchNorm does: x about its slice's mean."""
    mean = jnp.mean(x)
    return jnp.sum(weights * (w * (x - mean)) ** 2), {"mean": mean}


@pytest.mark.parametrize("slices", [1, 2, 4])
def test_losses_and_gradients_add_up_and_statistics_average(slices):
    rng = np.random.default_rng(0)
    x = rng.normal(size=16).astype(np.float32)
    weights = rng.uniform(size=16).astype(np.float32)
    loss, stats, grad = microbatch.value_and_grad(
        _centred_loss, jnp.float32(1.5), (jnp.asarray(x), jnp.asarray(weights)), slices, 2
    )
    # By hand: labeled rows 0..7 and pseudo-labeled rows 8..15, each cut in `slices`.
    pieces = [
        np.concatenate(
            [np.arange(8).reshape(slices, -1)[i], np.arange(8, 16).reshape(slices, -1)[i]]
        )
        for i in range(slices)
    ]
    want_loss = want_grad = 0.0
    for rows in pieces:
        centred = x[rows] - x[rows].mean()
        want_loss += np.sum(weights[rows] * (1.5 * centred) ** 2)
        want_grad += np.sum(weights[rows] * 2 * 1.5 * centred**2)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    np.testing.assert_allclose(float(grad), want_grad, rtol=1e-5)
    np.testing.assert_allclose(
        float(stats["mean"]), np.mean([x[r].mean() for r in pieces]), rtol=1e-5
    )


def test_slices_keep_to_the_size_where_the_batch_allows():
    config = train_lib.TrainConfig(batch_size=32, microbatch_size=32)
    assert recipe.step_slices(config, 32, pseudo=False) == 1
    assert recipe.step_slices(config, 32, pseudo=True) == 2  # 32 + 32 rows
    assert recipe.step_slices(train_lib.TrainConfig(microbatch_size=0), 32, True) == 1
    ratio_two = train_lib.TrainConfig(unlabeled_ratio=2, microbatch_size=32)
    assert recipe.step_slices(ratio_two, 32, pseudo=True) == 4  # 96 rows: 3 do not divide 32
    assert recipe.step_slices(train_lib.TrainConfig(microbatch_size=1), 8, True) == 8
    with pytest.raises(ValueError, match="train.microbatch_size=-1"):
        train_lib.TrainConfig(microbatch_size=-1)


def _toy(n=600):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n).astype(np.int32)
    noise = rng.integers(0, 80, (n, 28, 28, 1))
    images = (noise + labels[:, None, None, None] * 15).astype(np.uint8)
    return Dataset(images=images, labels=labels, num_classes=10, name="toy")


def _semi(microbatch_size, steps=1):
    data = _toy()
    pool = pool_lib.upload(data, parallel.make_mesh(1))
    config = train_lib.TrainConfig(
        epochs=1, min_steps=steps, batch_size=32, learning_rate=0.05, schedule="cosine",
        crop_padding=0, horizontal_flip=False, semi_supervised=True,
        microbatch_size=microbatch_size,
    )  # fmt: skip
    labeled, pseudo = np.arange(100, 164), np.arange(200, 500)
    trainer = train_lib.Trainer("tiny", pool, config)
    result = trainer.train(
        labeled, data.labels[labeled], pseudo_indices=pseudo, pseudo_labels=data.labels[pseudo],
        seed=3,
    )  # fmt: skip
    initial = trainer.init(jax.random.fold_in(jax.random.key(3), 0)).params
    return jax.device_get(result.variables), result, jax.device_get(initial)


def _flat(tree):
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def test_a_sliced_step_is_the_whole_step_but_for_each_slices_statistics():
    whole, _, initial = _semi(0)
    one_slice, _, _ = _semi(64)  # 64 rows fit one slice: the very same program
    sliced, _, _ = _semi(32)  # two slices of 16 + 16
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(one_slice), strict=True):
        np.testing.assert_array_equal(a, b)
    step = _flat(whole["params"]) - _flat(initial)
    gap = _flat(whole["params"]) - _flat(sliced["params"])
    assert np.linalg.norm(step) > 1e-3  # the step moved the parameters
    # Close, not equal: each slice normalises by its own statistics.
    assert 0 < np.linalg.norm(gap) < 0.5 * np.linalg.norm(step)


def test_a_sliced_recipe_learns():
    _, first, _ = _semi(32, steps=1)
    _, result, _ = _semi(32, steps=150)
    assert result.steps == 150
    assert result.final_loss < 0.4 * first.final_loss  # 4.88 to 1.43 (whole steps: 0.95)
