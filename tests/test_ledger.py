"""Tests for mcal_jax.ledger: durability, idempotent reruns, no double purchases, crash safety."""

import json
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from mcal_jax.ledger import Ledger, LedgerCorruptError


class CountingLabeler:
    """Labels item i as i % 7 and counts what it sells."""

    def __init__(self, usd_per_label: float = 0.04):
        self.usd_per_label = usd_per_label
        self.calls = 0
        self.items = 0
        self.keys = []  # the purchases it was asked for

    def label(self, indices, *, key=""):
        self.calls += 1
        self.items += len(indices)
        self.keys.append(key)
        return (np.asarray(indices) % 7).astype(np.int32)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "run" / "ledger.jsonl"


def file_lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_buy_persists_across_reopen(path):
    ledger = Ledger(path)
    assert path.exists() and ledger.records() == []
    labeler = CountingLabeler()
    test_idx, train_idx = np.array([5, 3, 11]), np.arange(20, 30)
    np.testing.assert_array_equal(
        ledger.buy(labeler, test_idx, purpose="test", key="test"), [5, 3, 4]
    )
    ledger.buy(labeler, train_idx, purpose="train", key="round0/train")
    assert labeler.keys == ["test", "round0/train"]  # a labeler knows which purchase it sells
    ledger.charge(category="training", usd=0.25, key="round0/training", device_seconds=12.5)
    # Everything is on disk already: a second Ledger reads the same state.
    reopened = Ledger(path)
    assert reopened.records() == ledger.records()
    assert reopened.totals() == ledger.totals()
    assert reopened.totals()["human_labels_test"] == pytest.approx(3 * 0.04)
    indices, labels = reopened.labels()
    np.testing.assert_array_equal(indices, np.concatenate([test_idx, train_idx]))
    np.testing.assert_array_equal(labels, indices % 7)
    assert labels.dtype == np.int32 and indices.dtype == np.int64
    np.testing.assert_array_equal(reopened.bought("train")[0], train_idx)
    np.testing.assert_array_equal(reopened.bought("test")[1], [5, 3, 4])
    assert reopened.bought("residual")[0].shape == (0,)
    first = json.loads(file_lines(path)[0])
    assert first == {
        "kind": "purchase",
        "key": "test",
        "purpose": "test",
        "indices": [5, 3, 11],
        "labels": [5, 3, 4],
        "usd_per_label": 0.04,
        "usd": pytest.approx(0.12),
    }
    assert reopened.has("round0/training") and not reopened.has("round1/train")


def test_same_key_returns_stored_labels_without_buying(path):
    labeler = CountingLabeler()
    first = Ledger(path).buy(labeler, np.arange(10), purpose="train", key="round0/train")
    before = Ledger(path).totals()
    for ledger in (Ledger(path), Ledger(path)):  # A rerun, twice.
        again = ledger.buy(labeler, np.arange(10), purpose="train", key="round0/train")
        np.testing.assert_array_equal(again, first)
        assert ledger.totals() == before
    assert labeler.calls == 1 and labeler.items == 10
    assert len(file_lines(path)) == 1


def test_same_key_with_other_indices_or_purpose_raises(path):
    ledger = Ledger(path)
    labeler = CountingLabeler()
    ledger.buy(labeler, np.arange(10), purpose="train", key="round0/train")
    with pytest.raises(ValueError, match="round0/train"):
        ledger.buy(labeler, np.arange(1, 11), purpose="train", key="round0/train")
    with pytest.raises(ValueError, match="round0/train"):
        ledger.buy(labeler, np.arange(10)[::-1], purpose="train", key="round0/train")
    with pytest.raises(ValueError, match="'test'"):
        ledger.buy(labeler, np.arange(10), purpose="test", key="round0/train")
    assert labeler.calls == 1


def test_an_item_is_never_bought_twice(path):
    ledger = Ledger(path)
    labeler = CountingLabeler()
    ledger.buy(labeler, np.array([1, 2, 3]), purpose="test", key="test")
    with pytest.raises(ValueError, match=r"indices 3 .*\['test'\]"):
        ledger.buy(labeler, np.array([3, 4, 5]), purpose="train", key="round0/train")
    with pytest.raises(ValueError, match="indices 9"):
        ledger.buy(labeler, np.array([9, 8, 9]), purpose="train", key="round0/train")
    assert labeler.calls == 1 and len(file_lines(path)) == 1
    assert not ledger.has("round0/train")
    ledger.buy(labeler, np.array([4, 5, 1000]), purpose="train", key="round0/train")
    with pytest.raises(ValueError, match="1000"):
        ledger.buy(labeler, np.array([1000]), purpose="residual", key="residual")


