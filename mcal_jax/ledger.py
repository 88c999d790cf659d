"""The cost ledger: every dollar of an MCAL run, with its reason, written durably at once.

The total cost MCAL minimises is Eq. 1 of the paper, C = C_h · (|T| + |B| + |R|) + C_train
+ C_score. The ledger records each term as it is incurred: each purchase of human labels
(for T, B or the residual R) with the indices and labels bought, and each charge of device
time for training or scoring. It is also what makes a run resumable: a label that has
been paid for is on disk before `Ledger.buy` returns it, and a rerun that asks for the
same purchase (same key) gets the stored labels instead of paying again.

File format: JSON lines, one record per line (purchases, charges and moves, see
:mod:`mcal_jax.ledger_records`), appended with a single ``write`` and then ``fsync``-ed,
so a crash leaves at most the last line incomplete.

A crash can lose only what was being written: labels bought but not yet on disk are
bought again on the rerun. One process may write a ledger file at a time (a run holds
its workdir's lock, `mcal_jax.run.lock`); two `Ledger` objects on one file do not see
each other's appends.
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mcal_jax.files import fsync_directory
from mcal_jax.indices import as_int_array, shown
from mcal_jax.labelers import Labeler
from mcal_jax.ledger_records import CATEGORIES, PURPOSES, TOTALS, as_usd, dumps, validated


class LedgerCorruptError(ValueError):
    """A ledger file that cannot be read: the message names the file, the line and why."""


class Ledger:
    """Durable, append-only record of every purchase and every charge, in one JSON-lines file."""

    def __init__(self, path: str | os.PathLike, *, writer: bool = True):
        """Opens the ledger at `path`, creating it (and its directory) if it does not exist.

        In a multi-host job only process 0 is the `writer`; the other processes replay the
        file at start and then keep the same records in memory, since every process makes
        the same (deterministic) purchases.

        A last line without its newline is the trace of a crash during a write: if it is
        not a complete record it is dropped (the file is truncated) with a warning, since
        the purchase it held never returned its labels. Any other unreadable line raises
        `LedgerCorruptError` naming the file and line.
        """
        self.path = Path(path)
        self._records: list[dict] = []  # Purchases hold their indices and labels as arrays.
        self._keys: dict[str, int] = {}  # key -> position in _records
        self._bought = np.zeros(0, bool)  # _bought[i]: pool item i has been bought.
        self.writer = writer
        if self.path.exists():
            self._load()
        elif writer:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_directory(self.path.parent)

    # ----------------------------------------------------------------------------- reading

    def _load(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # The bytes after the last newline: empty unless a write was torn.
        for number, raw in enumerate(lines, start=1):
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise self._corrupt(number, f"not a JSON record ({e})") from None
            self._ingest(self._validated(record, number), number)
        if not tail:
            return
        number = len(lines) + 1
        try:
            record = json.loads(tail.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            warnings.warn(
                f"ledger {self.path}: line {number} is incomplete ({len(tail)} bytes, from a "
                "crash during a write); dropping it",
                stacklevel=3,
            )
            if not self.writer:
                return
            os.truncate(self.path, len(data) - len(tail))
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return
        # Complete but for its newline: keep the record, finish the line.
        self._ingest(self._validated(record, number), number)
        self._write(b"\n")

    def _corrupt(self, number: int, problem: str) -> LedgerCorruptError:
        return LedgerCorruptError(f"ledger {self.path}, line {number}: {problem}")

    def _validated(self, record: object, number: int) -> dict:
        """A record read from line `number`, with its lists turned into arrays."""
        try:
            return validated(record)
        except ValueError as e:
            raise self._corrupt(number, str(e)) from None

    def _ingest(self, record: dict, number: int) -> None:
        """Adds a validated record to the in-memory state (`number`: its line, for errors)."""
        key = record["key"]
        if key in self._keys:
            raise self._corrupt(number, f"key {key!r} repeats line {self._keys[key] + 1}")
        if record["kind"] == "purchase":
            indices = record["indices"]
            clash = self._already_bought(indices)
            if clash.size:
                raise self._corrupt(number, f"{key!r} buys again indices {shown(clash)}")
            if indices.size and indices.max() >= len(self._bought):
                grown = np.zeros(max(int(indices.max()) + 1, 2 * len(self._bought)), bool)
                grown[: len(self._bought)] = self._bought
                self._bought = grown
            self._bought[indices] = True
        if record["kind"] == "move":
            strays = np.setdiff1d(record["indices"], self.bought(record["source"])[0])
            if strays.size:
                raise self._corrupt(
                    number, f"move {key!r}: indices {shown(strays)} do not serve "
                    f"{record['source']!r}"
                )  # fmt: skip
        self._keys[key] = len(self._records)
        self._records.append(record)

    def _already_bought(self, indices: np.ndarray) -> np.ndarray:
        """The indices that were bought before, or that repeat within `indices` itself."""
        known = indices[indices < len(self._bought)]
        clash = known[self._bought[known]]
        ordered = np.sort(indices)
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        return np.unique(np.concatenate([clash, repeated]))

    # ----------------------------------------------------------------------------- writing

    def _write(self, line: bytes) -> None:
        """Appends `line` with one write and makes it durable before returning."""
        if not self.writer:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(line)
            while view:  # One write in practice; loop only in case the OS writes short.
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _append(self, record: dict) -> None:
        self._write(dumps(record).encode("utf-8") + b"\n")

    @staticmethod
    def _check_key(key: object) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError(f"ledger key {key!r}: must be a non-empty string")

    def buy(
        self, labeler: Labeler, indices: npt.ArrayLike, *, purpose: str, key: str
    ) -> np.ndarray:
        """Buys human labels for pool `indices` from `labeler`, or returns them if bought.

        `key` names the purchase (e.g. ``"round3/train"``): a rerun after a crash asks for
        the same key and gets the stored labels, without calling the labeler, provided it
        asks for the same indices and purpose (anything else raises). A new purchase is
        written and fsync-ed before its labels are returned. No item is ever bought twice:
        an index already bought under another key raises ValueError. The labeler is asked
        with ``label(indices, key=key)``; when it raises (`labelers.LabelsAwaited`: people
        have not answered yet), nothing is recorded.

        Returns:
          int32 labels, one per index, in the order of `indices`.
        """
        if purpose not in PURPOSES:
            raise ValueError(f"Ledger.buy purpose {purpose!r}: must be one of {PURPOSES}")
        self._check_key(key)
        indices = as_int_array(indices, f"Ledger.buy(key={key!r}) indices")
        if key in self._keys:
            record = self._records[self._keys[key]]
            if record["kind"] != "purchase":
                raise ValueError(f"ledger {self.path}: key {key!r} is a charge, not a purchase")
            if record["purpose"] != purpose or not np.array_equal(record["indices"], indices):
                raise ValueError(
                    f"ledger {self.path}: purchase {key!r} was recorded with "
                    f"{len(record['indices'])} indices for {record['purpose']!r}; now asked for "
                    f"{len(indices)} different indices or purpose {purpose!r}"
                )
            return record["labels"].copy()
        clash = self._already_bought(indices)
        if clash.size:
            owners = [
                r["key"]
                for r in self._records
                if r["kind"] == "purchase" and np.isin(r["indices"], clash).any()
            ]
            raise ValueError(
                f"ledger {self.path}: purchase {key!r} would buy {clash.size} labels twice: "
                f"indices {shown(clash)} (already bought under {owners or 'this purchase'})"
            )
        price = as_usd(labeler.usd_per_label)
        if price is None:
            raise ValueError(
                f"{type(labeler).__name__}.usd_per_label = {labeler.usd_per_label!r}: "
                "must be a finite number >= 0"
            )
        # A labeler still waiting for people raises LabelsAwaited here: nothing is recorded.
        labels = labeler.label(indices, key=key)
        labels = as_int_array(labels, f"labels from {type(labeler).__name__}")
        if len(labels) != len(indices):
            raise ValueError(
                f"{type(labeler).__name__}.label returned {len(labels)} labels for "
                f"{len(indices)} indices (purchase {key!r})"
            )
        record = {
            "kind": "purchase",
            "key": key,
            "purpose": purpose,
            "indices": indices,
            "labels": labels.astype(np.int32),
            "usd_per_label": price,
            "usd": price * len(indices),
        }
        self._append(record)
        self._ingest(record, len(self._records) + 1)
        return record["labels"].copy()

    def charge(self, *, category: str, usd: float, key: str, **details: object) -> None:
        """Records a device-time charge (training or scoring), once per key.

        A rerun repeats its charges: the same key with the same values is a no-op; the same
        key with different values raises, since one key cannot have cost two amounts.
        `details` (e.g. ``device_seconds``, ``images``, ``model``) must be JSON-serialisable.
        """
        if category not in CATEGORIES:
            raise ValueError(f"Ledger.charge category {category!r}: must be one of {CATEGORIES}")
        self._check_key(key)
        if as_usd(usd) is None:
            raise ValueError(f"Ledger.charge(key={key!r}) usd = {usd!r}: must be a finite >= 0")
        record = {"kind": "charge", "key": key, "category": category, "usd": as_usd(usd)}
        try:
            # Round-trip through JSON so the comparison with a reloaded record is exact.
            record = json.loads(dumps({**record, "details": details}))
        except (TypeError, ValueError) as e:
            raise ValueError(f"Ledger.charge(key={key!r}) details {details!r}: {e}") from None
        if key in self._keys:
            old = self._records[self._keys[key]]
            if old == record:
                return
            raise ValueError(
                f"ledger {self.path}: key {key!r} is already recorded as {self._summary(old)}; "
                f"refusing to record it again as {record}"
            )
        self._append(record)
        self._ingest(record, len(self._records) + 1)

    def move(self, indices: npt.ArrayLike, *, source: str, purpose: str, key: str) -> None:
        """Records that items bought for ``source`` now serve ``purpose``, once per key: a
        test item that active learning chose for B trains with the label T bought, and
        leaves T. Nothing is bought or paid. A rerun repeats the move: the same key with the
        same indices is a no-op, anything else raises; so does an index that does not serve
        ``source`` now."""
        if source not in PURPOSES or purpose not in PURPOSES or source == purpose:
            raise ValueError(
                f"Ledger.move source {source!r}, purpose {purpose!r}: two different ones of "
                f"{PURPOSES}"
            )
        self._check_key(key)
        indices = as_int_array(indices, f"Ledger.move(key={key!r}) indices")
        record = {"kind": "move", "key": key, "purpose": purpose, "source": source,
                  "indices": indices, "usd": 0.0}  # fmt: skip
        if key in self._keys:
            old = self._records[self._keys[key]]
            if old["kind"] == "move" and dumps(old) == dumps(record):
                return
            raise ValueError(
                f"ledger {self.path}: key {key!r} is already recorded as {self._summary(old)}; "
                f"refusing to record a move of {len(indices)} items from {source!r} to "
                f"{purpose!r} under it"
            )
        strays = np.setdiff1d(indices, self.bought(source)[0])
        if strays.size or len(np.unique(indices)) != len(indices):
            raise ValueError(
                f"ledger {self.path}: move {key!r}: indices {shown(strays)} do not serve "
                f"{source!r} now, or repeat"
            )
        self._append(record)
        self._ingest(record, len(self._records) + 1)

    @staticmethod
    def _summary(record: dict) -> str:
        if record["kind"] == "charge":
            return str(record)
        if record["kind"] == "move":
            return f"a move of {len(record['indices'])} items to {record['purpose']!r}"
        return f"a purchase of {len(record['indices'])} labels for {record['purpose']!r}"

    # ----------------------------------------------------------------------------- queries

    def has(self, key: str) -> bool:
        """Whether a purchase, charge or move with this key is recorded."""
        return key in self._keys

    def _purchases(self, purpose: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        chosen = [
            r
            for r in self._records
            if r["kind"] == "purchase" and (purpose is None or r["purpose"] == purpose)
        ]
        indices = [r["indices"] for r in chosen] or [np.zeros(0, np.int64)]
        labels = [r["labels"] for r in chosen] or [np.zeros(0, np.int32)]
        return np.concatenate(indices), np.concatenate(labels)

    def purchased(self, purpose: str) -> tuple[np.ndarray, np.ndarray]:
        """The (indices, labels) bought for `purpose`, in order, moved since or not."""
        if purpose not in PURPOSES:
            raise ValueError(f"Ledger.purchased purpose {purpose!r}: must be one of {PURPOSES}")
        return self._purchases(purpose)

    def usd(self, key: str) -> float:
        """What the purchase or charge recorded under ``key`` cost."""
        if key not in self._keys:
            raise KeyError(f"ledger {self.path}: no record with key {key!r}")
        return float(self._records[self._keys[key]]["usd"])

    def num_items(self, key: str) -> int:
        """How many items the purchase or move recorded under ``key`` holds (0: a charge)."""
        if key not in self._keys:
            raise KeyError(f"ledger {self.path}: no record with key {key!r}")
        record = self._records[self._keys[key]]
        return 0 if record["kind"] == "charge" else len(record["indices"])

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """All bought (indices int64, labels int32), in purchase order."""
        return self._purchases()

    def bought(self, purpose: str) -> tuple[np.ndarray, np.ndarray]:
        """The (indices, labels) of the items that serve `purpose` ("test", "train",
        "residual") now, in order: those bought for it, less those moved away from it, then
        those moved to it (`move`), with the labels they were bought with."""
        if purpose not in PURPOSES:
            raise ValueError(f"Ledger.bought purpose {purpose!r}: must be one of {PURPOSES}")
        indices, labels = self._purchases(purpose)
        moves = [r for r in self._records if r["kind"] == "move"]
        if not moves:
            return indices, labels
        away = [r["indices"] for r in moves if r["source"] == purpose]
        keep = ~np.isin(indices, np.concatenate(away)) if away else np.ones(len(indices), bool)
        into = [r["indices"] for r in moves if r["purpose"] == purpose]
        if not into:
            return indices[keep], labels[keep]
        arriving = np.concatenate(into)
        all_indices, all_labels = self._purchases()
        where = {int(i): k for k, i in enumerate(all_indices)}
        arriving_labels = all_labels[[where[int(i)] for i in arriving]]
        return (
            np.concatenate([indices[keep], arriving]),
            np.concatenate([labels[keep], arriving_labels]),
        )

    def totals(self) -> dict[str, float]:
        """USD spent, by reason: the terms of Eq. 1 of the paper, and their sum ``total``."""
        spent: dict[str, list[float]] = {name: [] for name in TOTALS}
        for r in self._records:
            if r["kind"] == "purchase":
                spent[f"human_labels_{r['purpose']}"].append(r["usd"])
            elif r["kind"] == "charge":
                spent[r["category"]].append(r["usd"])
        sums = {name: math.fsum(values) for name, values in spent.items()}
        sums["human_labels"] = math.fsum(sums[f"human_labels_{p}"] for p in PURPOSES)
        sums["total"] = sums["human_labels"] + sums["training"] + sums["scoring"]
        return sums

    def records(self) -> list[dict]:
        """Every record in file order, as written (indices and labels as int lists)."""
        out = []
        for r in self._records:
            r = copy.deepcopy(r)
            if r["kind"] == "purchase":
                r["indices"], r["labels"] = r["indices"].tolist(), r["labels"].tolist()
            elif r["kind"] == "move":
                r["indices"] = r["indices"].tolist()
            out.append(r)
        return out
