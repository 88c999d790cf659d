"""Pool scoring: equals the model's own forward, compiles once, metrics mean what they say."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcal_jax import learner, parallel, scoring
from mcal_jax import pool as pool_lib
from mcal_jax import train as train_lib
from mcal_jax.data import Dataset


def _pool(num_devices=8, n=300):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, n).astype(np.int32)
    images = rng.integers(0, 100, (n, 28, 28, 1)) + labels[:, None, None, None] * 10
    data = Dataset(images=images.astype(np.uint8), labels=labels, num_classes=10, name="toy")
    return pool_lib.upload(data, parallel.make_mesh(num_devices))


def _variables(pool, seed):
    trainer = train_lib.Trainer("tiny", pool, train_lib.TrainConfig(epochs=1, batch_size=64))
    state = jax.device_get(trainer.init(jax.random.key(seed)))
    return {"params": state.params, "batch_stats": state.batch_stats}


@pytest.mark.parametrize("metric", ["margin", "entropy", "least_confidence"])
def test_sharded_padded_scoring_equals_direct_forward(metric):
    pool = _pool()
    variables = _variables(pool, 0)
    scorer = scoring.Scorer("tiny", pool, metric=metric, batch_size=64)
    indices = np.arange(7, 290, 2)  # 142 items: 3 batches of 64, the last one padded
    scores = scorer.score(variables, indices)
    x = pool_lib.normalize(np.asarray(pool.images)[indices], pool.mean, pool.std)
    logits = scorer.model.apply(variables, x, train=False)
    expected, predicted = scoring.confidence_from_logits(logits, metric)
    np.testing.assert_allclose(scores.confidence[indices], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scores.predicted[indices], predicted)
    others = np.setdiff1d(np.arange(len(pool)), indices)
    assert np.all(scores.predicted[others] == -1) and np.all(scores.confidence[others] == 0)


def test_an_ensemble_with_mirrors_scores_its_mean_softmax():
    pool = _pool()
    members = [_variables(pool, 0), _variables(pool, 1)]
    indices = np.arange(5, 250, 3)
    scorer = scoring.Scorer("tiny", pool, metric="margin", batch_size=64, test_time_flip=True)
    scores = scorer.score(members, indices)
    x = pool_lib.normalize(np.asarray(pool.images)[indices], pool.mean, pool.std)
    views = (x, x[:, :, ::-1, :])
    probs = np.mean(
        [
            jax.nn.softmax(scorer.model.apply(v, view, train=False))
            for v in members
            for view in views
        ],
        axis=0,
    )
    expected, predicted = scoring.confidence_from_logits(jnp.log(probs), "margin")
    np.testing.assert_allclose(scores.confidence[indices], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scores.predicted[indices], predicted)
    single = scoring.Scorer("tiny", pool, metric="margin", batch_size=64).score(members[0], indices)
    assert np.abs(single.confidence[indices] - expected).max() > 1e-3  # averaging matters


def test_shifted_views_move_the_image_and_fill_with_black():
    image = np.arange(1, 13, dtype=np.uint8).reshape(1, 3, 4, 1)
    down_left = np.asarray(scoring.shifted(jnp.asarray(image), (1, -1)))[0, :, :, 0]
    np.testing.assert_array_equal(down_left, [[0, 0, 0, 0], [2, 3, 4, 0], [6, 7, 8, 0]])
    assert scoring.view_offsets(0) == ((0, 0),)
    assert scoring.view_offsets(2) == ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2))


def test_shifted_views_score_the_mean_softmax_of_ten_views():
    pool = _pool()
    variables = _variables(pool, 0)
    indices = np.arange(3, 200, 5)
    scorer = scoring.Scorer(
        "tiny", pool, metric="margin", batch_size=64, test_time_flip=True, test_time_shift=1
    )
    assert scorer.views == 10
    scores = scorer.score(variables, indices)
    raw = np.asarray(pool.images)[indices]
    padded = np.pad(raw, ((0, 0), (1, 1), (1, 1), (0, 0)))
    moved = [padded[:, 1 - dy : 29 - dy, 1 - dx : 29 - dx] for dy, dx in scorer.offsets]
    views = [pool_lib.normalize(m, pool.mean, pool.std) for m in moved]
    views += [v[:, :, ::-1, :] for v in views]
    probs = np.mean(
        [jax.nn.softmax(scorer.model.apply(variables, v, train=False)) for v in views], axis=0
    )
    expected, predicted = scoring.confidence_from_logits(jnp.log(probs), "margin")
    np.testing.assert_allclose(scores.confidence[indices], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scores.predicted[indices], predicted)
    flips = scoring.Scorer("tiny", pool, metric="margin", batch_size=64, test_time_flip=True)
    assert np.abs(flips.score(variables, indices).confidence[indices] - expected).max() > 1e-3
    with pytest.raises(ValueError, match="test_time_shift=28"):
        scoring.Scorer("tiny", pool, test_time_shift=28)


def test_views_go_only_to_the_items_the_image_alone_leaves_below_the_cut():
    pool = _pool()
    members = (_variables(pool, 0),)
    items = np.arange(10, 290, 3)
    alone = scoring.Scorer("tiny", pool, batch_size=64).score(members, items)
    views = scoring.Scorer("tiny", pool, batch_size=64, test_time_flip=True, test_time_shift=1)
    every = views.score(members, items)
    cut = float(np.median(alone.confidence[items]))
    recipe = train_lib.TrainConfig(test_time_flip=True, test_time_shift=1)
    flax = learner.FlaxLearner(pool, score_batch_size=64)
    scores, passes = flax._score("tiny", members, items, recipe, seed=0)  # every view
    np.testing.assert_array_equal(scores.confidence, every.confidence)
    assert passes == 10 * len(items)
    cascade = dataclasses.replace(recipe, test_time_views_below=cut)
    scores, passes = flax._score("tiny", members, items, cascade, seed=0)
    low = alone.confidence[items] < cut
    assert 0 < low.sum() < len(items)
    want = np.where(low, every.confidence[items], alone.confidence[items])
    np.testing.assert_allclose(scores.confidence[items], want, rtol=1e-6, atol=1e-7)
    labels = np.where(low, every.predicted[items], alone.predicted[items])
    np.testing.assert_array_equal(scores.predicted[items], labels)
    assert passes == len(items) + 10 * low.sum()  # one pass each, then ten for the low
    with pytest.raises(ValueError, match="train.test_time_views_below=0"):
        train_lib.TrainConfig(test_time_views_below=0)


def test_scoring_after_another_round_does_not_retrace():
    pool = _pool()
    scorer = scoring.get_scorer("tiny", pool, "margin", 64)
    scorer.score(_variables(pool, 0), np.arange(200))
    scorer.score(_variables(pool, 1), np.arange(50, 120))  # new weights, another pool size
    assert scorer._score_batch._cache_size() == 1


def test_metric_values_on_known_logits():
    probs = jnp.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    logits = jnp.log(probs)
    margin, predicted = scoring.confidence_from_logits(logits, "margin")
    np.testing.assert_allclose(margin, [0.5, 0.0], atol=1e-6)
    np.testing.assert_array_equal(predicted, [0, 0])
    entropy, _ = scoring.confidence_from_logits(logits, "entropy")
    h = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    np.testing.assert_allclose(entropy, [1 - h / np.log(3), 0.0], atol=1e-6)
    top, _ = scoring.confidence_from_logits(logits, "least_confidence")
    np.testing.assert_allclose(top, [0.7, 1 / 3], atol=1e-6)
    with pytest.raises(ValueError, match="unknown metric 'bald'"):
        scoring.confidence_from_logits(logits, "bald")


def test_random_metric_is_per_item_and_independent_of_batching():
    pool = _pool()
    variables = _variables(pool, 0)
    indices = np.arange(0, 300, 3)
    a = scoring.Scorer("tiny", pool, metric="random", batch_size=64).score(variables, indices, 5)
    b = scoring.Scorer("tiny", _pool(num_devices=1), metric="random", batch_size=32).score(
        variables, indices, 5
    )
    np.testing.assert_array_equal(a.confidence, b.confidence)
    assert 0.3 < a.confidence[indices].mean() < 0.7
    assert len(np.unique(a.confidence[indices])) == len(indices)
