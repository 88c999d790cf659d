"""Bad input refused before anything is paid for or learned for good, naming the field,
file or line: non-finite and negative settings and prices, answers whose class names look
like slips, odd image folders, and request or answer files re-saved with a byte-order
mark."""

import math
import os
import re

import numpy as np
import pytest
from PIL import Image

from configs import synthetic
from mcal_jax import answers, data, run
from mcal_jax.answers import AnswerError
from mcal_jax.data import DataError, load_dataset
from mcal_jax.file_queue import Queue
from mcal_jax.labelers import LabelsAwaited
from mcal_jax.run import labeling
from mcal_jax.run.settings import Settings
from mcal_jax.run.workdir import Workdir

NAN, INF = math.nan, math.inf

# ---------------------------------------------------------------------------- settings


def _config(**fields):
    """The synthetic config on 1,000 items with ``fields`` (dotted names) changed."""
    config = synthetic.get_config("1000")
    with config.unlocked():
        for name, value in fields.items():
            *sections, field = name.split(".")
            node = config
            for section in sections:
                node = node[section]
            node[field] = value
    return config


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"cost.usd_per_device_hour.cpu": NAN},
            "cost.usd_per_device_hour.cpu=nan: must be a finite",
        ),
        (
            {"cost.usd_per_device_hour.cpu": INF},
            "cost.usd_per_device_hour.cpu=inf: must be a finite",
        ),
        ({"mcal.min_delta_fraction": NAN}, "mcal.min_delta_fraction=nan: must be a finite number"),
        ({"mcal.plan_test_fraction": NAN}, "mcal.plan_test_fraction=nan: must be a finite number"),
        ({"mcal.delta0_fraction": -INF}, "mcal.delta0_fraction=-inf: must be a finite number"),
        ({"mcal.epsilon": NAN}, "mcal.epsilon=nan: must be a finite number"),
        ({"mcal.budget_usd": INF}, "mcal.budget_usd=inf: must be a finite number"),
        ({"train.momentum": NAN}, "train.momentum=nan: must be a finite number"),
        ({"baselines.delta_fractions": (0.01, NAN)}, "baselines.delta_fractions[1]=nan: must"),
        (
            {"cost.scoring_fraction_of_image_epoch": -0.5},
            "cost.scoring_fraction_of_image_epoch=-0.5 is negative: a price must be ≥ 0",
        ),
        (
            {"cost.usd_per_image_epoch.resnet56": -1e-6},
            "cost.usd_per_image_epoch.resnet56=-1e-06 is negative: a price must be ≥ 0",
        ),
        (
            {"cost.usd_per_image_epoch.tiny": 1e306},
            "cost.usd_per_image_epoch.tiny=1e+306: 1e+306 USD for each of the 1000 items "
            "overflows a float",
        ),
        (
            # scoring an item with the dearest model: 1e6 x 1e300 USD, 1000 times
            {"cost.scoring_fraction_of_image_epoch": 1e6, "cost.usd_per_image_epoch.tiny": 1e300},
            "cost.scoring_fraction_of_image_epoch=1000000.0: 1e+306 USD for each of the "
            "1000 items overflows",
        ),
        (
            {"labeling.service": "1e308"},
            "labeling.service='1e308': 1e+308 USD for each of the 1000 items overflows a float",
        ),
        (
            {
                "labeling.service": "queue",
                "labeling.usd_per_label": 1e307,
                "cost.usd_per_device_hour.cpu": 2.0,
            },
            "labeling.usd_per_label=1e+307: 1e+307 USD for each of the 1000 items overflows",
        ),
    ],
)
def test_non_finite_and_negative_settings_are_named(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_config(_config(**fields), 1000)


def test_every_non_finite_setting_is_named_at_once():
    config = _config(**{"mcal.stability_tolerance": NAN, "train.weight_decay": INF})
    with pytest.raises(ValueError) as error:
        Settings.from_config(config, 1000)
    assert str(error.value).splitlines() == [
        "invalid config:",
        "  mcal.stability_tolerance=nan: must be a finite number",
        "  train.weight_decay=inf: must be a finite number",
    ]


def test_valid_prices_pass_and_are_the_runs():
    config = _config(
        **{"cost.mode": "per_image_epoch", "cost.scoring_fraction_of_image_epoch": 0.0}
    )
    pricing = Settings.from_config(config, 1000).pricing
    assert pricing.scoring_fraction_of_image_epoch == 0.0
    assert pricing.training_usd("tiny", 1000, 0.0) == pytest.approx(0.0003 / 200 * 0.01 * 1000)


def test_a_nan_price_leaves_nothing_behind_so_the_corrected_command_runs(tmp_path):
    workdir = tmp_path / "run"
    config = _config(**{"cost.usd_per_device_hour.cpu": NAN})
    with pytest.raises(ValueError, match=r"cost\.usd_per_device_hour\.cpu=nan"):
        run.mcal(config, str(workdir))
    # No config.json (nor anything else) to refuse the corrected command with.
    assert not workdir.exists()


def test_a_shift_out_of_the_images_is_refused_before_anything_is_written(tmp_path):
    workdir = tmp_path / "run"
    config = _config(**{"final_train.test_time_shift": 28})
    with pytest.raises(ValueError, match=r"final_train\.test_time_shift=28: must be in \[0, "):
        run.mcal(config, str(workdir))
    assert not workdir.exists()


# ---------------------------------------------------------------------------- classes


def _answers(labels):
    text = "index,label\n" + "".join(f"{i},{label}\n" for i, label in enumerate(labels))
    return answers.parse_csv(text, "q/answers/test.csv")


def _refusal(labels):
    with pytest.raises(AnswerError) as error:
        answers.check_new_classes(_answers(labels), "q/answers/test.csv")
    return str(error.value)


def test_class_names_that_differ_by_case_or_spaces_are_refused():
    message = _refusal(["dog", "cat"] * 5 + ["Dog", "Dog", "c at", "c at"])
    assert message.startswith("q/answers/test.csv: the first answers name the run's classes")
    assert "'Dog' (line 12) and 'dog' (line 2) differ only in case or spaces" in message
    assert "'c at' (line 14) and 'cat' (line 3) differ only in case or spaces" in message
    assert "Fix the answers and rerun the same command, or name the classes with data.classes" in (
        message
    )


def test_a_truncated_last_line_is_refused():
    message = _refusal(["cat", "dog"] * 5 + ["ca"])
    assert "'ca' (line 12) is given once" in message


def test_names_one_letter_apart_are_refused():
    for slip in ("horze", "hose", "hrose", "hoarse"):  # changed, dropped, swapped, added
        message = _refusal(["horse", "zebra"] * 3 + [slip] * 2)
        pair = sorted([("'horse'", "(line 2)"), (f"'{slip}'", "(line 8)")])
        assert f"{' '.join(pair[0])} and {' '.join(pair[1])} differ by one letter" in message


def test_numbers_among_names_are_refused():
    message = _refusal(["cat", "dog"] * 3 + ["3", "3"])
    assert "numbers among names: '3' (line 8) beside 'cat' (line 2), 'dog' (line 3)" in message


def test_a_class_given_once_is_refused_and_the_line_of_a_label_studio_task_is_named():
    tasks = "".join(
        f'{{"data": {{"index": {i}}}, "annotations": [{{"result": [{{"type": "choices", '
        f'"value": {{"choices": ["{label}"]}}}}]}}]}},'
        for i, label in enumerate(["cat", "cat", "eel", "dog", "dog"])
    )
    parsed = answers.parse_labelstudio(f"[{tasks[:-1]}]", "q/answers/test.json", "test")
    with pytest.raises(AnswerError, match=r"'eel' \(task 3\) is given once"):
        answers.check_new_classes(parsed, "q/answers/test.json")


@pytest.mark.parametrize(
    "labels",
    [
        ["cat", "dog", "eel"] * 3,
        ["car", "cat", "cow"] * 2,  # short names one letter apart: words, not slips
        ["type1", "type2", "type10"] * 2,  # numbered series
        ["pine", "pineapple", "sea", "seal"] * 2,  # one name the start of another
        ["golden retriever", "goldfish", "Labrador"] * 2,
        ["0", "1", "2", "10"] * 2,  # numbers alone: 0..10
    ],
)
def test_answers_that_name_classes_plainly_pass(labels):
    answers.check_new_classes(_answers(labels), "q/answers/test.csv")


def _people_run(tmp_path):
    """(settings, workdir, pool, T) of a run labeled by people through the workdir's queue,
    its classes learned from the answers for T."""
    config = _config(**{"labeling.service": "queue", "labeling.usd_per_label": 0.04})
    settings = Settings.from_config(config, 1000)
    pool = data.Dataset(np.zeros((30, 2, 2, 1), np.uint8), None, 0, "flat")
    return settings, Workdir(tmp_path / "run"), pool, np.arange(0, 30, 3)


def test_slips_in_the_first_answers_are_refused_before_classes_are_recorded(tmp_path):
    settings, workdir, pool, first = _people_run(tmp_path)
    with pytest.raises(LabelsAwaited, match="10 labels awaited for purchase 'test'"):
        labeling.classes_from_first_answers(settings, workdir, pool, first)
    answer = tmp_path / "run" / "queue" / "answers" / "test.csv"
    answer.parent.mkdir()
    labels = ["dog", "cat"] * 4 + ["Dog", "ca"]
    answer.write_text(
        "index,label\n" + "".join(f"{i},{y}\n" for i, y in zip(first, labels, strict=True))
    )
    with pytest.raises(AnswerError) as error:
        labeling.classes_from_first_answers(settings, workdir, pool, first)
    assert str(error.value).startswith(f"{answer}: the first answers name the run's classes")
    assert "'Dog' (line 10) and 'dog' (line 2) differ only in case" in str(error.value)
    assert "'ca' (line 11) is given once" in str(error.value)
    assert workdir.read_classes() is None  # nothing learned for good
    # The answers fixed, the same call learns the classes.
    labels[-2:] = ["dog", "cat"]
    answer.write_text(
        "index,label\n" + "".join(f"{i},{y}\n" for i, y in zip(first, labels, strict=True))
    )
    assert labeling.classes_from_first_answers(settings, workdir, pool, first) == ("cat", "dog")
    assert workdir.read_classes() == ("cat", "dog")


# ---------------------------------------------------------------------------- image folders


def _save(path, value=1):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)


