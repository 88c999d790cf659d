"""Labeling a folder of one's own images with people, end to end: the run stops with exit
status 3 while answers are awaited, goes on when they are in, survives a kill during an
import and refuses bad answers; labels.csv covers every image. Also: class subfolders as
ground truth for a simulated run, and settings refused before anything is written."""

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from examples import answer_from_truth as people
from mcal_jax import data, run
from mcal_jax.answers import AnswerError
from mcal_jax.labelers import LabelsAwaited
from mcal_jax.ledger import Ledger
from mcal_jax.run import labeling

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("moth", "bee", "cow", "ant")  # class k of the synthetic pool is NAMES[k]


def _write_images(directory, subfolders=False):
    """300 learnable 28x28 images as PNGs; returns {relative path: class name}."""
    pool = data.make_synthetic("n=300,shape=28x28x1,classes=4,seed=0,noise=0.8")
    truth = {}
    for i, (image, label) in enumerate(zip(pool.images, pool.labels, strict=True)):
        path = f"{NAMES[label]}/{i:03d}.png" if subfolders else f"img{i:03d}.png"
        os.makedirs(os.path.dirname(directory / path), exist_ok=True)
        Image.fromarray(image[:, :, 0]).save(directory / path)
        truth[path] = NAMES[label]
    return truth


_CONFIG_FILE = """
from configs import folder


def get_config():
    config = folder.get_config("cpu")
    config.data.dataset = "folder:{images}"
    config.labeling.service = "queue:{queue}"
    config.labeling.usd_per_label = 0.04
    config.models = ("tiny",)
    config.train.epochs = 10
    config.train.min_steps = 150
    config.train.batch_size = 32
    config.train.learning_rate = 0.3
    config.final_train.min_steps = None
    config.final_train.crop_padding = None
    config.final_train.horizontal_flip = None
    config.mcal.epsilon = 0.05  # low enough that people get a residual
    config.mcal.plan_test_fraction = 0.2
    config.mcal.min_plan_test_items = 60
    config.mcal.delta0_fraction = 0.1
    config.mcal.min_delta0_items = 0
    config.mcal.max_rounds = 2
    return config
"""


def _config_file(tmp_path, images, queue):
    """A config file for launch.mcal: tiny rounds on the images of ``images``."""
    path = tmp_path / "own.py"
    path.write_text(_CONFIG_FILE.format(images=images, queue=queue))
    return path


