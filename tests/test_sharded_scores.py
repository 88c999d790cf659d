"""Decisions from scores split over P shards equal the same decisions from the whole pool's
scores, ties included: the shards are simulated in one process, as lists, or as threads
exchanging through a barrier."""

import threading

import jax
import numpy as np
import pytest

from mcal_jax import parallel, profile, scoring
from mcal_jax import pool as pool_lib
from mcal_jax import sharded_scores as S
from mcal_jax import train as train_lib
from mcal_jax.data import Dataset
from mcal_jax.scores import Scores, error_profile


class ThreadExchange:
    """`sharded_scores.Exchange` between ``processes`` threads, one a shard."""

    def __init__(self, processes):
        self.slots = [None] * processes
        self.barrier = threading.Barrier(processes)

    def member(self, process):
        exchange = self

        class Member:
            def sum(self, values):
                return np.sum(exchange.all(process, np.asarray(values)), axis=0)

            def gather(self, values):
                return exchange.all(process, np.asarray(values))

        return Member()

    def all(self, process, values):
        self.slots[process] = values
        self.barrier.wait()
        everyone = list(self.slots)
        self.barrier.wait()  # nobody writes the next values before all have read these
        return everyone


def _on_shards(scores, processes, call):
    """``call(shard)`` on each of ``processes`` shards of ``scores``, in threads; the results."""
    exchange = ThreadExchange(processes)
    n = len(scores.confidence)
    results = [None] * processes
    errors = []

    def work(p):
        start, stop = S.shard_range(n, p, processes)
        shard = S.ShardScores(
            start,
            scores.confidence[start:stop],
            scores.predicted[start:stop],
            n,
            exchange.member(p),
        )
        try:
            results[p] = call(shard)
        except BaseException as error:  # raised in the test below
            errors.append(error)
            exchange.barrier.abort()

    threads = [threading.Thread(target=work, args=(p,)) for p in range(processes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _tied_scores(n, seed):
    """Scores on a grid of 7 confidences (many ties), with −0.0 among them."""
    rng = np.random.default_rng(seed)
    confidence = (rng.integers(0, 7, n) / 6).astype(np.float32)
    confidence[rng.random(n) < 0.05] = np.float32(-0.0)
    predicted = rng.integers(0, 5, n).astype(np.int32)
    tie_order = np.empty(n, np.int64)
    tie_order[rng.permutation(n)] = np.arange(n)
    return Scores(confidence, predicted), tie_order


def test_shard_ranges_tile_the_pool():
    ranges = [S.shard_range(10, p, 3) for p in range(3)]
    assert ranges == [(0, 3), (3, 6), (6, 10)]
    with pytest.raises(ValueError, match="process 3 is not one of 3 processes"):
        S.shard_range(10, 3, 3)


def test_keys_order_confidences_and_ties_as_lexsort():
    values = np.array([0.5, -0.0, 0.0, -1.5, np.inf, -np.inf, 1e-38, -1e-38, 0.5], np.float32)
    keys = S.confidence_keys(values)
    assert keys[1] == keys[2]  # −0 and +0 are one value
    for i in range(len(values)):
        for j in range(len(values)):
            assert (keys[i] < keys[j]) == (values[i] < values[j])
    np.testing.assert_array_equal(S.key_confidence(keys), values + np.float32(0.0))
    rank = np.arange(len(values))[::-1].copy()
    np.testing.assert_array_equal(
        np.argsort(S.rank_keys(values, rank)), np.lexsort((rank, values + np.float32(0.0)))
    )


@pytest.mark.parametrize("processes", [1, 2, 3, 5])
def test_kth_smallest_over_shards_equals_the_sorted_pool(processes):
    rng = np.random.default_rng(processes)
    keys = S.confidence_keys((rng.integers(0, 9, 101) / 8).astype(np.float32))
    shards = [S.count_below(np.sort(keys[a:b])) for a, b in
              (S.shard_range(101, p, processes) for p in range(processes))]  # fmt: skip

    def count(values):
        return sum(shard(values) for shard in shards)

    ranks = np.array([1, 2, 17, 50, 51, 100, 101])
    found = S.kth_smallest(count, ranks, S.CONFIDENCE_BITS)
    np.testing.assert_array_equal(found, np.sort(keys)[ranks - 1])


@pytest.mark.parametrize("processes", [2, 3])
def test_merged_candidates_are_the_least_confident(processes):
    scores, tie_order = _tied_scores(200, processes)
    candidates = np.sort(np.random.default_rng(0).choice(200, 150, replace=False))
    parts = []
    for p in range(processes):
        a, b = S.shard_range(200, p, processes)
        mine = candidates[(candidates >= a) & (candidates < b)]
        keys = S.rank_keys(scores.confidence[mine], tie_order[mine])
        parts.append(S.Candidates.smallest(keys, mine, 30))
    np.testing.assert_array_equal(
        S.merge_smallest(parts, 30), scores.least_confident(candidates, 30, tie_order)
    )


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_shards_decide_as_the_whole_pool(processes):
    n = 301
    scores, tie_order = _tied_scores(n, 10 + processes)
    rng = np.random.default_rng(processes)
    test = np.sort(rng.choice(n, 40, replace=False))
    test_labels = rng.integers(0, 5, 40).astype(np.int32)
    rest = np.setdiff1d(np.arange(n), test)
    unlabeled = np.sort(rng.choice(rest, 200, replace=False))
    candidates = np.sort(np.concatenate([unlabeled, test]))

    def decide(shard):
        return (
            shard.least_confident(candidates, 25, tie_order),
            error_profile(shard, unlabeled, test, test_labels),
            shard.pseudo_labels(candidates, 0.4, tie_order),
            shard.scores_of(test[::-1]),
        )

    expected_profile = profile.error_profile(
        scores.confidence[unlabeled],
        scores.confidence[test],
        scores.predicted[test] == test_labels,
    )
    expected_pseudo = scores.pseudo_labels(candidates, 0.4, tie_order)
    for chosen, got_profile, pseudo, (confidence, predicted) in _on_shards(
        scores, processes, decide
    ):
        np.testing.assert_array_equal(chosen, scores.least_confident(candidates, 25, tie_order))
        for field in ("thresholds", "test_errors", "test_counts", "pool_counts"):
            np.testing.assert_array_equal(
                getattr(got_profile, field), getattr(expected_profile, field), err_msg=field
            )
        np.testing.assert_array_equal(pseudo[0], expected_pseudo[0])
        np.testing.assert_array_equal(pseudo[1], expected_pseudo[1])
        assert len(pseudo[0]) == int(0.4 * len(candidates))
        np.testing.assert_array_equal(confidence, scores.confidence[test[::-1]])
        np.testing.assert_array_equal(predicted, scores.predicted[test[::-1]])


@pytest.mark.parametrize("constraint", ["machine_subset", "overall"])
def test_shards_certify_and_machine_label_as_the_whole_pool(constraint):
    n = 2000
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 5, n).astype(np.int32)
    confidence = (rng.integers(0, 40, n) / 39).astype(np.float32)  # ties
    right = rng.random(n) < 0.5 + 0.5 * confidence  # the confident are mostly right
    predicted = np.where(right, truth, (truth + 1) % 5).astype(np.int32)
    scores = Scores(confidence, predicted)
    test = np.sort(rng.choice(n, 600, replace=False))
    unlabeled = np.setdiff1d(np.arange(n), test)
    settings = dict(epsilon=0.1, constraint=constraint, num_items=n, confidence=0.95)
    want = profile.certify(
        confidence[unlabeled], confidence[test], predicted[test] == truth[test], **settings
    )
    assert want.num_machine > 0  # a threshold that machine-labels, so the test means it
    machine = unlabeled[confidence[unlabeled] >= want.threshold]

    def decide(shard):
        thetas = profile.CERTIFY_THETAS
        found = error_profile(shard, unlabeled, test, truth[test], thetas)
        choice = profile.choose_machine_threshold(found, **settings)
        return choice, shard.above(unlabeled, choice.threshold), shard.all_finite(unlabeled)

    results = _on_shards(scores, 3, decide)
    for choice, above, finite in results:
        assert choice == want
        assert finite
        np.testing.assert_array_equal(above, machine)  # every process knows S


def test_a_non_finite_confidence_on_one_shard_is_seen_by_every_shard():
    scores, _ = _tied_scores(90, 1)
    scores.confidence[70] = np.nan  # in the last of three shards
    everywhere = _on_shards(scores, 3, lambda shard: shard.all_finite(np.arange(90)))
    assert everywhere == [False, False, False]
    elsewhere = _on_shards(scores, 3, lambda shard: shard.all_finite(np.arange(60)))
    assert elsewhere == [True, True, True]


def test_shards_take_another_scoring_of_some_items_as_the_whole_pool_does():
    scores, _ = _tied_scores(90, 2)
    other, _ = _tied_scores(90, 3)
    items = np.array([0, 5, 29, 30, 31, 64, 89])
    want = scores.with_scores_of(items, other)
    np.testing.assert_array_equal(want.confidence[items], other.confidence[items])
    rest = np.setdiff1d(np.arange(90), items)
    np.testing.assert_array_equal(want.predicted[rest], scores.predicted[rest])
    assert not np.array_equal(want.predicted, scores.predicted)  # the items did change

    def replaced(shard):
        exchange = shard.exchange
        start, stop = shard.start, shard.stop
        mine = S.ShardScores(
            start, other.confidence[start:stop], other.predicted[start:stop], 90, exchange
        )
        return shard.with_scores_of(items, mine).whole()

    for confidence, predicted in _on_shards(scores, 3, replaced):
        np.testing.assert_array_equal(confidence, want.confidence)
        np.testing.assert_array_equal(predicted, want.predicted)
    with pytest.raises(ValueError, match=r"shard \[0, 30\) is not this process's \[30, 60\)"):
        _on_shards(scores, 3, lambda shard: shard.with_scores_of(items, _first_third(other)))


def _first_third(scores):
    return S.ShardScores(0, scores.confidence[:30], scores.predicted[:30], 90, None)


def test_empty_pool_profile_matches():
    scores, _ = _tied_scores(12, 0)
    test = np.arange(4)
    labels = np.zeros(4, np.int32)
    (got,) = _on_shards(
        scores, 1, lambda shard: error_profile(shard, np.zeros(0, np.int64), test, labels)
    )
    want = profile.error_profile(np.zeros(0), scores.confidence[test], scores.predicted[test] == 0)
    np.testing.assert_array_equal(got.thresholds, want.thresholds)
    np.testing.assert_array_equal(got.test_counts, want.test_counts)


def test_shard_rows_give_each_process_its_own_items_on_its_own_devices():
    ranges = [(0, 10), (10, 25)]
    owners = np.array([1, 0, 1, 1])  # process 1 holds three devices, not contiguous
    indices = np.array([3, 24, 12, 0, 7, 11, 13, 14, 15, 16, 17, 18, 19, 20])
    rows, items = S.shard_rows(indices, ranges, owners, per_device=2)
    np.testing.assert_array_equal(items[0], [3, 0, 7])
    np.testing.assert_array_equal(items[1], [24, 12, 11, 13, 14, 15, 16, 17, 18, 19, 20])
    # Process 1 takes 6 items a batch: 11 items need 2 batches; process 0 pads to 2 too.
    assert rows.shape == (2, 8)
    blocks = rows.reshape(2, 4, 2)
    np.testing.assert_array_equal(blocks[:, 1].ravel(), [3, 0, 7, 3])
    np.testing.assert_array_equal(
        blocks[:, owners == 1].reshape(-1), [24, 12, 11, 13, 14, 15, 16, 17, 18, 19, 20, 24]
    )
    with pytest.raises(ValueError, match="process 1 holds none of the mesh's 2 devices"):
        S.shard_rows(indices, ranges, np.array([0, 0]), per_device=2)


def test_a_shard_scores_as_the_whole_pool_does():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 255, (150, 28, 28, 1)).astype(np.uint8)
    data = Dataset(images=images, labels=np.zeros(150, np.int32), num_classes=4, name="toy")
    pool = pool_lib.host_pool(data, parallel.make_mesh(8))
    trainer = train_lib.Trainer("tiny", pool, train_lib.TrainConfig(epochs=1, batch_size=32))
    state = jax.device_get(trainer.init(jax.random.key(0)))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    scorer = scoring.Scorer("tiny", pool, batch_size=32)
    indices = np.arange(149, 3, -2)  # unsorted, 3 batches of 32, the last padded
    whole = scorer.score(variables, indices)
    shard = scorer.score_shard(variables, indices)
    assert (shard.start, shard.stop, shard.num_items) == (0, 150, 150)
    np.testing.assert_allclose(shard.confidence, whole.confidence, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(shard.predicted, whole.predicted)
    assert np.all(shard.predicted[indices] >= 0)
