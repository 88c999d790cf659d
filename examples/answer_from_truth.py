r"""Plays the people of a labeling queue: answers each open request from a ground truth.

  python -m examples.answer_from_truth --queue=workdirs/own/queue \
      --truth=workdirs/fashion_folder/truth.csv [--format=labelstudio]

For every ``QUEUE/requests/<name>.csv`` without answers, writes ``QUEUE/answers/<name>.csv``
(``index,label``) with the label ``truth.csv`` (``path,label``) gives each item's path, or,
with ``--format=labelstudio``, ``QUEUE/answers/<name>.json`` as a Label Studio JSON export
of the request's import file would hold it. Each file is written under a temporary name
and renamed, so a run never reads half of it. With ``--check=WORKDIR/labels.csv`` it
instead prints how many of the final labels disagree with the truth.
"""

import argparse
import csv
import io
import json
import os


def read_truth(path: str) -> dict[str, str]:
    with open(path, newline="") as f:
        return {row["path"]: row["label"] for row in csv.DictReader(f)}


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def labelstudio_export(tasks: list[dict], truth: dict[str, str]) -> list[dict]:
    """The tasks of an import file as Label Studio exports them, each with one annotation."""
    result = {"from_name": "label", "to_name": "image", "type": "choices"}
    return [
        {
            "id": number,
            "data": task["data"],
            "annotations": [
                {
                    "id": number,
                    "result": [{**result, "value": {"choices": [truth[task["data"]["path"]]]}}],
                    "was_cancelled": False,
                }
            ],
        }
        for number, task in enumerate(tasks, start=1)
    ]


def answer(queue: str, truth: dict[str, str], form: str = "csv") -> dict[str, int]:
    """Answers every open request of ``queue``; returns {request name: items answered}."""
    requests, answers = os.path.join(queue, "requests"), os.path.join(queue, "answers")
    done = {}
    for file in sorted(os.listdir(requests) if os.path.isdir(requests) else []):
        if not file.endswith(".csv"):
            continue
        name = file[: -len(".csv")]
        if any(os.path.exists(os.path.join(answers, name + s)) for s in (".csv", ".json")):
            continue
        with open(os.path.join(requests, file), newline="") as f:
            rows = list(csv.DictReader(f))
        if form == "labelstudio":
            with open(os.path.join(requests, name + ".labelstudio.json")) as f:
                export = labelstudio_export(json.load(f), truth)
            _write(os.path.join(answers, name + ".json"), json.dumps(export, indent=1))
        else:
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            writer.writerows([("index", "label")] + [(r["index"], truth[r["path"]]) for r in rows])
            _write(os.path.join(answers, name + ".csv"), out.getvalue())
        done[name] = len(rows)
    return done


def check(labels_csv: str, truth: dict[str, str]) -> str:
    """How the final labels compare with the truth, by source."""
    with open(labels_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    parts = []
    for source in ("human", "machine"):
        mine = [r for r in rows if r["source"] == source]
        wrong = sum(r["label"] != truth[r["path"]] for r in mine)
        parts.append(f"{source}: {len(mine)} items, {wrong} wrong")
    return f"{len(rows)} labels; " + "; ".join(parts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", required=True, help="path,label CSV of the ground truth")
    parser.add_argument("--queue", help="the queue folder (labeling.service=queue:QUEUE)")
    parser.add_argument("--format", choices=("csv", "labelstudio"), default="csv")
    parser.add_argument("--check", help="a run's labels.csv: compare it with the truth")
    args = parser.parse_args()
    truth = read_truth(args.truth)
    if args.check:
        print(check(args.check, truth))
    else:
        for name, count in answer(args.queue, truth, args.format).items():
            print(f"answered {count} items of {name}")
