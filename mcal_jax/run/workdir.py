"""The files of a run's workdir (README, "What a run writes"), read and written durably.

One run at a time: `Workdir.locked` holds the workdir's lock (`mcal_jax.run.lock`) for the
whole run and refuses a second process before it reads anything.

Only process 0 of a multi-host job writes (the workdir is on a shared filesystem); the
others read what is there at start and keep the rest in memory. Orbax checkpoints are the
exception: all processes save them together, as orbax requires.

``config.json`` and ``dataset.json`` (a fingerprint of the pool) are written once, after
preparation succeeded, and a rerun must match both: a workdir is never resumed with other
settings or on other data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from mcal_jax import files, host_images, models, parallel
from mcal_jax.data import Dataset
from mcal_jax.ledger import Ledger
from mcal_jax.ledger_records import PURPOSES
from mcal_jax.profile import THETAS
from mcal_jax.run import integrity
from mcal_jax.run.lock import Holder, WorkdirBusyError, WorkdirLock
from mcal_jax.run.state import (
    TEST_PURCHASE_KEY,
    FinalLabeling,
    RoundRecord,
    train_move_key,
    train_purchase_key,
)
from mcal_jax.scores import PoolScores, Scores
from mcal_jax.sharded_scores import ProcessExchange, ShardScores
from mcal_jax.summary import Comparison, Summary, read_summary

_HASH_CHUNK_BYTES = 64 << 20  # the images hashed at a time


def dataset_fingerprint(dataset: Dataset) -> dict[str, Any]:
    """What identifies a pool: its size, image shape, classes, a hash of its images and,
    for a folder, of its files' paths (which file is which item)."""
    fingerprint = {
        "name": dataset.name,
        "num_items": len(dataset),
        "image_shape": list(dataset.image_shape),
        "num_classes": dataset.num_classes,
        "images_sha256": images_sha256(dataset.images),
    }
    if dataset.paths:  # people answer by index: the index of each file must not change
        fingerprint["paths_sha256"] = hashlib.sha256("\n".join(dataset.paths).encode()).hexdigest()
    return fingerprint


