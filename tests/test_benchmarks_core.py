"""The core benchmark: every number it reports is there, finite, and consistent."""

import json
import math

import numpy as np
import pytest
from absl.testing import flagsaver

from benchmarks import core as bench_core
from mcal_jax import controller
from mcal_jax.profile import THETAS

REQUIRED = (
    "scoring_items_per_s",
    "forward_items_per_s",
    "scoring_fraction_of_forward",
    "fit_ms",
    "scipy_fit_ms",
    "fit_speedup_vs_scipy",
    "plan_ms",
    "plan_from_models_ms",
)


@pytest.fixture(scope="module")
def result():
    return bench_core.run_benchmark(
        model="tiny", pool_size=512, batch_size=128, rounds=5, repeats=2
    )


def test_every_required_number_is_positive_and_finite(result):
    for key in REQUIRED:
        value = result[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert json.loads(json.dumps(result)) == result  # plain JSON, no NaN


def test_ratios_and_rates_follow_from_the_timings(result):
    assert result["scoring_fraction_of_forward"] == pytest.approx(
        result["scoring_items_per_s"] / result["forward_items_per_s"], rel=1e-12
    )
    assert result["scoring_items_per_s"] == pytest.approx(512 / (result["scoring_ms"] / 1e3))
    assert result["forward_items_per_s"] == pytest.approx(512 / (result["forward_ms"] / 1e3))
    assert result["fit_speedup_vs_scipy"] == pytest.approx(
        result["scipy_fit_ms"] / result["fit_ms"], rel=1e-12
    )
    for name, met in result["targets_met"].items():
        assert met == bench_core.meets_target(name, result[name])


def test_run_is_described(result):
    # conftest gives 8 CPU devices: 512 items in global batches of 128.
    assert result["num_devices"] == 8 and result["platform"] == "cpu"
    assert (result["global_batch"], result["num_batches"]) == (128, 4)
    assert result["model"] == "tiny" and result["pool_size"] == 512
    assert result["jax_version"] and result["device_kind"]
    # The batched fit and the scipy loop solve the same problem on the same data.
    assert result["fit_max_rel_gap_vs_scipy"] < 1e-3


def test_median_seconds_warms_up_then_times_each_function_in_turn():
    calls = []
    seconds = bench_core.median_seconds(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3
    )
    assert calls == ["a", "b"] * 4  # one warm-up each, then 3 alternating timed rounds
    assert set(seconds) == {"a", "b"} and all(t >= 0 for t in seconds.values())


def test_synthetic_error_counts_follow_the_power_laws():
    sizes, errors, counts = bench_core.synthetic_error_counts(10)
    np.testing.assert_array_equal(sizes, 700 * np.arange(1, 11))
    np.testing.assert_array_equal(counts[3], np.round(THETAS.astype(np.float64) * 3500))
    assert np.all((errors >= 0) & (errors <= counts))
    # ε(θ = 1, b = 700) = 8 · 700^−0.5 · e^−0.007 ≈ 30%: a binomial draw of 3,500 items.
    assert 0.27 < errors[0, -1] / counts[0, -1] < 0.33
    assert errors[-1, -1] < errors[0, -1]  # more labels, fewer errors


def test_planning_history_records_every_earlier_plan():
    config, history = bench_core.planning_problem(4)
    assert history.num_rounds == 4 and len(history.cost_star) == 3
    assert (config.num_items, config.num_test, config.human_usd_per_label) == (70_000, 3_500, 0.04)


def test_default_planning_problem_times_the_full_decision():
    # At the default 10 rounds the plan is stable and searches δ: no early-exit branch.
    config, history = bench_core.planning_problem(10)
    plan = controller.plan(config, history)
    assert plan.stable and not plan.stop and 0 < plan.next_delta < 700
    assert 0.0 < plan.theta_star <= 1.0 and plan.b_opt > history.train_size


def test_main_passes_flags_and_ends_with_the_json(result, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(bench_core, "run_benchmark", lambda **kw: calls.append(kw) or result)
    given = dict(
        model="tiny",
        pool_size="512",
        batch_size="64",
        metric="entropy",
        rounds="5",
        repeats="3",
        num_devices="2",
        image_shape="32x32x3",
        compute_dtype="bfloat16",
    )
    # Parsing only these flags, not the command line, leaves the other modules' flags alone.
    with flagsaver.as_parsed(**given):
        bench_core.main(["benchmarks.core"])
    expected = dict(model="tiny", metric="entropy", num_devices=2)
    expected.update(pool_size=512, batch_size=64, rounds=5, repeats=3)
    expected.update(image_shape="32x32x3", compute_dtype="bfloat16")
    assert calls == [expected]
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1]) == result
    assert any(line.startswith("scoring / forward") for line in lines)
