"""Scores split over the processes of a multi-host job, and the run's decisions from them.

Under ``jax.distributed`` a host-placed pool can be scored a shard per process: process p
of P scores only the items [p·N/P, (p+1)·N/P) (`shard_range`) and keeps their scores
(`ShardScores`). The decisions the run takes from the whole pool's scores are taken from
the shards exactly as from the whole, without gathering every item's score:

- the least confident ``count`` of a set of candidates (Algorithm 1, line 10): each shard
  takes its own ``count`` least confident, (key, index) pairs are gathered (P·count
  numbers) and merged (`merge_smallest`);
- the thresholds τ_θ of the error profile (quantiles of U's confidences) and the items of
  U at or above them: exact order statistics (`kth_smallest`), a descent over the bits of
  the confidences' order keys with one sum of per-shard counts per bit, every θ at once;
- the most confident fraction of a set (a semi-supervised round's pseudo-labels): the same
  descent over 64-bit (confidence, tie rank) keys, which are all distinct, so each shard
  keeps exactly the items the whole pool's sort would have kept;
- the scores of a few items (T_plan's, T_cert's): gathered;
- once, at step 10, the machine-labeled items and every item's score, for the outputs
  (process 0 writes them): gathered.

`ShardScores` is a `scores.PoolScores`, as the whole pool's `scores.Scores` is: the run
takes its decisions through the same methods from either.

Ties are broken as the single-process code breaks them: `rank_keys` orders items as
``np.lexsort((tie_order, confidence))`` does. The merges are pure functions of per-shard
values or of a function that sums per-shard counts, so one process can check them on P
simulated shards; the collectives between processes are the thin `Exchange`
(`ProcessExchange` under ``jax.distributed``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from jax.experimental import multihost_utils

from mcal_jax import profile as profile_lib

#: Bits of a confidence's order key (`confidence_keys`) and of a (confidence, tie rank) key.
CONFIDENCE_BITS = 32
RANK_BITS = 64

CountBelow = Callable[[np.ndarray], np.ndarray]


def shard_range(num_items: int, process: int, processes: int) -> tuple[int, int]:
    """[start, stop): the items process ``process`` of ``processes`` scores, a contiguous
    range; the ranges of all processes tile [0, ``num_items``)."""
    if not 0 <= process < processes:
        raise ValueError(f"shard_range: process {process} is not one of {processes} processes")
    return num_items * process // processes, num_items * (process + 1) // processes


# ----------------------------------------------------------------------------- order keys


def confidence_keys(confidence: np.ndarray) -> np.ndarray:
    """uint64 keys in the order of the float32 ``confidence`` values (−0 and +0 alike):
    a < b exactly when key(a) < key(b), and equal values have equal keys."""
    values = np.asarray(confidence, np.float32) + np.float32(0.0)  # −0.0 + 0.0 is +0.0
    bits = values.view(np.uint32).astype(np.uint64)
    negative = bits >= np.uint64(0x80000000)
    return np.where(negative, np.uint64(0xFFFFFFFF) - bits, bits + np.uint64(0x80000000))


def key_confidence(keys: np.ndarray) -> np.ndarray:
    """The float32 confidences of `confidence_keys`."""
    keys = np.asarray(keys, np.uint64)
    positive = keys >= np.uint64(0x80000000)
    bits = np.where(positive, keys - np.uint64(0x80000000), np.uint64(0xFFFFFFFF) - keys)
    return bits.astype(np.uint32).view(np.float32)


def rank_keys(confidence: np.ndarray, tie_rank: np.ndarray) -> np.ndarray:
    """uint64 keys ordering items by ``confidence``, then by ``tie_rank`` (each item's rank in
    the run's tie order, below 2³²): ascending keys are the order of
    ``np.lexsort((tie_rank, confidence))``. Distinct tie ranks give distinct keys."""
    ranks = np.asarray(tie_rank).astype(np.uint64)
    return (confidence_keys(confidence) << np.uint64(32)) | ranks


# ----------------------------------------------------------------------------- pure merges


@dataclasses.dataclass(frozen=True)
class Candidates:
    """A shard's best candidates for a global selection: its items with the smallest keys,
    ascending."""

    keys: np.ndarray  # uint64
    indices: np.ndarray  # int64 pool indices

    @classmethod
    def smallest(cls, keys: np.ndarray, indices: np.ndarray, count: int) -> Candidates:
        """The ``count`` items of ``indices`` with the smallest ``keys`` (all when fewer)."""
        order = np.argsort(keys, kind="stable")[:count]
        return cls(np.asarray(keys)[order], np.asarray(indices, np.int64)[order])


def merge_smallest(parts: Sequence[Candidates], count: int) -> np.ndarray:
    """The ``count`` items with the smallest keys over every shard, sorted by index: each
    shard's own ``count`` smallest hold the global ones."""
    keys = np.concatenate([p.keys for p in parts])
    indices = np.concatenate([p.indices for p in parts])
    return np.sort(indices[np.argsort(keys, kind="stable")[:count]])


def count_below(sorted_keys: np.ndarray) -> CountBelow:
    """One shard's count: how many of its keys (``sorted_keys``, ascending) lie below each
    of the values asked for."""

    def below(values: np.ndarray) -> np.ndarray:
        return np.searchsorted(sorted_keys, values, side="left").astype(np.int64)

    return below


def kth_smallest(count: CountBelow, ranks: np.ndarray, bits: int) -> np.ndarray:
    """The ``ranks``-th smallest keys (1-based; 1 ≤ k ≤ the number of keys) of a set known
    only through ``count(values)``, how many keys lie below each value: a descent over the
    ``bits`` bits of the keys, from the highest, one call of ``count`` per bit for every
    rank at once. Exact: the result v is the key with count(v) < k ≤ count(v + 1).

    ``count`` may sum over shards (one collective per bit), so every process makes the
    same ``bits`` calls whatever its shard holds."""
    ranks = np.asarray(ranks, np.int64)
    found = np.zeros(ranks.shape, np.uint64)
    for bit in reversed(range(bits)):
        trial = found | np.uint64(1 << bit)
        found = np.where(count(trial) < ranks, trial, found)
    return found


def pool_profile(
    count: CountBelow,
    num_pool: int,
    test_confidence: np.ndarray,
    test_correct: np.ndarray,
    thetas: np.ndarray = profile_lib.THETAS,
) -> profile_lib.ErrorProfile:
    """`profile.error_profile` of a pool U of ``num_pool`` items known only through
    ``count`` (how many of U's `confidence_keys` lie below each value, summed over the
    shards): the same thresholds and counts."""
    if num_pool == 0:
        return profile_lib.error_profile(
            np.zeros(0, np.float32), test_confidence, test_correct, thetas
        )
    wanted = profile_lib.threshold_ranks(thetas, num_pool)  # from the most confident
    keys = kth_smallest(count, num_pool - wanted + 1, CONFIDENCE_BITS)
    pool_counts = num_pool - count(keys)
    return profile_lib.profile_at(
        thetas, key_confidence(keys), pool_counts, test_confidence, test_correct
    )


# ----------------------------------------------------------------------------- collectives


class Exchange(Protocol):
    """The collectives between the shards; every process calls each in the same order."""

    def sum(self, values: np.ndarray) -> np.ndarray:
        """``values`` (the same shape on every process) summed over the processes."""
        ...

    def gather(self, values: np.ndarray) -> list[np.ndarray]:
        """Every process's 1-D ``values`` (any length), by process."""
        ...


class ProcessExchange:
    """`Exchange` over the processes of a ``jax.distributed`` job. Values travel as bytes:
    JAX without 64-bit types would narrow 64-bit keys and indices."""

    def sum(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, np.int64)
        rows = _all_bytes(values)
        return rows.view(np.int64).reshape(len(rows), *values.shape).sum(0)

    def gather(self, values: np.ndarray) -> list[np.ndarray]:
        values = np.asarray(values)
        lengths = _all_bytes(np.array([values.nbytes], np.int64)).view(np.int64).ravel()
        padded = np.zeros(max(int(lengths.max()), 1), np.uint8)
        padded[: values.nbytes] = np.ascontiguousarray(values).view(np.uint8).ravel()
        rows = _all_bytes(padded)
        return [row[: int(n)].view(values.dtype) for row, n in zip(rows, lengths, strict=True)]


def _all_bytes(values: np.ndarray) -> np.ndarray:
    """uint8 [processes, bytes]: every process's ``values`` (the same size everywhere)."""
    raw = np.ascontiguousarray(values).view(np.uint8).ravel()
    return np.asarray(multihost_utils.process_allgather(raw)).reshape(-1, raw.size)


# ----------------------------------------------------------------------------- a shard


@dataclasses.dataclass(frozen=True)
class ShardScores:
    """One process's scores: the items [``start``, ``start`` + len) of a pool of
    ``num_items``; entries it did not score are 0 / -1 (as in `scoring.Scores`). Every
    method is a collective: each process of ``exchange`` calls it with the same global
    arguments."""

    start: int
    confidence: np.ndarray  # float32 [stop - start]
    predicted: np.ndarray  # int32 [stop - start]
    num_items: int
    exchange: Exchange

    @property
    def stop(self) -> int:
        return self.start + len(self.confidence)

    def own(self, items: np.ndarray) -> np.ndarray:
        """The items of ``items`` this shard holds."""
        items = np.asarray(items, np.int64)
        return items[(items >= self.start) & (items < self.stop)]

    def least_confident(
        self, candidates: np.ndarray, count: int, tie_order: np.ndarray
    ) -> np.ndarray:
        """`measure.least_confident` over the shards: the ``count`` least confident
        ``candidates``, ties broken by ``tie_order``, sorted; the same on every process."""
        mine = self.own(candidates)
        keys = rank_keys(self.confidence[mine - self.start], tie_order[mine])
        local = Candidates.smallest(keys, mine, count)
        parts = [
            Candidates(k, i)
            for k, i in zip(
                self.exchange.gather(local.keys), self.exchange.gather(local.indices), strict=True
            )
        ]
        return merge_smallest(parts, count)

    def scores_of(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(confidence, predicted) of a few ``items`` (T's), in their order, on every
        process: each shard's part gathered."""
        items = np.asarray(items, np.int64)
        mine = self.own(items)
        held = np.concatenate(self.exchange.gather(mine))
        confidence = np.concatenate(self.exchange.gather(self.confidence[mine - self.start]))
        predicted = np.concatenate(self.exchange.gather(self.predicted[mine - self.start]))
        where = np.searchsorted(held, items, sorter=np.argsort(held))
        order = np.argsort(held)[where]
        return confidence[order], predicted[order]

    def profile(
        self,
        unlabeled: np.ndarray,
        test_confidence: np.ndarray,
        test_correct: np.ndarray,
        thetas: np.ndarray = profile_lib.THETAS,
    ) -> profile_lib.ErrorProfile:
        """`profile.error_profile` of U = ``unlabeled`` over the shards, for a test set
        given by its confidences and whether each was right."""
        mine = self.own(unlabeled)
        sorted_keys = np.sort(confidence_keys(self.confidence[mine - self.start]))
        local = count_below(sorted_keys)

        def count(values: np.ndarray) -> np.ndarray:
            return self.exchange.sum(local(values))

        return pool_profile(count, len(unlabeled), test_confidence, test_correct, thetas)

    def above(self, items: np.ndarray, threshold: float) -> np.ndarray:
        """The items of ``items`` with a confidence ≥ ``threshold`` (the ones step 10
        machine-labels), sorted, on every process: each shard's gathered."""
        mine = self.own(items)
        return np.sort(
            np.concatenate(
                self.exchange.gather(mine[self.confidence[mine - self.start] >= threshold])
            )
        )

    def whole(self) -> tuple[np.ndarray, np.ndarray]:
        """(confidence [N], predicted [N]) of the whole pool, gathered: only for the run's
        outputs, which name every item (never for a decision)."""
        confidence = np.concatenate(self.exchange.gather(self.confidence))
        predicted = np.concatenate(self.exchange.gather(self.predicted))
        return confidence, predicted

    def with_scores_of(self, items: np.ndarray, other: ShardScores) -> ShardScores:
        """These scores with those of ``items`` taken from ``other``, the same shard's
        (each process replaces its own items')."""
        if (other.start, other.stop) != (self.start, self.stop):
            raise ValueError(
                f"with_scores_of: shard [{other.start}, {other.stop}) is not this process's "
                f"[{self.start}, {self.stop})"
            )
        mine = self.own(items) - self.start
        confidence, predicted = self.confidence.copy(), self.predicted.copy()
        confidence[mine], predicted[mine] = other.confidence[mine], other.predicted[mine]
        return dataclasses.replace(self, confidence=confidence, predicted=predicted)

    def all_finite(self, items: np.ndarray) -> bool:
        """Whether every one of ``items`` has a finite confidence, on every shard."""
        mine = self.own(items)
        bad = np.sum(~np.isfinite(self.confidence[mine - self.start]))
        return int(self.exchange.sum(np.array([bad]))[0]) == 0

    def pseudo_labels(
        self, items: np.ndarray, fraction: float, tie_order: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`scoring.Scores.pseudo_labels` over the shards: (indices, predicted labels) of
        the ⌊``fraction`` · |items|⌋ most confident ``items``, ties broken by
        ``tie_order``, on every process (training reads them wherever they lie)."""
        if not 0 < fraction <= 1:
            raise ValueError(f"pseudo_labels: fraction={fraction} must lie in (0, 1]")
        take = int(fraction * len(items))
        mine = self.own(items)
        # Most confident first: the order of the negated confidences.
        keys = rank_keys(-self.confidence[mine - self.start], tie_order[mine])
        chosen = np.zeros(0, np.int64)
        if take:
            local = count_below(np.sort(keys))
            cutoff = kth_smallest(
                lambda values: self.exchange.sum(local(values)), np.array([take]), RANK_BITS
            )[0]
            chosen = np.sort(mine[keys <= cutoff])
        labels = self.predicted[chosen - self.start]
        indices = np.concatenate(self.exchange.gather(chosen))
        gathered = np.concatenate(self.exchange.gather(labels))
        order = np.argsort(indices)
        return indices[order], gathered[order]


def shard_rows(
    indices: np.ndarray,
    ranges: Sequence[tuple[int, int]],
    owners: np.ndarray,
    per_device: int,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The global batches [num_batches, D·``per_device``] that score ``indices`` a shard
    per process, and each process's items (those of ``indices`` in its range of
    ``ranges``, in their order). The device at mesh position d (of process ``owners[d]``)
    takes rows [d·per_device, (d+1)·per_device) of each batch, so process q's devices
    together take its items, ``per_device`` · (its devices) a batch, padded with copies of
    its first item (of its range's first, when it has none) to as many batches as the
    process with the most batches needs."""
    indices = np.asarray(indices, np.int64)
    owners = np.asarray(owners)
    items = [indices[(indices >= start) & (indices < stop)] for start, stop in ranges]
    widths = [per_device * int(np.sum(owners == q)) for q in range(len(ranges))]
    if not all(widths):
        raise ValueError(
            f"scoring a shard per process: process {widths.index(0)} holds none of the "
            f"mesh's {len(owners)} devices; every process needs one "
            "(config.num_devices=0 takes all)"
        )
    num_batches = max([1] + [-(-len(own) // w) for own, w in zip(items, widths, strict=True)])
    rows = np.zeros((num_batches, len(owners), per_device), np.int64)
    for q, (own, width) in enumerate(zip(items, widths, strict=True)):
        pad = own[0] if len(own) else min(ranges[q][0], ranges[-1][1] - 1)
        padded = np.full(num_batches * width, pad, np.int64)
        padded[: len(own)] = own
        rows[:, owners == q, :] = padded.reshape(num_batches, -1, per_device)
    return rows.reshape(num_batches, -1).astype(np.int32), items
