"""The certificate end to end: the library's own loop, run many times with a simulated
learner (`benchmarks.certificate`), keeps the final labels' error under ε with probability
at least 1 − α; certifying on the labels the loop read (T_plan) does not."""

import json
import os
import shutil
import tempfile

import numpy as np
import pytest

from benchmarks import certificate
from mcal_jax import run
from mcal_jax.simulated_learner import ErrorModel, SimulatedLearner

ALPHA = 0.05
RUNS = 80


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Where the runs' workdirs go: memory where there is a RAM disk, as in the benchmark's
    own main (each run is a few dozen durable writes, and the workdirs are thrown away)."""
    if not os.path.isdir("/dev/shm"):
        yield str(tmp_path_factory.mktemp("certificate"))
        return
    folder = tempfile.mkdtemp(prefix="certificate_", dir="/dev/shm")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_sealed_certificate_holds_where_the_loop_stops_on_luck(folder):
    """The adversarial scenario: a flat profile just above what certifying all of U
    allows, fresh errors every round, the round's classifier labeling. The loop stops as
    soon as T_plan shows that everything could be machine-labeled, so it stops on T_plan's
    luck; T_cert, drawn at the start and read once, is not lucky with it."""
    scenario = certificate.SCENARIOS["adversarial"]
    row = certificate.run_scenario(scenario, "overall", RUNS, folder=folder)
    assert row["runs"] == RUNS and 0.0 <= row["ci_low"] <= row["violation_rate"] <= row["ci_high"]
    # At most α within sampling error: the interval's low end does not exceed α.
    assert row["ci_low"] <= ALPHA, row
    assert row["violation_rate"] <= ALPHA, row  # 1 of 80 at this commit
    # The runs do machine-label: the bill is far below human-only, the bound near ε.
    assert row["mean_usd"] < 0.5 * row["human_only_usd"] and row["mean_bound"] > 0.04


def test_certifying_on_the_labels_the_loop_read_breaks_the_bound(folder):
    """The same runs, certified on T_plan (the peeking variant): ε is broken far more often
    than α, so the test above can fail (14 of 80 at this commit)."""
    scenario = certificate.SCENARIOS["adversarial"]
    row = certificate.run_scenario(scenario, "overall", RUNS, peeking=True, folder=folder)
    assert row["peeking"] and row["ci_low"] > ALPHA, row


def _one_run(tmp_path, truth, sold, seed=3):
    """A whole run of ``len(truth)`` items whose classifier errs against ``truth`` while
    people sell ``sold`` as the labels; its summary, round records and ledger."""
    pool = tmp_path / f"pool_{abs(hash(sold.tobytes()))}.npz"
    np.savez(pool, images=np.zeros((len(sold), 1, 1, 1), np.uint8), labels=sold)
    config = certificate.run_config(str(pool), "overall", seed, peeking=False)
    model = ErrorModel(floor=0.01, scale=0.5, gamma=0.6)
    workdir = tmp_path / pool.stem
    learner = SimulatedLearner(truth, model, num_classes=10, seed=seed)
    summary = run.mcal(config, str(workdir), lambda dataset: learner)
    rounds = [json.loads(line) for line in (workdir / "rounds.jsonl").read_text().splitlines()]
    ledger = [json.loads(line) for line in (workdir / "ledger.jsonl").read_text().splitlines()]
    return summary, rounds, ledger


def test_no_decision_of_the_loop_reads_t_cert(tmp_path):
    """Two runs whose labels differ only on the items T_cert takes (the people selling
    them answer otherwise): every round, plan, batch, stop and device charge is the same,
    and so is T_cert itself; only the certificate, read once at the end, sees the
    difference."""
    truth = np.random.default_rng(0).integers(0, 10, 2000)
    summary, rounds, ledger = _one_run(tmp_path, truth, truth)
    at = [r["key"] for r in ledger].index("certify")  # bought after the last round
    cert = ledger[at]
    assert len(cert["indices"]) > 50 and at == len(ledger) - 1 - ledger[-1]["key"].count("resid")
    sold = truth.copy()
    sold[cert["indices"]] = (sold[cert["indices"]] + 1) % 10  # every T_cert answer differs
    other, other_rounds, other_ledger = _one_run(tmp_path, truth, sold)
    assert other_rounds == rounds and other_ledger[:at] == ledger[:at]
    assert other_ledger[at]["key"] == "certify"
    assert other_ledger[at]["indices"] == cert["indices"]
    assert other_ledger[at]["labels"] != cert["labels"]
    # Every T_cert item now looks wrong: only what ε·N allows of wrong labels passes.
    assert other.counts.machine <= 0.05 * 2000 < summary.counts.machine


def test_the_simulated_learner_errs_as_its_model_says():
    """Its mean error follows the power law, its confidence ranks the errors, its errors
    persist across rounds as ``persistence`` says, and saturated confidences tie."""
    labels = np.random.default_rng(1).integers(0, 10, 40_000)
    model = ErrorModel(floor=0.02, scale=0.3, gamma=0.5, persistence=0.8)
    learner = SimulatedLearner(labels, model, num_classes=10, seed=0)
    from mcal_jax.recipe import TrainConfig

    everything = np.arange(len(labels))
    recipe = TrainConfig(epochs=2, batch_size=50)
    wrong = []
    for seed, size in ((1, 400), (2, 400), (3, 3_200)):
        got = learner.learn("tiny", (np.arange(size), labels[:size]), recipe,
                            score=everything, seed=seed)  # fmt: skip
        wrong.append(learner.true_error(everything, got.scores.predicted[everything]))
        assert wrong[-1].mean() == pytest.approx(model.mean_error(size, 10), abs=0.006)
        conf = got.scores.confidence
        assert (
            wrong[-1][conf < np.median(conf)].mean() > 3 * wrong[-1][conf >= np.median(conf)].mean()
        )
        assert got.images_processed == recipe.images(size)
    assert np.mean(conf == 1.0) > 0.01  # float32 margins saturate: ties
    # Two draws at the same size: errors agree far more than independent ones would.
    both, either = np.mean(wrong[0] & wrong[1]), np.mean(wrong[0])
    assert both > 3 * either**2
    again = learner.learn("tiny", (np.arange(400), labels[:400]), recipe, score=everything, seed=1)
    assert np.array_equal(learner.true_error(everything, again.scores.predicted), wrong[0])
    with pytest.raises(ValueError, match="ErrorModel.persistence"):
        ErrorModel(persistence=1.5)


def test_the_benchmark_writes_a_line_per_scenario(tmp_path, capsys):
    from absl.testing import flagsaver

    out = tmp_path / "certificate.jsonl"
    given = dict(runs="2", scenarios="small_pool", constraints="overall", peeking="small_pool",
                 out=str(out), workers="1", workdir=str(tmp_path / "runs"))  # fmt: skip
    with flagsaver.as_parsed(**given):
        certificate.main(["benchmarks.certificate"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["scenario"], r["peeking"]) for r in rows] == [
        ("small_pool", False),
        ("small_pool", True),
    ]
    for row in rows:
        assert {"scenario", "constraint", "runs", "violation_rate", "ci_low", "ci_high",
                "mean_usd", "mean_bound", "peeking"} <= set(row)  # fmt: skip
        assert row["runs"] == 2 and row["human_only_usd"] == 80.0 and row["mean_usd"] < 80
    printed = capsys.readouterr().out
    assert "| small_pool | overall | yes | 2 |" in printed and "violation rate" in printed