def _config(path, **fields):
    """The config of ``path``, with ``fields`` changed."""
    spec = importlib.util.spec_from_file_location("own_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    with config.unlocked():
        for name, value in fields.items():
            section, field = name.split(".")
            config[section][field] = value
    return config


def _launch(workdir, config_file):
    command = [
        sys.executable,
        "-m",
        "launch.mcal",
        f"--config={config_file}",
        f"--workdir={workdir}",
    ]
    env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_people_label_a_folder_of_images_end_to_end(tmp_path, monkeypatch, workdir_files):
    images, queue, workdir = tmp_path / "images", tmp_path / "queue", tmp_path / "run"
    truth = _write_images(images)
    config_file = _config_file(tmp_path, images, queue)
    config = _config(config_file)

    # The command stops with status 3, saying how many labels it awaits in which file.
    first = _launch(workdir, config_file)
    assert first.returncode == 3, first.stdout + first.stderr
    assert f"60 labels awaited for purchase 'test': the items are listed in {queue}/requests/" in (
        first.stderr
    )
    assert not os.path.exists(workdir / "ledger.jsonl")  # nothing bought yet
    people.answer(str(queue), truth)  # T's answers, as CSV

    # B0's answers, first with an item answered twice: refused, nothing of it imported.
    with pytest.raises(LabelsAwaited, match="30 labels awaited for purchase 'round1/train'"):
        run.mcal(config, str(workdir))
    rows = [row.split(",") for row in (queue / "requests" / "round1-train.csv").read_text().split()]
    answers = queue / "answers" / "round1-train.csv"
    lines = [f"{index},{truth[path]}" for index, path in rows[1:]]
    answers.write_text("\n".join(["index,label", *lines, lines[0]]) + "\n")
    with pytest.raises(AnswerError, match=rf"round1-train\.csv, line 32: index {rows[1][0]} is"):
        run.mcal(config, str(workdir))
    assert [r["key"] for r in Ledger(workdir / "ledger.jsonl").records()] == ["test"]
    os.remove(answers)
    people.answer(str(queue), truth, "labelstudio")  # now as a Label Studio export

    # Round 1 trains on B0 and asks for its batch; the answers arrive as CSV.
    with pytest.raises(LabelsAwaited, match="purchase 'round2/train'"):
        run.mcal(config, str(workdir))
    people.answer(str(queue), truth)

    # Killed while they are imported (half a ledger line on disk): nothing is lost.
    def killed(ledger, record):
        line = json.dumps(record, separators=(",", ":"), default=lambda a: a.tolist()).encode()
        ledger._write(line[: len(line) // 2])
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as patch:
        patch.setattr(Ledger, "_append", killed)
        with pytest.raises(KeyboardInterrupt):
            run.mcal(config, str(workdir))
    torn = (workdir / "ledger.jsonl").read_bytes()
    assert not torn.endswith(b"\n") and b'"key":"round2/train"' in torn.split(b"\n")[-1]
    # The rerun drops the torn line, imports the answers again, runs round 2 (the last)
    # and asks for T_cert's labels, the test set that certifies, drawn at the start.
    with (
        pytest.warns(UserWarning, match=r"line \d+ is incomplete"),
        pytest.raises(LabelsAwaited, match="labels awaited for purchase 'certify'"),
    ):
        run.mcal(config, str(workdir))
    people.answer(str(queue), truth)
    # It certifies the machine labels on T_cert and asks for the residual; asking again
    # changes nothing.
    with pytest.raises(LabelsAwaited, match="purchase 'residual'"):
        run.mcal(config, str(workdir))
    request = (queue / "requests" / "residual.csv").read_bytes()
    with pytest.raises(LabelsAwaited, match="purchase 'residual'"):
        run.mcal(config, str(workdir))
    assert (queue / "requests" / "residual.csv").read_bytes() == request
    people.answer(str(queue), truth, "labelstudio")
    summary = run.mcal(config, str(workdir))

    # Every answer is in the ledger once, as the people gave it.
    purchases = [r for r in Ledger(workdir / "ledger.jsonl").records() if r["kind"] == "purchase"]
    keys = ["test", "round1/train", "round2/train", "certify", "residual"]
    assert [r["key"] for r in purchases] == keys
    paths = sorted(truth)
    classes = json.loads((workdir / "classes.json").read_text())
    assert classes == sorted(NAMES)  # learned from the first answers, names sorted
    for record in purchases:
        assert [classes[k] for k in record["labels"]] == [
            truth[paths[i]] for i in record["indices"]
        ]

    # labels.csv: every image once, the people's labels as given, the machine's as counted.
    with open(workdir / "labels.csv") as f:
        header, *rows = [line.split(",") for line in f.read().splitlines()]
    assert header == ["path", "label", "source", "confidence"]
    assert [r[0] for r in rows] == paths
    counts = dataclasses.asdict(summary.counts)
    records = Ledger(workdir / "ledger.jsonl").records()
    moved = sum(len(r["indices"]) for r in records if r["kind"] == "move")  # T_plan's, in B
    assert sum(counts.values()) == 300 and counts["test"] == 60 - moved
    assert counts["train"] == sum(len(r["indices"]) for r in purchases[1:-2]) + moved
    assert counts["certify"] == len(purchases[-2]["indices"]) > 0
    human = [r for r in rows if r[2] == "human"]
    machine = [r for r in rows if r[2] == "machine"]
    assert len(human) == 300 - counts["machine"] and len(machine) == counts["machine"] > 0
    assert all(r[1] == truth[r[0]] for r in human)
    wrong = sum(r[1] != truth[r[0]] for r in machine)
    assert wrong <= summary.error.upper_bound_overall * 300  # what was certified
    assert wrong < len(machine) / 4  # the classifier learned (chance: 3 in 4 wrong)
    assert summary.error.true is None and list(summary.classes) == classes  # no truth known
    assert summary.cost_usd.human_labels == pytest.approx(0.04 * len(human))

    # The same command on the finished run: status 0, and no file changes.
    before = workdir_files(workdir)
    last = _launch(workdir, config_file)
    assert last.returncode == 0, last.stderr
    assert re.search(r"done: 300 items, [\d.]+% machine-labeled", last.stderr)
    assert workdir_files(workdir) == before
    # The class names are part of the labels: without classes.json the run refuses to go on.
    os.rename(workdir / "classes.json", tmp_path / "classes.json")
    with pytest.raises(ValueError, match="classes.json is missing, yet .* holds labels"):
        run.mcal(config, str(workdir))


def test_ground_truth_is_matched_to_the_classes_by_name_or_not_at_all():
    images = np.zeros((3, 2, 2, 1), np.uint8)
    folders = data.Dataset(images, np.array([0, 1, 1]), 2, "f", class_names=("cat", "dog"))
    np.testing.assert_array_equal(labeling.truth(folders, ("dog", "cat", "eel"), False), [1, 0, 0])
    assert labeling.truth(folders, ("cat", "cow"), False) is None  # "dog" is no class
    numbered = data.Dataset(images, np.array([0, 1, 1]), 2, "n")
    np.testing.assert_array_equal(labeling.truth(numbered, ("0", "1"), False), [0, 1, 1])
    np.testing.assert_array_equal(labeling.truth(numbered, ("b", "a"), True), [0, 1, 1])
    assert labeling.truth(numbered, ("a", "b"), False) is None  # names people chose
    assert labeling.truth(data.Dataset(images, None, 0, "flat"), ("a", "b"), False) is None


def test_class_subfolders_simulate_people_and_give_the_true_error(tmp_path):
    images = tmp_path / "images"
    truth = _write_images(images, subfolders=True)
    order = "ant,bee,cow,moth"  # the subfolders' own order; data.classes may differ
    config = _config(
        _config_file(tmp_path, images, tmp_path / "queue"),
        **{"labeling.service": "amazon", "labeling.usd_per_label": None},
        **{"data.classes": "cow,moth,ant,bee", "mcal.max_rounds": 1},
    )
    summary = run.mcal(config, str(tmp_path / "run"))
    assert list(summary.classes) == ["cow", "moth", "ant", "bee"] != order.split(",")
    with open(tmp_path / "run" / "labels.csv") as f:
        rows = [line.split(",") for line in f.read().splitlines()[1:]]
    assert [r[0] for r in rows] == sorted(truth)
    assert all(r[1] == truth[r[0]] for r in rows if r[2] == "human")
    wrong = sum(r[1] != truth[r[0]] for r in rows if r[2] == "machine")
    assert summary.counts.machine > 0
    assert summary.error.true == pytest.approx(wrong / 300)


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"labeling.service": "amazon", "labeling.usd_per_label": None}, "has no ground truth"),
        ({"labeling.usd_per_label": None}, "labeling.usd_per_label=None: set the price"),
        ({"baselines.run": True}, "baselines.run=True: the baselines simulate"),
        ({"labeling.error_rate": 0.1}, "labeling.error_rate=0.1: simulated label noise"),
        ({"data.classes": "cat"}, "data.classes='cat': give at least two"),
        ({"data.classes": "cat,dog,cat"}, r"repeated: \['cat'\]"),
        ({"data.image_shape": "28x28"}, "data.image_shape='28x28'"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, fields, problem):
    images = tmp_path / "images"
    _write_images(images)
    config = _config(_config_file(tmp_path, images, tmp_path / "queue"), **fields)
    with pytest.raises(ValueError, match=problem):
        run.mcal(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run") and not os.path.exists(tmp_path / "queue")


def test_the_readme_example_scripts_on_real_fashion_mnist(tmp_path):
    if not os.path.isdir(data.DEBIAN_FASHION_MNIST_DIR):
        if os.environ.get("MCAL_REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"MCAL_REQUIRE_REAL_DATA=1 but {data.DEBIAN_FASHION_MNIST_DIR} is absent")
        pytest.skip(f"{data.DEBIAN_FASHION_MNIST_DIR} absent")
    from examples import fashion_folder

    assert fashion_folder.write_folder(str(tmp_path), 50) == 50
    pool = data.load_dataset(f"folder:{tmp_path / 'images'}", image_shape="28x28x1")
    real = data.load_dataset("fashion_mnist", split="test")
    np.testing.assert_array_equal(pool.images, real.images[:50])  # the same pixels
    truth = people.read_truth(str(tmp_path / "truth.csv"))
    assert [truth[p] for p in pool.paths] == [fashion_folder.CLASSES[k] for k in real.labels[:50]]
    assert truth["00000.png"] == "Ankle boot"  # the test split begins 9, 2, 1, 1
    # The people answer a request; the check compares a labels.csv with the truth.
    (tmp_path / "q" / "requests").mkdir(parents=True)
    (tmp_path / "q" / "requests" / "test.csv").write_text("index,path\n3,00003.png\n0,00000.png\n")
    assert people.answer(str(tmp_path / "q"), truth) == {"test": 2}
    answers = (tmp_path / "q" / "answers" / "test.csv").read_text()
    assert answers == "index,label\n3,Trouser\n0,Ankle boot\n"
    (tmp_path / "labels.csv").write_text(
        "path,label,source,confidence\n00000.png,Ankle boot,human,0.1\n00001.png,Bag,machine,0.9\n"
    )
    summary = "2 labels; human: 1 items, 0 wrong; machine: 1 items, 1 wrong"
    assert people.check(str(tmp_path / "labels.csv"), truth) == summary
