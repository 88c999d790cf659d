"""Labels from people through a file queue (mcal_jax.file_queue, mcal_jax.answers): requests
out, CSV and Label Studio answers in, through the ledger, and every bad answer file refused
whole, naming the line."""

import csv
import io
import json
import threading
import time

import numpy as np
import pytest

from mcal_jax import answers
from mcal_jax.answers import AnswerError
from mcal_jax.file_queue import Queue, QueueLabeler, request_name
from mcal_jax.labelers import LabelsAwaited
from mcal_jax.ledger import Ledger

CLASSES = ("cat", "dog", "eel")
PATHS = tuple(f"img/{i:03d}.png" for i in range(20))


def _labeler(tmp_path, **options):
    queue = Queue(tmp_path / "q")
    kwargs = dict(usd_per_label=0.5, classes=CLASSES, paths=PATHS, num_items=len(PATHS))
    return QueueLabeler(queue, **{**kwargs, **options})


def _answer(tmp_path, name, text, suffix=".csv"):
    path = tmp_path / "q" / "answers" / (name + suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_purchase_waits_for_people_then_imports_their_answers(tmp_path):
    ledger, labeler = Ledger(tmp_path / "ledger.jsonl"), _labeler(tmp_path)
    items = np.array([7, 2, 11])
    with pytest.raises(LabelsAwaited, match=r"3 labels awaited for purchase 'round2/train'") as e:
        ledger.buy(labeler, items, purpose="train", key="round2/train")
    assert e.value.count == 3 and e.value.key == "round2/train"
    assert "answers/round2-train.csv" in str(e.value)
    assert ledger.records() == [] and (tmp_path / "ledger.jsonl").read_text() == ""
    # The request: the items, in the purchase's order, with their paths.
    request = (tmp_path / "q" / "requests" / "round2-train.csv").read_text()
    assert request == "index,path\n7,img/007.png\n2,img/002.png\n11,img/011.png\n"
    tasks = json.loads((tmp_path / "q/requests/round2-train.labelstudio.json").read_text())
    assert tasks[1]["data"] == {
        "image": "/data/local-files/?d=img/002.png",
        "path": "img/002.png",
        "index": 2,
        "request": "round2-train",
    }
    # Asking again (a rerun) writes the same request and still waits.
    with pytest.raises(LabelsAwaited):
        ledger.buy(labeler, items, purpose="train", key="round2/train")
    # Names or numbers, any row order, extra columns, a byte-order mark and blank lines.
    _answer(tmp_path, "round2-train", "\ufeffindex,label,who\n2, eel ,ann\n\n11,0,bob\n7,dog,ann\n")
    labels = ledger.buy(labeler, items, purpose="train", key="round2/train")
    np.testing.assert_array_equal(labels, [1, 2, 0])
    # Durable before use: a fresh ledger on the file holds them.
    reopened = Ledger(tmp_path / "ledger.jsonl").bought("train")
    np.testing.assert_array_equal(reopened[0], items)
    np.testing.assert_array_equal(reopened[1], [1, 2, 0])
    assert Ledger(tmp_path / "ledger.jsonl").totals()["human_labels"] == pytest.approx(1.5)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("index,label\n7,dog\n2,cat\n11,cat\n5,eel\n", r"test\.csv, line 5: index 5 is not in"),
        ("index,label\n7,dog\n2,cat\n", r"test\.csv: 1 of 3 items have no answer: indices 11"),
        ("index,label\n7,dog\n2,cat\n7,eel\n11,cat\n", r"line 4: index 7 is answered twice"),
        ("index,label\n7,dog\n2,cow\n11,cat\n", r"line 3: label 'cow' of index 2 is not a class"),
        ("index,label\n7,dog\n2,3\n11,cat\n", r"line 3: label '3' of index 2 is not a class"),
        ("index,label\n7,dog\n2,\n11,cat\n", r"line 3: index 2 has an empty label"),
        ("index,label\nseven,dog\n", r"line 2: index 'seven' is not a non-negative integer"),
        ("item,label\n7,dog\n", r"line 1: the header .* lacks the column\(s\) index"),
        ("", r"test\.csv: empty file"),
    ],
)
def test_bad_answers_are_refused_whole_naming_the_line(tmp_path, text, problem):
    ledger, labeler = Ledger(tmp_path / "ledger.jsonl"), _labeler(tmp_path)
    items = np.array([7, 2, 11])
    _answer(tmp_path, "test", text)
    with pytest.raises(AnswerError, match=problem):
        ledger.buy(labeler, items, purpose="test", key="test")
    assert ledger.records() == [] and not ledger.has("test")
    # The corrected file is imported.
    _answer(tmp_path, "test", "index,label\n7,dog\n2,cat\n11,cat\n")
    np.testing.assert_array_equal(ledger.buy(labeler, items, purpose="test", key="test"), [1, 0, 0])


