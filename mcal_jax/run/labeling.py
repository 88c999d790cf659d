"""Who labels a run's items, and with which class names.

A simulated service (``labeling.service=amazon``, a price) sells the pool's ground truth
(`labelers.SimulatedLabeler`); ``queue:QDIR`` buys labels from people through request and
answer files (`file_queue.QueueLabeler`), ``labelstudio:URL`` through the tasks of a Label
Studio project (`label_studio.Project`, driven by the same labeler). The class names
(what a class number means, in the ledger, the models and ``labels.csv``) come from, in
this order:

1. ``data.classes`` (``a,b,c``), when set;
2. with a simulated service, the data: its class subfolders, or numbers ``0..K-1``;
3. with a file queue, the workdir's ``classes.json``, written when they were first learned
   from the people's first answers (the test set's, `classes_from_first_answers`),
   durably and before any of those answers is in the ledger. A Label Studio project asks
   its question with the classes, so they must be known before: ``data.classes``, or the
   pool's class folders.

`check_classes` makes every decision that needs no file before the workdir is claimed, so
a bad setting leaves nothing behind. A pool's own labels (class subfolders) serve the
simulation and the true-error report only, matched to the run's classes by name.
"""

from __future__ import annotations

import os

import numpy as np

from mcal_jax import answers, file_queue, label_studio, labelers, parallel
from mcal_jax.dataset import Dataset
from mcal_jax.ledger import Ledger
from mcal_jax.run.settings import Settings
from mcal_jax.run.state import TEST_PURCHASE_KEY
from mcal_jax.run.workdir import Workdir
from mcal_jax.scores import PoolScores

RunLabeler = labelers.SimulatedLabeler | file_queue.QueueLabeler


def configured_classes(text: str) -> tuple[str, ...]:
    """``data.classes`` (``"cat,dog"``) as names; ValueError for an empty or repeated name."""
    if not text.strip():
        return ()
    names = tuple(name.strip() for name in text.split(","))
    repeated = sorted({n for n in names if names.count(n) > 1})
    if "" in names or repeated or len(names) < 2:
        raise ValueError(
            f"invalid config: data.classes={text!r}: give at least two distinct, non-empty "
            f"class names separated by commas{f' (repeated: {repeated})' if repeated else ''}"
        )
    return names


def _own_classes(dataset: Dataset) -> tuple[str, ...]:
    """The names of the pool's own labels: its class folders, or numbers."""
    return dataset.class_names or tuple(str(k) for k in range(dataset.num_classes))


def check_classes(settings: Settings, dataset: Dataset, text: str) -> tuple[str, ...] | None:
    """The run's class names when they are known before any answer is read (None: people
    will name them with their first answers); ValueError for a pool or ``data.classes``
    that cannot work with the labeling service."""
    names = configured_classes(text)
    if settings.labeling.label_studio is not None:
        label_studio.connect(settings.labeling.label_studio)  # the token is there
        if not (names or dataset.class_names):
            raise ValueError(
                f"invalid config: labeling.service=labelstudio:{settings.labeling.label_studio} "
                "asks people to choose among the classes: name them with data.classes=a,b,..."
            )
        return names or dataset.class_names
    if settings.labeling.queue is not None:
        return names or None
    if dataset.labels is None:
        raise ValueError(
            f"invalid config: {dataset.name} has no ground truth (no class subfolders) to "
            "simulate labels with: label it with people, labeling.service=queue:QDIR"
        )
    own = _own_classes(dataset)
    if not names:
        return own
    if dataset.class_names:
        unknown = [name for name in own if name not in names]
        if unknown:
            raise ValueError(
                f"invalid config: data.classes={text!r} lacks the class folder(s) "
                f"{', '.join(unknown)} of {dataset.name}"
            )
    elif len(names) != dataset.num_classes:
        raise ValueError(
            f"invalid config: data.classes={text!r} names {len(names)} classes, "
            f"{dataset.name} has {dataset.num_classes}"
        )
    return names


def truth(dataset: Dataset, classes: tuple[str, ...], configured: bool) -> np.ndarray | None:
    """The pool's own labels in the numbering of ``classes``, or None when it has none or
    they do not match (a folder whose subfolders are not the classes people use). Numbered
    labels match classes named by ``data.classes`` (``configured``: class k is the k-th
    name) or classes that are those numbers."""
    if dataset.labels is None:
        return None
    own = _own_classes(dataset)
    if not dataset.class_names:
        same = classes == own or (configured and len(classes) == len(own))
        return dataset.labels if same else None
    if not set(own) <= set(classes):
        return None
    number = np.array([classes.index(name) for name in own], np.int32)
    return number[dataset.labels]