def test_a_symlinked_class_folder_and_a_symlinked_image_are_read(tmp_path):
    images, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    _save(images / "cat" / "1.png", 10)
    _save(images / "dog" / "2.png", 20)
    _save(elsewhere / "eels" / "3.png", 30)
    _save(elsewhere / "4.png", 40)
    os.symlink(elsewhere / "eels", images / "eel")
    os.symlink(elsewhere / "4.png", images / "dog" / "4.png")
    pool = load_dataset(f"folder:{images}", image_shape="4x4x1")
    assert pool.paths == ("cat/1.png", "dog/2.png", "dog/4.png", "eel/3.png")
    assert pool.class_names == ("cat", "dog", "eel")
    np.testing.assert_array_equal(pool.labels, [0, 1, 1, 2])
    assert pool.images[:, 0, 0, 0].tolist() == [10, 20, 40, 30]


def test_a_link_back_into_the_folder_is_refused(tmp_path):
    _save(tmp_path / "cat" / "1.png")
    os.symlink(tmp_path / "cat", tmp_path / "cat" / "again")
    with pytest.raises(DataError, match=r"cat/again: the folder .*/cat again, through a symbolic"):
        load_dataset(f"folder:{tmp_path}", image_shape="4x4x1")


def test_a_folder_that_cannot_be_read_is_named(tmp_path, monkeypatch):
    _save(tmp_path / "cat" / "1.png")
    _save(tmp_path / "dog" / "2.png")
    scandir = os.scandir

    def denied(path="."):  # as for a folder without read permission (root reads all)
        if os.path.basename(path) == "dog":
            raise PermissionError(13, "Permission denied", path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(DataError, match=r"dog: cannot read this folder \(Permission denied\)"):
        load_dataset(f"folder:{tmp_path}", image_shape="4x4x1")


def test_a_file_name_that_is_not_utf8_is_named(tmp_path):
    _save(tmp_path / "a.png")
    bad = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    with open(bad, "wb") as f:
        f.write((tmp_path / "a.png").read_bytes())
    with pytest.raises(DataError, match=r"caf\\xe9\.png: the file name is not valid UTF-8"):
        load_dataset(f"folder:{tmp_path}", image_shape="4x4x1")


def test_an_image_too_large_for_pillow_is_named(tmp_path, monkeypatch):
    _save(tmp_path / "a.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # 40x40 is 4 times that
    with pytest.raises(
        DataError, match=r"huge\.png: refused by Pillow as a possible decompression"
    ):
        load_dataset(f"folder:{tmp_path}", image_shape="4x4x1")


def test_an_empty_class_folder_is_refused(tmp_path):
    _save(tmp_path / "cat" / "1.png")
    _save(tmp_path / "dog" / "2.png")
    (tmp_path / "eel").mkdir()
    (tmp_path / "eel" / "notes.txt").write_text("no image")
    (tmp_path / ".cache").mkdir()  # hidden: ignored
    with pytest.raises(DataError, match=rf"{tmp_path}/eel: a class folder without images"):
        load_dataset(f"folder:{tmp_path}", image_shape="4x4x1")
    # Flat folders have no classes: an empty subfolder there changes nothing.
    _save(tmp_path / "top.png")
    assert load_dataset(f"folder:{tmp_path}", image_shape="4x4x1").labels is None


# ---------------------------------------------------------------------------- byte-order marks


def test_a_request_re_saved_with_a_bom_is_the_same_request(tmp_path):
    queue = Queue(tmp_path / "q")
    paths = ("a.png", "b b.png", "c,d.png")
    queue.post("test", np.array([0, 2]), paths)
    request = tmp_path / "q" / "requests" / "test.csv"
    # Re-saved by a spreadsheet: a BOM, CRLF line ends, every cell quoted.
    request.write_bytes(b'\xef\xbb\xbf"index","path"\r\n"0","a.png"\r\n"2","c,d.png"\r\n')
    queue.post("test", np.array([0, 2]), paths)
    assert request.read_text() == 'index,path\n0,a.png\n2,"c,d.png"\n'  # written again
    with pytest.raises(ValueError, match="holds another run's requests"):
        queue.post("test", np.array([0, 1]), paths)


def test_answer_files_with_a_bom_are_read(tmp_path):
    queue = Queue(tmp_path / "q")
    (tmp_path / "q" / "answers").mkdir(parents=True)
    answer = tmp_path / "q" / "answers" / "test.json"
    export = '[{"data": {"index": 3}, "annotations": [{"result": [{"type": "choices", '
    export += '"value": {"choices": ["cat"]}}]}]}]'
    answer.write_bytes(b"\xef\xbb\xbf" + export.encode())
    [read] = queue.read("test", np.array([3]))
    assert (read.index, read.label) == (3, "cat")
    os.remove(answer)
    (tmp_path / "q" / "answers" / "test.csv").write_bytes(b"\xef\xbb\xbfindex,label\r\n3,dog\r\n")
    [read] = queue.read("test", np.array([3]))
    assert (read.index, read.label, read.where.endswith("test.csv, line 2")) == (3, "dog", True)