def _export(tasks):
    """Label Studio's JSON export of ``tasks`` (data, annotations as (choice, cancelled))."""
    return json.dumps(
        [
            {
                "id": 100 + k,
                "data": data,
                "annotations": [
                    {
                        "id": 1000 + k * 10 + j,
                        "result": [
                            {
                                "from_name": "label",
                                "to_name": "image",
                                "type": "choices",
                                "value": {"choices": [choice]},
                            }
                        ],
                        "was_cancelled": cancelled,
                        "ground_truth": False,
                        "lead_time": 2.5,
                    }
                    for j, (choice, cancelled) in enumerate(annotations)
                ],
                "predictions": [],
            }
            for k, (data, annotations) in enumerate(tasks)
        ]
    )


def test_a_label_studio_export_is_taken_as_the_answers(tmp_path):
    ledger, labeler = Ledger(tmp_path / "ledger.jsonl"), _labeler(tmp_path)
    items = np.array([4, 9])
    with pytest.raises(LabelsAwaited):
        ledger.buy(labeler, items, purpose="test", key="test")
    imported = json.loads((tmp_path / "q/requests/test.labelstudio.json").read_text())
    other = {"image": "x", "index": 4, "request": "round1-train"}  # the project's other request
    text = _export(
        [
            (imported[0]["data"], [("dog", True), ("eel", False)]),  # the cancelled one is skipped
            (other, [("cat", False)]),
            (imported[1]["data"], [("cat", False), ("cat", False)]),  # two people who agree
        ]
    )
    _answer(tmp_path, "test", text, ".json")
    np.testing.assert_array_equal(ledger.buy(labeler, items, purpose="test", key="test"), [2, 0])


@pytest.mark.parametrize(
    "tasks, problem",
    [
        (
            [({"index": 4}, [("dog", False), ("eel", False)])],
            r"task 1 \(id 100\): annotations disagree",
        ),
        (
            [({"index": 4}, [("dog", False)]), ({"index": 4}, [("cat", False)])],
            "task 2 .*answered twice",
        ),
        (
            [({"index": 4}, [("dog", False)]), ({"index": 9}, [])],
            "1 of 2 items have no answer: indices 9",
        ),
        ([({"index": 4}, [("dog", False)]), ({"index": 9}, [("cow", False)])], "task 2 .*'cow'"),
        ([({"index": "x"}, [("dog", False)])], r"task 1 .*data\.index 'x'"),
        ([({"index": 5}, [("dog", False)])], "task 1 .*index 5 is not in this request"),
    ],
)
def test_bad_label_studio_exports_are_refused_naming_the_task(tmp_path, tasks, problem):
    ledger, labeler = Ledger(tmp_path / "ledger.jsonl"), _labeler(tmp_path)
    _answer(tmp_path, "test", _export(tasks), ".json")
    with pytest.raises(AnswerError, match=problem):
        ledger.buy(labeler, np.array([4, 9]), purpose="test", key="test")
    assert ledger.records() == []


def test_wait_polls_until_the_answers_arrive(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    labeler = _labeler(tmp_path, wait=True, poll_seconds=0.02)

    def people():
        time.sleep(0.3)
        _answer(tmp_path, "residual", "index,label\n3,eel\n1,dog\n")

    thread = threading.Thread(target=people)
    thread.start()
    start = time.monotonic()
    labels = ledger.buy(labeler, np.array([1, 3]), purpose="residual", key="residual")
    thread.join()
    assert time.monotonic() - start >= 0.3
    np.testing.assert_array_equal(labels, [1, 2])
    assert ledger.has("residual")


def test_two_answer_files_or_another_runs_request_are_refused(tmp_path):
    ledger, labeler = Ledger(tmp_path / "ledger.jsonl"), _labeler(tmp_path)
    _answer(tmp_path, "test", "index,label\n1,dog\n")
    _answer(tmp_path, "test", _export([({"index": 1}, [("dog", False)])]), ".json")
    with pytest.raises(ValueError, match="2 answer files"):
        ledger.buy(labeler, np.array([1]), purpose="test", key="test")
    with pytest.raises(ValueError, match="another run's requests"):
        ledger.buy(labeler, np.array([2]), purpose="test", key="test")
    assert ledger.records() == []


def test_formats_and_class_names():
    assert request_name("round12/test") == "round12-test"
    parsed = answers.parse_csv('index,label\n1,"a, b"\n0,c\n', "f.csv")
    assert [(a.index, a.label, a.where) for a in parsed] == [
        (1, "a, b", "f.csv, line 2"),
        (0, "c", "f.csv, line 3"),
    ]
    assert answers.classes_from(parsed) == ("a, b", "c")  # names: sorted
    numbers = answers.parse_csv("index,label\n0,2\n1,0\n", "f.csv")
    assert answers.classes_from(numbers) == ("0", "1", "2")  # numbers: 0..max
    rows = list(csv.reader(io.StringIO(answers.request_csv([3], ["a,b.png"] * 4))))
    assert rows == [["index", "path"], ["3", "a,b.png"]]
    task = json.loads(answers.request_labelstudio("test", [0], ["a b/ü.png"]))[0]
    assert task["data"]["image"] == "/data/local-files/?d=a%20b/%C3%BC.png"
