"""The files people answer through: requests out, answers in, as text (no file I/O here).

A request lists the items of one purchase. It is written twice: ``<name>.csv`` with
columns ``index,path`` and ``<name>.labelstudio.json``, a Label Studio import file: a list
of tasks whose ``data`` holds ``image`` (a Label Studio local-files URL of the item's
path), ``path``, ``index`` and ``request`` (the request's name).

Answers come back in one of two forms:

- ``<name>.csv`` with a header holding ``index`` and ``label`` (other columns are
  ignored), one row per item;
- ``<name>.json``, a Label Studio JSON export: a list of tasks, each with ``data`` (the
  fields imported, ``index`` among them) and ``annotations``, whose ``result`` holds a
  ``choices`` result (``"value": {"choices": ["cat"]}``). Cancelled annotations are
  skipped; tasks of another request (``data.request``) are skipped, so the export of a
  whole project can serve each of its requests.

A label is a class name, or a class number (0, 1, ...) when it names no class. An answer
file is taken whole or not at all: an index outside the request, an item answered twice,
an item left without an answer or a label that is no class is refused, naming the file
and the line (the task, in a JSON export) and the value.

When the first answers name the classes (no ``data.classes``), names that look like slips
are refused too (`check_new_classes`): two names alike but for case or spaces, or but for
one letter, or one the beginning of the other (``Dog`` and ``dog``, ``hrose`` and
``horse``, ``ca`` and ``cat``); numbers mixed with names; a class given once.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import itertools
import json
import re
import urllib.parse
from collections.abc import Iterable, Sequence

import numpy as np

from mcal_jax.indices import shown

LOCAL_FILES_URL = "/data/local-files/?d="  # Label Studio's URL of a local file


class AnswerError(ValueError):
    """An answer file that cannot be imported: the message names the file, the line (or
    task), the value and what is wrong. Nothing of such a file is imported."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """One answered item: its pool index and label as written, and where (``line 7``)."""

    index: int
    label: str
    where: str


def request_csv(indices: Iterable[int], paths: Sequence[str]) -> str:
    """The CSV request for ``indices`` (``paths``: each pool item's path, or empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", "path"])
    for i in indices:
        writer.writerow([int(i), paths[i] if paths else ""])
    return out.getvalue()


def request_rows(text: str) -> list[tuple[str, ...]]:
    """The rows of a CSV request, cells stripped of spaces, empty cells at the end and
    blank rows left out: what a request says, however an editor re-saved it (line ends,
    quotes, a BOM)."""
    rows = []
    for row in csv.reader(io.StringIO(text.removeprefix("\ufeff"))):
        cells = [cell.strip() for cell in row]
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            rows.append(tuple(cells))
    return rows


def request_labelstudio(name: str, indices: Iterable[int], paths: Sequence[str]) -> str:
    """The Label Studio import file of the request ``name``: one task per item."""
    tasks = []
    for i in indices:
        path = paths[i] if paths else ""
        image = LOCAL_FILES_URL + urllib.parse.quote(path) if path else ""
        tasks.append({"data": {"image": image, "path": path, "index": int(i), "request": name}})
    return json.dumps(tasks, indent=1) + "\n"


def parse_csv(text: str, where: str) -> list[Answer]:
    """The answers of a CSV answer file (``where``: its path, for messages)."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    header = None
    answers = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = f"{where}, line {reader.line_num}"
        if header is None:
            header = [cell.strip().lower() for cell in row]
            missing = [c for c in ("index", "label") if c not in header]
            if missing:
                raise AnswerError(
                    f"{line}: the header {row} lacks the column(s) {', '.join(missing)}; "
                    "expected index,label"
                )
            continue
        cells = dict(zip(header, (cell.strip() for cell in row), strict=False))
        index, label = cells.get("index", ""), cells.get("label", "")
        if not re.fullmatch(r"\d+", index):
            raise AnswerError(f"{line}: index {index!r} is not a non-negative integer")
        if not label:
            raise AnswerError(f"{line}: index {index} has an empty label")
        answers.append(Answer(int(index), label, line))
    if header is None:
        raise AnswerError(f"{where}: empty file; expected a header index,label and one row an item")
    return answers


def parse_labelstudio(text: str, where: str, request: str) -> list[Answer]:
    """The answers of a Label Studio JSON export, for the request named ``request``."""
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as error:
        raise AnswerError(f"{where}, line {error.lineno}: not JSON ({error.msg})") from None
    if not isinstance(tasks, list):
        raise AnswerError(
            f"{where}: a Label Studio export is a list of tasks, not a {type(tasks).__name__}"
        )
    answers = []
    for number, task in enumerate(tasks, start=1):
        data = task.get("data") if isinstance(task, dict) else None
        line = f"{where}, task {number}" + (
            f" (id {task.get('id')})" if isinstance(task, dict) and "id" in task else ""
        )
        if not isinstance(data, dict):
            raise AnswerError(f'{line}: has no "data" object')
        if data.get("request", request) != request:
            continue  # a task of another request of the same project
        index = data.get("index")
        if isinstance(index, str) and re.fullmatch(r"\d+", index.strip()):
            index = int(index)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise AnswerError(f"{line}: data.index {index!r} is not a non-negative integer")
        chosen = _choices(task, line)
        if chosen:
            answers.append(Answer(index, chosen, line))
    return answers


def _choices(task: dict, line: str) -> str | None:
    """The one choice the task's annotations agree on, or None when it has none."""
    annotations = task.get("annotations", task.get("completions", []))
    if not isinstance(annotations, list):
        raise AnswerError(f'{line}: "annotations" is not a list')
    found = set()
    for annotation in annotations:
        if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
            continue
        for result in annotation.get("result") or []:
            if not isinstance(result, dict) or result.get("type") != "choices":
                continue
            choices = (result.get("value") or {}).get("choices")
            if not isinstance(choices, list) or len(choices) != 1:
                raise AnswerError(f"{line}: expected one choice per annotation, got {choices!r}")
            found.add(str(choices[0]).strip())
    if len(found) > 1:
        raise AnswerError(
            f"{line}: annotations disagree ({', '.join(sorted(found))}); resolve them first"
        )
    return found.pop() if found else None


def check_items(answers: Sequence[Answer], wanted: np.ndarray, where: str) -> list[Answer]:
    """The answers in the order of ``wanted`` (the request's indices): AnswerError for an
    index not asked for, an index answered twice, or an index left without an answer."""
    position = {int(i): k for k, i in enumerate(wanted)}
    ordered: list[Answer | None] = [None] * len(wanted)
    for answer in answers:
        k = position.get(answer.index)
        if k is None:
            raise AnswerError(f"{answer.where}: index {answer.index} is not in this request")
        first = ordered[k]
        if first is not None:
            raise AnswerError(
                f"{answer.where}: index {answer.index} is answered twice (also {first.where})"
            )
        ordered[k] = answer
    missing = [int(wanted[k]) for k, a in enumerate(ordered) if a is None]
    if missing:
        raise AnswerError(
            f"{where}: {len(missing)} of {len(wanted)} items have no answer: indices "
            f"{shown(missing)}"
        )
    return ordered  # type: ignore[return-value]  # no None is left


def classes_from(answers: Sequence[Answer]) -> tuple[str, ...]:
    """The classes the first answers define: 0..max when every label is a number, else
    the distinct names, sorted."""
    labels = {a.label for a in answers}
    if labels and all(re.fullmatch(r"\d+", label) for label in labels):
        return tuple(str(k) for k in range(max(int(label) for label in labels) + 1))
    return tuple(sorted(labels))


def check_new_classes(answers: Sequence[Answer], where: str) -> None:
    """AnswerError, naming the file ``where``, each doubtful label and its first line,
    when the labels of the first answers look like slips rather than classes: the classes
    they name are the run's for good (`classes_from`)."""
    first: dict[str, Answer] = {}
    for answer in answers:
        first.setdefault(answer.label, answer)
    counts = collections.Counter(a.label for a in answers)

    def at(label: str) -> str:
        return f"{label!r} ({first[label].where.removeprefix(f'{where}, ')})"

    numbers = [label for label in first if re.fullmatch(r"\d+", label)]
    names = sorted(set(first) - set(numbers))
    doubts = []
    if numbers and names:
        shown_numbers, shown_names = (", ".join(map(at, labels[:3])) for labels in (numbers, names))
        doubts.append(f"numbers among names: {shown_numbers} beside {shown_names}")
    for a, b in itertools.combinations(names, 2):
        why = _alike(a, b)
        if why:
            doubts.append(f"{at(a)} and {at(b)} {why}")
    doubts += [f"{at(label)} is given once" for label in first if counts[label] == 1]
    if doubts:
        more = f"; and {len(doubts) - 8} more" if len(doubts) > 8 else ""
        raise AnswerError(
            f"{where}: the first answers name the run's classes for good, and some look like "
            f"slips: {'; '.join(doubts[:8])}{more}. Fix the answers and rerun the same "
            "command, or name the classes with data.classes (e.g. "
            "--config.data.classes=cat,dog, in a new --workdir)"
        )


def _alike(a: str, b: str) -> str | None:
    """Why two distinct class names look like one name written twice, or None."""
    a_key, b_key = ("".join(name.casefold().split()) for name in (a, b))
    short, long = sorted((a_key, b_key), key=len)
    if short == long:
        return "differ only in case or spaces"
    if len(short) >= 4 and _one_letter_apart(short, long):  # cat, car: short words differ so
        return "differ by one letter"
    return None


def _one_letter_apart(short: str, long: str) -> bool:
    """Whether one letter (not a digit: class1, class2 are a series) changed in, added to,
    or swapped with its neighbour in ``short`` gives ``long`` (which is no shorter)."""
    if len(long) - len(short) not in (0, 1):
        return False
    i = next((k for k, (x, y) in enumerate(zip(short, long, strict=False)) if x != y), len(short))
    if len(long) > len(short):
        return short[i:] == long[i + 1 :] and not long[i].isdigit()
    if short[i + 1 :] == long[i + 1 :]:
        return not (short[i].isdigit() or long[i].isdigit())
    swapped = short[:i] + short[i + 1 : i + 2] + short[i] + short[i + 2 :]
    return swapped == long and not short[i : i + 2].isdigit()


def class_numbers(answers: Sequence[Answer], classes: Sequence[str]) -> np.ndarray:
    """Each answer's class number (int32): a name of ``classes``, else a number below
    their count; AnswerError naming the line and the label otherwise."""
    number = {name: k for k, name in enumerate(classes)}
    out = np.empty(len(answers), np.int32)
    for k, answer in enumerate(answers):
        label = answer.label
        if label in number:
            out[k] = number[label]
        elif re.fullmatch(r"\d+", label) and int(label) < len(classes):
            out[k] = int(label)
        else:
            raise AnswerError(
                f"{answer.where}: label {label!r} of index {answer.index} is not a class; "
                f"classes: {', '.join(classes)} (or their numbers 0-{len(classes) - 1})"
            )
    return out