def queue_of(settings: Settings, workdir: Workdir) -> file_queue.Queue:
    folder = settings.labeling.queue or os.path.join(workdir.path, "queue")
    return file_queue.Queue(folder, writer=workdir.writer)


def classes_from_first_answers(
    settings: Settings, workdir: Workdir, dataset: Dataset, first_test: np.ndarray
) -> tuple[str, ...]:
    """The class names of a queue run without ``data.classes``: the recorded ones, else
    those of the answers to the first request (T's, ``first_test``), which are then
    recorded. Awaits those answers (`labelers.LabelsAwaited`) like any purchase; answers
    whose labels look like slips (`answers.check_new_classes`) are refused before any
    class is recorded."""
    recorded = workdir.read_classes()
    if recorded is not None:
        return recorded
    ledger = workdir.file("ledger.jsonl")
    if os.path.exists(ledger) and Ledger(ledger, writer=False).labels()[0].size:
        raise ValueError(
            f"{workdir.file('classes.json')} is missing, yet {ledger} holds labels numbered "
            "by it: restore the file, or start a new --workdir"
        )
    queue, name = queue_of(settings, workdir), file_queue.request_name(TEST_PURCHASE_KEY)
    queue.post(name, first_test, dataset.paths)
    queue.wait_for(
        name,
        len(first_test),
        key=TEST_PURCHASE_KEY,
        wait=settings.labeling.wait,
        poll_seconds=settings.labeling.poll_seconds,
    )
    first = queue.read(name, first_test)
    answers.check_new_classes(first, queue.answer_files(name)[0])
    classes = answers.classes_from(first)
    if len(classes) < 2:
        raise ValueError(
            f"the first answers ({queue.answer_files(name)[0]}) name {len(classes)} class "
            f"({', '.join(classes)}): a run needs at least two; set data.classes (a new "
            "--workdir) or answer again"
        )
    workdir.write_classes(classes)
    return classes


def make_labeler(
    settings: Settings,
    workdir: Workdir,
    dataset: Dataset,
    classes: tuple[str, ...],
    configured: bool,
    folder: str = "",
) -> RunLabeler:
    """The run's labeler, selling labels numbered as ``classes`` (``configured``: named
    by ``data.classes``); ``folder`` is where the pool's files are, when it has files."""
    own = truth(dataset, classes, configured)
    if not settings.labeling.people:
        assert own is not None  # check_classes refused a pool without ground truth
        return labelers.SimulatedLabeler(
            own,
            len(classes),
            usd_per_label=settings.usd_per_label,
            error_rate=settings.label_error_rate,
            seed=settings.seed,
        )
    requests: file_queue.Requests = queue_of(settings, workdir)
    if settings.labeling.label_studio is not None:
        name = os.path.basename(os.path.abspath(workdir.path))
        title = settings.labeling.project or f"mcal {name}"
        client = label_studio.connect(settings.labeling.label_studio)

        def project() -> label_studio.Project:
            return label_studio.Project(
                client,
                title,
                classes,
                dataset.images,
                dataset.paths,
                folder,
                suggestions=settings.labeling.suggestions,
                writer=workdir.writer,
            )

        if workdir.writer:  # process 0 finds or creates the project before the others look
            requests = project()
        parallel.sync("Label Studio project")
        if not workdir.writer:
            requests = project()
    return file_queue.QueueLabeler(
        requests,
        usd_per_label=settings.usd_per_label,
        classes=classes,
        paths=dataset.paths,
        num_items=len(dataset),
        wait=settings.labeling.wait,
        poll_seconds=settings.labeling.poll_seconds,
        truth=own,
    )


def suggest(labeler: RunLabeler, scores: PoolScores, items: np.ndarray, model: str) -> None:
    """Shows people the model's predictions on ``items`` (of B or the residual) with their
    tasks, when the run labels in Label Studio with ``labeling.suggestions``: ``scores``
    are the model's (``model``, e.g. ``round3``). A collective where the scores are split."""
    requests = getattr(labeler, "queue", None)
    if isinstance(requests, label_studio.Project) and requests.suggestions:
        confidence, predicted = scores.scores_of(items)
        requests.suggest(items, predicted, confidence, model)