def test_totals_by_reason_match_hand_sums(path):
    ledger = Ledger(path)
    amazon, satyam = CountingLabeler(0.04), CountingLabeler(0.003)
    ledger.buy(amazon, np.arange(0, 100), purpose="test", key="test")
    ledger.buy(amazon, np.arange(100, 150), purpose="train", key="round0/train")
    ledger.buy(amazon, np.arange(150, 180), purpose="train", key="round1/train")
    ledger.buy(amazon, np.arange(1180, 1230), purpose="certify", key="certify")
    ledger.buy(satyam, np.arange(180, 1180), purpose="residual", key="residual")
    ledger.charge(category="training", usd=1.5, key="round0/training", device_seconds=3.0)
    ledger.charge(category="training", usd=np.float32(0.5), key="round1/training")
    ledger.charge(category="scoring", usd=0.125, key="round0/scoring", images=1180)
    expected = {
        "human_labels_test": 4.0,
        "human_labels_train": 3.2,
        "human_labels_certify": 2.0,
        "human_labels_residual": 3.0,
        "human_labels": 12.2,
        "training": 2.0,
        "scoring": 0.125,
        "total": 14.325,
    }
    totals = ledger.totals()
    assert totals.keys() == expected.keys()
    for name, usd in expected.items():
        assert totals[name] == pytest.approx(usd, rel=1e-12), name
    assert Ledger(path).totals() == totals


def test_charge_is_idempotent_by_key(path):
    ledger = Ledger(path)
    ledger.charge(category="training", usd=0.75, key="round0/training", device_seconds=30.0)
    ledger.charge(
        category="training", usd=np.float64(0.75), key="round0/training", device_seconds=30
    )
    Ledger(path).charge(
        category="training", usd=0.75, key="round0/training", device_seconds=np.float32(30.0)
    )
    assert len(file_lines(path)) == 1 and ledger.totals()["training"] == 0.75
    with pytest.raises(ValueError, match="round0/training"):
        ledger.charge(category="training", usd=0.8, key="round0/training", device_seconds=30.0)
    with pytest.raises(ValueError, match="round0/training"):
        ledger.charge(category="scoring", usd=0.75, key="round0/training", device_seconds=30.0)
    with pytest.raises(ValueError, match="round0/training"):
        ledger.charge(category="training", usd=0.75, key="round0/training", device_seconds=31)
    assert len(file_lines(path)) == 1


def test_bad_arguments_are_refused_before_anything_is_bought(path):
    ledger = Ledger(path)
    labeler = CountingLabeler()
    with pytest.raises(ValueError, match="'training'"):
        ledger.buy(labeler, [1], purpose="training", key="k")
    with pytest.raises(ValueError, match="''"):
        ledger.buy(labeler, [1], purpose="train", key="")
    with pytest.raises(ValueError, match="float"):
        ledger.buy(labeler, np.array([1.0]), purpose="train", key="k")
    with pytest.raises(ValueError, match="'gpu'"):
        ledger.charge(category="gpu", usd=1.0, key="c")
    with pytest.raises(ValueError, match="nan"):
        ledger.charge(category="scoring", usd=float("nan"), key="c")
    with pytest.raises(ValueError, match="details"):
        ledger.charge(category="scoring", usd=1.0, key="c", seconds=float("inf"))
    with pytest.raises(ValueError, match="details"):
        ledger.charge(category="scoring", usd=1.0, key="c", when=object())
    with pytest.raises(ValueError, match="usd_per_label"):
        ledger.buy(CountingLabeler(-1.0), [1], purpose="train", key="k")
    ledger.charge(category="scoring", usd=0.0, key="c")
    with pytest.raises(ValueError, match="is a charge"):
        ledger.buy(labeler, [1], purpose="train", key="c")
    assert labeler.calls == 0 and len(file_lines(path)) == 1


def test_labeler_returning_the_wrong_number_of_labels_records_nothing(path):
    class Short(CountingLabeler):
        def label(self, indices, *, key=""):
            return super().label(indices, key=key)[:-1]

    ledger = Ledger(path)
    with pytest.raises(ValueError, match="2 labels for 3 indices"):
        ledger.buy(Short(), [1, 2, 3], purpose="train", key="k")
    assert path.read_text() == "" and not ledger.has("k")
    ledger.buy(CountingLabeler(), [1, 2, 3], purpose="train", key="k")  # Not marked bought.


