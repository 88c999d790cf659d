"""A labeler of real people: purchases go out as request files and come back as answers.

The queue is a folder QDIR (``labeling.service=queue:QDIR``). Each purchase of the ledger
(key ``test``, ``round3/train``, ..., ``residual``) is a request named after its key, with
``/`` written as ``-`` (``round3-train``):

- the run writes ``QDIR/requests/<name>.csv`` (``index,path``) and
  ``QDIR/requests/<name>.labelstudio.json`` (tasks to import into Label Studio);
- people, or a labeling tool, write ``QDIR/answers/<name>.csv`` (``index,label``) or put a
  Label Studio JSON export there as ``QDIR/answers/<name>.json`` (formats:
  `mcal_jax.answers`). Write an answer file under another name and rename it when it is
  complete, so that a half-written file is never read.

Until the answers exist, ``label`` raises `labelers.LabelsAwaited` (or, with ``wait``,
checks again every ``poll_seconds``); the ledger records nothing, and the run stops with
exit status 3. Rerunning the same command asks for the same request, reads the answers,
and the ledger writes them durably before anything uses them. Answer files are only read,
never changed: a crash before the ledger's write loses nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
from absl import logging

from mcal_jax import answers, files
from mcal_jax.indices import as_int_array
from mcal_jax.labelers import LabelsAwaited


def request_name(key: str) -> str:
    """The file name (without suffix) of the request of the ledger purchase ``key``."""
    return key.replace("/", "-")


class Requests(Protocol):
    """Where a purchase's items go to people and their answers come from: a `Queue` of
    files, or a live Label Studio project (`mcal_jax.label_studio.Project`)."""

    def post(self, name: str, indices: np.ndarray, paths: Sequence[str]) -> None: ...

    def wait_for(
        self, name: str, count: int, *, key: str, wait: bool, poll_seconds: float
    ) -> None: ...

    def read(self, name: str, indices: np.ndarray) -> list[answers.Answer]: ...


class Queue:
    """The folders of a queue: where requests go and answers come from."""

    def __init__(self, directory: str | os.PathLike, *, writer: bool = True):
        self.directory = os.fspath(directory)
        self.writer = writer

    def request(self, name: str, suffix: str = ".csv") -> str:
        return os.path.join(self.directory, "requests", name + suffix)

    def answer_files(self, name: str) -> list[str]:
        """The answer files of request ``name`` that exist (CSV, Label Studio JSON)."""
        candidates = (os.path.join(self.directory, "answers", name + s) for s in (".csv", ".json"))
        return [path for path in candidates if os.path.isfile(path)]

    def post(self, name: str, indices: np.ndarray, paths: Sequence[str]) -> None:
        """Writes the request files of ``name``. A request of that name already there must
        list the same rows, however an editor re-saved it (a BOM, other line ends or
        quotes); one that lists other items belongs to another run: refused."""
        text = answers.request_csv(indices, paths)
        path = self.request(name)
        try:
            with open(path, encoding="utf-8-sig") as f:  # a spreadsheet may add a BOM
                old = f.read()
        except FileNotFoundError:
            old = None
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{path}: not UTF-8 text ({error}); delete it and rerun: the run writes it again"
            ) from None
        if old is not None and answers.request_rows(old) != answers.request_rows(text):
            raise ValueError(
                f"{path} already asks for other items than purchase {name!r} of this run: the "
                f"queue {self.directory} holds another run's requests; use another queue"
            )
        if self.writer:
            files.atomic_write_bytes(path, text.encode())
            json_text = answers.request_labelstudio(name, indices, paths)
            files.atomic_write_bytes(self.request(name, ".labelstudio.json"), json_text.encode())

    def read(self, name: str, indices: np.ndarray) -> list[answers.Answer]:
        """The answers of request ``name``, checked against its items and in their order;
        `answers.AnswerError` for a bad file, ValueError when two files answer it."""
        found = self.answer_files(name)
        if len(found) != 1:
            raise ValueError(
                f"request {name!r} has {len(found)} answer files ({', '.join(found)}): keep one"
            )
        path = found[0]
        try:
            with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is no label
                text = f.read()
        except UnicodeDecodeError as error:
            raise answers.AnswerError(f"{path}: not UTF-8 text ({error})") from None
        if path.endswith(".json"):
            parsed = answers.parse_labelstudio(text, path, name)
        else:
            parsed = answers.parse_csv(text, path)
        return answers.check_items(parsed, indices, path)

    def wait_for(self, name: str, count: int, *, key: str, wait: bool, poll_seconds: float) -> None:
        """Returns once request ``name`` has answers; raises LabelsAwaited without ``wait``."""
        csv_answers = os.path.join(self.directory, "answers", name + ".csv")
        message = (
            f"{count} labels awaited for purchase {key!r}: the items are listed in "
            f"{self.request(name)} (and {self.request(name, '.labelstudio.json')} for "
            f"Label Studio); write {csv_answers} with columns index,label (or put a Label "
            f"Studio JSON export at {csv_answers[:-4]}.json), then rerun the same command"
        )
        await_answers(
            lambda: bool(self.answer_files(name)), lambda: message, key, count, wait, poll_seconds
        )


def await_answers(
    ready: Callable[[], bool],
    message: Callable[[], str],
    key: str,
    count: int,
    wait: bool,
    poll_seconds: float,
) -> None:
    """Returns once ``ready()``; until then raises LabelsAwaited with ``message()``, or,
    with ``wait``, says it once and looks again every ``poll_seconds``."""
    told = False
    while not ready():
        if not wait:
            raise LabelsAwaited(message(), key=key, count=count)
        if not told:
            logging.info("%s; checking every %g s", message(), poll_seconds)
            told = True
        time.sleep(poll_seconds)


class QueueLabeler:
    """Buys labels from people through a `Queue` (or a Label Studio project) at
    ``usd_per_label`` each.

    ``classes`` are the class names answers are read against; ``paths`` each pool item's
    file (or empty); ``truth`` (int32 labels in ``classes``' numbering, or None) serves the
    true-error report only, as `SimulatedLabeler.true_labels_for_report` does.
    """

    def __init__(
        self,
        queue: Requests,
        *,
        usd_per_label: float,
        classes: Sequence[str],
        paths: Sequence[str],
        num_items: int,
        wait: bool = False,
        poll_seconds: float = 10.0,
        truth: np.ndarray | None = None,
    ):
        if len(classes) < 2:
            raise ValueError(f"QueueLabeler: {len(classes)} classes ({classes}); need at least 2")
        self.queue = queue
        self.usd_per_label = float(usd_per_label)
        self.classes = tuple(classes)
        self.paths = tuple(paths)
        self.num_items = int(num_items)
        self.wait = wait
        self.poll_seconds = float(poll_seconds)
        self._truth = truth
        self.labels_served = 0

    def label(self, indices: npt.ArrayLike, *, key: str = "") -> np.ndarray:
        """The people's labels of ``indices`` for purchase ``key`` (int32, in order);
        LabelsAwaited until their answers exist, AnswerError when the answers are bad."""
        if not key:
            raise ValueError("QueueLabeler.label: the purchase needs a key to name its request")
        indices = as_int_array(indices, "pool indices", size=self.num_items)
        name = request_name(key)
        self.queue.post(name, indices, self.paths)
        self.queue.wait_for(
            name, len(indices), key=key, wait=self.wait, poll_seconds=self.poll_seconds
        )
        labels = answers.class_numbers(self.queue.read(name, indices), self.classes)
        logging.info("imported %d answers of %r", len(labels), name)
        self.labels_served += len(indices)
        return labels

    def true_labels_for_report(self, indices: npt.ArrayLike) -> np.ndarray | None:
        """The ground truth of those items, for the report only; None when unknown."""
        if self._truth is None:
            return None
        return self._truth[as_int_array(indices, "pool indices", size=self.num_items)].copy()
