"""benchmarks.test_size: re-certifying a finished run with subsets of its T_cert, or with
T_cert drawn again."""

import json

import numpy as np
import pytest

from benchmarks import test_size


@pytest.fixture
def finished(finished_synthetic_run):
    return finished_synthetic_run


def test_the_whole_t_gives_the_run_its_own_bill(finished):
    workdir, summary = finished
    rng = np.random.default_rng(0)
    finished_run = test_size.load_run(workdir)
    assert len(finished_run.test) == summary.counts.certify > 20
    [whole] = test_size.recertify(finished_run, len(finished_run.test) / 1000, 1, rng)
    assert whole.machine == summary.counts.machine
    assert whole.usd == pytest.approx(summary.cost_usd.total)
    assert whole.true_error == pytest.approx(summary.error.true_overall)
    assert whole.bound == pytest.approx(summary.error.upper_bound_overall)


def test_a_smaller_t_pays_fewer_test_labels_and_certifies_what_its_subset_allows(finished):
    workdir, summary = finished
    with open(f"{workdir}/config.json") as f:
        config = json.load(f)
    price = summary.usd_per_label
    run = test_size.load_run(workdir)
    half = len(run.test) // 2
    draws = test_size.recertify(run, half / 1000, 20, np.random.default_rng(1))
    assert len(draws) == 20
    for x in draws:
        # Every item not machine-labeled is a human label; the T_cert items left out of
        # T' are among them or machine-labeled, never paid twice.
        human = 1000 - x.machine
        assert x.usd == pytest.approx(
            price * human + summary.cost_usd.training + summary.cost_usd.scoring
        )
        assert x.bound <= config["mcal"]["epsilon"] + 1e-12
    assert len({x.machine for x in draws}) > 1  # the subsets differ
    larger = (len(run.test) + 1) / 1000
    assert test_size.recertify(run, larger, 5, np.random.default_rng(0)) == []  # > |T_cert|


def test_fresh_draws_show_the_luck_of_t_cert_and_go_beyond_its_size(finished):
    workdir, summary = finished
    run = test_size.load_run(workdir)
    own = len(run.test) / 1000
    draws = test_size.recertify(run, own, 30, np.random.default_rng(2), fresh=True)
    assert len(draws) == 30
    price, device = summary.usd_per_label, summary.cost_usd.training + summary.cost_usd.scoring
    for x in draws:
        assert x.usd == pytest.approx(price * (1000 - x.machine) + device)
    # The same size as the run's T_cert, drawn again: the bill moves with the draw.
    assert len({x.machine for x in draws}) > 1
    larger = (len(run.test) + 50) / 1000
    assert len(test_size.recertify(run, larger, 3, np.random.default_rng(0), fresh=True)) == 3
    # T' never overlaps B or T_plan: drawing all of what is left leaves nothing to label.
    left = 1000 - len(run.train)
    assert test_size.recertify(run, left / 1000, 1, np.random.default_rng(0), fresh=True) == []
