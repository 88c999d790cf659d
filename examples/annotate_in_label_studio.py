r"""Plays the annotators of a Label Studio project: answers its open tasks from a ground truth.

  LABEL_STUDIO_API_KEY=... python -m examples.annotate_in_label_studio \
      --url=http://localhost:8080 --project="mcal own" --truth=truth.csv [--every=10]

Each task without an answer gets one annotation choosing the class that ``truth.csv``
(``path,label``, the paths of the image folder, whose sorted files are the pool's items)
gives its item (``data.index``). With ``--every`` it looks again every that many seconds
until stopped. `annotate` is what the tests drive.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable

import numpy as np

from mcal_jax import label_studio


def read_truth(path: str) -> dict[str, str]:
    with open(path, newline="") as f:
        return {row["path"]: row["label"] for row in csv.DictReader(f)}


def answer(client: label_studio.Client, task_id: int, label: str, *, cancel: bool = False) -> int:
    """Posts one annotation of task ``task_id`` choosing ``label`` (a skip with ``cancel``);
    returns its id."""
    result = {"from_name": label_studio.FROM_NAME, "to_name": label_studio.TO_NAME,
              "type": "choices", "value": {"choices": [label]}}  # fmt: skip
    body = {"result": [] if cancel else [result], "was_cancelled": cancel}
    return int(client.call("POST", f"/api/tasks/{task_id}/annotations/", body)["id"])


def open_tasks(project: label_studio.Project) -> list[dict]:
    """The project's tasks without an annotation that was not skipped."""
    return [
        t
        for t in project.tasks()
        if not any(not a.get("was_cancelled") for a in t.get("annotations") or [])
    ]


def annotate(
    project: label_studio.Project,
    label_of: Callable[[int], str],
    *,
    skip: Callable[[dict], bool] = lambda task: False,
) -> int:
    """Answers every open task of ``project`` with ``label_of(index)``, skipping the tasks
    ``skip`` picks (once each: a skipped task is answered the next time); returns how many
    were answered."""
    answered = 0
    for task in open_tasks(project):
        skipped = any(a.get("was_cancelled") for a in task.get("annotations") or [])
        if not skipped and skip(task):
            answer(project.client, task["id"], "", cancel=True)
            continue
        answer(project.client, task["id"], label_of(int(task["data"]["index"])))
        answered += 1
    return answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--project", required=True, help="the project's title")
    parser.add_argument("--truth", required=True, help="path,label of every image")
    parser.add_argument("--every", type=float, default=0, help="seconds between passes")
    args = parser.parse_args()
    truth = read_truth(args.truth)
    paths = sorted(truth)
    client = label_studio.connect(args.url)
    project = label_studio.Project(client, args.project, (), np.zeros(0), ())
    while True:
        print(f"answered {annotate(project, lambda i: truth[paths[i]])} tasks")
        if not args.every:
            return
        time.sleep(args.every)


if __name__ == "__main__":
    main()
