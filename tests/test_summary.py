"""summary.json and baselines.json as typed records: what `finish` writes is what every
reader gets back, and a file of another shape is refused naming the field."""

import json
import os
import re

import numpy as np
import pytest
from summaries import baselines_json, summary_json

from benchmarks import certificate
from configs import synthetic
from mcal_jax import report, run, sweep
from mcal_jax.simulated_learner import ErrorModel, SimulatedLearner
from mcal_jax.summary import Comparison, Summary, read_summary

N, EPSILON, CLASSES = 2000, 0.05, 10


def _simulated_run(folder, name, sold, truth, **mcal):
    """A whole run on ``len(sold)`` items (the simulated learner errs against ``truth``,
    people sell ``sold``) under the `overall` constraint; its summary and workdir."""
    pool = os.path.join(folder, f"{name}.npz")
    np.savez(pool, images=np.zeros((len(sold), 1, 1, 1), np.uint8), labels=sold)
    config = certificate.run_config(pool, "overall", 3, peeking=False)
    with config.unlocked():
        for field, value in mcal.items():
            config.mcal[field] = value
    model = ErrorModel(floor=0.01, scale=0.5, gamma=0.6)
    learner = SimulatedLearner(truth, model, num_classes=CLASSES, seed=3)
    workdir = os.path.join(folder, name)
    return run.mcal(config, workdir, lambda dataset: learner), workdir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs on one pool: plain, and with every T_cert answer wrong, so that only ε·N
    machine labels pass, all of them wrong on T_cert."""
    folder = str(tmp_path_factory.mktemp("summary"))
    truth = np.random.default_rng(0).integers(0, CLASSES, N)
    plain = _simulated_run(folder, "plain", truth, truth)
    with open(os.path.join(plain[1], "ledger.jsonl")) as f:
        cert = next(r for r in map(json.loads, f) if r["key"] == "certify")["indices"]
    sold = truth.copy()
    sold[cert] = (sold[cert] + 1) % CLASSES
    return {
        "plain": plain,
        "at_chance": _simulated_run(folder, "at_chance", sold, truth),
    }


def test_a_summary_and_its_json_make_a_round_trip(runs, tmp_path):
    value = summary_json(baselines=baselines_json({"0.05": 41.5, "0.1": 47.0}, 30.25))
    summary = Summary.from_json(value)
    assert summary.counts.machine == 1200 and summary.classes == ("0", "1", "2", "3")
    assert summary.baselines is not None and summary.baselines.al["0.1"].total_usd == 47.0
    assert summary.to_json() == value
    assert Summary.from_json(json.loads(json.dumps(summary.to_json()))) == summary
    assert "baselines" not in Summary.from_json(summary_json()).to_json()  # none: not written
    # What `finish` wrote is what it returned, and what every reader reads back.
    for returned, workdir in runs.values():
        path = os.path.join(workdir, "summary.json")
        assert read_summary(path) == returned
        with open(path) as f:
            assert returned.to_json() == json.load(f)
    assert read_summary(tmp_path / "summary.json") is None  # an unfinished run


def test_baselines_json_is_a_comparison_with_a_round_trip():
    value = baselines_json({"0.02": 44.0, "0.05": 41.5}, 30.25)
    comparison = Comparison.from_json(value)
    assert comparison.oracle_al.delta_fraction == 0.05 and comparison.hindsight.round == 7
    assert comparison.al["0.02"].train_sizes == (100, 200, 300)
    assert comparison.to_json() == value


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s["error"].pop("upper_bound_machine_subset"),
            "field 'error.upper_bound_machine_subset' is missing",
        ),
        (lambda s: s.pop("threshold"), "field 'threshold' is missing"),
        (lambda s: s["counts"].update(machine=12.5), "field 'counts.machine' is 12.5, not int"),
        (lambda s: s.update(extra=1), "unknown field 'extra'"),
        # An AL entry as a bare number: no report reads it as a total any more.
        (
            lambda s: s["baselines"]["al"].update({"0.02": 44.0}),
            "field 'baselines.al.0.02' is 44.0, not an object",
        ),
        (
            lambda s: s["baselines"]["al"]["0.05"].pop("total_usd"),
            "field 'baselines.al.0.05.total_usd' is missing",
        ),
    ],
)
def test_a_summary_json_of_another_shape_is_refused_naming_the_field(tmp_path, change, message):
    value = summary_json(baselines=baselines_json({"0.05": 41.5}, 30.25))
    change(value)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(value))
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
        read_summary(path)
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
        report.write_report(str(tmp_path))  # refused before anything is drawn
    assert not (tmp_path / "report").exists()


def test_a_sweep_point_whose_summary_is_of_another_shape_fails_naming_the_field(tmp_path):
    def runner(config, workdir):
        os.makedirs(workdir, exist_ok=True)
        value = summary_json(total=float(config.seed))
        if config.seed == 1:
            del value["cost_usd"]["total"]
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(value, f)

    points = [{"seed": 0}, {"seed": 1}]
    results = sweep.run_sweep(synthetic.get_config(""), points, str(tmp_path), runner=runner)
    assert [r["status"] for r in results] == ["finished", "failed"]
    assert results[0]["summary"].cost_usd.total == 0.0 and results[1]["summary"] is None
    assert "field 'cost_usd.total' is missing" in results[1]["error"]
