"""benchmarks.recipe_curve: a finished run's B, cut and retrained with a recipe."""

import json

import pytest

from benchmarks import recipe_curve


@pytest.fixture
def finished(finished_synthetic_run):
    return finished_synthetic_run[0]


def test_the_round_recipe_at_each_round_reproduces_that_rounds_classifier(finished):
    """Same cut of B, same recipe, same seed: each round's own certified count."""
    with open(f"{finished}/metrics.jsonl") as f:
        rounds = [json.loads(line) for line in f]
    with open(f"{finished}/ledger.jsonl", "rb") as f:
        before = f.read()
    rows = recipe_curve.recipe_curve(finished, ["round"])
    assert [r["b"] for r in rows] == [r["train_size"] for r in rounds]
    assert [r["machine"] for r in rows] == [r["certified_machine"] for r in rounds]
    assert all(r["bill_usd"] == pytest.approx(0.04 * (1000 - r["machine"])) for r in rows)
    with open(f"{finished}/ledger.jsonl", "rb") as f:
        assert f.read() == before  # the run's folder is only read


def test_changes_and_cuts_are_checked_before_training(finished):
    assert recipe_curve.parse_changes(["min_steps=40", "horizontal_flip=true"]) == {
        "min_steps": 40,
        "horizontal_flip": True,
    }
    with pytest.raises(ValueError, match="not FIELD=VALUE"):
        recipe_curve.parse_changes(["min_step=40"])
    with pytest.raises(ValueError, match="unknown"):
        recipe_curve.recipe_curve(finished, ["fancy"])
    with pytest.raises(ValueError, match="not in"):
        recipe_curve.recipe_curve(finished, ["round"], sizes=[10**6])
