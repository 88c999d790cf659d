"""summary.json and baselines.json as typed records: what `finish` writes is what every
reader gets back, a file of another shape is refused naming the field, the machine labels'
own bound stands next to the overall one, and the budget says what it bounded."""

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
from mcal_jax.summary import Budget, Comparison, Summary, read_summary

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
    """Three runs on one pool: plain; with every T_cert answer wrong, so that only ε·N
    machine labels pass, all of them wrong on T_cert; and with a 20 USD budget."""
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
        "budget": _simulated_run(folder, "budget", truth, truth, budget_usd=20.0),
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
        (lambda s: s.pop("budget"), "field 'budget' is missing"),
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


def test_overall_machine_labels_at_chance_are_said_next_to_the_overall_bound(runs, tmp_path):
    """Every T_cert answer is wrong: `overall` still certifies ε·N machine labels among the
    human ones, under an overall bound of ε, while their own bound says they are no better
    than guessing. The summary, its report and the run's last line say both."""
    summary, workdir = runs["at_chance"]
    error = summary.error
    assert 0 < summary.counts.machine <= EPSILON * N
    assert error.upper_bound == error.upper_bound_overall <= EPSILON
    assert error.upper_bound_machine_subset >= 1 - 1 / CLASSES  # chance error: 90%
    assert summary.machine_labels_at_chance
    line = summary.headline()
    overall = f"error bound {error.upper_bound_overall:.4f} over all {N} items"
    subset = f"{error.upper_bound_machine_subset:.4f} on the {summary.counts.machine} machine"
    assert overall in line and subset in line
    assert "at or above chance error 0.9000: they are certified only through the overall" in line
    report.write_report(workdir)
    with open(os.path.join(workdir, "report", "summary.md")) as f:
        text = f.read()
    assert f"Certified: {overall} (overall constraint, ε = 0.05), {subset} labels alone" in text
    bound = report.format_cell(error.upper_bound_machine_subset)
    assert f"| error.upper_bound_machine_subset | {bound} |" in text
    # A classifier that learned: both bounds, nothing said about chance.
    plain = runs["plain"][0]
    assert not plain.machine_labels_at_chance and "chance" not in plain.headline()
    assert f"{plain.error.upper_bound_machine_subset:.4f} on the" in plain.headline()


def test_the_budget_caps_the_loop_and_the_summary_says_what_was_paid_beyond_it(runs):
    summary, workdir = runs["budget"]
    with open(os.path.join(workdir, "rounds.jsonl")) as f:
        last = [json.loads(line) for line in f][-1]
    budget, cost = summary.budget, summary.cost_usd
    assert last["reason"].startswith("budget cap reached") and budget.stopped_loop
    assert budget.usd == 20.0 and budget.loop_usd == last["spent_usd"] >= 20.0
    # T_cert and the residual were bought after the loop anyway, past the budget.
    assert cost.human_labels_residual > 0 and cost.human_labels_certify > 0
    assert budget.after_loop_usd == pytest.approx(cost.total - budget.loop_usd)
    assert budget.after_loop_usd >= cost.human_labels_residual + cost.human_labels_certify
    assert budget.beyond_usd == pytest.approx(cost.total - 20.0) and budget.beyond_usd > 0
    assert "budget 20.00 USD stopped the loop (spent" in summary.headline()
    assert f"cost {budget.after_loop_usd:.2f} USD more, {budget.beyond_usd:.2f} USD beyond" in (
        summary.headline()
    )
    report.write_report(workdir)
    with open(os.path.join(workdir, "report", "summary.md")) as f:
        assert "\nBudget 20.00 USD stopped the loop (spent" in f.read()
    # Without a budget: nothing capped, nothing beyond, and the line says nothing of it.
    plain = runs["plain"][0].budget
    assert (plain.usd, plain.stopped_loop, plain.beyond_usd) == (None, False, None)
    assert "budget" not in runs["plain"][0].headline()


def test_budget_of_a_run_that_stayed_under_it():
    budget = Budget.of(50.0, stopped_loop=False, loop_usd=30.0, total_usd=42.5)
    assert (budget.after_loop_usd, budget.beyond_usd) == (12.5, 0.0)
    assert Budget.of(None, False, 30.0, 42.5).beyond_usd is None
