"""The learning-curve benchmark: every measurement is written, the step counts follow the
recipe, and the error at θ is taken over the right items."""

import json
import os

import numpy as np
import pytest
from absl.testing import flagsaver

from benchmarks import learning_curve as bench
from configs import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_error_at_thetas_on_a_hand_example():
    # Most confident first: items 3, 0, 4 (0.8 tied with 0.8: item order), 1, 2.
    confidence = np.array([0.9, 0.2, 0.1, 0.95, 0.8, 0.8])
    correct = np.array([True, False, False, True, True, False])
    errors, wrong, items = bench.error_at_thetas(confidence, correct, [1.0, 0.5, 0.6, 0.1])
    # θ = 1: all 6, 3 wrong; 0.5: items 3, 0, 4, none wrong; 0.6: ⌈3.6⌉ = 4 adds item 5
    # (wrong); 0.1: ⌈0.6⌉ = 1, item 3.
    assert items == [6, 3, 4, 1] and wrong == [3, 0, 1, 0]
    assert errors == [0.5, 0.0, 0.25, 0.0]
    assert bench.error_at_thetas(np.zeros(100), np.ones(100, bool), [0.8])[2] == [80]
    with pytest.raises(ValueError, match="θ"):
        bench.error_at_thetas(confidence, correct, [0.0])


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    config = synthetic.get_config("600")  # tiny model, batch 32, one device
    config.train.epochs = 2  # 50 items: 2 × 2 = 4 steps, 100 items: 2 × 4 = 8
    out = str(tmp_path_factory.mktemp("lc") / "curve.jsonl")
    records = bench.measure_curves(
        config, sizes=[50, 100], min_steps=[0, 20], seeds=[0], held_out=100, out=out
    )
    return config, records, out


def test_every_measurement_is_written_with_its_numbers(measured):
    _, records, out = measured
    with open(out) as f:
        lines = [json.loads(line) for line in f]
    assert lines == records
    assert [(r["min_steps"], r["size"]) for r in lines] == [(0, 50), (0, 100), (20, 50), (20, 100)]
    for r in lines:
        assert set(bench.REQUIRED_KEYS) <= set(r)
        assert r["model"] == "tiny" and r["seed"] == 0 and r["held_out"] == 100
        assert r["thetas"] == [1.0, 0.8] and r["items"] == [100, 80]
        assert all(0 <= e <= 1 for e in r["errors"])
        assert r["errors"] == [w / n for w, n in zip(r["wrong"], r["items"], strict=True)]
        assert r["images"] == 32 * r["steps"] and r["device_seconds"] > 0
        assert np.isfinite(r["final_loss"])
    # Only the first training compiles; the timings leave it out.
    assert lines[0]["compile_seconds"] > 0 and lines[1]["compile_seconds"] == 0


def test_steps_follow_the_recipe_and_its_floor(measured):
    config, records, _ = measured
    for r in records:
        passes_steps = config.train.epochs * -(-r["size"] // config.train.batch_size)
        if r["min_steps"] == 0:
            assert r["steps"] == passes_steps and r["passes"] == config.train.epochs
        else:
            assert r["steps"] >= r["min_steps"] == 20
            assert r["passes"] == pytest.approx(r["steps"] / -(-r["size"] // 32))


def test_summary_means_over_seeds():
    base = {"thetas": [1.0, 0.8], "model": "tiny", "dataset": "d"}
    records = [
        dict(base, min_steps=0, size=50, seed=s, steps=4, errors=[e, e / 2])
        for s, e in enumerate([0.2, 0.4])
    ] + [dict(base, min_steps=0, size=100, seed=0, steps=8, errors=[0.1, 0.0])]
    rows = bench.summarize(records)
    assert [(r["size"], r["seeds"]) for r in rows] == [(50, 2), (100, 1)]
    assert rows[0]["mean"] == pytest.approx([0.3, 0.15])
    assert rows[0]["std"] == pytest.approx([0.1414214, 0.0707107]) and rows[1]["std"] is None
    assert "0.3000 ± 0.1414" in bench.format_summary(rows)


def test_main_parses_flags_then_summarizes_and_plots(monkeypatch, capsys, tmp_path):
    calls = []

    def fake(config, **kwargs):
        calls.append((config, kwargs))
        return [
            {"model": "tiny", "dataset": "syn", "min_steps": f, "size": s, "seed": 0,
             "steps": 10, "thetas": kwargs["thetas"], "errors": [1 / s, 0.5 / s]}
            for f in kwargs["min_steps"] for s in kwargs["sizes"]
        ]  # fmt: skip

    monkeypatch.setattr(bench, "measure_curves", fake)
    out, plot = tmp_path / "lc.jsonl", tmp_path / "lc.png"
    given = dict(
        config=os.path.join(ROOT, "configs", "synthetic.py") + ":600",
        sizes="50,100",
        min_steps="0,20",
        seeds="0,1",
        held_out="100",
        thetas="1,0.5",
        semi_supervised="true",
        out=str(out),
        plot=str(plot),
    )
    with flagsaver.as_parsed(**given):
        bench.main(["benchmarks.learning_curve"])
    ((config, kwargs),) = calls
    assert config.models == ("tiny",)
    assert kwargs == dict(
        sizes=[50, 100], min_steps=[0, 20], seeds=[0, 1], held_out=100, thetas=[1.0, 0.5],
        semi_supervised=True, out=str(out),
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "err@0.5" in printed and "total wall time" in printed
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_semi_supervised_curve_trains_each_size_twice(tmp_path):
    config = synthetic.get_config("600")
    config.train.epochs = 2
    config.train.pseudo_fraction = 0.25
    records = bench.measure_curves(
        config, sizes=[50], min_steps=[20], seeds=[0], held_out=100, semi_supervised=True,
        out=str(tmp_path / "c.jsonl"),
    )  # fmt: skip
    assert [r["semi_supervised"] for r in records] == [False, True]
    plain, semi = records
    assert semi["steps"] == plain["steps"] == 20
    # Each step also fits one batch of the teacher's pseudo-labels.
    assert semi["images"] == 2 * plain["images"] == 2 * 32 * 20
    rows = bench.summarize(records)
    assert [r["semi_supervised"] for r in rows] == [False, True]
    assert "yes" in bench.format_summary(rows)