def images_sha256(images: np.ndarray) -> str:
    """SHA-256 of the images' bytes in C order, read ``_HASH_CHUNK_BYTES`` at a time: the
    digest of the whole array at once, without a copy of it (a memory-mapped pool is read
    from its file chunk by chunk, each chunk's pages released after it)."""
    digest = hashlib.sha256()
    item_bytes = images.itemsize * int(np.prod(images.shape[1:]))
    step = max(1, _HASH_CHUNK_BYTES // max(1, item_bytes))
    for chunk in host_images.chunks(images, step):
        digest.update(np.ascontiguousarray(chunk).data)
    return digest.hexdigest()


class Workdir:
    """One run's folder; ``writer=False`` only reads it (default: process 0 writes).

    A run holds the workdir's lock (`locked`) from before it reads anything until it
    ends, so that no second process reads or buys in the same workdir meanwhile. In a
    multi-host job the writer, process 0, holds it for the whole job; the other processes
    take no lock of their own (they write nothing), but wait for process 0 to hold it
    before they read anything, and when another job holds it they all refuse together
    with process 0, naming the same holder.
    """

    def __init__(self, path: str | os.PathLike, writer: bool | None = None):
        self.path = os.fspath(path)
        self.writer = parallel.is_main_process() if writer is None else writer

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Holds the workdir's lock for the block (see the class); `lock.WorkdirBusyError`
        naming the workdir and the holder's pid when another process holds it."""
        lock = WorkdirLock(self.path) if self.writer else None
        busy = None
        if lock is not None:
            try:
                lock.acquire()
            except WorkdirBusyError as error:
                busy = error
        # Every process learns process 0's outcome (0: it holds the lock; -1: held by a
        # process whose pid is not written yet; else the holder's pid).
        pid = parallel.main_process_value(0 if busy is None else busy.holder.pid or -1)
        if busy is not None:
            raise busy
        if pid:
            raise WorkdirBusyError(self.path, Holder(pid if pid > 0 else None))
        try:
            yield
        finally:
            if lock is not None:
                lock.release()

    # ------------------------------------------------------------------------- identity

    def claim(self, config: ml_collections.ConfigDict, fingerprint: dict[str, Any]) -> None:
        """Checks that this workdir is new or was started with ``config`` on the same data,
        then records both (once). ValueError naming the difference otherwise."""
        wanted = json.loads(config.to_json())
        earlier = files.read_json(self.file("config.json"))
        if isinstance(earlier, dict) and "test_fraction" in earlier.get("mcal", {}):
            raise ValueError(
                f"{self.file('config.json')} was written by an earlier version of mcal_jax, "
                "whose one test set both steered the rounds and certified the labels; this "
                "version certifies on a test set the rounds never read (docs/algorithm.md, "
                "step 10) and cannot resume that run: finish it with the version that "
                "started it, or use a new --workdir"
            )
        for name, value, what in (
            ("config.json", wanted, "a different config"),
            ("dataset.json", fingerprint, "a different dataset"),
        ):
            saved = files.read_json(self.file(name))
            if name == "config.json" and isinstance(saved, dict):
                saved, value = _decisive(saved), _decisive(value)
            if saved is not None and saved != value:
                changed = _differences(saved, value)
                raise ValueError(
                    f"{self.file(name)} holds {what} ({changed}): resume with the same "
                    "settings and data, or use a new --workdir"
                )
        if self.writer:
            os.makedirs(self.path, exist_ok=True)
            files.atomic_write_json(self.file("config.json"), wanted)
            files.atomic_write_json(self.file("dataset.json"), fingerprint)

    def open_ledger(self) -> Ledger:
        return Ledger(self.file("ledger.jsonl"), writer=self.writer)

    def find_ledger(self) -> Ledger | None:
        """The ledger opened as `open_ledger` opens it, or None when there is no ledger
        file (it is not created)."""
        return self.open_ledger() if os.path.exists(self.file("ledger.jsonl")) else None

    def on_disk(self, ledger: Ledger | None) -> integrity.OnDisk:
        """What the workdir holds, for `integrity.check`: ``ledger`` is `find_ledger`'s."""
        batches: list[int] = []
        while ledger is not None:
            keys = [key(len(batches) + 1) for key in (train_purchase_key, train_move_key)]
            if not any(ledger.has(key) for key in keys):
                break
            batches.append(sum(ledger.num_items(key) for key in keys if ledger.has(key)))
        try:
            summary = read_summary(self.file("summary.json"))
        except ValueError:  # not a summary of this version: finish writes it again
            summary = None
        scores = self.file("scores")
        names = os.listdir(scores) if os.path.isdir(scores) else []
        # A stage's scores: {stage}.npz, or {stage}.shard{p}of{P}.npz a process.
        stages = {name.split(".")[0]: name for name in sorted(names) if name.endswith(".npz")}
        final_scores = [os.path.join("scores", stages["final"])] if "final" in stages else []
        after = ("final.json", "baselines.json", *final_scores, "summary.json")
        return integrity.OnDisk(
            folder=self.path,
            ledger_found=ledger is not None,
            test_bought=ledger is not None and ledger.has(TEST_PURCHASE_KEY),
            batches=tuple(batches),
            bought={p: len(ledger.bought(p)[0]) for p in PURPOSES} if ledger is not None else {},
            rounds_found=os.path.exists(self.file("rounds.jsonl")),
            rounds=tuple(self.read_rounds()),
            round_scores=any(stage != "final" for stage in stages),
            after_rounds=tuple(name for name in after if os.path.exists(self.file(name))),
            summary_counts=(
                None if summary is None else {p: getattr(summary.counts, p) for p in PURPOSES}
            ),
        )

    # ------------------------------------------------------------------------- rounds

    def read_rounds(self) -> list[RoundRecord]:
        """The finished rounds, from ``rounds.jsonl``; a line torn by a crash is dropped
        (and cut from the file), so that round is run again."""
        path = self.file("rounds.jsonl")
        lines = files.read_json_lines(path, repair=self.writer)
        try:
            records = [RoundRecord.from_json(line) for line in lines]
        except (KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a round record of this version ({error})") from None
        for number, record in enumerate(records, start=1):
            if record.round != number:
                raise ValueError(f"{path}, line {number}: holds round {record.round}")
        return records

    def append_round(self, record: RoundRecord) -> None:
        """Records a finished round durably: the point from which a rerun goes on."""
        if self.writer:
            files.append_json_line(self.file("rounds.jsonl"), record.to_json())

    def write_metrics(self, records: Sequence[RoundRecord]) -> None:
        """``metrics.jsonl``: one flat line per round (`RoundRecord.metrics`), rewritten
        whole, so that it always matches ``rounds.jsonl``."""
        if self.writer:
            lines = [json.dumps(r.metrics(THETAS), default=float) + "\n" for r in records]
            files.atomic_write_bytes(self.file("metrics.jsonl"), "".join(lines).encode())

    def save_scores(self, stage: str, scores: PoolScores) -> None:
        """The lead model's pool scores of a stage (``round3``, ``final``) in
        ``scores/{stage}.npz``; split a shard per process (`ShardScores`), one file a
        process, ``scores/{stage}.shard{p}of{P}.npz``, each written by its own process, and
        every process waits until all are written (a recorded round's scores are on disk)."""
        if isinstance(scores, ShardScores):
            files.atomic_write_npz(
                self.file("scores", _shard_file(stage)),
                start=np.array(scores.start, np.int64),
                num_items=np.array(scores.num_items, np.int64),
                confidence=scores.confidence,
                predicted=scores.predicted,
            )
            parallel.sync(f"scores of {stage} saved")
        elif self.writer:
            assert isinstance(scores, Scores)
            files.atomic_write_npz(
                self.file("scores", f"{stage}.npz"),
                confidence=scores.confidence,
                predicted=scores.predicted,
            )

    def find_scores(self, stage: str) -> PoolScores | None:
        """The saved scores of a stage, or None when there are none (or they are torn): the
        whole pool's, or this process's shard when every process finds its own (a
        collective in a multi-host job)."""
        saved = files.read_npz(self.file("scores", f"{stage}.npz"))
        if saved is not None:
            return Scores(saved["confidence"], saved["predicted"])
        if jax.process_count() == 1:
            return None
        shard = files.read_npz(self.file("scores", _shard_file(stage)))
        exchange = ProcessExchange()
        if int(exchange.sum(np.array([shard is not None]))[0]) < jax.process_count():
            return None  # some process lacks its shard: the stage is scored again
        assert shard is not None
        return ShardScores(
            int(shard["start"]),
            shard["confidence"],
            shard["predicted"],
            int(shard["num_items"]),
            exchange,
        )

    def load_scores(self, stage: str) -> PoolScores:
        scores = self.find_scores(stage)
        if scores is None:
            where = stage + ".npz" if jax.process_count() == 1 else _shard_file(stage)
            raise ValueError(
                f"{self.file('scores', where)} is missing or unreadable: the scores of "
                f"{stage} are needed to go on; restore the file or start a new --workdir"
            )
        return scores

    def save_checkpoint(self, stage: str, model: str, variables: models.PyTree) -> None:
        """A stage's trained variables, with orbax (``checkpoints/{stage}_{model}``)."""
        import orbax.checkpoint as ocp

        path = os.path.abspath(self.file("checkpoints", f"{stage}_{model}"))
        if os.path.exists(path):
            return  # written before a restart
        verbosity = logging.get_verbosity()
        logging.set_verbosity(logging.WARNING)  # orbax narrates every save at INFO
        try:
            with ocp.StandardCheckpointer() as checkpointer:
                checkpointer.save(path, variables)
        finally:
            logging.set_verbosity(verbosity)

    # ------------------------------------------------------------------------- the end

    def read_final(self) -> FinalLabeling | None:
        """The saved final decision, or None when there is none (or it cannot be read: it
        is then decided again, deterministically, from the same scores)."""
        try:
            value = files.read_json(self.file("final.json"))
            return None if value is None else FinalLabeling.from_json(value)
        except (ValueError, KeyError, TypeError):
            return None

    def write_final(self, final: FinalLabeling) -> None:
        if self.writer:
            files.atomic_write_json(self.file("final.json"), final.to_json())

    def read_baselines(self) -> Comparison | None:
        """The saved baselines (see :mod:`mcal_jax.run.baselines`), or None when there are
        none or they cannot be read (written by another version, or torn: they are
        simulations, run again at no price in labels)."""
        try:
            value = files.read_json(self.file("baselines.json"))
            return None if value is None else Comparison.from_json(value, "baselines.json")
        except ValueError:
            return None

    def write_baselines(self, comparison: Comparison) -> None:
        if self.writer:
            files.atomic_write_json(self.file("baselines.json"), comparison.to_json())

    def read_classes(self) -> tuple[str, ...] | None:
        """The class names learned from the people's first answers (``classes.json``), or
        None when they were not learned here (the config or the data names them)."""
        value = files.read_json(self.file("classes.json"))
        if value is None:
            return None
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ValueError(f"{self.file('classes.json')}: expected a list of class names")
        return tuple(value)

    def write_classes(self, classes: Sequence[str]) -> None:
        """Records the class names learned from the first answers, durably and once,
        before any label numbered by them is in the ledger."""
        if self.writer:
            files.atomic_write_json(self.file("classes.json"), list(classes))

    def write_labels(self, **arrays: np.ndarray) -> None:
        if self.writer:
            files.atomic_write_npz(self.file("labels.npz"), **arrays)

    def write_labels_csv(self, text: str) -> None:
        """``labels.csv``: the final labels for people (see `finish.labels_csv`)."""
        if self.writer:
            files.atomic_write_bytes(self.file("labels.csv"), text.encode("utf-8"))

    def write_summary(self, summary: Summary) -> None:
        if self.writer:
            files.atomic_write_json(self.file("summary.json"), summary.to_json())


# Config fields that say where the run's work happens, or whether it waits for people's
# answers, not what it decides: a run resumed with other values buys and labels as it would
# have (`tests/test_placement.py`).
PLACEMENT_FIELDS = (
    ("data", "placement"),
    ("data", "device_memory_gb"),
    ("labeling", "wait"),
    ("labeling", "poll_seconds"),
)


# Config fields added since runs were first written, with the value that does what runs
# did before them: a config.json written without one reads as having it.
ADDED_FIELDS = {
    ("train", "microbatch_size"): 0,
    ("labeling", "project"): "",
    ("labeling", "suggestions"): False,
}


def _decisive(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (as saved in config.json) less `PLACEMENT_FIELDS`, with `ADDED_FIELDS`."""
    kept = {section: dict(fields) if isinstance(fields, dict) else fields
            for section, fields in config.items()}  # fmt: skip
    for section, field in PLACEMENT_FIELDS:
        if isinstance(kept.get(section), dict):
            kept[section].pop(field, None)
    for (section, field), value in ADDED_FIELDS.items():
        if isinstance(kept.get(section), dict):
            kept[section].setdefault(field, value)
    return kept


def _differences(saved: Any, wanted: Any, prefix: str = "") -> str:
    """The first few fields that differ, e.g. ``mcal.epsilon: 0.05 → 0.1``."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        parts = []
        for key in sorted(set(saved) | set(wanted)):
            if saved.get(key) != wanted.get(key):
                parts.append(_differences(saved.get(key), wanted.get(key), f"{prefix}{key}."))
        return "; ".join(parts[:5])
    return f"{prefix.rstrip('.')}: {saved!r} → {wanted!r}"


def _shard_file(stage: str) -> str:
    """This process's file of a stage's scores split a shard per process."""
    return f"{stage}.shard{jax.process_index()}of{jax.process_count()}.npz"
