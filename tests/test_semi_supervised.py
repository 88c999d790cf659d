"""Semi-supervised rounds: each step also fits a teacher's labels on items outside B."""

import jax
import numpy as np
import pytest

from mcal_jax import parallel, scoring
from mcal_jax import pool as pool_lib
from mcal_jax import train as train_lib
from mcal_jax.data import Dataset
from mcal_jax.scores import Scores

NO_AUGMENT = dict(crop_padding=0, horizontal_flip=False)


def _toy(n=600, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.int32)
    noise = rng.integers(0, 80, (n, 28, 28, 1))
    images = (noise + labels[:, None, None, None] * 15).astype(np.uint8)
    return Dataset(images=images, labels=labels, num_classes=10, name="toy")


def _config(**fields):
    base = dict(epochs=1, min_steps=150, batch_size=32, learning_rate=0.05, schedule="cosine")
    return train_lib.TrainConfig(**{**base, **NO_AUGMENT, **fields})


def test_pseudo_labels_are_what_the_model_learns():
    """B holds class 0 alone; the model learns the other classes from the pseudo-labels it
    is given: shifted by one class, it predicts the shifted class on held-out items of
    classes 2-9; with the true ones, the true class, far better than from B alone."""
    data = _toy()
    pool = pool_lib.upload(data, parallel.make_mesh(1))
    labeled = np.flatnonzero(data.labels[:400] == 0)[:10]
    pseudo = np.setdiff1d(np.arange(400), labeled)
    held_out = 400 + np.flatnonzero(data.labels[400:] >= 2)
    shifted = (data.labels[pseudo] + 1) % 10
    semi = _config(semi_supervised=True, pseudo_weight=4.0, min_steps=300)
    result = train_lib.train(
        "tiny", pool, labeled, data.labels[labeled], semi, pseudo_indices=pseudo,
        pseudo_labels=shifted, seed=0,
    )  # fmt: skip
    predicted = scoring.get_scorer("tiny", pool).score(result.variables, held_out).predicted
    follows = np.mean(predicted[held_out] == (data.labels[held_out] + 1) % 10)
    assert follows > 0.8
    # The same items with their true labels as pseudo-labels teach the true classes.
    right = train_lib.train(
        "tiny", pool, labeled, data.labels[labeled], semi, pseudo_indices=pseudo,
        pseudo_labels=data.labels[pseudo], seed=0,
    )  # fmt: skip
    plain = train_lib.train(
        "tiny", pool, labeled, data.labels[labeled], _config(min_steps=300), seed=0
    )
    accuracy = {
        name: scoring.accuracy("tiny", pool, r.variables, held_out, data.labels[held_out])
        for name, r in (("semi", right), ("plain", plain))
    }
    assert accuracy["plain"] < 0.2  # B alone shows class 0 only
    assert accuracy["semi"] > 0.7


def test_images_count_the_pseudo_labeled_part_and_each_variant_compiles_once():
    data = _toy()
    pool = pool_lib.upload(data, parallel.make_mesh(2))
    config = _config(semi_supervised=True, unlabeled_ratio=2, min_steps=4)
    trainer = train_lib.Trainer("tiny", pool, config)
    labels = data.labels
    plain = trainer.train(np.arange(40), labels[:40])  # no teacher: supervised only
    semi = trainer.train(
        np.arange(40), labels[:40], pseudo_indices=np.arange(40, 100),
        pseudo_labels=labels[40:100],
    )  # fmt: skip
    again = trainer.train(
        np.arange(50), labels[:50], pseudo_indices=np.arange(300, 400),
        pseudo_labels=labels[300:400], seed=1,
    )  # fmt: skip
    assert (plain.steps, plain.images_processed) == (4, 4 * 32)
    assert (semi.steps, semi.images_processed) == (4, 4 * 32 * 3)
    assert config.images(40, pseudo=True) == semi.images_processed
    assert semi.compile_seconds > 0 and again.compile_seconds == 0.0
    # Off in the recipe: pseudo-labels given are ignored.
    off = train_lib.train(
        "tiny",
        pool,
        np.arange(40),
        labels[:40],
        _config(min_steps=4),
        pseudo_indices=np.arange(40, 100),
        pseudo_labels=labels[40:100],
    )
    assert off.images_processed == 4 * 32


def _semi_step(num_devices):
    data = _toy()
    pool = pool_lib.upload(data, parallel.make_mesh(num_devices))
    config = _config(semi_supervised=True, min_steps=0, batch_size=64, pseudo_weight=0.5)
    labeled, pseudo = np.arange(100, 164), np.arange(200, 300)
    result = train_lib.Trainer("tiny", pool, config).train(
        labeled, data.labels[labeled], pseudo_indices=pseudo,
        pseudo_labels=(data.labels[pseudo] + 3) % 10, seed=3,
    )  # fmt: skip
    assert result.steps == 1
    return jax.device_get(result.variables)


def test_semi_supervised_step_is_the_same_on_one_and_eight_devices():
    one, eight = _semi_step(1), _semi_step(8)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_bad_pseudo_labels_are_refused():
    data = _toy()
    pool = pool_lib.upload(data, parallel.make_mesh(1))
    trainer = train_lib.Trainer("tiny", pool, _config(semi_supervised=True, min_steps=1))
    labels = data.labels
    with pytest.raises(ValueError, match="outside the labeled set"):
        trainer.train(
            np.arange(40),
            labels[:40],
            pseudo_indices=np.arange(30, 60),
            pseudo_labels=labels[30:60],
        )
    with pytest.raises(ValueError, match="go together"):
        trainer.train(np.arange(40), labels[:40], pseudo_indices=np.arange(50, 60))
    with pytest.raises(ValueError, match="one length"):
        trainer.train(
            np.arange(40), labels[:40], pseudo_indices=np.arange(50, 60), pseudo_labels=labels[:3]
        )
    with pytest.raises(ValueError, match="train.pseudo_fraction=0"):
        train_lib.TrainConfig(pseudo_fraction=0)


def test_teacher_gives_its_most_confident_fraction():
    confidence = np.array([0.1, 0.9, 0.5, 0.9, 0.7, 0.2], np.float32)
    scores = Scores(confidence, np.array([0, 1, 2, 3, 4, 5], np.int32))
    items = np.array([0, 1, 2, 3, 4])  # item 5 (not a candidate) is never chosen
    ties = np.array([5, 4, 3, 2, 1, 0])  # each item's rank in the run's random tie order
    indices, labels = scores.pseudo_labels(items, 0.6, ties)
    np.testing.assert_array_equal(indices, [1, 3, 4])
    np.testing.assert_array_equal(labels, [1, 3, 4])
    # One item of two tied at the top: the tie order decides, not the item's position, so
    # neither end of a list (U before T, say) is favoured.
    indices, _ = scores.pseudo_labels(items, 0.2, ties)
    np.testing.assert_array_equal(indices, [3])
    indices, _ = scores.pseudo_labels(items[::-1], 0.2, ties)
    np.testing.assert_array_equal(indices, [3])
    indices, _ = scores.pseudo_labels(items, 0.2, np.arange(6))
    np.testing.assert_array_equal(indices, [1])
    with pytest.raises(ValueError, match="fraction"):
        scores.pseudo_labels(items, 1.5, ties)
