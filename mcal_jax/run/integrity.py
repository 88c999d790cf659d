"""Whether a workdir's files agree, checked before a rerun trains or buys anything.

A rerun goes on from what its files record (`mcal_jax.run.state`): the ledger what was
bought, ``rounds.jsonl`` the rounds that decided it (and ``scores/`` what they scored),
``final.json``, ``baselines.json``, ``scores/final.npz`` and ``summary.json`` what came
after the last round. When one of them was lost or cut short, the rerun would go on from
a wrong point: buy again the labels the ledger forgot (T_plan, B, the residual), or train
a recorded round again on the B that later rounds grew and overwrite its scores. `check`
refuses such a workdir, naming the file to restore.

What a kill leaves is accepted: the ledger may be one round ahead of ``rounds.jsonl`` (a
batch bought, or a round trained and charged, whose round record was not written yet),
and, when that round was the last, hold the purchases of the finish as well.
``labels.npz``, ``labels.csv`` and ``metrics.jsonl`` are views rewritten from the others,
and are not checked; ``classes.json`` is checked where it is read
(`labeling.classes_from_first_answers`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from mcal_jax.run.state import RoundRecord, train_move_key, train_purchase_key


class WorkdirMismatchError(ValueError):
    """A workdir whose files do not agree; the message names the file to restore."""


@dataclasses.dataclass(frozen=True)
class OnDisk:
    """What a workdir holds when a run starts, as read (`Workdir.on_disk`)."""

    folder: str
    ledger_found: bool
    test_bought: bool  # the ledger holds T_plan's purchase
    batches: tuple[int, ...]  # items the ledger added to B for rounds 1, 2, … (until a gap)
    bought: Mapping[str, int]  # items that serve each purpose now (`Ledger.bought`)
    rounds_found: bool
    rounds: tuple[RoundRecord, ...]
    round_scores: bool  # scores/ holds the scores of some round
    after_rounds: tuple[str, ...]  # files present that only a finished loop writes
    summary_counts: Mapping[str, int] | None  # summary.json's counts, when it is there


def problem(disk: OnDisk) -> str | None:
    """What is wrong with ``disk``, the first thing found, or None when its files agree."""
    ledger, rounds = _path(disk, "ledger.jsonl"), _path(disk, "rounds.jsonl")
    k = len(disk.rounds)
    stopped = bool(disk.rounds) and disk.rounds[-1].stop

    # The ledger behind the other files: a rerun would buy again what it forgot.
    lost = f"{ledger} is missing" if not disk.ledger_found else None
    buys_again = (
        f": a rerun would buy those labels again; restore {ledger}, or start a new --workdir"
    )
    if k or disk.round_scores:
        scored = f"{_path(disk, 'scores')} holds the scores of rounds"
        trained = f"{rounds} records {_rounds(k)}" if k else scored
        trained += " trained on T_plan and B0"
        if lost or not disk.test_bought or not disk.batches:
            missing = lost or f"{ledger} lacks the purchase of T_plan or B0"
            return f"{missing}, yet {trained}{buys_again}"
    size = 0
    for r, record in enumerate(disk.rounds, start=1):
        size += disk.batches[r - 1] if r <= len(disk.batches) else 0
        if size != record.train_size:
            return (
                f"{ledger} holds {size} labels for B up to round {r}, yet {rounds} records "
                f"that round {r} trained on {record.train_size}{buys_again}"
            )
    if disk.summary_counts is not None:
        summary = _path(disk, "summary.json")
        for purpose, count in disk.summary_counts.items():
            held = disk.bought.get(purpose, 0)
            if count != held:
                return (
                    f"{summary} counts {count} labels bought for {purpose!r}, yet "
                    f"{lost or f'{ledger} holds {held}'}{buys_again}"
                )

    # rounds.jsonl behind the ledger or the finish: a rerun would run round k + 1 again.
    recorded = f"{rounds} is missing" if not disk.rounds_found else f"{rounds} records {_rounds(k)}"
    restore = f"; restore {rounds}, or start a new --workdir"
    beyond = k + (1 if stopped else 2)
    if len(disk.batches) >= beyond:
        keys = f"{train_purchase_key(beyond)!r} or {train_move_key(beyond)!r}"
        if stopped:
            return (
                f"{recorded}, the last one stopping, yet {ledger} holds the batch of round "
                f"{beyond} ({keys}), which a stopped run never buys{restore}"
            )
        return (
            f"{recorded}, yet {ledger} holds the batch of round {beyond} ({keys}), which "
            f"only round {beyond - 1} chooses: a rerun would train round {k + 1} again on "
            f"labels that later rounds bought{restore}"
        )
    if disk.after_rounds and not stopped:
        written = ", ".join(_path(disk, name) for name in disk.after_rounds)
        return (
            f"{recorded}{', none stopping' if k else ''}, yet {written} exist, which are "
            f"written after the last round: a rerun would run round {k + 1} again after the "
            f"end{restore}"
        )
    return None


def check(disk: OnDisk) -> None:
    """Refuses (WorkdirMismatchError) a workdir whose files do not agree (`problem`)."""
    found = problem(disk)
    if found is not None:
        raise WorkdirMismatchError(found)


def _path(disk: OnDisk, name: str) -> str:
    return os.path.join(disk.folder, name)


def _rounds(count: int) -> str:
    return f"{count} round{'' if count == 1 else 's'}"