def test_torn_last_line_is_dropped_and_the_ledger_goes_on(path):
    ledger = Ledger(path)
    labeler = CountingLabeler()
    ledger.buy(labeler, np.arange(5), purpose="test", key="test")
    ledger.charge(category="training", usd=0.5, key="round0/training")
    intact = path.read_bytes()
    torn = json.dumps({"kind": "purchase", "key": "round0/train", "indices": [5, 6, 7, 8]})
    with open(path, "ab") as f:
        f.write(torn[: len(torn) // 2].encode())
    with pytest.warns(UserWarning, match=r"ledger\.jsonl: line 3 is incomplete"):
        reopened = Ledger(path)
    assert path.read_bytes() == intact  # The torn bytes are gone from the file too.
    assert [r["key"] for r in reopened.records()] == ["test", "round0/training"]
    assert not reopened.has("round0/train")
    reopened.buy(labeler, np.arange(5, 9), purpose="train", key="round0/train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        final = Ledger(path)
    assert [r["key"] for r in final.records()] == ["test", "round0/training", "round0/train"]
    np.testing.assert_array_equal(final.bought("train")[1], np.arange(5, 9) % 7)


def test_complete_last_line_without_newline_is_kept(path):
    ledger = Ledger(path)
    ledger.buy(CountingLabeler(), np.arange(3), purpose="test", key="test")
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    labeler = CountingLabeler()
    reopened = Ledger(path)
    np.testing.assert_array_equal(
        reopened.buy(labeler, np.arange(3), purpose="test", key="test"), [0, 1, 2]
    )
    reopened.charge(category="scoring", usd=0.1, key="scoring")
    assert labeler.calls == 0
    assert [r["key"] for r in Ledger(path).records()] == ["test", "scoring"]


@pytest.mark.parametrize(
    "bad_line, match",
    [
        ("{not json", "not a JSON record"),
        ("", "not a JSON record"),
        ('{"kind": "refund", "key": "x", "usd": 1}', "unknown record kind 'refund'"),
        (
            '{"kind": "charge", "key": "x", "usd": -1, "category": "training", "details": {}}',
            "bad usd",
        ),
        (
            '{"kind": "purchase", "key": "x", "purpose": "train", "indices": [1.5], "labels": [1],'
            ' "usd_per_label": 0.04, "usd": 0.04}',
            "indices",
        ),
        (
            '{"kind": "purchase", "key": "x", "purpose": "train", "indices": [1], "labels": [1],'
            ' "usd_per_label": 0.04, "usd": 0.08}',
            "usd 0.08",
        ),
        (
            '{"kind": "purchase", "key": "x", "purpose": "train", "indices": [2], "labels": [1],'
            ' "usd_per_label": 0.04, "usd": 0.04}',
            "buys again indices 2",
        ),
        (
            '{"kind": "charge", "key": "test", "usd": 1, "category": "training", "details": {}}',
            "key 'test' repeats line 1",
        ),
    ],
)
def test_corrupt_line_in_the_middle_raises_naming_file_and_line(path, bad_line, match):
    ledger = Ledger(path)
    ledger.buy(CountingLabeler(), np.arange(3), purpose="test", key="test")
    ledger.charge(category="training", usd=0.5, key="round0/training")
    lines = file_lines(path)
    path.write_text("\n".join([lines[0], bad_line, lines[1]]) + "\n")
    with pytest.raises(LedgerCorruptError, match=match) as info:
        Ledger(path)
    assert f"{path}, line 2" in str(info.value)


# A run that buys a round of labels and charges its training, round after round; rerun
# after a kill, it must resume where the ledger says it stopped.
CHILD = """
import sys
import numpy as np
from mcal_jax.labelers import SimulatedLabeler
from mcal_jax.ledger import Ledger
path, rounds, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
truth = (np.arange(rounds * size) * 7 % 10).astype(np.int32)
labeler = SimulatedLabeler(truth, 10, usd_per_label=0.04)
ledger = Ledger(path)
for r in range(rounds):
    ledger.buy(labeler, np.arange(r * size, (r + 1) * size), purpose="train", key=f"r{r}/train")
    ledger.charge(category="training", usd=0.5, key=f"r{r}/training", device_seconds=r)
print(labeler.labels_served)
"""
ROUNDS, SIZE = 40, 10_000


def check_consistent(path) -> int:
    """Checks a ledger left by CHILD holds whole rounds in order; returns the rounds bought."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ledger = Ledger(path)
    assert all("incomplete" in str(w.message) for w in caught)
    keys = [r["key"] for r in ledger.records()]
    bought = sum(k.endswith("/train") for k in keys)
    expected = [f"r{r}/{what}" for r in range(ROUNDS) for what in ("train", "training")]
    assert keys == expected[: len(keys)] and len(keys) in (2 * bought - 1, 2 * bought)
    indices, labels = ledger.labels()
    np.testing.assert_array_equal(indices, np.arange(bought * SIZE))
    np.testing.assert_array_equal(labels, indices * 7 % 10)
    return bought


def kill_mid_run(command, path, delay_seconds: float) -> None:
    """Starts CHILD and SIGKILLs it `delay_seconds` after its first new write."""
    size = path.stat().st_size if path.exists() else -1
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while child.poll() is None and (path.stat().st_size if path.exists() else -1) <= size:
        time.sleep(0.002)
    time.sleep(delay_seconds)
    child.kill()
    child.wait()


def test_killed_run_resumes_without_buying_twice(path):
    path.parent.mkdir()
    command = [sys.executable, "-c", CHILD, str(path), str(ROUNDS), str(SIZE)]
    rng = np.random.default_rng(0)
    bought = 0
    for _ in range(3):
        kill_mid_run(command, path, rng.uniform(0.0, 0.1))
        now = check_consistent(path)
        assert now >= bought
        bought = now
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    assert int(finished.stdout) == (ROUNDS - bought) * SIZE  # Only the missing rounds.
    assert check_consistent(path) == ROUNDS
    totals = Ledger(path).totals()
    assert totals["human_labels_train"] == pytest.approx(ROUNDS * SIZE * 0.04)
    assert totals["training"] == pytest.approx(ROUNDS * 0.5)


def test_move_sends_bought_items_to_another_purpose_once_and_for_free(path):
    ledger, labeler = Ledger(path), CountingLabeler()
    ledger.buy(labeler, [5, 3, 11, 9], purpose="test", key="test")
    ledger.buy(labeler, [20, 21], purpose="train", key="round1/train")
    before = ledger.totals()
    ledger.move([11, 3], source="test", purpose="train", key="round2/from_test")
    for reopened in (ledger, Ledger(path)):
        np.testing.assert_array_equal(reopened.bought("test")[0], [5, 9])
        np.testing.assert_array_equal(reopened.bought("test")[1], [5, 2])
        np.testing.assert_array_equal(reopened.bought("train")[0], [20, 21, 11, 3])
        np.testing.assert_array_equal(reopened.bought("train")[1], [6, 0, 4, 3])
        np.testing.assert_array_equal(reopened.purchased("test")[0], [5, 3, 11, 9])
        assert reopened.totals() == before  # paid once, as test labels
        assert reopened.has("round2/from_test")
    # A rerun repeats the move: nothing new on disk; another move under its key raises.
    lines = file_lines(path)
    Ledger(path).move([11, 3], source="test", purpose="train", key="round2/from_test")
    assert file_lines(path) == lines
    with pytest.raises(ValueError, match="already recorded as a move of 2 items"):
        Ledger(path).move([5], source="test", purpose="train", key="round2/from_test")
    # Only an item that serves the source now can move; a moved item cannot be bought again.
    with pytest.raises(ValueError, match="indices 3, 7 do not serve 'test'"):
        Ledger(path).move([3, 7, 9], source="test", purpose="train", key="round3/from_test")
    with pytest.raises(ValueError, match="twice"):
        Ledger(path).buy(labeler, [11], purpose="residual", key="residual")
    assert labeler.calls == 2


def test_a_move_record_that_costs_money_or_moves_a_stranger_is_corrupt(path):
    ledger = Ledger(path)
    ledger.buy(CountingLabeler(), [1, 2], purpose="test", key="test")
    good = file_lines(path)
    bad_usd = '{"kind":"move","key":"m","purpose":"train","source":"test","indices":[1],"usd":0.04}'
    stranger = '{"kind":"move","key":"m","purpose":"train","source":"test","indices":[7],"usd":0.0}'
    for line, problem in ((bad_usd, "costs 0.04 USD"), (stranger, "indices 7 do not serve")):
        path.write_text("\n".join([*good, line]) + "\n")
        with pytest.raises(LedgerCorruptError, match=f"line 2: move 'm'.*{problem}"):
            Ledger(path)
